"""SVD pruning and magnitude masks (docs/methods.md#pruning) against numpy float64 on small linear models."""
import json
import math

import numpy as np
import pytest
import torch
import xarray as xr
from torch import nn

from sedviz.analysis._models import resolve_callable
from sedviz.analysis.pruning import magnitude_masks, masks, prune_curves, svd_prune
from sedviz.errors import SedvizError

SHAPES = [(5, 6), (4, 5), (3, 4)]  # three bias-free linear maps 6 -> 5 -> 4 -> 3
RNG = np.random.default_rng(0)
X = RNG.standard_normal((40, 6))
Y = RNG.standard_normal((40, 3))


class LinearNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.Sequential(*[nn.Linear(c, r, bias=False) for r, c in SHAPES])

    def forward(self, x):
        return self.layers(x)


def make_linear():
    return LinearNet().double()


def eval_linear(model):
    with torch.no_grad():
        pred = model(torch.from_numpy(X)).numpy()
    return {"loss": float(np.mean((pred - Y) ** 2)), "acc": float(np.mean(np.argmax(pred, 1) == np.argmax(Y, 1)))}


def np_loss(Ws):
    pred = X
    for W in Ws:
        pred = pred @ W.T
    return np.mean((pred - Y) ** 2), np.mean(np.argmax(pred, 1) == np.argmax(Y, 1))


def np_prune(W, f, keep):
    U, S, Vh = np.linalg.svd(W, full_matrices=False)
    R = len(S)
    n = math.ceil(R * f)
    idx = slice(0, n) if keep == "top" else slice(R - n, R)
    return U[:, idx] @ np.diag(S[idx]) @ Vh[idx]


def linear_state(seed):
    rng = np.random.default_rng(seed)
    return {f"layers.{i}.weight": torch.from_numpy(rng.standard_normal(s)) for i, s in enumerate(SHAPES)}


@pytest.fixture
def linear_ds(tmp_path):
    table = {}
    for run, seeds in (("r1", {0: 1, 10: 2}), ("r2", {10: 3, 20: 4})):
        table[run] = {}
        for step, seed in seeds.items():
            path = tmp_path / f"{run}_{step}.pt"
            torch.save(linear_state(seed), path)
            table[run][str(step)] = str(path)
    return xr.Dataset(attrs={"checkpoints": json.dumps(table)})


def test_svd_prune_matches_numpy_for_linear_conv_and_transposed_conv():
    rng = np.random.default_rng(1)
    W = rng.standard_normal((5, 7))
    for f, keep in ((0.5, "top"), (0.5, "bottom"), (0.2, "top"), (1.0, "bottom")):
        np.testing.assert_allclose(svd_prune(torch.from_numpy(W), "linear", f, keep).numpy(), np_prune(W, f, keep), atol=1e-12)
    conv = rng.standard_normal((4, 3, 3, 3))  # view (4, 27)
    got = svd_prune(torch.from_numpy(conv), "conv", 0.5, "top").numpy()
    np.testing.assert_allclose(got, np_prune(conv.reshape(4, 27), 0.5, "top").reshape(4, 3, 3, 3), atol=1e-12)
    deconv = rng.standard_normal((4, 3, 2, 2))  # stored (c_in, c_out, kh, kw): view (3, 16)
    view = deconv.transpose(1, 0, 2, 3).reshape(3, 16)
    expected = np_prune(view, 0.5, "bottom").reshape(3, 4, 2, 2).transpose(1, 0, 2, 3)
    np.testing.assert_allclose(svd_prune(torch.from_numpy(deconv), "conv_transpose", 0.5, "bottom").numpy(), expected, atol=1e-12)
    assert svd_prune(torch.from_numpy(W).float(), "linear", 0.5).dtype == torch.float32


def test_prune_curves_linear_model(linear_ds):
    out = prune_curves(linear_ds, make_linear, eval_linear, steps="all", fractions=(0.3, 0.5, 1.0))
    assert out.prune_loss.dims == ("run", "step", "keep", "fraction")
    assert list(out.keep.values) == ["full", "top", "bottom"]
    assert list(out.step.values) == [0, 10, 20]
    assert np.isnan(out.prune_loss.sel(run="r1", step=20)).all() and np.isnan(out.prune_loss.sel(run="r2", step=0)).all()
    table = json.loads(linear_ds.attrs["checkpoints"])
    for run in table:
        for step, path in table[run].items():
            Ws = [t.numpy() for t in torch.load(path).values()]
            cell = out.sel(run=run, step=int(step))
            for f in (0.3, 0.5, 1.0):
                full = np_loss(Ws)
                assert cell.prune_loss.sel(keep="full", fraction=f) == pytest.approx(full[0], rel=1e-12)
                for keep in ("top", "bottom"):
                    loss, acc = np_loss([np_prune(Ws[0], f, keep), np_prune(Ws[1], f, keep), Ws[2]])  # the last matrix is kept whole
                    assert cell.prune_loss.sel(keep=keep, fraction=f) == pytest.approx(loss, rel=1e-10)
                    assert cell.prune_acc.sel(keep=keep, fraction=f) == pytest.approx(acc)
    # f = 1 keeps every triplet: the unpruned loss
    np.testing.assert_allclose(out.prune_loss.sel(fraction=1.0, keep="top"), out.prune_loss.sel(fraction=1.0, keep="full"), rtol=1e-10)
    assert json.loads(out.attrs["options"])["unpruned_last_matrix"] == "layers.2.weight"


def test_prune_curves_final_step_float_loss_and_string_callables(linear_ds, monkeypatch):
    import sys
    import types

    mod = types.ModuleType("sedviz_test_models")
    mod.make = make_linear
    mod.loss_only = lambda m: eval_linear(m)["loss"]
    monkeypatch.setitem(sys.modules, "sedviz_test_models", mod)
    out = prune_curves(linear_ds, "sedviz_test_models:make", "sedviz_test_models:loss_only", runs="r2", keep="top")
    assert list(out.step.values) == [20] and list(out.keep.values) == ["full", "top"]
    Ws = [t.numpy() for t in linear_state(4).values()]
    assert out.prune_loss.sel(run="r2", step=20, keep="top", fraction=0.5).item() == pytest.approx(
        np_loss([np_prune(Ws[0], 0.5, "top"), np_prune(Ws[1], 0.5, "top"), Ws[2]])[0], rel=1e-10
    )
    assert np.isnan(out.prune_acc).all()
    with pytest.raises(SedvizError, match="model_factory='no_such_module_xyz:f'"):
        prune_curves(linear_ds, "no_such_module_xyz:f", eval_linear)
    with pytest.raises(SedvizError, match="evaluate='sedviz_test_models:nope'"):
        resolve_callable("sedviz_test_models:nope", "evaluate")
    with pytest.raises(SedvizError, match="r3"):
        prune_curves(linear_ds, make_linear, eval_linear, runs="r3")


class ConvBN(nn.Module):
    """1x1 conv (a per-pixel linear map) -> BatchNorm -> spatial mean -> linear head."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.head = nn.Linear(4, 1, bias=False)

    def forward(self, x):
        return self.head(self.bn(self.conv(x)).mean((2, 3)))


def test_prune_curves_recomputes_batchnorm(tmp_path):
    rng = np.random.default_rng(2)
    xb = rng.standard_normal((6, 3, 5, 5))
    yb = rng.standard_normal((6, 1))
    model = ConvBN().double()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["conv.weight"] = torch.from_numpy(rng.standard_normal((4, 3, 1, 1)))
    state["bn.weight"] = torch.from_numpy(rng.uniform(0.5, 2, 4))
    state["bn.bias"] = torch.from_numpy(rng.standard_normal(4))
    state["bn.running_mean"] = torch.from_numpy(rng.standard_normal(4))
    state["bn.running_var"] = torch.from_numpy(rng.uniform(0.5, 2, 4))
    state["head.weight"] = torch.from_numpy(rng.standard_normal((1, 4)))
    path = tmp_path / "s.pt"
    torch.save(state, path)
    ds = xr.Dataset(attrs={"checkpoints": json.dumps({"run": {"5": str(path)}})})

    def evaluate(m):
        with torch.no_grad():
            return float(((m(torch.from_numpy(xb)) - torch.from_numpy(yb)) ** 2).mean())

    def np_eval(W, mean, var):
        z = np.einsum("oc,nchw->nohw", W, xb)
        g, b = state["bn.weight"].numpy(), state["bn.bias"].numpy()
        zn = (z - mean[None, :, None, None]) / np.sqrt(var[None, :, None, None] + 1e-5) * g[None, :, None, None] + b[None, :, None, None]
        pred = zn.mean((2, 3)) @ state["head.weight"].numpy().T
        return np.mean((pred - yb) ** 2)

    W = state["conv.weight"].numpy()[:, :, 0, 0]
    Wp = np_prune(W, 0.5, "top")  # rank 3 -> keep 2
    z = np.einsum("oc,nchw->nohw", Wp, xb)
    mean, var = z.mean((0, 2, 3)), z.var((0, 2, 3), ddof=1)  # torch's running_var is unbiased
    out = prune_curves(ds, lambda: ConvBN().double(), evaluate, keep="top", data_loader=[torch.from_numpy(xb)])
    assert out.prune_loss.sel(keep="top").item() == pytest.approx(np_eval(Wp, mean, var), rel=1e-10)
    stored = (state["bn.running_mean"].numpy(), state["bn.running_var"].numpy())
    assert out.prune_loss.sel(keep="full").item() == pytest.approx(np_eval(W, *stored), rel=1e-10)
    with pytest.warns(UserWarning, match="BatchNorm"):
        out2 = prune_curves(ds, lambda: ConvBN().double(), evaluate, keep="top")
    assert out2.prune_loss.sel(keep="top").item() == pytest.approx(np_eval(Wp, *stored), rel=1e-10)


def np_global_masks(Ws, density):
    flat = np.sort(np.concatenate([np.abs(W).ravel() for W in Ws]))
    n_keep = int(round(density * flat.size))
    t = flat[flat.size - n_keep - 1]
    return [np.abs(W) > t for W in Ws]


def np_agreement(A, B, k):
    Ua, _, Vha = np.linalg.svd(A, full_matrices=False)
    Ub, _, Vhb = np.linalg.svd(B, full_matrices=False)
    return np.abs(np.sum(Ua[:, :k] * Ub[:, :k], 0)) * np.abs(np.sum(Vha[:k] * Vhb[:k], 1))


def test_magnitude_masks_global_threshold():
    rng = np.random.default_rng(3)
    Ws = [rng.standard_normal((5, 6)), rng.standard_normal((4, 5)) * 3]
    got = magnitude_masks([torch.from_numpy(W) for W in Ws], 0.4)
    for g, e in zip(got, np_global_masks(Ws, 0.4)):
        np.testing.assert_array_equal(g.numpy(), e)
    assert sum(int(g.sum()) for g in got) == round(0.4 * 50)


def test_masks_linear_model(linear_ds):
    out = masks(linear_ds, make_linear, eval_linear, runs=["r1"], density=0.5, k=5)
    assert out.mask_sva.dims == ("run", "step", "mask", "layer", "rank")
    assert list(out.layer.values) == ["layers.0.weight", "layers.1.weight"]  # not the last matrix
    assert list(out.mask.values) == ["full", "magnitude", "random"]
    Ws = [t.numpy() for t in linear_state(2).values()]  # r1's final checkpoint (step 10)
    mag = np_global_masks(Ws[:2], 0.5)
    cell = out.sel(run="r1", step=10)
    assert float(cell.mask_loss.sel(mask="full")) == pytest.approx(np_loss(Ws)[0], rel=1e-12)
    assert float(cell.mask_loss.sel(mask="magnitude")) == pytest.approx(np_loss([Ws[0] * mag[0], Ws[1] * mag[1], Ws[2]])[0], rel=1e-12)
    # the random control keeps exactly the magnitude mask's per-layer density
    np.testing.assert_array_equal(cell.mask_density.sel(mask="random"), cell.mask_density.sel(mask="magnitude"))
    np.testing.assert_allclose(cell.mask_density.sel(mask="magnitude"), [m.mean() for m in mag])
    for l, (W, m) in enumerate(zip(Ws[:2], mag)):
        R = min(W.shape)
        sva = cell.mask_sva.sel(mask="magnitude").isel(layer=l).values
        np.testing.assert_allclose(sva[:R], np_agreement(W, W * m, R), rtol=1e-8, atol=1e-12)
        assert np.isnan(sva[R:]).all()
        np.testing.assert_array_equal(cell.mask_sva.sel(mask="full").isel(layer=l).values[:R], 1.0)
    np.testing.assert_allclose(out.mask_sva_score, np.nanmean(out.mask_sva.values[..., :10], axis=-1), rtol=1e-14)
    again = masks(linear_ds, make_linear, eval_linear, runs=["r1"], density=0.5, k=5)
    assert float(again.mask_loss.sel(run="r1", step=10, mask="random")) == float(cell.mask_loss.sel(mask="random"))
    other = masks(linear_ds, make_linear, eval_linear, runs=["r1"], density=0.5, k=5, seed=1)
    assert float(other.mask_loss.sel(run="r1", step=10, mask="random")) != float(cell.mask_loss.sel(mask="random"))


@pytest.mark.slow
def test_demo_factory_and_evaluate_strings(tmp_path):
    from sedviz.demo import evaluate, make_model

    model = make_model()
    path = tmp_path / "step_000000.pt"
    torch.save(model.state_dict(), path)
    ds = xr.Dataset(attrs={"checkpoints": json.dumps({"demo": {"0": str(path)}})})
    out = prune_curves(ds, "sedviz.demo:make_model", "sedviz.demo:evaluate", keep="top")
    ref = evaluate(model)
    assert out.prune_loss.sel(keep="full").item() == pytest.approx(ref["loss"], rel=1e-6)
    assert out.prune_acc.sel(keep="full").item() == pytest.approx(ref["acc"])


def test_transposed_conv_in_sequential_uses_its_module_type(tmp_path):
    """``0.weight`` of a ConvTranspose2d has no telling name: the kind comes from the module type."""
    rng = np.random.default_rng(4)
    G = rng.standard_normal((4, 3, 2, 2))
    make = lambda: nn.Sequential(nn.ConvTranspose2d(4, 3, 2, bias=False), nn.Conv2d(3, 2, 1, bias=False)).double()
    state = {"0.weight": torch.from_numpy(rng.standard_normal((4, 3, 2, 2))), "1.weight": torch.from_numpy(rng.standard_normal((2, 3, 1, 1)))}
    path = tmp_path / "s.pt"
    torch.save(state, path)
    ds = xr.Dataset(attrs={"checkpoints": json.dumps({"run": {"1": str(path)}})})
    out = prune_curves(ds, make, lambda m: float((m[0].weight.detach().numpy() * G).sum()), keep="top")
    W = state["0.weight"].numpy()
    view = W.transpose(1, 0, 2, 3).reshape(3, 16)  # (c_out, c_in * kh * kw): rank 3 -> keep 2
    pruned = np_prune(view, 0.5, "top").reshape(3, 4, 2, 2).transpose(1, 0, 2, 3)
    assert out.prune_loss.sel(keep="top").item() == pytest.approx(float((pruned * G).sum()), rel=1e-10)
