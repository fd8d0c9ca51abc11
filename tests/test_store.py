"""The store: Zarr and netCDF, resume after a kill, increments, options, schema."""
import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import sedviz
from sedviz.errors import StoreError
from sedviz.io.store import run_key
from helpers import assert_same, write_mlp_run


def test_zarr_store_roundtrip_and_increment(tmp_path):
    write_mlp_run(tmp_path / "a", n=6)
    store = tmp_path / "s.zarr"
    ds1 = sedviz.compute(tmp_path / "a", store, progress=False, sva=False)
    assert ds1.sizes["step"] == 6
    assert_same(ds1, sedviz.open(store))
    # training goes on: 3 more checkpoints after the last; only those are computed
    write_mlp_run(tmp_path / "a", n=3, start=6)
    ds2 = sedviz.compute(tmp_path / "a", store, progress=False, sva=False)
    fresh = sedviz.compute(tmp_path / "a", tmp_path / "fresh.zarr", progress=False, sva=False)
    assert ds2.sizes["step"] == 9
    assert_same(ds2, fresh, rtol=1e-6)
    assert float(ds2.train_loss.sel(run="a", step=90)) == pytest.approx(1 / 9)


def test_new_final_checkpoint_recomputes_sva(tmp_path):
    write_mlp_run(tmp_path / "a", n=4)
    store = tmp_path / "s.zarr"
    sedviz.compute(tmp_path / "a", store, progress=False)
    write_mlp_run(tmp_path / "a", n=2, start=4)
    with pytest.warns(UserWarning, match="sva"):
        ds = sedviz.compute(tmp_path / "a", store, progress=False)
    assert json.loads(ds.attrs["sva_reference_step"])["a"] == 60
    final = ds.sva.sel(run="a", step=60).isel(rank=slice(0, 3)).values  # the last layer has rank 3
    np.testing.assert_allclose(final, 1.0, atol=1e-5)


def test_netcdf_store_matches_zarr(tmp_path):
    write_mlp_run(tmp_path / "a", n=4)
    write_mlp_run(tmp_path / "b", n=3, seed=1, every=7)
    z = sedviz.compute([tmp_path / "a", tmp_path / "b"], tmp_path / "s.zarr", progress=False)
    n = sedviz.compute([tmp_path / "a", tmp_path / "b"], tmp_path / "s.nc", progress=False)
    assert_same(z, n)
    assert_same(n, sedviz.open(tmp_path / "s.nc"))
    # runs with different step grids share the union of steps, NaN where a run has no checkpoint
    assert sorted(z.step.values.tolist()) == sorted(set([10, 20, 30, 40, 7, 14, 21]))
    assert np.isnan(z.sv.sel(run="b", step=10)).all()
    # extending the netCDF store keeps what it had
    write_mlp_run(tmp_path / "b", n=2, seed=1, every=7, start=3)
    n2 = sedviz.compute([tmp_path / "a", tmp_path / "b"], tmp_path / "s.nc", progress=False, sva=True)
    assert n2.sizes["step"] == 9


def test_options_mismatch_is_refused(tmp_path):
    write_mlp_run(tmp_path / "a", n=3)
    sedviz.compute(tmp_path / "a", tmp_path / "s.zarr", progress=False, k=8)
    with pytest.raises(StoreError, match=r"k: stored 8, asked 100"):
        sedviz.compute(tmp_path / "a", tmp_path / "s.zarr", progress=False)


def test_store_from_another_schema_says_recompute(tmp_path):
    import zarr

    write_mlp_run(tmp_path / "a", n=2)
    sedviz.compute(tmp_path / "a", tmp_path / "s.zarr", progress=False)
    zarr.open_group(str(tmp_path / "s.zarr"), mode="a").attrs["schema_version"] = 0
    with pytest.raises(StoreError, match="Recompute it"):
        sedviz.open(tmp_path / "s.zarr")


def test_open_missing_store_is_clear(tmp_path):
    with pytest.raises(StoreError, match="no such store"):
        sedviz.open(tmp_path / "nope.zarr")


def test_killed_compute_resumes_to_identical_results(tmp_path):
    write_mlp_run(tmp_path / "a", n=40, width=160)
    store = tmp_path / "s.zarr"
    env = {**os.environ, "SEDVIZ_FLUSH_SECONDS": "0"}
    cmd = [sys.executable, "-m", "sedviz.cli", "compute", str(tmp_path / "a"), "-o", str(store), "-q"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    commit = store / "sedviz_commits" / f"{run_key('a')}.json"
    deadline = time.time() + 120
    while time.time() < deadline:
        if commit.exists() and json.loads(commit.read_text())["n"] >= 5:
            break
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    n_done = json.loads(commit.read_text())["n"]
    assert 5 <= n_done < 40, "the kill should land mid-run"
    partial = sedviz.open(store)  # a killed store opens, with what was committed
    assert partial.sizes["step"] == n_done
    assert len(json.loads(commit.read_text())["checkpoints"]) == n_done  # every commit is remembered
    resumed = sedviz.compute(tmp_path / "a", store, progress=False)
    fresh = sedviz.compute(tmp_path / "a", tmp_path / "fresh.zarr", progress=False)
    assert resumed.sizes["step"] == 40
    assert_same(resumed, fresh, rtol=1e-6)


def test_uncommitted_rows_are_ignored_and_truncated(tmp_path):
    """A process killed between appending rows and committing them leaves extra rows."""
    write_mlp_run(tmp_path / "a", n=5)
    store = tmp_path / "s.zarr"
    sedviz.compute(tmp_path / "a", store, progress=False, sva=False)
    commit = store / "sedviz_commits" / f"{run_key('a')}.json"
    info = json.loads(commit.read_text())
    info["n"] = 3  # as if the last two rows were appended but never committed
    info["checkpoints"] = {k: v for k, v in info["checkpoints"].items() if int(k) <= 30}
    commit.write_text(json.dumps(info))
    assert sedviz.open(store).sizes["step"] == 3
    ds = sedviz.compute(tmp_path / "a", store, progress=False, sva=False)
    assert_same(ds, sedviz.compute(tmp_path / "a", progress=False, sva=False), rtol=1e-6)


def test_runs_keep_the_order_they_were_given_in(tmp_path):
    write_mlp_run(tmp_path / "zeta", n=2)
    write_mlp_run(tmp_path / "alpha", n=2, seed=1)
    for store in ("s.zarr", "s.nc"):
        ds = sedviz.compute([tmp_path / "zeta", tmp_path / "alpha"], tmp_path / store, progress=False)
        assert ds.run.values.tolist() == ["zeta", "alpha"]
        assert sedviz.open(tmp_path / store).run.values.tolist() == ["zeta", "alpha"]


@pytest.mark.parametrize("name", ["s.zarr", "s.nc"])
def test_writer_api_appends_commits_resumes_and_rebuilds(tmp_path, name):
    """The API another in-process writer (a live recorder) uses: lock, append batches, commit,
    resume in a new session; a rebuild that fails leaves the stored run as it was."""
    from sedviz.io.store import open_store

    write_mlp_run(tmp_path / "a", n=5)
    full = sedviz.compute(tmp_path / "a", progress=False, sva=False).load()
    one = full.sel(run="a").drop_vars("run")
    metric_vars = [v for v in one.data_vars if one[v].dims == ("step",)]
    records = one.drop_vars(metric_vars)
    attrs = {k: full.attrs[k] for k in ("sedviz_version", "schema_version", "options", "device", "dtype")}
    st = open_store(tmp_path / name)
    with pytest.raises(StoreError, match="writing"):
        st.append("a", records.isel(step=[0]), {})
    with st.writing():
        st.init(attrs)
        st.write_metrics("a", one[metric_vars].to_dataframe())
        st.append("a", records.isel(step=[0, 1]), {"checkpoints": {"10": "x10", "20": "x20"}})
        st.append("a", records.isel(step=[2]), {"checkpoints": {"30": "x30"}})
        st.flush()
        assert sedviz.open(tmp_path / name).step.values.tolist() == [10, 20, 30]  # readable while the lock is held
        with pytest.raises(StoreError, match=r"steps \[30\] .*are stored already"):
            st.append("a", records.isel(step=[2]), {})
    with st.writing():  # a new session resumes from the commit
        assert set(st.runs()["a"]["checkpoints"]) == {"10", "20", "30"}
        st.write_metrics("a", one[metric_vars].to_dataframe())  # netCDF keeps only values at stored steps
        st.append("a", records.isel(step=[3, 4]), {"checkpoints": {"40": "x40", "50": "x50"}})
        st.flush()
    assert_same(sedviz.open(tmp_path / name), full)
    with st.writing():
        with pytest.raises(RuntimeError, match="boom"):
            with st.rebuilding("a"):
                st.append("a", records.isel(step=[0]), {})
                raise RuntimeError("boom")
        st.flush()
    assert_same(sedviz.open(tmp_path / name), full)
    with st.writing():
        with st.rebuilding("a"):
            st.append("a", records.isel(step=[0, 1]), {})
        st.flush()
    assert sedviz.open(tmp_path / name).step.values.tolist() == [10, 20]


def _count_spectra(monkeypatch):
    from sedviz.pipeline import Engine

    calls = []
    real = Engine.spectra

    def counting(self, path, entries):
        calls.append(path)
        return real(self, path, entries)

    monkeypatch.setattr(Engine, "spectra", counting)
    return calls


def test_default_options_add_only_new_checkpoints(tmp_path, monkeypatch):
    """max_lag='auto' no longer depends on the run's length: with sva off, checkpoints after the
    final are the only ones decomposed; with sva on (the default) and the final unchanged (a
    compute that stopped early), only the missing ones are."""
    write_mlp_run(tmp_path / "a", n=4)
    store = tmp_path / "s.zarr"
    sedviz.compute(tmp_path / "a", store, progress=False, sva=False)
    write_mlp_run(tmp_path / "a", n=2, start=4)
    calls = _count_spectra(monkeypatch)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "recomputing" warning
        ds = sedviz.compute(tmp_path / "a", store, progress=False, sva=False)
    assert sorted(Path(c).name for c in calls) == ["step_000050.pt", "step_000060.pt"]
    assert_same(ds, sedviz.compute(tmp_path / "a", progress=False, sva=False))
    assert ds.sizes["lag"] == 256  # 'auto' at this size, whatever the number of checkpoints

    store2 = tmp_path / "s2.zarr"
    sedviz.compute(tmp_path / "a", store2, progress=False)
    commit = store2 / "sedviz_commits" / f"{run_key('a')}.json"
    info = json.loads(commit.read_text())  # as if the compute had stopped before its last two commits
    info["n"] -= 2
    for step in ("50", "60"):
        del info["checkpoints"][step]
    commit.write_text(json.dumps(info))
    calls.clear()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = sedviz.compute(tmp_path / "a", store2, progress=False)
    assert sorted(Path(c).name for c in calls) == ["step_000050.pt", "step_000060.pt"]  # the final once
    assert_same(ds, sedviz.compute(tmp_path / "a", progress=False))
