"""Spreading checkpoints over Dask workers gives the same numbers as the local pass."""
import pytest

import sedviz
from helpers import assert_same, write_mlp_run

distributed = pytest.importorskip("dask.distributed")


def test_local_cluster_matches_local_pass(tmp_path):
    write_mlp_run(tmp_path / "a", n=9)
    write_mlp_run(tmp_path / "b", n=5, seed=3)
    runs = [tmp_path / "a", tmp_path / "b"]
    local = sedviz.compute(runs, tmp_path / "local.zarr", progress=False, device="cpu")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        with distributed.Client(cluster) as client:
            spread = sedviz.compute(runs, tmp_path / "dask.zarr", progress=False, device="cpu", client=client)
    # every block re-reads the checkpoints its update history needs, so delta_dot agrees too
    assert_same(spread, local, rtol=1e-6)
