"""Recording spectra inside the training loop, without keeping checkpoints (docs/recorder.md).

    rec = sedviz.Recorder("spectra.zarr", run="baseline", every=50)
    for step in range(1, n_steps + 1):
        ...; opt.step()
        rec.record(model, step, metrics={"train_loss": loss.item()})
    rec.close()

Every ``every`` steps the recorder takes what the checkpoint pass (:func:`sedviz.compute`) takes
from a checkpoint of the same weights, with the same engine (:class:`sedviz.pipeline.Engine`):
singular values and measures, ``align``, per-parameter sketches and exact update dot products
(``delta_dot``). It works on the model's own tensors on the model's device (a float32 matrix is
decomposed in place; no copy of the model goes to the CPU; only the numbers of a record do), and
appends records through the store's writer API, holding the writer lock from the first record
to :meth:`Recorder.close`.

What is kept between records
----------------------------
- For ``delta_dot`` (``max_lag`` not None): the previous snapshot of every float parameter (a
  clone on the model's device, in its dtype) and the last ``max_lag`` updates (float64, on the
  device, with a few spare rows), as in the checkpoint pass. ``max_lag="auto"`` keeps as many lags (up to 255, at least
  19) as fit in ``exact_memory`` bytes, else none. When device memory is short pass
  ``max_lag=None``: then nothing is kept but the sketches already written, and the trajectory
  analyses use sketch differences (docs/methods.md#spectral-edge), as the checkpoint pass does for large models.
- For ``sva`` (agreement with the final weights, which only exist at the end): the top-``sva_k``
  left and right singular vectors of every layer at every recorded step, on the CPU (float32:
  ``4 * sva_k * (rows + cols)`` bytes per layer per record). :meth:`close` takes the last record
  as the final checkpoint and writes ``sva`` of every step of this session (the run is rewritten
  beside the old one and swapped in, as a recompute). Entries past ``sva_k`` are NaN; entries
  below it equal those of the checkpoint pass (each diagonal entry depends only on the vectors
  of its own rank). ``sva=False`` keeps nothing.

Commits, crashes and resume
---------------------------
Records are committed once ``commit_seconds`` (default 10 s) have passed since the last commit,
or every ``commit_every`` records when given, and on :meth:`flush`/:meth:`close`: a crash loses at
most the records since the last commit. (A commit writes a few files and rewrites the metric log:
~0.1-0.5 s on a busy disk, so committing every record of a fast loop would slow training.) Call
:meth:`flush` when the training saves its own checkpoint (the callbacks do), so that a run
resumed from that checkpoint finds every step before it in the store. A recorder opened on a store that holds
the run continues it: a step already stored is not recorded again; its weights only warm up the
update history (so ``record()`` the step training resumed from). After a resume ``delta_dot``
at a lag that reaches before the resumed step is NaN (those updates were not kept), and the
``sva`` of steps recorded by an earlier session stays NaN (their vectors died with it).

Gradients
---------
:meth:`record_grads` (or ``grads=True`` with a callback) records ``grad_sv`` and
``grad_eff_rank``, ``grad_stable_rank``, ``grad_spectral_norm``, ``grad_fro_norm`` from
``param.grad`` at that moment: call it after ``backward()`` (and after any clipping) and before
``optimizer.step()`` / ``zero_grad()``. With gradient accumulation it sees the accumulated
gradient of the optimizer step.
"""
from __future__ import annotations

import contextlib
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .dataset import run_dataset
from .errors import SedvizError, StoreError
from .io.checkpoints import strip_prefixes
from .io.metrics import metric_name
from .io.store import open_store
from .layers import matrix_view
from .pipeline import Engine, Options, _entries, _prepare_store, plan_fingerprint, plan_run
from .spectra import measures, resolve_dtype

GRAD_VARS = ("grad_sv", "grad_eff_rank", "grad_stable_rank", "grad_spectral_norm", "grad_fro_norm")
LIVE = "live"  # the "checkpoint file" of a recorded step, in the store's checkpoints attr


def _model_config(model):
    """The head count and family of a transformers model (its ``config``), as a config.json gives them."""
    cfg = getattr(model, "config", None)
    if cfg is None or not hasattr(cfg, "to_dict"):
        return None
    from .io.model_config import parse_model_config

    try:
        return parse_model_config(cfg.to_dict(), Path("<model.config>"))
    except Exception:  # a config that is not a plain mapping: heads are then guessed, as without config.json
        return None


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The module whose state-dict names a checkpoint would hold (DDP/DataParallel ``.module``)."""
    while isinstance(model, (torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel)):
        model = model.module
    return model


def _rank() -> int:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank()
    return 0


def _check_local(name: str, t: torch.Tensor) -> None:
    """Sharded parameters (FSDP's DTensor, or a flat-parameter shard) are not supported yet."""
    if type(t).__name__ in ("DTensor", "ShardedTensor") or hasattr(t, "_local_tensor") or hasattr(t, "device_mesh"):
        raise SedvizError(
            f"parameter {name!r} is sharded ({type(t).__name__}): the live recorder does not gather sharded "
            "(FSDP/DTensor) parameters yet. Save checkpoints with a full state dict and use sedviz.compute, "
            "or record an unsharded (DDP or single-device) run"
        )


class Recorder:
    """Record the spectra of a model every ``every`` steps into a store (see the module docs).

    Parameters
    ----------
    store : path of a Zarr folder (default) or ``.nc`` file; created or continued.
    run : the run's name in the store.
    every : record when ``step % every == 0`` (``record(..., force=True)`` records any step).
    grads : the callbacks also record gradient spectra (:meth:`record_grads`).
    commit_every, commit_seconds : commit after this many records (None: no count), or once this
        many seconds have passed since the last commit (a crash loses at most these).
    sva_k : top singular vectors kept per layer and record for ``sva`` (default ``min(k, 10)``, the
        ranks ``sva_score`` averages).
    dtype, k, align, sva, pairs, n_heads, sketch, sketch_dim, sketch_seed, max_lag,
    exact_memory, kinds : as in :func:`sedviz.compute` (the same defaults; ``sketch_dim`` 200,
        ``compute``'s default for windows (10, 20); ``max_lag="all"`` is not known live).
    device : where to compute (default: the device of the model's first parameter).
    on_error : ``"raise"`` or ``"skip"`` (NaN/Inf layers are recorded as NaN with a warning).
    """

    def __init__(self, store, *, run: str = "run", every: int = 1, grads: bool = False, dtype="float32", k: int = 100,
                 align: bool = True, sva: bool = True, sva_k: int | None = None, pairs=None, n_heads: int | None = None,
                 sketch: bool = True, sketch_dim: int = 200, sketch_seed: int = 0, max_lag="auto",
                 exact_memory: int = 512 * 2**20, kinds: dict | None = None, commit_every: int | None = None,
                 commit_seconds: float = 10.0, device=None,
                 on_error: str = "raise", store_format: str | None = None):
        if not isinstance(every, int) or every < 1:
            raise SedvizError(f"every={every!r}: record every N steps with a whole number N >= 1")
        if commit_every is not None and (not isinstance(commit_every, int) or commit_every < 1):
            raise SedvizError(f"commit_every={commit_every!r}: must be a whole number >= 1, or None")
        if not commit_seconds >= 0:
            raise SedvizError(f"commit_seconds={commit_seconds!r}: must be >= 0")
        self.commit_seconds = float(commit_seconds)
        if not isinstance(k, int) or k < 1:
            raise SedvizError(f"k={k!r}: the number of singular vectors to keep must be a whole number >= 1")
        if max_lag == "all":
            raise SedvizError("max_lag='all': a live run's length is not known; give a whole number, 'auto' or None")
        if on_error not in ("raise", "skip"):
            raise SedvizError(f"on_error={on_error!r}: use 'raise' or 'skip'")
        resolve_dtype(dtype)
        self.run, self.every, self.grads, self.commit_every = str(run), every, grads, commit_every
        self.sva_k = int(sva_k) if sva_k is not None else min(k, 10)
        self.opts = Options(
            dtype=str(dtype), k=k, align=align, sva=sva,
            pairs=tuple(tuple(p) if isinstance(p, (list, tuple)) else p for p in pairs) if pairs else None,
            n_heads=n_heads, sketch=sketch, sketch_dim=int(sketch_dim), sketch_seed=sketch_seed, max_lag=max_lag,
            exact_memory=exact_memory, kinds=tuple(sorted(kinds.items())) if kinds else None,
        )
        self.device = torch.device(device) if device is not None else None
        self.on_error = on_error
        self.store = open_store(store, store_format)
        self.active = _rank() == 0  # distributed: rank 0 records, the others do nothing
        self._session: contextlib.ExitStack | None = None
        self.engine: Engine | None = None
        self.plan = None
        self._stored: set[int] = set()
        self._buf: list[dict] = []
        self._since_commit = 0
        self._last_commit = time.monotonic()
        self._metrics: dict[int, dict[str, float]] = {}
        self._metrics_dirty = False
        self._vectors: dict[int, dict] = {}  # step -> layer -> (U, V) top-sva_k, on the CPU
        self._grads: dict[int, dict] = {}  # step -> gradient record (written with the step's record)
        self._last_step: int | None = None
        self._closed = False

    # -- the session ----------------------------------------------------------------------------
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def due(self, step: int) -> bool:
        """True at the steps this recorder records (``step % every == 0``)."""
        return int(step) % self.every == 0

    def _open(self, model: torch.nn.Module) -> None:
        """Take the lock, set up or check the store, plan the run from the model."""
        if self._closed:
            raise SedvizError(f"Recorder for run {self.run!r} is closed; make a new one")
        st = self.store
        session = contextlib.ExitStack()
        session.enter_context(st.writing())
        try:
            params = list(model.parameters())
            if not params:
                raise SedvizError("the model has no parameters to record")
            dev = self.device or params[0].device
            state = self._state(model)
            _prepare_store(st, self.opts, dev)
            plan = plan_run(self.run, state, self.opts, max_steps=1, reference_step=None, config=_model_config(model))
            info = st.runs().get(self.run) or {}
            if info and info.get("plan") not in (None, plan_fingerprint(plan)):
                raise StoreError(
                    f"{st.path}: run {self.run!r} is stored with another layer table or max_lag than this model gives; "
                    "record it under another run name, or into a new store"
                )
            self._stored = {int(s) for s in info.get("checkpoints", {})}
            old = st.load_metrics(self.run) if info else None
            if old is not None and not old.empty:
                for step, row in old.iterrows():
                    self._metrics[int(step)] = {c: float(v) for c, v in row.items() if not np.isnan(v)}
            self.plan = plan
            self.engine = Engine(plan, self.opts, torch.device(dev), on_error=self.on_error)
        except BaseException:
            session.close()
            raise
        self._session = session

    def _run_attrs(self) -> dict:
        return {
            "name": self.run,
            "sources": LIVE,
            "sva_reference_step": None,
            "max_lag": self.plan.max_lag,
            "plan": plan_fingerprint(self.plan),
            "recorder": {"every": self.every, "sva_k": self.sva_k if self.opts.sva else None},
        }

    # Lightning callbacks set this: the LightningModule attribute prefix (``model.``) is dropped, as
    # the checkpoint reader drops it from a .ckpt, so live and checkpoint layer names agree.
    _lightning = False

    def _state(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        # detached views of the live tensors (no copies), named as the checkpoint reader names them
        state = strip_prefixes(_unwrap(model).state_dict(keep_vars=False), lightning=self._lightning)
        for name, t in state.items():
            if isinstance(t, torch.Tensor):
                _check_local(name, t)
        return state

    # -- recording ------------------------------------------------------------------------------
    def record(self, model: torch.nn.Module, step: int, metrics: dict | None = None, *, force: bool = False) -> bool:
        """Record the model's weights at optimizer step ``step`` when it is due (or ``force``);
        ``metrics`` (name -> number) are logged at ``step`` either way. Returns True when a record
        was taken. A step the store already holds is not recorded again: its weights only advance
        the update history (call this at the step training resumed from)."""
        if not self.active:
            return False
        step = int(step)
        if metrics:
            self.record_metrics(step, metrics)
        if not (force or self.due(step)):
            return False
        if self.engine is None:
            self._open(model)
        eng = self.engine
        if self._last_step is not None and step <= self._last_step:
            raise SedvizError(f"record(step={step}) after step {self._last_step}: record steps in increasing order")
        with torch.no_grad():
            entries = _entries(self._state(model))
            if step in self._stored:  # resumed: stored already; advance the update history only
                eng.trajectory(entries, record=False)
                self._keep_prev()
                self._last_step = step
                return False
            entries = eng._check(f"{LIVE} step {step}", entries)
            rec, svds = eng.spectra(f"run {self.run!r} step {step}", entries)
            rec = {**rec, **eng.trajectory(entries)}
            self._keep_prev()
        if self.opts.sva:
            kk = self.sva_k
            self._vectors[step] = {n: (r.U[:, :kk].float().cpu(), r.V[:, :kk].float().cpu())
                                   for n, r in svds.items() if r.U is not None}
        rec["step"], rec["path"] = step, LIVE
        self._buf.append(rec)
        self._last_step = step
        self._since_commit += 1
        due = self.commit_every is not None and self._since_commit >= self.commit_every
        if due or time.monotonic() - self._last_commit >= self.commit_seconds:
            self.flush()
        return True

    def _keep_prev(self) -> None:
        """The engine's previous snapshot must outlive the next optimizer step: clone it on the device."""
        eng = self.engine
        if eng.prev is not None:
            eng.prev = {n: t.detach().clone() for n, t in eng.prev.items()}

    def record_metrics(self, step: int, metrics: dict) -> None:
        """Log metrics (name -> number) at ``step``, on their own cadence (e.g. validation).

        Names are normalized as in logs read from disk (``loss`` -> ``train_loss``, ``eval_loss``
        -> ``val_loss``, ...). Each column is aligned to the recorded steps as the checkpoint pass
        aligns a log (the nearest logged step within half the gap, column by column)."""
        if not self.active:
            return
        row = self._metrics.setdefault(int(step), {})
        for name, value in metrics.items():
            if isinstance(value, torch.Tensor):
                value = value.detach().item() if value.numel() == 1 else None
            if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
                continue
            row[metric_name(name)] = float(value)
        self._metrics_dirty = True

    def record_grads(self, model: torch.nn.Module, step: int, *, force: bool = False) -> bool:
        """Gradient spectra from ``param.grad`` now (after backward, before the optimizer step);
        written with the record of the same step, which must come after this call."""
        if not self.active or not (force or self.due(step)):
            return False
        if self.engine is None:
            self._open(model)
        eng, plan = self.engine, self.plan
        named = strip_prefixes(dict(_unwrap(model).named_parameters()), lightning=self._lightning)
        L, R = len(plan.layers), plan.max_rank
        out = {"grad_sv": np.full((L, R), np.nan, dtype=np.float32 if eng.dtype == torch.float32 else np.float64)}
        for m in GRAD_VARS[1:]:
            out[m] = np.full(L, np.nan)
        with torch.no_grad():
            for i, li in enumerate(plan.layers):
                p = named.get(li.name)
                if p is None or p.grad is None:
                    continue
                _check_local(li.name, p.grad)
                g = matrix_view(p.grad.detach(), li.kind).to(device=eng.device, dtype=eng.dtype)
                if not eng._finite(g):
                    continue
                S = eng._decompose([g], k=None)[0].S
                out["grad_sv"][i, : S.shape[0]] = S.cpu().numpy()
                for m_name, v in measures(S).items():
                    out[f"grad_{m_name}"][i] = float(v)
        self._grads[int(step)] = out
        return True

    # -- writing --------------------------------------------------------------------------------
    def flush(self) -> None:
        """Commit the records and metrics taken so far."""
        if self.engine is None or not self.active:
            return
        st = self.store
        if self._metrics_dirty:
            st.write_metrics(self.run, self._metric_frame())
            self._metrics_dirty = False
        recs, self._buf = self._buf, []
        if recs:
            for r in recs:
                g = self._grads.pop(r["step"], None)
                if g is None and self.grads:
                    g = {v: np.full_like(a, np.nan) for v, a in self._nan_grads().items()}
                if g is not None:
                    r.update(g)
            ds = run_dataset(recs, layers=self.plan.layers, params=self.plan.params, pairs=self.plan.pairs,
                             max_rank=self.plan.max_rank)
            st.append(self.run, ds, {**self._run_attrs(), "checkpoints": {str(r["step"]): LIVE for r in recs}})
            self._stored.update(r["step"] for r in recs)
        else:
            st.commit(self.run, self._run_attrs())
        st.flush()
        self._since_commit = 0
        self._last_commit = time.monotonic()

    def _nan_grads(self) -> dict:
        L, R = len(self.plan.layers), self.plan.max_rank
        return {"grad_sv": np.full((L, R), np.nan, dtype=np.float32), **{m: np.full(L, np.nan) for m in GRAD_VARS[1:]}}

    def _metric_frame(self) -> pd.DataFrame:
        frame = pd.DataFrame.from_dict(self._metrics, orient="index").sort_index()
        frame.index = pd.Index(frame.index.astype(np.int64), name="step")
        return frame.astype(np.float64)

    def close(self) -> None:
        """Commit what is left, finish ``sva`` against the last record, release the store."""
        if self._closed:
            return
        self._closed = True
        if self._session is None:
            return
        try:
            self.flush()
            if self.opts.sva and self._vectors:
                self._finish_sva()
        finally:
            session, self._session = self._session, None
            session.close()
            self.engine = None  # the kept snapshot and update history go with it

    def _finish_sva(self) -> None:
        """Agreement of every step recorded in this session with the last one, written by
        rewriting the run beside the stored one (the store's rebuild) and swapping it in."""
        st, plan, eng = self.store, self.plan, self.engine
        final = max(self._vectors)
        from .spectra import SVD

        def svds(step):
            return {n: SVD(S=torch.empty(0), U=U.to(eng.device), V=V.to(eng.device)) for n, (U, V) in self._vectors[step].items()}

        eng.reference = svds(final)
        ds = st.open()
        info = st.runs()[self.run]
        steps = sorted(int(s) for s in info["checkpoints"])
        one = ds.sel(run=self.run, drop=True).sel(step=steps)
        one = one.sel(layer=[li.name for li in plan.layers]).isel(rank=slice(0, plan.max_rank))
        if plan.pairs:
            one = one.sel(pair=[p.name for p in plan.pairs])
        if "param" in one.dims:
            one = one.sel(param=[p.name for p in plan.params])
        if "proj" in one.dims:
            one = one.isel(proj=slice(0, self.opts.sketch_dim))
        if "lag" in one.dims and plan.max_lag is not None:
            one = one.isel(lag=slice(0, plan.max_lag + 1))
        from .dataset import RECORD_DIMS

        names = [v for v in RECORD_DIMS if v in one.data_vars]
        one = one[names].load()
        recs = []
        for i, step in enumerate(steps):
            rec = {v: one[v].values[i] for v in names}
            if step in self._vectors:
                rec.update(eng._sva(svds(step)))
            rec["step"], rec["path"] = step, LIVE
            recs.append(rec)
        out = run_dataset(recs, layers=plan.layers, params=plan.params, pairs=plan.pairs, max_rank=plan.max_rank)
        attrs = {**self._run_attrs(), "sva_reference_step": final, "checkpoints": {str(s): LIVE for s in steps}}
        with st.rebuilding(self.run):
            st.append(self.run, out, attrs)
        st.flush()
        self._vectors.clear()
