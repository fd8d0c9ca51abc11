"""The command line: compute, info, errors as messages with exit code 2."""
import subprocess
import sys

import numpy as np

import sedviz
from sedviz.cli import main
from helpers import write_mlp_run


def test_compute_then_info(tmp_path, capsys):
    write_mlp_run(tmp_path / "runs" / "a", n=3)
    write_mlp_run(tmp_path / "runs" / "b", n=3, seed=2)
    rc = main(["compute", str(tmp_path / "runs" / "a"), str(tmp_path / "runs" / "b"), "-o", str(tmp_path / "s.zarr"), "-q", "--k", "5"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "runs: 2" in out and "[a] 3 checkpoints" in out
    ds = sedviz.open(tmp_path / "s.zarr")
    assert ds.run.values.tolist() == ["a", "b"] and ds.sizes["rank"] == 32
    assert np.isfinite(ds.eff_rank.values).all()
    assert main(["info", str(tmp_path / "s.zarr")]) == 0
    assert "eff_rank first -> last" in capsys.readouterr().out


def test_errors_are_messages_not_tracebacks(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    r = subprocess.run([sys.executable, "-m", "sedviz.cli", "compute", str(empty), "-o", str(tmp_path / "s.zarr")],
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr and str(empty) in r.stderr
    r = subprocess.run([sys.executable, "-m", "sedviz.cli", "info", str(tmp_path / "missing.zarr")], capture_output=True, text=True)
    assert r.returncode == 2 and "no such store" in r.stderr and "Traceback" not in r.stderr
