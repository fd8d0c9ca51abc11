"""Trajectory drift PCA: the low-dimensional backbone of training (docs/methods.md#drift; Xu,
"Optimizer-Induced Low-Dimensional Drift and Transverse Dynamics in Transformer Training",
arXiv 2602.23696, 2026, referred to as [D]).

Everything is computed from Gram matrices, never from parameter vectors. With the n x n update
Gram M[i, j] = <d_i, d_j> (from ``delta_dot`` when it holds every lag, else from the sketch
differences) and x_t = theta_t - theta_0 = sum_{i<=t} d_i:

- K[t, u] = <x_t, x_u> = sum_{i<=t, j<=u} M[i, j]: a 2-D cumulative sum of M.
- Row-normalized rows xn_t = x_t / ||x_t||, ||x_t|| = sqrt(K[t, t]); Kn = D^-1 K D^-1 is the Gram
  of Xn. With Kn = U Lambda U^T, the SVD of Xn is U S V^T, S = sqrt(Lambda), V = Xn^T U S^-1.
  v_b = V[:, 0] = Xn^T u_1 / s_1; the sign makes <xn_last, v_b> = s_1 u_1[last] > 0.
- PC1 share (drift_pc1_share) = s_1^2 / ||Xn||_F^2 = lambda_1 / trace(Kn) = lambda_1 / n.
- a(t) = <x_t, v_b> = ||x_t|| (Kn u_1)[t] / s_1 = ||x_t|| s_1 u_1[t].
- residual(t) = ||x_t - a(t) v_b|| = sqrt(||x_t||^2 - a(t)^2) (v_b is a unit vector).
- backbone share = a(t)^2 / ||x_t||^2 = lambda_1 u_1[t]^2.
- <d_t, x_u> = sum_{j<=u} M[t, j] (cumulative sum along one axis), so
  C(t) = <d_t, v_b> / ||d_t|| = (sum_u <d_t, x_u> u_1[u] / ||x_u||) / (s_1 sqrt(M[t, t])).
- For two row blocks A, B with top pairs (u_A, s_A), (u_B, s_B) of Kn[A, A], Kn[B, B]:
  <v_A, v_B> = u_A^T Kn[A, B] u_B / (s_A s_B).
"""
from __future__ import annotations

import json

import numpy as np
import xarray as xr

from sedviz.errors import SedvizError

from . import _trajectory as T

__all__ = ["drift", "drift_from_gram"]


def _top(K: np.ndarray) -> tuple[float, np.ndarray]:
    w, U = np.linalg.eigh(0.5 * (K + K.T))
    return max(float(w[-1]), 0.0), U[:, -1]


def drift_from_gram(M: np.ndarray, window: int | None = None) -> dict[str, np.ndarray | float]:
    """Drift PCA of one run from its update Gram ``M`` (n x n, M[i, j] = <d_i, d_j>).

    Returns a dict of numpy arrays over the n updates (NaN where ||x_t|| = 0): ``drift_pc1_share``
    (scalar), ``backbone_coef``, ``residual``, ``backbone_share``, ``update_alignment``,
    ``drift_norm``, and with ``window``: ``pc1_stability`` and ``rolling_pc1_share``. See the
    module docstring for the derivations.
    """
    M = np.asarray(M, dtype=np.float64)
    n = M.shape[0]
    nan = np.full(n, np.nan)
    out = dict(drift_pc1_share=np.nan, backbone_coef=nan.copy(), residual=nan.copy(), backbone_share=nan.copy(),
               update_alignment=nan.copy(), drift_norm=nan.copy(), pc1_stability=nan.copy(),
               rolling_pc1_share=nan.copy())
    if n == 0:
        return out
    K = np.cumsum(np.cumsum(M, axis=0), axis=1)  # <x_t, x_u>
    norm = np.sqrt(np.clip(np.diag(K), 0.0, None))
    out["drift_norm"] = norm
    rows = np.flatnonzero(norm > 0)  # x_t = 0 cannot be normalized
    if rows.size == 0:
        return out
    Kn = K[np.ix_(rows, rows)] / np.outer(norm[rows], norm[rows])
    lam1, u1 = _top(Kn)
    if u1[-1] < 0:  # last row projects positively
        u1 = -u1
    s1 = np.sqrt(lam1)
    out["drift_pc1_share"] = lam1 / rows.size
    a = norm[rows] * s1 * u1
    out["backbone_coef"][rows] = a
    out["residual"][rows] = np.sqrt(np.clip(norm[rows] ** 2 - a**2, 0.0, None))
    out["backbone_share"][rows] = lam1 * u1**2
    dx = np.cumsum(M, axis=1)[:, rows] / norm[rows][None, :]  # <d_t, xn_u>
    dn = np.sqrt(np.clip(np.diag(M), 0.0, None))
    with np.errstate(invalid="ignore", divide="ignore"):
        out["update_alignment"] = np.where(dn > 0, (dx @ u1) / (s1 * dn), np.nan) if s1 > 0 else nan.copy()
    if window:
        w = int(window)
        m = rows.size
        tops = {}
        for start in range(0, m - w + 1):
            blk = slice(start, start + w)
            tops[start] = _top(Kn[blk, blk])
        for e in range(w - 1, m):
            sb = e - w + 1
            out["rolling_pc1_share"][rows[e]] = tops[sb][0] / w
            sa = sb - w
            if sa < 0:
                continue
            (la, ua), (lb, ub) = tops[sa], tops[sb]
            if la > 0 and lb > 0:
                c = ua @ Kn[sa : sa + w, sb : sb + w] @ ub / np.sqrt(la * lb)
                out["pc1_stability"][rows[e]] = min(abs(c), 1.0)
    return out


def drift(ds: xr.Dataset, *, params=T.UNSET, exact=None, window: int | None = None,
          layers=T.UNSET) -> xr.Dataset:
    """Drift PCA of each run's trajectory (docs/methods.md#drift, [D] Sec. 3).

    Rows x_t = theta_t - theta_0 for every saved checkpoint after the first (x_0 = 0 cannot be
    normalized), row-normalized, not centered; the SVD of the n x P matrix comes from its n x n
    Gram, which is built from the update Gram (see the module docstring for every formula).

    Parameters
    ----------
    ds : xarray.Dataset
        The sedviz Dataset with ``delta_dot`` holding every lag of the run (L >= n - 1), or
        ``sketch`` (then x_t is sketched as sketch_t - sketch_0).
    params : see :func:`sedviz.analysis.edge.edge` (None = the whole model; ``layers=`` is its
        deprecated name).
    exact : None, True or False
        None: ``delta_dot`` for the runs where it holds all pairs, else ``sketch``.
        True: ``delta_dot`` only; False: ``sketch`` only.
    window : int >= 2 or None
        Also the rolling PC1 of ``window`` consecutive rows and its stability |<v_w, v_{w+1}>|
        between the two adjacent, non-overlapping windows ending at each step.

    Returns
    -------
    xarray.Dataset with
    ``drift_pc1_share`` (run): lambda_1 / n of the normalized rows;
    (run, step), NaN where the run has no update:
    ``backbone_coef`` a(t) = <x_t, v_b> (parameter units), ``residual`` ||x_t - a v_b||,
    ``backbone_share`` a^2 / ||x_t||^2, ``update_alignment`` C(t) = <d_t, v_b> / ||d_t||,
    ``drift_norm`` ||x_t||; with ``window``: ``pc1_stability`` (labelled with the step of the later
    window's last row) and ``rolling_pc1_share`` (share of PC1 in the window ending at the step);
    ``drift_source`` (run): where the Gram came from; ``n_rows`` (run).
    """
    fn = "drift"
    ds = T.check_dataset(ds, fn)
    T.check_exact(exact, fn)
    if window is not None:
        window = T.check_window(window, "window", fn)
    group = T.params_keyword(params, layers, fn)
    params = T.select_params(ds, group, fn, "params")
    runs = [str(r) for r in ds["run"].values]
    all_steps = ds["step"].values
    names = ("backbone_coef", "residual", "backbone_share", "update_alignment", "drift_norm")
    if window:
        names += ("pc1_stability", "rolling_pc1_share")
    per_step = {k: np.full((len(runs), len(all_steps)), np.nan) for k in names}
    share = np.full(len(runs), np.nan)
    srcs, nrows = [], np.zeros(len(runs), dtype=np.int64)
    L = T.max_lag(ds)
    if exact is True and L < 0:
        raise SedvizError(
            f"{fn}(exact=True): needs `delta_dot` with every lag, which this Dataset lacks. Recompute "
            f"with max_lag='all', or pass exact=None/False to use `sketch`."
        )
    for ir, run in enumerate(runs):
        src = None
        if exact is not False and L >= 0:
            up = T.run_updates(ds, run, params, "delta_dot")
            if L >= up.n - 1:
                src = "delta_dot"
            elif exact is True or "sketch" not in ds.data_vars:
                raise SedvizError(
                    f"{fn}(exact={exact}): run {run!r} has {up.n} updates, so the drift Gram needs "
                    f"`delta_dot` up to lag {up.n - 1}, but the Dataset holds lags 0..{L}. Recompute "
                    f"with max_lag >= {up.n - 1}"
                    + (", or pass exact=False to use `sketch`." if "sketch" in ds.data_vars else ".")
                )
        if src is None:
            if "sketch" not in ds.data_vars:
                raise SedvizError(f"{fn}(exact=False): needs `sketch`, which this Dataset lacks; pass exact=None.")
            src = "sketch"
            up = T.run_updates(ds, run, params, "sketch")
        srcs.append(src)
        nrows[ir] = up.n
        if up.n == 0:
            continue
        res = drift_from_gram(up.full_gram(), window)
        share[ir] = res["drift_pc1_share"]
        pos = T.step_positions(all_steps, up.steps)
        for k in names:
            per_step[k][ir, pos] = res[k]
    out = xr.Dataset(coords={"run": runs, "step": all_steps})
    out["drift_pc1_share"] = ("run", share, {"long_name": "PC1 share of the normalized drift rows", "units": "1"})
    attrs = {
        "backbone_coef": {"long_name": "a(t) = <theta_t - theta_0, v_b>", "units": "parameter units"},
        "residual": {"long_name": "||x_t - a(t) v_b||", "units": "parameter units"},
        "backbone_share": {"long_name": "a(t)^2 / ||x_t||^2", "units": "1"},
        "update_alignment": {"long_name": "C(t) = <d_t, v_b> / ||d_t||", "units": "1"},
        "drift_norm": {"long_name": "||theta_t - theta_0||", "units": "parameter units"},
        "pc1_stability": {"long_name": "|<v_w, v_(w+1)>| of adjacent windows", "units": "1"},
        "rolling_pc1_share": {"long_name": "PC1 share of the window ending here", "units": "1"},
    }
    for k in names:
        out[k] = (("run", "step"), per_step[k], attrs[k])
    out["drift_source"] = ("run", np.array(srcs, dtype=str))
    out["n_rows"] = ("run", nrows)
    out.attrs.update(
        method="docs/methods.md#drift; Xu, Optimizer-Induced Low-Dimensional Drift and Transverse Dynamics "
               "in Transformer Training (arXiv 2602.23696)",
        options=T.options_attr(params=group, exact=exact, window=window),
        params=json.dumps(params),
    )
    return out
