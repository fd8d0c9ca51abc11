"""The papers' findings, asserted on the shipped demo (modular-addition grokking, wd 1.0 vs 0.0).

Numbers measured on the shipped data are in the comments; thresholds leave room for a
retrained demo on another machine.
"""
import json

import numpy as np
import pytest

import sedviz
from sedviz import analysis as sa


@pytest.fixture(scope="module")
def ds():
    return sedviz.load_demo()


def _grok_step(one, threshold=0.9):
    acc = one.val_acc.dropna("step")
    return int(acc.step[acc >= threshold].min())


def test_demo_groks_and_control_does_not(ds):
    assert _grok_step(ds.sel(run="grok_wd1")) == 2500
    assert float(ds.val_acc.sel(run="grok_wd0").max()) < 0.1
    assert ds.sizes["step"] == 141


def test_eff_rank_falls_when_the_model_groks_not_in_the_control(ds):
    """Yunis et al. (2024) Fig. 2: effective rank of attention and MLP matrices drops sharply at grokking."""
    layers = ds.sed.layers(kind=["attn", "mlp"])
    assert len(layers) == 4
    grok = _grok_step(ds.sel(run="grok_wd1"))
    before, after = grok - 250, grok + 500
    er = ds.eff_rank.sel(layer=layers)
    drop = (er.sel(step=before) - er.sel(step=after)).mean("layer")
    # measured: 0.208 for grok_wd1, -0.0005 for grok_wd0
    assert float(drop.sel(run="grok_wd1")) > 0.15
    assert abs(float(drop.sel(run="grok_wd0"))) < 0.02
    # and every attention/MLP matrix of the grokking run ends lower than where grokking began
    assert (er.sel(run="grok_wd1", step=3500) < er.sel(run="grok_wd1", step=before)).all()


def test_top_half_svd_pruning_keeps_accuracy_bottom_half_destroys_it(ds):
    """Yunis et al. (2024) Fig. 4: keeping the top half of every SVD keeps the model; the bottom half does not."""
    pc = sa.prune_curves(ds, "sedviz.demo:make_model", "sedviz.demo:evaluate", runs=["grok_wd1"], fractions=[0.5])
    acc = pc.prune_acc.sel(run="grok_wd1").squeeze()
    # measured: full 1.000, top 1.000, bottom 0.009 (chance is 1/97 = 0.010)
    assert float(acc.sel(keep="full")) == pytest.approx(1.0, abs=1e-6)
    assert float(acc.sel(keep="top")) >= 0.98
    assert float(acc.sel(keep="bottom")) < 0.05


def test_early_warning_on_the_demo_in_words(ds):
    """The demo is in neither half of the grokking suite: an independent check of the defaults.

    Measured: the default detector wnorm (norm_drop 0.02, persist 1, tuned on the suite) fires on
    grok_wd1 at step 600 (lead 1900 steps), a hit, and on the control grok_wd0 at step 2500, where
    its norm dips 2% after a loss spike: a false alarm, reported as such. g23 fires at 2150 (lead
    350) and stays silent on the control; with norm_drop 0.03 wnorm is silent on the control too.
    """
    from sedviz.analysis.warning import describe

    ew = sa.early_warning(ds, detector=["wnorm", "g23"])
    assert float(ew.grok_step.sel(run="grok_wd1")) == 2500
    status = {(r, d): str(ew.status.sel(run=r, detector=d).values) for r in ("grok_wd1", "grok_wd0") for d in ("wnorm", "g23")}
    assert status[("grok_wd1", "wnorm")] == "fired_before_grok" and float(ew.lead.sel(run="grok_wd1", detector="wnorm")) > 1000
    assert status[("grok_wd1", "g23")] == "fired_before_grok"
    assert status[("grok_wd0", "g23")] == "silent_no_grok"
    assert status[("grok_wd0", "wnorm")] == "fired_no_grok"
    assert "never grokked (a false alarm)" in describe(ew, "grok_wd0", "wnorm")
    stricter = sa.early_warning(ds, norm_drop=0.03)
    assert str(stricter.status.sel(run="grok_wd0", detector="wnorm").values) == "silent_no_grok"


def test_sketch_error_at_d_10w_is_bounded(ds):
    """Xu (2026) reports the JL sketch keeps gap ratios within ~5.7% at d = 10 W; the demo stores d = 200."""
    opts = json.loads(ds.attrs["options"])
    assert opts["sketch_dim"] == 200
    e = sa.edge(ds, windows=[20])
    err = e.sketch_error.sel(window=20)
    # measured: at most 0.041 over runs and k
    assert float(err.max()) < 0.06


def test_edge_signal_rank_and_phases_on_the_demo(ds):
    e = sa.edge(ds, windows=[10, 20])
    assert int(e.k_star_mode.sel(run="grok_wd1", window=20)) == 2  # s2/s3: a two-direction signal
    p = sa.phases(e)
    collapse = float(p.collapse_step.sel(run="grok_wd1", window=20))
    # measured: rise to a peak at 1350, plateau 1150-1675, collapse at 2175 -- before the grok at 2500
    assert 0 < collapse < 2500
    assert np.isnan(float(p.collapse_step.sel(run="grok_wd0", window=20)))
