"""Spectral edge of the update trajectory and its phases (docs/methods.md#spectral-edge; Xu, "Spectral Edge Dynamics of
Training Trajectories", arXiv 2603.15678, 2026, referred to as [S]).

A window of W consecutive updates X = [d_{i-W+1}; ...; d_i] (W x P, not centered, not normalized)
is summarized by the singular values of X, taken from its W x W Gram matrix G = X X^T in float64.
The Gram comes either exactly from the stored inner products ``delta_dot`` or approximately from
the stored Johnson-Lindenstrauss ``sketch`` of every checkpoint; no checkpoint is read again.
"""
from __future__ import annotations

import json

import numpy as np
import xarray as xr

from sedviz.errors import SedvizError

from . import _trajectory as T

__all__ = ["edge", "phases", "PHASE_CODES"]

#: Codes of the ``phase`` variable returned by :func:`phases` (CF ``flag_values``/``flag_meanings``).
PHASE_CODES = {"none": -1, "rise": 0, "plateau": 1, "collapse": 2}


def _window_measures(G: np.ndarray) -> dict[str, np.ndarray]:
    """Per-window spectral measures of Grams G (nw, W, W) (docs/methods.md#spectral-edge)."""
    nw, W, _ = G.shape
    lam = T.gram_eigvals(G)  # (nw, W) descending, clamped
    s = np.sqrt(lam)
    r = T.gap_ratios(s)  # (nw, W-1)
    tot_s = s.sum(axis=1, keepdims=True)
    tot_l = lam.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        weighted = np.where(tot_s > 0, s[:, :-1] / tot_s, 0.0) * r
        pc1 = np.where(tot_l > 0, lam[:, 0] / tot_l, np.nan)
        cum = np.cumsum(lam, axis=1) / tot_l[:, None]
    k95 = np.where(tot_l > 0, 1 + np.argmax(cum >= 0.95 - 1e-12, axis=1), np.nan)
    fin = np.isfinite(r).all(axis=1)
    k_star = np.where(fin, 1 + np.argmax(np.where(np.isfinite(r), r, -np.inf), axis=1), 0)
    k_w = np.where(fin, 1 + np.argmax(np.where(np.isfinite(weighted), weighted, -np.inf), axis=1), 0)
    speed = np.sqrt(np.clip(G.sum(axis=(1, 2)), 0.0, None)) / W  # ||theta_i - theta_{i-W}|| / W
    return dict(s=s, r=r, lam=lam, k_star=k_star, k_star_weighted=k_w, update_pc1_share=pc1, k95=k95,
                drift_speed=speed, ok=fin)


def _mode(ks: np.ndarray) -> int:
    """Most frequent k (the smallest on ties), 0 when there is none."""
    ks = ks[ks > 0]
    if ks.size == 0:
        return 0
    return int(np.argmax(np.bincount(ks)))


def edge(ds: xr.Dataset, windows=(10, 20), *, params=T.UNSET, exact=None, k_star="argmax",
         jackknife_groups: int = 10, layers=T.UNSET) -> xr.Dataset:
    """Spectral edge of the update trajectory for each window size (docs/methods.md#spectral-edge, [S] Sec. 2-3).

    For every run and window size W, slide a window of W consecutive updates (stride one
    checkpoint, labelled with the step of its last checkpoint) and take the singular values
    s_1 >= ... >= s_W of X = [d_{i-W+1}; ...; d_i] from the eigenvalues of G = X X^T (float64,
    negatives clamped to 0, s = sqrt(lambda)).

    Parameters
    ----------
    ds : xarray.Dataset
        The sedviz Dataset with ``delta_dot`` (run, step, param, lag) and/or ``sketch``
        (run, step, param, proj), see docs/schema.md.
    windows : int or sequence of int
        Window sizes W >= 2, in checkpoints. Default (10, 20) as in [S].
    params : None, str, list of str or callable
        The parameter group: None = the whole model (every ``param``); a parameter name; a
        ``param_kind`` or kind prefix ("attn" matches attn_qkv, attn_out, ...); a list of these;
        or a callable ``name -> bool``. (``layers=`` is the deprecated name of this keyword.)
    exact : None, True or False
        Where the Grams come from. None: ``delta_dot`` when it holds lag W - 1, else ``sketch``.
        True: ``delta_dot`` only (error when it is missing or too short). False: ``sketch`` only.
    k_star : "argmax", "weighted" or int
        Which fixed k defines the edge series r_{k*}: the run's mode over windows of
        argmax_k r_k ("argmax", [S]), of the weighted argmax_k (s_k / sum s) r_k ("weighted"), or
        a given k (1 <= k < W for every W).
    jackknife_groups : int >= 2, or 0
        Groups of the grouped jackknife that estimates the error of every sketched gap ratio
        (see ``gap_ratio_rel_se`` below); 0 skips it. Each parameter's d sketch coordinates
        are split into min(groups, d) contiguous blocks.

    Returns
    -------
    xarray.Dataset with coordinates run, window, step (the input's union steps) and
    edge_k = 1..max W (1-based: edge_k = k indexes s_k and the gap r_k between s_k and s_(k+1)):

    - ``edge_sv`` (run, window, step, edge_k): s_k; NaN past W and where the run has no window.
    - ``gap_ratio`` (run, window, step, edge_k): r_k = s_k / max(s_{k+1}, 1e-15), k = 1..W-1
      (NaN at k >= W; the edge_k axis is shared with ``edge_sv``).
    - ``k_star``, ``k_star_weighted`` (run, window, step): argmax_k r_k and
      argmax_k (s_k / sum_j s_j) r_k, 1-based.
    - ``k_star_mode`` (run, window): the fixed k* of the run (see ``k_star``).
    - ``edge`` (run, window, step): the spectral edge series r_{k*} at k* = ``k_star_mode``.
    - ``update_pc1_share`` (run, window, step): lambda_1 / sum lambda of the window's updates.
    - ``k95`` (run, window, step): smallest k with sum_{j<=k} lambda_j >= 0.95 sum lambda.
    - ``drift_speed`` (run, window, step): sqrt(sum_ab G_ab) / W = ||theta_i - theta_{i-W}|| / W
      (parameter units per checkpoint).
    - ``edge_source`` (window): "delta_dot" or "sketch", where the Grams came from.
    - ``gap_ratio_rel_se`` (run, window, step, edge_k) and ``edge_rel_se`` (run, window, step),
      only when some W is served by the sketch: the estimated relative error of the sketched
      r_k (and of the edge r_k*), from a grouped jackknife over the sketch coordinates. The
      Gram G of a window is the sum of the Grams G_g of ``jackknife_groups`` disjoint groups of
      coordinates; with r_(-g) the gap ratios of G - G_g (gap ratios do not depend on scale),
      se = sqrt((n_g - 1) / n_g * sum_g (r_(-g) - mean_g r_(-g))^2) and rel_se = se / r_k. NaN
      where the window came from ``delta_dot`` (exact, no sketch error).
    - ``sketch_gap_error`` (run, window, step, edge_k), only when both sources can serve some W:
      the measured |r_k(sketch) - r_k(exact)| / r_k(exact) of each window; ``sketch_error``
      (run, window, edge_k): its mean over the run's windows ([S] Sec. 2, docs/methods.md#spectral-edge).

    Attrs: ``method``, ``options`` (JSON), ``params`` (JSON list of the group's parameters).
    """
    fn = "edge"
    ds = T.check_dataset(ds, fn)
    ws = T.check_windows(windows, fn)
    T.check_exact(exact, fn)
    T.check_window(jackknife_groups, "jackknife_groups", fn, minimum=0)
    if jackknife_groups == 1:
        raise SedvizError(f"{fn}(jackknife_groups=1): the jackknife needs at least 2 groups (or 0 to skip it).")
    is_int = isinstance(k_star, (int, np.integer)) and not isinstance(k_star, bool)
    if not (is_int or k_star in ("argmax", "weighted")):
        raise SedvizError(f"{fn}(k_star={k_star!r}): expected 'argmax', 'weighted' or an int k >= 1.")
    if is_int and not 1 <= int(k_star) < ws[0]:
        raise SedvizError(
            f"{fn}(k_star={k_star}): a fixed k must satisfy 1 <= k < W for every window "
            f"(smallest W here is {ws[0]})."
        )
    group = T.params_keyword(params, layers, fn)
    params = T.select_params(ds, group, fn, "params")
    sources = {W: T.resolve_source(ds, exact, W - 1, fn, f"windows={W}") for W in ws}
    # The sketch error needs both: delta_dot reaching W - 1 and a sketch.
    both = {W: ("sketch" in ds.data_vars and T.max_lag(ds) >= W - 1) for W in ws}

    runs = [str(r) for r in ds["run"].values]
    all_steps = ds["step"].values
    Wmax = ws[-1]
    nR, nW, nS = len(runs), len(ws), len(all_steps)
    shape = (nR, nW, nS)
    sv = np.full(shape + (Wmax,), np.nan)
    gr = np.full(shape + (Wmax,), np.nan)
    out = {name: np.full(shape, np.nan) for name in
           ("k_star", "k_star_weighted", "edge", "update_pc1_share", "k95", "drift_speed")}
    kmode = np.full((nR, nW), np.nan)
    err = np.full((nR, nW, Wmax), np.nan)
    werr = np.full(shape + (Wmax,), np.nan)
    rel_se = np.full(shape + (Wmax,), np.nan)
    edge_se = np.full(shape, np.nan)
    n_groups = min(jackknife_groups, ds.sizes["proj"]) if "proj" in ds.dims else 0  # at most d groups
    jack = n_groups >= 2 and any(sources[W] == "sketch" for W in ws)

    lag_need = {src: max([W - 1 for W in ws if sources[W] == src] or [-1]) for src in T.SOURCES}
    if any(both.values()):
        lag_need["delta_dot"] = max(lag_need["delta_dot"], max(W - 1 for W in ws if both[W]))
        lag_need["sketch"] = max(lag_need["sketch"], max(W - 1 for W in ws if both[W]))
    for ir, run in enumerate(runs):
        ups, bands = {}, {}
        for src in T.SOURCES:
            if lag_need[src] >= 0:
                ups[src] = T.run_updates(ds, run, params, src, lag=lag_need[src] if src == "delta_dot" else None)
                bands[src] = ups[src].band_to(lag_need[src])
        gbands = ups["sketch"].group_bands(lag_need["sketch"], n_groups) if jack else None
        for iw, W in enumerate(ws):
            src = sources[W]
            up = ups[src]
            G = T.window_grams(bands[src], W)
            if G.shape[0] == 0:
                continue
            m = _window_measures(G)
            pos = T.step_positions(all_steps, up.steps[W - 1:])
            sv[ir, iw][pos, :W] = m["s"]
            gr[ir, iw][pos, : W - 1] = m["r"]
            for name in ("update_pc1_share", "k95", "drift_speed"):
                out[name][ir, iw, pos] = m[name]
            out["k_star"][ir, iw, pos] = np.where(m["ok"], m["k_star"], np.nan)
            out["k_star_weighted"][ir, iw, pos] = np.where(m["ok"], m["k_star_weighted"], np.nan)
            if k_star == "argmax":
                k = _mode(m["k_star"])
            elif k_star == "weighted":
                k = _mode(m["k_star_weighted"])
            else:
                k = int(k_star)
            if k > 0:
                kmode[ir, iw] = k
                out["edge"][ir, iw, pos] = m["r"][:, k - 1]
            if src == "sketch" and jack:
                rj = np.stack([T.gap_ratios(np.sqrt(T.gram_eigvals(G - T.window_grams(b, W)))) for b in gbands])
                ng = rj.shape[0]
                with np.errstate(invalid="ignore", divide="ignore"):
                    se = np.sqrt((ng - 1) / ng * ((rj - rj.mean(axis=0)) ** 2).sum(axis=0)) / m["r"]
                rel_se[ir, iw][pos, : W - 1] = se
                if k > 0:
                    edge_se[ir, iw, pos] = se[:, k - 1]
            if both[W]:
                other = "sketch" if src == "delta_dot" else "delta_dot"
                r_src = m["r"]
                Go = T.window_grams(bands[other], W)
                r_oth = _window_measures(Go)["r"] if Go.shape[0] else np.empty((0, W - 1))
                steps_src, steps_oth = up.steps[W - 1:], ups[other].steps[W - 1:]
                common, i_s, i_o = np.intersect1d(steps_src, steps_oth, return_indices=True)
                if common.size:
                    r_ex, r_sk = (r_src[i_s], r_oth[i_o]) if src == "delta_dot" else (r_oth[i_o], r_src[i_s])
                    with np.errstate(invalid="ignore", divide="ignore"):
                        rel = np.abs(r_sk - r_ex) / r_ex
                    rel = np.where(np.isfinite(rel), rel, np.nan)
                    err[ir, iw, : W - 1] = np.nanmean(rel, axis=0)
                    werr[ir, iw][T.step_positions(all_steps, common), : W - 1] = rel

    coords = {"run": runs, "window": np.asarray(ws, dtype=np.int64), "step": all_steps,
              "edge_k": np.arange(1, Wmax + 1, dtype=np.int64)}
    d3 = ("run", "window", "step")
    data = {
        "edge_sv": (d3 + ("edge_k",), sv, {"long_name": "singular values of the update window", "units": "parameter units"}),
        "gap_ratio": (d3 + ("edge_k",), gr, {"long_name": "gap ratio s_k / s_(k+1)", "units": "1"}),
        "k_star": (d3, out["k_star"], {"long_name": "signal rank argmax_k r_k (1-based)"}),
        "k_star_weighted": (d3, out["k_star_weighted"], {"long_name": "weighted signal rank argmax_k (s_k/sum s) r_k"}),
        "k_star_mode": (("run", "window"), kmode, {"long_name": f"fixed k* of the edge series ({k_star})"}),
        "edge": (d3, out["edge"], {"long_name": "spectral edge r_(k*) at the run's k*", "units": "1"}),
        "update_pc1_share": (d3, out["update_pc1_share"], {"long_name": "lambda_1 / sum lambda of the update window", "units": "1"}),
        "k95": (d3, out["k95"], {"long_name": "components holding 95% of sum lambda"}),
        "drift_speed": (d3, out["drift_speed"], {"long_name": "sqrt(sum G) / W", "units": "parameter units per checkpoint"}),
        "edge_source": (("window",), np.array([sources[W] for W in ws], dtype=str)),
    }
    if jack:
        data["gap_ratio_rel_se"] = (d3 + ("edge_k",), rel_se,
                                    {"long_name": "jackknife relative standard error of the sketched r_k", "units": "1"})
        data["edge_rel_se"] = (d3, edge_se, {"long_name": "jackknife relative standard error of the sketched edge",
                                             "units": "1"})
    if any(both.values()):
        data["sketch_gap_error"] = (d3 + ("edge_k",), werr,
                                    {"long_name": "relative error of r_k from the sketch, per window", "units": "1"})
        data["sketch_error"] = (("run", "window", "edge_k"), err,
                                {"long_name": "mean relative error of r_k from the sketch", "units": "1"})
    res = xr.Dataset({k: xr.Variable(*v) for k, v in data.items()}, coords=coords)
    res.attrs.update(
        method="docs/methods.md#spectral-edge; Xu, Spectral Edge Dynamics of Training Trajectories (arXiv 2603.15678)",
        options=T.options_attr(windows=ws, params=group, exact=exact, k_star=k_star,
                               jackknife_groups=jackknife_groups),
        params=json.dumps(params),
    )
    return res


def _plateau(v: np.ndarray, frac: float) -> tuple[int, int, int]:
    """(peak, start, end) indices: the longest contiguous run >= frac * max that holds a maximum."""
    vmax = np.max(v)
    above = v >= frac * vmax
    best = None
    i = 0
    n = len(v)
    while i < n:
        if not above[i]:
            i += 1
            continue
        j = i
        while j + 1 < n and above[j + 1]:
            j += 1
        seg = v[i : j + 1]
        if np.any(seg == vmax) and (best is None or j - i > best[1] - best[0]):
            best = (i, j)
        i = j + 1
    i, j = best
    peak = i + int(np.argmax(v[i : j + 1]))
    return peak, i, j


def phases(edge, *, threshold: float = 1.20, plateau_frac: float = 0.85) -> xr.Dataset:
    """Rise, plateau and collapse of the spectral edge series (docs/methods.md#spectral-edge, [S] Sec. 4).

    Per series (each run and window): the peak is the maximum; the plateau is the longest
    contiguous stretch holding the peak where the series stays >= ``plateau_frac`` x peak; the
    rise is everything before it and the collapse everything after it. The collapse step is the
    first step after the peak where the series falls below ``threshold`` (tau = 1.20 in [S]).
    Steps where the series is NaN (no window) are skipped; contiguity is in checkpoints.

    Parameters
    ----------
    edge : xarray.Dataset or xarray.DataArray
        The output of :func:`edge` (its ``edge`` variable is used) or any DataArray with a
        ``step`` dimension (other dimensions, e.g. run and window, are kept).
    threshold : float
        tau of the collapse step (gap ratio units).
    plateau_frac : float
        Fraction of the peak that bounds the plateau, in (0, 1].

    Returns
    -------
    xarray.Dataset over the series' other dimensions (e.g. run, window):
    ``peak_step``, ``peak_value``, ``plateau_start``, ``plateau_end``, ``collapse_step``
    (NaN when the series never falls below ``threshold`` after the peak, or is empty), and
    ``phase`` (..., step) int8: 0 = rise, 1 = plateau, 2 = collapse, -1 = no data (the codes are
    in ``PHASE_CODES`` and in the CF attrs ``flag_values``/``flag_meanings``).
    """
    fn = "phases"
    if isinstance(edge, xr.Dataset):
        if "edge" not in edge.data_vars:
            raise SedvizError(f"{fn}(edge=...): the Dataset has no `edge` variable; pass the result of sedviz edge().")
        da = edge["edge"]
    elif isinstance(edge, xr.DataArray):
        da = edge
    else:
        raise SedvizError(
            f"{fn}(edge=...): expected the Dataset from edge() or a DataArray, got {type(edge).__name__}."
        )
    if "step" not in da.dims:
        raise SedvizError(f"{fn}(edge=...): the series needs a `step` dimension; it has {da.dims}.")
    if not (isinstance(plateau_frac, (int, float)) and 0 < plateau_frac <= 1):
        raise SedvizError(f"{fn}(plateau_frac={plateau_frac!r}): expected a number in (0, 1], e.g. 0.85.")
    if not isinstance(threshold, (int, float)) or isinstance(threshold, bool):
        raise SedvizError(f"{fn}(threshold={threshold!r}): expected a number (gap ratio), e.g. 1.20.")
    da = da.sortby("step") if da.sizes["step"] > 1 else da
    other = [d for d in da.dims if d != "step"]
    da = da.transpose(*other, "step")
    steps = da["step"].values
    v = np.asarray(da.values, dtype=np.float64).reshape(-1, len(steps))
    n = v.shape[0]
    res = {k: np.full(n, np.nan) for k in ("peak_step", "peak_value", "plateau_start", "plateau_end", "collapse_step")}
    code = np.full(v.shape, PHASE_CODES["none"], dtype=np.int8)
    for i in range(n):
        idx = np.flatnonzero(np.isfinite(v[i]))
        if idx.size == 0:
            continue
        x = v[i, idx]
        p, a, b = _plateau(x, plateau_frac)
        res["peak_step"][i] = steps[idx[p]]
        res["peak_value"][i] = x[p]
        res["plateau_start"][i] = steps[idx[a]]
        res["plateau_end"][i] = steps[idx[b]]
        below = np.flatnonzero(x[p + 1:] < threshold)
        if below.size:
            res["collapse_step"][i] = steps[idx[p + 1 + below[0]]]
        code[i, idx[:a]] = PHASE_CODES["rise"]
        code[i, idx[a : b + 1]] = PHASE_CODES["plateau"]
        code[i, idx[b + 1:]] = PHASE_CODES["collapse"]
    oshape = tuple(da.sizes[d] for d in other)
    coords = {d: da[d] for d in other if d in da.coords}
    coords["step"] = steps
    out = xr.Dataset(
        {k: (tuple(other), res[k].reshape(oshape)) for k in res},
        coords=coords,
    )
    out["phase"] = (tuple(other) + ("step",), code.reshape(oshape + (len(steps),)),
                    {"flag_values": [-1, 0, 1, 2], "flag_meanings": "none rise plateau collapse"})
    out["peak_value"].attrs["units"] = "1"
    out.attrs.update(
        method="docs/methods.md#spectral-edge (phases); Xu, Spectral Edge Dynamics of Training Trajectories (arXiv 2603.15678)",
        options=T.options_attr(threshold=threshold, plateau_frac=plateau_frac),
    )
    return out
