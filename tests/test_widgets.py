"""sedviz.widgets: each explorer is one widget whose Bokeh data is updated in place, to the
Dataset's values for the new selection, when a control changes."""
from __future__ import annotations

import asyncio
import sys
import types

import numpy as np
import pytest
import xarray as xr

from sedviz import widgets
from sedviz._synthetic import synthetic_dataset
from sedviz.errors import SedvizError

FC1, FC2 = "blocks.0.mlp.fc1.weight", "blocks.0.mlp.fc2.weight"
# Seconds a control change may take to update the plot. Typical here: 0.03-0.2 s; the bound is
# loose so that a loaded 2-core CI machine does not make the test flaky.
FAST = 1.0


@pytest.fixture(scope="module")
def ds():
    return synthetic_dataset()


def fake_edge(ds, windows=(5, 10, 20)):
    rng = np.random.default_rng(1)
    edge = 1.2 + rng.random((ds.sizes["run"], len(windows), ds.sizes["step"]))
    edge[:, :, :3] = np.nan
    return xr.Dataset({"edge": (("run", "window", "step"), edge)},
                      coords={"run": ds.run.values, "window": list(windows), "step": ds.step.values})


def fake_phases(edge_ds):
    shape = (edge_ds.sizes["run"], edge_ds.sizes["window"])
    out = xr.Dataset({n: (("run", "window"), np.full(shape, v)) for n, v in
                      {"peak_step": 1200.0, "plateau_start": 900.0, "plateau_end": 1600.0, "collapse_step": 2000.0}.items()},
                     coords={"run": edge_ds.run.values, "window": edge_ds.window.values})
    out["collapse_step"][1, 0] = np.nan
    return out


def fake_lag(ds, windows=(5, 10, 20)):
    rng = np.random.default_rng(2)
    lags = np.arange(-5, 8)
    xc = rng.uniform(-1, 1, (ds.sizes["run"], len(windows), lags.size))
    return xr.Dataset({"xcorr": (("run", "window", "lag"), xc),
                       "peak_lag": (("run", "window"), lags[xc.argmin(-1)].astype(float)),
                       "peak_r": (("run", "window"), xc.min(-1))},
                      coords={"run": ds.run.values, "window": list(windows), "lag": lags})


def capture_patches(w):
    """Messages the widget sends to the browser (document patches)."""
    sent = []
    w.bokeh_model.send = lambda content, buffers=None: sent.append(content)
    return sent


def cells(source, ydim, var):
    data = source.data
    return np.asarray(data["step"]), np.asarray(data[ydim]), np.asarray(data[var], dtype=float)


def assert_cells_equal(source, expected: xr.DataArray, ydim, var):
    x, y, z = cells(source, ydim, "zvalues")  # the cell values; the column named var is hover text
    want = expected.sel(step=xr.DataArray(x, dims="c"), **{ydim: xr.DataArray(y, dims="c")}).values
    np.testing.assert_allclose(z, want, equal_nan=True)
    assert z.size == expected.sizes["step"] * expected.sizes[ydim]


def test_sv_explorer_updates_in_place(ds):
    w = widgets.sv_explorer(ds)
    assert set(w.controls) == {"run", "layer", "steps", "ranks", "logy"}
    assert w.bokeh_model in w.children and w.controls["layer"].value == "embed.weight"
    figure, sent = w.figure, capture_patches(w)

    w.controls["layer"].value = FC1
    assert w.last_update_s < FAST and w.status.value == ""
    assert w.figure is figure and sent  # same Bokeh figure, changes sent as patches
    doc = w.bokeh_model._model.document  # what a browser test sees
    assert doc.get_model_by_name("sedviz_source") is w.source and doc.get_model_by_name("sedviz_figure") is figure
    assert list(w.source.data["rank"]) == list(range(16))
    for r in (0, 7, 15):
        np.testing.assert_allclose(w.source.data["ys"][r], ds.sv.sel(run="a", layer=FC1, rank=r).values)

    w.controls["run"].value = "b"
    w.controls["ranks"].value = (2, 5)  # half-open: ranks 2, 3, 4
    w.controls["steps"].value = (500, 1500)
    assert list(w.source.data["rank"]) == [2, 3, 4]
    np.testing.assert_array_equal(w.source.data["xs"][0], np.arange(500, 1501, 100))
    np.testing.assert_allclose(w.source.data["ys"][1], ds.sv.sel(run="b", layer=FC1, rank=3, step=slice(500, 1500)).values)
    assert w.last_update_s < FAST
    assert w.selection == {"run": "b", "layer": FC1, "steps": (500, 1500), "ranks": (2, 5), "logy": True}

    # the log toggle builds a new figure inside the same widget, with the same selection
    assert type(w.figure.y_scale).__name__ == "LogScale"
    w.controls["logy"].value = False
    assert type(w.figure.y_scale).__name__ == "LinearScale" and w.figure is not figure
    assert w.bokeh_model._model.children[0] is w.figure
    np.testing.assert_allclose(w.source.data["ys"][0], ds.sv.sel(run="b", layer=FC1, rank=2, step=slice(500, 1500)).values)
    w.controls["layer"].value = FC2  # and keeps updating after the rebuild
    np.testing.assert_allclose(w.source.data["ys"][0], ds.sv.sel(run="b", layer=FC2, rank=2, step=slice(500, 1500)).values)


def test_heatmap_explorers_update_their_cells(ds):
    w = widgets.eff_rank_explorer(ds)
    w.controls["run"].value = "b"
    assert_cells_equal(w.source, ds.eff_rank.sel(run="b"), "layer", "eff_rank")
    w.controls["steps"].value = (1000, 2000)
    assert_cells_equal(w.source, ds.eff_rank.sel(run="b", step=slice(1000, 2000)), "layer", "eff_rank")
    assert w.last_update_s < FAST

    pair = ds.pair.values[2]
    w = widgets.align_explorer(ds)
    w.controls["pair"].value = pair
    w.controls["ranks"].value = (1, 4)
    assert_cells_equal(w.source, ds.align.sel(run="a", pair=pair, rank=[1, 2, 3]), "rank", "align")
    assert w.last_update_s < FAST

    w = widgets.sva_explorer(ds, layer=FC1)
    w.controls["run"].value = "b"
    w.controls["ranks"].value = (0, 5)
    assert_cells_equal(w.source, ds.sva.sel(run="b", layer=FC1, rank=slice(0, 4)), "rank", "sva")
    assert w.element.vdims[0].name == "sva"


def test_edge_explorer_uses_the_analysis_once_and_follows_the_window(ds, monkeypatch):
    calls = []
    fake = types.ModuleType("sedviz.analysis")

    def edge(ds_, windows=(10,), params=None):
        calls.append(("edge", tuple(windows), params))
        return fake_edge(ds_, windows)

    def phases(edge_ds):
        calls.append(("phases",))
        return fake_phases(edge_ds)

    fake.edge, fake.phases = edge, phases
    monkeypatch.setitem(sys.modules, "sedviz.analysis", fake)
    w = widgets.edge_explorer(ds, windows=(5, 10, 20))
    expected = w.edge_ds.edge
    np.testing.assert_allclose(w.source.data["edge"], expected.sel(run="a", window=5).dropna("step").values)
    w.controls["window"].value = 20
    w.controls["run"].value = "b"
    np.testing.assert_allclose(w.source.data["edge"], expected.sel(run="b", window=20).dropna("step").values)
    np.testing.assert_allclose(w.sources["val_loss"].data["val_loss"], ds.val_loss.sel(run="b", step=slice(300, 3000)).values)
    assert w.last_update_s < FAST and w.status.value == ""
    assert calls == [("edge", (5, 10, 20), None), ("phases",)]  # computed once, not per change


def test_edge_explorer_with_given_results_and_without_the_analysis(ds, monkeypatch):
    e = fake_edge(ds)
    w = widgets.edge_explorer(ds, edge_ds=e, phases_ds=fake_phases(e), window=10)
    w.controls["window"].value = 5
    w.controls["run"].value = "b"  # run b, window 5 never collapsed: a NaN marker, same elements
    np.testing.assert_allclose(w.source.data["edge"], e.edge.sel(run="b", window=5).dropna("step").values)
    assert w.status.value == ""
    monkeypatch.setitem(sys.modules, "sedviz.analysis", types.ModuleType("sedviz.analysis"))
    with pytest.raises(SedvizError, match=r"needs sedviz.analysis.edge.*pass edge_ds="):
        widgets.edge_explorer(ds)


def test_lag_flip_explorer_highlights_the_window(ds):
    lag = fake_lag(ds)
    w = widgets.lag_flip_explorer(ds, lag_ds=lag, run="b")
    np.testing.assert_allclose(w.source.data["xcorr"], lag.xcorr.sel(run="b", window=5).values)
    sent = capture_patches(w)
    w.controls["window"].value = 20
    np.testing.assert_allclose(w.source.data["xcorr"], lag.xcorr.sel(run="b", window=20).values)
    np.testing.assert_array_equal(w.source.data["lag"], lag.lag.values)
    assert sent and w.last_update_s < FAST


def test_compare_explorer(ds):
    w = widgets.compare_explorer(ds)
    w.controls["layer"].value = FC1
    for run in ("a", "b"):
        np.testing.assert_allclose(w.sources[run].data["eff_rank"], ds.eff_rank.sel(run=run, layer=FC1).values)
    w.controls["var"].value = "val_loss"
    assert w.controls["layer"].disabled and w.controls["pair"].disabled
    np.testing.assert_allclose(w.sources["b"].data["val_loss"], ds.val_loss.sel(run="b").values)
    w.controls["var"].value = "align_score"
    assert not w.controls["pair"].disabled
    w.controls["pair"].value = ds.pair.values[1]
    np.testing.assert_allclose(w.source.data["align_score"], ds.align_score.sel(run="a", pair=ds.pair.values[1]).values)
    w.controls["overlay"].value = False  # one panel per run
    assert type(w.figure).__name__ == "GridPlot" and set(w.sources) == {"a", "b"}
    w.controls["steps"].value = (0, 1000)
    np.testing.assert_allclose(w.sources["b"].data["align_score"],
                               ds.align_score.sel(run="b", pair=ds.pair.values[1], step=slice(0, 1000)).values)
    assert w.last_update_s < FAST


def test_bad_selections_raise_and_name_the_choices(ds):
    with pytest.raises(SedvizError, match=r"run='zzz' .*\['a', 'b'\]"):
        widgets.sv_explorer(ds, run="zzz")
    with pytest.raises(SedvizError, match=r"layer='fc9' .*'embed.weight'"):
        widgets.sva_explorer(ds, layer="fc9")
    with pytest.raises(SedvizError, match=r"pair='a -> b' .*'blocks.0.mlp.fc1.weight -> blocks.0.mlp.fc2.weight'"):
        widgets.align_explorer(ds, pair="a -> b")
    with pytest.raises(SedvizError, match=r"var='sketch' .*'eff_rank'"):
        widgets.compare_explorer(ds, var="sketch")
    with pytest.raises(SedvizError, match=r"ds has no variable 'sv'"):
        widgets.sv_explorer(ds.drop_vars("sv"))


def test_a_selection_without_data_is_reported_and_the_plot_kept():
    ragged = synthetic_dataset(steps={"a": range(0, 1000, 100), "b": range(0, 1000, 150)})
    w = widgets.sv_explorer(ragged, run="b", layer=FC1)
    before = [list(v) for v in w.source.data["ys"]]
    w.controls["steps"].value = (100, 100)  # run b has no checkpoint at step 100
    assert "no values to plot" in w.status.value and isinstance(w.error, SedvizError)
    assert [list(v) for v in w.source.data["ys"]] == before
    w.controls["steps"].value = (0, 300)
    assert w.status.value == "" and w.error is None
    np.testing.assert_array_equal(w.source.data["xs"][0], [0, 150, 300])


def test_explorer_displays_as_a_jupyter_widget(ds):
    w = widgets.eff_rank_explorer(ds)
    bundle = w._repr_mimebundle_()
    assert bundle["application/vnd.jupyter.widget-view+json"]["model_id"] == w.model_id
    assert w.bokeh_model.render_bundle["docs_json"]  # the Bokeh document the browser draws


def test_demo_sized_dataset_redraws_fast():
    big = synthetic_dataset(steps=range(0, 15000, 100))  # 150 checkpoints x 2 runs, like the demo
    w = widgets.sv_explorer(big)
    for layer in (FC1, FC2, "unembed.weight"):
        w.controls["layer"].value = layer
        assert w.last_update_s < FAST
    w.controls["steps"].value = (1000, 9000)
    assert w.last_update_s < FAST
    np.testing.assert_allclose(w.source.data["ys"][0], big.sv.sel(run="a", layer="unembed.weight", rank=0,
                                                                  step=slice(1000, 9000)).values)
    w = widgets.align_explorer(big)
    w.controls["pair"].value = big.pair.values[1]
    assert w.last_update_s < FAST


def test_the_browser_copy_follows_from_the_patches_alone(ds):
    """Replay what the widget sends over the comm onto a copy of the document it first sent,
    as jupyter_bokeh's frontend does: the copy ends with the new selection's values."""
    from bokeh.document import Document
    from bokeh.protocol import Protocol
    from bokeh.protocol.receiver import Receiver

    w = widgets.sv_explorer(ds)
    (doc_json,) = w.bokeh_model.render_bundle["docs_json"].values()
    browser = Document.from_json(doc_json)
    fragments = []
    w.bokeh_model.send = lambda content, buffers=None: fragments.append(buffers[0] if buffers else content["payload"])
    w.controls["layer"].value = FC2
    w.controls["ranks"].value = (1, 7)
    w.controls["logy"].value = False  # a new figure, sent as a patch too

    async def replay():
        receiver = Receiver(Protocol())
        for fragment in fragments:
            message = await receiver.consume(fragment)
            if message is not None:
                message.apply_to_document(browser)

    asyncio.run(replay())
    source = browser.get_model_by_name("sedviz_source")
    assert list(source.data["rank"]) == [1, 2, 3, 4, 5, 6]
    np.testing.assert_allclose(source.data["ys"][2], ds.sv.sel(run="a", layer=FC2, rank=3).values)
    assert type(browser.get_model_by_name("sedviz_figure").y_scale).__name__ == "LinearScale"


def test_explorers_on_the_real_analyses(ds):
    import types

    analysis = pytest.importorskip("sedviz.analysis")
    for name in ("edge", "phases", "lag_flip"):
        found = getattr(analysis, name, None)
        if found is None or (isinstance(found, types.ModuleType) and not hasattr(found, name)):
            pytest.skip(f"sedviz.analysis.{name} is not available")
    w = widgets.edge_explorer(ds, windows=(5, 10))
    assert w.phases_ds is not None and "peak_step" in w.phases_ds
    w.controls["window"].value = 10
    np.testing.assert_allclose(w.source.data["edge"], w.edge_ds.edge.sel(run="a", window=10).dropna("step").values)
    w = widgets.lag_flip_explorer(ds, windows=(5, 10))
    w.controls["run"].value = "b"
    w.controls["window"].value = 10
    np.testing.assert_allclose(w.source.data["xcorr"], w.lag_ds.xcorr.sel(run="b", window=10).values, equal_nan=True)
