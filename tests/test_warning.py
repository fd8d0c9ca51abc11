"""Tests of sedviz.analysis.warning (docs/methods.md#early-warning): grok step, the detectors' signals against numpy,
firing before the grok step on a synthetic grokking-like run and silence on its control."""
from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from sedviz.analysis.warning import early_warning, grok_step, trailing_slope
from sedviz.errors import SedvizError
from test_edge import make_dataset, split_rows

SHAPES = {"blocks.0.attn.qkv.weight": (12, 8), "blocks.0.attn.out_proj.weight": (8, 8), "blocks.0.mlp.fc_in.weight": (8, 8)}
KINDS = {"blocks.0.attn.qkv.weight": "attn_qkv", "blocks.0.attn.out_proj.weight": "attn_out",
         "blocks.0.mlp.fc_in.weight": "mlp_in"}
N_CKPT, EVERY, GROK_CKPT = 90, 50, 62


def synthetic_run(grok: bool, seed: int, spike_at: int | None = None):
    """Checkpoints and metrics of a grokking-like run (grok=True) or its control.

    Both fit the training set at checkpoint 2, with large updates before that (memorization).
    Updates = a steady dominant direction u1 + isotropic noise that slowly shrinks. The grokking
    run also builds a second coherent direction u2 (ckpts 30..50) that then vanishes, and its
    validation accuracy jumps at GROK_CKPT; the control's accuracy stays at chance.
    ``spike_at``: a loss spike, updates 6x larger and in new directions for two checkpoints.
    """
    rng = np.random.default_rng(seed)
    P = sum(int(np.prod(s)) for s in SHAPES.values())
    u1, u2 = np.linalg.qr(rng.normal(size=(P, 2)))[0].T
    t = np.arange(1, N_CKPT)
    noise = (1.0 - 0.4 * t / N_CKPT)[:, None] * rng.normal(size=(N_CKPT - 1, P)) / np.sqrt(P) * 3
    a1 = 6.0 * np.ones(N_CKPT - 1)
    a2 = np.zeros(N_CKPT - 1)
    if grok:
        ramp = (t >= 30) & (t <= 50)
        a2[ramp] = 0.4 * (t[ramp] - 29) * (1 + 0.1 * rng.normal(size=ramp.sum()))
    upd = a1[:, None] * u1 + (a2 * np.sign(np.sin(t)))[:, None] * u2 + noise
    upd[:2] *= 8.0  # memorization
    if spike_at is not None:
        upd[spike_at : spike_at + 2] = 6 * np.linalg.norm(upd[spike_at]) * rng.normal(size=(2, P)) / np.sqrt(P)
    theta = np.vstack([rng.normal(size=P), upd]).cumsum(axis=0)
    ckpts = split_rows(theta, SHAPES)
    acc = np.full(N_CKPT, 0.02) + 0.01 * rng.random(N_CKPT)
    if grok:
        acc[GROK_CKPT:] = np.linspace(0.95, 1.0, N_CKPT - GROK_CKPT)
        acc[GROK_CKPT - 2 : GROK_CKPT] = [0.4, 0.8]
    train = np.ones(N_CKPT)
    train[:2] = [0.02, 0.6]
    return ckpts, {"val_acc": acc, "train_acc": train}


def make_pair(seed=0, spike_at=None, **kw):
    g, met_g = synthetic_run(True, seed)
    c, met_c = synthetic_run(False, seed + 100, spike_at=spike_at)
    steps = [EVERY * i for i in range(N_CKPT)]
    return make_dataset({"grok_wd1": g, "grok_wd0": c}, {"grok_wd1": steps, "grok_wd0": steps}, kinds=KINDS,
                        metrics={"grok_wd1": met_g, "grok_wd0": met_c}, **kw)


def test_grok_step_and_trailing_slope():
    assert grok_step([0, 10, 20, 30], [0.1, np.nan, 0.95, 0.5], 0.9) == 20
    assert np.isnan(grok_step([0, 10], [0.1, 0.2]))
    v = np.array([1.0, 2.0, 4.0, 3.0, 7.0, 7.5])
    z = trailing_slope(v, 3)
    assert np.all(np.isnan(z[:2]))
    for i in range(2, 6):
        assert z[i] == pytest.approx(np.polyfit(np.arange(3), v[i - 2 : i + 1], 1)[0], rel=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fires_before_grok_and_not_on_control(seed):
    ds = make_pair(seed, max_lag=9)
    out = early_warning(ds, detector=("slope", "g23"))
    # val acc 0.4, 0.8 at the two checkpoints before GROK_CKPT, then >= 0.95
    assert out["grok_step"].sel(run="grok_wd1").item() == EVERY * GROK_CKPT
    assert np.isnan(out["grok_step"].sel(run="grok_wd0").item())
    for det in ("slope", "g23"):
        assert bool(out["fired"].sel(run="grok_wd1", detector=det)), det
        assert out["lead"].sel(run="grok_wd1", detector=det).item() > 0, det
        assert not bool(out["fired"].sel(run="grok_wd0", detector=det)), det
        assert np.isnan(out["lead"].sel(run="grok_wd0", detector=det).item())


def test_signals_match_numpy():
    ds = make_pair(3, max_lag=9)
    W = 10
    out = early_warning(ds, detector=("slope", "g23"), window=W, slope_span=4)
    g, _ = synthetic_run(True, 3)
    names = ["blocks.0.attn.out_proj.weight", "blocks.0.attn.qkv.weight"]  # the "attn" group
    th = np.array([np.concatenate([c[p].ravel() for p in names]) for c in g])
    U = np.diff(th, axis=0)
    steps = np.arange(N_CKPT) * EVERY
    lr, g23 = [], []
    for j in range(W - 1, len(U)):
        s = np.linalg.svd(U[j - W + 1 : j + 1], compute_uv=False)
        lr.append(np.log(s[1] / s[2]))
        g23.append(s[1] ** 2 - s[2] ** 2)
    lr, g23 = np.array(lr), np.array(g23)
    win_steps = steps[W:]
    sig = out["signal"].sel(run="grok_wd1")
    np.testing.assert_allclose(sig.sel(detector="g23", step=win_steps).values, g23, rtol=1e-6)
    np.testing.assert_allclose(out["s2_s3"].sel(run="grok_wd1", step=win_steps).values, np.exp(lr), rtol=1e-6)
    slope = np.array([np.polyfit(np.arange(4), lr[i - 3 : i + 1], 1)[0] for i in range(3, len(lr))])
    np.testing.assert_allclose(sig.sel(detector="slope", step=win_steps[3:]).values, slope, rtol=1e-6, atol=1e-9)
    # the fire step is the last of `persist` consecutive steps where the rule holds
    for det in ("slope", "g23"):
        h = out["rule_holds"].sel(run="grok_wd1", detector=det).values
        f = out["fire_step"].sel(run="grok_wd1", detector=det).item()
        i = int(np.searchsorted(steps, f))
        assert h[i - 2 : i + 1].all() and not any(h[k : k + 3].all() for k in range(0, i - 2))


def test_sketch_path_and_options():
    ds = make_pair(0, sketch_dim=60)
    out = early_warning(ds, detector="slope")
    assert list(out["detector"].values) == ["slope"]
    assert bool(out["fired"].sel(run="grok_wd1", detector="slope"))
    assert not bool(out["fired"].sel(run="grok_wd0", detector="slope"))
    with pytest.raises(SedvizError, match="detector"):
        early_warning(ds, detector="nope")
    with pytest.raises(SedvizError, match="metric"):
        early_warning(ds.drop_vars("val_acc"))
    with pytest.raises(SedvizError, match="g23_drop"):
        early_warning(ds, g23_drop=1.5)
    with pytest.raises(SedvizError, match="fro_norm"):
        early_warning(ds)  # the default detector reads fro_norm, which these synthetic runs lack
    with pytest.raises(SedvizError, match="params='conv'"):
        early_warning(ds, params="conv", detector="g23")
    # layers= is the deprecated name of params=: same result, with a DeprecationWarning
    with pytest.warns(DeprecationWarning, match="params="):
        old = early_warning(ds, layers="attn", detector="slope")
    xr.testing.assert_identical(old, out)


def test_spike_guard_and_arming():
    ds = make_pair(0, max_lag=9, spike_at=40)  # the control has a loss spike at updates 41, 42
    out = early_warning(ds, detector=("slope", "g23"))
    steps = ds.step.values
    assert list(steps[out["spike"].sel(run="grok_wd0").values]) == [41 * EVERY, 42 * EVERY]
    assert not out["spike"].sel(run="grok_wd1").values.any()
    # windows holding a spike update are unusable: W = 10 windows ending at updates 41..51
    u = out["usable"].sel(run="grok_wd0").values
    assert not u[41:52].any() and u[40] and u[52]
    assert not out["fired"].sel(run="grok_wd0").values.any()
    # without the guard the spike trips both rules on the control
    raw = early_warning(ds, detector=("slope", "g23"), spike_factor=None)
    assert raw["fired"].sel(run="grok_wd0").values.all()
    # arming: train_acc >= 0.99 first at checkpoint 2; the first usable window starts after it
    assert (out["armed_step"].values == 2 * EVERY).all()
    assert not u[:12].any() and u[12]
    never = ds.copy()
    never["train_acc"] = never["train_acc"] * 0.5
    silent = early_warning(never, detector=("slope", "g23"))
    assert np.isnan(silent["armed_step"].values).all() and not silent["fired"].values.any()
    free = early_warning(ds.drop_vars("train_acc"), detector=("slope", "g23"))
    assert (free["armed_step"].values == 0).all()  # armed from the first checkpoint
