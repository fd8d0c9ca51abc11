"""Persisting computed records: Zarr (default, appendable) or netCDF (one file, rewritten atomically).

What a store guarantees
-----------------------
- **Commits.** Every state on disk is the last committed state, or is recovered to it by the next
  writer. Readers see only committed data and never take the lock.
- **One writer at a time.** A writer holds ``sedviz.lock`` (Zarr: inside the store; netCDF: the
  hidden file ``.<name>.sedviz-lock`` beside it) with an exclusive ``flock``; the file names its
  holder (pid, host, start time, command). A second writer gets :class:`StoreLockedError` naming
  the holder. The kernel drops the lock when its process dies, so the lock of a killed writer is
  taken over (with a warning) by the next one.
- **Confined names.** A run's files are named by :func:`run_key` (the name with unsafe characters
  replaced, plus a hash of the true name), so ``..``, ``.``, ``a/b`` or ``run_α``/``run_β`` never
  leave the store or collide; the true name lives in the commit file. Nothing outside the store is
  ever deleted (netCDF: only its own ``.<name>.sedviz-tmp-*`` files beside it).
- **Replace beside, swap at the end.** Rows are appended to a run in place (rows past the commit
  are ignored by readers and dropped by the next append). A run that must be recomputed, and
  every metric table, is written to a new group beside the old one, and the commit file is then
  replaced atomically to point at it; the old group is deleted after the swap.

Zarr layout (``store_layout`` 2)::

    store.zarr/                        root attrs: schema_version, store_layout, sedviz_version,
                                       options, device, dtype
      sedviz.lock                      the writer lock (absent when no writer holds it)
      sedviz_commits/<key>.json        one commit per run (see below), replaced atomically
      runs/<key>.<token>/              the run's Dataset along ``step``, one chunk per checkpoint,
                                       written by xarray: rows past the commit's ``n`` are not data
      metrics/<key>.<token>/           its metric log: ``step`` (int64), ``column`` (str),
                                       ``values`` (step, column; float64)

A commit file holds ``name`` (the run's true name), ``group`` and ``metrics`` (the paths above, or
null), ``n`` (rows of ``group`` that are committed; rows are in the order computed, sort by
``step``), ``order`` (position of the run), ``checkpoints`` ({step: file}), ``sources``,
``sva_reference_step``, ``max_lag`` and ``plan`` (a fingerprint of the layer table). Stores
written before layout 2 have no ``group``/``metrics``: their groups are ``runs/<old key>`` and
``metrics/<old key>`` (one array per metric), and they are read and extended as they are.
docs/schema.md says how to read a store without sedviz.

netCDF: one file holding the assembled Dataset plus a ``run_info`` attr (JSON: each run's commit
info, with its ``steps``). A writer keeps the runs in memory and rewrites the whole file on
``flush()``: it is serialised in memory, checked against the free disk space, written to a
temporary file beside the store, fsynced and renamed over it.

Writer API (``compute()`` and any other in-process writer, e.g. a live recorder)
--------------------------------------------------------------------------------
::

    st = open_store("spectra.zarr")         # or "spectra.nc"; nothing is touched yet
    with st.writing():                      # take the lock (StoreLockedError if held), recover
        if not st.attrs().get("options"):
            st.init({...})                  # root attrs of a new store (schema_version, options, ...)
        info = st.runs().get(name)          # committed state of a run: n, checkpoints, attrs, or None
        st.write_metrics(name, frame)       # staged; committed with the run's next commit (netCDF
                                            # keeps only its values at stored steps: write the
                                            # whole log again in each session)
        st.append(name, records, run_attrs) # rows (a Dataset along step, from dataset.run_dataset)
                                            # appended and committed; run_attrs["checkpoints"]
                                            # ({step: path}) is merged into the commit
        st.commit(name, run_attrs)          # commit staged metrics/attrs without new rows
        with st.rebuilding(name):           # recompute a run beside the old one: appends inside
            st.append(name, ...)            # are invisible until the block ends without an
                                            # exception, then swapped in; on an exception the
                                            # old data stays and the new is dropped
        st.flush()                          # netCDF: write the file (Zarr: no-op)

Every record batch of one run must have the same layers, pairs and params (the run's plan);
a batch that does not match raises :class:`StoreError`. To resume after a crash, open the store
the same way: ``writing()`` drops what was not committed, and ``runs()[name]["checkpoints"]`` says
which steps are stored. Readers use :meth:`Store.open` (``sedviz.open``), which is lazy.

The lock is an ``flock`` on an open file: processes forked while it is held (a DataLoader's
workers) share it, so a writer whose children outlive it keeps the store locked until they exit.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import secrets
import shutil
import socket
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from ..dataset import RECORD_DIMS, SCHEMA_VERSION, _union_coords, align_metrics, assemble, check_schema, describe
from ..errors import StoreError, StoreLockedError

FORMATS = ("zarr", "netcdf")
STORE_LAYOUT = 2
COMMITS = "sedviz_commits"
LOCK = "sedviz.lock"
_TMP = ".sedviz-tmp-"
# Attrs that describe the store itself, not the Dataset.
_STORE_ATTRS = ("store_layout", "run_info")
# Commit fields a writer's run_attrs may not override.
_INTERNAL = ("name", "key", "group", "metrics", "n", "order", "layout", "steps")
# Coordinates on each labelled dim (docs/schema.md).
_AUX = {"layer": ("layer_kind", "depth", "rows", "cols"), "pair": ("pair_src", "pair_dst", "pair_kind"),
        "param": ("param_kind", "param_size")}
_RANGE_DIMS = ("rank", "proj", "lag")


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


def run_key(name: str) -> str:
    """The on-disk key of a run: its name with anything but letters, digits, ``_`` and ``-``
    replaced (at most 40 characters), then ``-`` and 12 hex digits of the SHA-256 of the name.
    Distinct names give distinct keys; no key is ``.``/``..`` or holds a path separator."""
    safe = re.sub(r"[^A-Za-z0-9_-]+", "_", name).strip("_")[:40] or "run"
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    return f"{safe}-{digest}"


def _legacy_key(name: str) -> str:
    """The key of stores written before layout 2 (collisions possible: only for reading them)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name) or "run"


# ---------------------------------------------------------------------------------------------
# files


_FIXES = {
    errno.ENOSPC: "The disk is full: free some space, or write the store elsewhere, and run again",
    errno.EDQUOT: "The disk quota is used up: free some space, or write the store elsewhere, and run again",
    errno.EACCES: "No permission: write the store to a folder you can write to, or fix the permissions",
    errno.EPERM: "No permission: write the store to a folder you can write to, or fix the permissions",
    errno.EROFS: "The file system is read-only: write the store to a writable folder",
    errno.ENOTDIR: "A part of the path is a file, not a folder: choose another path for the store",
    errno.EEXIST: "A part of the path is a file, not a folder: choose another path for the store",
    errno.EISDIR: "The path is a folder: pass a file name ending in .nc, or a Zarr folder",
    errno.ENAMETOOLONG: "The path is too long: choose a shorter one",
    errno.EFBIG: "The file is larger than the system allows: write a Zarr store instead of netCDF",
}


def _os_error(exc: OSError, path, doing: str) -> StoreError:
    """A StoreError for an OSError: the file, what failed, why, and the fix; the store keeps its
    last committed state."""
    where = exc.filename or path
    fix = _FIXES.get(exc.errno, "Check the path and the disk, and run again")
    return StoreError(f"{where}: cannot {doing} ({exc.strerror or exc}). {fix}; the store keeps its last committed state")


@contextlib.contextmanager
def _io(path, doing: str):
    try:
        yield
    except StoreError:
        raise
    except OSError as exc:
        raise _os_error(exc, path, doing) from exc


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", socket.gethostname()) or "host"


def _tmp_name(prefix: str) -> str:
    return f"{prefix}{_TMP}{_host()}-{os.getpid()}-{secrets.token_hex(4)}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    return True


def _orphan_tmp(path: Path) -> bool:
    """A temporary file of a sedviz writer on this host whose process is gone."""
    m = re.search(re.escape(_TMP) + r"(?P<host>.+)-(?P<pid>\d+)-[0-9a-f]{8}", path.name)
    return bool(m) and m.group("host") == _host() and not _pid_alive(int(m.group("pid")))


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _atomic_write_bytes(path: Path, data: bytes, *, tmp_prefix: str | None = None) -> None:
    """Write ``data`` to a temporary file beside ``path``, fsync it, check its size, then rename it
    over ``path``: readers see the old file or the new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / _tmp_name(tmp_prefix if tmp_prefix is not None else "")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if tmp.stat().st_size != len(data):
            raise OSError(errno.EIO, f"wrote {tmp.stat().st_size} of {len(data)} bytes", str(tmp))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(path.parent)


def _atomic_write_text(path: Path, text: str) -> None:
    _atomic_write_bytes(path, text.encode("utf-8"))


def _remove_tree(folder: Path, inside: Path) -> None:
    """Delete a folder of the store: renamed first (so that a reader holding it notices at once),
    then removed. Refuses anything that is not strictly inside ``inside``."""
    folder, inside = Path(folder), Path(inside)
    if not folder.exists():
        return
    real, root = folder.resolve(), inside.resolve()
    if real == root or root not in real.parents or folder.is_symlink():
        raise StoreError(f"{folder}: refusing to delete a folder that is not inside the store {inside}")
    trash = folder.parent / _tmp_name(".trash")
    os.rename(folder, trash)
    shutil.rmtree(trash, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# the writer lock


class StoreLock:
    """An exclusive ``flock`` on a lock file that names its holder; released by the kernel when the
    holder dies. The file is removed on release (the acquirer checks that the file it locked is
    still the one at the path, so a removal never lets two writers in)."""

    def __init__(self, path: Path, store: Path):
        self.path = Path(path)
        self.store = Path(store)
        self.fd: int | None = None
        self.took_over = False  # the previous holder died holding it (it may have left partial files)

    @staticmethod
    def describe(text: str) -> str:
        try:
            info = json.loads(text)
        except (ValueError, TypeError):
            return "a process that has not written its name yet"
        age = time.time() - float(info.get("time", time.time()))
        return (f"pid {info.get('pid')} on {info.get('host')}, since {info.get('started', '?')} ({age:.0f} s ago), "
                f"running {info.get('command', '?')!r}")

    def acquire(self) -> None:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX
            fcntl = None
        me = {"pid": os.getpid(), "host": socket.gethostname(), "time": time.time(),
              "started": time.strftime("%Y-%m-%d %H:%M:%S"), "command": " ".join(sys.argv)[:300]}
        with _io(self.path, "create the writer lock"):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            for _ in range(50):
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
                try:
                    if fcntl is not None:
                        try:
                            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        except BlockingIOError:
                            holder = self.describe(os.pread(fd, 4096, 0).decode("utf-8", "replace"))
                            raise StoreLockedError(
                                f"{self.store}: another sedviz process is writing to this store ({holder}). Wait for it "
                                f"to finish or stop it, then run again; readers (sedviz.open) may read meanwhile. The lock "
                                f"of a process that died is taken over automatically",
                                holder=holder,
                            ) from None
                        except OSError as exc:
                            if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL):
                                raise
                            self._no_flock(fd)
                    else:  # pragma: no cover
                        self._no_flock(fd)
                    try:
                        same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
                    except FileNotFoundError:
                        same = False
                    if not same:  # the holder removed it as we opened it: lock the new one
                        os.close(fd)
                        continue
                    previous = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
                    os.ftruncate(fd, 0)
                    os.pwrite(fd, json.dumps(me).encode(), 0)
                    os.fsync(fd)
                except BaseException:
                    with contextlib.suppress(OSError):
                        os.close(fd)
                    raise
                self.fd = fd
                self.took_over = bool(previous)
                if previous:
                    warnings.warn(
                        f"{self.store}: the previous writer ({self.describe(previous)}) stopped without releasing the "
                        "store; its uncommitted work is dropped and the store continues from its last commit",
                        stacklevel=4,
                    )
                return
        raise StoreError(f"{self.path}: the lock file keeps changing under this process; is another program "
                         f"deleting it? Run again")

    def _no_flock(self, fd: int) -> None:
        """File systems without flock: trust the file's content (a live pid on this host, or any pid
        on another host, holds it)."""
        text = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
        try:
            info = json.loads(text) if text else {}
        except ValueError:
            info = {}
        if info and info.get("pid") != os.getpid():
            here = info.get("host") == socket.gethostname()
            if not here or _pid_alive(int(info.get("pid", 0))):
                holder = self.describe(text)
                raise StoreLockedError(f"{self.store}: another sedviz process is writing to this store ({holder}); "
                                       f"this file system has no flock, so if that process is gone, delete "
                                       f"{self.path} and run again", holder=holder)

    def release(self) -> None:
        if self.fd is None:
            return
        with contextlib.suppress(OSError):
            os.unlink(self.path)
        with contextlib.suppress(OSError):
            os.close(self.fd)
        self.fd = None


# ---------------------------------------------------------------------------------------------
# lazy reading: one array over (run, step, ...) from each run's own arrays


class _Part:
    """One run's array inside a stacked variable: the array (zarr, or anything with numpy
    indexing) and, for each of its dims, the map from the stacked index to its own (-1: absent)."""

    def __init__(self, array, maps: list[np.ndarray], alive=None, where: str = ""):
        self.array, self.maps, self.alive, self.where = array, maps, alive, where


class _Stacked(xr.backends.BackendArray):
    """A lazily read (run, step, ...) array whose run slices live in per-run arrays, NaN where a run
    lacks a step, a layer or a rank. Outer indexing reads only the chunks it needs."""

    def __init__(self, shape: tuple, dtype, parts: list[_Part | None]):
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self.parts = parts

    def __getitem__(self, key):
        return xr.core.indexing.explicit_indexing_adapter(
            key, self.shape, xr.core.indexing.IndexingSupport.OUTER, self._get
        )

    def _get(self, key: tuple) -> np.ndarray:
        idx, drop = [], []
        for axis, (k, size) in enumerate(zip(key, self.shape)):
            if isinstance(k, (int, np.integer)):
                idx.append(np.array([int(k) % size]))
                drop.append(axis)
            elif isinstance(k, slice):
                idx.append(np.arange(size)[k])
            else:
                idx.append(np.asarray(k, dtype=np.int64) % max(size, 1))
        out = np.full([len(i) for i in idx], np.nan, dtype=self.dtype)
        for o, r in enumerate(idx[0]):
            part = self.parts[r]
            if part is None:
                continue
            local = [m[i] for m, i in zip(part.maps, idx[1:])]
            have = [np.flatnonzero(loc >= 0) for loc in local]
            if any(len(h) == 0 for h in have):
                continue
            try:
                block = _read_outer(part.array, [loc[h] for loc, h in zip(local, have)])
            except Exception as exc:
                raise StoreError(f"{part.where}: cannot be read ({type(exc).__name__}: {exc}); if another process "
                                 f"recomputed this run since the Dataset was opened, open the store again") from exc
            if part.alive is not None and not part.alive():
                raise StoreError(f"{part.where}: this run was recomputed by another process since the Dataset was "
                                 f"opened; open the store again (sedviz.open) to see the new data")
            out[(o,) + np.ix_(*have)] = block
        return out.squeeze(axis=tuple(drop)) if drop else out


def _read_outer(array, sel: list[np.ndarray]) -> np.ndarray:
    """``array`` at the outer product of index lists (any order), reading contiguous runs as slices."""
    keys, orders = [], []
    for s in sel:
        order = np.argsort(s, kind="stable")
        srt = s[order]
        uniq, inverse = np.unique(srt, return_inverse=True)
        if len(uniq) and uniq[-1] - uniq[0] + 1 == len(uniq):
            keys.append(slice(int(uniq[0]), int(uniq[-1]) + 1))
        else:
            keys.append(uniq)
        back = np.empty_like(order)
        back[order] = np.arange(len(order))
        orders.append(inverse[back])
    if all(isinstance(k, slice) for k in keys):
        data = np.asarray(array[tuple(keys)])
    elif hasattr(array, "oindex"):
        data = np.asarray(array.oindex[tuple(np.arange(k.start, k.stop) if isinstance(k, slice) else k for k in keys)])
    else:
        data = np.asarray(array[np.ix_(*[np.arange(k.start, k.stop) if isinstance(k, slice) else k for k in keys])])
    return data[np.ix_(*orders)]


def _wrap_lazy(backend: _Stacked):
    idx = xr.core.indexing
    return idx.MemoryCachedArray(idx.CopyOnWriteArray(idx.LazilyIndexedArray(backend)))


class _RunData:
    """One run as stored: committed steps (in row order), labelled coordinates, and arrays by
    variable name with their dims (everything but the coordinates is read lazily)."""

    def __init__(self, name, steps, labels, tables, sizes, arrays, alive=None, where=""):
        self.name, self.steps, self.labels, self.tables = name, steps, labels, tables
        self.sizes, self.arrays, self.alive, self.where = sizes, arrays, alive, where


def _lazy_dataset(runs: list[_RunData], metrics: dict, attrs: dict, run_attrs: dict) -> xr.Dataset:
    """What :func:`sedviz.dataset.assemble` makes of these runs, with every record variable read lazily."""
    if not runs:
        raise StoreError("the store holds no computed checkpoints yet; run sedviz.compute(...) on it first")
    names = [r.name for r in runs]
    steps = np.unique(np.concatenate([r.steps for r in runs]))
    labels = {}
    for dim, aux in _AUX.items():
        frames = [pd.DataFrame({c: r.tables[dim][c] for c in aux if c in r.tables.get(dim, {})}, index=r.labels[dim])
                  for r in runs if dim in r.labels]
        if frames:
            table = pd.concat(frames)
            labels[dim] = table[~table.index.duplicated(keep="first")]
    sizes = {d: max(r.sizes[d] for r in runs if d in r.sizes) for d in _RANGE_DIMS if any(d in r.sizes for r in runs)}
    coords: dict = {"run": pd.Index(np.array(names, dtype=object), name="run"), "step": steps}
    for dim, table in labels.items():
        coords[dim] = np.array(table.index.tolist(), dtype=object)
        for c in table.columns:
            coords[c] = (dim, table[c].to_numpy())
    for d, n in sizes.items():
        coords[d] = np.arange(n, dtype=np.int64)

    def index_map(dim, run):
        if dim == "step":
            pos = pd.Index(run.steps).get_indexer(steps)
            return pos.astype(np.int64)
        if dim in labels:
            return pd.Index(run.labels[dim]).get_indexer(labels[dim].index).astype(np.int64)
        full = np.arange(sizes[dim], dtype=np.int64)
        return np.where(full < run.sizes.get(dim, 0), full, -1)

    data_vars = {}
    for var, dims in RECORD_DIMS.items():
        have = [r for r in runs if var in r.arrays]
        if not have:
            continue
        all_dims = ("step",) + dims
        dtype = np.result_type(*[r.arrays[var].dtype for r in have], np.float32)
        shape = [len(names), len(steps)] + [len(labels[d]) if d in labels else sizes[d] for d in dims]
        parts = []
        for r in runs:
            if var not in r.arrays:
                parts.append(None)
                continue
            parts.append(_Part(r.arrays[var], [index_map(d, r) for d in all_dims], r.alive, f"{r.where}/{var}"))
        data_vars[var] = xr.Variable(("run",) + all_dims, _wrap_lazy(_Stacked(shape, dtype, parts)))
    out = xr.Dataset(data_vars, coords=coords)
    _add_metrics(out, names, {r.name: r.steps for r in runs}, steps, metrics)
    out.attrs.update({k: v for k, v in attrs.items() if k not in _STORE_ATTRS})
    out.attrs["schema_version"] = SCHEMA_VERSION
    for key in ("sources", "checkpoints", "sva_reference_step"):
        out.attrs[key] = json.dumps({n: run_attrs.get(n, {}).get(key) for n in names})
    return describe(out)


def _add_metrics(out: xr.Dataset, names, own_steps: dict, steps, metrics: dict) -> None:
    """Metric columns as (run, step) variables, each run's log aligned to its own steps (as assemble)."""
    cols: dict[str, np.ndarray] = {}
    for i, n in enumerate(names):
        df = metrics.get(n)
        if df is None or df.empty:
            continue
        al = align_metrics(df, own_steps[n]).reindex(steps)
        for c in al.columns:
            arr = cols.setdefault(c, np.full((len(names), len(steps)), np.nan))
            arr[i] = pd.to_numeric(al[c], errors="coerce").to_numpy(dtype=np.float64)
    for c, arr in cols.items():
        if c not in out:
            out[c] = (("run", "step"), arr)


def _strings(values) -> list:
    return [str(v) for v in np.asarray(values).tolist()]


# ---------------------------------------------------------------------------------------------
# the stores


class Store:
    """What the pipeline needs from a store; ``open()`` gives the assembled Dataset (lazily)."""

    def __init__(self, path):
        self.path = Path(path) if path is not None else None
        self._lock: StoreLock | None = None
        self._depth = 0

    # -- the writer session ---------------------------------------------------------------------
    def _lock_path(self) -> Path:
        raise NotImplementedError

    @contextlib.contextmanager
    def writing(self):
        """Hold the writer lock for the block (re-entrant within this object) and recover first."""
        if self.path is None or self._depth:
            self._depth += 1
            try:
                yield self
            finally:
                self._depth -= 1
            return
        self._check_target()
        lock = StoreLock(self._lock_path(), self.path)
        lock.acquire()
        self._lock, self._depth = lock, 1
        try:
            self._recover()
            yield self
        finally:
            self._depth = 0
            self._end_session()
            self._lock = None
            lock.release()

    def _writer(self) -> None:
        if self.path is not None and self._lock is None:
            raise StoreError(f"{self.path}: write to a store inside `with store.writing():` (it takes the writer lock)")

    def _check_target(self) -> None:
        """Refuse (before touching anything) a path that is not, and cannot become, this store."""

    def _recover(self) -> None:
        """Under the lock: bring the files back to the last commit (drop what a dead writer left)."""

    def _end_session(self) -> None:
        pass

    # -- reading --------------------------------------------------------------------------------
    def attrs(self) -> dict:
        raise NotImplementedError

    def runs(self) -> dict[str, dict]:
        """run name -> committed info (n, checkpoints, sources, sva_reference_step, ...), in run order."""
        raise NotImplementedError

    def open(self) -> xr.Dataset:
        raise NotImplementedError

    def _missing(self) -> StoreError:
        return StoreError(f"{self.path}: no such store; compute one with sedviz.compute(runs, store={str(self.path)!r})")

    def _nothing_yet(self) -> StoreError:
        return StoreError(f"{self.path}: the store holds no computed checkpoints yet; run sedviz compute on it again")

    # -- writing --------------------------------------------------------------------------------
    def init(self, attrs: dict) -> None:
        raise NotImplementedError

    def append(self, name: str, records: xr.Dataset, run_attrs: dict) -> None:
        raise NotImplementedError

    def commit(self, name: str, run_attrs: dict | None = None) -> None:
        raise NotImplementedError

    def write_metrics(self, name: str, metrics: pd.DataFrame | None) -> None:
        raise NotImplementedError

    @contextlib.contextmanager
    def rebuilding(self, name: str):
        raise NotImplementedError
        yield

    def flush(self) -> None:
        """Make everything committed so far durable (a no-op where commits already are)."""


def _merge_info(info: dict, run_attrs: dict | None) -> dict:
    """A run's commit info updated by a writer's run attrs: its checkpoints ({step: path}) merged
    in, the store's own fields (name, group, n, ...) left alone."""
    out = dict(info)
    for k, v in (run_attrs or {}).items():
        if k not in _INTERNAL and k != "checkpoints":
            out[k] = v
    merged = dict(out.get("checkpoints") or {})
    merged.update({str(k): v for k, v in ((run_attrs or {}).get("checkpoints") or {}).items()})
    out["checkpoints"] = merged
    return out


class ZarrStore(Store):
    """A Zarr folder: one group per run (appended in place), one commit file per run."""

    _ALLOWED = {"zarr.json", LOCK, COMMITS, "runs", "metrics", ".zgroup", ".zattrs"}

    def __init__(self, path):
        super().__init__(path)
        self._staged_metrics: dict[str, str] = {}
        self._pending: dict[str, dict] = {}  # run -> info of a rebuild in progress
        self._groups: dict[str, tuple] = {}  # group path -> labels and sizes (for append checks)

    def _lock_path(self) -> Path:
        return self.path / LOCK

    # -- reading --------------------------------------------------------------------------------
    def _root_attrs(self) -> dict | None:
        """Root attrs, {} for a store whose creation was cut short, None when there is no store."""
        if not self.path.exists():
            return None
        if not self.path.is_dir():
            raise StoreError(f"{self.path}: is a file, not a Zarr store (a folder); pass a folder path, or a .nc file name "
                             f"for a netCDF store")
        meta = self.path / "zarr.json"
        if not meta.exists():
            if (self.path / ".zgroup").exists():
                raise StoreError(f"{self.path}: a Zarr v2 folder, not a sedviz store; pass a new path or the right one")
            return {}
        try:
            doc = json.loads(meta.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise StoreError(f"{meta}: cannot be read ({exc}); this is not a sedviz store, or it is damaged: pass a new "
                             f"path or the right one") from exc
        if not isinstance(doc, dict) or doc.get("node_type") != "group":
            raise StoreError(f"{self.path}: a Zarr array, not a sedviz store; pass a new path or the right one")
        return dict(doc.get("attributes") or {})

    def attrs(self) -> dict:
        root = self._root_attrs()
        return {} if root is None else root

    def _commit_files(self) -> dict[str, tuple[Path, dict]]:
        folder = self.path / COMMITS
        out: dict[str, tuple[Path, dict]] = {}
        if not folder.is_dir():
            return out
        for f in sorted(folder.glob("*.json")):
            if f.name.startswith("."):
                continue
            try:
                info = json.loads(f.read_text(encoding="utf-8"))
            except FileNotFoundError:
                continue  # replaced or removed as we listed it: the next read sees the new one
            except (OSError, ValueError) as exc:
                raise StoreError(f"{f}: a commit file that cannot be read ({exc}); the store is damaged. Move the "
                                 f"store aside and compute it again") from exc
            if not isinstance(info, dict) or not isinstance(info.get("name"), str):
                raise StoreError(f"{f}: not a sedviz commit file; the store is damaged. Move the store aside and "
                                 f"compute it again")
            name = info["name"]
            if name in out and "group" not in info:
                continue  # a legacy commit left beside the new one of the same run
            out[name] = (f, info)
        return out

    def runs(self) -> dict[str, dict]:
        if self.path is None or not self.path.is_dir():
            return {}
        infos = [info for _, info in self._commit_files().values()]
        out = {}
        for info in sorted(infos, key=lambda i: (i.get("order", 0), i["name"])):
            out[info["name"]] = info
        return out

    def _group_of(self, info: dict) -> str:
        group = info.get("group") or f"runs/{_legacy_key(info['name'])}"
        self._confined(group)
        return group

    def _metrics_of(self, info: dict) -> str | None:
        if "group" in info:
            group = info.get("metrics")
        else:
            legacy = f"metrics/{_legacy_key(info['name'])}"
            group = legacy if (self.path / legacy).is_dir() else None
        if group:
            self._confined(group)
        return group

    def _confined(self, group: str) -> Path:
        parts = Path(group).parts
        if (len(parts) != 2 or parts[0] not in ("runs", "metrics") or parts[1] in (".", "..")
                or Path(group).is_absolute() or "\\" in group):
            raise StoreError(f"{self.path}: a commit file names the group {group!r}, which is not inside the store; "
                             f"the store is damaged. Move it aside and compute it again")
        return self.path / group

    def _read_run(self, info: dict) -> _RunData:
        import zarr

        group = self._group_of(info)
        n = int(info.get("n", 0))
        where = str(self.path / group)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            g = zarr.open_group(str(self.path), path=group, mode="r")
            arrays = {name: arr for name, arr in g.arrays()}
        dims_of = {name: tuple(_dims(arr)) for name, arr in arrays.items()}
        if "step" not in arrays or arrays["step"].shape[0] < n:
            raise _Torn(f"{where}: holds fewer rows than its commit")
        steps = np.asarray(arrays["step"][:n], dtype=np.int64)
        labels, tables, sizes = {}, {}, {}
        for dim, aux in _AUX.items():
            if dim in arrays:
                labels[dim] = _strings(arrays[dim][:])
                tables[dim] = {}
                for c in aux:
                    if c in arrays:
                        vals = arrays[c][:]
                        tables[dim][c] = np.asarray(_strings(vals), dtype=object) if vals.dtype.kind in "OUT" else np.asarray(vals)
        for d in _RANGE_DIMS:
            if d in arrays:
                sizes[d] = int(arrays[d].shape[0])
        data = {}
        for var, dims in RECORD_DIMS.items():
            if var in arrays:
                if dims_of[var] != ("step",) + dims:
                    raise StoreError(f"{where}/{var}: has dims {dims_of[var]}, not {('step',) + dims}; the store is "
                                     f"damaged or not a sedviz store")
                data[var] = arrays[var]
        meta = self.path / group / "zarr.json"
        return _RunData(info["name"], steps, labels, tables, sizes, data, alive=meta.exists, where=where)

    def load_metrics(self, name: str, info: dict | None = None) -> pd.DataFrame | None:
        info = info or self.runs().get(name)
        group = self._metrics_of(info) if info else None
        if not group:
            return None
        import zarr

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            g = zarr.open_group(str(self.path), path=group, mode="r")
            arrays = dict(g.arrays())
            if "values" in arrays and "column" in arrays:
                steps = np.asarray(arrays["step"][:], dtype=np.int64)
                return pd.DataFrame(np.asarray(arrays["values"][:], dtype=np.float64),
                                    index=pd.Index(steps, name="step"), columns=_strings(arrays["column"][:]))
            ds = xr.open_zarr(str(self.path), group=group, consolidated=False, chunks=None).load()
        return ds.to_dataframe()  # a legacy metric group: one array per column

    def open(self) -> xr.Dataset:
        last = None
        for attempt in range(6):
            try:
                return self._open_once()
            except StoreError:
                raise
            except Exception as exc:  # a group replaced between reading its commit and opening it
                last = exc
                time.sleep(0.02 * 2**attempt)
        raise StoreError(f"{self.path}: cannot be read ({type(last).__name__}: {last}); the store is damaged, or a writer "
                         f"keeps replacing it. Try again; if it persists, move the store aside and compute it again")

    def _open_once(self) -> xr.Dataset:
        root = self._root_attrs()
        if root is None:
            raise self._missing()
        if not root.get("schema_version") and not root.get("options"):
            if self._foreign():
                raise StoreError(f"{self.path}: a folder that is not a sedviz store (it holds {self._foreign()}); pass "
                                 f"a new path or the right one")
            raise self._nothing_yet()
        check_schema(root, str(self.path))
        infos = self.runs()
        runs, metrics = [], {}
        for name, info in infos.items():
            if int(info.get("n", 0)) > 0:
                runs.append(self._read_run(info))
                metrics[name] = self.load_metrics(name, info)
        if not runs:
            raise self._nothing_yet()
        return _lazy_dataset(runs, metrics, root, infos)

    def _foreign(self) -> list[str]:
        """Names in the folder that no sedviz store holds (zarr's and sedviz's temporary files aside)."""
        try:
            return sorted(p.name for p in self.path.iterdir() if p.name not in self._ALLOWED
                          and not p.name.endswith(".partial") and _TMP not in p.name)[:5]
        except OSError:
            return []

    # -- writing --------------------------------------------------------------------------------
    def _check_target(self) -> None:
        root = self._root_attrs()  # raises for a file or a foreign Zarr node
        if root is None:
            return
        foreign = self._foreign()
        if foreign or (root and "schema_version" not in root and "options" not in root):
            raise StoreError(f"{self.path}: an existing folder that is not a sedviz store (it holds "
                             f"{', '.join(foreign) or 'other Zarr data'}); sedviz writes only into a new or empty "
                             f"folder or its own store: pass another path")

    def _recover(self) -> None:
        """Drop what no commit refers to: groups of dead writers, replaced groups, temporary files."""
        with _io(self.path, "recover the store"):
            if not self.path.is_dir():
                return
            for f in self.path.iterdir():  # temporary files of a writer that died (zarr's *.partial, ours)
                if f.is_file() and (f.name.endswith(".partial") or _TMP in f.name):
                    f.unlink()
            files = self._commit_files()
            keep = set()
            for name, (f, info) in files.items():
                keep.add(self._group_of(info))
                m = self._metrics_of(info)
                if m:
                    keep.add(m)
            folder = self.path / COMMITS
            if folder.is_dir():
                live = {f for f, _ in files.values()}
                for f in folder.iterdir():
                    if f.name.startswith(".") or (f.suffix == ".json" and f not in live):
                        f.unlink()  # temporary files of a dead writer, legacy commits superseded by new ones
            for top in ("runs", "metrics"):
                base = self.path / top
                if not base.is_dir():
                    continue
                for d in base.iterdir():
                    rel = f"{top}/{d.name}"
                    if d.name == "zarr.json":
                        continue
                    if d.name.startswith(".") or rel not in keep:
                        if d.is_dir() and not d.is_symlink():
                            _remove_tree(d, self.path)
                        else:
                            d.unlink()
                    elif self._lock is not None and self._lock.took_over:
                        for partial in d.rglob("*.partial"):  # zarr's temporary files, left by a writer that died
                            partial.unlink()

    def init(self, attrs: dict) -> None:
        """Write the root attrs of a new store (or of one whose creation was cut short)."""
        self._writer()
        with _io(self.path, "create the store"):
            self.path.mkdir(parents=True, exist_ok=True)
            if self.runs():
                raise StoreError(f"{self.path}: init() on a store that holds runs; extend it or write to a new one")
            # the group's zarr.json, written in one atomic step (zarr's own "w" mode would empty the folder)
            doc = {"attributes": {**attrs, "store_layout": STORE_LAYOUT}, "zarr_format": 3, "node_type": "group"}
            _atomic_write_text(self.path / "zarr.json", json.dumps(doc))

    def _info(self, name: str) -> dict:
        if name in self._pending:
            return self._pending[name]
        runs = self.runs()
        return dict(runs.get(name) or {"name": name, "n": 0, "checkpoints": {}, "order": len(runs)})

    def append(self, name: str, records: xr.Dataset, run_attrs: dict) -> None:
        """Append rows (a Dataset along ``step``) to the run and commit them (inside a rebuild: stage)."""
        self._writer()
        with _io(self.path, f"append to run {name!r}"):
            info = self._info(name)
            n = int(info.get("n", 0))
            group = self._group_of(info) if (info.get("group") or (n and "group" not in info)) else None
            if n == 0 or group is None or not (self.path / group / "zarr.json").exists():
                group = f"runs/{run_key(name)}.{secrets.token_hex(4)}"
                self._create_group(group, records)
                n = 0
            else:
                self._append_rows(group, records, n)
            info = _merge_info(info, run_attrs)
            info.update(name=name, key=run_key(name), group=group, n=n + records.sizes["step"], layout=STORE_LAYOUT)
            if name in self._pending:
                self._pending[name] = info
            else:
                self._write_commit(name, info)

    def _create_group(self, group: str, records: xr.Dataset) -> None:
        ds = records.copy()
        for c in list(ds.variables):
            if ds[c].dtype.kind == "U":  # variable-length strings (Zarr v3 "string"), not fixed-width UTF-32
                ds[c] = ds[c].astype(object)
        for v in ds.variables.values():
            v.encoding.clear()
        enc = {v: {"chunks": (1,) + ds[v].shape[1:]} for v in ds.data_vars}  # no dask needed
        enc["step"] = {"chunks": (4096,)}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds.to_zarr(str(self.path), group=group, mode="w-", consolidated=False, encoding=enc)
        self._groups[group] = _signature(ds)

    def _append_rows(self, group: str, records: xr.Dataset, n: int) -> None:
        """Rows n.. of every step array; rows past n (left by a writer that died before its commit)
        are overwritten or cut off. Committed rows are never rewritten."""
        import zarr

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            g = zarr.open_group(str(self.path), path=group, mode="r+")
            arrays = dict(g.arrays())
            if group not in self._groups:
                self._groups[group] = _signature_zarr(arrays)
            if self._groups[group] != _signature(records):
                raise StoreError(f"{self.path / group}: the new records' layers, pairs or params differ from the stored "
                                 f"run's; recompute the run (or write to a new store)")
            missing = sorted(set(records.data_vars) - set(arrays))
            if missing:
                raise StoreError(f"{self.path / group}: the new records hold {missing}, which the stored run lacks; "
                                 f"recompute the run (or write to a new store)")
            again = np.intersect1d(np.asarray(arrays["step"][:n]), records.step.values)
            if len(again):
                raise StoreError(f"{self.path / group}: steps {again[:5].tolist()} are stored already; append only new "
                                 f"checkpoints")
            k = records.sizes["step"]
            for v in [*[v for v in records.data_vars if v in arrays], "step"]:
                arr = arrays[v]
                arr.resize((n + k,) + tuple(arr.shape[1:]))
                arr[n : n + k] = np.asarray(records[v].values).astype(arr.dtype, copy=False)

    def _write_commit(self, name: str, info: dict) -> None:
        """Replace the run's commit file (atomically), then delete the groups it no longer names."""
        previous = self._commit_files().get(name)
        old = previous[1] if previous else None
        info = dict(info)
        if name in self._staged_metrics:
            info["metrics"] = self._staged_metrics.pop(name) or None
        else:
            info["metrics"] = self._metrics_of(old) if old else None
        info["group"] = info.get("group") or (self._group_of(old) if old else f"runs/{run_key(name)}.{secrets.token_hex(4)}")
        if old is not None:
            info["order"] = old.get("order", info.get("order", 0))
        info.update(name=name, key=run_key(name), layout=STORE_LAYOUT)
        path = self.path / COMMITS / f"{run_key(name)}.json"
        _atomic_write_text(path, json.dumps(info))
        if previous is not None and previous[0] != path:
            previous[0].unlink(missing_ok=True)  # the legacy commit of this run
        if old is not None:
            for group in {self._group_of(old), self._metrics_of(old)} - {info["group"], info["metrics"], None}:
                _remove_tree(self.path / group, self.path)

    def commit(self, name: str, run_attrs: dict | None = None) -> None:
        """Commit staged metrics and attrs of a run without new rows."""
        self._writer()
        with _io(self.path, f"commit run {name!r}"):
            info = _merge_info(self._info(name), run_attrs)
            info.setdefault("n", 0)
            if name in self._pending:
                self._pending[name] = info
            else:
                self._write_commit(name, info)

    def write_metrics(self, name: str, metrics: pd.DataFrame | None) -> None:
        """Stage the run's metric log (written beside the committed one, swapped in by the next commit)."""
        self._writer()
        info = self._info(name)
        if _same_frame(metrics, self.load_metrics(name, info) if info.get("n") or info.get("group") else None):
            self._staged_metrics.pop(name, None)  # unchanged: the commit keeps the stored log
            return
        if metrics is None or metrics.empty:
            self._staged_metrics[name] = ""
            return
        import zarr

        group = f"metrics/{run_key(name)}.{secrets.token_hex(4)}"
        frame = metrics.astype(np.float64)
        with _io(self.path, f"write the metric log of run {name!r}"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            g = zarr.open_group(str(self.path), path=group, mode="w-")
            g.create_array("step", data=np.asarray(frame.index, dtype=np.int64), dimension_names=("step",))
            g.create_array("column", data=np.array([str(c) for c in frame.columns], dtype=np.dtypes.StringDType()),
                           dimension_names=("column",))
            g.create_array("values", data=frame.to_numpy(), dimension_names=("step", "column"))
        self._staged_metrics[name] = group

    @contextlib.contextmanager
    def rebuilding(self, name: str):
        """Appends to ``name`` inside the block go to a new group, swapped in when it ends cleanly."""
        self._writer()
        old = self.runs().get(name)
        if old is None or name in self._pending:  # nothing to protect
            yield
            return
        self._pending[name] = {"name": name, "n": 0, "checkpoints": {}, "order": old.get("order", 0), "group": None}
        try:
            yield
        except BaseException:
            info = self._pending.pop(name)
            if info.get("group"):
                with contextlib.suppress(OSError, StoreError):
                    _remove_tree(self.path / info["group"], self.path)
            raise
        info = self._pending.pop(name)
        if not info.get("group"):
            return  # nothing was recomputed: the old data stays
        with _io(self.path, f"commit the recomputed run {name!r}"):
            self._write_commit(name, info)


class _Torn(Exception):
    """A run group that does not (yet) match its commit: read again."""


def _same_frame(a: pd.DataFrame | None, b: pd.DataFrame | None) -> bool:
    """Two metric logs with the same steps, columns and values (NaN equal to NaN)."""
    a = None if a is None or a.empty else a
    b = None if b is None or b.empty else b
    if a is None or b is None:
        return a is None and b is None
    if list(map(str, a.columns)) != list(map(str, b.columns)) or not np.array_equal(np.asarray(a.index), np.asarray(b.index)):
        return False
    return np.array_equal(a.to_numpy(dtype=np.float64), b.to_numpy(dtype=np.float64), equal_nan=True)


def _dims(arr) -> list[str]:
    names = getattr(arr.metadata, "dimension_names", None)
    return list(names) if names else list(arr.attrs.get("_ARRAY_DIMENSIONS", []))


def _signature(ds: xr.Dataset) -> tuple:
    """What must not change between record batches of one run group."""
    out = []
    for dim in ("layer", "pair", "param"):
        out.append((dim, tuple(_strings(ds[dim].values)) if dim in ds.coords else None))
    for dim in _RANGE_DIMS:
        out.append((dim, int(ds.sizes[dim]) if dim in ds.dims else None))
    return tuple(out)


def _fits(records: xr.Dataset, old: xr.Dataset) -> bool:
    """Records that can join a run read back from a netCDF store, where each run carries the
    labels of every run (NaN where it has none): the records' labels are among the run's."""
    for dim in ("layer", "pair", "param"):
        if (dim in records.coords) != (dim in old.coords):
            return False
        if dim in records.coords and not set(_strings(records[dim].values)) <= set(_strings(old[dim].values)):
            return False
    return all(records.sizes.get(d, 0) <= old.sizes.get(d, 0) for d in _RANGE_DIMS)


def _signature_zarr(arrays: dict) -> tuple:
    out = []
    for dim in ("layer", "pair", "param"):
        out.append((dim, tuple(_strings(arrays[dim][:])) if dim in arrays else None))
    for dim in _RANGE_DIMS:
        out.append((dim, int(arrays[dim].shape[0]) if dim in arrays else None))
    return tuple(out)


class NetCDFStore(Store):
    """One netCDF file holding the assembled Dataset; rewritten atomically on ``flush``.

    A writer keeps the runs in memory between flushes (the pipeline flushes every few seconds and
    at the end); ``open()`` reads the file lazily.
    """

    def __init__(self, path):
        super().__init__(path)
        self._runs: dict[str, xr.Dataset] | None = None
        self._info: dict[str, dict] = {}
        self._metrics: dict[str, pd.DataFrame | None] = {}
        self._attrs: dict = {}
        self._pending: dict[str, dict] = {}  # run -> {"ds", "info"} of a rebuild in progress
        self._staged_metrics: dict[str, pd.DataFrame | None] = {}
        self._dirty = False  # committed state changed since the file was last written

    def _lock_path(self) -> Path:
        return self.path.parent / f".{self.path.name}.sedviz-lock"

    def _tmp_prefix(self) -> str:
        return f".{self.path.name}"

    def _clean_tmp(self) -> None:
        """Remove temporary files that writers of this store on this host left when they died."""
        if self.path is None or not self.path.parent.is_dir():
            return
        for f in self.path.parent.glob(f"{self._tmp_prefix()}{_TMP}*"):
            if _orphan_tmp(f):
                with contextlib.suppress(OSError):
                    f.unlink()

    # -- reading --------------------------------------------------------------------------------
    def _check_target(self) -> None:
        if self.path.is_dir():
            raise StoreError(f"{self.path}: is a folder; a netCDF store is one file: pass a file name ending in .nc")

    def _recover(self) -> None:
        self._clean_tmp()
        self._runs = None  # read the file again now that this process holds the lock
        self._pending, self._staged_metrics, self._dirty = {}, {}, False

    def _end_session(self) -> None:
        self._runs = None

    def _load(self) -> None:
        if self._runs is not None:
            return
        self._runs, self._info, self._metrics, self._attrs = {}, {}, {}, {}
        if self.path is None or not self.path.exists():
            return
        try:
            ds = xr.load_dataset(self.path, engine="h5netcdf")
        except Exception as exc:
            raise StoreError(f"{self.path}: not a readable netCDF store ({exc}); pass a new path or the right one") from exc
        self._split(ds, json.loads(ds.attrs.get("run_info", "{}")))

    def _split(self, ds: xr.Dataset, info: dict[str, dict]) -> None:
        """Per-run Datasets (own steps only) and metric frames from an assembled Dataset."""
        self._runs, self._metrics = {}, {}
        self._attrs = {k: v for k, v in ds.attrs.items()
                       if k not in ("run_info", "checkpoints", "sources", "sva_reference_step")}
        self._info = {n: dict(i) for n, i in info.items()}
        metric_vars = [v for v in ds.data_vars if ds[v].dims == ("run", "step")]
        for name in ds.run.values.tolist():
            one = ds.sel(run=name).drop_vars("run")
            own = (self._info.get(name) or {}).get("steps")
            if own is not None:  # written by this version: the run's own steps, all-NaN ones included
                keep = np.flatnonzero(np.isin(one.step.values, np.asarray(own, dtype=np.int64)))
            else:  # older files: a run's steps are those where it has any value
                have = one["sv"].notnull().any([d for d in one["sv"].dims if d != "step"])
                keep = np.flatnonzero(have.values)
            one = one.isel(step=keep)
            self._runs[name] = one.drop_vars(metric_vars)
            frame = one[metric_vars].to_dataframe() if metric_vars else None
            self._metrics[name] = None if frame is None else frame.drop(columns=[c for c in frame.columns
                                                                                 if c not in metric_vars])
            self._info.setdefault(name, {"name": name})

    def attrs(self) -> dict:
        if self._lock is None and self._runs is None:
            if self.path is None or not self.path.exists():
                return {}
            with self._lazy() as ds:
                return {k: v for k, v in ds.attrs.items() if k not in ("run_info", "checkpoints", "sources",
                                                                          "sva_reference_step")}
        self._load()
        return dict(self._attrs)

    def runs(self) -> dict[str, dict]:
        if self._lock is None and self._runs is None:
            if self.path is None or not self.path.exists():
                return {}
            with self._lazy() as ds:
                return json.loads(ds.attrs.get("run_info", "{}"))
        self._load()
        return {n: dict(i) for n, i in self._info.items()}

    @contextlib.contextmanager
    def _lazy(self):
        try:
            ds = xr.open_dataset(self.path, engine="h5netcdf")
        except Exception as exc:
            raise StoreError(f"{self.path}: not a readable netCDF store ({type(exc).__name__}: {exc}); pass a new path "
                             f"or the right one") from exc
        try:
            yield ds
        finally:
            ds.close()

    def load_run(self, name: str) -> xr.Dataset | None:
        self._load()
        return self._runs.get(name)

    def load_metrics(self, name: str) -> pd.DataFrame | None:
        self._load()
        return self._metrics.get(name)

    def open(self) -> xr.Dataset:
        if self.path is None:
            raise StoreError("an in-memory store has no file to open")
        self._clean_tmp()
        if not self.path.exists():
            raise self._missing()
        try:
            ds = xr.open_dataset(self.path, engine="h5netcdf")
        except Exception as exc:
            raise StoreError(f"{self.path}: not a readable netCDF store ({type(exc).__name__}: {exc}); pass a new path "
                             f"or the right one") from exc
        check_schema(ds.attrs, str(self.path))
        for k in _STORE_ATTRS:
            ds.attrs.pop(k, None)
        if "run" not in ds.dims or ds.sizes.get("step", 0) == 0:
            raise self._nothing_yet()
        return describe(ds)

    # -- writing --------------------------------------------------------------------------------
    def init(self, attrs: dict) -> None:
        self._writer()
        self._load()
        self._attrs.update(attrs)
        self._dirty = True

    def replace(self, ds: xr.Dataset, run_info: dict[str, dict]) -> None:
        """Make the store hold exactly this assembled Dataset (written on ``flush``)."""
        self._writer()
        self._split(ds, run_info)
        for name, one in self._runs.items():
            self._info[name]["steps"] = [int(s) for s in one.step.values]
        self._dirty = True

    def append(self, name: str, records: xr.Dataset, run_attrs: dict) -> None:
        self._writer()
        self._load()
        target = self._pending.get(name)
        old = target["ds"] if target is not None else self._runs.get(name)
        if old is not None and not _fits(records, old):
            raise StoreError(f"{self.path}: the new records of run {name!r} have other layers, pairs or params than the "
                             f"stored ones; recompute the run (or write to a new store)")
        again = np.intersect1d(old.step.values, records.step.values) if old is not None else []
        if len(again):
            raise StoreError(f"{self.path}: steps {again[:5].tolist()} of run {name!r} are stored already; append only "
                             f"new checkpoints")
        ds = records if old is None else xr.concat([old, records], dim="step", join="outer")
        info = target["info"] if target is not None else self._info.get(name, {"name": name, "checkpoints": {}})
        info = _merge_info(info, run_attrs)
        info.update(name=name, steps=[int(s) for s in ds.step.values])
        if target is not None:
            target.update(ds=ds, info=info)
            return
        self._runs[name], self._info[name] = ds, info
        self._commit_metrics(name)
        self._dirty = True

    def _commit_metrics(self, name: str) -> None:
        if name in self._staged_metrics:
            self._metrics[name] = self._staged_metrics.pop(name)

    def commit(self, name: str, run_attrs: dict | None = None) -> None:
        self._writer()
        self._load()
        if name in self._pending:
            self._pending[name]["info"] = _merge_info(self._pending[name]["info"], run_attrs)
            return
        info = _merge_info(self._info.get(name, {"name": name, "checkpoints": {}}), run_attrs)
        info["name"] = name
        self._info[name] = info
        self._commit_metrics(name)
        self._dirty = True

    def write_metrics(self, name: str, metrics: pd.DataFrame | None) -> None:
        self._writer()
        self._load()
        self._staged_metrics[name] = metrics

    @contextlib.contextmanager
    def rebuilding(self, name: str):
        self._writer()
        self._load()
        self._pending[name] = {"ds": None, "info": {"name": name, "checkpoints": {}}}
        try:
            yield
        except BaseException:
            self._pending.pop(name, None)
            raise
        target = self._pending.pop(name)
        if target["ds"] is None and name in self._runs:
            return
        self._runs[name] = target["ds"]
        self._info[name] = target["info"]
        self._commit_metrics(name)
        self._dirty = True

    def flush(self) -> None:
        if self.path is None:  # in-memory store (compute without a store)
            return
        self._writer()
        self._load()
        runs = {n: ds for n, ds in self._runs.items() if ds is not None and ds.sizes.get("step", 0)}
        if not runs or not self._dirty:  # nothing committed, or nothing new (a rebuild in progress)
            return
        order = {n: i for i, n in enumerate(self._info)}
        runs = dict(sorted(runs.items(), key=lambda kv: order.get(kv[0], len(order))))
        ds = assemble(runs, metrics=self._metrics, attrs=self._attrs, run_attrs=self._info)
        for name, one in runs.items():
            self._info[name]["steps"] = [int(s) for s in one.step.values]
        ds.attrs["run_info"] = json.dumps({n: self._info[n] for n in runs})
        ds.attrs["store_layout"] = STORE_LAYOUT
        enc = {v: {"zlib": True, "complevel": 4} for v in ds.data_vars if ds[v].dtype.kind == "f"}
        try:
            # Serialised in memory first: HDF5 never writes to the disk itself, so a full disk is an
            # OSError from Python's write below (HDF5 crashes the process on some write errors).
            data = bytes(ds.to_netcdf(engine="h5netcdf", encoding=enc))
        except (ValueError, TypeError) as exc:
            raise StoreError(f"{self.path}: cannot be written as netCDF ({exc}); write a Zarr store instead "
                             f"(a path without .nc)") from exc
        with _io(self.path, "write the netCDF store"):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            free = shutil.disk_usage(self.path.parent).free
            if free < len(data) + (1 << 20):
                raise OSError(errno.ENOSPC, f"needs {len(data) / 1e6:.1f} MB, {free / 1e6:.1f} MB free", str(self.path))
            _atomic_write_bytes(self.path, data, tmp_prefix=self._tmp_prefix())
        self._dirty = False
