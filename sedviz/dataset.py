"""The Dataset schema (docs/schema.md): per-checkpoint records -> per-run Datasets -> one Dataset.

A *record* is what the streaming pass produces for one checkpoint: a dict of numpy arrays.
A *run Dataset* holds one run's records along ``step`` (what a store persists). ``assemble``
joins run Datasets along ``run`` on the union of steps, aligns metric logs and sets the attrs.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd
import xarray as xr

from ._version import __version__
from .errors import StoreError
from .io.metrics import split_summary

SCHEMA_VERSION = 1

# record key -> dims after "step"
RECORD_DIMS = {
    "sv": ("layer", "rank"),
    "eff_rank": ("layer",),
    "stable_rank": ("layer",),
    "spectral_norm": ("layer",),
    "fro_norm": ("layer",),
    "sva": ("layer", "rank"),
    "sva_score": ("layer",),
    "align": ("pair", "rank"),
    "align_score": ("pair",),
    "sketch": ("param", "proj"),
    "delta_dot": ("param", "lag"),
    # gradient spectra, recorded live only (sedviz.Recorder(grads=True) / record_grads)
    "grad_sv": ("layer", "rank"),
    "grad_eff_rank": ("layer",),
    "grad_stable_rank": ("layer",),
    "grad_spectral_norm": ("layer",),
    "grad_fro_norm": ("layer",),
}
SPECTRA = ("sv", "eff_rank", "stable_rank", "spectral_norm", "fro_norm")


@dataclass(frozen=True)
class ParamInfo:
    """One state entry of the trajectory (METHODS 7): every float parameter, matrices and vectors."""

    name: str
    size: int
    kind: str


def run_dataset(records: list[dict], *, layers, params, pairs, max_rank: int) -> xr.Dataset:
    """Stack per-checkpoint records of one run into a Dataset with leading dim ``step``."""
    steps = np.array([r["step"] for r in records], dtype=np.int64)
    data_vars = {}
    for key, dims in RECORD_DIMS.items():
        if key in records[0]:
            data_vars[key] = (("step",) + dims, np.stack([r[key] for r in records]))
    coords = {
        "step": steps,
        "layer": [li.name for li in layers],
        "layer_kind": ("layer", [li.kind for li in layers]),
        "depth": ("layer", np.array([li.depth for li in layers], dtype=np.int64)),
        "rows": ("layer", np.array([li.rows for li in layers], dtype=np.int64)),
        "cols": ("layer", np.array([li.cols for li in layers], dtype=np.int64)),
        "rank": np.arange(max_rank, dtype=np.int64),
    }
    if "align" in data_vars:
        coords.update(
            pair=[p.name for p in pairs],
            pair_src=("pair", [p.src for p in pairs]),
            pair_dst=("pair", [p.dst for p in pairs]),
            pair_kind=("pair", [p.kind for p in pairs]),
        )
    if "sketch" in data_vars or "delta_dot" in data_vars:
        coords.update(
            param=[p.name for p in params],
            param_kind=("param", [p.kind for p in params]),
            param_size=("param", np.array([p.size for p in params], dtype=np.int64)),
        )
    if "sketch" in data_vars:
        coords["proj"] = np.arange(data_vars["sketch"][1].shape[-1], dtype=np.int64)
    if "delta_dot" in data_vars:
        coords["lag"] = np.arange(data_vars["delta_dot"][1].shape[-1], dtype=np.int64)
    # "rank" may be longer than k for sva/align: they are padded to max_rank by the pass.
    return xr.Dataset(data_vars, coords=coords)


def align_metrics(metrics: pd.DataFrame, steps: np.ndarray) -> pd.DataFrame:
    """Each metric column at the checkpoint steps, matched column by column (docs/schema.md).

    A checkpoint at step ``c`` takes, for each column separately, the value logged at the nearest
    step ``s`` with a value in that column, when ``s`` lies within half the gap to the
    neighbouring checkpoint on its side (``c - s <= (c - c_prev) / 2`` before it,
    ``s - c <= (c_next - c) / 2`` after it; the first and last checkpoints use their one gap on
    both sides; a lone checkpoint takes exact steps only). On a tie the later step wins (an eval
    logged just after a save describes the saved weights). So validation logged every 25 steps
    fills the checkpoints saved every 15 that have a validation step within 7.5 steps, whatever
    other columns were logged at other steps. Columns with no value in reach are NaN there.
    """
    steps = np.asarray(steps, dtype=np.int64)
    out = pd.DataFrame(index=pd.Index(steps, name="step"))
    if metrics is None or metrics.empty or len(steps) == 0:
        return out
    ck = np.sort(steps).astype(np.float64)
    gaps = np.diff(ck)
    if len(ck) > 1:
        before = np.concatenate([[gaps[0]], gaps]) / 2
        after = np.concatenate([gaps, [gaps[-1]]]) / 2
    else:
        before = after = np.zeros(1)
    logged = metrics.sort_index()
    index = logged.index.to_numpy(dtype=np.float64)
    for col in logged.columns:
        values = pd.to_numeric(logged[col], errors="coerce").to_numpy(dtype=np.float64)
        have = ~np.isnan(values)
        s, v = index[have], values[have]
        got = np.full(len(ck), np.nan)
        if len(s):
            hi = np.searchsorted(s, ck, side="left")  # first logged step >= c
            lo = hi - 1  # last logged step < c
            for i, c in enumerate(ck):
                best = None
                if hi[i] < len(s) and s[hi[i]] - c <= after[i]:
                    best = hi[i]
                if lo[i] >= 0 and c - s[lo[i]] <= before[i] and (best is None or c - s[lo[i]] < s[best] - c):
                    best = lo[i]
                if best is not None:
                    got[i] = v[best]
        out[col] = pd.Series(got, index=ck.astype(np.int64)).reindex(steps).to_numpy()
    return out


def assemble(
    runs: dict[str, xr.Dataset],
    *,
    metrics: dict[str, pd.DataFrame] | None = None,
    attrs: dict | None = None,
    run_attrs: dict[str, dict] | None = None,
) -> xr.Dataset:
    """Join run Datasets along ``run`` on the union of steps (NaN where a run has no checkpoint)."""
    if not runs:
        raise StoreError("the store holds no computed checkpoints yet; run sedviz.compute(...) on it first")
    names = list(runs)
    steps = np.unique(np.concatenate([runs[n].step.values for n in names]))
    layer_coords = _union_coords(runs, "layer", ("layer_kind", "depth", "rows", "cols"))
    pair_coords = _union_coords(runs, "pair", ("pair_src", "pair_dst", "pair_kind"))
    param_coords = _union_coords(runs, "param", ("param_kind", "param_size"))
    index = {"step": steps}
    for dim, table in (("layer", layer_coords), ("pair", pair_coords), ("param", param_coords)):
        if table is not None:
            index[dim] = table.index.values
    for dim in ("rank", "proj", "lag"):
        sizes = [runs[n].sizes[dim] for n in names if dim in runs[n].dims]
        if sizes:
            index[dim] = np.arange(max(sizes), dtype=np.int64)
    aligned = []
    for n in names:
        ds = runs[n].drop_vars([c for c in runs[n].coords if c not in runs[n].dims])
        ds = ds.reindex({d: v for d, v in index.items() if d in ds.dims}, fill_value=np.nan)
        aligned.append(ds)
    out = xr.concat(aligned, dim=pd.Index(np.array(names, dtype=object), name="run"), join="outer", fill_value=np.nan)
    for dim, table in (("layer", layer_coords), ("pair", pair_coords), ("param", param_coords)):
        if table is not None and dim in out.dims:
            out = out.assign_coords({c: (dim, table[c].values) for c in table.columns})
    summaries: dict[str, dict[str, float]] = {}
    if metrics:
        cols: dict[str, np.ndarray] = {}
        for i, n in enumerate(names):
            df = metrics.get(n)
            if df is None or df.empty:
                continue
            df, summary = split_summary(df)
            if summary:
                summaries[n] = summary
            own = runs[n].step.values
            al = align_metrics(df, own).reindex(steps)
            for c in al.columns:
                arr = cols.setdefault(c, np.full((len(names), len(steps)), np.nan))
                arr[i] = pd.to_numeric(al[c], errors="coerce").to_numpy(dtype=np.float64)
        for c, arr in cols.items():
            if c not in out:
                out[c] = (("run", "step"), arr)
    out.attrs.update(attrs or {})
    out.attrs["schema_version"] = SCHEMA_VERSION
    if run_attrs:
        for key in ("sources", "checkpoints", "sva_reference_step"):
            out.attrs[key] = json.dumps({n: run_attrs.get(n, {}).get(key) for n in names})
    if summaries:
        out.attrs["summary"] = json.dumps(summaries)
    return out


def _union_coords(runs, dim, names) -> pd.DataFrame | None:
    frames = []
    for ds in runs.values():
        if dim in ds.dims:
            frames.append(pd.DataFrame({c: ds[c].values for c in names if c in ds.coords}, index=ds[dim].values))
    if not frames:
        return None
    table = pd.concat(frames)
    return table[~table.index.duplicated(keep="first")]


def check_schema(attrs: dict, where: str) -> None:
    """A store from another schema version must be recomputed: say so clearly."""
    version = attrs.get("schema_version")
    if version != SCHEMA_VERSION:
        raise StoreError(
            f"{where} was written with sedviz schema version {version} (sedviz {attrs.get('sedviz_version', '?')}); "
            f"this sedviz ({__version__}) reads version {SCHEMA_VERSION}. Recompute it: "
            f"sedviz compute RUNS -o NEW_STORE (or delete {where} and run again)."
        )
