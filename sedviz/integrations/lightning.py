"""``SedvizCallback`` for ``lightning.Trainer``: record spectra every N optimizer steps.

    from sedviz.integrations.lightning import SedvizCallback
    trainer = lightning.Trainer(..., callbacks=[SedvizCallback("spectra.zarr", every=50)])

- Spectra at ``on_train_batch_end`` once ``trainer.global_step`` (optimizer steps) reaches a
  multiple of ``every`` (once per step, also with gradient accumulation); the step is the one a
  ``ModelCheckpoint(every_n_train_steps=...)`` file saved there carries, and layer names drop the
  LightningModule attribute prefix as the checkpoint reader does.
- Metrics: at each batch end, the latest training values in ``trainer.callback_metrics`` (what
  ``self.log`` recorded) and the step's loss; after each validation, the validation values, at
  the step validation ran. Aligned to the recorded steps as a ``metrics.csv`` would be.
- ``grads=True``: gradient spectra at ``on_before_optimizer_step``, after accumulation and
  before Lightning clips gradients (``gradient_clip_val``) and steps the optimizer.
- Records are committed when a checkpoint is saved (``on_save_checkpoint``), besides the
  recorder's own cadence, so a run resumed from a checkpoint finds every earlier step stored.
- Only global rank 0 records (``trainer.is_global_zero``).
"""
from __future__ import annotations

from pathlib import Path

import torch

try:
    from lightning.pytorch.callbacks import Callback
except ImportError:  # the standalone package name
    from pytorch_lightning.callbacks import Callback

from ..io.metrics import metric_name
from ..recorder import Recorder


def _numbers(metrics) -> dict:
    out = {}
    for k, v in dict(metrics).items():
        if isinstance(v, torch.Tensor) and v.numel() == 1:
            out[k] = float(v.detach())
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[k] = float(v)
    return out


def _is_val(name: str) -> bool:
    return metric_name(name).startswith(("val_", "valid", "eval"))


class SedvizCallback(Callback):
    """Record spectra into ``store`` every ``every`` optimizer steps; ``run`` defaults to the name
    of ``trainer.default_root_dir``. Other keywords go to :class:`sedviz.Recorder`."""

    def __init__(self, store, every: int = 50, run: str | None = None, grads: bool = False, **options):
        self.store, self.every, self.run, self.grads, self.options = store, every, run, grads, options
        self.recorder: Recorder | None = None
        self._last = None

    def _rec(self, trainer):
        if not trainer.is_global_zero:
            return None
        if self.recorder is None:
            run = self.run or Path(trainer.default_root_dir).name
            self.recorder = Recorder(self.store, run=run, every=self.every, grads=self.grads, **self.options)
            self.recorder._lightning = True
        return self.recorder

    def on_train_start(self, trainer, pl_module):
        rec = self._rec(trainer)
        step = trainer.global_step
        if rec is not None and step > 0 and rec.due(step):
            rec.record(pl_module, step)  # resumed: warms up the update history (or records it once)
            self._last = step

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        rec = self._rec(trainer)
        if rec is not None and self.grads:
            rec.record_grads(pl_module, trainer.global_step + 1)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        rec = self._rec(trainer)
        if rec is None:
            return
        step = trainer.global_step
        metrics = {k: v for k, v in _numbers(trainer.callback_metrics).items() if not _is_val(k)}
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if isinstance(loss, torch.Tensor) and loss.numel() == 1 and "train_loss" not in {metric_name(k) for k in metrics}:
            metrics["train_loss"] = float(loss.detach())
        if step == self._last:  # gradient accumulation: the optimizer has not stepped since
            return
        self._last = step
        rec.record(pl_module, step, metrics=metrics)

    def on_validation_end(self, trainer, pl_module):
        rec = self._rec(trainer)
        if rec is not None and not trainer.sanity_checking:
            rec.record_metrics(trainer.global_step, {k: v for k, v in _numbers(trainer.callback_metrics).items() if _is_val(k)})

    def on_save_checkpoint(self, trainer, pl_module, checkpoint):
        if self.recorder is not None:
            self.recorder.flush()  # a run resumed from this checkpoint finds every step before it stored

    def on_train_end(self, trainer, pl_module):
        if self.recorder is not None:
            self.recorder.close()
            self.recorder = None
