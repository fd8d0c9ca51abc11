"""Hostile and odd input around the store: run names that are paths, shard indexes pointing out
of their folder, foreign folders, huge steps, NaN runs, runs without matrices or metric logs,
stores written by the previous layout, a core install without dask, and a lazy open.

Each test asserts the outcome a user needs: the right numbers, or a one-line error that names the
file and the fix, or a warning and a skip; never a file outside the store touched.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr

import sedviz
from helpers import assert_same, write_mlp_run
from sedviz.errors import CheckpointError, SedvizError, StoreError
from sedviz.io.store import open_store, run_key

HERE = Path(__file__).resolve().parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(HERE.parent)}
NAMES = ["..", ".", "a/b", "run_α", "run_β"]


def _tree(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.stat().st_size for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("store_name", ["s.zarr", "s.nc"])
def test_run_names_that_are_paths_or_collide(tmp_path, store_name):
    runs = []
    for i, _ in enumerate(NAMES):
        runs.append(tmp_path / "runs" / f"r{i}")
        write_mlp_run(runs[-1], n=3, seed=i)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("not sedviz's")
    before = _tree(tmp_path / "runs") | {"outside/keep.txt": 12}
    store = tmp_path / "stores" / store_name
    ds = sedviz.compute(runs, store, names=NAMES, progress=False)
    assert ds.run.values.tolist() == NAMES
    for _ in range(2):  # reopen, and compute again (nothing new: the store is left as it is)
        again = sedviz.open(store)
        assert_same(again, ds)
        sedviz.compute(runs, store, names=NAMES, progress=False)
    for i, name in enumerate(NAMES):  # each run holds its own numbers
        one = sedviz.compute(runs[i], progress=False)
        assert_same(ds.sel(run=[name]), one)
    assert _tree(tmp_path / "runs") | {"outside/keep.txt": (outside / "keep.txt").stat().st_size} == before
    assert sorted(p.name for p in store.parent.iterdir() if not p.name.startswith(".")) == [store_name]
    if store_name.endswith(".zarr"):
        keys = sorted(p.stem for p in (store / "sedviz_commits").glob("*.json"))
        assert keys == sorted(run_key(n) for n in NAMES) and len(set(keys)) == len(NAMES)
        assert all(p.parent == store / "runs" for p in (store / "runs").iterdir())


def test_cli_name_dotdot_cannot_reach_outside(tmp_path):
    write_mlp_run(tmp_path / "a", n=2)
    store = tmp_path / "s.zarr"
    (tmp_path / "sibling").mkdir()
    for name in ("..", "."):
        r = subprocess.run([sys.executable, "-m", "sedviz.cli", "compute", str(tmp_path / "a"), "-o", str(store), "--name",
                            name, "-q"], env=ENV, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
    assert (tmp_path / "sibling").is_dir() and (tmp_path / "a" / "step_000010.pt").exists()
    assert sedviz.open(store).run.values.tolist() == ["..", "."]


# ---------------------------------------------------------------------------------------------
# shard indexes


@pytest.mark.parametrize("bad", ["absolute", "dotdot"])
def test_shard_paths_must_stay_in_the_checkpoint_folder(tmp_path, bad):
    from test_io_layouts import save_shards

    states = write_mlp_run(tmp_path / "plain", n=2)
    folder = tmp_path / "run"
    folder.mkdir()
    for i, state in enumerate(states):
        save_shards(state, folder, f"model_step{(i + 1) * 10}", f"model_step{(i + 1) * 10}.safetensors.index.json")
    secret = tmp_path / "secret.safetensors"  # another file with the same tensor names
    from safetensors.torch import save_file

    save_file({k: torch.zeros_like(v).contiguous() for k, v in states[0].items()}, str(secret))
    index = folder / "model_step20.safetensors.index.json"
    doc = json.loads(index.read_text())
    target = str(secret) if bad == "absolute" else "../secret.safetensors"
    doc["weight_map"] = {k: target for k in doc["weight_map"]}
    index.write_text(json.dumps(doc))
    with pytest.raises(CheckpointError, match=r"model_step20\.safetensors\.index\.json: names the shard .*secret"):
        sedviz.io.read_state(index)
    r = subprocess.run([sys.executable, "-m", "sedviz.cli", "compute", str(folder), "-o", str(tmp_path / "s.zarr"), "-q"],
                       env=ENV, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "Traceback" not in r.stderr and "model_step20.safetensors.index.json" in r.stderr
    with pytest.warns(UserWarning, match="not a file name inside"):
        ds = sedviz.compute(folder, progress=False, on_error="skip")
    assert ds.step.values.tolist() == [10]


# ---------------------------------------------------------------------------------------------
# folders that are not stores, stores cut short, options


def test_existing_empty_folder_is_a_store_and_foreign_ones_are_left_alone(tmp_path):
    write_mlp_run(tmp_path / "a", n=2)
    empty = tmp_path / "empty.zarr"
    empty.mkdir()
    assert sedviz.compute(tmp_path / "a", empty, progress=False).sizes["step"] == 2
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "cat.jpg").write_bytes(b"\xff\xd8")
    with pytest.raises(StoreError, match=r"photos: an existing folder that is not a sedviz store \(it holds cat.jpg\)"):
        sedviz.compute(tmp_path / "a", foreign, progress=False)
    assert sorted(p.name for p in foreign.iterdir()) == ["cat.jpg"]  # not even a lock file
    with pytest.raises(StoreError, match="not a sedviz store"):
        sedviz.open(foreign)
    import zarr

    other = zarr.open_group(str(tmp_path / "other.zarr"), mode="w")
    other.attrs["title"] = "someone's data"
    other.create_array("x", shape=(3,), dtype="f8")
    with pytest.raises(StoreError, match="not a sedviz store"):
        sedviz.compute(tmp_path / "a", tmp_path / "other.zarr", progress=False)
    assert (tmp_path / "other.zarr" / "x" / "zarr.json").exists()


def test_a_store_whose_creation_was_cut_short_is_started_again(tmp_path):
    write_mlp_run(tmp_path / "a", n=2)
    store = tmp_path / "s.zarr"
    store.mkdir()
    (store / "zarr.json").write_text(json.dumps({"zarr_format": 3, "node_type": "group", "attributes": {}}))
    with pytest.raises(StoreError, match="no computed checkpoints yet"):
        sedviz.open(store)
    sedviz.compute(tmp_path / "a", store, progress=False, k=8)
    # options fixed by a first compute that committed nothing can change; once a run is stored they cannot
    store2 = tmp_path / "s2.zarr"
    st = open_store(store2)
    with st.writing():
        st.init({"schema_version": 1, "options": json.dumps({"k": 8})})
    assert sedviz.compute(tmp_path / "a", store2, progress=False).sizes["step"] == 2
    with pytest.raises(StoreError, match="k: stored 100, asked 8"):
        sedviz.compute(tmp_path / "a", store2, progress=False, k=8)


def test_netcdf_path_that_is_a_folder(tmp_path):
    write_mlp_run(tmp_path / "a", n=2)
    (tmp_path / "s.nc").mkdir()
    with pytest.raises(StoreError, match="is a folder"):
        sedviz.compute(tmp_path / "a", tmp_path / "s.nc", progress=False)


# ---------------------------------------------------------------------------------------------
# odd runs


def test_step_above_int64_is_refused_or_skipped(tmp_path):
    states = write_mlp_run(tmp_path / "a", n=2)
    torch.save(states[-1], tmp_path / "a" / f"step_{2**64}.pt")
    with pytest.raises(CheckpointError, match=r"step_18446744073709551616\.pt: has step .*\(2\^63 - 1\)"):
        sedviz.compute(tmp_path / "a", progress=False)
    with pytest.warns(UserWarning, match="2\\^63"):
        ds = sedviz.compute(tmp_path / "a", tmp_path / "s.zarr", progress=False, on_error="skip")
    assert ds.step.values.tolist() == [10, 20]


def _nan_run(folder: Path, n=3):
    states = write_mlp_run(folder, n=n)
    for i, st in enumerate(states):
        torch.save({k: torch.full_like(v, float("nan")) for k, v in st.items()}, folder / f"step_{(i + 1) * 10:06d}.pt")


@pytest.mark.parametrize("store_name", ["s.zarr", "s.nc"])
def test_all_nan_steps_and_runs_survive_reopening(tmp_path, store_name, capsys):
    from sedviz.cli import main

    write_mlp_run(tmp_path / "good", n=3)
    _nan_run(tmp_path / "nan")
    store = tmp_path / store_name
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = sedviz.compute([tmp_path / "good", tmp_path / "nan"], store, progress=False, on_error="skip").load()
    assert np.isnan(ds.sv.sel(run="nan")).all() and ds.sizes["step"] == 3
    assert_same(sedviz.open(store), ds)
    write_mlp_run(tmp_path / "good", n=1, start=3)  # extend: the NaN run keeps its steps
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds2 = sedviz.compute([tmp_path / "good", tmp_path / "nan"], store, progress=False, on_error="skip")
    assert json.loads(ds2.attrs["checkpoints"])["nan"].keys() == {"10", "20", "30"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fresh = sedviz.compute([tmp_path / "good", tmp_path / "nan"], progress=False, on_error="skip")
    assert_same(sedviz.open(store), fresh)
    assert np.isnan(fresh.sv.sel(run="nan", step=[10, 20, 30])).all() and fresh.sizes["step"] == 4
    assert main(["info", str(store)]) == 0
    assert "[nan] every value is NaN" in capsys.readouterr().out


def test_run_without_matrices(tmp_path, capsys):
    from sedviz.cli import main

    folder = tmp_path / "vec"
    folder.mkdir()
    g = torch.Generator().manual_seed(0)
    for step in (10, 20):
        torch.save({"scale": torch.randn(7, generator=g), "bias": torch.randn(3, generator=g)}, folder / f"step_{step}.pt")
    for name in ("s.zarr", "s.nc"):
        ds = sedviz.compute(folder, tmp_path / name, progress=False)
        assert ds.sizes["layer"] == 0 and ds.sizes["step"] == 2
        # the trajectory still covers its vectors: <d, d> of the one update is exact
        d = {k: v.double() for k, v in torch.load(folder / "step_20.pt").items()}
        d0 = {k: v.double() for k, v in torch.load(folder / "step_10.pt").items()}
        want = sum(float(((d[k] - d0[k]) ** 2).sum()) for k in d)
        assert float(ds.delta_dot.sel(run="vec", step=20, lag=0).sum()) == pytest.approx(want, rel=1e-12)
        assert_same(sedviz.open(tmp_path / name), ds)
        assert main(["info", str(tmp_path / name)]) == 0
        assert "no weight matrices" in capsys.readouterr().out


def test_run_without_metric_logs_reopens_and_extends_netcdf(tmp_path):
    write_mlp_run(tmp_path / "a", n=3)
    (tmp_path / "a" / "metrics.csv").unlink()
    store = tmp_path / "s.nc"
    ds = sedviz.compute(tmp_path / "a", store, progress=False, sva=False)
    assert_same(sedviz.open(store), ds)
    write_mlp_run(tmp_path / "a", n=2, start=3)
    (tmp_path / "a" / "metrics.csv").unlink()
    ds2 = sedviz.compute(tmp_path / "a", store, progress=False, sva=False)
    assert ds2.sizes["step"] == 5
    assert_same(ds2, sedviz.compute(tmp_path / "a", progress=False, sva=False))


def test_complex_tensors_are_warned_about(tmp_path):
    states = write_mlp_run(tmp_path / "a", n=2)
    for i, st in enumerate(states):
        torch.save({**st, "spectral.filter": torch.randn(4, 4, dtype=torch.complex64)}, tmp_path / "a" / f"step_{(i + 1) * 10:06d}.pt")
    with pytest.warns(UserWarning, match=r"1 complex-valued entries \(spectral.filter\) are left out"):
        ds = sedviz.compute(tmp_path / "a", progress=False)
    assert "spectral.filter" not in ds.layer.values


def test_symlink_loop_is_named_not_a_duplicate(tmp_path):
    write_mlp_run(tmp_path / "a", n=2)
    (tmp_path / "a" / "loop").symlink_to(tmp_path / "a")
    with pytest.warns(UserWarning, match=r"loop: a symbolic link to .*already searched"):
        ds = sedviz.compute(tmp_path / "a", progress=False)
    assert ds.step.values.tolist() == [10, 20]


def test_one_infinite_step_keeps_the_rest_of_the_metric_log(tmp_path):
    write_mlp_run(tmp_path / "a", n=3)
    with open(tmp_path / "a" / "metrics.csv", "a") as f:
        f.write("inf,0.5,0.5\n")
    with pytest.warns(UserWarning, match="infinite 'step'"):
        ds = sedviz.compute(tmp_path / "a", progress=False)
    assert ds.train_loss.sel(run="a").values.tolist() == pytest.approx([1.0, 0.5, 1 / 3])


def test_skip_an_unreadable_checkpoint(tmp_path, monkeypatch):
    write_mlp_run(tmp_path / "a", n=3)
    bad = tmp_path / "a" / "step_000020.pt"
    if os.geteuid() == 0:  # root reads anything: make the open fail as it would for a user
        import builtins

        from sedviz.io import checkpoints

        real_open = builtins.open

        def fake_open(path, *a, **kw):
            if Path(path) == bad:
                raise PermissionError(13, "Permission denied", str(path))
            return real_open(path, *a, **kw)

        monkeypatch.setattr(checkpoints, "open", fake_open, raising=False)
    else:  # pragma: no cover
        bad.chmod(0)
    with pytest.raises(CheckpointError, match=r"step_000020\.pt: cannot be opened \(Permission denied\)"):
        sedviz.compute(tmp_path / "a", progress=False)
    with pytest.warns(UserWarning, match=r"step_000020\.pt: cannot be opened"):
        ds = sedviz.compute(tmp_path / "a", progress=False, on_error="skip")
    assert ds.step.values.tolist() == [10, 30]


# ---------------------------------------------------------------------------------------------
# the netCDF file's neighbours


def test_netcdf_temporary_files_of_dead_writers_are_removed(tmp_path):
    write_mlp_run(tmp_path / "a", n=2)
    store = tmp_path / "s.nc"
    sedviz.compute(tmp_path / "a", store, progress=False)
    host = "".join(c if c.isalnum() or c in "_.-" else "_" for c in socket.gethostname())
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    orphan = tmp_path / f".s.nc.sedviz-tmp-{host}-{int(dead.stdout)}-0123abcd"
    live = tmp_path / f".s.nc.sedviz-tmp-{host}-{os.getpid()}-0123abcd"
    other = tmp_path / ".tmp-notours.nc"
    for f in (orphan, live, other):
        f.write_bytes(b"partial")
    sedviz.open(store)
    assert not orphan.exists() and live.exists() and other.exists()


# ---------------------------------------------------------------------------------------------
# the previous layout


def _legacy_zarr(store: Path, ds: xr.Dataset, metrics: dict) -> None:
    """A store as sedviz wrote it before layout 2: runs/<name>, metrics/<name>, n in the commit."""
    import zarr

    root = zarr.open_group(str(store), mode="w")
    root.attrs.update({k: v for k, v in ds.attrs.items() if k in ("sedviz_version", "schema_version", "options", "device",
                                                                    "dtype")})
    ckpts = json.loads(ds.attrs["checkpoints"])
    refs = json.loads(ds.attrs["sva_reference_step"])
    metric_vars = [v for v in ds.data_vars if ds[v].dims == ("run", "step")]
    for order, run in enumerate(ds.run.values.tolist()):
        one = ds.sel(run=run).drop_vars(["run", *metric_vars])
        one = one.isel(step=np.flatnonzero(one.sv.notnull().any(("layer", "rank")).values)).load()
        for v in one.variables.values():
            v.encoding.clear()
        enc = {v: {"chunks": (1,) + one[v].shape[1:]} for v in one.data_vars}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            one.to_zarr(str(store), group=f"runs/{run}", mode="w", consolidated=False, encoding=enc)
            xr.Dataset.from_dataframe(metrics[run]).to_zarr(str(store), group=f"metrics/{run}", mode="w", consolidated=False)
        info = {"name": run, "n": one.sizes["step"], "checkpoints": ckpts[run], "order": order, "sources": "x",
                "sva_reference_step": refs[run], "max_lag": int(ds.sizes["lag"]) - 1}
        (store / "sedviz_commits").mkdir(exist_ok=True)
        (store / "sedviz_commits" / f"{run}.json").write_text(json.dumps(info))


def test_a_store_of_the_previous_layout_opens_and_extends(tmp_path):
    from sedviz.io import read_metrics
    from sedviz.io.discover import discover_run

    write_mlp_run(tmp_path / "a", n=3)
    write_mlp_run(tmp_path / "b", n=3, seed=1)
    fresh = sedviz.compute([tmp_path / "a", tmp_path / "b"], progress=False, sva=False)
    store = tmp_path / "old.zarr"
    _legacy_zarr(store, fresh, {r: read_metrics(discover_run(tmp_path / r)) for r in ("a", "b")})
    assert_same(sedviz.open(store), fresh)
    write_mlp_run(tmp_path / "a", n=2, start=3)  # appended in place to the old group
    ds = sedviz.compute([tmp_path / "a", tmp_path / "b"], store, progress=False, sva=False)
    assert_same(ds, sedviz.compute([tmp_path / "a", tmp_path / "b"], progress=False, sva=False))
    commits = sorted(p.name for p in (store / "sedviz_commits").glob("*.json"))
    assert commits == sorted(f"{run_key(r)}.json" for r in ("a", "b"))
    assert (store / "runs" / "a").is_dir(), "an old group is extended where it is"


def test_a_netcdf_store_of_the_previous_layout_extends(tmp_path):
    write_mlp_run(tmp_path / "a", n=3)
    store = tmp_path / "s.nc"
    sedviz.compute(tmp_path / "a", store, progress=False, sva=False)
    ds = xr.load_dataset(store, engine="h5netcdf")
    info = json.loads(ds.attrs["run_info"])
    for v in info.values():
        v.pop("steps")  # files written before this version do not list each run's steps
    ds.attrs["run_info"] = json.dumps(info)
    ds.attrs.pop("store_layout")
    store.unlink()
    ds.to_netcdf(store, engine="h5netcdf")
    write_mlp_run(tmp_path / "a", n=1, start=3)
    out = sedviz.compute(tmp_path / "a", store, progress=False, sva=False)
    assert_same(out, sedviz.compute(tmp_path / "a", progress=False, sva=False))


def test_the_shipped_demo_still_opens():
    ds = sedviz.load_demo()
    assert ds.sizes["run"] == 2 and ds.sizes["step"] == 141 and "run_info" not in ds.attrs
    assert np.isfinite(ds.sv.sel(run="grok_wd1").isel(step=-1, rank=0)).all()


# ---------------------------------------------------------------------------------------------
# installs and laziness


def test_core_install_without_dask_computes_into_and_opens_the_default_store(tmp_path):
    write_mlp_run(tmp_path / "a", n=3)
    code = f"""
import sys
sys.modules['dask'] = None  # as if the [dask] extra were not installed: importing it fails
import sedviz
ds = sedviz.compute({str(tmp_path / 'a')!r}, {str(tmp_path / 's.zarr')!r}, progress=False)
again = sedviz.open({str(tmp_path / 's.zarr')!r})
assert float(abs(again.sv - ds.sv).max()) == 0.0
assert not any(m == 'dask' or m.startswith('dask.') for m, v in sys.modules.items() if v is not None)
print(again.sizes['step'])
"""
    r = subprocess.run([sys.executable, "-c", code], env=ENV, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip() == "3"


def test_open_is_lazy(tmp_path):
    """Opening reads the commit files, metadata, coordinates and metric logs: no chunk of a record
    variable. Its values are read when used."""
    write_mlp_run(tmp_path / "a", n=6)
    write_mlp_run(tmp_path / "b", n=4, seed=1, every=7)
    store = tmp_path / "s.zarr"
    fresh = sedviz.compute([tmp_path / "a", tmp_path / "b"], progress=False)
    sedviz.compute([tmp_path / "a", tmp_path / "b"], store, progress=False)
    code = f"""
import json, sys
import sedviz
from sedviz.dataset import RECORD_DIMS
opened = []
sys.addaudithook(lambda ev, args: opened.append(str(args[0])) if ev == 'open' and {str(store)!r} in str(args[0]) else None)
ds = sedviz.open({str(store)!r})
at_open = [p for p in opened if any('/' + v + '/c/' in p for v in RECORD_DIMS)]
n = len(opened)
sv = ds.sv.sel(run='b').values
after = [p for p in opened[n:] if '/sv/c/' in p]
print(json.dumps({{"at_open": at_open, "sv_chunks": len(after), "type": type(ds.sv.variable._data).__name__}}))
"""
    r = subprocess.run([sys.executable, "-c", code], env=ENV, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["at_open"] == [] and out["type"] != "ndarray"
    assert out["sv_chunks"] == 4  # the four checkpoints of run b, one chunk each
    assert_same(sedviz.open(store), fresh)
