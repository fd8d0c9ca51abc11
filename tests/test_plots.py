"""sedviz.plots: the plot objects hold exactly the Dataset's values, render to Bokeh, and bad
selections or missing variables raise a SedvizError that says what to do."""
from __future__ import annotations

import holoviews as hv
import numpy as np
import pytest
import xarray as xr

from sedviz import plots
from sedviz._synthetic import synthetic_dataset
from sedviz.errors import SedvizError

FC1 = "blocks.0.mlp.fc1.weight"


@pytest.fixture(scope="module")
def ds():
    return synthetic_dataset()


# ---- small fake analysis results, with the variable names the analyses promise -----------------


def fake_edge(ds, windows=(5, 10, 20), seed=1):
    rng = np.random.default_rng(seed)
    edge = 1.2 + rng.random((ds.sizes["run"], len(windows), ds.sizes["step"]))
    edge[:, :, :3] = np.nan  # a window needs W checkpoints before it has a value
    return xr.Dataset({"edge": (("run", "window", "step"), edge)},
                      coords={"run": ds.run.values, "window": list(windows), "step": ds.step.values})


def fake_phases(edge_ds):
    shape = (edge_ds.sizes["run"], edge_ds.sizes["window"])
    values = {"peak_step": 1200.0, "plateau_start": 900.0, "plateau_end": 1600.0, "collapse_step": 2000.0}
    out = xr.Dataset({n: (("run", "window"), np.full(shape, v)) for n, v in values.items()},
                     coords={"run": edge_ds.run.values, "window": edge_ds.window.values})
    out["collapse_step"][1, 0] = np.nan  # never collapsed
    return out


def fake_lag(ds, windows=(5, 10, 20), seed=2):
    rng = np.random.default_rng(seed)
    lags = np.arange(-5, 8)
    xc = rng.uniform(-1, 1, (ds.sizes["run"], len(windows), lags.size))
    return xr.Dataset(
        {"xcorr": (("run", "window", "lag"), xc),
         "peak_lag": (("run", "window"), lags[xc.argmin(-1)].astype(float)),
         "peak_r": (("run", "window"), xc.min(-1)),
         "null_band": (("run", "window", "lag"), rng.uniform(0.2, 0.4, xc.shape)),
         "flip": ("run", ["flip", "no flip: not significant"][: ds.sizes["run"]])},
        coords={"run": ds.run.values, "window": list(windows), "lag": lags})


@pytest.fixture(scope="module")
def fakes(ds):
    rng = np.random.default_rng(3)
    runs, steps = ds.run.values, ds.step.values
    edge = fake_edge(ds)
    fractions = np.array([0.1, 0.25, 0.5, 0.75, 1.0])
    prune = xr.Dataset(
        {v: (("run", "step", "keep", "fraction"), rng.random((2, 2, 3, 5))) for v in ("prune_loss", "prune_acc")},
        coords={"run": runs, "step": steps[[10, -1]], "keep": ["full", "top", "bottom"], "fraction": fractions})
    masks = xr.Dataset(
        {v: (("run", "step", "mask"), rng.random((2, 2, 3))) for v in ("mask_loss", "mask_acc")},
        coords={"run": runs, "step": steps[[10, -1]], "mask": ["full", "magnitude", "random"]})
    alpha = np.linspace(0, 1, 11)
    loss = 0.5 + np.outer([0.3, 0.1], np.sin(np.pi * alpha)) + np.outer([0.0, 0.2], alpha)
    lmc = xr.Dataset({"lmc_loss": (("run", "alpha"), loss), "barrier": (("run",), [0.3, 0.1])},
                     coords={"run": runs, "alpha": alpha})
    ew = xr.Dataset(
        {"signal": (("run", "detector", "step"), rng.random((2, 2, steps.size))),
         "fire_step": (("run", "detector"), [[1200.0, 1500.0], [np.nan, np.nan]]),
         "grok_step": (("run",), [1900.0, np.nan]),
         "level": (("run", "detector"), [[0.5, 0.6], [0.7, 0.8]])},
        coords={"run": runs, "detector": ["slope", "g23"], "step": steps})
    drift = xr.Dataset({"backbone_share": (("run", "step"), rng.random((2, steps.size)))},
                       coords={"run": runs, "step": steps})
    return {"edge": edge, "phases": fake_phases(edge), "lag": fake_lag(ds), "prune": prune, "masks": masks,
            "lmc": lmc, "ew": ew, "drift": drift}


def by_label(overlay, label, kind=hv.Curve, group=None):
    group = group or kind.__name__
    found = [e for e in overlay if isinstance(e, kind) and e.label == label and e.group == group]
    assert len(found) == 1, [(type(e).__name__, e.label) for e in overlay]
    return found[0]


def heat_values(hm, var, ydim):
    """(x, y, value) of every heat map cell."""
    return hm.dimension_values("step"), hm.dimension_values(ydim), hm.dimension_values(var)


def check_heatmap(hm, expected: xr.DataArray, var, ydim):
    """Each cell of hm equals expected.sel(step=x, ydim=y) (NaN where the Dataset has NaN)."""
    assert isinstance(hm, hv.HeatMap)
    x, y, z = heat_values(hm, var, ydim)
    want = expected.sel(step=xr.DataArray(x, dims="cell"), **{ydim: xr.DataArray(y, dims="cell")}).values
    np.testing.assert_allclose(z.astype(float), want, equal_nan=True)
    assert z.size == expected.sizes["step"] * expected.sizes[ydim]


def plot_opt(obj, name):
    return hv.Store.lookup_options("bokeh", obj, "plot").kwargs.get(name)


# ---- spectra ------------------------------------------------------------------------------------


def test_plot_sv_lines_are_the_singular_values(ds):
    obj = plots.plot_sv(ds, "b", FC1, ranks=slice(0, 5), steps=slice(500, 2000))
    lines = obj.split()
    assert [int(p.dimension_values("rank")[0]) for p in lines] == [0, 1, 2, 3, 4]
    expected_steps = np.arange(500, 2001, 100)
    for r, line in enumerate(lines):
        np.testing.assert_array_equal(line.dimension_values("step"), expected_steps)
        np.testing.assert_allclose(line.dimension_values("sv"),
                                   ds.sv.sel(run="b", layer=FC1, rank=r, step=expected_steps).values)
    assert plot_opt(obj, "logy") is True and "sv" in plot_opt(obj, "title") and FC1 in plot_opt(obj, "title")
    # rendered: one MultiLine whose lines are the same numbers
    fig = hv.render(obj, backend="bokeh")
    data = fig.renderers[0].data_source.data
    np.testing.assert_allclose(data["ys"][3], ds.sv.sel(run="b", layer=FC1, rank=3, step=expected_steps).values)
    assert type(fig.y_scale).__name__ == "LogScale"


def test_plot_sv_drops_ranks_past_the_layer_rank_and_missing_steps(ds):
    # embed is 12 x 16: ranks 12..15 are NaN and must not become lines
    assert len(plots.plot_sv(ds, "a", "embed.weight").split()) == 12
    assert [int(p.dimension_values("rank")[0]) for p in plots.plot_sv(ds, "a", FC1, ranks=[0, 3]).split()] == [0, 3]
    ragged = synthetic_dataset(steps={"a": range(0, 1000, 100), "b": range(0, 1000, 150)})
    line = plots.plot_sv(ragged, "b", FC1, ranks=slice(0, 1), logy=False).split()[0]
    np.testing.assert_array_equal(line.dimension_values("step"), np.arange(0, 1000, 150))
    assert not np.isnan(line.dimension_values("sv")).any()


@pytest.mark.parametrize("func,var,ydim", [
    (plots.plot_eff_rank, "eff_rank", "layer"),
    (plots.plot_sva_score, "sva_score", "layer"),
    (plots.plot_align_score, "align_score", "pair"),
])
def test_step_heatmaps_hold_the_values(ds, func, var, ydim):
    hm = func(ds, "b", steps=slice(1000, 2000))
    check_heatmap(hm, ds[var].sel(run="b", step=slice(1000, 2000)), var, ydim)
    assert plot_opt(hm, "invert_yaxis") is True  # first layer (state-dict order) on top
    hmap = func(ds)
    assert isinstance(hmap, hv.HoloMap) and list(hmap.keys()) == ["a", "b"]
    check_heatmap(hmap["a"], ds[var].sel(run="a"), var, ydim)
    layout = func(ds, layout=True)
    assert len(layout) == 2


def test_plot_eff_rank_layer_subset_keeps_the_order_given(ds):
    hm = plots.plot_eff_rank(ds, "a", layers=["unembed.weight", "embed.weight"])
    assert list(dict.fromkeys(hm.dimension_values("layer"))) == ["unembed.weight", "embed.weight"]


@pytest.mark.parametrize("func,var,dim,label", [
    (plots.plot_align, "align", "pair", "blocks.0.mlp.fc1.weight -> blocks.0.mlp.fc2.weight"),
    (plots.plot_sva, "sva", "layer", FC1),
])
def test_rank_heatmaps_hold_the_diagonal(ds, func, var, dim, label):
    hm = func(ds, "a", label, ranks=slice(0, 6), steps=[0, 1000, 3000])
    expected = ds[var].sel(run="a", **{dim: label}).isel(rank=slice(0, 6)).sel(step=[0, 1000, 3000])
    check_heatmap(hm, expected, var, "rank")
    # default ranks: the top 100, i.e. all k = 10 with values here (NaN past k is dropped)
    assert set(func(ds, "a", label).dimension_values("rank")) == set(range(10))
    assert plot_opt(hm, "clim") == (0, 1)


# ---- pruning, masks, lmc --------------------------------------------------------------------------


def test_plot_prune_bars_at_one_fraction_and_curves_over_fraction(fakes):
    prune = fakes["prune"]
    layout = plots.plot_prune(prune)
    panels = list(layout)
    assert [type(p).__name__ for p in panels] == ["Bars", "Overlay", "Bars", "Overlay"]
    bars = panels[0]
    last = prune.step.values[-1]
    for run, keep, value in zip(bars.dimension_values("run"), bars.dimension_values("keep"),
                                bars.dimension_values("prune_loss")):
        assert value == pytest.approx(float(prune.prune_loss.sel(run=run, keep=keep, step=last, fraction=0.5)))
    assert sorted(set(bars.dimension_values("keep"))) == ["bottom", "full", "top"]
    curve = by_label(panels[1], "b top")
    np.testing.assert_allclose(curve.dimension_values("prune_loss"),
                               prune.prune_loss.sel(run="b", keep="top", step=last).values)
    # another fraction and step
    bars = list(plots.plot_prune(prune, run="a", step=prune.step.values[0], fraction=0.25))[2]
    assert bars.dimension_values("prune_acc")[1] == pytest.approx(
        float(prune.prune_acc.sel(run="a", keep="top", step=prune.step.values[0], fraction=0.25)))
    with pytest.raises(SedvizError, match=r"fraction=0.3 .*0\.25"):
        plots.plot_prune(prune, fraction=0.3)


def test_plot_masks(fakes):
    masks = fakes["masks"]
    panels = list(plots.plot_masks(masks, step=masks.step.values[0]))
    bars = panels[2]
    assert bars.vdims[0].name == "mask_acc"
    for run, mask, value in zip(*(bars.dimension_values(d) for d in ("run", "mask", "mask_acc"))):
        assert value == pytest.approx(float(masks.mask_acc.sel(run=run, mask=mask, step=masks.step.values[0])))
    curve = by_label(panels[1], "a random")  # over steps
    np.testing.assert_allclose(curve.dimension_values("mask_loss"), masks.mask_loss.sel(run="a", mask="random").values)


def test_plot_lmc_curves_baselines_and_barrier(fakes):
    lmc = fakes["lmc"]
    ov = plots.plot_lmc(lmc)
    curve = by_label(ov, "b (barrier = 0.1)")
    np.testing.assert_allclose(curve.dimension_values("lmc_loss"), lmc.lmc_loss.sel(run="b").values)
    line = [e for e in ov if e.group == "Linear" and e.label == "b (barrier = 0.1)"][0]
    np.testing.assert_allclose(line.dimension_values("lmc_loss"), lmc.lmc_loss.sel(run="b").values[[0, -1]])
    one = plots.plot_lmc(lmc, run="a")
    assert plot_opt(one, "title") == "lmc_loss: barrier = 0.3"
    attr_only = xr.Dataset({"lmc_loss": ("alpha", [1.0, 1.5, 1.2])}, coords={"alpha": [0, 0.5, 1]},
                           attrs={"barrier": 0.4})
    assert plot_opt(plots.plot_lmc(attr_only), "title") == "lmc_loss: barrier = 0.4"
    # the shape sedviz.analysis.lmc returns: one path, a scalar barrier, the endpoints in attrs
    single = xr.Dataset({"lmc_loss": ("alpha", [1.0, 1.5, 1.2]), "lmc_acc": ("alpha", [0.9, 0.5, 0.8]),
                         "barrier": ((), 0.4)}, coords={"alpha": [0, 0.5, 1]},
                        attrs={"endpoints": '{"a": "a@3000", "b": "b@3000"}'})
    assert plot_opt(plots.plot_lmc(single), "title") == "lmc_loss: a@3000 -> b@3000, barrier = 0.4"
    acc = plots.plot_lmc(single, var="lmc_acc")
    np.testing.assert_allclose(by_label(acc, "lmc_acc").dimension_values("lmc_acc"), [0.9, 0.5, 0.8])


# ---- edge, lag flip, drift, warning ---------------------------------------------------------------


def test_plot_edge_series_phases_and_twin_loss_axis(ds, fakes):
    edge, phases = fakes["edge"], fakes["phases"]
    ov = plots.plot_edge(edge, "a", 10, phases_ds=phases, ds=ds)
    curve = by_label(ov, "edge")
    expected = edge.edge.sel(run="a", window=10).dropna("step")
    np.testing.assert_array_equal(curve.dimension_values("step"), expected.step.values)
    np.testing.assert_allclose(curve.dimension_values("edge"), expected.values)
    spans = {e.label: tuple(e.data) for e in ov if isinstance(e, hv.VSpan)}
    assert spans == {"rise": (300.0, 900.0), "plateau": (900.0, 1600.0), "collapse": (1600.0, 3000.0)}
    assert [e.data for e in ov if isinstance(e, hv.VLine)] == [1200.0, 2000.0]
    loss = by_label(ov, "val_loss")
    np.testing.assert_allclose(loss.dimension_values("val_loss"), ds.val_loss.sel(run="a", step=slice(300, 3000)).values)
    fig = hv.render(ov, backend="bokeh")
    assert "val_loss" in fig.extra_y_ranges  # the loss has its own axis
    # a window that never collapsed keeps its marker, at NaN
    ov = plots.plot_edge(edge, "b", 5, phases_ds=phases)
    assert np.isnan([e.data for e in ov if isinstance(e, hv.VLine)][1])
    assert len(ov) == len(plots.plot_edge(edge, "a", 5, phases_ds=phases))


def test_plot_lag_flip_curves_peaks_and_selected_window(fakes):
    lag = fakes["lag"]
    ov = plots.plot_lag_flip(lag, "b", window=10)
    for w in (5, 10, 20):
        np.testing.assert_allclose(by_label(ov, f"window {w}").dimension_values("xcorr"),
                                   lag.xcorr.sel(run="b", window=w).values)
    np.testing.assert_allclose(by_label(ov, "selected").dimension_values("xcorr"), lag.xcorr.sel(run="b", window=10).values)
    peaks = by_label(ov, "peak", hv.Scatter)
    np.testing.assert_array_equal(peaks.dimension_values("lag"), lag.peak_lag.sel(run="b").values)
    np.testing.assert_allclose(peaks.dimension_values("xcorr"), lag.peak_r.sel(run="b").values)
    assert not [e for e in plots.plot_lag_flip(lag, "b") if e.label == "selected"]
    # the surrogate band: +-null_band around 0 for the selected window, for every window otherwise
    (band,) = [e for e in ov if e.group == "Null"]
    assert band.label == "null 10"
    np.testing.assert_allclose(band.dimension_values("null_band"), lag.null_band.sel(run="b", window=10).values)
    np.testing.assert_allclose(band.dimension_values("xcorr"), 0.0)
    assert len([e for e in plots.plot_lag_flip(lag, "b") if e.group == "Null"]) == 3
    assert plot_opt(ov, "title").endswith(": no flip: not significant")


def test_plot_drift(fakes):
    drift = fakes["drift"]
    ov = plots.plot_drift(drift, steps=slice(0, 1000))
    np.testing.assert_allclose(by_label(ov, "b").dimension_values("backbone_share"),
                               drift.backbone_share.sel(run="b", step=slice(0, 1000)).values)


def test_plot_warning_fire_and_grok_lines(ds, fakes):
    ew = fakes["ew"]
    layout = plots.plot_warning(ew, ds)
    panels = list(layout)
    assert len(panels) == 3
    slope = panels[0]
    np.testing.assert_allclose(by_label(slope, "a").dimension_values("signal"), ew.signal.sel(run="a", detector="slope").values)
    fire = {e.label: e.data for e in slope if e.group == "Fire"}
    grok = {e.label: e.data for e in slope if e.group == "Grok"}
    assert fire["a"] == 1200.0 and np.isnan(fire["b"]) and grok["a"] == 1900.0
    assert {e.label: e.data for e in slope if e.group == "Level"} == {"a": 0.5, "b": 0.7}
    title = plot_opt(slope, "title")
    assert "a fired 1200, lead 700" in title and "b did not fire" in title
    np.testing.assert_allclose(by_label(panels[2], "b").dimension_values("val_acc"), ds.val_acc.sel(run="b").values)


# ---- comparison and metrics -------------------------------------------------------------------------


def test_plot_compare_overlay_and_side_by_side(ds):
    ov = plots.plot_compare(ds, "eff_rank", layer=FC1)
    for run in ("a", "b"):
        np.testing.assert_allclose(by_label(ov, run).dimension_values("eff_rank"), ds.eff_rank.sel(run=run, layer=FC1).values)
    layout = plots.plot_compare(ds, "align_score", pair=ds.pair.values[0], runs=["b"], overlay=False)
    assert len(layout) == 1
    np.testing.assert_allclose(list(layout)[0].dimension_values("align_score"),
                               ds.align_score.sel(run="b", pair=ds.pair.values[0]).values)
    np.testing.assert_allclose(by_label(plots.plot_compare(ds, "val_acc"), "a").dimension_values("val_acc"),
                               ds.val_acc.sel(run="a").values)
    with pytest.raises(SedvizError, match=r"pass layer= one of \[.*'embed.weight'"):
        plots.plot_compare(ds, "eff_rank")
    with pytest.raises(SedvizError, match="cannot select"):
        plots.plot_compare(ds, "sketch")


def test_plot_loss(ds):
    losses, accs = list(plots.plot_loss(ds, runs=["b"], steps=slice(0, 500)))
    np.testing.assert_allclose(by_label(losses, "b val_loss").dimension_values("val_loss"),
                               ds.val_loss.sel(run="b", step=slice(0, 500)).values)
    np.testing.assert_allclose(by_label(accs, "b train_acc").dimension_values("train_acc"),
                               ds.train_acc.sel(run="b", step=slice(0, 500)).values)
    only_loss = plots.plot_loss(ds[["train_loss"]])
    assert len(only_loss) == 1


# ---- every view renders to a Bokeh model ----------------------------------------------------------


VIEWS = {
    "sv": lambda ds, f: plots.plot_sv(ds, "a", FC1),
    "eff_rank": lambda ds, f: plots.plot_eff_rank(ds),
    "eff_rank_layout": lambda ds, f: plots.plot_eff_rank(ds, layout=True),
    "align": lambda ds, f: plots.plot_align(ds, "a", ds.pair.values[0]),
    "align_score": lambda ds, f: plots.plot_align_score(ds, "a"),
    "sva": lambda ds, f: plots.plot_sva(ds, "b", "embed.weight"),
    "sva_score": lambda ds, f: plots.plot_sva_score(ds, "b"),
    "prune": lambda ds, f: plots.plot_prune(f["prune"]),
    "masks": lambda ds, f: plots.plot_masks(f["masks"]),
    "lmc": lambda ds, f: plots.plot_lmc(f["lmc"]),
    "edge": lambda ds, f: plots.plot_edge(f["edge"], "b", 5, phases_ds=f["phases"], ds=ds),
    "lag_flip": lambda ds, f: plots.plot_lag_flip(f["lag"], "a", window=20),
    "drift": lambda ds, f: plots.plot_drift(f["drift"]),
    "compare": lambda ds, f: plots.plot_compare(ds, layer=FC1, overlay=False),
    "loss": lambda ds, f: plots.plot_loss(ds),
    "warning": lambda ds, f: plots.plot_warning(f["ew"], ds),
}


@pytest.mark.parametrize("name", list(VIEWS))
def test_every_view_renders_to_bokeh(ds, fakes, name):
    from bokeh.embed import json_item
    from bokeh.models import LayoutDOM

    model = hv.render(VIEWS[name](ds, fakes), backend="bokeh")
    assert isinstance(model, LayoutDOM)
    json_item(model)  # serializes (NaN markers included) as the browser will receive it


# ---- errors ------------------------------------------------------------------------------------------


def test_unknown_labels_name_the_valid_choices(ds, fakes):
    with pytest.raises(SedvizError, match=r"plot_sv: run='zzz' .*choose one of \['a', 'b'\]"):
        plots.plot_sv(ds, "zzz", FC1)
    with pytest.raises(SedvizError, match=r"layer='fc9' .*'embed.weight'.*'unembed.weight'"):
        plots.plot_sv(ds, "a", "fc9")
    with pytest.raises(SedvizError, match=r"pair='x -> y' .*'embed.weight -> blocks.0.attn.qkv.weight'"):
        plots.plot_align(ds, "a", "x -> y")
    with pytest.raises(SedvizError, match=r"window=7 .*\[5, 10, 20\]"):
        plots.plot_edge(fakes["edge"], "a", 7)
    with pytest.raises(SedvizError, match=r"steps=123 .*step"):
        plots.plot_sv(ds, "a", FC1, steps=[0, 123])
    with pytest.raises(SedvizError, match=r"ranks=99"):
        plots.plot_sva(ds, "a", FC1, ranks=[99])
    with pytest.raises(SedvizError, match="no values to plot"):
        plots.plot_sv(ds, "a", FC1, steps=slice(5000, 6000))


def test_missing_variables_name_the_producer(ds, fakes):
    with pytest.raises(SedvizError, match=r"plot_sv: ds has no variable 'sv'; it is produced by sedviz.pipeline"):
        plots.plot_sv(ds.drop_vars("sv"), "a", FC1)
    with pytest.raises(SedvizError, match=r"edge_ds has no variable 'edge'.*sedviz.analysis.edge"):
        plots.plot_edge(fakes["lag"], "a", 5)
    with pytest.raises(SedvizError, match=r"phases_ds has no variable 'peak_step'.*sedviz.analysis.phases"):
        plots.plot_edge(fakes["edge"], "a", 5, phases_ds=fakes["edge"])
    with pytest.raises(SedvizError, match=r"'val_loss'"):
        plots.plot_edge(fakes["edge"], "a", 5, ds=ds[["sv"]])
    with pytest.raises(SedvizError, match=r"none of the variables \['prune_loss', 'prune_acc'\]"):
        plots.plot_prune(fakes["masks"])
    with pytest.raises(SedvizError, match="must be an xarray.Dataset"):
        plots.plot_eff_rank(ds.eff_rank)


# ---- with the real analyses, when they are there ----------------------------------------------------


def _analysis(name):
    import types

    module = pytest.importorskip("sedviz.analysis")
    found = getattr(module, name, None)
    found = getattr(found, name, None) if isinstance(found, types.ModuleType) else found
    if found is None:
        pytest.skip(f"sedviz.analysis.{name} is not available")
    return found


def test_views_of_the_real_analysis_results(ds):
    edge_ds = _analysis("edge")(ds, windows=(5, 10))
    phases_ds = _analysis("phases")(edge_ds)
    ov = plots.plot_edge(edge_ds, "a", 10, phases_ds=phases_ds, ds=ds)
    np.testing.assert_allclose(by_label(ov, "edge").dimension_values("edge"),
                               edge_ds.edge.sel(run="a", window=10).dropna("step").values)
    assert [e.data for e in ov if e.group == "Peak"] == [float(phases_ds.peak_step.sel(run="a", window=10))]
    ew = _analysis("early_warning")(ds, window=5, baseline=3)
    panel = list(plots.plot_warning(ew, ds))[0]
    np.testing.assert_allclose(by_label(panel, "a").dimension_values("signal"),
                               ew.signal.sel(run="a", detector=ew.detector.values[0]).dropna("step").values)
    drift = _analysis("drift")(ds)
    np.testing.assert_allclose(by_label(plots.plot_drift(drift), "b").dimension_values("backbone_share"),
                               drift.backbone_share.sel(run="b").dropna("step").values)
    for obj in (ov, plots.plot_warning(ew, ds), plots.plot_drift(drift)):
        hv.render(obj, backend="bokeh")


def test_load_bokehjs_does_nothing_outside_a_kernel():
    assert plots.load_bokehjs(force=True) is False
    assert plots.load_bokehjs(mode="off") is False
    with pytest.raises(SedvizError, match="'inline', 'cdn' or 'off'"):
        plots.load_bokehjs(mode="web")
