"""sedviz.report: parameters checked and converted before anything runs, the report notebook executed
with papermill, and a self-contained HTML page (code hidden, BokehJS inline, nothing fetched).

The notebook-executing tests read the shipped demo data when it is there, else a synthetic store
with the same run names (tests/browser_util.py); the numbers they assert are read back out of the
embedded Bokeh documents and tables and compared with the Dataset itself.
"""
from __future__ import annotations

import base64
import gzip
import html as html_lib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import numpy as np
import pytest

import sedviz
from browser_util import demo_shipped, make_synthetic_store, report_source, shared_report
from helpers import write_mlp_run
from sedviz import analysis
from sedviz.errors import SedvizError
from sedviz.report import (
    ReportParameter, convert_parameter, external_resources, find_notebook, notebook_parameters, report,
    validate_parameters,
)

REPO = Path(__file__).resolve().parents[1]
EXPECTED_PARAMETERS = ["store", "runs", "layers", "ranks", "windows", "edge_params", "threshold_acc",
                       "warning_window", "warning_params", "title"]
# The non-default parameter set: one run, two layers, fewer ranks, one window, text values as from the CLI.
CUSTOM = {"runs": "['grok_wd1']", "ranks": "5", "windows": "[5]", "threshold_acc": "0.8", "warning_window": "6",
          "title": "Custom sedviz report"}


# ------------------------------------------------------------------------------------------------
# helpers: read what the HTML shows


def bokeh_documents(page: str) -> list[dict]:
    """The Bokeh documents embedded by sedviz.report.show (bokeh.embed.components scripts)."""
    docs = []
    for text in re.findall(r"const docs_json = '(.*?)';\n", page, flags=re.S):
        text = html_lib.unescape(text.replace("\\\\", "\\"))
        docs.extend(json.loads(text).values())
    return docs


def _decode(value):
    if isinstance(value, list):
        return [_decode(v) for v in value]
    if isinstance(value, dict) and value.get("type") == "ndarray":
        arr = value["array"]
        if isinstance(arr, dict) and arr.get("type") == "bytes":
            raw = base64.b64decode(arr["data"])
            if raw[:2] == b"\x1f\x8b":
                raw = gzip.decompress(raw)
            return np.frombuffer(raw, dtype=value["dtype"]).reshape(value["shape"])
        return np.asarray(arr, dtype=value["dtype"])
    return value


def column_sources(doc) -> list[dict]:
    """Every ColumnDataSource's data in a document, columns decoded to numpy arrays."""
    found = []

    def walk(node):
        if isinstance(node, dict):
            if node.get("name") == "ColumnDataSource" and "attributes" in node:
                data = node["attributes"].get("data", {})
                found.append({k: _decode(v) for k, v in data.get("entries", [])})
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(doc)
    return found


def html_tables(page: str) -> list[list[list[str]]]:
    """The pandas tables of the page, as rows of cell texts (header rows included)."""
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(re.sub(r"<script\b.*?</script>", "", page, flags=re.S), "html.parser")
    return [[[c.get_text(strip=True) for c in tr.find_all(["th", "td"])] for tr in t.find_all("tr")]
            for t in soup.find_all("table", class_="dataframe")]


def table_with(page: str, header: str) -> list[list[str]]:
    for t in html_tables(page):
        if any(header in cell for cell in t[0]):
            return t
    raise AssertionError(f"no table with a {header!r} column")


def open_source(source: str):
    return sedviz.load_demo() if source == "demo" else sedviz.open(source)


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return report_source(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def default_report(tmp_path_factory, source):
    return shared_report(tmp_path_factory.getbasetemp(), source)


@pytest.fixture(scope="module")
def custom_report(tmp_path_factory, source):
    return shared_report(tmp_path_factory.getbasetemp(), source, CUSTOM)


# ------------------------------------------------------------------------------------------------
# parameters: read from the notebook, converted, rejected with a message (no kernel needed)


def test_notebook_declares_typed_parameters_with_help():
    specs = notebook_parameters()
    assert list(specs) == EXPECTED_PARAMETERS
    assert specs["windows"].type == "list[int]" and specs["windows"].default == "[10, 20]"
    assert specs["runs"].type == "Optional[list[str]]" and specs["store"].default == '"demo"'
    assert all(s.help for s in specs.values()), "every parameter needs a one-line comment"
    nb = nbformat.read(find_notebook(), as_version=4)
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    # The repository's copy and the one packaged with sedviz (when present) are the same notebook.
    packaged = REPO / "sedviz" / "notebooks" / "report.ipynb"
    if packaged.exists():
        assert packaged.read_bytes() == (REPO / "notebooks" / "report.ipynb").read_bytes()


@pytest.mark.parametrize("type_, text, expected", [
    ("int", "20", 20),
    ("int", " 7 ", 7),
    ("float", "0.8", 0.8),
    ("float", "1", 1.0),
    ("bool", "true", True),
    ("bool", "No", False),
    ("str", "grok_wd1", "grok_wd1"),
    ("list[int]", "[10, 20]", [10, 20]),
    ("list[int]", "10, 20", [10, 20]),
    ("list[int]", "10", [10]),
    ("list[int]", "(5,)", [5]),
    ("list[float]", "[1, 0.5]", [1.0, 0.5]),
    ("Optional[list[str]]", "['a', 'b']", ["a", "b"]),
    ("Optional[list[str]]", "a,b", ["a", "b"]),
    ("Optional[list[str]]", "grok_wd1", ["grok_wd1"]),
    ("Optional[list[str]]", "None", None),
    ("Optional[str]", "null", None),
    ("Optional[str]", "attn", "attn"),
    ("Union[str, list[str]]", "runs/a.zarr", "runs/a.zarr"),
    ("Union[str, list[str]]", "['runs/a', 'runs/b']", ["runs/a", "runs/b"]),
])
def test_text_values_convert_to_the_declared_type(type_, text, expected):
    value = convert_parameter(ReportParameter("p", type_, "0", "help"), text)
    assert value == expected and type(value) is type(expected)
    if isinstance(expected, list):
        assert [type(v) for v in value] == [type(v) for v in expected]


@pytest.mark.parametrize("type_, value", [
    ("int", 3), ("int", np.int64(3)), ("float", 2), ("float", np.float32(0.5)), ("bool", False),
    ("list[int]", (10, 20)), ("list[int]", np.array([10, 20])), ("Optional[list[str]]", None), ("str", Path("x")),
])
def test_python_values_of_the_declared_type_pass(type_, value):
    out = convert_parameter(ReportParameter("p", type_, "0", "help"), value)
    if value is None:
        assert out is None
    elif isinstance(value, Path):
        assert out == "x"
    else:
        assert np.all(np.asarray(out) == np.asarray(value))


@pytest.mark.parametrize("name, value, words", [
    ("ranks", "2.5", ["ranks", "int"]),
    ("ranks", True, ["ranks", "int"]),
    ("ranks", None, ["ranks", "None is not allowed"]),
    ("windows", "ten", ["windows", "list[int]", "[10, 20]"]),
    ("windows", "[10, 'x']", ["windows", "list[int]"]),
    ("windows", 10, ["windows", "not a list"]),
    ("threshold_acc", "high", ["threshold_acc", "float"]),
    ("threshold_acc", [0.9], ["threshold_acc", "float"]),
    ("title", 5, ["title", "str"]),
    ("runs", "[1, 2]", ["runs", "list[str]"]),
])
def test_wrong_types_name_the_parameter_and_the_fix(name, value, words):
    with pytest.raises(SedvizError) as err:
        validate_parameters({name: value})
    msg = str(err.value)
    for w in words:
        assert w in msg, (w, msg)
    assert "Fix:" in msg


def test_unknown_parameter_lists_the_valid_ones(tmp_path):
    with pytest.raises(SedvizError) as err:
        report("demo" if demo_shipped() else make_synthetic_store(tmp_path / "s.nc"), tmp_path / "out",
               parameters={"window": "[10]"})
    msg = str(err.value)
    assert "'window'" in msg and "did you mean 'windows'" in msg
    for name in EXPECTED_PARAMETERS:
        assert name in msg
    assert "list[int]" in msg and "Fix:" in msg
    assert not (tmp_path / "out" / "report.ipynb").exists(), "nothing may run before the parameters are checked"


def test_store_is_the_source_not_a_parameter(tmp_path):
    with pytest.raises(SedvizError, match="source argument"):
        report(make_synthetic_store(tmp_path / "s.nc"), tmp_path / "out", parameters={"store": "x.zarr"})


def test_bad_sources(tmp_path):
    with pytest.raises(SedvizError, match="no such run folder or store"):
        report(tmp_path / "missing", tmp_path / "out")
    with pytest.raises(SedvizError, match="no such store"):
        report(tmp_path / "missing.zarr", tmp_path / "out")
    with pytest.raises(SedvizError, match="no such notebook"):
        report("demo", tmp_path / "out", notebook=tmp_path / "nope.ipynb")
    store = make_synthetic_store(tmp_path / "s.nc")
    with pytest.raises(SedvizError, match="is a store"):
        report([store, tmp_path], tmp_path / "out")


# ------------------------------------------------------------------------------------------------
# executing the notebook


@pytest.mark.slow
def test_report_writes_executed_notebook_and_html(default_report, source):
    ipynb, page_path = default_report["ipynb"], default_report["html"]
    assert ipynb.name == "report.ipynb" and page_path.name == "report.html"
    nb = nbformat.read(ipynb, as_version=4)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1 and "store = " in injected[0].source
    if source != "demo":
        assert f"store = {json.dumps(str(Path(source).resolve()))}" in injected[0].source
    page = page_path.read_text()
    assert "sedviz-skip" not in page, "every section must be drawn for the demo data"
    for section in ("Summary", "Loss and accuracy", "Effective rank", "Singular values", "Alignment and agreement",
                    "Spectral edge", "Lag flip", "Early warning", "Drift"):
        assert f'<h2 id="{section.replace(" ", "-")}">{section}' in page
    # every early-warning outcome in words (sedviz.analysis.warning.describe), escaped but readable
    from sedviz.analysis.warning import describe

    ew = sedviz.analysis.early_warning(open_source(source), detector=["wnorm", "g23"])
    for run in ew.run.values.tolist():
        for det in ("wnorm", "g23"):
            assert html_lib.escape(describe(ew, run, det), quote=False).replace("(", "").replace(")", "") in \
                page.replace("(", "").replace(")", "")
    if source == "demo":  # the default detector's false alarm on the demo control, said as such
        assert "grok_wd0: wnorm fired at step 2500 on a run that never grokked" in page


@pytest.mark.slow
def test_html_is_self_contained(default_report):
    page = default_report["html"].read_text()
    # BokehJS itself is in the page, and nothing is loaded from elsewhere.
    assert "/* BEGIN bokeh.min.js */" in page and "/* BEGIN bokeh-gl.min.js */" in page
    assert external_resources(page) == []
    markup = re.sub(r"(<script\b[^>]*>).*?(</script>)", r"\1\2", page, flags=re.S | re.I)
    assert not re.search(r"<script\b[^>]*\bsrc\s*=", markup, flags=re.I), "no <script src> at all"
    assert not re.search(r"<link\b[^>]*\bhref\s*=\s*[\"']?https?:", markup, flags=re.I)
    assert "cdn.bokeh.org" not in page and "cdn.holoviz.org" not in page and "cdn.jsdelivr.net/npm/@holoviz" not in page
    assert "require.min.js" not in markup and "mathjax" not in markup.lower()
    # Plain Bokeh documents, one per figure: no Panel models (they would need Panel's JS and a kernel).
    assert not any("panel.models" in json.dumps(doc) for doc in bokeh_documents(page))
    assert "holoviews_exec" not in page and "CommManager" not in page
    # Code cells are hidden; the markdown and the outputs are there.
    assert "analysis.edge(ds" not in page and "embed_bokehjs()" not in page
    assert "jp-RenderedMarkdown" in page


@pytest.mark.slow
def test_html_plots_hold_the_datasets_numbers(default_report, source):
    ds = open_source(source)
    page = default_report["html"].read_text()
    docs = bokeh_documents(page)
    # loss, eff_rank, sv, align_score, sva_score, edge, lag flip, early warning, drift
    assert len(docs) == 9
    # The loss figure holds each run's val_acc over its logged steps.
    sources = [s for s in column_sources(docs[0]) if "val_acc" in s]
    assert len(sources) == ds.sizes["run"]
    for run in ds.run.values.tolist():
        want = ds["val_acc"].sel(run=run).dropna("step")
        assert any(np.array_equal(s["step"], want.step.values) and np.allclose(s["val_acc"], want.values)
                   for s in sources), run
    # The singular-value figure of the first layer and run holds sv[:20] over the steps.
    run, layer = ds.run.values[0], ds.layer.values[0]
    sv = ds["sv"].sel(run=run, layer=layer).dropna("step", how="all")
    multi = [s for s in column_sources(docs[2]) if "xs" in s and "ys" in s]
    ys = [np.asarray(y, dtype=float) for y in multi[0]["ys"]]
    assert len(ys) == min(20, int(sv.notnull().any("step").sum()))
    np.testing.assert_allclose(ys[0], sv.isel(rank=0).values, rtol=1e-6)


@pytest.mark.slow
def test_html_tables_hold_the_datasets_numbers(default_report, source):
    ds = open_source(source)
    page = default_report["html"].read_text()
    summary = table_with(page, "final val_acc")
    col = summary[0].index("final val_acc")
    for row in summary[1:]:
        if row and row[0] in ds.run.values.tolist():
            one = ds.sel(run=row[0])
            last = one.step.values[one["sv"].notnull().any(("layer", "rank")).values].max()
            assert float(row[col]) == pytest.approx(float(one["val_acc"].sel(step=last)), abs=1e-4)
    # The phases table: one row per run and window size, peaks as sedviz.analysis computes them.
    phases = analysis.phases(analysis.edge(ds, windows=[10, 20]))
    table = table_with(page, "peak_step")
    body = [r for r in table[1:] if len(r) >= 3 and r[-1] in ("sketch", "delta_dot")]
    assert len(body) == ds.sizes["run"] * 2
    peaks = sorted(float(r[-6]) for r in body)
    assert peaks == sorted(float(v) for v in phases["peak_step"].values.ravel())


@pytest.mark.slow
def test_report_with_non_default_parameters(custom_report, source):
    ds = open_source(source)
    nb = nbformat.read(custom_report["ipynb"], as_version=4)
    injected = next(c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", []))
    # Text values arrive in the kernel converted to the declared types.
    assert "windows = [5]" in injected.source and "ranks = 5" in injected.source
    assert 'runs = ["grok_wd1"]' in injected.source and "threshold_acc = 0.8" in injected.source
    page = custom_report["html"].read_text()
    assert "<title>Custom sedviz report</title>" in page and '<h1 id="Custom-sedviz-report">' in page
    assert external_resources(page) == [] and "sedviz-skip" not in page
    summary = table_with(page, "final val_acc")
    assert [r[0] for r in summary[1:] if r and r[0].startswith("grok")] == ["grok_wd1"]
    table = table_with(page, "peak_step")
    windows = {r[1] if len(r) == 8 else r[0] for r in table[1:] if r and r[-1] in ("sketch", "delta_dot")}
    assert windows == {"5"}
    docs = bokeh_documents(page)
    multi = [s for s in column_sources(docs[2]) if "xs" in s and "ys" in s]
    # ranks = 5: five lines per layer, fewer where a layer has fewer singular values (pos_embed: 3)
    expected = sorted(min(5, int(min(r, c))) for r, c in zip(ds.rows.values, ds.cols.values))
    assert len(multi) == ds.sizes["layer"] and sorted(len(m["ys"]) for m in multi) == expected
    assert all("grok_wd0" not in json.dumps(doc) for doc in docs), "the other run appears in no plot"


@pytest.mark.slow
def test_failure_inside_the_notebook_names_the_cell_and_the_partial_notebook(tmp_path, source):
    with pytest.raises(SedvizError) as err:
        report(source, tmp_path / "out", parameters={"runs": ["no_such_run"]})
    msg = str(err.value)
    assert "SedvizError" in msg and "runs=['no_such_run']" in msg and "grok_wd1" in msg
    partial = tmp_path / "out" / "report.ipynb"
    assert str(partial) in msg and partial.exists()
    nb = nbformat.read(partial, as_version=4)
    assert any(o.output_type == "error" for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert not (tmp_path / "out" / "report.html").exists()
    # A failure further down names the section it happened in.
    with pytest.raises(SedvizError) as err:
        report(source, tmp_path / "out2", parameters={"edge_params": "no_such_group"})
    msg = str(err.value)
    assert 'section "Spectral edge"' in msg and "no_such_group" in msg and str(tmp_path / "out2" / "report.ipynb") in msg


@pytest.mark.slow
def test_cli_report_on_run_folders(tmp_path):
    # Run folders are computed into OUT/spectra.zarr first; the MLP runs have no attention layers and
    # no val_loss, so those sections say so instead of failing.
    for name, seed in (("a", 0), ("b", 1)):
        write_mlp_run(tmp_path / "runs" / name, n=8, seed=seed)
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    r = subprocess.run([sys.executable, "-m", "sedviz.cli", "report", str(tmp_path / "runs" / "a"),
                        str(tmp_path / "runs" / "b"), "-o", str(out), "-p", "windows", "[3, 4]", "-p", "ranks", "4",
                        "-p", "warning_window", "3"],
                       capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr
    assert (out / "spectra.zarr").is_dir() and (out / "report.html").exists()
    ds = sedviz.open(out / "spectra.zarr")
    assert ds.run.values.tolist() == ["a", "b"] and ds.sizes["step"] == 8
    page = (out / "report.html").read_text()
    assert external_resources(page) == []
    assert "Lag flip: not shown" in page and "val_loss" in page
    assert "Early warning: not shown" in page
    assert "sedviz-skip" in page and page.count("Spectral edge: not shown") == 0
    # Bad parameters from the command line: exit code 2, the message, no traceback.
    r = subprocess.run([sys.executable, "-m", "sedviz.cli", "report", str(out / "spectra.zarr"), "-o", str(out),
                        "-p", "windows", "ten"], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2 and "windows" in r.stderr and "list[int]" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run([sys.executable, "-m", "sedviz.cli", "report", str(out / "spectra.zarr"), "-o", str(out),
                        "-p", "treshold_acc", "0.8"], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2 and "did you mean 'threshold_acc'" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.slow
def test_demo_report(tmp_path):
    """`sedviz report demo` on the data shipped with sedviz (the Binder and README path)."""
    if not demo_shipped():
        message = "the demo data is not shipped yet (sedviz/data/demo.nc); build it with `sedviz demo --ship`"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "sedviz.cli", "report", "demo", "-o", str(out), "-p", "ranks", "10"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    page = (out / "report.html").read_text()
    assert external_resources(page) == [] and "sedviz-skip" not in page and len(bokeh_documents(page)) == 9


def test_binder_environment_matches_the_package():
    """binder/ pins every runtime and notebook dependency of pyproject.toml, torch as a CPU wheel,
    and installs sedviz itself from the checkout."""
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = project["dependencies"] + project["optional-dependencies"]["viz"]
    names = {re.split(r"[<>=!~\[ ;]", d, maxsplit=1)[0].lower().replace("_", "-") for d in wanted}
    lines = [ln.split("#")[0].strip() for ln in (REPO / "binder" / "requirements.txt").read_text().splitlines()]
    pins = dict(ln.split("==", 1) for ln in lines if "==" in ln)
    pinned = {n.lower().replace("_", "-") for n in pins}
    assert names <= pinned, f"binder/requirements.txt lacks {sorted(names - pinned)}"
    assert pins["torch"].endswith("+cpu") and "--extra-index-url https://download.pytorch.org/whl/cpu" in lines
    post = (REPO / "binder" / "postBuild").read_text()
    assert "pip install" in post and "-e ." in post and os.access(REPO / "binder" / "postBuild", os.X_OK)
    assert os.access(REPO / "binder" / "start", os.X_OK)
    assert "urlpath=lab/tree/notebooks/quickstart.ipynb" in (REPO / "binder" / "README.md").read_text()


def test_old_parameter_names_still_work_with_a_warning():
    from sedviz.report import validate_parameters

    with pytest.warns(DeprecationWarning, match="'warning_layers' is now 'warning_params'"):
        params = validate_parameters({"warning_layers": "mlp", "edge_params": "attn"})
    assert params == {"warning_params": "mlp", "edge_params": "attn"}
