"""Grokking early warning from the spectral edge of the attention updates (docs/methods.md#early-warning; Xu, the
grokking companion of "Spectral Edge Dynamics of Training Trajectories", arXiv 2603.15678, 2026).

Signals come from the window Gram of the chosen layers (attention by default): for each window of
``window`` consecutive updates (docs/methods.md#spectral-edge), s_2 and s_3 are its second and third singular values.

- detector "slope": the least-squares slope of log(s_2 / s_3) over the trailing ``slope_span``
  windows, in units of log-ratio per checkpoint;
- detector "g23": g23 = s_2^2 - s_3^2, tracked against its running maximum.

Both rules are armed only after the training set is fit, skip windows that hold a loss spike,
and are taken relative to the run's own early baseline (see :func:`early_warning`), so a run
whose update spectrum never changes character (the weight-decay-free control) stays silent.

Which Gram: docs/methods.md#early-warning speaks of "the Gram of attention weights"; here, as in docs/methods.md#spectral-edge, it is the
window Gram of the attention parameters' *updates* (``layers="attn"``), the object whose s_2/s_3
the spectral edge is built from.
"""
from __future__ import annotations

import json

import numpy as np
import xarray as xr

from sedviz.errors import SedvizError

from . import _trajectory as T

__all__ = ["early_warning", "grok_step", "DETECTORS"]

DETECTORS = ("slope", "g23")
_FLOOR = 1e-30


def grok_step(steps, acc, threshold: float = 0.9) -> float:
    """First step where ``acc`` >= ``threshold`` (docs/methods.md#early-warning); NaN if never."""
    acc = np.asarray(acc, dtype=np.float64)
    hit = np.flatnonzero(np.isfinite(acc) & (acc >= threshold))
    return float(np.asarray(steps)[hit[0]]) if hit.size else np.nan


def trailing_slope(v: np.ndarray, span: int) -> np.ndarray:
    """Least-squares slope of v over the trailing ``span`` points (per index); NaN before that."""
    v = np.asarray(v, dtype=np.float64)
    n = len(v)
    out = np.full(n, np.nan)
    if n < span:
        return out
    x = np.arange(span, dtype=np.float64)
    x -= x.mean()
    win = np.lib.stride_tricks.sliding_window_view(v, span)  # (n - span + 1, span)
    out[span - 1:] = (win - win.mean(axis=1, keepdims=True)) @ x / (x @ x)
    return out


def _first_persistent(cond: np.ndarray, persist: int) -> int:
    """Index where ``cond`` first holds for ``persist`` consecutive points (the last of them), -1 if never."""
    run = 0
    for i, c in enumerate(cond):
        run = run + 1 if c else 0
        if run >= persist:
            return i
    return -1


def spikes(norms: np.ndarray, factor: float, span: int) -> np.ndarray:
    """Updates whose norm exceeds ``factor`` x the median norm of the ``span`` updates before them.

    Adam's loss spikes ("slingshots", common in grokking setups) scale the updates several-fold
    for a few checkpoints and dominate every window that holds them; the rules skip such windows.
    The first three updates are never flagged (no history).
    """
    norms = np.asarray(norms, dtype=np.float64)
    out = np.zeros(len(norms), dtype=bool)
    for j in range(3, len(norms)):
        ref = np.median(norms[max(0, j - span) : j])
        out[j] = np.isfinite(norms[j]) and norms[j] > factor * ref
    return out


def _baseline_end(clean: np.ndarray, baseline: int) -> int:
    """Index after the first ``baseline`` usable points (len when there are not that many)."""
    idx = np.flatnonzero(clean)
    return int(idx[baseline - 1]) + 1 if idx.size >= baseline else len(clean)


def _slope_rule(lr23: np.ndarray, clean: np.ndarray, *, span: int, threshold: float, baseline: int):
    """z(t) = slope of log(s2/s3) over clean windows; holds where z > max(threshold, baseline max of z)."""
    z = trailing_slope(np.where(clean, lr23, np.nan), span)  # a spike window in the span gives NaN
    ok = np.isfinite(z)
    start = _baseline_end(ok, baseline)
    base = z[:start][ok[:start]]
    level = max(threshold, float(base.max())) if base.size else threshold
    cond = np.zeros(len(z), dtype=bool)
    cond[start:] = ok[start:] & (np.where(ok, z, -np.inf)[start:] > level)
    return trailing_slope(lr23, span), cond, level


def _g23_rule(g: np.ndarray, clean: np.ndarray, *, drop: float, rise: float, baseline: int):
    """Holds where g23 (usable windows) has fallen by more than ``drop`` from its running maximum
    after the baseline, and that maximum exceeds ``rise`` x the largest g23 of the baseline. The
    running maximum restarts after every unusable (spike) window."""
    n = len(g)
    cond = np.zeros(n, dtype=bool)
    ok = clean & np.isfinite(g)
    start = _baseline_end(ok, baseline)
    if start >= n:
        return cond, np.nan
    ref = float(np.max(g[:start][ok[:start]]))
    gg = np.where(ok, g, -np.inf)[start:]
    runmax = np.empty(len(gg))
    m = -np.inf
    for i, (v, good) in enumerate(zip(gg, ok[start:])):
        m = max(m, v) if good else -np.inf  # a spike (unusable window) starts a new stretch
        runmax[i] = m
    cond[start:] = ok[start:] & (runmax > rise * max(ref, _FLOOR)) & (gg < (1.0 - drop) * runmax)
    return cond, ref


def early_warning(ds: xr.Dataset, *, threshold_acc: float = 0.9, detector=DETECTORS, window: int = 10,
                  slope_span: int = 5, slope_threshold: float = 0.1, g23_drop: float = 0.5,
                  g23_rise: float = 1.25, baseline: int = 10, persist: int = 3, spike_factor=2.0,
                  memorized_acc: float | None = 0.99, layers="attn", exact=None, metric: str = "val_acc",
                  train_metric: str = "train_acc") -> xr.Dataset:
    """Grok step, detector fire steps and lead times (docs/methods.md#early-warning).

    The grok step is the first step where ``metric`` (validation accuracy) >= ``threshold_acc``.
    The signals use the spectrum s_1 >= s_2 >= ... of the window Gram of W = ``window``
    consecutive updates of the ``layers`` group (docs/methods.md#spectral-edge). Every rule looks only at the run's
    windows after its first ``baseline`` usable windows, which set the run's own reference; a
    detector fires at the first window step where its rule has held for ``persist`` consecutive
    checkpoints (the step of the last of them). lead = grok step - fire step (steps; positive
    means the warning came first).

    Arming: grokking is generalization long after the training set is fit, so the rules look
    only at windows whose updates all come after the first checkpoint where ``train_metric`` >=
    ``memorized_acc`` (the memorization step). The updates of the memorization phase are large
    and change shape fast in every run, grokking or not, and would otherwise set or trip every
    rule. A run that never fits its training set is never armed; without a ``train_metric``
    variable (or with ``memorized_acc=None``) the rules are armed from the first window.

    Spike guard: an update whose norm exceeds ``spike_factor`` x the median norm of the 2W
    updates before it marks a loss spike (Adam's "slingshots", frequent in grokking setups);
    windows that hold one are not usable: no rule holds there, they do not enter the baseline,
    the slope or the running maximum, and they break a ``persist`` streak. The spike windows'
    spectra reflect the spike, not the slow dynamics the detectors look for, and spikes happen
    in controls as well as in grokking runs. ``spike_factor=None`` turns the guard off.

    Rules (defaults chosen so that a run whose update spectrum only relaxes, such as the
    wd = 0 control, stays silent; see "Defaults" below):

    - "slope": z(t) = least-squares slope of log(s_2/s_3) over the trailing ``slope_span``
      windows (per checkpoint). Holds where z(t) > max(``slope_threshold``, the largest z of the
      first ``baseline`` slopes): the edge between the second and third direction must open
      faster than it ever did in the run's early, noisy phase, and faster than an absolute floor.
    - "g23": g23(t) = s_2^2 - s_3^2. Holds where g23 has declined by more than ``g23_drop`` (a
      fraction) from its running maximum over the windows after the baseline, provided that
      running maximum exceeds ``g23_rise`` x the largest g23 of the first ``baseline`` windows:
      the two-direction structure must first build up above its early level, then collapse.
      A g23 that merely decays as updates shrink never satisfies the rise condition. The
      running maximum restarts after every spike: a decline measured across a spike compares
      two regimes (on the wd = 0 controls, the growth of the updates into a spike followed by
      their collapse afterwards), not the collapse of one structure.

    Defaults (window 10, slope_span 5, slope_threshold 0.1, g23_rise 1.25, g23_drop 0.5,
    baseline 10, persist 3, spike_factor 2, memorized_acc 0.99): W = 10 and a slope over 5
    windows follow [S]; 0.1 per checkpoint is a 2.7x opening of s2/s3 over 10 checkpoints.
    They were checked on the sedviz demo (runs/demo, p = 97, lr 5e-3, wd 1 vs 0, checkpoints
    every 25 steps; grok step 2500), on two more CPU-trained demo pairs (p = 59, lr 3e-3 and
    1e-3) and on 20 synthetic grokking/control pairs (half of the controls with a loss spike).
    Every control stays silent with these defaults. On the demo, "g23" fires at step 2150
    (lead 350 steps, val acc 0.19) and "slope" does not fire: there log(s2/s3) falls, not rises,
    before the grok. On the other two pairs "slope" fires only after the grok and "g23" after
    it or not at all; on the synthetic pairs both fire before the grok (leads about 1200 and
    150 steps). A smaller baseline, a lower slope threshold or g23_rise = 1 fired on a control
    or on synthetic noise; g23_rise 1.5 no longer fires on the demo. Treat leads as
    measurements on these runs, not a promise.

    Parameters
    ----------
    ds : xarray.Dataset
        The sedviz Dataset with ``delta_dot`` and/or ``sketch`` and the ``metric`` variable.
    threshold_acc : float
        Accuracy that defines the grok step (0.9).
    detector : str or sequence of str
        Any of "slope", "g23".
    window : int >= 3
        Window size W of the Gram (checkpoints).
    slope_span : int >= 2
        Trailing span of the slope (windows).
    slope_threshold : float
        Absolute floor of the slope rule (log-ratio per checkpoint).
    g23_drop : float in (0, 1)
        Fractional decline from the running maximum that fires "g23".
    g23_rise : float >= 1
        How far above its baseline maximum g23 must have risen first.
    baseline : int >= 1
        Number of first usable windows (slopes for "slope") that set the run's reference; no
        rule fires inside it.
    persist : int >= 1
        Consecutive checkpoints a rule must hold.
    spike_factor : float > 1 or None
        The spike guard (above); None turns it off.
    memorized_acc : float in (0, 1] or None
        Training accuracy that arms the rules (above); None arms them from the start.
    layers, exact : see :func:`sedviz.analysis.edge.edge` (default: the attention parameters).
    metric : str
        The (run, step) accuracy variable (``val_acc``).
    train_metric : str
        The (run, step) training accuracy variable that arms the rules (``train_acc``).

    Returns
    -------
    xarray.Dataset with
    ``grok_step`` (run); ``fire_step``, ``lead`` (run, detector; NaN when not fired or never
    grokked), ``fired`` (run, detector, bool); ``signal`` (run, detector, step): z(t) for
    "slope", g23(t) for "g23"; ``rule_holds`` (run, detector, step, bool); ``level`` (run,
    detector): the slope level in force, or the baseline maximum of g23; ``s2_s3`` (run, step):
    s_2 / s_3 of the window ending at each step; ``spike`` (run, step, bool): updates flagged by
    the spike guard; ``usable`` (run, step, bool): windows the rules may use (armed and free of
    spikes); ``armed_step`` (run): the memorization step (the first update's step when armed
    from the start; NaN: never armed).
    """
    fn = "early_warning"
    ds = T.check_dataset(ds, fn)
    dets = [detector] if isinstance(detector, str) else list(detector) if detector is not None else []
    if not dets or any(d not in DETECTORS for d in dets) or len(set(dets)) != len(dets):
        raise SedvizError(f"{fn}(detector={detector!r}): expected one or more of {DETECTORS}.")
    window = T.check_window(window, "window", fn, minimum=3)
    slope_span = T.check_window(slope_span, "slope_span", fn, minimum=2)
    baseline = T.check_window(baseline, "baseline", fn, minimum=1)
    persist = T.check_window(persist, "persist", fn, minimum=1)
    for name, val, lo, hi in (("threshold_acc", threshold_acc, 0.0, 1.0), ("g23_drop", g23_drop, 0.0, 1.0)):
        if isinstance(val, bool) or not isinstance(val, (int, float)) or not lo < val <= hi:
            raise SedvizError(f"{fn}({name}={val!r}): expected a number in ({lo}, {hi}].")
    if isinstance(g23_rise, bool) or not isinstance(g23_rise, (int, float)) or g23_rise < 1:
        raise SedvizError(f"{fn}(g23_rise={g23_rise!r}): expected a number >= 1, e.g. 1.25.")
    if spike_factor is not None and (isinstance(spike_factor, bool) or not isinstance(spike_factor, (int, float))
                                     or spike_factor <= 1):
        raise SedvizError(f"{fn}(spike_factor={spike_factor!r}): expected a number > 1 (e.g. 2.0) or None.")
    if isinstance(slope_threshold, bool) or not isinstance(slope_threshold, (int, float)):
        raise SedvizError(f"{fn}(slope_threshold={slope_threshold!r}): expected a number (log-ratio per checkpoint).")
    if not isinstance(metric, str) or metric not in ds.data_vars or set(ds[metric].dims) != {"run", "step"}:
        have = [v for v in ds.data_vars if set(ds[v].dims) == {"run", "step"}]
        raise SedvizError(
            f"{fn}(metric={metric!r}): the Dataset needs this (run, step) accuracy variable to find the "
            f"grok step; (run, step) variables present: {have}."
        )
    if memorized_acc is not None and (isinstance(memorized_acc, bool) or not isinstance(memorized_acc, (int, float))
                                      or not 0 < memorized_acc <= 1):
        raise SedvizError(f"{fn}(memorized_acc={memorized_acc!r}): expected a number in (0, 1] (e.g. 0.99) or None.")
    use_train = memorized_acc is not None and isinstance(train_metric, str) and train_metric in ds.data_vars
    T.check_exact(exact, fn)
    params = T.select_params(ds, layers, fn)
    src = T.resolve_source(ds, exact, window - 1, fn, f"window={window}")

    runs = [str(r) for r in ds["run"].values]
    steps_all = ds["step"].values
    nR, nD, nS = len(runs), len(dets), len(steps_all)
    signal = np.full((nR, nD, nS), np.nan)
    holds = np.zeros((nR, nD, nS), dtype=bool)
    fire = np.full((nR, nD), np.nan)
    level = np.full((nR, nD), np.nan)
    ratio = np.full((nR, nS), np.nan)
    spike = np.zeros((nR, nS), dtype=bool)
    usable = np.zeros((nR, nS), dtype=bool)
    grok = np.full(nR, np.nan)
    armed_step = np.full(nR, np.nan)
    for ir, run in enumerate(runs):
        grok[ir] = grok_step(steps_all, ds[metric].sel(run=run).transpose("step").values, threshold_acc)
        if use_train:
            arm = grok_step(steps_all, ds[train_metric].sel(run=run).transpose("step").values, memorized_acc)
        else:
            arm = -np.inf
        armed_step[ir] = arm if np.isfinite(arm) else np.nan  # -inf (armed from the start) is fixed below
        up = T.run_updates(ds, run, params, src, lag=window - 1 if src == "delta_dot" else None)
        if arm == -np.inf and up.n:
            armed_step[ir] = up.steps[0]
        G = T.window_grams(up.band_to(window - 1), window)
        if G.shape[0] == 0:
            continue
        s = np.sqrt(T.gram_eigvals(G))
        pos = T.step_positions(steps_all, up.steps[window - 1:])
        norms = np.sqrt(np.clip(np.diagonal(G, axis1=1, axis2=2), 0, None))  # ||d|| of each window's rows
        norms = np.concatenate([norms[0], norms[1:, -1]])  # ||d_j|| for every update j
        sp = spikes(norms, float(spike_factor), 2 * window) if spike_factor else np.zeros(up.n, dtype=bool)
        spike[ir, T.step_positions(steps_all, up.steps)] = sp
        clean = ~np.lib.stride_tricks.sliding_window_view(sp, window).any(axis=1)
        clean &= up.steps[: up.n - window + 1] > arm  # every update of the window after memorization
        usable[ir, pos] = clean
        s2, s3 = s[:, 1], s[:, 2]
        ratio[ir, pos] = s2 / np.maximum(s3, T.GAP_FLOOR)
        lr23 = np.log(np.maximum(s2, T.GAP_FLOOR) / np.maximum(s3, T.GAP_FLOOR))
        for idet, det in enumerate(dets):
            if det == "slope":
                sig, cond, lev = _slope_rule(lr23, clean, span=slope_span, threshold=float(slope_threshold),
                                             baseline=baseline)
            else:
                sig = s2**2 - s3**2
                cond, lev = _g23_rule(sig, clean, drop=float(g23_drop), rise=float(g23_rise), baseline=baseline)
            signal[ir, idet, pos] = sig
            holds[ir, idet, pos] = cond
            level[ir, idet] = lev
            i = _first_persistent(cond, persist)
            if i >= 0:
                fire[ir, idet] = up.steps[window - 1 + i]
    lead = grok[:, None] - fire
    out = xr.Dataset(coords={"run": runs, "detector": np.array(dets, dtype=str), "step": steps_all})
    out["grok_step"] = ("run", grok, {"long_name": f"first step with {metric} >= {threshold_acc}"})
    out["armed_step"] = ("run", armed_step, {"long_name": f"first step with {train_metric} >= {memorized_acc}"})
    out["fire_step"] = (("run", "detector"), fire, {"long_name": "first step the detector's rule held"})
    out["lead"] = (("run", "detector"), lead, {"long_name": "grok_step - fire_step", "units": "steps"})
    out["fired"] = (("run", "detector"), np.isfinite(fire))
    out["signal"] = (("run", "detector", "step"), signal,
                     {"long_name": "slope: d log(s2/s3) per checkpoint; g23: s2^2 - s3^2"})
    out["rule_holds"] = (("run", "detector", "step"), holds)
    out["level"] = (("run", "detector"), level,
                    {"long_name": "slope: threshold in force; g23: baseline maximum of g23"})
    out["s2_s3"] = (("run", "step"), ratio, {"long_name": "s2 / s3 of the update window", "units": "1"})
    out["spike"] = (("run", "step"), spike, {"long_name": "update flagged by the spike guard"})
    out["usable"] = (("run", "step"), usable, {"long_name": "window free of spikes, used by the rules"})
    out.attrs.update(
        method="docs/methods.md#early-warning; Xu, grokking companion of Spectral Edge Dynamics (arXiv 2603.15678)",
        options=T.options_attr(threshold_acc=threshold_acc, detector=dets, window=window, slope_span=slope_span,
                               slope_threshold=slope_threshold, g23_drop=g23_drop, g23_rise=g23_rise,
                               baseline=baseline, persist=persist, spike_factor=spike_factor,
                               memorized_acc=memorized_acc if use_train else None, layers=layers, exact=exact,
                               metric=metric, train_metric=train_metric, source=src),
        params=json.dumps(params),
    )
    return out
