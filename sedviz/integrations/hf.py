"""``SedvizCallback`` for ``transformers.Trainer``: record spectra every N optimizer steps.

    from sedviz.integrations.hf import SedvizCallback
    trainer = Trainer(..., callbacks=[SedvizCallback("spectra.zarr", every=50)])

- Spectra at ``on_step_end``, after the optimizer step that made ``state.global_step`` (the step a
  ``checkpoint-N`` folder saved at the same point would carry, so live and checkpoint records
  agree).
- Metrics from ``on_log`` (the log history: ``loss``, ``eval_loss``, ``learning_rate``, ...) at the
  step they were logged, aligned to the recorded steps as a ``trainer_state.json`` would be; the
  end-of-training summary (runtimes, throughputs, ``total_flos``) is left out.
- ``grads=True``: gradient spectra at ``on_pre_optimizer_step``, i.e. after gradient
  accumulation and after clipping to ``max_grad_norm``, before the optimizer step.
- Only the main process records (``state.is_world_process_zero``).
- Records are committed when the trainer saves a checkpoint (``on_save``), besides the recorder's
  own cadence, so a run resumed from a checkpoint finds every earlier step stored.
- ``train(resume_from_checkpoint=...)``: the run in the store is continued (see
  :class:`sedviz.Recorder`); the step resumed from warms up the update history.
"""
from __future__ import annotations

from pathlib import Path

from transformers import TrainerCallback

from ..io.metrics import is_summary, metric_name
from ..recorder import Recorder


class SedvizCallback(TrainerCallback):
    """Record spectra into ``store`` every ``every`` steps; ``run`` defaults to the name of
    ``args.output_dir`` (the name :func:`sedviz.compute` gives that folder's checkpoints).
    Other keywords go to :class:`sedviz.Recorder`."""

    def __init__(self, store, every: int = 50, run: str | None = None, grads: bool = False, **options):
        self.store, self.every, self.run, self.grads, self.options = store, every, run, grads, options
        self.recorder: Recorder | None = None

    def _rec(self, args, state):
        if self.recorder is None and state.is_world_process_zero:
            run = self.run or Path(args.output_dir).name
            self.recorder = Recorder(self.store, run=run, every=self.every, grads=self.grads, **self.options)
        return self.recorder if state.is_world_process_zero else None

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        rec = self._rec(args, state)
        if rec is not None and state.global_step > 0 and rec.due(state.global_step):
            rec.record(model, state.global_step)  # resumed: warms up the update history (or records it once)

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        rec = self._rec(args, state)
        if rec is not None and self.grads:
            rec.record_grads(model, state.global_step + 1)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        rec = self._rec(args, state)
        if rec is not None:
            rec.record(model, state.global_step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        rec = self._rec(args, state)
        # the end-of-training summary (train_runtime, ..., and the run's mean train_loss) is no curve point
        if rec is not None and logs and not any(is_summary(metric_name(k)) for k in logs if k.startswith("train_")):
            rec.record_metrics(state.global_step, {k: v for k, v in logs.items() if not is_summary(metric_name(k))})

    def on_save(self, args, state, control, **kwargs):
        if self.recorder is not None:
            self.recorder.flush()  # a run resumed from this checkpoint finds every step before it stored

    def on_train_end(self, args, state, control, **kwargs):
        if self.recorder is not None:
            self.recorder.close()
            self.recorder = None
