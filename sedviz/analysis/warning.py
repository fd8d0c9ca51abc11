"""Grokking early warning (docs/methods.md#early-warning): does a run that memorized its training set show, before
its validation accuracy jumps, a change that a run which never generalizes does not show?

Detectors (each a rule on one per-checkpoint signal of :func:`signals`; every rule is armed only
from the memorization step, the first checkpoint with training accuracy >= ``memorized_acc``):

- "wnorm": the total Frobenius norm of the weight matrices has fallen by at least ``norm_drop``
  (a fraction) below its running maximum since memorization. Weight decay pulls the norm down
  once the training loss is small; generalization in grokking goes with this shrinking
  (Liu et al. 2023 "Omnigrok"; Nanda et al. 2023), and a run without weight decay does not shrink.
- "erank": the mean normalized effective rank of the attention and MLP matrices (all matrices of
  a model that has none) has fallen by at least ``erank_drop`` below its running maximum since
  memorization (Yunis et al. 2024: it falls well before validation loss does).
- "val_loss": validation loss is at most ``val_loss_frac`` x its running maximum since memorization.
- "wnorm_erank": both "wnorm" and "erank" hold at the same checkpoint.
- "slope": the least-squares slope of log(s_2 / s_3) of the window Gram of the ``params``
  group's updates over the trailing ``slope_span`` windows exceeds a level (Xu, the grokking
  companion of "Spectral Edge Dynamics of Training Trajectories", arXiv 2603.15678, 2026);
- "g23": g23 = s_2^2 - s_3^2 of that Gram first rises, then falls by ``g23_drop`` below its
  running maximum (same source).

A detector fires at the first checkpoint where its rule has held for ``persist`` consecutive
checkpoints (the step of the last of them). Its outcome on a run is one of STATUS:
"fired_before_grok", "fired_after_grok" (a late warning: no use), "not_fired" (the run grokked,
the detector stayed silent), "fired_no_grok" (a false alarm: the run never grokked) and
"silent_no_grok" (the run never grokked and the detector stayed silent).

Defaults were chosen on the tuning half of the grokking suite (:mod:`sedviz.suite`,
docs/suite.md) and are reported on its held-out half there; ``DEFAULT_DETECTOR`` is the one
``early_warning`` runs unless told otherwise.
"""
from __future__ import annotations

import json
import warnings

import numpy as np
import xarray as xr

from sedviz.errors import SedvizError

from . import _trajectory as T

__all__ = ["early_warning", "signals", "detect", "grok_step", "DETECTORS", "DEFAULT_DETECTOR", "STATUS"]

DETECTORS = ("wnorm", "erank", "val_loss", "wnorm_erank", "slope", "g23")
DEFAULT_DETECTOR = "wnorm"
#: ``persist`` of each detector when none is given: chosen on the suite's tuning half for wnorm,
#: erank, val_loss and wnorm_erank; slope and g23 keep the 3 they were designed with (docs/suite.md).
PERSIST = {"wnorm": 1, "erank": 1, "val_loss": 1, "wnorm_erank": 1, "slope": 3, "g23": 3}
STATUS = ("fired_before_grok", "fired_after_grok", "not_fired", "fired_no_grok", "silent_no_grok")
_FLOOR = 1e-30
#: Signals of :func:`signals` (run, step); the Gram ones are NaN where the Dataset has no trajectory.
SIGNALS = ("weight_norm", "eff_rank", "val_loss", "val_acc", "train_acc", "g23", "log_s2_s3", "usable", "spike")

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




def _running_drop(v: np.ndarray, start: int) -> np.ndarray:
    """1 - v / (running maximum of v from index ``start``) per index; NaN before ``start`` and at NaN values."""
    out = np.full(len(v), np.nan)
    m = -np.inf
    for i in range(max(start, 0), len(v)):
        if np.isfinite(v[i]):
            m = max(m, v[i])
            out[i] = 1.0 - v[i] / m if m > 0 else np.nan
    return out


def _deprecated_layers(fn: str, params, layers):
    if layers is None:
        return params
    warnings.warn(f"{fn}(layers=...) is deprecated and will be removed in the next release; use params=... "
                  "(the same values).", DeprecationWarning, stacklevel=3)
    return layers


def _series(ds, name, run):
    if name not in ds.data_vars or set(ds[name].dims) != {"run", "step"}:
        return np.full(ds.sizes["step"], np.nan)
    return np.asarray(ds[name].sel(run=run).transpose("step").values, dtype=np.float64)


def _group_layers(ds) -> list[str]:
    """Attention and MLP matrices (by layer kind); every matrix when the model has neither."""
    if "layer" not in ds.dims:
        return []
    names = [str(x) for x in ds["layer"].values]
    if "layer_kind" not in ds.coords:
        return names
    kinds = [str(k) for k in ds["layer_kind"].values]
    chosen = [n for n, k in zip(names, kinds) if k.startswith(("attn", "mlp"))]
    return chosen or names


def signals(ds: xr.Dataset, *, params="attn", window: int = 10, spike_factor=2.0, memorized_acc: float | None = 0.99,
            exact=None, metric: str = "val_acc", train_metric: str = "train_acc", loss_metric: str = "val_loss",
            layers=None) -> xr.Dataset:
    """The per-checkpoint signals every detector reads, (run, step) each (NaN where a run has no value).

    - ``weight_norm``: sqrt of the sum of ``fro_norm``^2 over every weight matrix (``layer``);
    - ``eff_rank``: mean ``eff_rank`` over the attention and MLP matrices (all matrices if none);
    - ``val_loss``, ``val_acc``, ``train_acc``: the metric logs (``loss_metric``, ``metric``, ``train_metric``);
    - ``g23`` = s_2^2 - s_3^2 and ``log_s2_s3`` of the window Gram of ``window`` updates of the
      ``params`` group (docs/methods.md#spectral-edge), at the window's last step; NaN without ``delta_dot``/``sketch``
      or when the group is empty;
    - ``spike`` (update flagged by the spike guard, see :func:`early_warning`) and ``usable``
      (window after memorization and free of spikes);
    - ``armed_step`` (run): the memorization step, first step with ``train_metric`` >= ``memorized_acc``
      (NaN: never; the first step when ``memorized_acc`` is None or the variable is missing).
    """
    fn = "signals"
    params = _deprecated_layers(fn, params, layers)
    ds = T.check_dataset(ds, fn)
    window = T.check_window(window, "window", fn, minimum=3)
    runs = [str(r) for r in ds["run"].values]
    steps = ds["step"].values
    nR, nS = len(runs), len(steps)
    out = {k: np.full((nR, nS), np.nan) for k in ("weight_norm", "eff_rank", "val_loss", "val_acc", "train_acc",
                                                 "g23", "log_s2_s3")}
    spike = np.zeros((nR, nS), dtype=bool)
    usable = np.zeros((nR, nS), dtype=bool)
    armed = np.full(nR, np.nan)
    use_train = memorized_acc is not None and isinstance(train_metric, str) and train_metric in ds.data_vars
    group = _group_layers(ds)
    has_traj = "delta_dot" in ds.data_vars or "sketch" in ds.data_vars
    sel = src = None
    if has_traj and "param" in ds.dims:
        try:
            sel = T.select_params(ds, params, fn, name="params")
            src = T.resolve_source(ds, exact, window - 1, fn, f"window={window}")
        except SedvizError:
            if params == "attn":  # the default: a model without attention has no Gram signals
                sel = None
            else:
                raise
    for ir, run in enumerate(runs):
        if "fro_norm" in ds.data_vars:
            fro = np.asarray(ds["fro_norm"].sel(run=run).transpose("step", "layer").values, dtype=np.float64)
            ok = np.isfinite(fro).any(axis=1)
            out["weight_norm"][ir, ok] = np.sqrt(np.nansum(fro[ok] ** 2, axis=1))
        if "eff_rank" in ds.data_vars and group:
            er = np.asarray(ds["eff_rank"].sel(run=run, layer=group).transpose("step", "layer").values, dtype=np.float64)
            ok = np.isfinite(er).any(axis=1)
            out["eff_rank"][ir, ok] = np.nanmean(er[ok], axis=1)
        out["val_loss"][ir] = _series(ds, loss_metric, run)
        out["val_acc"][ir] = _series(ds, metric, run)
        out["train_acc"][ir] = _series(ds, train_metric, run)
        present = np.flatnonzero(np.isfinite(out["val_acc"][ir]) | np.isfinite(out["weight_norm"][ir]))
        if use_train:
            a = grok_step(steps, out["train_acc"][ir], memorized_acc)
        else:
            a = float(steps[present[0]]) if present.size else np.nan
        armed[ir] = a
        if sel is None:
            continue
        up = T.run_updates(ds, run, sel, src, lag=window - 1 if src == "delta_dot" else None)
        G = T.window_grams(up.band_to(window - 1), window)
        if G.shape[0] == 0:
            continue
        s = np.sqrt(T.gram_eigvals(G))
        pos = T.step_positions(steps, up.steps[window - 1:])
        norms = np.sqrt(np.clip(np.diagonal(G, axis1=1, axis2=2), 0, None))
        norms = np.concatenate([norms[0], norms[1:, -1]])  # ||d_j|| for every update j
        sp = spikes(norms, float(spike_factor), 2 * window) if spike_factor else np.zeros(up.n, dtype=bool)
        spike[ir, T.step_positions(steps, up.steps)] = sp
        clean = ~np.lib.stride_tricks.sliding_window_view(sp, window).any(axis=1)
        arm_at = a if use_train else -np.inf  # NaN (never memorized): no window is usable
        clean &= up.steps[: up.n - window + 1] > arm_at
        usable[ir, pos] = clean
        s2, s3 = s[:, 1], s[:, 2]
        out["g23"][ir, pos] = s2**2 - s3**2
        out["log_s2_s3"][ir, pos] = np.log(np.maximum(s2, T.GAP_FLOOR) / np.maximum(s3, T.GAP_FLOOR))
    res = xr.Dataset(coords={"run": runs, "step": steps})
    for k, v in out.items():
        res[k] = (("run", "step"), v)
    res["spike"] = (("run", "step"), spike)
    res["usable"] = (("run", "step"), usable)
    res["armed_step"] = ("run", armed, {"long_name": f"first step with {train_metric} >= {memorized_acc}"})
    res.attrs.update(options=T.options_attr(params=params, window=window, spike_factor=spike_factor,
                                            memorized_acc=memorized_acc if use_train else None, exact=exact,
                                            metric=metric, train_metric=train_metric, loss_metric=loss_metric,
                                            source=src),
                     params=json.dumps(sel or []))
    return res


def _status(grok: float, fire: float) -> str:
    if np.isfinite(fire):
        if not np.isfinite(grok):
            return "fired_no_grok"
        return "fired_before_grok" if fire < grok else "fired_after_grok"
    return "not_fired" if np.isfinite(grok) else "silent_no_grok"


def detect(sig: xr.Dataset, *, detector=DEFAULT_DETECTOR, threshold_acc: float = 0.9, norm_drop: float = 0.02,
           erank_drop: float = 0.15, val_loss_frac: float = 0.7, persist: int | None = None, slope_span: int = 5,
           slope_threshold: float = 0.1, g23_drop: float = 0.5, g23_rise: float = 1.25, baseline: int = 10) -> xr.Dataset:
    """Apply detectors to the signals of :func:`signals` (or of the shipped suite, :func:`sedviz.data.load_suite`).

    Returns grok_step, armed_step (run); fire_step, lead, lead_frac, fired, status (run, detector);
    signal, rule_holds (run, detector, step); level (run, detector). See :func:`early_warning`.
    """
    fn = "early_warning"
    dets = _detectors(detector, fn)
    persist, slope_span, baseline = _check_opts(fn, threshold_acc, norm_drop, erank_drop, val_loss_frac, persist,
                                                slope_span, slope_threshold, g23_drop, g23_rise, baseline)
    runs = [str(r) for r in sig["run"].values]
    steps = sig["step"].values
    nR, nD, nS = len(runs), len(dets), len(steps)
    signal = np.full((nR, nD, nS), np.nan)
    holds = np.zeros((nR, nD, nS), dtype=bool)
    fire = np.full((nR, nD), np.nan)
    level = np.full((nR, nD), np.nan)
    grok = np.full(nR, np.nan)
    for ir, run in enumerate(runs):
        one = sig.sel(run=run)
        grok[ir] = grok_step(steps, one["val_acc"].values, threshold_acc)
        arm = float(one["armed_step"])
        for idet, det in enumerate(dets):
            if det in ("slope", "g23"):
                g = np.asarray(one["g23"].values, dtype=np.float64)
                pos = np.flatnonzero(np.isfinite(g))
                if pos.size == 0:
                    continue
                clean = np.asarray(one["usable"].values, dtype=bool)[pos]
                if det == "slope":
                    lr23 = np.asarray(one["log_s2_s3"].values, dtype=np.float64)[pos]
                    sg, cond, lev = _slope_rule(lr23, clean, span=slope_span, threshold=float(slope_threshold),
                                                baseline=baseline)
                else:
                    sg = g[pos]
                    cond, lev = _g23_rule(sg, clean, drop=float(g23_drop), rise=float(g23_rise), baseline=baseline)
                signal[ir, idet, pos], holds[ir, idet, pos], level[ir, idet] = sg, cond, lev
                i = _first_persistent(cond, persist or PERSIST[det])
                if i >= 0:
                    fire[ir, idet] = steps[pos[i]]
                continue
            rows = {}
            for part in det.split("_") if det == "wnorm_erank" else [det]:
                name, thr = {"wnorm": ("weight_norm", norm_drop), "erank": ("eff_rank", erank_drop),
                             "val_loss": ("val_loss", 1.0 - val_loss_frac)}[part]
                v = np.asarray(one[name].values, dtype=np.float64)
                pos = np.flatnonzero(np.isfinite(v))
                start = int(np.searchsorted(steps[pos], arm)) if np.isfinite(arm) else len(pos)
                drop = np.full(nS, np.nan)
                drop[pos] = _running_drop(v[pos], start)
                rows[part] = (drop, thr)
            if det == "wnorm_erank":
                (d1, t1), (d2, t2) = rows["wnorm"], rows["erank"]
                sg, lev = np.fmin(d1 / t1, d2 / t2), 1.0  # both hold <=> min of drop / threshold >= 1
            else:
                sg, lev = next(iter(rows.values()))
            pos = np.flatnonzero(np.isfinite(sg))
            cond = sg[pos] >= lev
            signal[ir, idet], level[ir, idet] = sg, lev
            holds[ir, idet, pos] = cond
            i = _first_persistent(cond, persist or PERSIST[det])
            if i >= 0:
                fire[ir, idet] = steps[pos[i]]
    lead = grok[:, None] - fire
    status = np.array([[_status(grok[r], fire[r, d]) for d in range(nD)] for r in range(nR)], dtype=str)
    out = xr.Dataset(coords={"run": runs, "detector": np.array(dets, dtype=str), "step": steps})
    out["grok_step"] = ("run", grok, {"long_name": f"first step with val_acc >= {threshold_acc}"})
    out["armed_step"] = sig["armed_step"]
    out["fire_step"] = (("run", "detector"), fire, {"long_name": "last of the first `persist` consecutive steps where the detector's rule held"})
    out["lead"] = (("run", "detector"), lead, {"long_name": "grok_step - fire_step", "units": "steps"})
    out["lead_frac"] = (("run", "detector"), lead / grok[:, None], {"long_name": "lead / grok_step", "units": "1"})
    out["fired"] = (("run", "detector"), np.isfinite(fire))
    out["status"] = (("run", "detector"), status, {"long_name": "outcome, one of " + ", ".join(STATUS)})
    out["signal"] = (("run", "detector", "step"), signal, {
        "long_name": "wnorm/erank: fractional drop below the running maximum since memorization; val_loss: the "
                     "same of val_loss; wnorm_erank: min of both drops / their thresholds; slope: d log(s2/s3) "
                     "per checkpoint; g23: s2^2 - s3^2"})
    out["rule_holds"] = (("run", "detector", "step"), holds)
    out["level"] = (("run", "detector"), level, {
        "long_name": "the signal's threshold (slope: in force; g23: baseline maximum of g23)"})
    out.attrs["detect_options"] = T.options_attr(
        detector=dets, threshold_acc=threshold_acc, norm_drop=norm_drop, erank_drop=erank_drop,
        val_loss_frac=val_loss_frac, persist=persist, slope_span=slope_span, slope_threshold=slope_threshold,
        g23_drop=g23_drop, g23_rise=g23_rise, baseline=baseline)
    return out


def _check_opts(fn, threshold_acc, norm_drop, erank_drop, val_loss_frac, persist, slope_span, slope_threshold,
                g23_drop, g23_rise, baseline):
    persist = None if persist is None else T.check_window(persist, "persist", fn, minimum=1)
    slope_span = T.check_window(slope_span, "slope_span", fn, minimum=2)
    baseline = T.check_window(baseline, "baseline", fn, minimum=1)
    for name, val, lo, hi in (("threshold_acc", threshold_acc, 0.0, 1.0), ("g23_drop", g23_drop, 0.0, 1.0),
                              ("norm_drop", norm_drop, 0.0, 1.0), ("erank_drop", erank_drop, 0.0, 1.0),
                              ("val_loss_frac", val_loss_frac, 0.0, 1.0)):
        if isinstance(val, bool) or not isinstance(val, (int, float)) or not lo < val <= hi:
            raise SedvizError(f"{fn}({name}={val!r}): expected a number in ({lo}, {hi}].")
    if isinstance(g23_rise, bool) or not isinstance(g23_rise, (int, float)) or g23_rise < 1:
        raise SedvizError(f"{fn}(g23_rise={g23_rise!r}): expected a number >= 1, e.g. 1.25.")
    if isinstance(slope_threshold, bool) or not isinstance(slope_threshold, (int, float)):
        raise SedvizError(f"{fn}(slope_threshold={slope_threshold!r}): expected a number (log-ratio per checkpoint).")
    return persist, slope_span, baseline


def _detectors(detector, fn):
    if detector == "all":
        return list(DETECTORS)
    dets = [detector] if isinstance(detector, str) else list(detector) if detector is not None else []
    if not dets or any(d not in DETECTORS for d in dets) or len(set(dets)) != len(dets):
        raise SedvizError(f"{fn}(detector={detector!r}): expected \"all\" or one or more of {DETECTORS}.")
    return dets


def describe(ew: xr.Dataset, run: str, detector: str | None = None) -> str:
    """One sentence saying what the detector did on ``run``: fired before the grok (with the lead),
    fired after it, did not fire, or fired on a run that never grokked."""
    det = str(detector if detector is not None else ew["detector"].values[0])
    st = str(ew["status"].sel(run=run, detector=det).values)
    fire = float(ew["fire_step"].sel(run=run, detector=det))
    grok = float(ew["grok_step"].sel(run=run))
    if st == "fired_before_grok":
        return (f"{run}: {det} fired at step {fire:.0f}, before the grok at step {grok:.0f} "
                f"(lead {grok - fire:.0f} steps, {100 * (grok - fire) / grok:.0f}% of the grok step).")
    if st == "fired_after_grok":
        return (f"{run}: {det} fired at step {fire:.0f}, after the grok at step {grok:.0f}: "
                f"a late warning ({fire - grok:.0f} steps late), of no use as an early warning.")
    if st == "not_fired":
        return f"{run}: {det} did not fire, although the run grokked at step {grok:.0f} (a miss)."
    if st == "fired_no_grok":
        return f"{run}: {det} fired at step {fire:.0f} on a run that never grokked (a false alarm)."
    return f"{run}: {det} did not fire, and the run never grokked (correctly silent)."


def early_warning(ds: xr.Dataset, *, threshold_acc: float = 0.9, detector=DEFAULT_DETECTOR, window: int = 10,
                  norm_drop: float = 0.02, erank_drop: float = 0.15, val_loss_frac: float = 0.7,
                  slope_span: int = 5, slope_threshold: float = 0.1, g23_drop: float = 0.5,
                  g23_rise: float = 1.25, baseline: int = 10, persist: int | None = None, spike_factor=2.0,
                  memorized_acc: float | None = 0.99, params="attn", exact=None, metric: str = "val_acc",
                  train_metric: str = "train_acc", loss_metric: str = "val_loss", layers=None) -> xr.Dataset:
    """Grok step, detector fire steps, lead times and each run's outcome (docs/methods.md#early-warning).

    The grok step is the first step where ``metric`` (validation accuracy) >= ``threshold_acc``.
    Every detector (module docstring, :data:`DETECTORS`) is armed at the memorization step, the
    first checkpoint where ``train_metric`` >= ``memorized_acc``: before it, weights grow and
    change shape fast in every run, grokking or not. A run that never fits its training set is
    never armed; without a ``train_metric`` variable (or with ``memorized_acc=None``) the rules are
    armed from the first checkpoint. A detector fires at the first checkpoint where its rule has
    held for ``persist`` consecutive checkpoints (the step of the last of them);
    lead = grok step - fire step (steps; positive: the warning came first).

    Defaults: ``detector="wnorm"``, ``norm_drop`` 0.02, ``erank_drop`` 0.15, ``val_loss_frac``
    0.7 and ``persist`` 1 for those detectors were chosen on the tuning half of the grokking suite
    only (:data:`PERSIST`; docs/suite.md has the grid and the held-out table: hit rate, false
    alarms, lead median and spread). On that suite "wnorm" fires a few checkpoints after
    memorization in runs with weight decay and never in their weight-decay-0 controls: it says
    that weight decay is shrinking a memorizing network, the route by which these runs went on to
    generalize, not when the jump will come (it also fired on the one weight-decay run that had
    not grokked by the end of its budget). Treat leads as measurements on those runs, not a promise.

    "slope" and "g23" read the window Gram of ``window`` consecutive updates of the ``params``
    group (attention by default; docs/methods.md#spectral-edge). Spike guard: an update whose norm exceeds
    ``spike_factor`` x the median norm of the 2W updates before it marks a loss spike (Adam's
    "slingshots"); windows that hold one are not usable by these two rules: no rule holds there,
    they do not enter the baseline, the slope or the running maximum, and they break a
    ``persist`` streak. ``spike_factor=None`` turns the guard off. "slope" holds where the slope
    of log(s_2/s_3) over the trailing ``slope_span`` usable windows exceeds max(``slope_threshold``,
    its largest value over the first ``baseline`` slopes); "g23" holds where s_2^2 - s_3^2 has
    fallen by more than ``g23_drop`` below its running maximum after the baseline, that maximum
    having risen above ``g23_rise`` x the baseline maximum (the running maximum restarts after a spike).

    Parameters
    ----------
    ds : xarray.Dataset
        A sedviz Dataset with ``fro_norm``/``eff_rank``, the metric logs and, for "slope"/"g23",
        ``delta_dot`` or ``sketch``.
    detector : str or sequence of str
        Any of :data:`DETECTORS`, or "all". Default: :data:`DEFAULT_DETECTOR`.
    norm_drop, erank_drop : float in (0, 1]
        Fractional drop below the running maximum since memorization that "wnorm"/"erank" need.
    val_loss_frac : float in (0, 1]
        "val_loss" holds where val_loss <= this x its running maximum since memorization.
    persist : int >= 1 or None
        Consecutive checkpoints a rule must hold; None: each detector's default (:data:`PERSIST`).
    window, slope_span, slope_threshold, g23_drop, g23_rise, baseline, spike_factor : the Gram rules (above).
    memorized_acc : float in (0, 1] or None
        Training accuracy that arms the rules (above); None arms them from the start.
    params, exact : see :func:`sedviz.analysis.edge.edge` (default: the attention parameters).
        ``layers=`` is the deprecated name of ``params=``.
    metric, train_metric, loss_metric : str
        The (run, step) validation accuracy, training accuracy and validation loss variables.

    Returns
    -------
    xarray.Dataset with ``grok_step``, ``armed_step`` (run); ``fire_step``, ``lead``, ``lead_frac``
    (lead / grok step), ``fired`` (bool), ``status`` (str, one of :data:`STATUS`), ``level``
    (run, detector); ``signal``, ``rule_holds`` (run, detector, step); ``s2_s3``, ``spike``,
    ``usable`` (run, step) of the Gram rules. :func:`describe` turns a status into a sentence.
    """
    fn = "early_warning"
    params = _deprecated_layers(fn, params, layers)
    ds = T.check_dataset(ds, fn)
    dets = _detectors(detector, fn)
    window = T.check_window(window, "window", fn, minimum=3)
    if spike_factor is not None and (isinstance(spike_factor, bool) or not isinstance(spike_factor, (int, float))
                                     or spike_factor <= 1):
        raise SedvizError(f"{fn}(spike_factor={spike_factor!r}): expected a number > 1 (e.g. 2.0) or None.")
    if not isinstance(metric, str) or metric not in ds.data_vars or set(ds[metric].dims) != {"run", "step"}:
        have = [v for v in ds.data_vars if set(ds[v].dims) == {"run", "step"}]
        raise SedvizError(
            f"{fn}(metric={metric!r}): the Dataset needs this (run, step) accuracy variable to find the "
            f"grok step; (run, step) variables present: {have}."
        )
    if memorized_acc is not None and (isinstance(memorized_acc, bool) or not isinstance(memorized_acc, (int, float))
                                      or not 0 < memorized_acc <= 1):
        raise SedvizError(f"{fn}(memorized_acc={memorized_acc!r}): expected a number in (0, 1] (e.g. 0.99) or None.")
    T.check_exact(exact, fn)
    _check_opts(fn, threshold_acc, norm_drop, erank_drop, val_loss_frac, persist, slope_span, slope_threshold,
                g23_drop, g23_rise, baseline)
    need_gram = any(d in ("slope", "g23") for d in dets)
    if need_gram:
        T.select_params(ds, params, fn, name="params")  # a clear error for a group that is not there
        T.resolve_source(ds, exact, window - 1, fn, f"window={window}")
    for d in dets:
        need = {"wnorm": "fro_norm", "erank": "eff_rank", "val_loss": loss_metric, "wnorm_erank": "fro_norm"}.get(d)
        if need and need not in ds.data_vars:
            raise SedvizError(f"{fn}(detector={d!r}): needs the Dataset variable {need!r}, which is missing; "
                              f"choose another detector (one of {DETECTORS}).")
    sig = signals(ds, params=params, window=window, spike_factor=spike_factor, memorized_acc=memorized_acc,
                  exact=exact, metric=metric, train_metric=train_metric, loss_metric=loss_metric)
    out = detect(sig, detector=dets, threshold_acc=threshold_acc, norm_drop=norm_drop, erank_drop=erank_drop,
                 val_loss_frac=val_loss_frac, persist=persist, slope_span=slope_span,
                 slope_threshold=slope_threshold, g23_drop=g23_drop, g23_rise=g23_rise, baseline=baseline)
    out["s2_s3"] = (("run", "step"), np.exp(sig["log_s2_s3"].values),
                    {"long_name": "s2 / s3 of the update window", "units": "1"})
    out["spike"] = sig["spike"].assign_attrs(long_name="update flagged by the spike guard")
    out["usable"] = sig["usable"].assign_attrs(long_name="window free of spikes, used by the Gram rules")
    opts = json.loads(sig.attrs["options"]) | json.loads(out.attrs.pop("detect_options"))
    out.attrs.update(method="docs/methods.md#early-warning; weight norm and effective rank (Yunis et al. 2024); spectral edge "
                            "(Xu, arXiv 2603.15678)",
                     options=json.dumps(opts), params=sig.attrs["params"])
    return out
