"""Persisting computed records: Zarr (default, appendable) or netCDF (one file, rewritten atomically).

Zarr layout (one group per run, so runs with different step grids append independently)::

    store.zarr/                      root attrs: schema_version, sedviz_version, options, device, dtype
      runs/<key>/                    one run's Dataset along ``step`` (one chunk per checkpoint)
      metrics/<key>/                 that run's metric log, as read (all logged steps)
      sedviz_commits/<key>.json      how many steps of runs/<key> are committed, their files, run attrs

A batch of records is appended to the run group first and committed second, by atomically
replacing the commit file (write to a temporary file, then ``os.replace``). A process killed
mid-append leaves extra uncommitted rows that readers ignore and the next writer truncates,
so an interrupted compute always leaves a store that opens and resumes.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from ..dataset import assemble, check_schema
from ..errors import StoreError

FORMATS = ("zarr", "netcdf")


def store_format(path, fmt: str | None = None) -> str:
    """``zarr`` unless the path ends in .nc/.nc4/.netcdf or ``fmt`` says otherwise."""
    if fmt is not None:
        if fmt not in FORMATS:
            raise StoreError(f"store format {fmt!r} is not known; use one of {FORMATS}")
        return fmt
    return "netcdf" if str(path).lower().endswith((".nc", ".nc4", ".netcdf", ".h5")) else "zarr"


def open_store(path, fmt: str | None = None) -> "Store":
    """The store at ``path`` (which may not exist yet)."""
    return ZarrStore(path) if store_format(path, fmt) == "zarr" else NetCDFStore(path)


def _atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    _public_mode(tmp)
    os.replace(tmp, path)


def _public_mode(path) -> None:
    """mkstemp creates files readable by the owner only; give them the usual umask mode."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def _run_key(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name) or "run"


class Store:
    """What the pipeline needs from a store; ``open()`` gives the assembled Dataset."""

    def __init__(self, path):
        self.path = Path(path) if path is not None else None

    # -- reading --------------------------------------------------------------------------------
    def exists(self) -> bool:
        return self.path is not None and self.path.exists()

    def attrs(self) -> dict:
        raise NotImplementedError

    def runs(self) -> dict[str, dict]:
        """run name -> run attrs (source, checkpoints, sva_reference_step, ...)."""
        raise NotImplementedError

    def load_run(self, name: str) -> xr.Dataset | None:
        raise NotImplementedError

    def load_metrics(self, name: str) -> pd.DataFrame | None:
        raise NotImplementedError

    def open(self) -> xr.Dataset:
        if not self.exists():
            raise StoreError(f"{self.path}: no such store; compute one with sedviz.compute(runs, store={str(self.path)!r})")
        attrs = self.attrs()
        check_schema(attrs, str(self.path))
        runs = self.runs()
        data = {}
        for name in runs:
            ds = self.load_run(name)
            if ds is not None and ds.sizes.get("step", 0) > 0:
                data[name] = ds
        if not data:
            raise StoreError(f"{self.path}: the store holds no computed checkpoints yet; run sedviz compute on it again")
        metrics = {n: self.load_metrics(n) for n in data}
        return assemble(data, metrics=metrics, attrs=attrs, run_attrs=runs)

    # -- writing --------------------------------------------------------------------------------
    def init(self, attrs: dict) -> None:
        raise NotImplementedError

    def append(self, name: str, records: xr.Dataset, run_attrs: dict) -> None:
        raise NotImplementedError

    def drop_run(self, name: str) -> None:
        raise NotImplementedError

    def write_metrics(self, name: str, metrics: pd.DataFrame) -> None:
        raise NotImplementedError

    def flush(self) -> None:
        """Make everything appended so far durable (a no-op where appends already are)."""


class ZarrStore(Store):
    def _commit_path(self, name: str) -> Path:
        return self.path / "sedviz_commits" / f"{_run_key(name)}.json"

    def attrs(self) -> dict:
        import zarr

        try:
            return dict(zarr.open_group(str(self.path), mode="r").attrs)
        except Exception as exc:  # zarr raises several types for a folder that is not a group
            raise StoreError(f"{self.path}: not a sedviz Zarr store ({exc}); pass a new path or the right one") from exc

    def init(self, attrs: dict) -> None:
        import zarr

        root = zarr.open_group(str(self.path), mode="a")
        root.attrs.update(attrs)

    def runs(self) -> dict[str, dict]:
        out = {}
        folder = self.path / "sedviz_commits"
        infos = [json.loads(f.read_text()) for f in folder.glob("*.json")] if folder.exists() else []
        # runs keep the order they were first given in
        for info in sorted(infos, key=lambda i: (i.get("order", 0), i["name"])):
            out[info["name"]] = info
        return out

    def _commit(self, name: str) -> dict | None:
        p = self._commit_path(name)
        return json.loads(p.read_text()) if p.exists() else None

    def load_run(self, name: str) -> xr.Dataset | None:
        info = self._commit(name)
        if not info or info["n"] == 0:
            return None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = xr.open_zarr(str(self.path), group=f"runs/{_run_key(name)}", consolidated=False, chunks=None)
            ds = ds.isel(step=slice(0, info["n"])).load()
        ds.close()
        return ds.sortby("step")

    def load_metrics(self, name: str) -> pd.DataFrame | None:
        group = self.path / "metrics" / _run_key(name)
        if not group.exists():
            return None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = xr.open_zarr(str(self.path), group=f"metrics/{_run_key(name)}", consolidated=False, chunks=None).load()
        return ds.to_dataframe()

    def append(self, name: str, records: xr.Dataset, run_attrs: dict) -> None:
        info = self._commit(name) or {"name": name, "n": 0, "checkpoints": {}, "order": len(self.runs())}
        group = f"runs/{_run_key(name)}"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            records = records.chunk({"step": 1})
            for v in records.variables.values():
                v.encoding.clear()
            if info["n"] == 0:
                records.to_zarr(str(self.path), group=group, mode="w", consolidated=False)
            else:
                self._truncate(group, info["n"])
                records.to_zarr(str(self.path), group=group, append_dim="step", consolidated=False)
        merged = {**info.get("checkpoints", {}), **run_attrs.get("checkpoints", {})}
        info.update(run_attrs)
        info["checkpoints"] = merged
        info["n"] = info["n"] + records.sizes["step"]
        _atomic_write_text(self._commit_path(name), json.dumps(info))

    def _truncate(self, group: str, n: int) -> None:
        """Drop rows past the last commit (left by a process killed mid-append)."""
        import zarr

        g = zarr.open_group(str(self.path), path=group, mode="a")
        for _, arr in g.arrays():
            dims = list(getattr(arr.metadata, "dimension_names", None) or arr.attrs.get("_ARRAY_DIMENSIONS", []))
            if "step" in dims and arr.shape[dims.index("step")] > n:
                shape = list(arr.shape)
                shape[dims.index("step")] = n
                arr.resize(tuple(shape))

    def drop_run(self, name: str) -> None:
        p = self._commit_path(name)
        if p.exists():
            p.unlink()
        shutil.rmtree(self.path / "runs" / _run_key(name), ignore_errors=True)

    def write_metrics(self, name: str, metrics: pd.DataFrame) -> None:
        group = f"metrics/{_run_key(name)}"
        shutil.rmtree(self.path / "metrics" / _run_key(name), ignore_errors=True)
        if metrics is None or metrics.empty:
            return
        ds = xr.Dataset.from_dataframe(metrics.astype(np.float64))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds.to_zarr(str(self.path), group=group, mode="w", consolidated=False)


class NetCDFStore(Store):
    """One netCDF file holding the assembled Dataset; rewritten atomically on ``flush``.

    Runs are kept in memory between flushes, so the file is always a complete, valid
    Dataset; the pipeline flushes every few seconds and at the end.
    """

    def __init__(self, path):
        super().__init__(path)
        self._runs: dict[str, xr.Dataset] | None = None
        self._info: dict[str, dict] = {}
        self._metrics: dict[str, pd.DataFrame] = {}
        self._attrs: dict = {}

    def _load(self) -> None:
        if self._runs is not None:
            return
        self._runs = {}
        if not self.exists():
            return
        try:
            ds = xr.load_dataset(self.path, engine="h5netcdf")
        except Exception as exc:
            raise StoreError(f"{self.path}: not a readable netCDF store ({exc}); pass a new path or the right one") from exc
        self._split(ds, json.loads(ds.attrs.get("run_info", "{}")))

    def _split(self, ds: xr.Dataset, info: dict[str, dict]) -> None:
        """Per-run Datasets (own steps only) and metric frames from an assembled Dataset."""
        self._runs, self._metrics = {}, {}
        self._attrs = {k: v for k, v in ds.attrs.items() if k not in ("run_info", "checkpoints", "sources", "sva_reference_step")}
        self._info = info
        metric_vars = [v for v in ds.data_vars if ds[v].dims == ("run", "step")]
        for name in ds.run.values.tolist():
            one = ds.sel(run=name).drop_vars("run")
            have = ~np.isnan(one["sv"]).all([d for d in one["sv"].dims if d != "step"])
            one = one.isel(step=np.flatnonzero(have.values))
            self._runs[name] = one.drop_vars(metric_vars)
            self._metrics[name] = one[metric_vars].to_dataframe()

    def replace(self, ds: xr.Dataset, run_info: dict[str, dict]) -> None:
        """Make the store hold exactly this assembled Dataset (written on ``flush``)."""
        self._split(ds, run_info)

    def attrs(self) -> dict:
        self._load()
        return dict(self._attrs)

    def init(self, attrs: dict) -> None:
        self._load()
        self._attrs.update(attrs)

    def runs(self) -> dict[str, dict]:
        self._load()
        return dict(self._info)

    def load_run(self, name: str) -> xr.Dataset | None:
        self._load()
        return self._runs.get(name)

    def load_metrics(self, name: str) -> pd.DataFrame | None:
        self._load()
        return self._metrics.get(name)

    def append(self, name: str, records: xr.Dataset, run_attrs: dict) -> None:
        self._load()
        old = self._runs.get(name)
        self._runs[name] = records if old is None else xr.concat([old, records], dim="step", join="outer")
        info = self._info.setdefault(name, {"name": name, "checkpoints": {}})
        info.update({k: v for k, v in run_attrs.items() if k != "checkpoints"})
        info["checkpoints"] = {**info.get("checkpoints", {}), **run_attrs.get("checkpoints", {})}

    def drop_run(self, name: str) -> None:
        self._load()
        self._runs.pop(name, None)
        self._info.pop(name, None)

    def write_metrics(self, name: str, metrics: pd.DataFrame) -> None:
        self._load()
        self._metrics[name] = metrics

    def flush(self) -> None:
        self._load()
        if self.path is None:  # in-memory store (compute without a store)
            return
        runs = {n: ds for n, ds in self._runs.items() if ds.sizes.get("step", 0)}
        if not runs:
            return
        ds = assemble(runs, metrics=self._metrics, attrs=self._attrs, run_attrs=self._info)
        ds.attrs["run_info"] = json.dumps(self._info)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".tmp-", suffix=".nc")
        os.close(fd)
        try:
            enc = {v: {"zlib": True, "complevel": 4} for v in ds.data_vars if ds[v].dtype.kind == "f"}
            ds.to_netcdf(tmp, engine="h5netcdf", encoding=enc)
            _public_mode(tmp)
            os.replace(tmp, self.path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
