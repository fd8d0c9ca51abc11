"""Coupling of the spectral edge with the validation loss across window sizes: the lag flip
(docs/methods.md#lag-flip; Xu, "Spectral Edge Dynamics of Training Trajectories", arXiv 2603.15678, 2026, [S]).

Sign convention: r(lag) = Pearson(x[t], y[t + lag]) with x the spectral edge series and y the
target (validation loss); lags count checkpoints of the run. A positive lag means the spectral
series leads the loss.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import xarray as xr

from sedviz.errors import SedvizError

from . import _trajectory as T
from .edge import edge as _edge

__all__ = ["lag_flip", "granger", "GrangerResult", "detrend_cubic", "xcorr"]


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


def lag_flip(ds: xr.Dataset, windows=(10, 20), *, lags=range(-5, 8), target: str = "val_loss",
             layers=None, exact=None, min_overlap: int = 6) -> xr.Dataset:
    """Cross-correlation and Granger coupling of the spectral edge with a target series, per
    window size: the lag flip (docs/methods.md#lag-flip, [S] Sec. 5).

    For each run and window size W: x = the ``edge`` series of :func:`sedviz.analysis.edge.edge`
    (r_{k*} at the run's k*), y = ``target`` at the same steps (the run's window steps). Each is
    detrended by a least-squares cubic in step; r(lag) = Pearson(x[t], y[t + lag]) with lags in
    checkpoints, NaN where fewer than ``min_overlap`` pairs overlap. The peak lag is the lag of
    the most negative r. Positive lag: the spectral series leads the target. Granger tests (both
    directions, order 1..2 by AIC, see :func:`granger`) use the detrended pair on the steps where
    both are finite.

    Parameters
    ----------
    ds : xarray.Dataset
        The sedviz Dataset (``delta_dot`` and/or ``sketch``, and ``target``).
    windows, layers, exact : see :func:`sedviz.analysis.edge.edge`.
    lags : iterable of int
        Lags in checkpoints (default -5..+7 as in [S]).
    target : str
        A (run, step) variable of ``ds`` (default ``val_loss``).
    min_overlap : int
        Fewest pairs for a correlation (default 6).

    Returns
    -------
    xarray.Dataset with ``xcorr`` (run, window, lag), ``peak_lag``, ``peak_r``,
    ``granger_f_x2y``, ``granger_p_x2y``, ``granger_f_y2x``, ``granger_p_y2x``,
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
    e = _edge(ds, ws, layers=layers, exact=exact)

    runs = [str(r) for r in ds["run"].values]
    nR, nW, nL = len(runs), len(ws), len(lag_list)
    xc = np.full((nR, nW, nL), np.nan)
    scalars = {k: np.full((nR, nW), np.nan) for k in
               ("peak_lag", "peak_r", "granger_f_x2y", "granger_p_x2y", "granger_f_y2x", "granger_p_y2x")}
    order = np.zeros((nR, nW), dtype=np.int64)
    npts = np.zeros((nR, nW), dtype=np.int64)
    steps_all = ds["step"].values
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
                i = int(np.nanargmin(r))
                scalars["peak_lag"][ir, iw] = lag_list[i]
                scalars["peak_r"][ir, iw] = r[i]
            both = np.isfinite(x) & np.isfinite(y)
            npts[ir, iw] = int(both.sum())
            if both.sum() >= 7:
                gx = granger(x[both], y[both])
                if gx.order:
                    gy = _granger_at(y[both], x[both], gx.order)
                    order[ir, iw] = gx.order
                    scalars["granger_f_x2y"][ir, iw], scalars["granger_p_x2y"][ir, iw] = gx.f, gx.p
                    scalars["granger_f_y2x"][ir, iw], scalars["granger_p_y2x"][ir, iw] = gy.f, gy.p

    coords = {"run": runs, "window": np.asarray(ws, dtype=np.int64), "lag": np.asarray(lag_list, dtype=np.int64)}
    out = xr.Dataset(coords=coords)
    out["xcorr"] = (("run", "window", "lag"), xc,
                    {"long_name": f"Pearson(edge[t], {target}[t + lag]) after cubic detrending", "units": "1"})
    for k, v in scalars.items():
        out[k] = (("run", "window"), v)
    out["peak_lag"].attrs.update(long_name="lag of the most negative r (positive: edge leads)", units="checkpoints")
    out["granger_order"] = (("run", "window"), order, {"long_name": "VAR lag order chosen by AIC (0: too short)"})
    out["n_points"] = (("run", "window"), npts)
    out.attrs.update(
        method="docs/methods.md#lag-flip; Xu, Spectral Edge Dynamics of Training Trajectories (arXiv 2603.15678)",
        options=T.options_attr(windows=ws, lags=lag_list, target=target, layers=layers, exact=exact,
                               min_overlap=min_overlap),
    )
    return out
