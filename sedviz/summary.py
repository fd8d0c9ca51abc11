"""A short text summary of a Dataset: what `sedviz info`, `sedviz compute` and `sedviz demo` print.

:func:`summary` lists what is in the Dataset; with ``events=True`` it ends with what happened in
each run (:func:`what_happened`): the grok step, the drop of the effective rank, and which early-warning
detectors fired and how early, read from whatever ``sedviz.analysis.early_warning`` returns.
"""
from __future__ import annotations

import json

import numpy as np
import xarray as xr


def summary(ds: xr.Dataset, *, events: bool = False) -> str:
    """Runs, steps, layers and variables of a sedviz Dataset, plus each run's headline numbers;
    with ``events``, what happened in each run (:func:`what_happened`; it runs the early-warning analysis,
    which imports the analyses: seconds, not the instant of the rest)."""
    lines = [f"sedviz store (schema {ds.attrs.get('schema_version')}, sedviz {ds.attrs.get('sedviz_version')}, "
             f"device {ds.attrs.get('device')}, dtype {ds.attrs.get('dtype')})"]
    sources = json.loads(ds.attrs.get("sources", "{}") or "{}")
    lines.append(f"runs: {ds.sizes['run']}   steps: {ds.sizes['step']}   layers: {ds.sizes.get('layer', 0)}"
                 f"   pairs: {ds.sizes.get('pair', 0)}   params: {ds.sizes.get('param', 0)}")
    lines.append("variables: " + ", ".join(map(str, ds.data_vars)))
    for run in ds.run.values.tolist():
        one = ds.sel(run=run)
        sv = one["sv"]
        if sv.sizes.get("layer", 0) == 0:
            lines.append(f"\n[{run}] no weight matrices (only 1-D parameters): no spectra  ({sources.get(run, '')})")
            continue
        have = ~np.isnan(sv).all(("layer", "rank"))
        steps = one.step.values[have.values]
        if len(steps) == 0:
            lines.append(f"\n[{run}] every value is NaN (a diverged run, or every layer skipped)  ({sources.get(run, '')})")
            continue
        lines.append(f"\n[{run}] {len(steps)} checkpoints, steps {steps.min()}..{steps.max()}  ({sources.get(run, '')})")
        first, last = int(steps.min()), int(steps.max())
        eff = one["eff_rank"].sel(step=[first, last])
        lines.append(f"  {'layer':<34} {'kind':<9} {'shape':>11} {'eff_rank first -> last':>24} {'spectral_norm last':>19}")
        for layer in ds.layer.values.tolist():
            e0, e1 = eff.sel(layer=layer).values
            if np.isnan(e0) and np.isnan(e1):
                continue
            shape = f"{int(ds.rows.sel(layer=layer))}x{int(ds.cols.sel(layer=layer))}"
            sn = float(one["spectral_norm"].sel(layer=layer, step=last))
            lines.append(f"  {layer:<34} {str(ds.layer_kind.sel(layer=layer).values):<9} {shape:>11} "
                         f"{e0:>10.3f} -> {e1:<10.3f} {sn:>19.3f}")
        for m in ("train_loss", "val_loss", "val_acc"):
            if m in ds:
                v = one[m].sel(step=last).values
                lines.append(f"  {m} at step {last}: {float(v):.4f}")
    if events:
        lines += ["", "what happened:"] + ["  " + line for line in what_happened(ds)]
    return "\n".join(lines)


def what_happened(ds: xr.Dataset, ew: xr.Dataset | None = None) -> list[str]:
    """One line per run: grok step, effective-rank drop, and the early warning.

    ``ew`` is the result of ``sedviz.analysis.early_warning(ds)`` (computed here when None). Only
    its generic variables are read: ``grok_step`` (run), ``fired`` and ``lead`` (run, detector),
    ``fire_step`` when present, so any set of detectors is reported. Where the analysis cannot run
    (no ``val_acc``, no trajectory data) the warning part says why."""
    why = None
    if ew is None:
        try:
            from .analysis import early_warning

            ew = early_warning(ds)
        except Exception as exc:  # noqa: BLE001 - a summary never fails: it says what is missing
            why = " ".join(str(exc).split())[:160]
    out = []
    for run in ds.run.values.tolist():
        parts = [_grok(ds, ew, run), _rank_drop(ds, run)]
        parts.append(_warning(ew, run) if ew is not None else f"early warning not available ({why})")
        out.append(f"{run}: " + "; ".join(p for p in parts if p))
    return out


def _grok(ds, ew, run) -> str:
    if ew is not None and "grok_step" in ew and run in ew.run.values.tolist():
        g = ew["grok_step"].sel(run=run)
        g = g.isel(detector=0) if "detector" in g.dims else g
        threshold = json.loads(ew.attrs.get("options", "{}") or "{}").get("threshold_acc", 0.9)
        g = float(g.values)
        return f"grokked at step {g:g} (val_acc >= {threshold:g})" if np.isfinite(g) else f"did not grok (val_acc < {threshold:g})"
    return ""


def _rank_drop(ds, run) -> str:
    if "eff_rank" not in ds:
        return ""
    mean = ds["eff_rank"].sel(run=run).mean("layer", skipna=True).dropna("step")
    if mean.sizes["step"] < 2:
        return ""
    first, last = float(mean.values[0]), float(mean.values[-1])
    per_layer = ds["eff_rank"].sel(run=run, step=[int(mean.step.values[0]), int(mean.step.values[-1])])
    drop = (per_layer.isel(step=0) - per_layer.isel(step=-1)).fillna(-np.inf)
    worst = str(drop.idxmax("layer").values)
    w0, w1 = (float(v) for v in per_layer.sel(layer=worst).values)
    change = 100 * (last - first) / first if first else float("nan")
    return (f"mean eff_rank {first:.3f} -> {last:.3f} ({change:+.0f}%), largest drop {worst} {w0:.3f} -> {w1:.3f}")


def _warning(ew, run) -> str:
    if "fired" not in ew or "detector" not in ew.dims:
        return ""
    fired = ew["fired"].sel(run=run)
    said = []
    for det in ew.detector.values.tolist():
        if not bool(fired.sel(detector=det)):
            said.append(f"{det} did not fire")
            continue
        at = float(ew["fire_step"].sel(run=run, detector=det)) if "fire_step" in ew else float("nan")
        lead = float(ew["lead"].sel(run=run, detector=det)) if "lead" in ew else float("nan")
        when = f" at step {at:g}" if np.isfinite(at) else ""
        ahead = f", {lead:g} steps before grokking" if np.isfinite(lead) else " (no grokking followed)"
        said.append(f"{det} fired{when}{ahead}")
    return "early warning: " + ", ".join(said)
