"""A short text summary of a Dataset: what `sedviz info` and `sedviz demo` print."""
from __future__ import annotations

import json

import numpy as np
import xarray as xr


def summary(ds: xr.Dataset) -> str:
    """Runs, steps, layers and variables of a sedviz Dataset, plus each run's headline numbers."""
    lines = [f"sedviz store (schema {ds.attrs.get('schema_version')}, sedviz {ds.attrs.get('sedviz_version')}, "
             f"device {ds.attrs.get('device')}, dtype {ds.attrs.get('dtype')})"]
    sources = json.loads(ds.attrs.get("sources", "{}") or "{}")
    lines.append(f"runs: {ds.sizes['run']}   steps: {ds.sizes['step']}   layers: {ds.sizes.get('layer', 0)}"
                 f"   pairs: {ds.sizes.get('pair', 0)}   params: {ds.sizes.get('param', 0)}")
    lines.append("variables: " + ", ".join(sorted(ds.data_vars)))
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
    return "\n".join(lines)
