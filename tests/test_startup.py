"""A light start: what `import sedviz`, `sedviz --help` and `sedviz info` load (timings: benchmarks/startup.py),
the ds.sed accessor without an eager xarray import, thread defaults, `sedviz lab`'s command."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import sedviz
from sedviz import threads
from sedviz.cli import lab_command, main
from helpers import write_mlp_run

HEAVY = ("torch", "xarray", "scipy.stats", "holoviews", "bokeh", "sedviz.analysis", "sedviz.pipeline")
DEMO = Path(sedviz.__file__).parent / "data" / "demo.nc"


def _loaded(code: str, *args: str) -> dict:
    """Run code in a fresh interpreter; it prints a JSON dict which is returned."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    r = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, check=True)
    return json.loads(r.stdout.strip().splitlines()[-1])


PROBE = "import json, sys\n{body}\nprint(json.dumps({{m: m in sys.modules for m in {heavy!r}}}))"


def test_import_sedviz_loads_nothing_heavy():
    got = _loaded(PROBE.format(body="import sedviz; sedviz.__version__; sedviz.SedvizError", heavy=HEAVY))
    assert got == {m: False for m in HEAVY}


def test_help_and_info_load_only_what_they_need():
    body = ("from sedviz.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass")
    assert _loaded(PROBE.format(body=body, heavy=HEAVY)) == {m: False for m in HEAVY}
    body = f"from sedviz.cli import main\nmain(['info', {str(DEMO)!r}])"
    got = _loaded(PROBE.format(body=body, heavy=HEAVY))
    assert got.pop("xarray") is True  # reading a store needs xarray, nothing else heavy
    assert got == {m: False for m in HEAVY if m != "xarray"}


@pytest.mark.parametrize("order", ["sedviz first", "xarray first"])
def test_accessor_registered_whatever_the_import_order(order):
    body = ("import sedviz\nimport xarray as xr" if order == "sedviz first" else "import xarray as xr\nimport sedviz")
    body += ("\nds = xr.Dataset(coords={'layer': ['a.weight', 'b.weight'], 'layer_kind': ('layer', ['mlp_in', 'attn_qkv'])})"
             "\nprint(json.dumps({'layers': ds.sed.layers(kind='attn')}))")
    assert _loaded("import json\n" + body) == {"layers": ["b.weight"]}


def test_lazy_names_resolve_to_the_real_objects():
    from sedviz.pipeline import compute
    from sedviz.data import load_demo

    assert sedviz.compute is compute and sedviz.load_demo is load_demo
    assert {"compute", "load_demo", "analysis", "plots", "widgets"} <= set(dir(sedviz))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        sedviz.nope  # noqa: B018


def test_thread_rule(monkeypatch):
    torch = pytest.importorskip("torch")
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert threads.resolve_threads() == threads.DEFAULT == 1
    assert threads.resolve_threads(3) == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert threads.resolve_threads() is None  # the environment decides
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(sedviz.SedvizError, match="threads="):
            threads.resolve_threads(bad)
    before = torch.get_num_threads()
    with threads.using_threads(2) as n:
        assert n == torch.get_num_threads() == 2
    assert torch.get_num_threads() == before


def test_pin_environment(monkeypatch):
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    threads.pin_environment(None)
    assert os.environ["OMP_NUM_THREADS"] == os.environ["OPENBLAS_NUM_THREADS"] == "1"
    monkeypatch.setenv("OMP_NUM_THREADS", "4")
    monkeypatch.delenv("MKL_NUM_THREADS")
    threads.pin_environment(None)  # the user's choice stands
    assert os.environ["OMP_NUM_THREADS"] == "4" and "MKL_NUM_THREADS" not in os.environ
    threads.pin_environment(2)  # --threads 2 wins
    assert os.environ["OMP_NUM_THREADS"] == os.environ["MKL_NUM_THREADS"] == "2"


def test_rerun_on_a_finished_store_says_nothing_new(tmp_path, capsys):
    write_mlp_run(tmp_path / "runs" / "a", n=3)
    args = ["compute", str(tmp_path / "runs" / "a"), "-o", str(tmp_path / "s.zarr"), "--k", "5", "--threads", "1"]
    assert main(args) == 0
    assert "nothing new" not in capsys.readouterr().err
    assert main(args) == 0
    err = [line for line in capsys.readouterr().err.splitlines() if "nothing new" in line]
    assert err == [f"nothing new to compute: {tmp_path / 's.zarr'} holds every checkpoint of 1 run(s)"]


def test_lab_command(monkeypatch):
    pytest.importorskip("jupyterlab")
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    cmd, folder = lab_command(no_browser=True, port=8899)
    assert cmd[:3] == [sys.executable, "-m", "jupyterlab"] and f"--ServerApp.root_dir={folder}" in cmd
    assert "--allow-root" in cmd and "--no-browser" in cmd and "--port=8899" in cmd
    assert cmd[-1] == str(folder / "quickstart.ipynb") and (folder / "report.ipynb").is_file()
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert "--allow-root" not in lab_command()[0]


def test_startup_benchmark_prints_every_row():
    """benchmarks/startup.py runs and reports rows 9-11 as positive ratios (timings are not asserted)."""
    from benchmarks import startup

    result = startup.measure(repeats=1)
    rows = {r["id"]: r for r in result["rows"]}
    assert {"9", "10", "11"} <= set(rows) and ("9b" in rows) == DEMO.exists()
    assert all(r["ratio"] > 0 and isinstance(r["met"], bool) for r in rows.values())
    table = startup.format_table(result)
    assert all(f"\n{rid} " in table for rid in rows)
