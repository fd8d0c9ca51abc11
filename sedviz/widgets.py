"""ipywidgets explorers of a sedviz Dataset, for JupyterLab.

Each ``*_explorer(ds, ...)`` is one call returning an :class:`Explorer`, an ``ipywidgets.VBox`` of
controls above a live Bokeh plot. The plot is a figure of :mod:`sedviz.plots` driven by a
HoloViews ``DynamicMap`` whose ``Pipe`` stream receives the control values; it is rendered once
into a Bokeh document shown through ``jupyter_bokeh.BokehModel``, and on every control change
HoloViews updates that document's ColumnDataSources, ranges, titles and labels in place, which
BokehModel forwards to the browser as document patches (no re-display, no images). Only a
control that changes how the figure is built (the log-axis toggle, overlay vs side by side)
builds a new figure and swaps it into the same widget.

BokehModel draws with the page's BokehJS: importing this module (through :mod:`sedviz.plots`)
inside a kernel loads it inline, once (see :func:`sedviz.plots.load_bokehjs`).

Explorers select data only. Analyses they need (the edge series, its phases, the lag flip) are
computed once when the explorer is created and kept on it (``edge_ds``, ``phases_ds``,
``lag_ds``); pass them in to reuse results.

Attributes every Explorer has (what tests and browser tests drive)
-----------------------------------------------------------------
controls : dict[str, ipywidgets.ValueWidget]
    The controls by name; set ``controls[name].value`` to change the selection.
selection : dict
    The current control values, by control name.
element : holoviews object
    What is drawn now (the current frame; an hv.Layout of them when there are several panels).
sources : dict[str, bokeh.models.ColumnDataSource]
    Data of every glyph now drawn, keyed by the element's label (else its group), e.g. a run name.
source : bokeh.models.ColumnDataSource
    The main glyph's data (named in each explorer's docstring).
figure : bokeh.models.LayoutDOM
    The Bokeh plot shown (inside ``bokeh_model``'s root Column).
bokeh_model : jupyter_bokeh.BokehModel
    The ipywidget that displays the Bokeh document.
plot : holoviews.plotting.bokeh.BokehPlot
    The HoloViews plot object that owns the figure.
status : ipywidgets.HTML
    Empty, or the message of the last selection that could not be drawn (``error`` holds the
    exception); the previous plot stays.
last_update_s : float
    Seconds the last control change took to update the plot.

In the browser, the Bokeh document of an explorer names its figure ``sedviz_figure``, the main
ColumnDataSource ``sedviz_source`` and the others ``sedviz_source:<key>`` (keys of ``sources``),
so a page test can find them with ``doc.get_model_by_name(...)``. Controls carry their names as
their ``description``.
"""
from __future__ import annotations

import html
import importlib
import time
import types
from collections.abc import Callable, Sequence

import holoviews as hv
import ipywidgets as ipw
import numpy as np
import xarray as xr
from bokeh.document import Document
from bokeh.models import Column, ColumnDataSource

from . import plots
from .plots import load_bokehjs  # noqa: F401  (importing plots loads BokehJS in a kernel)
from .errors import SedvizError

__all__ = [
    "Explorer",
    "sv_explorer",
    "eff_rank_explorer",
    "align_explorer",
    "sva_explorer",
    "edge_explorer",
    "lag_flip_explorer",
    "compare_explorer",
]

DEFAULT_WINDOWS = (5, 10, 15, 20)


class Explorer(ipw.VBox):
    """Controls above a live Bokeh plot built from :mod:`sedviz.plots` (see the module docstring).

    Parameters
    ----------
    controls : dict name -> ipywidget with a ``value``.
    make : ``selection dict -> HoloViews element or overlay``, the plot for a selection.
    main : label of the element whose data is ``source`` (None: the first glyph).
    rebuild_on : control names whose change builds a new figure instead of updating in place.
    panels : optional ``selection dict -> list of make functions``, called when the figure is
        built: two or more panels are laid out side by side and share the selection.
    title : shown above the controls.
    """

    def __init__(self, controls: dict, make: Callable[[dict], object], *, main: str | None = None,
                 rebuild_on: Sequence[str] = (), panels: Callable[[dict], list] | None = None, title: str = ""):
        super().__init__()
        self.controls = dict(controls)
        self._make = make
        self._panels = panels
        self._main = main
        self._rebuild_on = frozenset(rebuild_on)
        self.status = ipw.HTML("")
        self.error: Exception | None = None
        self.last_update_s = float("nan")
        self.plot = None
        self._pipe: hv.streams.Pipe | None = None
        self._makes: list = []
        self._frames: list = []
        self._doc = Document()
        self._root = Column()
        self._doc.add_root(self._root)
        self._build()
        from jupyter_bokeh import BokehModel  # import here: a kernel-side widget, not needed by plots

        self.bokeh_model = BokehModel(self._root)
        for control in self.controls.values():
            control.observe(self._on_change, names="value")
        header = [ipw.HTML(f"<b>{title}</b>")] if title else []
        box = ipw.HBox(list(self.controls.values()), layout=ipw.Layout(flex_flow="row wrap"))
        self.children = [*header, box, self.status, self.bokeh_model]

    # -- state -------------------------------------------------------------------------------
    @property
    def selection(self) -> dict:
        return {name: c.value for name, c in self.controls.items()}

    @property
    def figure(self):
        return self._root.children[0]

    @property
    def element(self):
        frames = self._frames
        return frames[0] if len(frames) == 1 else hv.Layout(frames)

    @property
    def sources(self) -> dict[str, ColumnDataSource]:
        from holoviews.plotting.plot import GenericOverlayPlot
        from holoviews.plotting.bokeh.element import ElementPlot

        out: dict[str, ColumnDataSource] = {}
        for p in self.plot.traverse(lambda x: x, [ElementPlot]):
            if isinstance(p, GenericOverlayPlot) or "source" not in p.handles or p.current_frame is None:
                continue
            frame = p.current_frame
            key = frame.label or frame.group
            while key in out:
                key += "'"
            out[key] = p.handles["source"]
        return out

    @property
    def source(self) -> ColumnDataSource:
        sources = self.sources
        if self._main is not None and self._main in sources:
            return sources[self._main]
        return next(iter(sources.values()))

    # -- building and updating ---------------------------------------------------------------
    def _frames_for(self, makes, selection) -> list:
        """The HoloViews object of each panel for a selection; raises (SedvizError) before any
        plot changes when the selection cannot be drawn."""
        # Ranges follow each selection (a new layer has another scale): framewise.
        return [make(selection).map(lambda e: e.opts(framewise=True, backend="bokeh"), [hv.Element])
                for make in makes]

    def _build(self) -> None:
        selection = self.selection
        makes = self._panels(selection) if self._panels is not None else [self._make]
        frames = self._frames_for(makes, selection)
        saved = (self._makes, self._frames) if self.plot is not None else None
        self._makes, self._frames = makes, frames
        # The DynamicMaps only hand HoloViews the frames computed above: errors surface here, in
        # _on_change, rather than inside HoloViews' refresh, which logs and swallows them.
        pipe = hv.streams.Pipe(data=selection)
        dmaps = [hv.DynamicMap(lambda data, i=i: self._frames[i], streams=[pipe]) for i in range(len(makes))]
        obj = dmaps[0] if len(dmaps) == 1 else hv.Layout(dmaps).opts(shared_axes=True).cols(len(dmaps))
        try:
            plot = hv.renderer("bokeh").get_plot(obj)
        except Exception:
            if saved is not None:
                self._makes, self._frames = saved
            raise
        if self.plot is not None:
            # The browser may keep the replaced models a while: free their names first.
            self.figure.name = None
            for src in self.sources.values():
                src.name = None
        old, self.plot, self._pipe = self.plot, plot, pipe
        plot.document = self._doc
        self._root.children = [plot.state]
        if old is not None:
            old.cleanup()
        self._name_models()

    def _name_models(self) -> None:
        """Names a browser test can look the Bokeh models up by (see the module docstring)."""
        self.figure.name = "sedviz_figure"
        sources = self.sources
        main = self.source
        for key, src in sources.items():
            src.name = "sedviz_source" if src is main else f"sedviz_source:{key}"

    def _on_change(self, change) -> None:
        start = time.perf_counter()
        try:
            if any(change["owner"] is self.controls[n] for n in self._rebuild_on if n in self.controls):
                self._build()
            else:
                selection = self.selection
                self._frames = self._frames_for(self._makes, selection)
                self._pipe.send(selection)
                self._name_models()
        except Exception as exc:  # a selection that cannot be drawn: say so, keep the last plot
            self.error = exc
            self.status.value = f"<span style='color:#b00'>{html.escape(f'{type(exc).__name__}: {exc}')}</span>"
            return
        finally:
            self.last_update_s = time.perf_counter() - start
        self.error = None
        self.status.value = ""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} controls={list(self.controls)} selection={self.selection}>"


# ----------------------------------------------------------------------------------------------
# control helpers


def _dropdown(ds: xr.Dataset, dim: str, value, func: str, description: str | None = None) -> ipw.Dropdown:
    labels = ds[dim].values.tolist()
    value = labels[0] if value is None else plots._choose(ds, dim, value, func)
    return ipw.Dropdown(options=labels, value=value, description=description or dim,
                        layout=ipw.Layout(width="auto"))


def _step_range(ds: xr.Dataset, steps, func: str) -> ipw.SelectionRangeSlider:
    labels = [int(s) for s in ds["step"].values]
    if steps is None:
        index = (0, len(labels) - 1)
    else:
        lo, hi = (steps.start, steps.stop) if isinstance(steps, slice) else steps
        lo = labels[0] if lo is None else plots._choose(ds, "step", lo, func, "steps")
        hi = labels[-1] if hi is None else plots._choose(ds, "step", hi, func, "steps")
        index = (labels.index(lo), labels.index(hi))
    return ipw.SelectionRangeSlider(options=[(str(s), s) for s in labels], index=index, description="steps",
                                    continuous_update=False, layout=ipw.Layout(width="420px"))


def _ranks_with_values(da: xr.DataArray) -> int:
    """How many leading ranks of ``da`` hold a value anywhere (the rest is NaN padding)."""
    have = da.notnull().any([d for d in da.dims if d != "rank"]).values
    return int(np.flatnonzero(have)[-1]) + 1 if have.any() else 0


def _rank_range(da: xr.DataArray, ranks, func: str) -> ipw.IntRangeSlider:
    """Slider over ``ranks=(start, stop)``, half-open as everywhere in sedviz: its value is
    (start, stop) and it draws ranks start .. stop - 1. Its range is the ranks ``da`` has values for."""
    n = max(_ranks_with_values(da), 1)
    plots._rank_slice(tuple(ranks), func)  # checks the form
    lo, hi = int(ranks[0]), min(int(ranks[1]), n)  # "the top 100" means all of them when there are fewer
    if lo >= hi:
        raise SedvizError(f"{func}: ranks={ranks!r}: this Dataset has values for ranks 0 .. {n - 1} only; "
                          f"choose (start, stop) with start < {n}")
    return ipw.IntRangeSlider(min=0, max=n, value=(lo, hi), description="ranks", continuous_update=False)


def _follow_ranks(controls: dict, da: xr.DataArray, keys: Sequence[str], stop: int) -> None:
    """Keep the ranks slider's range equal to the ranks the current selection has values for. The
    upper end asked for (``stop``, or where the user last dragged it) is kept when a selection with
    more ranks comes back."""
    slider = controls["ranks"]
    wanted = {"stop": int(stop), "busy": False}

    def on_slider(change):
        if not wanted["busy"]:
            wanted["stop"] = change["new"][1]

    def update(change=None):
        n = max(_ranks_with_values(da.sel({k: controls[k].value for k in keys})), 1)
        lo = min(slider.value[0], n - 1)
        hi = min(max(wanted["stop"], lo + 1), n)
        if (slider.max, slider.value) != (n, (lo, hi)):
            wanted["busy"] = True
            try:
                slider.max = max(n, slider.max)  # widen first: the value must stay inside the range
                slider.value = (lo, hi)
                slider.max = n
            finally:
                wanted["busy"] = False

    slider.observe(on_slider, names="value")
    update()
    for k in keys:
        controls[k].observe(update, names="value")


def _steps_of(sel: dict):
    lo, hi = sel["steps"]
    return slice(lo, hi)


def _ranks_of(sel: dict):
    lo, hi = sel["ranks"]
    return (lo, max(hi, lo + 1))  # half-open; a slider dragged to zero width still draws one rank


def _analysis(name: str, func: str, instead: str):
    """A function of sedviz.analysis, imported when first needed."""
    try:
        module = importlib.import_module("sedviz.analysis")
        found = getattr(module, name)
        # A lazily imported submodule of the same name (analysis/edge.py) can shadow the function.
        return getattr(found, name) if isinstance(found, types.ModuleType) else found
    except (ImportError, AttributeError) as exc:
        raise SedvizError(f"{func}: needs sedviz.analysis.{name}, which is not available ({exc}); "
                          f"pass {instead}= computed another way") from exc


# ----------------------------------------------------------------------------------------------
# explorers


def sv_explorer(ds: xr.Dataset, *, run=None, layer=None, ranks=(0, 20), steps=None, logy: bool = True) -> Explorer:
    """Singular values of one layer over steps (:func:`sedviz.plots.plot_sv`).

    Controls: ``run`` and ``layer`` (Dropdown), ``steps`` (SelectionRangeSlider of step values,
    both ends included), ``ranks`` (IntRangeSlider over ``(start, stop)``, half-open: ranks start to
    stop - 1, as ``ranks=`` everywhere; its range follows the layer's rank), ``logy`` (Checkbox; builds
    a new figure). ``source`` is the MultiLine's data: ``xs`` (steps) and ``ys`` (sv) lists, one
    per rank in ``rank``.
    """
    f = "sv_explorer"
    plots._require(ds, ["sv"], f)
    controls = {
        "run": _dropdown(ds, "run", run, f),
        "layer": _dropdown(ds, "layer", layer, f),
        "steps": _step_range(ds, steps, f),
        "ranks": _rank_range(ds["sv"], ranks, f),
        "logy": ipw.Checkbox(value=logy, description="logy", indent=False),
    }
    _follow_ranks(controls, ds["sv"], ["run", "layer"], ranks[1])

    def make(sel):
        return plots.plot_sv(ds, sel["run"], sel["layer"], ranks=_ranks_of(sel), steps=_steps_of(sel),
                             logy=sel["logy"])

    return Explorer(controls, make, rebuild_on=["logy"], title="sv")


def eff_rank_explorer(ds: xr.Dataset, *, run=None, steps=None) -> Explorer:
    """Heat map of ``eff_rank``, layer x step, of one run (:func:`sedviz.plots.plot_eff_rank`).

    Controls: ``run`` (Dropdown), ``steps`` (SelectionRangeSlider). ``source`` is the heat map's
    data: columns ``step``, ``layer`` and ``zvalues`` (eff_rank), one row per cell.
    """
    f = "eff_rank_explorer"
    plots._require(ds, ["eff_rank"], f)
    controls = {"run": _dropdown(ds, "run", run, f), "steps": _step_range(ds, steps, f)}
    return Explorer(controls, lambda sel: plots.plot_eff_rank(ds, sel["run"], steps=_steps_of(sel)),
                    title="eff_rank")


def _default_pair(ds: xr.Dataset):
    """The first pair between two different matrices (an MLP's in -> out, embedding -> attention), not
    a head's Q/K or V/O blocks of one fused matrix, which read ``qkv -> qkv``."""
    if "pair_src" in ds.coords and "pair_dst" in ds.coords:
        for name, src, dst in zip(ds.pair.values.tolist(), ds.pair_src.values.tolist(), ds.pair_dst.values.tolist()):
            if src != dst:
                return name
    return None


def align_explorer(ds: xr.Dataset, *, run=None, pair=None, ranks=(0, 100), steps=None) -> Explorer:
    """Alignment diagonal of a consecutive pair, rank x step (:func:`sedviz.plots.plot_align`).

    Controls: ``run``, ``pair`` (Dropdown; default the first pair of two different matrices),
    ``ranks`` (IntRangeSlider over ``(start, stop)``, half-open; its range is the ranks the pair
    has values for, so the slider's ends are what is drawn), ``steps``. ``source``: columns
    ``step``, ``rank``, ``zvalues`` (align).
    """
    f = "align_explorer"
    plots._require(ds, ["align"], f)
    controls = {
        "run": _dropdown(ds, "run", run, f),
        "pair": _dropdown(ds, "pair", pair if pair is not None else _default_pair(ds), f),
        "ranks": _rank_range(ds["align"], ranks, f),
        "steps": _step_range(ds, steps, f),
    }
    _follow_ranks(controls, ds["align"], ["run", "pair"], ranks[1])

    def make(sel):
        return plots.plot_align(ds, sel["run"], sel["pair"], ranks=_ranks_of(sel), steps=_steps_of(sel))

    return Explorer(controls, make, title="align")


def sva_explorer(ds: xr.Dataset, *, run=None, layer=None, ranks=(0, 100), steps=None) -> Explorer:
    """Agreement with the final checkpoint of one layer, rank x step (:func:`sedviz.plots.plot_sva`).

    Controls: ``run``, ``layer`` (Dropdown), ``ranks`` (IntRangeSlider over ``(start, stop)``,
    half-open, its range the ranks the layer has values for), ``steps``. ``source``: columns
    ``step``, ``rank``, ``zvalues`` (sva).
    """
    f = "sva_explorer"
    plots._require(ds, ["sva"], f)
    controls = {
        "run": _dropdown(ds, "run", run, f),
        "layer": _dropdown(ds, "layer", layer, f),
        "ranks": _rank_range(ds["sva"], ranks, f),
        "steps": _step_range(ds, steps, f),
    }
    _follow_ranks(controls, ds["sva"], ["run", "layer"], ranks[1])

    def make(sel):
        return plots.plot_sva(ds, sel["run"], sel["layer"], ranks=_ranks_of(sel), steps=_steps_of(sel))

    return Explorer(controls, make, title="sva")


def _window_slider(windows, value, func: str, dataset: xr.Dataset) -> ipw.SelectionSlider:
    windows = [w.item() if hasattr(w, "item") else w for w in windows]
    value = windows[0] if value is None else plots._choose(dataset, "window", value, func, "window")
    return ipw.SelectionSlider(options=windows, value=value, description="window", continuous_update=False)


def edge_explorer(ds: xr.Dataset, windows: Sequence[int] = DEFAULT_WINDOWS, *, layers=None,
                  edge_ds: xr.Dataset | None = None, phases_ds: xr.Dataset | None = None,
                  run=None, window=None) -> Explorer:
    """The spectral edge series with its phases and val_loss on a twin axis (:func:`sedviz.plots.plot_edge`).

    The edge series of every window size is computed once, on creation, with
    ``sedviz.analysis.edge(ds, windows=windows, params=layers)`` and its phases with
    ``sedviz.analysis.phases(edge_ds)`` (imported when needed), unless ``edge_ds`` /
    ``phases_ds`` are given; they are kept as ``.edge_ds`` and ``.phases_ds``. Without phases
    the series is drawn unshaded.

    Controls: ``run`` (Dropdown), ``window`` (SelectionSlider over the window sizes). ``source``:
    the edge curve's data, columns ``step`` and ``edge``; ``sources["val_loss"]``: the loss.
    """
    f = "edge_explorer"
    if edge_ds is None:
        edge_ds = _analysis("edge", f, "edge_ds")(ds, windows=tuple(windows), params=layers)
    plots._require(edge_ds, ["edge"], f, "edge_ds")
    if phases_ds is None:
        try:
            phases_ds = _analysis("phases", f, "phases_ds")(edge_ds)
        except SedvizError:
            phases_ds = None  # shading is optional
    loss_ds = ds if isinstance(ds, xr.Dataset) and "val_loss" in ds.data_vars else None
    controls = {
        "run": _dropdown(edge_ds, "run", run, f),
        "window": _window_slider(edge_ds["window"].values, window, f, edge_ds),
    }

    def make(sel):
        return plots.plot_edge(edge_ds, sel["run"], sel["window"], phases_ds=phases_ds, ds=loss_ds)

    explorer = Explorer(controls, make, main="edge", title="edge")
    explorer.edge_ds, explorer.phases_ds = edge_ds, phases_ds
    return explorer


def lag_flip_explorer(ds: xr.Dataset, windows: Sequence[int] = DEFAULT_WINDOWS, *, lag_ds: xr.Dataset | None = None,
                      layers=None, target: str = "val_loss", run=None, window=None) -> Explorer:
    """Cross-correlation of the edge with val_loss against lag, per window size (:func:`sedviz.plots.plot_lag_flip`).

    ``lag_ds`` (xcorr, peak_lag, peak_r) is computed once, on creation, with
    ``sedviz.analysis.lag_flip(ds, windows=windows, params=layers, target=target)`` unless given,
    and kept as ``.lag_ds``. Controls: ``run`` (Dropdown), ``window`` (SelectionSlider): the
    chosen window's curve is drawn thick on top. ``source``: that curve's data, columns ``lag``
    and ``xcorr``.
    """
    f = "lag_flip_explorer"
    if lag_ds is None:
        lag_ds = _analysis("lag_flip", f, "lag_ds")(ds, windows=tuple(windows), params=layers, target=target)
    plots._require(lag_ds, ["xcorr"], f, "lag_ds")
    controls = {
        "run": _dropdown(lag_ds, "run", run, f),
        "window": _window_slider(lag_ds["window"].values, window, f, lag_ds),
    }

    def make(sel):
        return plots.plot_lag_flip(lag_ds, sel["run"], window=sel["window"])

    explorer = Explorer(controls, make, main="selected", title="lag flip")
    explorer.lag_ds = lag_ds
    return explorer


def _compare_vars(ds: xr.Dataset) -> list[str]:
    ok = []
    for name, da in ds.data_vars.items():
        extra = [d for d in da.dims if d not in ("run", "step")]
        if "run" in da.dims and "step" in da.dims and len(extra) <= 1 and set(extra) <= {"layer", "pair"}:
            ok.append(str(name))
    return ok


def compare_explorer(ds: xr.Dataset, *, var: str = "eff_rank", runs=None, layer=None, pair=None, steps=None,
                     overlay: bool = True) -> Explorer:
    """One variable over steps for several runs (:func:`sedviz.plots.plot_compare`).

    Controls: ``var`` (Dropdown of the variables over (run, step[, layer | pair])), ``layer``,
    ``pair`` (Dropdowns; the one the variable does not have is disabled), ``steps``, ``overlay``
    (Checkbox: one panel or one per run; builds a new figure). ``sources`` holds one curve per
    run, keyed by run name (columns ``step`` and the variable's name); ``source`` is the first
    run's.
    """
    f = "compare_explorer"
    choices = _compare_vars(ds)
    if not choices:
        raise SedvizError(f"{f}: ds has no variable over (run, step[, layer | pair]); variables: {list(ds.data_vars)}")
    if var not in choices:
        raise SedvizError(f"{f}: var={var!r} cannot be compared over runs; choose one of {choices}")
    run_list = plots._choose_many(ds, "run", runs, f, "runs")
    controls = {"var": ipw.Dropdown(options=choices, value=var, description="var", layout=ipw.Layout(width="auto"))}
    if "layer" in ds.dims:
        controls["layer"] = _dropdown(ds, "layer", layer, f)
    if "pair" in ds.dims:
        controls["pair"] = _dropdown(ds, "pair", pair, f)
    controls["steps"] = _step_range(ds, steps, f)
    controls["overlay"] = ipw.Checkbox(value=overlay, description="overlay", indent=False)

    def enable(change=None):
        dims = ds[controls["var"].value].dims
        for d in ("layer", "pair"):
            if d in controls:
                controls[d].disabled = d not in dims

    enable()
    controls["var"].observe(enable, names="value")

    def kwargs(sel):
        dims = ds[sel["var"]].dims
        return {d: sel[d] for d in ("layer", "pair") if d in dims}

    def one(sel, runs_):
        return plots.plot_compare(ds, sel["var"], runs=runs_, steps=_steps_of(sel), overlay=True, **kwargs(sel))

    def panels(sel):
        if sel["overlay"]:
            return [lambda s: one(s, run_list)]
        return [lambda s, r=r: one(s, [r]).opts(title=f"{s['var']}: run={r}", backend="bokeh") for r in run_list]

    return Explorer(controls, lambda s: one(s, run_list), main=str(run_list[0]), rebuild_on=["overlay"],
                    panels=panels, title="compare runs")
