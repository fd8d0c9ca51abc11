"""Faults: a compute killed at every Nth file operation, two writers at once, readers during a
write, a truncated newest checkpoint and a full disk during an update.

Every case asserts the store's promise (sedviz/io/store.py): whatever happens, the store opens
to its last committed state (or says clearly that nothing is computed yet), never shows a
half-written one, and computing again gives exactly the numbers of an uninterrupted compute.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import sedviz
from helpers import assert_same, write_mlp_run
from sedviz.errors import CheckpointError, StoreError, StoreLockedError

HERE = Path(__file__).resolve().parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "SEDVIZ_FLUSH_SECONDS": "0", "PYTHONPATH": str(HERE.parent)}


def _faults(tmp_path, runs, store, *, before=None, every, options=None) -> list[dict]:
    spec = {"runs": [str(r) for r in runs], "store": str(store), "work": str(tmp_path), "before": before,
            "every": every, "options": options or {}}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    proc = subprocess.run([sys.executable, str(HERE / "_store_faults.py"), str(tmp_path / "spec.json")],
                          capture_output=True, text=True, env=ENV, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    head, kills = rows[0], rows[1:]
    assert head["equals_scratch"], "the uninterrupted compute must equal a compute from scratch"
    print(f"{store.name}: {head['ops']} file operations, {head['commits']} commits, {len(kills)} kills")
    return head, kills


def _check(head, kills, *, min_kills):
    assert len(kills) >= min_kills
    assert {1, 2, 3} <= {k["k"] for k in kills}, "the very first operations are kill points"
    assert any(k["commit"] for k in kills), "a commit's rename is a kill point"
    problems = [k for k in kills if not k["killed"] and k["k"] < head["ops"]]
    problems += [k for k in kills if k["open"] not in ("ok", "nothing") or not k["rerun"] or k["leftover"]]
    assert not problems, json.dumps(problems, indent=1)[:4000]


@pytest.mark.slow
def test_kill_at_every_nth_file_operation_zarr(tmp_path):
    write_mlp_run(tmp_path / "a", n=3, width=16)
    write_mlp_run(tmp_path / "b", n=2, width=16, seed=1, every=7)
    head, kills = _faults(tmp_path, [tmp_path / "a", tmp_path / "b"], tmp_path / "s.zarr", every=120)
    _check(head, kills, min_kills=12)


@pytest.mark.slow
def test_kill_during_an_update_that_recomputes_a_run_zarr(tmp_path):
    """A new final checkpoint (sva on, the default) recomputes the run beside the stored one: every
    kill leaves the old run readable exactly as it was, or the complete new one."""
    write_mlp_run(tmp_path / "a", n=2, width=16)
    sedviz.compute(tmp_path / "a", tmp_path / "before.zarr", progress=False)
    write_mlp_run(tmp_path / "a", n=1, width=16, start=2)
    head, kills = _faults(tmp_path, [tmp_path / "a"], tmp_path / "s.zarr", before=str(tmp_path / "before.zarr"), every=90)
    _check(head, kills, min_kills=8)


@pytest.mark.slow
def test_kill_at_every_file_operation_netcdf(tmp_path):
    write_mlp_run(tmp_path / "a", n=3, width=16)
    write_mlp_run(tmp_path / "b", n=2, width=16, seed=1, every=7)
    head, kills = _faults(tmp_path, [tmp_path / "a", tmp_path / "b"], tmp_path / "s.nc", every=3)
    _check(head, kills, min_kills=8)
    assert not list(tmp_path.glob(".s.nc.sedviz-*")), "no temporary file or lock is left beside the store"


# ---------------------------------------------------------------------------------------------
# concurrency


def _cli(*args, **kw):
    return subprocess.Popen([sys.executable, "-m", "sedviz.cli", *map(str, args)], env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def _wait_for_lock(lock: Path, proc, timeout=120) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        try:
            info = json.loads(lock.read_text())
            if info.get("pid") == proc.pid:
                return info
        except (OSError, ValueError):
            pass
        time.sleep(0.02)
    raise AssertionError(f"the writer never took the lock: {proc.communicate()[1][-2000:]}")


def test_second_writer_gets_a_clear_error_naming_the_holder(tmp_path):
    write_mlp_run(tmp_path / "a", n=8, width=32)
    store = tmp_path / "s.zarr"
    first = _cli("compute", tmp_path / "a", "-o", store, "-q")
    holder = _wait_for_lock(store / "sedviz.lock", first)
    first.send_signal(signal.SIGSTOP)  # hold it mid-write while the second one tries
    try:
        second = subprocess.run([sys.executable, "-m", "sedviz.cli", "compute", tmp_path / "a", "-o", store, "-q"],
                                env=ENV, capture_output=True, text=True, timeout=300)
    finally:
        first.send_signal(signal.SIGCONT)
    out, err = first.communicate(timeout=600)
    assert first.returncode == 0, err
    assert second.returncode == 2, second.stderr
    assert "Traceback" not in second.stderr and len(second.stderr.strip().splitlines()) == 1
    assert "another sedviz process is writing to this store" in second.stderr
    assert f"pid {holder['pid']}" in second.stderr and str(store) in second.stderr
    assert not (store / "sedviz.lock").exists(), "the lock is released at the end"
    assert_same(sedviz.open(store), sedviz.compute(tmp_path / "a", progress=False))


def test_writers_started_together_leave_one_good_store(tmp_path):
    write_mlp_run(tmp_path / "a", n=8, width=64)
    write_mlp_run(tmp_path / "b", n=6, width=64, seed=1)
    fresh = sedviz.compute([tmp_path / "a", tmp_path / "b"], progress=False)
    for attempt in range(2):
        store = tmp_path / f"s{attempt}.zarr"
        procs = [_cli("compute", tmp_path / "a", tmp_path / "b", "-o", store, "-q") for _ in range(2)]
        results = [(p.wait(timeout=600), p.stderr.read()) for p in procs]
        for rc, err in results:
            assert rc in (0, 2), err
            assert "Traceback" not in err
            if rc == 2:
                assert "another sedviz process is writing to this store" in err
        assert any(rc == 0 for rc, _ in results)
        assert_same(sedviz.open(store), fresh)


def test_lock_of_a_killed_writer_is_taken_over(tmp_path):
    write_mlp_run(tmp_path / "a", n=10, width=96)
    store = tmp_path / "s.zarr"
    proc = _cli("compute", tmp_path / "a", "-o", store, "-q")
    _wait_for_lock(store / "sedviz.lock", proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (store / "sedviz.lock").exists(), "a killed writer leaves its lock file behind"
    with pytest.warns(UserWarning, match=rf"previous writer \(pid {proc.pid} .*stopped without releasing"):
        ds = sedviz.compute(tmp_path / "a", store, progress=False)
    assert_same(ds, sedviz.compute(tmp_path / "a", progress=False))


def test_in_process_writer_holds_the_lock(tmp_path):
    """The API a live recorder uses: while one writer holds the store, another is refused."""
    from sedviz.io.store import open_store

    write_mlp_run(tmp_path / "a", n=2)
    st = open_store(tmp_path / "s.zarr")
    with st.writing():
        with pytest.raises(StoreLockedError, match=f"pid {os.getpid()}"):
            sedviz.compute(tmp_path / "a", tmp_path / "s.zarr", progress=False)
    sedviz.compute(tmp_path / "a", tmp_path / "s.zarr", progress=False)  # released


@pytest.mark.parametrize("name", ["s.zarr", "s.nc"])
def test_reader_polling_during_a_write_sees_only_committed_states(tmp_path, name):
    write_mlp_run(tmp_path / "a", n=16, width=64)
    write_mlp_run(tmp_path / "b", n=8, width=64, seed=1, every=7)
    store = tmp_path / name
    proc = _cli("compute", tmp_path / "a", tmp_path / "b", "-o", store, "-q")
    counts = {"nothing": 0, "ok": 0}
    seen_steps = []
    while proc.poll() is None:
        try:
            ds = sedviz.open(store).load()
        except StoreError as exc:
            assert "no such store" in str(exc) or "no computed checkpoints yet" in str(exc), exc
            counts["nothing"] += 1
            time.sleep(0.01)
            continue
        counts["ok"] += 1
        seen_steps.append((ds.sizes["run"], ds.sizes["step"], ds))
    assert proc.returncode == 0, proc.stderr.read()
    final = sedviz.open(store).load()
    for _, _, ds in seen_steps:  # every state a reader saw is a part of the final one, value for value
        part = final.sel(run=ds.run.values, step=ds.step.values)
        for v in ds.data_vars:
            np.testing.assert_array_equal(ds[v].values, part[v].transpose(*ds[v].dims).values, err_msg=v)
    print(f"{name}: {counts['ok']} opens showed data, {counts['nothing']} said nothing is computed yet")
    assert counts["ok"] >= 2


# ---------------------------------------------------------------------------------------------
# an update that cannot read its new checkpoints, or cannot write


def test_truncated_newest_checkpoint_during_an_update_keeps_the_stored_run(tmp_path):
    """Training still writing its newest file: the default options (sva on) would recompute the
    run for a new final checkpoint, so the final is read and checked before anything changes."""
    write_mlp_run(tmp_path / "a", n=4)
    store = tmp_path / "s.zarr"
    before = sedviz.compute(tmp_path / "a", store, progress=False).load()
    write_mlp_run(tmp_path / "a", n=2, start=4)  # steps 50 and 60
    newest = tmp_path / "a" / "step_000060.pt"
    data = newest.read_bytes()
    newest.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="step_000060.pt"):
        sedviz.compute(tmp_path / "a", store, progress=False)
    assert_same(sedviz.open(store), before)
    # on_error='skip': the newest is left out with a warning, the rest is computed
    with pytest.warns(UserWarning, match="step_000060.pt"):
        ds = sedviz.compute(tmp_path / "a", store, progress=False, on_error="skip")
    assert ds.step.values.tolist() == [10, 20, 30, 40, 50]
    newest.write_bytes(data)  # the save completes: the run is recomputed for its new final
    with pytest.warns(UserWarning, match="recomputing all 6 checkpoints"):
        ds = sedviz.compute(tmp_path / "a", store, progress=False)
    assert_same(ds, sedviz.compute(tmp_path / "a", progress=False))


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MB tmpfs (needs root and mount; skipped elsewhere)."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("a full disk is simulated with a small tmpfs, which needs root")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip()})")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


@pytest.mark.parametrize("name", ["s.zarr", "s.nc"])
def test_full_disk_is_a_clear_error_and_loses_nothing(tmp_path, small_disk, name):
    write_mlp_run(tmp_path / "a", n=3, width=16)
    store = small_disk / name
    before = sedviz.compute(tmp_path / "a", store, progress=False).load()
    write_mlp_run(tmp_path / "a", n=12, width=16, start=3)  # more than the full disk holds
    filler = small_disk / "filler"
    free = shutil.disk_usage(small_disk).free
    filler.write_bytes(b"\0" * max(0, free - 96 * 1024))
    cmd = [sys.executable, "-m", "sedviz.cli", "compute", str(tmp_path / "a"), "-o", str(store), "-q"]
    r = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=600)
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])  # a message, not a crash (-11 would be a segfault)
    errors = [line for line in r.stderr.splitlines() if not line.startswith("sedviz: warning:")]
    assert len(errors) == 1 and "Traceback" not in r.stderr, r.stderr  # one line: file, cause, fix
    assert str(store) in errors[0] and "disk is full" in errors[0] and "keeps its last committed state" in errors[0]
    assert_same(sedviz.open(store), before)  # the last commit, intact
    filler.unlink()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = sedviz.compute(tmp_path / "a", store, progress=False)  # space again: completes
    assert_same(ds, sedviz.compute(tmp_path / "a", progress=False))
    leftovers = [p.name for p in small_disk.rglob("*") if ".sedviz-tmp-" in p.name or p.name.endswith(".partial")]
    assert not leftovers


def test_read_only_and_impossible_output_paths(tmp_path):
    write_mlp_run(tmp_path / "a", n=2)
    (tmp_path / "file").write_text("x")
    for target in (tmp_path / "file" / "s.zarr", tmp_path / "file" / "s.nc"):
        r = subprocess.run([sys.executable, "-m", "sedviz.cli", "compute", str(tmp_path / "a"), "-o", str(target), "-q"],
                           env=ENV, capture_output=True, text=True, timeout=300)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
        assert "not a folder" in r.stderr and str(tmp_path / "file") in r.stderr
    if os.geteuid() == 0 and shutil.which("mount"):
        ro = tmp_path / "ro"
        ro.mkdir()
        if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(ro)]).returncode == 0:
            try:
                with pytest.raises(StoreError, match="read-only"):
                    sedviz.compute(tmp_path / "a", ro / "s.zarr", progress=False)
            finally:
                subprocess.run(["umount", "-l", str(ro)])
    else:  # pragma: no cover - as a user: a folder without write permission
        (tmp_path / "locked").mkdir(mode=0o500)
        with pytest.raises(StoreError, match="No permission"):
            sedviz.compute(tmp_path / "a", tmp_path / "locked" / "s.zarr", progress=False)
