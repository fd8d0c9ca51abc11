"""sv and eff_rank from the pass against an independent numpy float64 computation (docs/methods.md#which-matrices, #effective-rank)."""
import numpy as np
import pytest
import torch
from torch import nn

import sedviz
from sedviz.layers import kinds_from_model


def _np_matrix(name: str, w: np.ndarray, transposed_conv: bool) -> np.ndarray:
    """docs/methods.md#which-matrices, written out independently of sedviz.layers."""
    if w.ndim == 2:
        return w
    if transposed_conv:
        w = np.swapaxes(w, 0, 1)
    return w.reshape(w.shape[0], -1)


def _np_eff_rank(s: np.ndarray) -> float:
    p = s / s.sum()
    p = p[p > 0]
    return float(np.exp(-(p * np.log(p)).sum()) / len(s))


class Block(nn.Module):
    """A transformer block with a fused QKV, as torch's MultiheadAttention stores it."""

    def __init__(self, d=24, heads=4):
        super().__init__()
        self.emb = nn.Embedding(50, d)
        self.attn = nn.MultiheadAttention(d, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))
        self.ln = nn.LayerNorm(d)


class ConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.enc = nn.Conv2d(3, 8, 3)
        self.mid = nn.Conv2d(8, 12, 5)
        self.up = nn.ConvTranspose2d(12, 6, 4)  # stored (c_in=12, c_out=6, 4, 4)
        self.bn = nn.BatchNorm2d(8)


MODELS = {
    "mlp": lambda: nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 5)),
    "conv": ConvNet,
    "transformer": Block,
    "lstm": lambda: nn.LSTM(10, 16, num_layers=2),
}


def _write_run(folder, model, n=3, seed=0):
    folder.mkdir(parents=True)
    g = torch.Generator().manual_seed(seed)
    states = []
    for i in range(n):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.05 * torch.randn(p.shape, generator=g))
        sd = {k: v.clone() for k, v in model.state_dict().items()}
        torch.save(sd, folder / f"step_{100 * i}.pt")
        states.append(sd)
    return states


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_sv_and_eff_rank_match_numpy_float64(tmp_path, kind):
    torch.manual_seed(1)
    model = MODELS[kind]()
    states = _write_run(tmp_path / kind, model)
    kinds = kinds_from_model(model)
    ds = sedviz.compute(tmp_path / kind, kinds=kinds, n_heads=4, progress=False, align=False, sva=False, sketch=False)
    checked = 0
    for i, sd in enumerate(states):
        for name, t in sd.items():
            if t.ndim < 2 or not t.is_floating_point():
                continue
            m = _np_matrix(name, t.double().numpy(), kinds.get(name) == "conv_transpose")
            s_ref = np.linalg.svd(m, compute_uv=False)
            got = ds.sv.sel(run=kind, step=100 * i, layer=name).values
            R = min(m.shape)
            assert int(ds.rows.sel(layer=name)) == m.shape[0] and int(ds.cols.sel(layer=name)) == m.shape[1]
            np.testing.assert_array_less(np.abs(got[:R] - s_ref) / s_ref, 1e-4)
            assert np.isnan(got[R:]).all()
            e = float(ds.eff_rank.sel(run=kind, step=100 * i, layer=name))
            assert abs(e - _np_eff_rank(s_ref)) / _np_eff_rank(s_ref) < 1e-4
            assert float(ds.stable_rank.sel(run=kind, step=100 * i, layer=name)) == pytest.approx(
                (s_ref**2).sum() / s_ref[0] ** 2, rel=1e-4)
            assert float(ds.fro_norm.sel(run=kind, step=100 * i, layer=name)) == pytest.approx(np.linalg.norm(m), rel=1e-4)
            checked += 1
    assert checked >= 3 * 2


def test_float64_matches_to_1e10(tmp_path):
    model = MODELS["mlp"]()
    states = _write_run(tmp_path / "r", model, n=1)
    ds = sedviz.compute(tmp_path / "r", dtype="float64", progress=False, sketch=False)
    m = states[0]["2.weight"].double().numpy()
    np.testing.assert_allclose(ds.sv.sel(run="r", step=0, layer="2.weight").values[:32], np.linalg.svd(m, compute_uv=False), rtol=1e-10)
    assert ds.sv.dtype == np.float64


def test_layer_kinds_and_coords(tmp_path):
    model = Block()
    _write_run(tmp_path / "t", model, n=1)
    ds = sedviz.compute(tmp_path / "t", progress=False, sketch=False, n_heads=4)
    kinds = dict(zip(ds.layer.values.tolist(), ds.layer_kind.values.tolist()))
    assert kinds["emb.weight"] == "embed"
    assert kinds["attn.in_proj_weight"] == "attn_qkv"
    assert kinds["attn.out_proj.weight"] == "attn_out"
    assert "ln.weight" not in kinds  # 1-D entries are not matrices...
    assert "ln.weight" in ds.param.values.tolist()  # ...but they are part of the trajectory
    assert int(ds.rows.sel(layer="attn.in_proj_weight")) == 72


def test_eff_rank_of_known_spectra():
    """A matrix with equal singular values has normalized effective rank 1; rank one has 1/R."""
    from sedviz.spectra import measures

    m = measures(torch.tensor([[2.0, 2.0, 2.0, 2.0], [3.0, 0.0, 0.0, 0.0]]))
    assert m["eff_rank"].tolist() == pytest.approx([1.0, 0.25])
    assert m["stable_rank"].tolist() == pytest.approx([4.0, 1.0])
