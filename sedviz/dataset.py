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


M = "docs/methods.md"
# CF-style attrs of every variable and coordinate the pipeline writes (docs/schema.md): long_name,
# units where the quantity has them ("1": dimensionless; singular values and norms are in the
# units of the weights, which sedviz does not know, so they have none), and a one-line description.
VARIABLE_ATTRS: dict[str, dict[str, str]] = {
    "sv": {"long_name": "singular value", "description": "singular values of the layer's weight matrix, descending; "
           f"NaN past min(rows, cols) ({M}#singular-values)"},
    "eff_rank": {"long_name": "normalized effective rank", "units": "1",
                 "description": "exp of the entropy of the normalized singular values, over min(rows, cols); "
                 f"1 for a flat spectrum, near 0 for rank one ({M}#effective-rank)"},
    "stable_rank": {"long_name": "stable rank", "units": "1",
                    "description": f"sum of squared singular values over the largest squared ({M}#norms-and-stable-rank)"},
    "spectral_norm": {"long_name": "spectral norm", "description": "largest singular value, in the units of the weights "
                      f"({M}#norms-and-stable-rank)"},
    "fro_norm": {"long_name": "Frobenius norm", "description": "square root of the sum of squared singular values "
                 f"({M}#norms-and-stable-rank)"},
    "sva": {"long_name": "agreement with the final checkpoint", "units": "1",
            "description": "|<u_i, u_i final>| |<v_i, v_i final>| for each of the top-k singular directions, in [0, 1] "
            f"({M}#agreement-with-the-final-checkpoint)"},
    "sva_score": {"long_name": "agreement score", "units": "1",
                  "description": f"mean of the first 10 entries of sva ({M}#agreement-with-the-final-checkpoint)"},
    "align": {"long_name": "alignment of consecutive layers", "units": "1",
              "description": "diagonal of the alignment matrix of a consecutive pair of layers, in [0, 1] "
              f"({M}#alignment-of-consecutive-layers)"},
    "align_score": {"long_name": "alignment score", "units": "1",
                    "description": f"mean of the first 10 entries of align ({M}#alignment-of-consecutive-layers)"},
    "sketch": {"long_name": "JL sketch of the parameters",
               "description": f"seeded sparse random projection of each parameter at this checkpoint ({M}#spectral-edge)"},
    "delta_dot": {"long_name": "dot product of updates",
                  "description": "<d_i, d_(i-lag)> per parameter, d_i the change since the previous saved checkpoint; "
                  f"NaN where undefined ({M}#spectral-edge)"},
    **{f"grad_{name}": {**attrs, "long_name": f"gradient {attrs['long_name']}",
                        "description": "of the gradient at the recorded step, not the weights (sedviz.Recorder(grads=True)): "
                        + attrs["description"]}
       for name, attrs in (("sv", {"long_name": "singular value", "description": "singular values, descending"}),
                           ("eff_rank", {"long_name": "normalized effective rank", "units": "1",
                                         "description": f"as eff_rank ({M}#effective-rank)"}),
                           ("stable_rank", {"long_name": "stable rank", "units": "1",
                                            "description": f"as stable_rank ({M}#norms-and-stable-rank)"}),
                           ("spectral_norm", {"long_name": "spectral norm", "description": "largest singular value"}),
                           ("fro_norm", {"long_name": "Frobenius norm", "description": "root of the sum of squares"}))},
    "train_loss": {"long_name": "training loss", "description": "from the run's metric log, at the checkpoint steps"},
    "val_loss": {"long_name": "validation loss", "description": "from the run's metric log, at the checkpoint steps"},
    "train_acc": {"long_name": "training accuracy", "units": "1",
                  "description": "from the run's metric log, at the checkpoint steps"},
    "val_acc": {"long_name": "validation accuracy", "units": "1",
                "description": "from the run's metric log, at the checkpoint steps"},
}
COORD_ATTRS: dict[str, dict[str, str]] = {
    "run": {"long_name": "run", "description": "run name, by default the name of the run's folder"},
    "step": {"long_name": "optimizer step", "description": "step the checkpoint was saved at; the union over runs"},
    "layer": {"long_name": "layer", "description": "parameter name of a weight matrix, in forward order"},
    "layer_kind": {"long_name": "layer kind", "description": "role of the layer: embed, attn_qkv, mlp_in, conv, ..."},
    "depth": {"long_name": "block index", "description": "index of the block the layer belongs to, -1 when unknown"},
    "rows": {"long_name": "rows", "description": "output size of the matrix as the layer acts"},
    "cols": {"long_name": "columns", "description": "input size of the matrix as the layer acts"},
    "rank": {"long_name": "singular value index", "description": "0-based position in the descending spectrum"},
    "pair": {"long_name": "layer pair", "description": "consecutive pair of layers, 'src -> dst'"},
    "pair_src": {"long_name": "source layer", "description": "layer whose output feeds the pair's destination"},
    "pair_dst": {"long_name": "destination layer", "description": "layer that reads the source's output"},
    "pair_kind": {"long_name": "pair kind", "description": "kinds of the two layers, or qk / vo for attention heads"},
    "param": {"long_name": "parameter", "description": "every floating state entry of the model, matrices and vectors"},
    "param_kind": {"long_name": "parameter kind", "description": "layer kind of a matrix, or bias, norm, vector"},
    "param_size": {"long_name": "parameter size", "units": "1", "description": "number of elements"},
    "proj": {"long_name": "sketch coordinate", "description": "index of the random projection"},
    "lag": {"long_name": "lag", "description": "lag between updates, in saved checkpoints of the run"},
}
#: Data variables in this order, first to last; others (more metric columns) follow by name.
VARIABLE_ORDER = ("sv", "eff_rank", "stable_rank", "spectral_norm", "fro_norm", "sva", "sva_score", "align",
                  "align_score", "sketch", "delta_dot", "grad_sv", "grad_eff_rank", "grad_stable_rank",
                  "grad_spectral_norm", "grad_fro_norm", "train_loss", "val_loss", "train_acc", "val_acc")


def describe(ds: xr.Dataset) -> xr.Dataset:
    """The Dataset as sedviz hands it out: variables in :data:`VARIABLE_ORDER` (``sv`` first), CF
    attrs on every variable and coordinate it knows (others from the metric logs get a long_name
    and a description), and string coordinates as plain numpy unicode (``<U``), whatever the store
    gave back (object, numpy's StringDType). Lazy variables stay lazy."""
    known = [v for v in VARIABLE_ORDER if v in ds.data_vars]
    rest = sorted(str(v) for v in ds.data_vars if v not in VARIABLE_ORDER)
    out = ds[known + rest] if list(ds.data_vars) != known + rest else ds
    strings = {}
    for name, coord in out.coords.items():
        if coord.dtype.kind in "OT" or (coord.dtype.kind == "U" and coord.dtype != np.dtype(str)) or \
                type(coord.dtype).__name__ == "StringDType":
            values = np.asarray([str(v) for v in coord.values.ravel().tolist()], dtype=str).reshape(coord.shape)
            strings[name] = (coord.dims, values)
    if strings:
        index = {k: v for k, v in strings.items() if k in out.dims}
        if index:
            out = out.assign_coords({k: v[1] for k, v in index.items()})
        other = {k: v for k, v in strings.items() if k not in out.dims}
        if other:
            out = out.assign_coords(other)
    for name in out.variables:
        table = COORD_ATTRS if name in out.coords else VARIABLE_ATTRS
        attrs = table.get(str(name))
        if attrs is None and name in out.data_vars and set(out[name].dims) == {"run", "step"}:
            attrs = {"long_name": str(name).replace("_", " "), "description": "from the run's metric log, at the "
                     "checkpoint steps"}
        if attrs:
            out[name].attrs.update(attrs)
    return out


@dataclass(frozen=True)
class ParamInfo:
    """One state entry of the trajectory (docs/methods.md#spectral-edge): every float parameter, matrices and vectors."""

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
    return describe(out)


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
