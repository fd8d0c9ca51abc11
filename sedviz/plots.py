"""HoloViews figures of a sedviz Dataset (Bokeh backend).

One function per view, named ``plot_<what>``. Each takes the Dataset (docs/schema.md) or the
Dataset an analysis returned, plus keyword selections (``run=``, ``layer=``, ``pair=``,
``steps=``, ``ranks=``, ...), and returns a HoloViews object holding exactly the selected values:
nothing is drawn or displayed until the object is shown (in a notebook, after
``hv.extension("bokeh")``) or rendered (``hv.render(obj, backend="bokeh")``). Widgets
(:mod:`sedviz.widgets`) compose these functions.

Selections
----------
- ``run``, ``layer``, ``pair``, ``window``, ``detector``: a label of that dimension. A label that is
  not there raises :class:`~sedviz.errors.SedvizError` listing the valid ones.
- ``steps``: ``None`` (all), a ``slice`` of step *values* (label based, both ends included, as in
  ``Dataset.sel``), or a list of steps. Steps where the selected run has no checkpoint are dropped.
- ``ranks``: ``(start, stop)``, half-open like a Python slice (``(0, 20)`` is the top 20 singular
  values, ranks 0 to 19), the same in every plot and explorer; also a ``slice``, one rank (int), or a
  list of ranks. Ranks past a layer's own rank (NaN) are dropped.

Layout
------
Figures are at most 700 px wide plus their legend, so two side by side or one with its legend fit a
1200-px notebook. Legends sit outside the data (right of a full-width figure, below a half-width
panel), log axes label every decade and the 2 and 5 between them, and stacked panels of an
overlay keep their own y range (``axiswise``) so a small run is not flattened by a large one.
Runs appear in the order the Dataset stores them, in heat-map layouts and selectors too.

A variable that is missing raises a SedvizError naming it and the function that produces it.

Imported inside a Jupyter kernel, this module loads BokehJS into the page once, inline (no CDN),
as ``hv.extension("bokeh", inline=True)`` does, so that plots and the explorers of
:mod:`sedviz.widgets` show offline; ``SEDVIZ_BOKEHJS=cdn`` loads it from the CDN instead (smaller
notebooks) and ``SEDVIZ_BOKEHJS=off`` leaves it to the notebook. See :func:`load_bokehjs`.
"""
from __future__ import annotations

import json
import os
from collections.abc import Sequence

import holoviews as hv
import numpy as np
import xarray as xr

import holoviews.plotting.bokeh  # noqa: F401  (registers the Bokeh backend's options)

from .errors import SedvizError

__all__ = [
    "load_bokehjs",
    "plot_sv",
    "plot_eff_rank",
    "plot_align",
    "plot_align_score",
    "plot_sva",
    "plot_sva_score",
    "plot_prune",
    "plot_masks",
    "plot_lmc",
    "plot_edge",
    "plot_lag_flip",
    "plot_drift",
    "plot_compare",
    "plot_loss",
    "plot_warning",
]

WIDTH, HEIGHT = 700, 320
HALF = WIDTH // 2 + 80  # a panel of a two-column layout
LEGEND = "right"  # full-width figures: the legend right of the frame, never on the data
LEGEND_HALF = "bottom"  # half-width panels: below the frame
# Categorical colours: one per run (by its position in the Dataset, so a run keeps its colour in
# every plot), and the fixed vocabularies of the pruning and masking analyses.
_PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
_KEEP_COLORS = {"full": "#4d4d4d", "top": "#1f77b4", "bottom": "#ff7f0e"}
_MASK_COLORS = {"full": "#4d4d4d", "magnitude": "#1f77b4", "random": "#ff7f0e"}
_PHASE_COLORS = {"rise": "#2ca02c", "plateau": "#1f77b4", "collapse": "#d62728"}

# Where each variable comes from, for the error raised when it is missing.
_PIPELINE = "sedviz.pipeline (`sedviz compute`)"
_PRODUCERS = {
    **{v: _PIPELINE for v in ("sv", "eff_rank", "stable_rank", "spectral_norm", "fro_norm", "sva",
                              "sva_score", "align", "align_score", "sketch", "delta_dot")},
    **{v: "the run's metric logs, read by sedviz.io during `sedviz compute`"
       for v in ("train_loss", "val_loss", "train_acc", "val_acc")},
    **{v: "sedviz.analysis.edge(ds, windows=...)" for v in ("edge", "edge_sv", "gap_ratio", "k_star")},
    **{v: "sedviz.analysis.phases(edge_ds)" for v in ("peak_step", "plateau_start", "plateau_end", "collapse_step")},
    **{v: "sedviz.analysis.lag_flip(ds, windows=...)" for v in ("xcorr", "peak_lag", "peak_r")},
    **{v: "sedviz.analysis.drift(ds)" for v in ("backbone_share",)},
    **{v: "sedviz.analysis.early_warning(ds)" for v in ("signal", "grok_step", "fire_step")},
    **{v: "sedviz.analysis.prune_curves(ds, model_factory, evaluate)" for v in ("prune_loss", "prune_acc")},
    **{v: "sedviz.analysis.masks(ds, model_factory, evaluate)" for v in ("mask_loss", "mask_acc")},
    **{v: "sedviz.analysis.lmc(a, b, model_factory, evaluate)" for v in ("lmc_loss", "lmc_acc", "barrier")},
}


# --------------------------------------------------------------------------------------------
# validation and selection helpers


def _check_dataset(ds, func: str, what: str = "ds") -> xr.Dataset:
    if not isinstance(ds, xr.Dataset):
        raise SedvizError(f"{func}: {what} must be an xarray.Dataset, got {type(ds).__name__}")
    return ds


def _require(ds: xr.Dataset, names: Sequence[str], func: str, what: str = "ds") -> None:
    _check_dataset(ds, func, what)
    for name in names:
        if name not in ds.data_vars:
            producer = _PRODUCERS.get(name, "the analysis that defines it")
            raise SedvizError(
                f"{func}: {what} has no variable {name!r}; it is produced by {producer}. "
                f"Variables present: {sorted(map(str, ds.data_vars))}"
            )


def _require_any(ds: xr.Dataset, names: Sequence[str], func: str, what: str = "ds") -> list[str]:
    _check_dataset(ds, func, what)
    present = [n for n in names if n in ds.data_vars]
    if not present:
        producers = sorted({_PRODUCERS.get(n, "an analysis") for n in names})
        raise SedvizError(
            f"{func}: {what} has none of the variables {list(names)}; they are produced by "
            f"{' / '.join(producers)}. Variables present: {sorted(map(str, ds.data_vars))}"
        )
    return present


def _labels(ds, dim: str) -> list:
    return ds[dim].values.tolist()


def _same(a, b) -> bool:
    if isinstance(a, (float, np.floating)) or isinstance(b, (float, np.floating)):
        try:
            return bool(np.isclose(float(a), float(b)))
        except (TypeError, ValueError):
            return False
    return a == b


def _choose(ds, dim: str, value, func: str, param: str | None = None):
    """The label of ``dim`` equal to ``value`` (as stored), or a SedvizError listing the choices."""
    param = param or dim
    if dim not in ds.dims:
        raise SedvizError(f"{func}: the Dataset has no dimension {dim!r} for {param}=; its dims are {list(ds.dims)}")
    choices = _labels(ds, dim)
    for c in choices:
        if _same(c, value):
            return c
    raise SedvizError(f"{func}: {param}={value!r} is not a {dim} of the Dataset; choose one of {choices}")


def _choose_many(ds, dim: str, values, func: str, param: str | None = None) -> list:
    """All labels of ``dim`` when values is None, else each one checked."""
    if values is None:
        return _labels(ds, dim)
    if isinstance(values, (str, bytes)) or np.ndim(values) == 0:
        values = [values]
    return [_choose(ds, dim, v, func, param) for v in values]


def _select_steps(da: xr.DataArray, steps, func: str) -> xr.DataArray:
    if steps is None or "step" not in da.dims:
        return da
    if isinstance(steps, slice):
        return da.sel(step=steps)
    return da.sel(step=_choose_many(da, "step", steps, func, "steps"))


def _select_ranks(da: xr.DataArray, ranks, func: str) -> xr.DataArray:
    if ranks is None:
        return da
    if isinstance(ranks, tuple):
        return da.isel(rank=_rank_slice(ranks, func))
    if isinstance(ranks, slice):
        return da.isel(rank=ranks)
    return da.sel(rank=_choose_many(da, "rank", ranks, func, "ranks"))


def _rank_slice(ranks: tuple, func: str) -> slice:
    """``(start, stop)`` half-open -> slice(start, stop)."""
    if len(ranks) != 2 or not all(isinstance(r, (int, np.integer)) and not isinstance(r, bool) for r in ranks) \
            or not 0 <= ranks[0] < ranks[1]:
        raise SedvizError(f"{func}: ranks={ranks!r} must be (start, stop) with 0 <= start < stop, half-open like a "
                          f"Python slice: (0, 20) is the top 20 singular values")
    return slice(int(ranks[0]), int(ranks[1]))


def _log_axis(axis: str) -> dict:
    """Options for a readable log axis: ticks at 1, 2 and 5 of each decade, labelled as numbers (not
    only the powers of ten)."""
    from bokeh.models import LogTicker

    return {f"{axis}ticks": LogTicker(mantissas=[1, 2, 5], desired_num_ticks=8), f"{axis}formatter": "%.3g"}


def _nonempty(da: xr.DataArray, func: str, what: str) -> xr.DataArray:
    if da.size == 0 or bool(np.all(np.isnan(np.asarray(da.values, dtype=float)))):
        raise SedvizError(f"{func}: no values to plot for {what}; widen steps=/ranks= or choose another selection")
    return da


def _title(var: str, **sel) -> str:
    parts = ", ".join(f"{k}={v}" for k, v in sel.items() if v is not None)
    return f"{var}: {parts}" if parts else var


def _run_color(ds, run) -> str:
    runs = _labels(ds, "run") if "run" in ds.dims else [run]
    i = next((j for j, r in enumerate(runs) if r == run), 0)
    return _PALETTE[i % len(_PALETTE)]


def _opts(obj, **kw):
    return obj.opts(backend="bokeh", **kw)


def _fmt(x) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{x:g}"


# --------------------------------------------------------------------------------------------
# spectra


def plot_sv(ds: xr.Dataset, run, layer, *, ranks=(0, 20), steps=None, logy: bool = True) -> hv.Contours:
    """Singular values ``sv`` of one layer over steps, one line per rank, coloured by rank.

    Parameters
    ----------
    ds : the sedviz Dataset (needs ``sv``).
    run, layer : labels of ``run`` and ``layer``.
    ranks : ``(start, stop)`` half-open (default ``(0, 20)``, the top 20), a slice, an int or a list of ranks.
    steps : slice of step values, list of steps, or None for all.
    logy : log-scaled y axis.

    Returns
    -------
    hv.Contours (a Path whose value is constant along each line) with key dims (step, sv) and value
    dim ``rank``: one line per rank, ``obj.split()`` gives them in rank order. Drawn as one Bokeh
    MultiLine.
    """
    f = "plot_sv"
    _require(ds, ["sv"], f)
    run, layer = _choose(ds, "run", run, f), _choose(ds, "layer", layer, f)
    da = _select_steps(ds["sv"].sel(run=run, layer=layer), steps, f).dropna("step", how="all")
    da = _select_ranks(da, ranks, f).dropna("rank", how="all")
    _nonempty(da, f, f"run={run!r}, layer={layer!r}")
    step = da["step"].values
    paths = [{"step": step, "sv": da.sel(rank=r).values, "rank": int(r)} for r in da["rank"].values]
    path = hv.Contours(paths, kdims=["step", "sv"], vdims=["rank"])
    return _opts(path, color="rank", cmap="viridis", colorbar=True, clabel="rank", logy=logy, line_width=2,
                 tools=["hover"], title=_title("sv", run=run, layer=layer), width=WIDTH, height=HEIGHT,
                 **(_log_axis("y") if logy else {}))


def _heatmap(da: xr.DataArray, var: str, ydim: str, title: str, clim=None) -> hv.HeatMap:
    """HeatMap of a (step, ydim) DataArray: x = step (numeric), y = ydim, first label on top."""
    da = da.transpose("step", ydim)
    step, ys = da["step"].values, da[ydim].values
    data = (np.repeat(step, ys.size), np.tile(ys, step.size), np.asarray(da.values, dtype=float).ravel())
    hm = hv.HeatMap(data, kdims=["step", ydim], vdims=[var])
    kw = {"clim": clim} if clim is not None else {}
    return _opts(hm, cmap="viridis", colorbar=True, invert_yaxis=True, tools=["hover"], title=title,
                 width=WIDTH, height=HEIGHT, **kw)


def _per_run_heatmaps(ds, var, ydim, run, labels, steps, func, param, clim=None, layout=False):
    _require(ds, [var], func)
    labels = _choose_many(ds, ydim, labels, func, param)

    def one(r):
        da = _select_steps(ds[var].sel(run=r).sel({ydim: labels}), steps, func).dropna("step", how="all")
        _nonempty(da, func, f"{var}, run={r!r}")
        return _heatmap(da, var, ydim, _title(var, run=r), clim)

    if run is not None and (isinstance(run, str) or np.ndim(run) == 0):
        return one(_choose(ds, "run", run, func))
    runs = _choose_many(ds, "run", run, func)
    if layout:  # in the Dataset's run order (HoloMap.layout would sort the names)
        return hv.Layout([one(r) for r in runs]).cols(1)
    return hv.HoloMap([(r, one(r)) for r in runs], kdims=["run"], sort=False)


def plot_eff_rank(ds: xr.Dataset, run=None, *, layers=None, steps=None, layout: bool = False):
    """Heat map of the normalized effective rank ``eff_rank`` (docs/methods.md#effective-rank), layer x step.

    ``run`` given: one hv.HeatMap (key dims step, layer; value dim eff_rank), layers in Dataset
    order from the top. ``run=None`` (or a list): an hv.HoloMap over ``run`` (a run selector when
    shown), or with ``layout=True`` an hv.Layout with one heat map per run. Colours span the same
    range in every run. ``layers`` restricts and orders the rows.
    """
    return _per_run_heatmaps(ds, "eff_rank", "layer", run, layers, steps, "plot_eff_rank", "layers", layout=layout)


def _diagonal_heatmap(ds, var, dim, run, key, ranks, steps, f):
    """rank x step heat map of a diagonal variable (``align`` on a pair, ``sva`` on a layer)."""
    _require(ds, [var], f)
    run, key = _choose(ds, "run", run, f), _choose(ds, dim, key, f)
    da = _select_steps(ds[var].sel({"run": run, dim: key}), steps, f).dropna("step", how="all")
    da = _select_ranks(da, ranks, f).dropna("rank", how="all")
    _nonempty(da, f, f"run={run!r}, {dim}={key!r}")
    return _heatmap(da, var, "rank", _title(var, run=run, **{dim: key}), clim=(0, 1))


def plot_align(ds: xr.Dataset, run, pair, *, ranks=(0, 100), steps=None) -> hv.HeatMap:
    """Diagonal of the alignment matrix ``align`` (docs/methods.md#alignment-of-consecutive-layers, [Y] Eqn 3-4) of one pair, rank x step.

    hv.HeatMap with key dims (step, rank), value dim ``align`` in [0, 1], rank 0 on top.
    ``ranks`` defaults to the top 100 as in [Y]'s figures.
    """
    return _diagonal_heatmap(ds, "align", "pair", run, pair, ranks, steps, "plot_align")


def plot_align_score(ds: xr.Dataset, run=None, *, pairs=None, steps=None, layout: bool = False):
    """Heat map of ``align_score`` (mean of the first 10 diagonal entries, docs/methods.md#alignment-of-consecutive-layers), pair x step.

    One hv.HeatMap for a run; an hv.HoloMap over run (or hv.Layout with ``layout=True``) otherwise.
    """
    return _per_run_heatmaps(ds, "align_score", "pair", run, pairs, steps, "plot_align_score", "pairs",
                             clim=(0, 1), layout=layout)


def plot_sva(ds: xr.Dataset, run, layer, *, ranks=(0, 100), steps=None) -> hv.HeatMap:
    """Diagonal of the agreement with the final checkpoint ``sva`` (docs/methods.md#agreement-with-the-final-checkpoint, [Y] Eqn 5), rank x step.

    hv.HeatMap with key dims (step, rank), value dim ``sva`` in [0, 1], rank 0 on top.
    """
    return _diagonal_heatmap(ds, "sva", "layer", run, layer, ranks, steps, "plot_sva")


def plot_sva_score(ds: xr.Dataset, run=None, *, layers=None, steps=None, layout: bool = False):
    """Heat map of ``sva_score`` (mean of the first 10 entries of ``sva``, docs/methods.md#agreement-with-the-final-checkpoint), layer x step.

    One hv.HeatMap for a run; an hv.HoloMap over run (or hv.Layout with ``layout=True``) otherwise.
    """
    return _per_run_heatmaps(ds, "sva_score", "layer", run, layers, steps, "plot_sva_score", "layers",
                             clim=(0, 1), layout=layout)


# --------------------------------------------------------------------------------------------
# pruning, masks, linear mode connectivity


def _sel_if(da: xr.DataArray, **sel) -> xr.DataArray:
    return da.sel({k: v for k, v in sel.items() if k in da.dims})


def _default_step(da: xr.DataArray):
    """The last step with any value."""
    finite = da.notnull().any([d for d in da.dims if d != "step"]) if da.ndim > 1 else da.notnull()
    steps = da["step"].values[finite.values]
    return steps[-1].item() if steps.size else da["step"].values[-1].item()


def _bars_and_curves(res, variables, cat_dim, colors, run, step, func, x_dim=None, x_value=None):
    """Grouped bars (run, category) at one step (and x_dim value), and curves over x_dim or step."""
    runs = _choose_many(res, "run", run, func) if "run" in res.dims else [None]
    panels = []
    for var in variables:
        da = res[var]
        if "run" in da.dims:
            da = da.sel(run=runs)
        if "step" in da.dims:
            step_sel = _default_step(da) if step is None else _choose(res, "step", step, func)
        else:
            step_sel = None
        at_step = _sel_if(da, step=step_sel)
        cats = _labels(res, cat_dim)
        # bars at one point
        at = at_step.sel({x_dim: x_value}) if x_dim else at_step
        rows = []
        for r in runs:
            for c in cats:
                v = _sel_if(at, run=r).sel({cat_dim: c})
                rows.append(((r if r is not None else ""), c, float(v.values)))
        # categories in the Dataset's order (full, top, bottom), not sorted
        bars = hv.Bars(rows, kdims=["run", cat_dim], vdims=[var]).redim.values(
            **{"run": [r if r is not None else "" for r in runs], cat_dim: cats})
        where = {"step": step_sel} if step_sel is not None else {}
        if x_dim:
            where = {x_dim: x_value, **where}
        panels.append(_opts(bars, color=hv.dim(cat_dim).categorize(colors, default="#999999"), tools=["hover"],
                            title=_title(var, **where), width=HALF, height=HEIGHT, xrotation=0))
        # curves over x_dim (at the step), or over steps when there is no x_dim
        over = x_dim if x_dim else "step"
        source = at_step if x_dim else da
        if over not in source.dims or source.sizes[over] < 2:
            continue
        curves = []
        for r in runs:
            for c in cats:
                y = _sel_if(source, run=r).sel({cat_dim: c})
                label = f"{r} {c}" if r is not None and len(runs) > 1 else str(c)
                curves.append(_opts(hv.Curve((y[over].values, y.values), over, var, label=label),
                                    color=colors.get(c, "#999999"),
                                    line_dash="solid" if r in (None, runs[0]) else "dashed",
                                    tools=["hover"]))
        if x_dim:
            curves.append(_opts(hv.VLine(float(x_value), kdims=[over, var]), color="black", line_dash="dotted",
                                line_width=1))
        title = _title(var, step=step_sel) if x_dim else var
        panels.append(_opts(hv.Overlay(curves), title=f"{title} over {over}", width=HALF, height=HEIGHT,
                            legend_position=LEGEND_HALF))
    return hv.Layout(panels).cols(2)


def plot_prune(prune_ds: xr.Dataset, *, run=None, step=None, fraction=None):
    """SVD pruning (docs/methods.md#pruning, [Y] Fig. 4): full vs top vs bottom singular directions kept.

    ``prune_ds`` holds ``prune_loss`` and/or ``prune_acc`` with dims (run, step, keep, fraction),
    keep in {full, top, bottom}. For each variable: hv.Bars of (run, keep) at one ``fraction``
    (default 0.5, or the nearest present) and ``step`` (default the last with values), and an
    hv.Overlay of curves over the kept fraction, one per (run, keep), with the chosen fraction
    dotted. Returns an hv.Layout.
    """
    f = "plot_prune"
    variables = _require_any(prune_ds, ["prune_loss", "prune_acc"], f, "prune_ds")
    for d in ("keep",):
        if d not in prune_ds.dims:
            raise SedvizError(f"{f}: prune_ds has no dimension {d!r}; expected dims (run, step, keep, fraction)")
    x_value = None
    if "fraction" in prune_ds.dims:
        fractions = np.asarray(prune_ds["fraction"].values, dtype=float)
        if fraction is None:
            x_value = prune_ds["fraction"].values[int(np.argmin(np.abs(fractions - 0.5)))].item()
        else:
            x_value = _choose(prune_ds, "fraction", fraction, f)
    return _bars_and_curves(prune_ds, variables, "keep", _KEEP_COLORS, run, step, f,
                            x_dim="fraction" if x_value is not None else None, x_value=x_value)


def plot_masks(mask_ds: xr.Dataset, *, run=None, step=None):
    """Magnitude pruning against its random control (docs/methods.md#pruning): ``mask_loss`` / ``mask_acc``.

    Dims (run, step, mask), mask in {full, magnitude, random}. For each variable: hv.Bars of
    (run, mask) at ``step`` (default the last with values), and when there are several steps an
    hv.Overlay of curves over step, one per (run, mask). Returns an hv.Layout.
    """
    f = "plot_masks"
    variables = _require_any(mask_ds, ["mask_loss", "mask_acc"], f, "mask_ds")
    if "mask" not in mask_ds.dims:
        raise SedvizError(f"{f}: mask_ds has no dimension 'mask'; expected dims (run, step, mask)")
    return _bars_and_curves(mask_ds, variables, "mask", _MASK_COLORS, run, step, f)


def plot_lmc(lmc_ds: xr.Dataset, *, run=None, var: str = "lmc_loss") -> hv.Overlay:
    """Linear mode connectivity (docs/methods.md#linear-mode-connectivity, [Y] Eqn 6): ``lmc_loss`` (or ``var="lmc_acc"``) over ``alpha``.

    One solid curve per combination of the other dims of the variable (e.g. run; none for the
    output of ``sedviz.analysis.lmc``), and dashed the straight line (1 - alpha) L(0) + alpha L(1)
    it is measured against. For ``lmc_loss`` the ``barrier`` (a variable, scalar or over those
    dims, or a Dataset attr) is written in the title (one curve) or the legend; the endpoints
    (attr ``endpoints``) in the title. hv.Overlay: the curves have group ``Curve``, the straight
    lines group ``Linear``.
    """
    f = "plot_lmc"
    _require(lmc_ds, [var], f, "lmc_ds")
    da = lmc_ds[var]
    if "alpha" not in da.dims:
        raise SedvizError(f"{f}: {var} must have the dimension 'alpha', it has {da.dims}")
    if run is not None:
        if "run" not in da.dims:
            raise SedvizError(f"{f}: run={run!r} given but {var} has no 'run' dimension")
        da = da.sel(run=_choose_many(lmc_ds, "run", run, f))
    barrier = None
    if var == "lmc_loss":
        barrier = lmc_ds["barrier"] if "barrier" in lmc_ds.data_vars else lmc_ds.attrs.get("barrier")
    others = [d for d in da.dims if d != "alpha"]
    keys = [dict(zip(others, combo)) for combo in _product([_labels(da, d) for d in others])]
    elements, notes = [], []
    for i, key in enumerate(keys):
        y = da.sel(key)
        alpha = np.asarray(y["alpha"].values, dtype=float)
        if isinstance(barrier, xr.DataArray):
            b = float(_sel_if(barrier, **key).values) if set(barrier.dims) <= set(key) else None
        else:
            b = None if barrier is None else float(barrier)
        note = f"barrier = {_fmt(b)}" if barrier is not None else ""
        name = " ".join(str(v) for v in key.values()) or var
        label = f"{name} ({note})" if len(keys) > 1 and note else name
        notes.append(note)
        color = _PALETTE[i % len(_PALETTE)]
        elements.append(_opts(hv.Curve((alpha, y.values), "alpha", var, label=label), color=color,
                              line_width=2, tools=["hover"]))
        ends = y.sortby("alpha").values
        elements.append(_opts(hv.Curve(([alpha.min(), alpha.max()], [ends[0], ends[-1]]), "alpha", var,
                                       group="Linear", label=label), color=color, line_dash="dashed",
                              show_legend=False))
    parts = []
    try:
        ends = json.loads(lmc_ds.attrs["endpoints"])
        parts.append(f"{ends['a']} -> {ends['b']}")
    except (KeyError, TypeError, ValueError):
        pass
    if len(keys) == 1 and notes[0]:
        parts.append(notes[0])
    title = var + (": " + ", ".join(parts) if parts else "")
    return _opts(hv.Overlay(elements), title=title, width=HALF, height=HEIGHT, legend_position=LEGEND_HALF)


def _product(lists):
    out = [()]
    for values in lists:
        out = [o + (v,) for o in out for v in values]
    return out


# --------------------------------------------------------------------------------------------
# spectral edge, lag flip, drift


def plot_edge(edge_ds: xr.Dataset, run, window, *, phases_ds: xr.Dataset | None = None,
              ds: xr.Dataset | None = None, steps=None) -> hv.Overlay:
    """The spectral edge series ``edge`` (docs/methods.md#spectral-edge, [S]) of one run and window size.

    With ``phases_ds`` (from ``sedviz.analysis.phases``: peak_step, plateau_start, plateau_end,
    collapse_step per (run, window)) the rise, plateau and collapse are shaded and the peak
    (dotted) and collapse step (dashed) marked. With ``ds`` its ``val_loss`` is drawn on a twin y
    axis. hv.Overlay; the edge curve has label ``edge``, the loss curve ``val_loss``; the same
    elements are present for every selection (a marker without a value sits at NaN).
    """
    f = "plot_edge"
    _require(edge_ds, ["edge"], f, "edge_ds")
    run, window = _choose(edge_ds, "run", run, f), _choose(edge_ds, "window", window, f, "window")
    da = _select_steps(edge_ds["edge"].sel(run=run, window=window), steps, f).dropna("step")
    _nonempty(da, f, f"run={run!r}, window={window!r}")
    x = da["step"].values
    elements = [_opts(hv.Curve((x, da.values), "step", "edge", label="edge"), color="black", line_width=2,
                      tools=["hover"])]
    title = _title("edge", run=run, window=window)
    if "k_star_mode" in edge_ds.data_vars:  # the fixed k* of the series: edge = s_k* / s_(k*+1)
        k = float(edge_ds["k_star_mode"].sel(run=run, window=window).values)
        if np.isfinite(k) and k > 0:
            title += f", s{int(k)}/s{int(k) + 1}"
    if phases_ds is not None:
        names = ["peak_step", "plateau_start", "plateau_end", "collapse_step"]
        _require(phases_ds, names, f, "phases_ds")
        ph = {n: float(phases_ds[n].sel(run=_choose(phases_ds, "run", run, f),
                                        window=_choose(phases_ds, "window", window, f, "window")).values)
              for n in names}
        x0, x1 = float(x[0]), float(x[-1])
        bounds = {"rise": (x0, ph["plateau_start"]), "plateau": (ph["plateau_start"], ph["plateau_end"]),
                  "collapse": (ph["plateau_end"], x1)}
        for phase, (a, b) in bounds.items():
            elements.append(_opts(hv.VSpan(a, b, kdims=["step", "edge"], group="Phase", label=phase),
                                  color=_PHASE_COLORS[phase], alpha=0.12))
        elements.append(_opts(hv.VLine(ph["peak_step"], kdims=["step", "edge"], group="Peak"), color="#1f77b4",
                              line_dash="dotted", line_width=2))
        elements.append(_opts(hv.VLine(ph["collapse_step"], kdims=["step", "edge"], group="Collapse"),
                              color="#d62728", line_dash="dashed", line_width=2))
        title += f" (peak {_fmt(ph['peak_step'])}, collapse {_fmt(ph['collapse_step'])})"
    multi_y = False
    if ds is not None:
        _require(ds, ["val_loss"], f)
        loss = ds["val_loss"].sel(run=_choose(ds, "run", run, f, "run"))
        loss = loss.sel(step=slice(x[0], x[-1])).dropna("step")
        elements.append(_opts(hv.Curve((loss["step"].values, loss.values), "step", "val_loss", label="val_loss"),
                              color="#d62728", line_width=1.5, tools=["hover"]))
        multi_y = True
    # axiswise: stacked in a layout (windows, runs), each panel keeps its own y range
    elements = [e.opts(axiswise=True, backend="bokeh") for e in elements]
    return _opts(hv.Overlay(elements), multi_y=multi_y, title=title, width=WIDTH, height=HEIGHT,
                 legend_position=LEGEND)


def _window_colors(windows) -> dict:
    from bokeh.palettes import Viridis256

    n = len(windows)
    idx = np.linspace(0, 200, n).astype(int) if n > 1 else [100]
    return {w: Viridis256[i] for w, i in zip(windows, idx)}


def plot_lag_flip(lag_ds: xr.Dataset, run, *, window=None) -> hv.Overlay:
    """Cross-correlation of the edge with the validation loss against lag (docs/methods.md#lag-flip, [S]).

    ``lag_ds`` holds ``xcorr`` (run, window, lag) and optionally ``peak_lag``, ``peak_r`` (run,
    window), ``null_band`` (run, window, lag) and ``flip_text`` (run). One curve per window size
    (label ``window <W>``, coloured by W), the peaks marked (hv.Scatter, label ``peak``). The
    surrogate band +-``null_band`` (hv.Spread, label ``null <W>``, group ``Null``) shades where
    |r| stays under the null: of the selected window, or of every window when none is selected.
    With ``window`` that window's curve is drawn again on top, thick (label ``selected``), and the
    others fade. The title ends with the run's flip verdict. Positive lag: the edge leads the loss.
    """
    f = "plot_lag_flip"
    _require(lag_ds, ["xcorr"], f, "lag_ds")
    run = _choose(lag_ds, "run", run, f)
    xc = lag_ds["xcorr"].sel(run=run)
    windows = _labels(lag_ds, "window")
    if window is not None:
        window = _choose(lag_ds, "window", window, f, "window")
    colors = _window_colors(windows)
    elements = [
        _opts(hv.HLine(0.0, kdims=["lag", "xcorr"]), color="#999999", line_width=1),
        _opts(hv.VLine(0.0, kdims=["lag", "xcorr"]), color="#999999", line_width=1),
    ]
    if "null_band" in lag_ds.data_vars:
        for w in [window] if window is not None else windows:
            band = lag_ds["null_band"].sel(run=run, window=w)
            if np.isfinite(band.values).any():
                zero = np.zeros(band.sizes["lag"])
                elements.append(_opts(hv.Spread((band["lag"].values, zero, band.values), "lag", ["xcorr", "null_band"],
                                                label=f"null {w}", group="Null"),
                                      color=colors[w], alpha=0.12 if window is None else 0.2, line_alpha=0))
    for w in windows:
        y = xc.sel(window=w)
        elements.append(_opts(hv.Curve((y["lag"].values, y.values), "lag", "xcorr", label=f"window {w}"),
                              color=colors[w], line_width=2, alpha=0.35 if window is not None else 1.0,
                              tools=["hover"]))
    title = _title("xcorr", run=run, window=window)
    if "peak_lag" in lag_ds.data_vars and "peak_r" in lag_ds.data_vars:
        pl, pr = lag_ds["peak_lag"].sel(run=run), lag_ds["peak_r"].sel(run=run)
        pts = (pl.sel(window=windows).values, pr.sel(window=windows).values, np.asarray(windows))
        elements.append(_opts(hv.Scatter(pts, kdims=["lag"], vdims=["xcorr", "window"], label="peak"),
                              color="black", marker="diamond", size=12, tools=["hover"]))
        title += " (peak_lag " + ", ".join(f"W={w}: {_fmt(float(v))}" for w, v in zip(windows, pts[0])) + ")"
    if "flip" in lag_ds.data_vars:
        title += f": {lag_ds['flip'].sel(run=run).item()}"
    if window is not None:
        y = xc.sel(window=window)
        elements.append(_opts(hv.Curve((y["lag"].values, y.values), "lag", "xcorr", label="selected"),
                              color=colors[window], line_width=5))
    return _opts(hv.Overlay(elements), title=title, width=WIDTH, height=HEIGHT, legend_position=LEGEND)


def plot_drift(drift_ds: xr.Dataset, run=None, *, steps=None) -> hv.Overlay:
    """Backbone share a(t)^2 / ||x_t||^2 of the drift direction over steps (docs/methods.md#drift, [D]).

    ``drift_ds`` holds ``backbone_share`` (run, step). One curve per run (label = run name).
    """
    f = "plot_drift"
    _require(drift_ds, ["backbone_share"], f, "drift_ds")
    runs = _choose_many(drift_ds, "run", run, f)
    curves = []
    for r in runs:
        y = _select_steps(drift_ds["backbone_share"].sel(run=r), steps, f).dropna("step")
        curves.append(_opts(hv.Curve((y["step"].values, y.values), "step", "backbone_share", label=str(r)),
                            color=_run_color(drift_ds, r), line_width=2, tools=["hover"]))
    return _opts(hv.Overlay(curves), title=_title("backbone_share", run=run if len(runs) == 1 else None),
                 width=WIDTH, height=HEIGHT, ylim=(0, 1.02), legend_position=LEGEND)


# --------------------------------------------------------------------------------------------
# comparisons and metrics


def plot_compare(ds: xr.Dataset, var: str = "eff_rank", *, layer=None, pair=None, rank=None, runs=None,
                 steps=None, overlay: bool = True):
    """One variable over steps for several runs (e.g. weight decay 1.0 vs 0.0).

    ``var`` is any variable over (run, step[, layer | pair | rank]); give ``layer=``, ``pair=``
    or ``rank=`` for the extra dims it has. ``overlay=True``: hv.Overlay of one curve per run
    (label = run name); ``overlay=False``: hv.Layout with one panel per run, axes shared.
    """
    f = "plot_compare"
    _require(ds, [var], f)
    da = ds[var]
    if "run" not in da.dims or "step" not in da.dims:
        raise SedvizError(f"{f}: var={var!r} has dims {da.dims}; choose a variable over (run, step, ...)")
    chosen = {"layer": layer, "pair": pair, "rank": rank}
    sel = {}
    for d in da.dims:
        if d in ("run", "step"):
            continue
        if d not in chosen:
            raise SedvizError(f"{f}: var={var!r} has the dimension {d!r}, which plot_compare cannot select; "
                              f"choose a variable over (run, step) plus layer, pair or rank")
        if chosen[d] is None:
            raise SedvizError(f"{f}: var={var!r} has the dimension {d!r}; pass {d}= one of {_labels(ds, d)}")
        sel[d] = _choose(ds, d, chosen[d], f)
    for d, v in chosen.items():
        if v is not None and d not in sel:
            raise SedvizError(f"{f}: {d}={v!r} given but var={var!r} has no dimension {d!r} (dims {da.dims})")
    da = da.sel(sel)
    run_list = _choose_many(ds, "run", runs, f, "runs")
    curves = []
    for r in run_list:
        y = _select_steps(da.sel(run=r), steps, f).dropna("step")
        curve = hv.Curve((y["step"].values, y.values), "step", var, label=str(r))
        curves.append(_opts(curve, color=_run_color(ds, r), line_width=2, tools=["hover"]))
    title = _title(var, **sel)
    if overlay:
        return _opts(hv.Overlay(curves), title=title, width=WIDTH, height=HEIGHT, legend_position=LEGEND)
    panels = [_opts(c, title=_title(var, run=r, **sel), width=WIDTH // 2, height=HEIGHT)
              for c, r in zip(curves, run_list)]
    return _opts(hv.Layout(panels).cols(len(panels)), shared_axes=True)


_LOSSES = ("train_loss", "val_loss")
_ACCS = ("train_acc", "val_acc")


def plot_loss(ds: xr.Dataset, runs=None, *, steps=None, logy: bool = True) -> hv.Layout:
    """Loss and accuracy curves from the metric logs, one colour per run.

    Left panel: ``train_loss`` (solid) and ``val_loss`` (dashed); right panel: ``train_acc`` and
    ``val_acc``; panels whose variables are absent are left out. Each panel is an hv.Overlay of
    curves labelled ``"<run> <variable>"`` whose value dim is the variable's name. The loss axis is
    logarithmic by default (``logy=False`` for linear): a training loss near zero stays visible.
    """
    f = "plot_loss"
    present = _require_any(ds, _LOSSES + _ACCS, f)
    run_list = _choose_many(ds, "run", runs, f, "runs")
    panels = []
    for group, ylabel, log in ((_LOSSES, "loss", logy), (_ACCS, "accuracy", False)):
        names = [v for v in group if v in present]
        if not names:
            continue
        curves = []
        for r in run_list:
            for v in names:
                y = _select_steps(ds[v].sel(run=r), steps, f).dropna("step")
                curves.append(_opts(hv.Curve((y["step"].values, y.values), "step", v, label=f"{r} {v}"),
                                    color=_run_color(ds, r), line_width=2,
                                    line_dash="dashed" if v.startswith("val") else "solid", tools=["hover"]))
        panels.append(_opts(hv.Overlay(curves), title=ylabel, ylabel=ylabel, logy=log, width=HALF,
                            height=HEIGHT, legend_position=LEGEND_HALF, **(_log_axis("y") if log else {})))
    return hv.Layout(panels).cols(2)


def plot_warning(ew_ds: xr.Dataset, ds: xr.Dataset | None = None, *, run=None, detectors=None,
                 steps=None) -> hv.Layout:
    """Grokking early-warning signals (docs/methods.md#early-warning) with their fire step and the grok step.

    ``ew_ds`` holds ``signal`` (run, detector, step), ``fire_step`` (run, detector) and
    ``grok_step`` (run[, detector]), as ``sedviz.analysis.early_warning`` returns them; its
    ``level`` (run, detector), the rule's reference level, is drawn dotted. One panel per detector: a curve per run (label = run name), a dashed
    vertical line at each run's fire step and a solid one at its grok step, in the run's colour;
    the title gives each run's lead = grok_step - fire_step. With ``ds`` a last panel shows
    ``val_acc`` with the grok steps. Returns an hv.Layout (one column).
    """
    f = "plot_warning"
    _require(ew_ds, ["signal", "fire_step", "grok_step"], f, "ew_ds")
    run_list = _choose_many(ew_ds, "run", run, f)
    det_list = _choose_many(ew_ds, "detector", detectors, f, "detectors")

    def grok_of(r, d=None):
        g = ew_ds["grok_step"].sel(run=r)
        if "detector" in g.dims:
            g = g.sel(detector=d) if d is not None else g.isel(detector=0)
        return float(g.values)

    panels = []
    for d in det_list:
        elements, notes = [], []
        for r in run_list:
            y = _select_steps(ew_ds["signal"].sel(run=r, detector=d), steps, f).dropna("step")
            color = _run_color(ew_ds, r)
            # axiswise: each detector's signal has its own scale (a slope vs a squared gap)
            elements.append(_opts(hv.Curve((y["step"].values, y.values), "step", "signal", label=str(r)),
                                  color=color, line_width=2, tools=["hover"], axiswise=True))
        for r in run_list:
            color = _run_color(ew_ds, r)
            fire, grok = float(ew_ds["fire_step"].sel(run=r, detector=d).values), grok_of(r, d)
            elements.append(_opts(hv.VLine(fire, kdims=["step", "signal"], group="Fire", label=str(r)), color=color,
                                  line_dash="dashed", line_width=2))
            elements.append(_opts(hv.VLine(grok, kdims=["step", "signal"], group="Grok", label=str(r)), color=color,
                                  line_width=2, alpha=0.6))
            if np.isfinite(fire):
                lead = f", lead {_fmt(grok - fire)}" if np.isfinite(grok) else ", no grok"
                notes.append(f"{r} fired {_fmt(fire)}{lead}")
            else:
                notes.append(f"{r} did not fire")
        if "level" in ew_ds.data_vars:  # the rule's reference level (slope threshold, g23 baseline)
            for r in run_list:
                lv = _sel_if(ew_ds["level"], run=r, detector=d)
                if lv.ndim == 0:
                    elements.append(_opts(hv.HLine(float(lv.values), kdims=["step", "signal"], group="Level",
                                                   label=str(r)), color=_run_color(ew_ds, r), line_dash="dotted",
                                          line_width=1))
        panels.append(_opts(hv.Overlay(elements), title=f"signal: detector={d} ({'; '.join(notes)})",
                            width=WIDTH, height=HEIGHT - 60, legend_position=LEGEND))
    if ds is not None:
        _require(ds, ["val_acc"], f)
        elements = []
        for r in run_list:
            y = _select_steps(ds["val_acc"].sel(run=_choose(ds, "run", r, f)), steps, f).dropna("step")
            color = _run_color(ew_ds, r)
            elements.append(_opts(hv.Curve((y["step"].values, y.values), "step", "val_acc", label=str(r)),
                                  color=color, line_width=2, tools=["hover"]))
            elements.append(_opts(hv.VLine(grok_of(r), kdims=["step", "val_acc"], group="Grok", label=str(r)),
                                  color=color, line_width=2, alpha=0.6))
        panels.append(_opts(hv.Overlay(elements), title="val_acc and grok_step", width=WIDTH, height=HEIGHT - 60,
                            legend_position=LEGEND))
    return hv.Layout(panels).cols(1)


# --------------------------------------------------------------------------------------------
# notebook support

_BOKEHJS_LOADED = False


def load_bokehjs(*, force: bool = False, mode: str | None = None) -> bool:
    """Load BokehJS (and the HoloViews notebook hooks) into the notebook page; True if it did.

    Runs once per kernel when this module is imported in one; call it again with ``force=True``
    after reloading the browser page. ``mode``: "inline" (default; works offline, adds a few MB
    to a saved notebook), "cdn", or "off"; default from the ``SEDVIZ_BOKEHJS`` environment
    variable. Outside a Jupyter kernel it does nothing. jupyter_bokeh's BokehModel, which the
    explorers of :mod:`sedviz.widgets` are drawn in, needs BokehJS present before it is shown.
    """
    global _BOKEHJS_LOADED
    mode = (mode or os.environ.get("SEDVIZ_BOKEHJS", "inline")).lower()
    if mode not in ("inline", "cdn", "off"):
        raise SedvizError(f"load_bokehjs: mode={mode!r} (or SEDVIZ_BOKEHJS) must be 'inline', 'cdn' or 'off'")
    if mode == "off" or (_BOKEHJS_LOADED and not force):
        return False
    try:
        from IPython import get_ipython

        if getattr(get_ipython(), "kernel", None) is None:
            return False
        hv.extension("bokeh", inline=(mode == "inline"), logo=False)
    except Exception:  # never let loading break an import; the notebook can still call hv.extension
        return False
    _BOKEHJS_LOADED = True
    return True


load_bokehjs()
