"""Live recording inside real trainers equals the checkpoint pass over the checkpoints those
trainers saved at the same steps with their own save code (tiny models, random weights)."""
from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest
import torch

import sedviz
from test_trainers import Tokens, nearest_within_half_gap

pytestmark = pytest.mark.slow
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
TOL = dict(rtol=2e-5, atol=1e-6)


def same_records(live, ref, *, sva_k):
    assert live.step.values.tolist() == ref.step.values.tolist()
    assert live.layer.values.tolist() == ref.layer.values.tolist()
    names = [v for v in sedviz.dataset.RECORD_DIMS if v in ref.data_vars]
    assert sorted(names) == sorted(v for v in sedviz.dataset.RECORD_DIMS if v in live.data_vars and not v.startswith("grad_"))
    for v in names:
        a, b = live[v].transpose(*ref[v].dims).values, ref[v].values
        if v == "sva":
            a, b = a[..., :sva_k], b[..., :sva_k]
        np.testing.assert_allclose(a, b, equal_nan=True, err_msg=v, **TOL)
        assert np.isfinite(b).any(), v


def test_hf_trainer_live_equals_checkpoints(tmp_path):
    pytest.importorskip("transformers")
    from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments

    from sedviz.integrations.hf import SedvizCallback

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_embd=32, n_head=4, n_layer=2, n_positions=16, vocab_size=40))
    args = TrainingArguments(
        output_dir=str(tmp_path / "run"), max_steps=12, save_steps=4, logging_steps=2, eval_strategy="steps",
        eval_steps=6, per_device_train_batch_size=4, per_device_eval_batch_size=4, learning_rate=1e-3,
        report_to=[], use_cpu=True, seed=0, disable_tqdm=True, max_grad_norm=1.0,
    )
    cb = SedvizCallback(tmp_path / "live.zarr", every=4, grads=True, sketch_dim=32, sva_k=10)
    trainer = Trainer(model=model, args=args, train_dataset=Tokens(32, 40, 8, 0), eval_dataset=Tokens(8, 40, 8, 1),
                      callbacks=[cb])
    trainer.train()
    trainer.save_state()
    ref = sedviz.compute(tmp_path / "run", tmp_path / "ref.zarr", progress=False, sketch_dim=32)
    live = sedviz.open(tmp_path / "live.zarr")
    assert live.run.values.tolist() == ["run"]
    same_records(live, ref, sva_k=10)
    assert "transformer.h.0.attn.c_attn.weight -> transformer.h.0.attn.c_attn.weight" in live.pair.values
    # metrics from the log history: the same alignment as trainer_state.json read from disk
    for col in ("train_loss", "val_loss"):
        np.testing.assert_allclose(live[col].values, ref[col].values, equal_nan=True, err_msg=col)
    assert np.isfinite(live.val_loss.values).sum() == 3  # eval at 6 is within half a gap (2) of steps 4 and 8
    assert "train_runtime" not in live.data_vars
    g = live.grad_sv.sel(run="run")
    assert np.isfinite(g.values).any() and (g.sel(rank=0).values > 0).all()
    # clipped to max_grad_norm=1: the global gradient norm over all parameters is <= 1, so each layer's is too
    assert (live.grad_fro_norm.values <= 1.0 + 1e-5).all()


def test_lightning_trainer_live_equals_checkpoints(tmp_path):
    L = pytest.importorskip("lightning")
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger

    from sedviz.integrations.lightning import SedvizCallback

    class Net(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 12),
                                             torch.nn.Tanh(), torch.nn.Linear(12, 3))

        def training_step(self, batch, _):
            x, y = batch
            loss = torch.nn.functional.cross_entropy(self.model(x), y)
            self.log("train_loss", loss)
            return loss

        def validation_step(self, batch, _):
            x, y = batch
            self.log("val_loss", torch.nn.functional.cross_entropy(self.model(x), y))

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=1e-2)

    g = torch.Generator().manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(400, 8, generator=g), torch.randint(0, 3, (400,), generator=g))
    L.seed_everything(0)
    cb = SedvizCallback(tmp_path / "live.zarr", every=10, run="lit", sketch_dim=32, sva_k=10)
    trainer = L.Trainer(
        max_steps=60, val_check_interval=25, check_val_every_n_epoch=None, limit_val_batches=2,
        callbacks=[ModelCheckpoint(every_n_train_steps=10, save_top_k=-1), cb],
        logger=CSVLogger(tmp_path / "ckpt", name="lightning_logs"), default_root_dir=tmp_path / "ckpt",
        enable_progress_bar=False, enable_model_summary=False, log_every_n_steps=5, accelerator="cpu",
        num_sanity_val_steps=0,
    )
    trainer.fit(Net(), torch.utils.data.DataLoader(data, batch_size=4), torch.utils.data.DataLoader(data, batch_size=50))
    ref = sedviz.compute(tmp_path / "ckpt", tmp_path / "ref.zarr", progress=False, sketch_dim=32, names=["lit"])
    live = sedviz.open(tmp_path / "live.zarr")
    assert live.step.values.tolist() == list(range(10, 61, 10))
    assert live.layer.values.tolist() == ["0.weight", "2.weight", "4.weight"]
    same_records(live, ref, sva_k=10)
    # validation every 25 steps, aligned to the recorded steps by the nearest-within-half-gap rule. The
    # CSVLogger writes a validation at global_step - 1 (24, 49); the recorder at global_step (25, 50), the
    # optimizer step whose weights were validated
    log = pd.read_csv(next((tmp_path / "ckpt").glob("lightning_logs/version_*/metrics.csv")))
    val = {int(s) + 1: v for s, v in zip(log.step, log.val_loss) if not np.isnan(v)}
    assert sorted(val) == [25, 50]
    np.testing.assert_allclose(live.val_loss.sel(run="lit").values, nearest_within_half_gap(val, list(range(10, 61, 10))),
                               rtol=1e-6)
    logged = {int(s): v for s, v in zip(log.step, log.train_loss) if not np.isnan(v)}
    got = live.train_loss.sel(run="lit").values
    for i, s in enumerate(range(10, 61, 10)):
        if s - 1 in logged:  # the CSVLogger writes a step's value at global_step - 1 (before the increment)
            assert got[i] == pytest.approx(logged[s - 1], rel=1e-6)
