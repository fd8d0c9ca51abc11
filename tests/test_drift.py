"""Tests of sedviz.analysis.drift (docs/methods.md#drift): a trajectory with a known backbone, and every
output against numpy float64 computed on the explicitly stacked drift rows."""
from __future__ import annotations

import numpy as np
import pytest

from sedviz.analysis.drift import drift
from sedviz.errors import SedvizError
from test_edge import make_dataset, random_walk, split_rows


def _ckpts(theta, shapes):
    return split_rows(theta, shapes)


def test_known_backbone_share():
    # x_t = t (cos(phi) v + (-1)^t sin(phi) w): normalized rows alternate around v, so the PC1
    # share is cos(phi)^2 exactly (even row count), v_b = v, a(t) = t cos(phi).
    phi = 0.3
    rng = np.random.default_rng(0)
    P = 24
    v, w = np.linalg.qr(rng.normal(size=(P, 2)))[0].T
    n = 12
    t = np.arange(1, n + 1)
    X = t[:, None] * (np.cos(phi) * v + ((-1.0) ** t)[:, None] * np.sin(phi) * w)
    theta0 = rng.normal(size=P)
    theta = np.vstack([theta0, theta0 + X])
    shapes = {"a.weight": (4, 3), "b.weight": (12,)}
    ds = make_dataset({"r": _ckpts(theta, shapes)}, max_lag=n - 1)
    out = drift(ds)
    assert out["drift_source"].item() == "delta_dot"
    assert out["drift_pc1_share"].item() == pytest.approx(np.cos(phi) ** 2, rel=1e-9)
    a = out["backbone_coef"].sel(run="r").values
    assert np.isnan(a[0])  # the first checkpoint has no drift row
    np.testing.assert_allclose(a[1:], t * np.cos(phi), rtol=1e-9)
    np.testing.assert_allclose(out["residual"].values[0, 1:], t * np.sin(phi), rtol=1e-7)
    np.testing.assert_allclose(out["backbone_share"].values[0, 1:], np.cos(phi) ** 2, rtol=1e-9)
    d = np.diff(np.vstack([np.zeros(P), X]), axis=0)
    C = (d @ v) / np.linalg.norm(d, axis=1)
    np.testing.assert_allclose(out["update_alignment"].values[0, 1:], C, rtol=1e-9)


def _np_drift(theta, window=None):
    X = theta[1:] - theta[0]
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    _, s, Vt = np.linalg.svd(Xn, full_matrices=False)
    vb = Vt[0] * np.sign(Xn[-1] @ Vt[0])
    a = X @ vb
    d = np.diff(theta, axis=0)
    res = dict(pc1_share=s[0] ** 2 / (s**2).sum(), a=a,
               residual=np.linalg.norm(X - a[:, None] * vb[None], axis=1),
               share=a**2 / (X**2).sum(axis=1), C=(d @ vb) / np.linalg.norm(d, axis=1))
    if window:
        n = len(Xn)
        vs = {}
        for s0 in range(n - window + 1):
            vs[s0] = np.linalg.svd(Xn[s0 : s0 + window], full_matrices=False)[2][0]
        stab = np.full(n, np.nan)
        for e in range(2 * window - 1, n):
            stab[e] = abs(vs[e - 2 * window + 1] @ vs[e - window + 1])
        res["stab"] = stab
    return res


def test_drift_matches_numpy_random_trajectory():
    shapes = {"x.weight": (5, 6), "y.bias": (10,)}
    rng = np.random.default_rng(1)
    P = 40
    n = 20
    drift_dir = rng.normal(size=P)
    upd = 0.6 * drift_dir + rng.normal(size=(n, P))
    theta = np.vstack([rng.normal(size=P), upd]).cumsum(axis=0)
    steps = [5 * i for i in range(n + 1)]
    ds = make_dataset({"r": _ckpts(theta, shapes)}, {"r": steps}, max_lag=n - 1)
    out = drift(ds, window=4)
    ref = _np_drift(theta, window=4)
    assert out["drift_pc1_share"].item() == pytest.approx(ref["pc1_share"], rel=1e-9)
    sel = out.sel(run="r", step=steps[1:])
    np.testing.assert_allclose(sel["backbone_coef"].values, ref["a"], rtol=1e-8)
    np.testing.assert_allclose(sel["residual"].values, ref["residual"], rtol=1e-6)
    np.testing.assert_allclose(sel["backbone_share"].values, ref["share"], rtol=1e-8)
    np.testing.assert_allclose(sel["update_alignment"].values, ref["C"], rtol=1e-8)
    np.testing.assert_allclose(sel["drift_norm"].values, np.linalg.norm(theta[1:] - theta[0], axis=1), rtol=1e-9)
    np.testing.assert_allclose(sel["pc1_stability"].values, ref["stab"], rtol=1e-7, equal_nan=True)
    assert np.isfinite(sel["pc1_stability"].values).sum() == n - 7


def test_drift_sketch_and_group_and_errors():
    ck, U = random_walk(15, {"attn.w": (8, 8), "mlp.w": (8, 8)}, seed=2)
    ds = make_dataset({"r": ck}, max_lag=5, sketch_dim=400, kinds={"attn.w": "attn_qkv", "mlp.w": "mlp_in"})
    with pytest.raises(SedvizError, match="lag 13"):
        drift(ds, exact=True)
    sk = drift(ds)  # delta_dot too short: falls back on the sketch
    assert sk["drift_source"].item() == "sketch"
    full = make_dataset({"r": ck}, max_lag=13, sketch_dim=400, kinds={"attn.w": "attn_qkv", "mlp.w": "mlp_in"}, seed=0)
    ex = drift(full)
    assert ex["drift_source"].item() == "delta_dot"
    assert sk["drift_pc1_share"].item() == pytest.approx(ex["drift_pc1_share"].item(), rel=0.1)
    # a parameter group: numpy on the attention block only
    theta = np.array([c["attn.w"].ravel() for c in ck])
    ref = _np_drift(theta)
    g = drift(full, params="attn")
    assert g["drift_pc1_share"].item() == pytest.approx(ref["pc1_share"], rel=1e-9)
    np.testing.assert_allclose(g["backbone_coef"].values[0, 1:], ref["a"], rtol=1e-8)
    with pytest.raises(SedvizError, match="window"):
        drift(full, window=1)
    with pytest.raises(SedvizError, match="delta_dot"):
        drift(full.drop_vars("delta_dot"), exact=True)
    with pytest.raises(SedvizError, match="sketch"):
        drift(full.drop_vars("sketch"), exact=False)
