"""The live recorder: the same numbers as the checkpoint pass on the same weights, metrics aligned
as from a log, gradient spectra against numpy float64, resume after a kill."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

import sedviz
from sedviz.recorder import Recorder

TOL = dict(rtol=2e-5, atol=1e-6)


def make_model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(12, 24), nn.Tanh(), nn.Linear(24, 16), nn.Tanh(), nn.Linear(16, 3))


def batch(step):
    g = torch.Generator().manual_seed(1000 + step)
    return torch.randn(32, 12, generator=g), torch.randint(0, 3, (32,), generator=g)


def train(model, steps, *, every, rec=None, ckpt_dir=None, start=0, opt=None, val_every=None, grads=False):
    opt = opt or torch.optim.Adam(model.parameters(), lr=1e-2)
    for step in range(start + 1, steps + 1):
        x, y = batch(step)
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        if rec is not None and grads:
            rec.record_grads(model, step)
        opt.step()
        if rec is not None:
            rec.record(model, step, metrics={"loss": loss.item()})
            if val_every and step % val_every == 0:
                rec.record_metrics(step, {"eval_loss": 1.0 / step})
        if ckpt_dir is not None and step % every == 0:
            torch.save({k: v.detach().clone() for k, v in model.state_dict().items()}, ckpt_dir / f"step_{step:05d}.pt")
    return opt


def record_vars(ds):
    return [v for v in sedviz.dataset.RECORD_DIMS if v in ds.data_vars and not v.startswith("grad_")]


def compare(live, ref, *, sva_k):
    assert live.step.values.tolist() == ref.step.values.tolist()
    assert live.layer.values.tolist() == ref.layer.values.tolist()
    for v in record_vars(ref):
        a, b = live[v].transpose(*ref[v].dims).values, ref[v].values
        if v == "sva":  # kept to sva_k vectors live: the first sva_k entries agree, the rest is NaN
            assert np.isnan(a[..., sva_k:]).all()
            a, b = a[..., :sva_k], b[..., :sva_k]
        elif v == "sva_score":
            continue  # the mean of the first 10 entries: equal when sva_k >= 10 (checked below)
        np.testing.assert_allclose(a, b, equal_nan=True, err_msg=v, **TOL)
        assert np.isfinite(b).any(), v


def test_plain_loop_equals_checkpoint_pass(tmp_path):
    every, steps = 5, 30
    ckpt = tmp_path / "run"
    ckpt.mkdir()
    model = make_model()
    with Recorder(tmp_path / "live.zarr", run="run", every=every, sketch_dim=32, sva_k=12) as rec:
        train(model, steps, every=every, rec=rec, ckpt_dir=ckpt, val_every=10)
    ref = sedviz.compute(ckpt, tmp_path / "ref.zarr", progress=False, sketch_dim=32)
    live = sedviz.open(tmp_path / "live.zarr")
    assert sorted(record_vars(live)) == sorted(record_vars(ref))
    compare(live, ref, sva_k=12)
    np.testing.assert_allclose(live.sva_score.values, ref.sva_score.values, **TOL)
    assert json.loads(live.attrs["sva_reference_step"])["run"] == steps
    # the delta products are exact: lag 0 is |W_t - W_{t-1}|^2 of each parameter
    states = [torch.load(ckpt / f"step_{s:05d}.pt", weights_only=True) for s in range(every, steps + 1, every)]
    name = "2.weight"
    d = (states[3][name].double() - states[2][name].double()).reshape(-1)
    assert live.delta_dot.sel(run="run", param=name, lag=0).values[3] == pytest.approx(float(d @ d), rel=1e-9)


def test_metrics_aligned_as_a_log(tmp_path):
    """train_loss logged every step, val_loss every 10: aligned per column to the recorded steps
    (nearest logged step within half the gap), as the checkpoint pass aligns a log file."""
    model = make_model()
    with Recorder(tmp_path / "s.zarr", every=4, sketch=False, max_lag=None, sva=False, align=False) as rec:
        losses = {}
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        for step in range(1, 21):
            x, y = batch(step)
            loss = nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses[step] = loss.item()
            rec.record(model, step, metrics={"loss": loss.item()})
            if step % 10 == 0:
                rec.record_metrics(step, {"eval_loss": 10.0 / step})
    ds = sedviz.open(tmp_path / "s.zarr")
    assert ds.step.values.tolist() == [4, 8, 12, 16, 20]
    np.testing.assert_allclose(ds.train_loss.sel(run="run").values, [losses[s] for s in (4, 8, 12, 16, 20)])
    # val at 10 and 20; half gaps are 2: 8 -> 10 is 2 away (within), 12 -> 10 is 2 away; the later wins ties
    np.testing.assert_allclose(ds.val_loss.sel(run="run").values, [np.nan, 1.0, 1.0, np.nan, 0.5], equal_nan=True)


def test_gradient_spectra_against_numpy(tmp_path):
    model = make_model()
    grads = {}
    with Recorder(tmp_path / "g.zarr", every=3, sketch=False, max_lag=None, sva=False, grads=True) as rec:
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        for step in range(1, 10):
            x, y = batch(step)
            loss = nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            if rec.record_grads(model, step):
                grads[step] = {n: p.grad.detach().double().numpy().copy() for n, p in model.named_parameters()}
            opt.step()
            rec.record(model, step)
    ds = sedviz.open(tmp_path / "g.zarr").sel(run="run")
    assert sorted(grads) == [3, 6, 9]
    for i, step in enumerate(sorted(grads)):
        for name in ("0.weight", "2.weight", "4.weight"):
            s = np.linalg.svd(grads[step][name], compute_uv=False)
            got = ds.grad_sv.sel(layer=name).values[i]
            np.testing.assert_allclose(got[: len(s)], s, rtol=1e-5, atol=1e-7)
            assert np.isnan(got[len(s):]).all()
            p = s / s.sum()
            eff = np.exp(-(p * np.log(p)).sum()) / len(s)
            assert ds.grad_eff_rank.sel(layer=name).values[i] == pytest.approx(eff, rel=1e-5)
            assert ds.grad_fro_norm.sel(layer=name).values[i] == pytest.approx(np.sqrt((grads[step][name] ** 2).sum()), rel=1e-5)
            assert ds.grad_spectral_norm.sel(layer=name).values[i] == pytest.approx(s[0], rel=1e-5)
            assert ds.grad_stable_rank.sel(layer=name).values[i] == pytest.approx((s**2).sum() / s[0] ** 2, rel=1e-5)


def test_bad_parameters(tmp_path):
    with pytest.raises(sedviz.SedvizError, match="every="):
        Recorder(tmp_path / "x.zarr", every=0)
    with pytest.raises(sedviz.SedvizError, match="max_lag='all'"):
        Recorder(tmp_path / "x.zarr", max_lag="all")
    rec = Recorder(tmp_path / "x.zarr", every=1, sketch=False)
    model = make_model()
    rec.record(model, 2)
    with pytest.raises(sedviz.SedvizError, match="increasing order"):
        rec.record(model, 1)
    rec.close()


def test_lock_held_while_recording(tmp_path):
    model = make_model()
    with Recorder(tmp_path / "s.zarr", every=1, sketch=False) as rec:
        rec.record(model, 1)
        with pytest.raises(sedviz.StoreError, match="another sedviz process"):
            with sedviz.io.store.open_store(tmp_path / "s.zarr").writing():
                pass
    with sedviz.io.store.open_store(tmp_path / "s.zarr").writing():
        pass


TRAIN_SCRIPT = r'''
import sys, time, torch
from pathlib import Path
from torch import nn
sys.path.insert(0, {tests!r})
from test_recorder import batch, make_model
from sedviz import Recorder

store, ckpts, steps, pause = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
ckpts.mkdir(exist_ok=True)
model = make_model()
opt = torch.optim.Adam(model.parameters(), lr=1e-2)
start = 0
saved = sorted(ckpts.glob("train_*.pt"))
if saved:  # resume from the training's own last checkpoint
    state = torch.load(saved[-1], weights_only=True)
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["opt"])
    start = state["step"]
rec = Recorder(store, run="run", every=2, sketch_dim=16, max_lag=0, sva_k=6)
if start:
    rec.record(model, start)  # stored already: warms up the update history
for step in range(start + 1, steps + 1):
    x, y = batch(step)
    loss = nn.functional.cross_entropy(model(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    rec.record(model, step, metrics={"loss": loss.item()})
    if step % 4 == 0:
        rec.flush()  # commit what the checkpoint covers
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step}, ckpts / f"train_{step:05d}.pt")
    time.sleep(pause)
rec.close()
'''


@pytest.mark.slow
def test_resume_after_kill_gives_the_same_store(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    script = tmp_path / "train.py"
    script.write_text(TRAIN_SCRIPT.replace("{tests!r}", repr(str(Path(__file__).parent))))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    steps = 24

    def run(store, ckpts, pause="0", **kw):
        return subprocess.Popen([sys.executable, str(script), str(store), str(ckpts), str(steps), pause], env=env, **kw)

    assert run(tmp_path / "whole.zarr", tmp_path / "ck_whole").wait(timeout=300) == 0
    proc = run(tmp_path / "cut.zarr", tmp_path / "ck_cut", pause="0.3")
    st = sedviz.io.store.open_store(tmp_path / "cut.zarr")
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and int((st.runs().get("run") or {}).get("n", 0)) < 4:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    n_cut = int(st.runs()["run"]["n"])
    assert 4 <= n_cut < steps // 2, "killed before the end of training"
    cut_steps = sorted(int(s) for s in st.runs()["run"]["checkpoints"])
    resumed = run(tmp_path / "cut.zarr", tmp_path / "ck_cut", stderr=subprocess.PIPE, text=True)
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    assert "stopped without releasing" in err  # the killed writer's lock is taken over
    whole, cut = sedviz.open(tmp_path / "whole.zarr"), sedviz.open(tmp_path / "cut.zarr")
    assert cut.step.values.tolist() == whole.step.values.tolist() == list(range(2, steps + 1, 2))
    for v in record_vars(whole):
        a, b = cut[v].values, whole[v].values
        if v in ("sva", "sva_score"):  # steps of the killed session keep NaN agreement (their vectors died)
            later = ~np.isin(whole.step.values, cut_steps)
            assert np.isnan(a[:, ~later]).all()
            a, b = a[:, later], b[:, later]
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9, equal_nan=True, err_msg=v)
    np.testing.assert_allclose(cut.train_loss.values, whole.train_loss.values, rtol=1e-6)


def test_distributed_rank_zero_only_and_sharded_params_refused(tmp_path, monkeypatch):
    import sedviz.recorder as recorder_mod

    model = make_model()
    monkeypatch.setattr(recorder_mod, "_rank", lambda: 1)
    rec = Recorder(tmp_path / "r1.zarr", every=1)
    assert rec.record(model, 1, metrics={"loss": 1.0}) is False
    rec.close()
    assert not (tmp_path / "r1.zarr").exists()  # other ranks never touch the store
    monkeypatch.setattr(recorder_mod, "_rank", lambda: 0)

    class DTensor(torch.Tensor):  # stands in for torch.distributed.tensor.DTensor (FSDP2's parameters)
        pass

    sharded = {"0.weight": torch.Tensor._make_subclass(DTensor, torch.zeros(4, 4))}
    monkeypatch.setattr(model, "state_dict", lambda keep_vars=False: sharded)
    with pytest.raises(sedviz.SedvizError, match="sharded.*not supported|FSDP"):
        Recorder(tmp_path / "r0.zarr", every=1).record(model, 1)


@pytest.mark.slow
def test_demo_recorded_live_equals_demo_from_checkpoints(tmp_path, capsys):
    """``sedviz demo --live``: both runs recorded while training equal the checkpoint pass over the
    checkpoints train_demo writes (tiny config), metrics included."""
    from sedviz import demo
    from sedviz.cli import main

    tiny = {"p": 11, "d_model": 16, "n_heads": 2, "d_mlp": 32, "steps": 25, "every": 10, "lr": 1e-2}
    runs = demo.train_demo(tmp_path / "ck", config=tiny, progress=False)
    ref = sedviz.compute(runs, tmp_path / "ref.zarr", progress=False, sketch_dim=32)
    demo.record_demo(tmp_path / "live.zarr", config=tiny, progress=False, sketch_dim=32, sva_k=16)
    live = sedviz.open(tmp_path / "live.zarr")
    assert live.run.values.tolist() == ref.run.values.tolist() == list(demo.RUNS)
    assert live.step.values.tolist() == [0, 10, 20, 25]
    compare(live, ref, sva_k=16)
    for col in ("train_loss", "train_acc", "val_loss", "val_acc"):
        np.testing.assert_allclose(live[col].values, ref[col].values, rtol=1e-12, err_msg=col)
    assert main(["demo", str(tmp_path / "x"), "--live", "--ship", "-q"]) != 0
    assert "drop --live" in capsys.readouterr().err


def test_netcdf_store(tmp_path):
    model = make_model()
    with Recorder(tmp_path / "live.nc", every=2, sketch_dim=8, sva_k=4) as rec:
        train(model, 6, every=2, rec=rec)
    ds = sedviz.open(tmp_path / "live.nc")
    assert ds.step.values.tolist() == [2, 4, 6]
    s = torch.linalg.svdvals(model[2].weight.detach().double()).numpy()
    np.testing.assert_allclose(ds.sv.sel(run="run", layer="2.weight", step=6).values[: len(s)], s, rtol=1e-5)
    # agreement of the last record with itself: 1 on its top sva_k ranks
    last = ds.sva.sel(run="run", step=6).values
    np.testing.assert_allclose(last[:2, :4], 1.0, rtol=1e-5)
    np.testing.assert_allclose(last[2, :3], 1.0, rtol=1e-5)  # the 3 x 16 head has rank 3
    assert np.isnan(last[2, 3:]).all() and np.isnan(last[:, 4:]).all()
    assert np.isfinite(ds.train_loss.values).all()
