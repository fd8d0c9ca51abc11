"""The tutorial notebooks of notebooks/ (report.ipynb has its own test, tests/test_report.py).

Each notebook is executed with papermill on the shipped demo data (kernel ``python3`` of this
environment, working directory a fresh temporary folder) twice: with its default parameters and
with one non-default set (another run, other window sizes, a parameter group, run folders of
checkpoints instead of a store, ...). A run fails on a cell error (papermill raises
PapermillExecutionError), on an ``error`` output, and on a ``stderr`` stream holding a Python
traceback or a HoloViews plotting warning (``WARNING:param``: a figure drawn other than asked).
Beyond running, each notebook's key output is checked against the library called here directly:
the summary text, the layers and pairs chosen, the barrier, the early-warning table, the drift
PC1 share, and the explorers shown with the selection the parameters asked for.

Static checks: each notebook has exactly one cell tagged ``parameters`` whose every assignment
papermill's ``inspect_notebook`` lists with a type and a help text, no outputs are committed, and
the notebooks are what ``notebooks/_build.py`` writes.

``SEDVIZ_NOTEBOOK_STORE`` runs the default executions on another store (a path) instead of the
demo, e.g. while developing; the demo-specific checks (the control run stays silent) are then
skipped.
"""
from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import numpy as np
import papermill
import pytest
from papermill.exceptions import PapermillExecutionError

import sedviz
from sedviz import analysis
from sedviz.summary import summary

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = REPO / "notebooks"
NOTEBOOKS = sorted(p.name for p in NOTEBOOK_DIR.glob("*.ipynb") if p.name != "report.ipynb")
STORE = os.environ.get("SEDVIZ_NOTEBOOK_STORE", "demo")
KERNEL = "python3"
CELL_TIMEOUT = 600

# The parameters each notebook declares, in order (the interface papermill users rely on).
PARAMETERS = {
    "quickstart.ipynb": ["store", "run", "layer"],
    "01_singular_values_and_rank.ipynb": ["store", "run", "layer", "layers", "ranks", "logy", "compare_var"],
    "02_alignment_and_agreement.ipynb": ["store", "run", "pair", "layer", "ranks"],
    "03_pruning_and_connectivity.ipynb": ["store", "model_factory", "evaluate", "fractions", "density", "run_a",
                                          "run_b", "n_alphas", "etas", "seed"],
    "04_spectral_edge_and_lag_flip.ipynb": ["store", "run", "windows", "lag_windows", "layers", "threshold"],
    "05_early_warning.ipynb": ["store", "threshold_acc", "window", "params", "detectors", "persist"],
    "06_drift.ipynb": ["store", "layers", "window"],
}

# One non-default parameter set per notebook ("store" of quickstart is filled with run folders).
CUSTOM = {
    "quickstart.ipynb": {"run": "mlp_b"},
    "01_singular_values_and_rank.ipynb": {"run": "grok_wd0", "layer": "blocks.0.attn.qkv.weight", "layers": "attn",
                                          "ranks": 5, "logy": False, "compare_var": "spectral_norm"},
    "02_alignment_and_agreement.ipynb": {"run": "grok_wd0", "pair": "blocks.0.attn.out_proj.weight -> blocks.0.mlp.fc_in.weight",
                                         "layer": "unembed.weight", "ranks": 10},
    "03_pruning_and_connectivity.ipynb": {"fractions": [0.5], "density": 0.25, "run_a": "grok_wd0", "run_b": "grok_wd1",
                                          "n_alphas": 5, "etas": [0.1], "seed": 3},
    "04_spectral_edge_and_lag_flip.ipynb": {"run": "grok_wd0", "windows": [5, 10], "lag_windows": [5, 10],
                                            "layers": "attn", "threshold": 1.5},
    "05_early_warning.ipynb": {"threshold_acc": 0.95, "window": 8, "params": "attn", "detectors": ["slope"], "persist": 2},
    "06_drift.ipynb": {"layers": "attn", "window": 0},
}
VARIANTS = ("default", "custom")


def test_every_notebook_has_a_custom_parameter_set():
    assert NOTEBOOKS, f"no notebooks in {NOTEBOOK_DIR}"
    assert sorted(CUSTOM) == NOTEBOOKS == sorted(PARAMETERS)


# ------------------------------------------------------------------------------------------------
# static checks


def _read(name: str):
    return nbformat.read(NOTEBOOK_DIR / name, as_version=4)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_parameters_cell_is_typed_and_documented(name):
    nb = _read(name)
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{name}: {len(tagged)} cells tagged 'parameters', expected exactly one"
    assert tagged[0].cell_type == "code"
    # Every assignment in the cell, as Python sees it, with its annotation.
    tree = ast.parse(tagged[0].source)
    assigned = [n.target.id for n in tree.body if isinstance(n, ast.AnnAssign)]
    bare = [t.id for n in tree.body if isinstance(n, ast.Assign) for t in n.targets]
    assert bare == [], f"{name}: parameters without a type annotation: {bare}"
    assert assigned == PARAMETERS[name]
    found = papermill.inspect_notebook(str(NOTEBOOK_DIR / name))
    assert list(found) == PARAMETERS[name], f"{name}: papermill could not parse every parameter line (an '=' in a comment?)"
    for pname, spec in found.items():
        assert spec["inferred_type_name"] not in (None, "None"), f"{name}: {pname} has no type"
        assert spec["help"] and len(spec["help"]) > 10, f"{name}: {pname} has no help comment"
    assert found["store"]["default"] == '"demo"', f"{name}: the default store must be the shipped demo"
    # the defaults are Python literals of the declared type (papermill -p converts to them)
    namespace: dict = {}
    exec(compile(tagged[0].source, name, "exec"), namespace)
    for pname, spec in found.items():
        base = spec["inferred_type_name"].split("[")[0]
        want = {"str": str, "int": int, "float": float, "bool": bool, "list": list}.get(base)
        if want is not None:
            assert type(namespace[pname]) is want, f"{name}: {pname}={namespace[pname]!r} is not a {base}"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_without_outputs(name):
    nb = _read(name)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{name}: clear the outputs before committing"
    assert nb.metadata["kernelspec"]["name"] == KERNEL
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")


def test_notebooks_match_their_generator():
    result = subprocess.run([sys.executable, str(NOTEBOOK_DIR / "_build.py"), "--check"], capture_output=True, text=True)
    assert result.returncode == 0, f"notebooks differ from notebooks/_build.py: {result.stderr}"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_documented(name):
    page = REPO / "docs" / "notebooks" / f"{Path(name).stem}.md"
    assert page.exists(), f"{name} has no page {page}"
    text = page.read_text()
    missing = [p for p in PARAMETERS[name] if f"| `{p}` |" not in text]
    assert missing == [], f"{page}: the parameter table lacks {missing}"
    assert f"(notebooks/{page.name})" in (REPO / "docs" / "notebooks.md").read_text(), "not linked from docs/notebooks.md"


def test_quickstart_opens_with_the_sv_explorer():
    # The JupyterLab browser test moves the first explorer's ranks slider: keep sv_explorer first.
    sources = [c.source for c in _read("quickstart.ipynb").cells if c.cell_type == "code"]
    explorers = [re.search(r"widgets\.(\w+_explorer)\(", s).group(1) for s in sources if "_explorer(" in s]
    assert explorers[0] == "sv_explorer" and len(explorers) >= 2


# ------------------------------------------------------------------------------------------------
# execution


@pytest.fixture(scope="module")
def demo_ds():
    if STORE == "demo":
        from sedviz.data import DEMO_STORE

        if not DEMO_STORE.exists():
            pytest.fail(f"{DEMO_STORE} is missing: the notebooks run on the shipped demo data "
                        f"(build it with `sedviz demo --ship`)")
        return sedviz.load_demo()
    return sedviz.open(STORE)


@pytest.fixture(scope="module")
def run_folders(tmp_path_factory):
    from helpers import write_mlp_run

    root = tmp_path_factory.mktemp("runs")
    write_mlp_run(root / "mlp_a", n=8, seed=0)
    write_mlp_run(root / "mlp_b", n=8, seed=1)
    return [str(root / "mlp_a"), str(root / "mlp_b")]


def _parameters(name: str, variant: str, run_folders) -> dict:
    if variant == "default":
        return {} if STORE == "demo" else {"store": STORE}
    params = dict(CUSTOM[name])
    if name == "quickstart.ipynb":
        params["store"] = run_folders
    elif STORE != "demo":
        params["store"] = STORE
    return params


def _problems(nb) -> list[str]:
    found = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        if cell.get("execution_count") is None:
            found.append(f"cell {i} did not run")
        for out in cell.get("outputs", []):
            if out.output_type == "error":
                found.append(f"cell {i}: {out.ename}: {out.evalue}")
            elif out.output_type == "stream" and out.name == "stderr":
                if "Traceback" in out.text or "WARNING:param" in out.text:
                    found.append(f"cell {i} wrote to stderr: {out.text[:2000]}")
    return found


def _stdout(nb) -> str:
    return "".join(o.text for c in nb.cells if c.cell_type == "code" for o in c.outputs
                   if o.output_type == "stream" and o.name == "stdout")


def _outputs(nb, mime: str) -> list[str]:
    return [o.data[mime] for c in nb.cells if c.cell_type == "code" for o in c.outputs
            if o.output_type in ("display_data", "execute_result") and mime in o.get("data", {})]


def _explorers(nb) -> list[list[str]]:
    """The controls of every explorer shown, in order (from the widget's text representation)."""
    out = []
    for text in _outputs(nb, "text/plain"):
        m = re.match(r"<Explorer controls=(\[[^\]]*\])", text)
        if m:
            out.append(ast.literal_eval(m.group(1)))
    return out


def _explorer_runs(nb) -> list[str]:
    return [m.group(1) for text in _outputs(nb, "text/plain")
            for m in [re.match(r"<Explorer controls=\[[^\]]*\] selection=\{'(?:run|var)': '([^']*)'", text)] if m]


def _figures(nb) -> int:
    """Figures displayed with sedviz.report.show (embedded Bokeh documents)."""
    return sum(1 for c in nb.cells if c.cell_type == "code" for o in c.outputs
               if o.output_type == "display_data" and set(o.get("data", {})) == {"text/html", "text/plain"}
               and "data-root-id" in o.data["text/html"] and "docs_json" in o.data["text/html"])


def _markdown_table(nb, first_header: str) -> list[dict]:
    for text in _outputs(nb, "text/markdown"):
        lines = [ln for ln in text.splitlines() if ln.startswith("|")]
        header = [h.strip() for h in lines[0].strip("|").split("|")]
        if header[0] == first_header:
            return [dict(zip(header, (v.strip() for v in ln.strip("|").split("|")))) for ln in lines[2:]]
    raise AssertionError(f"no Markdown table starting with {first_header!r}")


def _num(text: str) -> float:
    return np.nan if text == "-" else float(text)


_CACHE: dict = {}


def execute(name: str, variant: str, tmp_root: Path, run_folders) -> tuple:
    key = (name, variant)
    if key not in _CACHE:
        params = _parameters(name, variant, run_folders)
        cwd = tmp_root / f"{Path(name).stem}-{variant}"
        cwd.mkdir(parents=True)
        out = cwd / name
        try:
            papermill.execute_notebook(str(NOTEBOOK_DIR / name), str(out), parameters=params, kernel_name=KERNEL,
                                       cwd=str(cwd), progress_bar=False, log_output=False,
                                       execution_timeout=CELL_TIMEOUT)
        except PapermillExecutionError as exc:
            pytest.fail(f"{name} ({variant} parameters {params}) failed in cell {exc.exec_count}: "
                        f"{exc.ename}: {exc.evalue}\n{''.join(exc.traceback)[-3000:]}\nexecuted notebook: {out}")
        _CACHE[key] = (nbformat.read(out, as_version=4), params)
    return _CACHE[key]


@pytest.mark.slow
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs(name, variant, demo_ds, run_folders, tmp_path_factory):
    nb, params = execute(name, variant, tmp_path_factory.mktemp("nb"), run_folders)
    problems = _problems(nb)
    assert problems == [], f"{name} ({variant} parameters {params}):\n" + "\n".join(problems)
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == (1 if params else 0)
    CHECKS[name](nb, demo_ds, {**_defaults(name), **params}, variant)


def _defaults(name: str) -> dict:
    found = papermill.inspect_notebook(str(NOTEBOOK_DIR / name))
    return {k: ast.literal_eval(v["default"]) for k, v in found.items()}


# ------------------------------------------------------------------------------------------------
# what each notebook must show


def check_quickstart(nb, ds, p, variant):
    text = _stdout(nb)
    if variant == "default":
        assert summary(ds) in text  # the summary of exactly this Dataset
        layer = (ds.sed.layers(kind="mlp_in") + ds.sed.layers())[0]
        assert repr(layer) in _outputs(nb, "text/plain")
    else:  # two run folders computed into a temporary store
        assert "runs: 2" in text and "[mlp_a] 8 checkpoints" in text and "[mlp_b] 8 checkpoints" in text
    assert _figures(nb) == 2  # loss curves, effective rank heat maps
    explorers = _explorers(nb)
    assert explorers[0] == ["run", "layer", "steps", "ranks", "logy"]  # sv_explorer first
    assert "var" in explorers[1]  # compare_explorer
    assert _explorer_runs(nb)[0] == p["run"]


def check_01(nb, ds, p, variant):
    text = _stdout(nb)
    layers = ds.sed.layers() if p["layers"] == "all" else ds.sed.layers(kind=p["layers"])
    assert layers and f"heat map rows: {layers}" in text
    layer = p["layer"] or (ds.sed.layers(kind="mlp_in") + ds.sed.layers())[0]
    assert f"layer: {layer}\n" in text
    assert _figures(nb) == 4  # sv, sv of every run, eff_rank heat maps, run comparison
    tables = [t for t in _outputs(nb, "text/plain") if "step" in t and layers[0] in t]
    # first/last effective rank of the first heat-map layer in the first run, as in the Dataset
    e = ds["eff_rank"].sel(run=ds.run.values[0], layer=layers[0]).dropna("step")
    assert any(f"{float(e[0]):.3f}" in t and f"{float(e[-1]):.3f}" in t for t in tables)
    explorers = _explorers(nb)
    assert [len(explorers)] == [3] and explorers[0][:2] == ["run", "layer"] and explorers[1] == ["run", "steps"]
    assert "var" in explorers[2] and _explorer_runs(nb)[:2] == [p["run"], p["run"]]


def check_02(nb, ds, p, variant):
    text = _stdout(nb)
    # default: the pair with the highest align_score at the run's last checkpoint, computed here with numpy
    score = ds["align_score"].sel(run=p["run"])
    last = score.isel(step=int(np.flatnonzero(score.notnull().any("pair").values)[-1]))
    expected = p["pair"] or ds.pair.values[int(np.nanargmax(last.values))]
    assert f"pair: {expected}\n" in text
    assert f"layer: {p['layer'] or (ds.sed.layers(kind='mlp_in') + ds.sed.layers())[0]}\n" in text
    assert _figures(nb) == 6
    explorers = _explorers(nb)
    assert len(explorers) == 2 and "pair" in explorers[0] and "layer" in explorers[1]
    assert _explorer_runs(nb) == [p["run"], p["run"]]


def check_03(nb, ds, p, variant):
    res = analysis.lmc((ds, p["run_a"], "final"), (ds, p["run_b"], "final"), p["model_factory"], p["evaluate"],
                       n_alphas=p["n_alphas"])
    m = re.search(r"barrier: (\S+)", _stdout(nb))
    assert m, "the barrier between the two runs is not printed"
    assert float(m.group(1)) == pytest.approx(float(res["barrier"]), rel=1e-3, abs=1e-6)
    assert _figures(nb) == 4  # pruning, masks, lmc between runs, lmc of perturbations


def check_04(nb, ds, p, variant):
    m = re.search(r"Gram source per window: (\{.*\})", _stdout(nb))
    assert m and sorted(ast.literal_eval(m.group(1))) == sorted(p["windows"])
    e = analysis.edge(ds, windows=p["windows"], params=None if p["layers"] == "all" else p["layers"])
    assert ast.literal_eval(m.group(1)) == dict(zip(e.window.values.tolist(), e["edge_source"].values.tolist()))
    assert _figures(nb) == 4  # edge per window, edge per run, k*, lag flip
    explorers = _explorers(nb)
    assert explorers == [["run", "window"], ["run", "window"]] and _explorer_runs(nb) == [p["run"], p["run"]]


def check_05(nb, ds, p, variant):
    from sedviz.analysis.warning import describe

    ew = analysis.early_warning(ds, threshold_acc=p["threshold_acc"], window=p["window"], detector=p["detectors"],
                                params=None if p["params"] == "all" else p["params"], persist=p["persist"] or None)
    rows = _markdown_table(nb, "run / detector")
    assert len(rows) == ew.sizes["run"] * len(p["detectors"])
    for row in rows:
        run, det = row["run / detector"].split(" / ")
        assert _num(row["grok step"]) == pytest.approx(float(ew["grok_step"].sel(run=run)), nan_ok=True)
        assert _num(row["fire step"]) == pytest.approx(float(ew["fire_step"].sel(run=run, detector=det)), nan_ok=True)
        assert _num(row["lead (steps)"]) == pytest.approx(float(ew["lead"].sel(run=run, detector=det)), nan_ok=True)
        assert row["fired"] == ("yes" if bool(ew["fired"].sel(run=run, detector=det)) else "no")
        assert row["outcome"] == str(ew["status"].sel(run=run, detector=det).values)
    text = _stdout(nb)
    for run in ew.run.values.tolist():  # every outcome in words
        for det in p["detectors"]:
            assert describe(ew, run, det) in text
    if STORE == "demo":
        # the weight-decay-0 control never groks; g23 and slope stay silent on it, wnorm (tuned on the
        # suite, of which the demo is no part) fires there once its norm dips 2%: said as a false alarm
        for det in p["detectors"]:
            if det in ("slope", "g23"):
                assert f"grok_wd0: {det} did not fire, and the run never grokked (correctly silent)." in text
            if det == "wnorm":
                assert "grok_wd0: wnorm fired at step 2500 on a run that never grokked (a false alarm)." in text
    assert _figures(nb) == 2


def check_06(nb, ds, p, variant):
    dr = analysis.drift(ds, params=None if p["layers"] == "all" else p["layers"], window=p["window"] or None)
    rows = {r["run"]: r for r in _markdown_table(nb, "run")}
    assert sorted(rows) == sorted(dr.run.values.tolist())
    for run, row in rows.items():
        assert float(row["PC1 share"]) == pytest.approx(float(dr["drift_pc1_share"].sel(run=run)), rel=5e-3)
        assert int(row["rows"]) == int(dr["n_rows"].sel(run=run))
    assert _figures(nb) == (3 if p["window"] else 2)
    assert ("rolling PC1 skipped" in _stdout(nb)) == (not p["window"])


CHECKS = {
    "quickstart.ipynb": check_quickstart,
    "01_singular_values_and_rank.ipynb": check_01,
    "02_alignment_and_agreement.ipynb": check_02,
    "03_pruning_and_connectivity.ipynb": check_03,
    "04_spectral_edge_and_lag_flip.ipynb": check_04,
    "05_early_warning.ipynb": check_05,
    "06_drift.ipynb": check_06,
}
