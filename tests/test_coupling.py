"""Tests of sedviz.analysis.coupling (docs/methods.md#lag-flip): cross-correlation sign convention, lag flip on a
constructed pair, Granger tests against an independent numpy computation."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from sedviz.analysis.coupling import (_flip_text, detrend_cubic, granger, lag_flip, phase_surrogates,
                                     surrogate_null, xcorr)
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


def _edge_run(n=45, seed=3):
    """A one-run Dataset and its W=5 edge series (steps, values) on the steps where it exists."""
    ck, _ = random_walk(n, {"attn.qkv.weight": (6, 6), "mlp.fc1.weight": (6, 6)}, seed=seed)
    steps = [100 * i for i in range(n)]
    ds = make_dataset({"g": ck}, {"g": steps}, max_lag=4, kinds={"attn.qkv.weight": "attn_qkv"})
    x = edge(ds, windows=5)["edge"].sel(run="g", window=5).values
    m = np.isfinite(x)
    return ds, ds.step.values[m], x[m]


def _with_loss(ds, st, y_on):
    yv = np.full(ds.sizes["step"], np.nan)
    yv[-len(st):] = y_on
    return ds.assign(val_loss=(("run", "step"), yv[None, :]))


def test_lag_flip_finds_plus_two():
    ds, st, xs = _edge_run()
    # val loss = a trend minus the edge two checkpoints earlier: the edge leads by +2
    rng = np.random.default_rng(2)
    tail = 3.0 - 1e-4 * st + 1e-9 * st.astype(float) ** 2
    y_on = tail.copy()
    y_on[2:] -= 0.5 * xs[:-2]
    y_on[:2] += rng.normal(size=2)
    ds = _with_loss(ds, st, y_on)
    out = lag_flip(ds, windows=5, lags=range(-5, 8))
    assert out["peak_lag"].sel(run="g", window=5).item() == 2
    # measured: r = -0.58 at lag +2, p = 0.008 against 999 phase-randomised surrogates (null max 0.50)
    assert out["peak_r"].item() < -0.5 and not out["peak_at_end"].item()
    assert out["p_value"].item() < 0.02 and out["peak_verdict"].item() == "significant"
    assert abs(out["peak_r"].item()) > out["null_max"].item()
    assert (out["null_band"].values <= out["null_max"].item() + 1e-12).all()  # pointwise <= family-wise
    assert out["flip"].item() == "no flip: not significant"  # one window cannot flip
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


def test_lag_flip_peak_is_the_largest_abs_r_with_its_sign():
    """A positive coupling at lag -3 (the loss leads): the peak is r > 0, not the most negative r."""
    ds, st, xs = _edge_run()
    y_on = 1.0 + 1e-4 * st
    y_on[:-3] += 0.5 * xs[3:]  # y[t] = x[t + 3]: x[t] pairs with y[t - 3]
    y_on[-3:] = np.nan  # no loss logged where x[t + 3] does not exist
    out = lag_flip(_with_loss(ds, st, y_on), windows=5, lags=range(-5, 8), n_surrogates=199)
    assert out["peak_lag"].item() == -3 and out["peak_r"].item() > 0.9
    assert out["peak_r"].item() == pytest.approx(float(np.nanmax(np.abs(out["xcorr"].values))))
    assert out["peak_verdict"].item() == "significant" and out["p_value"].item() == pytest.approx(1 / 200)


def test_lag_flip_no_coupling_is_not_significant_and_range_end_is_flagged():
    ds, st, xs = _edge_run()
    rng = np.random.default_rng(11)
    noise = np.zeros(len(st))
    for t in range(1, len(st)):  # AR(1) noise, independent of the edge
        noise[t] = 0.7 * noise[t - 1] + rng.normal()
    out = lag_flip(_with_loss(ds, st, 2.0 - 1e-4 * st + 0.1 * noise), windows=5, lags=range(-5, 8))
    assert out["p_value"].item() > 0.05
    assert out["peak_verdict"].item() in ("not significant", "peak at range end")
    assert out["flip"].item().startswith("no flip")
    # a coupling at lag +7, the end of the range: flagged, whatever its strength
    y_on = 1.0 + 1e-4 * st
    y_on[7:] -= 0.5 * xs[:-7]
    y_on[:7] = np.nan
    end = lag_flip(_with_loss(ds, st, y_on), windows=5, lags=range(-5, 8), n_surrogates=99)
    assert end["peak_lag"].item() == 7 and bool(end["peak_at_end"].item())
    assert end["peak_verdict"].item() == "peak at range end" and end["flip"].item() == "no flip: peak at range end"
    none = lag_flip(_with_loss(ds, st, y_on), windows=5, lags=range(-5, 8), n_surrogates=0)
    assert none["peak_verdict"].item() == "peak at range end" and np.isnan(none["p_value"].item())
    with pytest.raises(SedvizError, match="alpha"):
        lag_flip(_with_loss(ds, st, y_on), windows=5, alpha=1.5)


def test_flip_verdict_needs_significant_peaks_of_both_signs():
    sig = "significant"
    assert _flip_text([-1, 2], [sig, sig], [10, 20])[0] == "flip"
    assert _flip_text([1, 2], [sig, sig], [10, 20])[0] == "no flip: same sign"
    assert _flip_text([-1, 7], [sig, "peak at range end"], [10, 20])[0] == "no flip: peak at range end"
    assert _flip_text([-1, 2], [sig, "not significant"], [10, 20])[0] == "no flip: not significant"
    assert "-1 at W=10" in _flip_text([-1, 2], [sig, sig], [10, 20])[1]


def test_phase_surrogates_keep_mean_and_periodogram():
    rng = np.random.default_rng(0)
    for n in (16, 17):
        x = rng.normal(size=n) + 3.0
        S = phase_surrogates(x, 5, np.random.default_rng(1))
        assert S.shape == (5, n) and np.isrealobj(S)
        np.testing.assert_allclose(S.mean(axis=1), x.mean(), rtol=1e-12)
        np.testing.assert_allclose(np.abs(np.fft.rfft(S, axis=1)), np.broadcast_to(np.abs(np.fft.rfft(x)), (5, n // 2 + 1)),
                                   rtol=1e-9, atol=1e-9)
        assert not np.allclose(S[0], x)


def _np_surrogate_null(x, y, lags, N, seed, level):
    """Independent reimplementation: explicit DFT sums, np.corrcoef per lag, loops over surrogates."""
    n = len(x)
    t = np.arange(n)
    F = np.array([np.sum(x * np.exp(-2j * np.pi * k * t / n)) for k in range(n)])
    half = n // 2 + 1
    inner = half - 1 - (1 if n % 2 == 0 else 0)
    phases = np.random.default_rng(seed).uniform(0, 2 * np.pi, size=(N, inner))
    R = np.full((N, len(lags)), np.nan)
    for s in range(N):
        G = F.copy()
        for j, k in enumerate(range(1, 1 + inner)):
            G[k] = abs(F[k]) * np.exp(1j * phases[s, j])
            G[n - k] = np.conj(G[k])
        xs = np.real(np.array([np.sum(G * np.exp(2j * np.pi * np.arange(n) * tt / n)) for tt in t]) / n)
        for i, lag in enumerate(lags):
            a = xs[max(0, -lag) : n - max(0, lag)]
            b = y[max(0, lag) : n + min(0, lag)]
            m = np.isfinite(b)
            R[s, i] = abs(np.corrcoef(a[m], b[m])[0, 1])
    band = np.quantile(R, level, axis=0)
    mx = R.max(axis=1)
    return band, np.quantile(mx, level), mx


def test_surrogate_null_matches_numpy_reimplementation():
    rng = np.random.default_rng(3)
    for n in (20, 21):
        x = rng.normal(size=n)
        y = np.roll(x, 1) + rng.normal(size=n)
        y[4] = np.nan
        lags = [-2, -1, 0, 1, 2, 3]
        obs = xcorr(x, y, lags, min_overlap=6)
        got = surrogate_null(x, y, lags, n_surrogates=40, seed=9, level=0.9, observed=obs)
        band, max_level, mx = _np_surrogate_null(x, y, lags, 40, 9, 0.9)
        np.testing.assert_allclose(got["band"], band, rtol=1e-9)
        assert got["max_level"] == pytest.approx(max_level, rel=1e-9)
        assert got["p"] == pytest.approx((1 + np.sum(mx >= np.nanmax(np.abs(obs)))) / 41, rel=1e-12)


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
