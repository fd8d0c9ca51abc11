"""Coupling of the spectral edge with the validation loss across window sizes: the lag flip
(docs/methods.md#lag-flip; Xu, "Spectral Edge Dynamics of Training Trajectories", arXiv 2603.15678, 2026, [S]).

Sign convention: r(lag) = Pearson(x[t], y[t + lag]) with x the spectral edge series and y the
target (validation loss); lags count checkpoints of the run. A positive lag means the spectral
series leads the loss.

Significance: two autocorrelated series correlate strongly at some lag by chance, so a peak is
judged against surrogates of the edge series that keep its power spectrum (hence its
autocorrelation) but break any coupling with the loss: phase-randomised series (Theiler et al.
1992, "Testing for nonlinearity in time series: the method of surrogate data"). The statistic is
the largest |r| over the lag range, so the test accounts for choosing the peak among the lags.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import xarray as xr

from sedviz.errors import SedvizError

from . import _trajectory as T
from .edge import edge as _edge

__all__ = ["lag_flip", "granger", "GrangerResult", "detrend_cubic", "xcorr", "phase_surrogates", "surrogate_null",
           "PEAK_VERDICTS"]


class GrangerResult(NamedTuple):
    """Granger test of "x helps predict y": F statistic, p value, lag order (F(order, n - 3 order - 1))."""

    f: float
    p: float
    order: int


_NAN_GRANGER = GrangerResult(np.nan, np.nan, 0)


def detrend_cubic(steps, v) -> np.ndarray:
    """Residual of a least-squares cubic polynomial in step (docs/methods.md#lag-flip); NaN entries stay NaN.

    Fewer than 5 finite points leave nothing to correlate: all NaN then.
    """
    steps = np.asarray(steps, dtype=np.float64)
    v = np.asarray(v, dtype=np.float64)
    out = np.full(v.shape, np.nan)
    m = np.isfinite(v) & np.isfinite(steps)
    if m.sum() < 5:
        return out
    t = steps[m]
    t = (t - t.mean()) / (t.std() or 1.0)  # scaled for a well-conditioned Vandermonde
    A = np.vander(t, 4)
    coef, *_ = np.linalg.lstsq(A, v[m], rcond=None)
    out[m] = v[m] - A @ coef
    return out


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a = a - a.mean()
    b = b - b.mean()
    den = np.sqrt((a @ a) * (b @ b))
    return float(a @ b / den) if den > 0 else np.nan


def xcorr(x, y, lags, *, min_overlap: int = 6) -> np.ndarray:
    """r(lag) = Pearson(x[t], y[t + lag]) over the t where both are finite (docs/methods.md#lag-flip).

    NaN for a lag with fewer than ``min_overlap`` pairs. x and y are equally long series on the
    same checkpoints.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    n = len(x)
    out = np.full(len(lags), np.nan)
    for i, lag in enumerate(lags):
        lo, hi = max(0, -lag), min(n, n - lag)
        if hi - lo <= 0:
            continue
        a, b = x[lo:hi], y[lo + lag : hi + lag]
        m = np.isfinite(a) & np.isfinite(b)
        if m.sum() >= min_overlap:
            out[i] = _pearson(a[m], b[m])
    return out


def _lags(v: np.ndarray, p: int, start: int) -> np.ndarray:
    """Columns v[t-1], ..., v[t-p] for t = start..n-1."""
    n = len(v)
    return np.column_stack([v[start - l : n - l] for l in range(1, p + 1)])


def _rss(Y: np.ndarray, X: np.ndarray) -> np.ndarray:
    coef, *_ = np.linalg.lstsq(X, Y, rcond=None)
    E = Y - X @ coef
    return E


def _var_aic(x: np.ndarray, y: np.ndarray, p: int, start: int) -> float:
    """AIC of a bivariate VAR(p) fitted on t = start..n-1: ln det Sigma + 2 p K^2 / T (Luetkepohl)."""
    n = len(x)
    Tn = n - start
    X = np.column_stack([np.ones(Tn), _lags(y, p, start), _lags(x, p, start)])
    E = _rss(np.column_stack([y[start:], x[start:]]), X)
    S = E.T @ E / Tn
    sign, logdet = np.linalg.slogdet(S)
    if sign <= 0:
        return -np.inf
    return float(logdet + 2.0 * p * 4 / Tn)


def _granger_at(x: np.ndarray, y: np.ndarray, p: int) -> GrangerResult:
    """F test that p lags of x add to p lags of y (and a constant) in predicting y."""
    n = len(x)
    Tn = n - p
    df_den = Tn - 2 * p - 1
    if df_den < 1:
        return _NAN_GRANGER
    Y = y[p:]
    Xr = np.column_stack([np.ones(Tn), _lags(y, p, p)])
    Xu = np.column_stack([Xr, _lags(x, p, p)])
    er = _rss(Y, Xr)
    eu = _rss(Y, Xu)
    rss_r, rss_u = float(er @ er), float(eu @ eu)
    if rss_u <= 1e-300 or rss_u <= 1e-14 * rss_r:
        f = np.inf if rss_r > rss_u else np.nan
        return GrangerResult(f, 0.0 if f == np.inf else np.nan, p)
    f = ((rss_r - rss_u) / p) / (rss_u / df_den)
    from scipy import stats  # here, not at the top: scipy.stats costs ~60 MB and every compute imports this package

    return GrangerResult(float(f), float(stats.f.sf(f, p, df_den)), p)


def _select_order(x, y, max_order: int) -> int:
    start = max_order
    if len(x) - start < 2 * max_order + 3:
        return 0
    aics = [_var_aic(x, y, p, start) for p in range(1, max_order + 1)]
    return 1 + int(np.argmin(aics))


def granger(x, y, max_order: int = 2) -> GrangerResult:
    """Granger causality test "x -> y" with the lag order chosen by AIC (docs/methods.md#lag-flip, [S] Sec. 5).

    The order p in 1..``max_order`` minimizes the AIC of the bivariate VAR(p)
    (ln det Sigma_u + 2 p K^2 / T, K = 2, all orders fitted on the same sample t = max_order..n-1),
    so both directions are tested at the same order. At that order, y_t is regressed by OLS on a
    constant and y_{t-1..t-p} (restricted) and additionally on x_{t-1..t-p} (unrestricted), over
    t = p..n-1; F = ((RSS_r - RSS_u) / p) / (RSS_u / (n - p - 2p - 1)) with p value from
    F(p, n - 3p - 1).

    Parameters
    ----------
    x, y : 1-D array-likes of equal length, finite, on consecutive checkpoints.
    max_order : int >= 1.

    Returns
    -------
    GrangerResult(f, p, order), a named tuple that unpacks as ``F, p, order = granger(x, y)``;
    NaN f and p (order 0) when the series are too short (fewer than 2 max_order + 3 usable rows).
    """
    fn = "granger"
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.ndim != 1 or y.ndim != 1 or len(x) != len(y):
        raise SedvizError(f"{fn}(x, y): expected two 1-D series of equal length, got shapes {x.shape} and {y.shape}.")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise SedvizError(f"{fn}(x, y): the series hold NaN or inf; drop those checkpoints from both first.")
    T.check_window(max_order, "max_order", fn, minimum=1)
    p = _select_order(x, y, int(max_order))
    if p == 0:
        return _NAN_GRANGER
    return _granger_at(x, y, p)


#: Values of ``peak_verdict`` (run, window) in the output of :func:`lag_flip`.
PEAK_VERDICTS = ("significant", "peak at range end", "not significant", "not tested", "no data")


def phase_surrogates(x, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` phase-randomised copies of the finite series ``x`` (n, len(x)).

    Each copy has the amplitudes of x's real FFT with the phases of every frequency strictly
    between 0 and Nyquist replaced by independent uniform draws on [0, 2 pi); the mean (and the
    Nyquist term of an even length, which must stay real) are kept, so every copy has x's mean
    and periodogram, hence its circular autocorrelation.
    """
    x = np.asarray(x, dtype=np.float64)
    m = len(x)
    f = np.fft.rfft(x)
    nf = len(f)
    inner = nf - 1 - (1 if m % 2 == 0 else 0)  # frequencies 1..inner get random phases
    phases = rng.uniform(0.0, 2.0 * np.pi, size=(n, inner))
    F = np.broadcast_to(f, (n, nf)).copy()
    F[:, 1 : 1 + inner] = np.abs(f[1 : 1 + inner]) * np.exp(1j * phases)
    return np.fft.irfft(F, n=m, axis=1)


def _xcorr_many(X: np.ndarray, y: np.ndarray, lags, min_overlap: int) -> np.ndarray:
    """xcorr of every row of X (all finite) with y: (len(X), len(lags))."""
    n = X.shape[1]
    out = np.full((X.shape[0], len(lags)), np.nan)
    for i, lag in enumerate(lags):
        lo, hi = max(0, -lag), min(n, n - lag)
        if hi - lo <= 0:
            continue
        b = y[lo + lag : hi + lag]
        m = np.isfinite(b)
        if m.sum() < min_overlap:
            continue
        a = X[:, lo:hi][:, m]
        b = b[m] - b[m].mean()
        a = a - a.mean(axis=1, keepdims=True)
        den = np.sqrt((a * a).sum(axis=1) * (b @ b))
        with np.errstate(invalid="ignore", divide="ignore"):
            out[:, i] = np.where(den > 0, (a @ b) / den, np.nan)
    return out


def surrogate_null(x, y, lags, *, n_surrogates: int = 999, seed: int = 0, level: float = 0.95,
                   min_overlap: int = 6, observed=None) -> dict:
    """Null distribution of the cross-correlation of ``x`` with ``y`` under phase randomisation of x.

    ``x`` must be finite (the detrended edge); ``y`` may hold NaN. For each of ``n_surrogates``
    phase-randomised copies of x (:func:`phase_surrogates`, generator ``np.random.default_rng(seed)``)
    the cross-correlation with y at ``lags`` is computed as by :func:`xcorr`.

    Returns a dict with ``band`` (len(lags)): the ``level`` quantile of |r| at each lag
    (pointwise); ``max_level``: the ``level`` quantile of max over lags of |r| (the family-wise
    threshold); and, when ``observed`` (the xcorr of x itself) is given, ``p``: the share of
    surrogates whose max |r| is at least the observed max |r|, counted as (1 + hits) / (1 + N).
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    rng = np.random.default_rng(seed)
    R = np.abs(_xcorr_many(phase_surrogates(x, int(n_surrogates), rng), y, list(lags), min_overlap))
    ok = np.isfinite(R).any(axis=0)
    band = np.full(len(lags), np.nan)
    if ok.any():
        band[ok] = np.quantile(R[:, ok], level, axis=0)
    mx = np.nanmax(np.where(np.isfinite(R), R, -np.inf), axis=1)
    mx = mx[np.isfinite(mx)]
    out = {"band": band, "max_level": float(np.quantile(mx, level)) if mx.size else np.nan, "p": np.nan}
    if observed is not None and mx.size:
        obs = np.abs(np.asarray(observed, dtype=np.float64))
        if np.isfinite(obs).any():
            out["p"] = float((1 + np.sum(mx >= np.nanmax(obs))) / (1 + mx.size))
    return out


def _flip_text(run_lags: list, run_verdicts: list, windows: list) -> tuple[str, str]:
    """(flip, sentence) of one run from its windows' peak lags and verdicts."""
    sig = [(w, l) for w, l, v in zip(windows, run_lags, run_verdicts) if v == "significant"]
    signs = {int(np.sign(l)) for _, l in sig} - {0}
    desc = ", ".join(f"{l:+d} at W={w}" for w, l in sig)
    if signs == {-1, 1}:
        return "flip", f"flip: the significant peak lags change sign ({desc})"
    if "not tested" in run_verdicts:
        return "not tested", "not tested: no surrogates were drawn (n_surrogates=0)"
    if len(sig) >= 2:
        return "no flip: same sign", f"no flip: every significant peak has the same sign ({desc})"
    ends = [w for w, v in zip(windows, run_verdicts) if v == "peak at range end"]
    if ends:
        return ("no flip: peak at range end",
                "no flip: the peak sits at an end of the lag range at W=" + ", ".join(map(str, ends))
                + (f"; significant: {desc}" if sig else ""))
    return ("no flip: not significant",
            "no flip: no window has a peak beyond the surrogate band" + (f" except {desc}" if sig else ""))


def lag_flip(ds: xr.Dataset, windows=(10, 20), *, lags=range(-5, 8), target: str = "val_loss",
             params=T.UNSET, exact=None, min_overlap: int = 6, n_surrogates: int = 999, seed: int = 0,
             alpha: float = 0.05, layers=T.UNSET) -> xr.Dataset:
    """Cross-correlation and Granger coupling of the spectral edge with a target series, per
    window size, with a surrogate test: the lag flip (docs/methods.md#lag-flip, [S] Sec. 5).

    For each run and window size W: x = the ``edge`` series of :func:`sedviz.analysis.edge.edge`
    (r_{k*} at the run's k*), y = ``target`` at the same steps (the run's window steps). Each is
    detrended by a least-squares cubic in step; r(lag) = Pearson(x[t], y[t + lag]) with lags in
    checkpoints, NaN where fewer than ``min_overlap`` pairs overlap. The peak is the lag of the
    largest |r|, reported with its sign. Positive lag: the spectral series leads the target.

    Significance: ``n_surrogates`` phase-randomised copies of the detrended x (same power
    spectrum, coupling with y destroyed; :func:`phase_surrogates`, seeded by ``seed``) give the
    null distribution of max over lags of |r|; ``p_value`` is (1 + #{surrogate max >= observed
    max}) / (1 + N). A window's peak counts (``peak_verdict`` "significant") when p < ``alpha``
    and the peak is not at an end of the lag range (there the true extremum may lie outside it).
    The run flips when its significant peaks have lags of both signs.

    Granger tests (both directions, order 1..2 by AIC, see :func:`granger`) use the detrended
    pair on the steps where both are finite.

    Parameters
    ----------
    ds : xarray.Dataset
        The sedviz Dataset (``delta_dot`` and/or ``sketch``, and ``target``).
    windows, params, exact : see :func:`sedviz.analysis.edge.edge` (``layers=`` is the deprecated
        name of ``params=``).
    lags : iterable of int
        Lags in checkpoints (default -5..+7 as in [S]).
    target : str
        A (run, step) variable of ``ds`` (default ``val_loss``).
    min_overlap : int
        Fewest pairs for a correlation (default 6).
    n_surrogates : int >= 0
        Surrogates per run and window (default 999; 0 skips the test: verdict "not tested").
    seed : int
        Seed of the surrogates' generator (the same for every run and window).
    alpha : float in (0, 1)
        Significance level; the band is the (1 - alpha) quantile of |r| under the null.

    Returns
    -------
    xarray.Dataset with

    - ``xcorr`` (run, window, lag): r(lag).
    - ``null_band`` (run, window, lag): the (1 - alpha) quantile of |r| at each lag under the
      null (pointwise; drawn as the band of :func:`sedviz.plots.plot_lag_flip`).
    - ``null_max`` (run, window): the (1 - alpha) quantile of max over lags of |r| under the null.
    - ``peak_lag``, ``peak_r`` (run, window): lag and signed r of the largest |r|.
    - ``peak_at_end`` (run, window): the peak lag is the smallest or largest lag.
    - ``p_value`` (run, window): surrogate p value of max |r| (NaN without surrogates).
    - ``peak_verdict`` (run, window): one of ``PEAK_VERDICTS``.
    - ``flip`` (run): "flip", "no flip: same sign", "no flip: peak at range end",
      "no flip: not significant" or "not tested"; ``flip_text`` (run): the same in a sentence
      naming the windows and lags.
    - ``granger_f_x2y``, ``granger_p_x2y``, ``granger_f_y2x``, ``granger_p_y2x``,
      ``granger_order`` (run, window) (order 0 and NaN statistics where the series are too short),
      and ``n_points`` (run, window): the length of the detrended pair.
    """
    fn = "lag_flip"
    ds = T.check_dataset(ds, fn)
    ws = T.check_windows(windows, fn)
    try:
        lag_list = [int(l) for l in lags]
    except (TypeError, ValueError):
        raise SedvizError(f"{fn}(lags={lags!r}): expected integers, e.g. range(-5, 8).") from None
    if not lag_list or len(set(lag_list)) != len(lag_list):
        raise SedvizError(f"{fn}(lags={lags!r}): expected distinct integer lags, e.g. range(-5, 8).")
    if not isinstance(target, str) or target not in ds.data_vars:
        have = [v for v in ds.data_vars if set(ds[v].dims) == {"run", "step"}]
        raise SedvizError(
            f"{fn}(target={target!r}): not a variable of the Dataset; (run, step) variables present: {have}."
        )
    if set(ds[target].dims) != {"run", "step"}:
        raise SedvizError(f"{fn}(target={target!r}): expected dims (run, step), got {ds[target].dims}.")
    T.check_window(min_overlap, "min_overlap", fn, minimum=2)
    T.check_window(n_surrogates, "n_surrogates", fn, minimum=0)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise SedvizError(f"{fn}(seed={seed!r}): expected an integer seed of the surrogates.")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha < 1:
        raise SedvizError(f"{fn}(alpha={alpha!r}): expected a significance level in (0, 1), e.g. 0.05.")
    group = T.params_keyword(params, layers, fn)
    e = _edge(ds, ws, params=group, exact=exact)

    runs = [str(r) for r in ds["run"].values]
    nR, nW, nL = len(runs), len(ws), len(lag_list)
    xc = np.full((nR, nW, nL), np.nan)
    band = np.full((nR, nW, nL), np.nan)
    scalars = {k: np.full((nR, nW), np.nan) for k in
               ("peak_lag", "peak_r", "p_value", "null_max", "granger_f_x2y", "granger_p_x2y",
                "granger_f_y2x", "granger_p_y2x")}
    at_end = np.zeros((nR, nW), dtype=bool)
    verdict = np.full((nR, nW), "no data", dtype=object)
    order = np.zeros((nR, nW), dtype=np.int64)
    npts = np.zeros((nR, nW), dtype=np.int64)
    steps_all = ds["step"].values
    lo_lag, hi_lag = min(lag_list), max(lag_list)
    for ir, run in enumerate(runs):
        yall = np.asarray(ds[target].sel(run=run).transpose("step").values, dtype=np.float64)
        for iw, W in enumerate(ws):
            xall = e["edge"].sel(run=run, window=W).values
            m = np.isfinite(xall)
            if not m.any():
                continue
            st = steps_all[m]
            x = detrend_cubic(st, xall[m])
            y = detrend_cubic(st, yall[m])
            r = xcorr(x, y, lag_list, min_overlap=min_overlap)
            xc[ir, iw] = r
            if np.isfinite(r).any():
                i = int(np.nanargmax(np.abs(r)))
                pl = lag_list[i]
                scalars["peak_lag"][ir, iw] = pl
                scalars["peak_r"][ir, iw] = r[i]
                at_end[ir, iw] = pl in (lo_lag, hi_lag)
                if n_surrogates > 0 and np.isfinite(x).all():
                    null = surrogate_null(x, y, lag_list, n_surrogates=n_surrogates, seed=int(seed),
                                          level=1.0 - alpha, min_overlap=min_overlap, observed=r)
                    band[ir, iw] = null["band"]
                    scalars["null_max"][ir, iw] = null["max_level"]
                    scalars["p_value"][ir, iw] = null["p"]
                if at_end[ir, iw]:
                    verdict[ir, iw] = "peak at range end"
                elif not np.isfinite(scalars["p_value"][ir, iw]):
                    verdict[ir, iw] = "not tested"
                else:
                    verdict[ir, iw] = "significant" if scalars["p_value"][ir, iw] < alpha else "not significant"
            both = np.isfinite(x) & np.isfinite(y)
            npts[ir, iw] = int(both.sum())
            if both.sum() >= 7:
                gx = granger(x[both], y[both])
                if gx.order:
                    gy = _granger_at(y[both], x[both], gx.order)
                    order[ir, iw] = gx.order
                    scalars["granger_f_x2y"][ir, iw], scalars["granger_p_x2y"][ir, iw] = gx.f, gx.p
                    scalars["granger_f_y2x"][ir, iw], scalars["granger_p_y2x"][ir, iw] = gy.f, gy.p
    flips = [_flip_text([int(v) if np.isfinite(v) else 0 for v in scalars["peak_lag"][ir]], list(verdict[ir]), ws)
             for ir in range(nR)]

    coords = {"run": runs, "window": np.asarray(ws, dtype=np.int64), "lag": np.asarray(lag_list, dtype=np.int64)}
    out = xr.Dataset(coords=coords)
    out["xcorr"] = (("run", "window", "lag"), xc,
                    {"long_name": f"Pearson(edge[t], {target}[t + lag]) after cubic detrending", "units": "1"})
    out["null_band"] = (("run", "window", "lag"), band,
                        {"long_name": f"{1 - alpha:g} quantile of |r| under phase-randomised surrogates",
                         "units": "1"})
    for k, v in scalars.items():
        out[k] = (("run", "window"), v)
    out["peak_lag"].attrs.update(long_name="lag of the largest |r| (positive: edge leads)", units="checkpoints")
    out["peak_r"].attrs.update(long_name="r at the peak lag (signed)", units="1")
    out["null_max"].attrs.update(long_name=f"{1 - alpha:g} quantile of max_lag |r| under the surrogates", units="1")
    out["p_value"].attrs.update(long_name="surrogate p value of max_lag |r|", units="1")
    out["peak_at_end"] = (("run", "window"), at_end, {"long_name": "peak lag at an end of the lag range"})
    out["peak_verdict"] = (("run", "window"), verdict.astype(str), {"values": ", ".join(PEAK_VERDICTS)})
    out["flip"] = ("run", np.array([f[0] for f in flips], dtype=str))
    out["flip_text"] = ("run", np.array([f[1] for f in flips], dtype=str))
    out["granger_order"] = (("run", "window"), order, {"long_name": "VAR lag order chosen by AIC (0: too short)"})
    out["n_points"] = (("run", "window"), npts)
    out.attrs.update(
        method="docs/methods.md#lag-flip; Xu, Spectral Edge Dynamics of Training Trajectories (arXiv 2603.15678); "
               "phase-randomised surrogates (Theiler et al. 1992)",
        options=T.options_attr(windows=ws, lags=lag_list, target=target, params=group, exact=exact,
                               min_overlap=min_overlap, n_surrogates=n_surrogates, seed=seed, alpha=alpha),
    )
    return out
