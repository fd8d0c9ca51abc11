"""Linear mode connectivity and perturbation (docs/methods.md#linear-mode-connectivity) against numpy float64."""
import json

import numpy as np
import pytest
import torch
import xarray as xr
from torch import nn

from sedviz.analysis.lmc import barrier, interpolate, lmc, perturb
from sedviz.errors import SedvizError

RNG = np.random.default_rng(0)
X = RNG.standard_normal((30, 4))
Y = RNG.standard_normal((30, 2))


class TwoLayer(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(4, 3)
        self.fc2 = nn.Linear(3, 2, bias=False)

    def forward(self, x):
        return self.fc2(self.fc1(x))


def make():
    return TwoLayer().double()


def evaluate(model):
    with torch.no_grad():
        pred = model(torch.from_numpy(X)).numpy()
    return {"loss": float(np.mean((pred - Y) ** 2)), "acc": float(np.mean(np.sign(pred) == np.sign(Y)))}


def state(seed):
    rng = np.random.default_rng(seed)
    return {
        "fc1.weight": torch.from_numpy(rng.standard_normal((3, 4))),
        "fc1.bias": torch.from_numpy(rng.standard_normal(3)),
        "fc2.weight": torch.from_numpy(rng.standard_normal((2, 3))),
    }


def np_loss(s, alpha, t):
    w = {k: (1 - alpha) * s[k].numpy() + alpha * t[k].numpy() for k in s}
    pred = (X @ w["fc1.weight"].T + w["fc1.bias"]) @ w["fc2.weight"].T
    return np.mean((pred - Y) ** 2)


def np_agreement(A, B):
    Ua, _, Vha = np.linalg.svd(A, full_matrices=False)
    Ub, _, Vhb = np.linalg.svd(B, full_matrices=False)
    return np.abs(np.sum(Ua * Ub, 0)) * np.abs(np.sum(Vha * Vhb, 1))


def test_identical_endpoints_have_no_barrier():
    s = state(1)
    out = lmc(s, s, make, evaluate)
    assert out.barrier.item() == 0.0
    assert out.lmc_loss.dims == ("alpha",) and out.sizes["alpha"] == 11
    np.testing.assert_allclose(out.lmc_loss, np_loss(s, 0, s), rtol=1e-12)
    np.testing.assert_allclose(out.endpoint_sva.values[~np.isnan(out.endpoint_sva.values)], 1.0, rtol=1e-12)
    np.testing.assert_allclose(out.endpoint_sva_score, 1.0, rtol=1e-12)


def test_two_endpoints_match_numpy(tmp_path):
    a, b = state(1), state(2)
    pa, pb = tmp_path / "a.pt", tmp_path / "b.pt"
    torch.save(a, pa)
    torch.save(b, pb)
    ds = xr.Dataset(attrs={"checkpoints": json.dumps({"run": {"0": str(pa), "100": str(pb)}})})
    alphas = np.linspace(0, 1, 11)
    expected = np.array([np_loss(a, t, b) for t in alphas])
    chord = (1 - alphas) * expected[0] + alphas * expected[-1]
    exp_barrier = np.max((expected - chord)[1:-1])
    for ea, eb in (((ds, "run", 0), (ds, "run", "final")), (str(pa), pb), (a, b)):
        out = lmc(ea, eb, make, evaluate)
        np.testing.assert_allclose(out.alpha, alphas)
        np.testing.assert_allclose(out.lmc_loss, expected, rtol=1e-12)
        assert out.barrier.item() == pytest.approx(exp_barrier, rel=1e-10)
    assert json.loads(out.attrs["endpoints"]) == {"a": "state dict", "b": "state dict"}
    out = lmc((ds, "run", 0), (ds, "run", 100), make, evaluate, n_alphas=5, k=2)
    assert json.loads(out.attrs["endpoints"]) == {"a": "run@0", "b": "run@100"}
    assert list(out.layer.values) == ["fc1.weight", "fc2.weight"] and out.sizes["rank"] == 2
    for name in ("fc1.weight", "fc2.weight"):
        np.testing.assert_allclose(out.endpoint_sva.sel(layer=name), np_agreement(a[name].numpy(), b[name].numpy())[:2], rtol=1e-9)
    np.testing.assert_allclose(out.endpoint_sva_score, out.endpoint_sva.mean("rank"), rtol=1e-14)
    with pytest.raises(SedvizError, match="step 7"):
        lmc((ds, "run", 7), b, make, evaluate)


def test_barrier_is_signed():
    alphas = np.linspace(0, 1, 5)
    assert barrier(alphas, [1.0, 2.0, 3.0, 2.0, 1.0]) == 2.0
    assert barrier(alphas, [1.0, 0.5, 0.2, 0.5, 1.0]) == pytest.approx(-0.5)  # below the chord everywhere


def test_interpolate_buffers_and_integer_entries():
    bn_a, bn_b = nn.BatchNorm1d(3).double(), nn.BatchNorm1d(3).double()
    with torch.no_grad():
        bn_b.running_mean.fill_(2.0)
        bn_b.running_var.fill_(5.0)
        bn_b.weight.fill_(3.0)
    bn_b.num_batches_tracked.fill_(7)
    a, b = bn_a.state_dict(), bn_b.state_dict()
    mid = interpolate(a, b, 0.25)
    np.testing.assert_allclose(mid["running_mean"], 0.5)
    np.testing.assert_allclose(mid["running_var"], 0.75 * 1 + 0.25 * 5)
    np.testing.assert_allclose(mid["weight"], 0.75 + 0.75)
    assert int(mid["num_batches_tracked"]) == 0
    for alpha, ref in ((0.0, a), (1.0, b)):
        end = interpolate(a, b, alpha)
        assert all(torch.equal(end[k], ref[k]) for k in ref if k != "num_batches_tracked")
    with pytest.raises(SedvizError, match="only in a"):
        interpolate(a, {k: v for k, v in b.items() if k != "bias"}, 0.5)


def test_perturb_matches_the_formula_and_keeps_norms():
    s = state(3)
    s["fc2.weight"] = s["fc2.weight"].float()
    out = perturb(s, 0.3, seed=5)
    gen = torch.Generator().manual_seed(5)
    for name in ("fc1.weight", "fc2.weight"):  # matrices in state order
        W = s[name].double().numpy()
        eps = torch.randn(W.shape, generator=gen, dtype=torch.float64).numpy()
        P = W + 0.3 * np.linalg.norm(W) * eps / np.linalg.norm(eps)
        P *= np.linalg.norm(W) / np.linalg.norm(P)
        np.testing.assert_allclose(out[name].double().numpy(), P, rtol=1e-6 if name == "fc2.weight" else 1e-13)
        assert out[name].dtype == s[name].dtype
        assert np.linalg.norm(out[name].double().numpy()) == pytest.approx(np.linalg.norm(W), rel=1e-6)
    assert torch.equal(out["fc1.bias"], s["fc1.bias"]) and out["fc1.bias"] is not s["fc1.bias"]
    assert torch.equal(perturb(s, 0.0)["fc1.weight"], s["fc1.weight"])
    assert not torch.equal(perturb(s, 0.3, seed=6)["fc1.weight"], out["fc1.weight"])
    assert torch.equal(perturb(s, 0.3, seed=5)["fc1.weight"], out["fc1.weight"])
    # the perturbed direction: the angle to W grows with eta
    cos = [float((perturb(s, e)["fc1.weight"] * s["fc1.weight"]).sum() / s["fc1.weight"].norm() ** 2) for e in (0.1, 0.5, 2.0)]
    assert cos[0] > cos[1] > cos[2]
