"""Tests of sedviz.analysis.coupling (docs/methods.md#lag-flip): cross-correlation sign convention, lag flip on a
constructed pair, Granger tests against an independent numpy computation."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from sedviz.analysis.coupling import detrend_cubic, granger, lag_flip, xcorr
from sedviz.analysis.edge import edge
from sedviz.errors import SedvizError
from test_edge import make_dataset, random_walk


def _np_detrend(t, v):
    c = np.polyfit(t.astype(float), v, 3)
    return v - np.polyval(c, t.astype(float))


def test_detrend_removes_cubic_exactly():
    t = np.arange(0, 500, 10)
    rng = np.random.default_rng(0)
    noise = rng.normal(size=t.size)
    v = 2e-6 * t**3 - 1e-3 * t**2 + 0.5 * t + 7 + noise
    np.testing.assert_allclose(detrend_cubic(t, v), _np_detrend(t, v), atol=1e-8)
    assert np.all(np.isnan(detrend_cubic(t[:4], v[:4])))


def test_xcorr_sign_convention_and_overlap():
    rng = np.random.default_rng(1)
    x = rng.normal(size=40)
    y = np.empty(40)
    y[2:] = -x[:-2]  # y lags x by 2 checkpoints: x leads
    y[:2] = rng.normal(size=2)
    lags = list(range(-5, 8))
    r = xcorr(x, y, lags, min_overlap=6)
    assert lags[int(np.nanargmin(r))] == 2 and r[lags.index(2)] == pytest.approx(-1.0)
    for lag in (-3, 0, 5):
        a = x[max(0, -lag) : 40 - max(0, lag)]
        b = y[max(0, lag) : 40 + min(0, lag)]
        assert r[lags.index(lag)] == pytest.approx(np.corrcoef(a, b)[0, 1], rel=1e-12)
    short = xcorr(x[:8], y[:8], [0, 3], min_overlap=6)
    assert np.isfinite(short[0]) and np.isnan(short[1])  # 5 pairs at lag 3 < 6


def test_lag_flip_finds_plus_two():
    ck, _ = random_walk(45, {"attn.qkv.weight": (6, 6), "mlp.fc1.weight": (6, 6)}, seed=3)
    steps = [100 * i for i in range(45)]
    ds = make_dataset({"g": ck}, {"g": steps}, max_lag=4, kinds={"attn.qkv.weight": "attn_qkv"})
    e = edge(ds, windows=5)
    x = e["edge"].sel(run="g", window=5).values
    m = np.isfinite(x)
    st = ds.step.values[m]
    xs = x[m]
    # val loss = a trend minus the edge two checkpoints earlier: the edge leads by +2
    rng = np.random.default_rng(2)
    yv = np.full(len(steps), np.nan)
    tail = 3.0 - 1e-4 * st + 1e-9 * st.astype(float) ** 2
    y_on = tail.copy()
    y_on[2:] -= 0.5 * xs[:-2]
    y_on[:2] += rng.normal(size=2)
    yv[-len(st):] = y_on
    ds["val_loss"] = (("run", "step"), yv[None, :])
    out = lag_flip(ds, windows=5, lags=range(-5, 8))
    assert out["peak_lag"].sel(run="g", window=5).item() == 2
    # the whole curve equals numpy on the detrended pair
    xd, yd = _np_detrend(st, xs), _np_detrend(st, y_on)
    for lag in range(-5, 8):
        a = xd[max(0, -lag) : len(xd) - max(0, lag)]
        b = yd[max(0, lag) : len(yd) + min(0, lag)]
        assert out["xcorr"].sel(run="g", window=5, lag=lag).item() == pytest.approx(np.corrcoef(a, b)[0, 1], abs=1e-9)
    assert out["peak_r"].item() == pytest.approx(out["xcorr"].sel(lag=2).item())
    assert out["granger_p_x2y"].item() < 0.01
    with pytest.raises(SedvizError, match="target"):
        lag_flip(ds, windows=5, target="val_acc")
    with pytest.raises(SedvizError, match="lags"):
        lag_flip(ds, windows=5, lags="abc")


def _np_granger_f(x, y, p):
    n = len(y)
    Y = y[p:]
    ylags = np.column_stack([y[p - l : n - l] for l in range(1, p + 1)])
    xlags = np.column_stack([x[p - l : n - l] for l in range(1, p + 1)])
    Xr = np.column_stack([np.ones(n - p), ylags])
    Xu = np.column_stack([Xr, xlags])
    rr = Y - Xr @ np.linalg.lstsq(Xr, Y, rcond=None)[0]
    ru = Y - Xu @ np.linalg.lstsq(Xu, Y, rcond=None)[0]
    dfd = n - p - 2 * p - 1
    f = ((rr @ rr - ru @ ru) / p) / (ru @ ru / dfd)
    return f, stats.f.sf(f, p, dfd)


def test_granger_direction():
    rng = np.random.default_rng(4)
    n = 150
    x = np.zeros(n)
    y = np.zeros(n)
    for t in range(1, n):
        x[t] = 0.5 * x[t - 1] + rng.normal()
        y[t] = 0.3 * y[t - 1] + 0.8 * x[t - 1] + 0.5 * rng.normal()
    g = granger(x, y)
    back = granger(y, x)
    assert g.p < 1e-6 and back.p > 0.05
    assert g.order in (1, 2)
    f, p = _np_granger_f(x, y, g.order)
    assert g.f == pytest.approx(f, rel=1e-9) and g.p == pytest.approx(p, rel=1e-6, abs=1e-300)
    f2, p2 = _np_granger_f(y, x, back.order)
    assert back.f == pytest.approx(f2, rel=1e-9)
    F, P, order = g  # unpacks as (F, p, order)
    assert order == g.order
    short = granger(x[:6], y[:6])
    assert np.isnan(short.f) and short.order == 0
    with pytest.raises(SedvizError, match="NaN"):
        granger(np.r_[x[:10], np.nan], y[:11])


def test_granger_order_by_var_aic():
    # y depends on x two checkpoints back only: AIC should prefer order 2
    rng = np.random.default_rng(7)
    n = 300
    x = rng.normal(size=n)
    y = np.zeros(n)
    for t in range(2, n):
        y[t] = 0.9 * x[t - 2] + 0.3 * rng.normal()
    g = granger(x, y, max_order=2)
    assert g.order == 2 and g.p < 1e-10
    # order 1 cannot see it
    assert granger(x, y, max_order=1).p > 0.01
