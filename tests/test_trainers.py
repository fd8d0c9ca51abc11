"""Runs written by real trainers: a Hugging Face ``Trainer`` with ``save_steps`` and a Lightning
``Trainer`` with ``ModelCheckpoint(every_n_train_steps=...)`` and ``CSVLogger``, validating on
another cadence than the checkpoints. Metrics are checked against the rule of
:func:`sedviz.dataset.align_metrics`, applied here by brute force to the logs as written."""
from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest
import torch

import sedviz

pytestmark = pytest.mark.slow
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def nearest_within_half_gap(logged: dict[int, float], checkpoints: list[int]) -> list[float]:
    """For each checkpoint c: the value at the logged step nearest to c within half the gap to the
    neighbouring checkpoint on that side (later step on ties), else NaN. Written out plainly."""
    out = []
    for i, c in enumerate(checkpoints):
        gap_before = c - checkpoints[i - 1] if i > 0 else (checkpoints[1] - c if len(checkpoints) > 1 else 0)
        gap_after = checkpoints[i + 1] - c if i + 1 < len(checkpoints) else gap_before
        best = None
        for s in sorted(logged):
            ok = (s <= c and c - s <= gap_before / 2) or (s >= c and s - c <= gap_after / 2)
            if ok and (best is None or abs(s - c) <= abs(best - c)):
                best = s
        out.append(np.nan if best is None else logged[best])
    return out


class Tokens(torch.utils.data.Dataset):
    def __init__(self, n, vocab, length, seed):
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randint(0, vocab, (n, length), generator=g)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"input_ids": self.x[i], "labels": self.x[i]}


def test_hf_trainer_run(tmp_path):
    transformers = pytest.importorskip("transformers")
    from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_embd=64, n_head=4, n_layer=1, n_positions=16, vocab_size=50))
    args = TrainingArguments(
        output_dir=str(tmp_path / "run"), max_steps=12, save_steps=4, logging_steps=2, eval_strategy="steps",
        eval_steps=6, per_device_train_batch_size=4, per_device_eval_batch_size=4, learning_rate=1e-3,
        report_to=[], use_cpu=True, seed=0, disable_tqdm=True,
    )
    trainer = Trainer(model=model, args=args, train_dataset=Tokens(32, 50, 8, 0), eval_dataset=Tokens(8, 50, 8, 1))
    trainer.train()
    trainer.save_state()  # as the transformers example scripts do: output_dir/trainer_state.json with the summary
    ds = sedviz.compute(tmp_path / "run", progress=False, sketch=False)
    assert ds.step.values.tolist() == [4, 8, 12]
    assert "transformer.h.0.attn.c_attn.weight -> transformer.h.0.attn.c_attn.weight" in ds.pair.values
    state = json.loads((tmp_path / "run" / "trainer_state.json").read_text())
    history = state["log_history"]
    loss = {e["step"]: e["loss"] for e in history if "loss" in e}
    val = {e["step"]: e["eval_loss"] for e in history if "eval_loss" in e}
    np.testing.assert_allclose(ds.train_loss.sel(run="run").values, nearest_within_half_gap(loss, [4, 8, 12]))
    np.testing.assert_allclose(ds.val_loss.sel(run="run").values, nearest_within_half_gap(val, [4, 8, 12]))
    # the end-of-training summary is a run attribute, not a curve
    for name in ("train_runtime", "total_flos", "train_samples_per_second", "train_steps_per_second", "eval_runtime"):
        assert name not in ds.data_vars
    summary = json.loads(ds.attrs["summary"])["run"]
    final = next(e for e in history if "train_runtime" in e)
    assert summary["train_runtime"] == pytest.approx(final["train_runtime"])
    assert summary["total_flos"] == pytest.approx(final["total_flos"])


def test_lightning_run_validating_on_another_cadence(tmp_path):
    L = pytest.importorskip("lightning")
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger

    class Net(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))

        def training_step(self, batch, _):
            x, y = batch
            loss = torch.nn.functional.cross_entropy(self.model(x), y)
            self.log("train_loss", loss)
            return loss

        def validation_step(self, batch, _):
            x, y = batch
            self.log("val_loss", torch.nn.functional.cross_entropy(self.model(x), y))

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    g = torch.Generator().manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(600, 8, generator=g), torch.randint(0, 3, (600,), generator=g))
    loader = torch.utils.data.DataLoader(data, batch_size=4)
    L.seed_everything(0)
    trainer = L.Trainer(
        max_steps=150, val_check_interval=25, check_val_every_n_epoch=None, limit_val_batches=2,
        callbacks=[ModelCheckpoint(every_n_train_steps=15, save_top_k=-1)], logger=CSVLogger(tmp_path, name="lightning_logs"),
        default_root_dir=tmp_path, enable_progress_bar=False, enable_model_summary=False, log_every_n_steps=5,
        accelerator="cpu", num_sanity_val_steps=0,
    )
    trainer.fit(Net(), loader, torch.utils.data.DataLoader(data, batch_size=50))
    ds = sedviz.compute(tmp_path, progress=False, sketch=False, names=["lit"])
    steps = ds.step.values.tolist()
    assert steps == list(range(15, 151, 15))
    assert ds.layer.values.tolist() == ["0.weight", "2.weight"]  # the LightningModule attribute prefix is dropped
    assert ds.pair.values.tolist() == ["0.weight -> 2.weight"]
    log = pd.read_csv(next(tmp_path.glob("lightning_logs/version_*/metrics.csv")))
    val = {int(s): v for s, v in zip(log.step, log.val_loss) if not np.isnan(v)}
    expected = nearest_within_half_gap(val, steps)
    np.testing.assert_allclose(ds.val_loss.sel(run="lit").values, expected)
    # validation at every 25 steps reaches 6 of the 10 checkpoints saved every 15
    assert int(np.isfinite(ds.val_loss.sel(run="lit").values).sum()) == 6
