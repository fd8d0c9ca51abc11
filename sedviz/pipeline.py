"""The streaming pass: every checkpoint read once, every matrix decomposed once.

For each run the final checkpoint is read first (its top-k singular vectors are the reference
for the agreement ``sva``, docs/methods.md#agreement-with-the-final-checkpoint), then the others
in step order. From each checkpoint the pass takes everything any analysis needs: singular values
and measures (docs/methods.md#effective-rank), top-k vectors for consecutive pairs (``align``,
docs/methods.md#alignment-of-consecutive-layers) and for ``sva``, per-parameter JL sketches and
exact dot products of consecutive updates (docs/methods.md#spectral-edge). Only a record of
numbers leaves the pass, so memory holds about one checkpoint, plus the last ``max_lag`` updates when exact update
dot products are on (they are on automatically only while they fit in ``exact_memory``).

Work per checkpoint is independent except for the update history, so the pass splits a run
into contiguous blocks; a block first re-reads (without decomposing) the ``max_lag + 1``
checkpoints before it. Locally there is one block per run; with a Dask client, blocks are
spread over the workers and their records written by the client, giving the same numbers.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from typing import Iterator

import numpy as np
import torch

from . import pairs as pairs_mod
from ._version import __version__
from .analysis.alignment import agreement_diag, pair_diag, score
from .dataset import SCHEMA_VERSION, ParamInfo, assemble, run_dataset
from .errors import CheckpointError, SedvizError, StoreError
from .io import RunSource, discover_runs, read_metrics, read_state
from .io.store import NetCDFStore, Store, open_store
from .layers import LayerInfo, is_buffer, layer_kind, matrix_view, model_layers
from .sketch import Sketcher
from .spectra import SVD, decompose, measures, resolve_device, resolve_dtype
from .threads import using_threads

ON_ERROR = ("raise", "skip")


@dataclass(frozen=True)
class Options:
    """Every option that changes a number; stored in the store's attrs and checked on resume."""

    dtype: str = "float32"
    k: int = 100
    align: bool = True
    sva: bool = True
    pairs: tuple | None = None
    n_heads: int | None = None
    sketch: bool = True
    sketch_dim: int = 200
    sketch_seed: int = 0
    max_lag: int | str | None = "auto"
    kinds: tuple | None = None
    exact_memory: int = 512 * 2**20

    def numeric(self) -> dict:
        out = asdict(self)
        out.pop("exact_memory")
        out["pairs"] = [list(p) if isinstance(p, (tuple, list)) else p.name for p in self.pairs] if self.pairs else None
        out["kinds"] = dict(self.kinds) if self.kinds else None
        return out


@dataclass
class RunPlan:
    """What the pass needs to know about one run before reading its checkpoints."""

    name: str
    layers: list[LayerInfo]
    params: list[ParamInfo]
    pairs: list
    max_rank: int
    max_lag: int | None
    reference_step: int | None
    checkpoints: dict[int, str] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# per-checkpoint work


def _entries(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Trained float parameters, tied duplicates (same storage) dropped, in state-dict order."""
    seen = set()
    out = {}
    for name, t in state.items():
        if not isinstance(t, torch.Tensor) or is_buffer(name, t):
            continue
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), tuple(t.stride())) if t.numel() else None
        if key is not None and key in seen:
            continue
        seen.add(key)
        out[name] = t
    return out


def plan_run(name: str, state: dict, opts: Options, *, max_steps: int, reference_step: int | None, config=None) -> RunPlan:
    """Layer table, parameter table, pairs and history length of a run, from one checkpoint.

    ``config``: the run's :class:`~sedviz.io.model_config.ModelConfig` (``config.json``), which gives
    the head count when ``opts.n_heads`` is None, and the model family."""
    entries = _entries(state)
    if not entries:
        raise SedvizError(f"run {name!r}: its checkpoints hold no float parameters; is this a model checkpoint?")
    kinds = dict(opts.kinds or ())
    unknown = sorted(set(kinds) - set(entries))
    if unknown:
        raise SedvizError(f"kinds= names {unknown} that are not parameters of run {name!r}; its matrices are {[n for n, t in entries.items() if t.ndim >= 2][:12]}")
    try:
        layers = model_layers(entries, kinds=kinds, model_type=getattr(config, "model_type", None))
    except ValueError as exc:
        raise SedvizError(f"kinds=: {exc}") from None
    kind_of = {li.name: li.kind for li in layers}
    params = sorted(
        (ParamInfo(n, int(t.numel()), kind_of.get(n) or layer_kind(n, tuple(t.shape))) for n, t in entries.items()),
        key=lambda p: p.name,
    )
    pairs = []
    if opts.align and layers:
        n_heads, source = opts.n_heads, "n_heads"
        if n_heads is None and getattr(config, "n_heads", None) is not None:
            n_heads, source = config.n_heads, f"{config.path}: the head count"
        pairs = pairs_mod.consecutive_pairs(layers, explicit=list(opts.pairs) if opts.pairs else None, n_heads=n_heads,
                                            n_heads_source=source, tied_embeddings=getattr(config, "tied_embeddings", None))
    max_rank = max((min(li.rows, li.cols) for li in layers), default=1)
    total = sum(p.size for p in params)
    max_lag = _resolve_max_lag(opts.max_lag, total, max_steps, opts.exact_memory)
    complex_ = [n for n, t in state.items() if isinstance(t, torch.Tensor) and t.is_complex()]
    if complex_:
        warnings.warn(
            f"run {name!r}: {len(complex_)} complex-valued entries ({', '.join(complex_[:5])}) are left out: sedviz "
            "analyses real-valued weights (save their real and imaginary parts as two tensors to include them)",
            stacklevel=3,
        )
    return RunPlan(name, layers, params, pairs, max_rank, max_lag, reference_step)


def plan_fingerprint(plan: RunPlan) -> str:
    """A hash of everything that fixes the shape of a run's records (layers, params, pairs, ranks,
    lags): records of two plans with the same fingerprint can be stacked along ``step``."""
    import hashlib

    table = {
        "layers": [[li.name, list(li.shape), li.kind] for li in plan.layers],
        "params": [[p.name, p.size, p.kind] for p in plan.params],
        "pairs": [p.name for p in plan.pairs],
        "max_rank": plan.max_rank,
        "max_lag": plan.max_lag,
    }
    return hashlib.sha256(json.dumps(table, sort_keys=True).encode()).hexdigest()[:16]


AUTO_MAX_LAG = 255  # max_lag="auto": windows of up to 256 checkpoints, exact drift for runs up to 256


def _resolve_max_lag(max_lag, n_params: int, n_steps: int, budget: int) -> int | None:
    """``auto``: exact dot products of each update with the previous ones up to lag 255 when that
    many updates (float64, 8 bytes per parameter, plus the current one) fit in ``budget`` bytes;
    else as many lags as fit, if that is at least 19 (a 20-checkpoint window); else none (sketches
    only). It depends on the model's size only, never on the run's length, so adding checkpoints
    to a run never changes it. ``all``: every lag of the run as it is now (``n_steps - 1``)."""
    if max_lag is None or max_lag is False:
        return None
    if max_lag == "all":
        return max(n_steps - 1, 1)
    if max_lag == "auto":
        fit = budget // (8 * max(n_params, 1)) - 1
        return min(AUTO_MAX_LAG, fit) if fit >= 19 else None
    if isinstance(max_lag, int) and max_lag >= 0:
        return max_lag
    raise SedvizError(f"max_lag={max_lag!r}: use 'auto', 'all', None or a whole number >= 0")


class Engine:
    """Turns checkpoints of one run into records; holds the update history between them."""

    def __init__(self, plan: RunPlan, opts: Options, device: torch.device, *, on_error: str, reference=None):
        self.plan = plan
        self.opts = opts
        self.device = device
        self.dtype = resolve_dtype(opts.dtype)
        self.on_error = on_error
        self.reference = reference  # layer -> SVD of the final checkpoint (top-k vectors)
        self.sketcher = Sketcher(opts.sketch_dim, opts.sketch_seed, device) if opts.sketch else None
        self.prev: dict[str, torch.Tensor] | None = None
        self.history: dict[str, _History] = {}  # parameter -> its last max_lag updates
        self.n_updates = 0  # updates seen (how many a parameter that appears late has missed)
        self._warned: set = set()
        self.vectors = opts.sva or bool(plan.pairs)

    # -- validation ---------------------------------------------------------------------------
    @staticmethod
    def _finite(m: torch.Tensor) -> bool:
        """True when every entry is finite. A NaN or +-Inf entry makes the sum NaN or Inf, so one
        reduction (no bool copy of the matrix: 25x cheaper than isfinite().all() on a CPU) decides
        the common case; only a non-finite sum (or a float overflow) is checked entry by entry."""
        return bool(torch.isfinite(m.sum())) or bool(torch.isfinite(m).all())

    def _check(self, path: str, entries: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        for li in self.plan.layers:
            t = entries.get(li.name)
            if t is None:
                self._warn_once(("missing", li.name), f"{path}: layer {li.name!r} is missing; its values are NaN at this step")
            elif tuple(t.shape) != li.shape:
                raise CheckpointError(
                    path,
                    f"layer {li.name!r} has shape {tuple(t.shape)} here but {li.shape} in the run's final checkpoint",
                    "a layer must keep its shape through a run to be compared across steps; split the run into "
                    "two folders at the change, or pass on_error='skip' to leave this checkpoint out",
                )
        return entries

    def _warn_once(self, key, msg):
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(msg, stacklevel=3)

    _malloc_trim = None  # libc's malloc_trim, found on first use (False where there is none)

    @classmethod
    def trim(cls) -> None:
        """Give the C heap's free pages back to the OS (glibc ``malloc_trim``; a no-op elsewhere).

        LAPACK workspaces freed between the kept top-k vectors leave the heap fragmented: without
        this, a GPT-2-size checkpoint with vectors leaves ~150 MB of free but resident heap behind,
        and it accumulates into the run's peak. Costs ~2 ms."""
        if cls._malloc_trim is None:
            try:
                import ctypes

                cls._malloc_trim = ctypes.CDLL(None).malloc_trim
            except (OSError, AttributeError):
                cls._malloc_trim = False
        if cls._malloc_trim:
            cls._malloc_trim(0)

    @staticmethod
    def prefetch(ref) -> None:
        """Start reading a checkpoint's files into the page cache in the background (best effort)."""
        if ref is None or not hasattr(os, "posix_fadvise"):
            return
        import threading
        from pathlib import Path

        def files():
            from .io.checkpoints import INDEX_SUFFIXES, hf_model_file, index_shards

            path = Path(getattr(ref, "path", ref))
            if path.is_dir():  # a checkpoint-N/ folder: its weights only, not the optimizer state
                path = hf_model_file(path)
                if path is None:
                    return []
            return index_shards(path) if path.name.lower().endswith(INDEX_SUFFIXES) else [path]

        def willneed():
            try:
                for f in files():
                    fd = os.open(f, os.O_RDONLY)
                    try:
                        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
                    finally:
                        os.close(fd)
            except Exception:  # a hint only: the read itself reports any problem with the file
                pass

        threading.Thread(target=willneed, daemon=True, name="sedviz-prefetch").start()

    # -- the work -----------------------------------------------------------------------------
    def spectra(self, path: str, entries: dict[str, torch.Tensor]) -> tuple[dict, dict[str, SVD]]:
        """Singular values, measures, sva and align of one checkpoint; also the layers' SVDs."""
        L, R = len(self.plan.layers), self.plan.max_rank
        k = self.opts.k
        sv = np.full((L, R), np.nan, dtype=np.float32 if self.dtype == torch.float32 else np.float64)
        meas = {m: np.full(L, np.nan) for m in ("eff_rank", "stable_rank", "spectral_norm", "fro_norm")}
        mats, idx = [], []
        for i, li in enumerate(self.plan.layers):
            t = entries.get(li.name)
            if t is None:
                continue
            m = matrix_view(t, li.kind).to(device=self.device, dtype=self.dtype)  # no copy when it already is
            if not self._finite(m):
                if self.on_error == "raise":
                    raise CheckpointError(
                        path, f"layer {li.name!r} holds NaN or Inf values",
                        "the run diverged here; pass on_error='skip' to record NaN for this layer and go on",
                    )
                self._warn_once(("nan", li.name, path), f"{path}: layer {li.name!r} holds NaN/Inf; its values are NaN at this step")
                continue
            mats.append(m)
            idx.append(i)
        svds: dict[str, SVD] = {}
        if mats:
            res = self._decompose(mats, k=k if self.vectors else None)
            S_all = []
            for i, r in zip(idx, res):
                name = self.plan.layers[i].name
                svds[name] = r
                sv[i, : r.S.shape[0]] = r.S.cpu().numpy()
            for i, r in zip(idx, res):
                for m_name, v in measures(r.S).items():
                    meas[m_name][i] = float(v)
        rec = {"sv": sv, **meas}
        if self.opts.sva:
            rec.update(self._sva(svds))
        if self.plan.pairs:
            rec.update(self._align(entries, svds))
        return rec, svds

    def _decompose(self, mats: list[torch.Tensor], k: int | None) -> list[SVD]:
        """:func:`decompose`, one matrix at a time on a CPU, handing freed heap back after each large
        one: LAPACK's copies and workspaces of 2-10 MB land between the kept top-k vectors on the C
        heap, and without trimming the heap of a GPT-2-size checkpoint grows by up to ~300 MB
        (measured) before the end-of-checkpoint trim. Costs ~2 ms per large matrix (<1%)."""
        if self.device.type != "cpu":
            return decompose(mats, k=k)
        out = []
        for m in mats:
            out.extend(decompose([m], k=k))
            if m.numel() >= 1 << 19:
                self.trim()
        return out

    def _sva(self, svds):
        L, R, k = len(self.plan.layers), self.plan.max_rank, self.opts.k
        out = np.full((L, R), np.nan)
        sc = np.full(L, np.nan)
        for i, li in enumerate(self.plan.layers):
            now, ref = svds.get(li.name), (self.reference or {}).get(li.name)
            if now is None or ref is None or ref.U is None:
                continue
            d = agreement_diag(now.U, now.V, ref.U, ref.V, k).cpu().numpy()[:R]
            out[i, : len(d)] = d
            sc[i] = score(d)
        return {"sva": out, "sva_score": sc}

    def _align(self, entries, svds):
        R, k = self.plan.max_rank, self.opts.k
        blocks = {}
        for key in pairs_mod.operands(self.plan.pairs):
            layer, rows, cols = key
            if layer not in svds:
                continue  # missing here, or non-finite (already warned)
            if rows is None and cols is None:
                r = svds[layer]
                blocks[key] = r
                continue
            t = entries.get(layer)
            if t is None:
                continue
            li = next(li for li in self.plan.layers if li.name == layer)
            m = matrix_view(t, li.kind).to(device=self.device, dtype=self.dtype)
            if rows is not None:
                m = m[rows[0] : rows[1]]
            if cols is not None:
                m = m[:, cols[0] : cols[1]]
            blocks[key] = m
        todo = [key for key, v in blocks.items() if isinstance(v, torch.Tensor)]
        for key, r in zip(todo, self._decompose([blocks[key] for key in todo], k=k)):
            blocks[key] = r
        P = len(self.plan.pairs)
        out = np.full((P, R), np.nan)
        sc = np.full(P, np.nan)
        for j, pair in enumerate(self.plan.pairs):
            if any(op.key not in blocks for term in pair.terms for op in term):
                continue  # a layer of the pair is missing or non-finite at this step
            d = pair_diag(blocks, pair, k).cpu().numpy()[:R]
            out[j, : len(d)] = d
            sc[j] = score(d)
        return {"align": out, "align_score": sc}

    def trajectory(self, entries: dict[str, torch.Tensor], *, record: bool = True) -> dict:
        """Sketches and update dot products; ``record=False`` only advances the history (warm-up)."""
        out = {}
        params = self.plan.params
        if self.sketcher is not None and record:
            sk = np.full((len(params), self.opts.sketch_dim), np.nan)
            for i, p in enumerate(params):
                t = entries.get(p.name)
                if t is not None and t.numel() == p.size:
                    sk[i] = self.sketcher(p.name, t).cpu().numpy()
            out["sketch"] = sk
        if self.plan.max_lag is not None:
            L = self.plan.max_lag
            dd = np.full((len(params), L + 1), np.nan)
            cur = {p.name: entries[p.name] for p in params if p.name in entries and entries[p.name].numel() == p.size}
            if self.prev is not None:
                for i, p in enumerate(params):
                    a, b = cur.get(p.name), self.prev.get(p.name)
                    hist = self.history.get(p.name) if L else None
                    if a is None or b is None:
                        if hist is not None:
                            hist.push(None)
                        continue
                    d = (a.to(self.device, torch.float64) - b.to(self.device, torch.float64)).reshape(-1)
                    if hist is None and L:
                        hist = self.history[p.name] = _History(L, d.numel(), self.device, self.n_updates)
                    dd[i, 0] = float(d @ d)
                    if hist is not None:
                        dots = hist.dots(d)  # lags 1..len(hist), one matrix-vector product
                        dd[i, 1 : 1 + len(dots)] = dots
                        hist.push(d)
                self.n_updates += 1
            self.prev = cur
            if record:
                out["delta_dot"] = dd
        return out


class _History:
    """The last ``size`` updates of one parameter, oldest first, as rows of one float64 matrix.

    Rows live in a buffer of ``size`` + a few spare rows (at most an eighth more, 16 at most, so
    the memory stays within what ``max_lag="auto"`` budgets), so that the window of the last
    ``size`` updates is always one contiguous slice: the dot products of a new update with all of
    them are one matrix-vector product, not one small product (and one device sync) per lag. When
    the spare rows are used up, the window moves to the front (one copy every few updates). A
    missing update is a row of NaN, whose products are NaN."""

    def __init__(self, size: int, n: int, device, missed: int = 0):
        self.size = max(int(size), 1)
        self.buf = torch.full((self.size + max(1, min(16, self.size // 8)), n), float("nan"), dtype=torch.float64, device=device)
        self.end = 0  # rows [start, end) hold the window
        for _ in range(min(missed, self.size)):
            self.push(None)

    def __len__(self) -> int:
        return min(self.end, self.size)

    def push(self, d: torch.Tensor | None) -> None:
        if self.end == self.buf.shape[0]:  # full: move the last size - 1 rows to the front
            keep = self.size - 1
            if keep:
                self.buf[:keep] = self.buf[self.end - keep : self.end].clone()
            self.end = keep
        if d is None:
            self.buf[self.end].fill_(float("nan"))
        else:
            self.buf[self.end].copy_(d)
        self.end += 1

    def dots(self, d: torch.Tensor) -> np.ndarray:
        """d . u for the window's updates u, most recent first (lag 1, 2, ...)."""
        n = len(self)
        if n == 0:
            return np.empty(0)
        return torch.mv(self.buf[self.end - n : self.end], d).flip(0).cpu().numpy()


# ---------------------------------------------------------------------------------------------
# a block of consecutive checkpoints (the unit of parallel work)


def _read(ref, on_error: str) -> dict | None:
    try:
        return read_state(ref)
    except CheckpointError as exc:
        if on_error == "raise":
            raise
        warnings.warn(f"skipped: {exc}", stacklevel=2)
        return None


def _read_final(refs, on_error):
    """The last readable checkpoint of a run (with on_error='skip', unreadable last ones are passed over)."""
    for ref in reversed(refs):
        state = _read(ref, on_error)
        if state is not None:
            return ref, state
    raise SedvizError(f"no checkpoint of {refs[0].path.parent} could be read; see the warnings above for each file")


def process_block(
    plan: RunPlan,
    opts: Options,
    refs: list,
    warmup: list,
    *,
    device: str,
    on_error: str,
    reference=None,
    cached: dict | None = None,
) -> Iterator[dict]:
    """Records of ``refs`` (ascending steps), after replaying ``warmup`` into the update history.

    ``cached`` maps a step to (entries, spectra record) already computed for it (the final
    checkpoint, read first for the reference), so it is not decomposed twice. Entries may be
    ``None``: the checkpoint is then read again only if the trajectory (sketches, update dot
    products) needs it, so a caller need not keep a whole checkpoint mapped for the run's length.

    While one checkpoint is processed, the next one's files are read ahead into the OS page cache
    (``posix_fadvise(WILLNEED)`` in a background thread): disk reads overlap the decompositions,
    at no cost in this process's memory (cached pages are not mapped until the checkpoint is read).
    A checkpoint's tensors are released before its record is yielded, so at most one checkpoint is
    mapped while the caller writes records.
    """
    eng = Engine(plan, opts, torch.device(device), on_error=on_error, reference=reference)
    order = list(warmup) + list(refs)
    for i, ref in enumerate(warmup):
        Engine.prefetch(order[i + 1] if i + 1 < len(order) else None)
        state = _read(ref, on_error)
        if state is not None:
            eng.trajectory(_entries(state), record=False)
        state = None
    trajectory = opts.sketch or plan.max_lag is not None
    for i, ref in enumerate(refs):
        j = len(warmup) + i + 1
        Engine.prefetch(order[j] if j < len(order) else None)
        hit = (cached or {}).get(ref.step)
        state = entries = None
        if hit is not None:
            entries, rec = hit
            if entries is None and trajectory:
                state = _read(ref, on_error)
                if state is None:
                    continue
                entries = _entries(state)
        else:
            state = _read(ref, on_error)
            if state is None:
                continue
            try:
                entries = eng._check(str(ref.path), _entries(state))
                rec, _ = eng.spectra(str(ref.path), entries)
            except CheckpointError as exc:
                if on_error == "raise":
                    raise
                warnings.warn(f"skipped: {exc}", stacklevel=2)
                continue
        rec = {**rec, **eng.trajectory(entries or {}), "step": int(ref.step), "path": str(ref.path)}
        state = entries = hit = None  # unmap before the caller writes (eng.prev keeps it only for exact update dots)
        Engine.trim()
        yield rec


# ---------------------------------------------------------------------------------------------
# compute(): runs -> store -> Dataset


def compute(
    runs,
    store=None,
    *,
    names=None,
    device="auto",
    dtype="float32",
    k: int = 100,
    align: bool = True,
    sva: bool = True,
    pairs=None,
    n_heads: int | None = None,
    sketch: bool = True,
    sketch_dim: int | None = None,
    sketch_seed: int = 0,
    windows=(10, 20),
    max_lag="auto",
    exact_memory: int = 512 * 2**20,
    kinds: dict | None = None,
    on_error: str = "raise",
    client=None,
    store_format: str | None = None,
    progress: bool = True,
    threads: int | None = None,
):
    """Compute the spectra of every checkpoint of one or many runs into one Dataset.

    Parameters
    ----------
    runs : path or list of paths
        Run folders of checkpoints (see docs: plain torch, Lightning, safetensors, HF folders).
    store : path, optional
        Zarr folder (default) or ``.nc`` file. Existing stores are extended: only checkpoints
        they lack are computed, unless agreement ``sva`` has a new final checkpoint or the exact
        update products change, which recomputes the run beside the stored one (a warning says
        why). The store is locked while this runs (another writer gets a StoreError naming it).
        ``None`` keeps everything in memory.
    device : ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda"``.
    dtype : ``"float32"`` (default, as in Yunis et al.) or ``"float64"``.
    k : number of top singular vectors kept for ``align`` and ``sva`` (docs/methods.md#alignment-of-consecutive-layers, #agreement-with-the-final-checkpoint).
    align, sva : compute alignment of consecutive pairs / agreement with the final checkpoint.
    pairs : explicit list of ``("src", "dst")`` layer-name pairs instead of detection.
    sketch, sketch_dim, sketch_seed : per-parameter JL sketches (docs/methods.md#spectral-edge); ``sketch_dim``
        defaults to 10 x the largest of ``windows``.
    max_lag : exact update dot products up to this lag: ``"auto"`` (up to 255 as the model's size
        and ``exact_memory`` allow, independent of the run's length), ``"all"``, an int or None.
    kinds : ``{name: kind}`` for layers whose kind the name does not reveal (e.g. a transposed
        conv called ``1.weight``); :func:`sedviz.layers.kinds_from_model` reads them from a model.
    on_error : ``"raise"`` (default) or ``"skip"``: warn and leave a bad checkpoint out.
    client : a ``dask.distributed.Client`` to spread checkpoints over its workers.
    progress : a progress bar per run, and one line when a store already holds every checkpoint.
    threads : torch threads for the pass (restored afterwards); default ``OMP_NUM_THREADS`` when
        set, else 1 (:mod:`sedviz.threads`; docs/cli.md has the measurements).

    Returns
    -------
    xarray.Dataset with dims (run, step, layer, rank, ...) as in docs/schema.md; with a store, the
    store opened lazily (as :func:`sedviz.open`).
    """
    if on_error not in ON_ERROR:
        raise SedvizError(f"on_error={on_error!r}: use one of {ON_ERROR}")
    if not isinstance(k, int) or k < 1:
        raise SedvizError(f"k={k!r}: the number of singular vectors to keep must be a whole number >= 1")
    windows = _check_windows(windows)
    sketch_dim = int(sketch_dim or 10 * max(windows))
    if sketch_dim < 1:
        raise SedvizError(f"sketch_dim={sketch_dim!r}: must be >= 1 (the default is 10 x the largest window)")
    resolve_dtype(dtype)
    dev = resolve_device(device)
    opts = Options(
        dtype=str(dtype), k=k, align=align, sva=sva, pairs=tuple(tuple(p) if isinstance(p, (list, tuple)) else p for p in pairs) if pairs else None,
        n_heads=n_heads, sketch=sketch, sketch_dim=sketch_dim, sketch_seed=sketch_seed, max_lag=max_lag, exact_memory=exact_memory,
        kinds=tuple(sorted(kinds.items())) if kinds else None,
    )
    sources = discover_runs(runs if isinstance(runs, (list, tuple)) else [runs], names=names, on_error=on_error)
    for src in sources:
        _check_steps(src, on_error)
    st: Store = open_store(store, store_format) if store is not None else NetCDFStore(None)
    with st.writing(), using_threads(threads):  # the writer lock: a second writer gets a StoreError naming this process
        _prepare_store(st, opts, dev)
        done = sum(_compute_run(st, src, opts, dev, on_error=on_error, client=client, progress=progress)
                   for src in sources)
        st.flush()
    if progress and done == 0 and store is not None:
        print(f"nothing new to compute: {st.path} holds every checkpoint of {len(sources)} run(s)", file=sys.stderr)
    return st.open() if store is not None else _assemble_memory(st)


_STEP_RANGE = (-(2**63), 2**63 - 1)  # the int64 step coordinate


def _check_steps(src: RunSource, on_error: str) -> None:
    """Drop (with on_error='skip') or refuse checkpoints whose step an int64 coordinate cannot hold."""
    bad = [r for r in src.checkpoints if not _STEP_RANGE[0] <= r.step <= _STEP_RANGE[1]]
    for ref in bad:
        exc = CheckpointError(ref.path, f"has step {ref.step}, more than the largest step sedviz stores (2^63 - 1)",
                              "Rename the file with the optimizer step it was saved at, or move it out of the run "
                              "folder (on_error='skip' leaves it out)")
        if on_error == "raise":
            raise exc
        warnings.warn(f"skipped: {exc}", stacklevel=3)
    if bad:
        src.checkpoints = [r for r in src.checkpoints if r not in bad]
        if not src.checkpoints:
            raise SedvizError(f"run {src.name!r}: no checkpoint of {src.root} is left to compute; see the warnings above")


def _assemble_memory(st: NetCDFStore):
    runs = {n: st.load_run(n) for n in st.runs()}
    runs = {n: d for n, d in runs.items() if d is not None}
    return assemble(runs, metrics={n: st.load_metrics(n) for n in runs}, attrs=st.attrs(), run_attrs=st.runs())


def _check_windows(windows):
    ws = (windows,) if isinstance(windows, int) else tuple(windows)
    if not ws or any((not isinstance(w, (int, np.integer))) or w < 2 for w in ws):
        raise SedvizError(f"windows={windows!r}: give window sizes as whole numbers >= 2, e.g. windows=(10, 20)")
    return tuple(int(w) for w in ws)


def _prepare_store(st: Store, opts: Options, dev: torch.device) -> None:
    """Check an existing store's schema and options (under the writer lock), or set up a new one.
    A store that holds no run yet (a first compute that was cut short) takes the new options."""
    numeric = opts.numeric()
    attrs = st.attrs() if st.path is not None else {}
    if attrs.get("options") is not None or attrs.get("schema_version") is not None:
        from .dataset import check_schema

        check_schema(attrs, str(st.path))
        stored = json.loads(attrs.get("options", "{}"))
        diff = {k: (stored.get(k), v) for k, v in numeric.items() if stored.get(k) != v}
        if not diff:
            return
        if st.runs():
            lines = ", ".join(f"{k}: stored {a!r}, asked {b!r}" for k, (a, b) in diff.items())
            raise StoreError(
                f"{st.path} was computed with other options ({lines}). Pass the stored options to extend it, "
                "or write to a new store."
            )
    st.init(
        {
            "sedviz_version": __version__,
            "schema_version": SCHEMA_VERSION,
            "options": json.dumps(numeric),
            "device": str(dev),
            "dtype": opts.dtype,
        }
    )


def _rebuild_reasons(info: dict, stored: set, plan: RunPlan, opts: Options, final, todo: list) -> list[str]:
    """Why a stored run cannot simply be extended by ``todo`` (empty: append only the new ones)."""
    if not stored:
        return []
    reasons = []
    if opts.sva and info.get("sva_reference_step") != final.step:
        reasons.append(
            f"agreement 'sva' is relative to the final checkpoint, which is now step {final.step} instead of "
            f"{info.get('sva_reference_step')}: every checkpoint's top-k singular vectors are compared again"
        )
    fingerprint = plan_fingerprint(plan)
    if info.get("plan", fingerprint) != fingerprint or info.get("max_lag") != plan.max_lag:
        reasons.append(
            f"the layer table or the lags of the exact update products (max_lag {info.get('max_lag')} -> "
            f"{plan.max_lag}) differ from the stored run's"
        )
    if plan.max_lag is not None and todo and todo[0].step < max(stored):
        reasons.append(
            f"new checkpoints lie inside the stored range (first at step {todo[0].step}), which changes the exact "
            "update products (delta_dot) of every later step"
        )
    return reasons


def _compute_run(st: Store, src: RunSource, opts: Options, dev, *, on_error, client, progress) -> int:
    """Compute the checkpoints of ``src`` the store lacks; returns how many. The final checkpoint is read and checked
    before anything stored changes; a run that must be recomputed is built beside the stored one
    and swapped in when complete (``Store.rebuilding``)."""
    refs = list(src.checkpoints)
    metrics = read_metrics(src, on_error="skip")
    info = st.runs().get(src.name) or {}
    stored = set(int(s) for s in info.get("checkpoints", {}))
    final, final_state = _read_final(refs, on_error)
    final_entries = _entries(final_state)
    plan = plan_run(src.name, final_state, opts, max_steps=len(refs), reference_step=final.step if opts.sva else None,
                    config=src.model_config)
    todo = [r for r in refs if r.step not in stored]
    reasons = _rebuild_reasons(info, stored, plan, opts, final, todo)
    if reasons:
        gone = sorted(stored - {r.step for r in refs})
        if gone:
            raise StoreError(
                f"run {src.name!r} in {st.path} must be recomputed ({'; '.join(reasons)}), but {len(gone)} of its stored "
                f"checkpoints are no longer in {src.root} (steps {gone[:5]}{' ...' if len(gone) > 5 else ''}), so their "
                "results would be lost. Put those files back, or compute the run into a new store"
            )
        warnings.warn(
            f"run {src.name!r}: recomputing all {len(refs)} checkpoints ({'; '.join(reasons)}). The stored results stay "
            "readable until the new ones are complete, then they are replaced",
            stacklevel=3,
        )
        todo = list(refs)
    run_attrs = {
        "name": src.name,
        "sources": str(src.root),
        "sva_reference_step": plan.reference_step,
        "max_lag": plan.max_lag,
        "plan": plan_fingerprint(plan),
    }
    st.write_metrics(src.name, metrics)
    if not todo:
        st.commit(src.name, run_attrs)  # the metric log may have grown
        return 0
    reference, cached = None, {}
    if opts.sva or final in todo:  # decomposed once: the sva reference and/or its own record
        eng = Engine(plan, opts, dev, on_error=on_error)
        final_rec, final_svds = eng.spectra(str(final.path), eng._check(str(final.path), final_entries))
        if opts.sva:  # the reference is the final's own top-k vectors; its agreement is with itself
            reference = final_svds
            eng.reference = reference
            final_rec.update(eng._sva(final_svds))
        if final in todo:
            cached = {final.step: (None, final_rec)}
        del eng, final_svds
    del final_state, final_entries  # not kept mapped for the whole run: process_block re-reads it if needed
    order = list(refs)
    pos = {r.step: i for i, r in enumerate(order)}
    bar = _progress(progress, len(todo), src.name)
    with st.rebuilding(src.name) if reasons else contextlib.nullcontext():
        writer = _Writer(st, plan, run_attrs)
        try:
            if client is None:
                first = pos[todo[0].step]
                warmup = order[max(0, first - (plan.max_lag or 0) - 1) : first] if plan.max_lag is not None else []
                for rec in process_block(plan, opts, todo, warmup, device=str(dev), on_error=on_error, reference=reference, cached=cached):
                    writer.add(rec)
                    bar.update(1)
            else:
                for recs in _dask_blocks(client, plan, opts, todo, order, pos, dev, on_error, reference):
                    for rec in recs:
                        writer.add(rec)
                    bar.update(len(recs))
        finally:
            writer.flush()  # in a rebuild, staged only: an exception leaves the old data in place
            bar.close()
        if not writer.wrote:
            st.commit(src.name, run_attrs)  # every new checkpoint was skipped: commit the metric log alone
    return len(todo)


class _Writer:
    """Buffers records and appends them to the store every few seconds (atomic per batch)."""

    def __init__(self, st: Store, plan: RunPlan, run_attrs: dict, every_s: float = 5.0):
        self.st, self.plan, self.run_attrs, self.every_s = st, plan, run_attrs, every_s
        self.buf: list[dict] = []
        self.wrote = False
        self.last = time.monotonic()
        # Tests set SEDVIZ_FLUSH_SECONDS=0 to commit every checkpoint (and kill between commits).
        self.every_s = float(os.environ.get("SEDVIZ_FLUSH_SECONDS", every_s))

    def add(self, rec: dict) -> None:
        self.buf.append(rec)
        if time.monotonic() - self.last >= self.every_s:
            self.flush()

    def flush(self) -> None:
        if not self.buf:
            return
        # Taken off the buffer first: a batch the store refused (a full disk) is not offered again by
        # the final flush, whose error would hide the first one.
        recs, self.buf = sorted(self.buf, key=lambda r: r["step"]), []
        ds = run_dataset(recs, layers=self.plan.layers, params=self.plan.params, pairs=self.plan.pairs, max_rank=self.plan.max_rank)
        attrs = {**self.run_attrs, "checkpoints": {str(r["step"]): r["path"] for r in recs}}
        self.st.append(self.plan.name, ds, attrs)
        self.st.flush()
        self.wrote = True
        self.last = time.monotonic()


def _dask_blocks(client, plan, opts, todo, order, pos, dev, on_error, reference):
    from dask.distributed import as_completed

    n_workers = max(1, len(client.scheduler_info().get("workers", {})))
    n_blocks = max(1, min(len(todo), 2 * n_workers))
    size = math.ceil(len(todo) / n_blocks)
    futures = []
    ref_future = client.scatter(reference, broadcast=True) if reference is not None else None
    for b in range(0, len(todo), size):
        block = todo[b : b + size]
        first = pos[block[0].step]
        warmup = order[max(0, first - (plan.max_lag or 0) - 1) : first] if plan.max_lag is not None else []
        futures.append(
            client.submit(_run_block, plan, opts, block, warmup, str(dev), on_error, ref_future, pure=False)
        )
    for fut in as_completed(futures):
        yield fut.result()


def _run_block(plan, opts, refs, warmup, device, on_error, reference):
    return list(process_block(plan, opts, refs, warmup, device=device, on_error=on_error, reference=reference))


def _progress(enabled: bool, total: int, name: str):
    if enabled:
        try:
            from tqdm.auto import tqdm

            return tqdm(total=total, desc=name, unit="ckpt")
        except ImportError:  # pragma: no cover - tqdm is a dependency
            pass

    class _Null:
        def update(self, n):
            pass

        def close(self):
            pass

    return _Null()
