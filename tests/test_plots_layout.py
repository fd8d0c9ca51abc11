"""What the figures show (issue 12): legends off the data, readable log axes, half-open rank ranges,
run order as stored, independent y ranges of stacked panels, explorer ranges that match the drawing."""
from __future__ import annotations

import holoviews as hv
import numpy as np
import pytest
from bokeh.models import LogTicker, PrintfTickFormatter

from sedviz import plots, widgets
from sedviz._synthetic import synthetic_dataset
from sedviz.errors import SedvizError
from test_plots import FC1, fakes  # noqa: F401  (fixture)

WINDOW_PX = 1200


@pytest.fixture(scope="module")
def ds():
    return synthetic_dataset()


def figures(obj):
    """The Bokeh figures of a rendered HoloViews object."""
    from bokeh.models import GridPlot, Plot

    root = hv.render(obj, backend="bokeh")
    if isinstance(root, Plot):
        return [root]
    if isinstance(root, GridPlot):
        return [child[0] for child in root.children]
    return [m for m in root.select({"type": Plot})]


def legend_places(fig) -> dict:
    from bokeh.models import Legend

    return {side: [m for m in getattr(fig, side) if isinstance(m, Legend)] for side in ("center", "right", "below")}


def views(ds, f):
    return {
        "compare": plots.plot_compare(ds, "eff_rank", layer=FC1),
        "loss": plots.plot_loss(ds),
        "edge": plots.plot_edge(f["edge"], "a", 10, phases_ds=f["phases"], ds=ds),
        "lag_flip": plots.plot_lag_flip(f["lag"], "a", window=10),
        "drift": plots.plot_drift(f["drift"]),
        "warning": plots.plot_warning(f["ew"], ds),
        "lmc": plots.plot_lmc(f["lmc"]),
        "prune": plots.plot_prune(f["prune"]),
        "masks": plots.plot_masks(f["masks"]),
    }


@pytest.mark.parametrize("name", ["compare", "loss", "edge", "lag_flip", "drift", "warning", "lmc", "prune", "masks"])
def test_legends_sit_outside_the_data(ds, fakes, name):  # noqa: F811
    for fig in figures(views(ds, fakes)[name]):
        places = legend_places(fig)
        assert not places["center"], f"{name}: a legend is drawn on the data"


@pytest.mark.parametrize("name", ["compare", "loss", "edge", "lag_flip", "drift", "warning", "lmc", "prune", "masks"])
def test_layouts_fit_a_1200_px_notebook(ds, fakes, name):  # noqa: F811
    obj = views(ds, fakes)[name]
    panels = list(obj) if isinstance(obj, hv.Layout) else [obj]
    ncols = min(len(panels), obj._max_cols) if isinstance(obj, hv.Layout) else 1
    legend_px = 180  # a legend beside a frame, at most
    for row in range(0, len(panels), ncols):
        total = 0
        for p in panels[row:row + ncols]:
            opts = hv.Store.lookup_options("bokeh", p, "plot").kwargs
            total += opts.get("width", 300) + (legend_px if opts.get("legend_position") == plots.LEGEND else 0)
        assert total <= WINDOW_PX - 100, f"{name}: {total} px wide"


def test_log_axes_label_more_than_the_powers_of_ten(ds):
    fig = figures(plots.plot_sv(ds, "a", FC1))[0]
    ticker, formatter = fig.yaxis[0].ticker, fig.yaxis[0].formatter
    assert isinstance(ticker, LogTicker) and list(ticker.mantissas) == [1, 2, 5]
    assert isinstance(formatter, PrintfTickFormatter) and formatter.format == "%.3g"
    assert not isinstance(figures(plots.plot_sv(ds, "a", FC1, logy=False))[0].yaxis[0].ticker, LogTicker)


def test_loss_axis_is_logarithmic_by_default(ds):
    loss, acc = figures(plots.plot_loss(ds))
    assert type(loss.y_scale).__name__ == "LogScale" and type(acc.y_scale).__name__ == "LinearScale"
    assert type(figures(plots.plot_loss(ds, logy=False))[0].y_scale).__name__ == "LinearScale"


def test_ranks_are_half_open_everywhere(ds):
    lines = plots.plot_sv(ds, "a", FC1, ranks=(2, 5)).split()
    assert [int(p.dimension_values("rank")[0]) for p in lines] == [2, 3, 4]
    np.testing.assert_allclose(lines[0].dimension_values("sv"), ds.sv.sel(run="a", layer=FC1, rank=2).values)
    hm = plots.plot_sva(ds, "a", FC1, ranks=(0, 3))
    assert sorted(set(hm.dimension_values("rank").tolist())) == [0, 1, 2]
    for bad in [(3, 3), (-1, 2), (0, 2, 4), (0.0, 2)]:
        with pytest.raises(SedvizError, match="half-open"):
            plots.plot_sv(ds, "a", FC1, ranks=bad)
    w = widgets.sv_explorer(ds, layer=FC1, ranks=(2, 5))
    assert w.controls["ranks"].value == (2, 5) and list(w.source.data["rank"]) == [2, 3, 4]


def test_heatmaps_keep_the_stored_run_order(ds):
    flipped = ds.isel(run=[1, 0])  # "b" before "a"
    hmap = plots.plot_eff_rank(flipped)
    assert [k[0] if isinstance(k, tuple) else k for k in hmap.keys()] == ["b", "a"]
    layout = plots.plot_sva_score(flipped, layout=True)
    assert [p.label or p.opts.get().kwargs.get("title") for p in layout] == ["sva_score: run=b", "sva_score: run=a"]


def test_stacked_edge_panels_have_their_own_y_range(ds, fakes):  # noqa: F811
    edge = fakes["edge"].copy(deep=True)
    edge["edge"].loc[{"run": "b"}] = edge["edge"].sel(run="b") * 100  # a run on another scale
    a, b = figures(hv.Layout([plots.plot_edge(edge, r, 10) for r in ("a", "b")]).cols(1))
    assert a.y_range is not b.y_range


def test_align_explorer_defaults_to_a_pair_of_two_matrices(ds):
    fused = ds.assign_coords(pair_dst=("pair", [ds.pair_src.values[0], *ds.pair_dst.values[1:]]))
    w = widgets.align_explorer(fused)
    assert w.controls["pair"].value == ds.pair.values[1]
    assert widgets.align_explorer(ds, pair=ds.pair.values[0]).controls["pair"].value == ds.pair.values[0]


def test_rank_sliders_span_what_is_drawn(ds):
    n_align = int(ds.align.notnull().any(["run", "step", "pair"]).sum())  # k = 10 of 16 ranks
    w = widgets.align_explorer(ds)
    assert w.controls["ranks"].max == n_align < ds.sizes["rank"]
    assert w.controls["ranks"].value == (0, n_align)
    assert sorted(set(w.source.data["rank"].tolist())) == list(range(n_align))
    sv = widgets.sv_explorer(ds, layer="embed.weight")  # 12 x 16: 12 ranks
    n_embed = int(ds.sv.sel(layer="embed.weight").notnull().any(["run", "step"]).sum())
    assert sv.controls["ranks"].max == n_embed and sv.controls["ranks"].value == (0, n_embed)
    sv.controls["layer"].value = FC1  # 16 ranks: the slider widens back to the 20 asked for, capped at 16
    assert sv.controls["ranks"].max == 16 and sv.controls["ranks"].value == (0, 16)
    assert list(sv.source.data["rank"]) == list(range(16))
