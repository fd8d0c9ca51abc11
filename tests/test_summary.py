"""sedviz.summary says what happened in each run: grok step, effective-rank drop, early warning,
reading any detectors from the early-warning result's generic variables."""
import json

import numpy as np
import xarray as xr

from sedviz._synthetic import synthetic_dataset
from sedviz.summary import summary, what_happened


def test_what_happened_reads_any_detectors():
    ds = synthetic_dataset()
    runs = ds.run.values.tolist()
    ew = xr.Dataset(
        {"grok_step": ("run", [1900.0, np.nan]),
         "fired": (("run", "detector"), [[True, False], [False, True]]),
         "lead": (("run", "detector"), [[700.0, np.nan], [np.nan, np.nan]]),
         "fire_step": (("run", "detector"), [[1200.0, np.nan], [np.nan, 2500.0]])},
        coords={"run": runs, "detector": ["alpha", "beta"]}, attrs={"options": json.dumps({"threshold_acc": 0.8})})
    lines = what_happened(ds, ew)
    # the effective-rank part, computed here from the Dataset: mean over layers, first and last step
    e = ds.eff_rank.sel(run=runs[0]).values  # (step, layer)
    have = ~np.isnan(e).all(1)
    first, last = np.nanmean(e[have][0]), np.nanmean(e[have][-1])
    drops = e[have][0] - e[have][-1]
    worst = ds.layer.values[np.nanargmax(drops)]
    assert lines[0] == (
        f"{runs[0]}: grokked at step 1900 (val_acc >= 0.8); mean eff_rank {first:.3f} -> {last:.3f} "
        f"({100 * (last - first) / first:+.0f}%), largest drop {worst} {e[have][0][np.nanargmax(drops)]:.3f} -> "
        f"{e[have][-1][np.nanargmax(drops)]:.3f}; early warning: alpha fired at step 1200, 700 steps before grokking, "
        f"beta did not fire")
    assert lines[1].startswith(f"{runs[1]}: did not grok (val_acc < 0.8); mean eff_rank ")
    assert lines[1].endswith("early warning: alpha did not fire, beta fired at step 2500 (no grokking followed)")


def test_summary_events_only_when_asked():
    ds = synthetic_dataset()
    assert "what happened" not in summary(ds)
    text = summary(ds.drop_vars("val_acc"), events=True)  # the analysis cannot run: said, not raised
    assert "what happened:" in text and "early warning not available (" in text
    assert text.index("variables: sv, eff_rank") > 0  # the stored order, sv first
