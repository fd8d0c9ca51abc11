"""The papers' findings on the demo (modular-addition grokking, wd 1.0 vs 0.0): on the shipped data,
and on a demo trained afresh at a seed they were not measured on (tests/conftest.py).

Only findings that held on all five seeds of scripts/demo_seeds.py are asserted; each threshold
comes from the spread over those seeds, quoted in the comments (docs/demo.md has the table). The
early-warning test below is about the shipped data only (issue 11's grokking suite calibrates the
detectors).
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


def check_generalizes_and_control_does_not(ds):
    """grok_wd1 generalizes (most seeds grok within the 3500 steps), the control does not.

    Seeds 0-4: final val_acc of grok_wd1 0.56-1.0 (seed 4 was still climbing at step 3500, the
    others grokked at 1000-2900); the control's best val_acc 0.027-0.196. Returns the grok step
    (first val_acc >= 0.9) or None.
    """
    acc = ds.val_acc.sel(run="grok_wd1").dropna("step")
    assert float(acc[-1]) >= 0.5
    assert float(ds.val_acc.sel(run="grok_wd0").max()) < 0.25
    return _grok_step(ds.sel(run="grok_wd1")) if float(acc.max()) >= 0.9 else None


def check_eff_rank_falls_when_the_model_groks_not_in_the_control(ds, grok):
    """Yunis et al. (2024) Fig. 2: effective rank of attention and MLP matrices drops sharply at grokking."""
    layers = ds.sed.layers(kind=["attn", "mlp"])
    assert len(layers) == 4
    last = int(ds.step.max())
    before, after = grok - 250, min(grok + 500, last)
    er = ds.eff_rank.sel(layer=layers)
    drop = (er.sel(step=before) - er.sel(step=after)).mean("layer")
    # seeds that grokked (0-3; 4 did not): 0.208-0.241 for grok_wd1, -0.004-0.0035 for grok_wd0
    assert float(drop.sel(run="grok_wd1")) > 0.15
    assert abs(float(drop.sel(run="grok_wd0"))) < 0.02
    # and every attention/MLP matrix of the grokking run ends lower than where grokking began
    assert (er.sel(run="grok_wd1", step=last) < er.sel(run="grok_wd1", step=before)).all()


def check_top_half_svd_pruning_keeps_accuracy_bottom_half_destroys_it(ds):
    """Yunis et al. (2024) Fig. 4: keeping the top half of every SVD keeps the model; the bottom half does not."""
    pc = sa.prune_curves(ds, "sedviz.demo:make_model", "sedviz.demo:evaluate", runs=["grok_wd1"], fractions=[0.5])
    acc = pc.prune_acc.sel(run="grok_wd1").squeeze()
    # seeds 0-4: top = full (1.000; seed 4, not grokked: full 0.561, top 0.550), bottom 0.009-0.011
    # (chance is 1/97 = 0.010)
    assert float(acc.sel(keep="top")) >= float(acc.sel(keep="full")) - 0.02
    assert float(acc.sel(keep="bottom")) < 0.05


def check_sketch_error(ds):
    """The sketch's gap ratios at W = 20 (d = 200 per parameter, 1,400 in all) against the exact ones, per window."""
    opts = json.loads(ds.attrs["options"])
    assert opts["sketch_dim"] == 200
    sk = sa.edge(ds, windows=[20], exact=False)
    ex = sa.edge(ds, windows=[20], exact=True)
    for run in ("grok_wd1", "grok_wd0"):
        k = int(ex.k_star_mode.sel(run=run, window=20))
        err = sk.sketch_gap_error.sel(run=run, window=20).dropna("step", how="all").values[:, :19]
        edge_err = err[:, k - 1]
        # seeds 0-4 and 5, both runs: mean 2.9-3.3%, edge 90th percentile 4.0-11.2%, edge max 6.8-12.4%
        assert err.mean() < 0.05
        assert np.quantile(edge_err, 0.9) < 0.15 and edge_err.max() < 0.25
        # the jackknife estimate has the size of the error: two standard errors cover most windows
        se = sk.gap_ratio_rel_se.sel(run=run, window=20).dropna("step", how="all").values[:, :19]
        assert (err <= 2 * se).mean() > 0.85


def check_edge_signal_rank_and_no_collapse_in_the_control(ds):
    e = sa.edge(ds, windows=[20])
    # seeds 0-4: k* = 2 for grok_wd1 on every seed; the control never collapses on any
    assert int(e.k_star_mode.sel(run="grok_wd1", window=20)) == 2  # s2/s3: a two-direction signal
    p = sa.phases(e)
    assert np.isnan(float(p.collapse_step.sel(run="grok_wd0", window=20)))


CHECKS = [check_eff_rank_falls_when_the_model_groks_not_in_the_control, check_sketch_error,
          check_edge_signal_rank_and_no_collapse_in_the_control,
          check_top_half_svd_pruning_keeps_accuracy_bottom_half_destroys_it]


def test_shipped_demo_groks_at_2500(ds):
    assert check_generalizes_and_control_does_not(ds) == 2500
    assert ds.sizes["step"] == 141


def test_shipped_demo_has_no_lag_flip(ds):
    """No lag flip on the shipped data (significant peaks at +1, +1, 0; W = 20 not significant).
    Not a claim about every seed: seed 4 flips (+1 at W = 5 to -1 at W = 20)."""
    lf = sa.lag_flip(ds, windows=[5, 10, 15, 20])
    assert str(lf.flip.sel(run="grok_wd1").item()) == "no flip: same sign"
    assert str(lf.flip.sel(run="grok_wd0").item()).startswith("no flip")


@pytest.mark.parametrize("check", CHECKS, ids=lambda f: f.__name__[len("check_"):])
def test_findings_on_the_shipped_demo(ds, check):
    if check is check_eff_rank_falls_when_the_model_groks_not_in_the_control:
        check(ds, _grok_step(ds.sel(run="grok_wd1")))
    else:
        check(ds)


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


def test_shipped_edge_collapses_before_grokking(ds):
    """On the shipped data (seed 0) the W = 20 edge collapses at 2175, before the grok at 2500. Not on
    every seed: never on seeds 1, 4, 5, after the grok on seed 3 (docs/demo.md)."""
    p = sa.phases(sa.edge(ds, windows=[20]))
    assert 0 < float(p.collapse_step.sel(run="grok_wd1", window=20)) < 2500


@pytest.mark.slow
def test_findings_on_a_fresh_demo_at_another_seed(fresh_demo_ds):
    """Everything asserted above, on a demo trained now at seed 5 (not one of the seeds thresholds came from)."""
    ds = fresh_demo_ds
    assert ds.sizes["step"] == 141 and set(ds.run.values) == {"grok_wd1", "grok_wd0"}
    grok = check_generalizes_and_control_does_not(ds)
    if grok is not None:  # measured: seed 5 groks at 2075 (eff-rank drop 0.176 vs 0.003)
        check_eff_rank_falls_when_the_model_groks_not_in_the_control(ds, grok)
    for check in CHECKS[1:]:
        check(ds)
