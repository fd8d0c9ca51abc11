"""The quick start notebook in a real JupyterLab, driven through the DOM by headless Chromium.

A JupyterLab server starts on a free localhost port with a token, on a temporary copy of
notebooks/ (fresh settings and workspace folders, no news or update checks); the browser may
reach that server and nothing else. The test opens quickstart.ipynb, runs every cell from the
Run menu, waits for the singular-value explorer to draw, moves its ``ranks`` slider with the
keyboard as a user would, and checks through ``window.Bokeh`` that the plotted data changed the
way the slider says. Then it opens every other notebook, runs it the same way and checks that no
cell raised. Screenshots of each notebook go to the test's temporary folder (docs/screenshots/
only through scripts/screenshots.sh). The server (and its kernels) are shut down at the end.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import warnings
from contextlib import contextmanager
from pathlib import Path

import pytest

from browser_util import REPO, demo_shipped, offline_page, require_chromium, screenshot_dir

pytestmark = [pytest.mark.browser, pytest.mark.slow]

QUICKSTART = REPO / "notebooks" / "quickstart.ipynb"

# Data of every ColumnDataSource drawn inside ``el`` (Bokeh root views are registered in
# Bokeh.index when jupyter_bokeh's BokehModel adds its document), typed arrays as plain arrays.
_SOURCES_JS = """(el) => {
  const out = {}; const seen = new Set();
  const plain = (v) => Array.from(v, (x) => (x != null && typeof x !== 'string' && x.length !== undefined) ? Array.from(x) : x);
  for (const view of Object.values(window.Bokeh ? window.Bokeh.index : {})) {
    if (!el.contains(view.el)) continue;
    for (const m of view.model.document.all_models) {
      if (m.type !== 'ColumnDataSource' || seen.has(m.id)) continue;
      seen.add(m.id);
      const entries = m.data instanceof Map ? [...m.data.entries()] : Object.entries(m.data);
      out[m.id] = Object.fromEntries(entries.map(([k, v]) => [k, plain(v)]));
    }
  }
  return out;
}"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stand_in_notebook(path: Path) -> None:
    """A tiny notebook with the explorer the quick start shows, on synthetic data (used only while
    notebooks/quickstart.ipynb does not exist)."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell("# stand-in for the quick start"),
        nbformat.v4.new_code_cell("import sedviz\nfrom sedviz._synthetic import synthetic_dataset\n"
                                  "from sedviz.widgets import sv_explorer\n"
                                  "ds = sedviz.load_demo() if sedviz.data.DEMO_STORE.exists() else synthetic_dataset()\n"
                                  "sv_explorer(ds)"),
    ]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    nbformat.write(nb, path)


@contextmanager
def jupyterlab(root: Path, scratch: Path):
    """``jupyter lab`` serving ``root`` on a free port; yields its base URL and token."""
    port, token = _free_port(), secrets.token_hex(16)
    settings = scratch / "settings"
    (settings / "@jupyterlab" / "apputils-extension").mkdir(parents=True)
    # No "get Jupyter news?" toast over the notebook, no update check (the browser is offline anyway).
    (settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    for d in ("workspaces", "runtime", "config"):
        (scratch / d).mkdir()
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(scratch / "runtime"), "JUPYTER_CONFIG_DIR": str(scratch / "config"),
           "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2"),
           "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS", "1")}
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}", "--ServerApp.ip=127.0.0.1",
           "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
           "--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
           "--LabApp.extension_manager=readonly", f"--LabApp.user_settings_dir={settings}",
           f"--LabApp.workspaces_dir={scratch / 'workspaces'}",
           "--LabApp.expose_app_in_browser=True"]  # window.jupyterapp: the notebook model, for _run_notebook
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")
    log = open(scratch / "server.log", "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=root)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"jupyter lab exited ({proc.returncode}):\n{(scratch / 'server.log').read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"jupyter lab did not answer in 90 s:\n{(scratch / 'server.log').read_text()[-3000:]}")
            time.sleep(0.5)
        yield base, token
    finally:
        _shutdown(proc, base, token)
        log.close()


def _shutdown(proc, base: str, token: str) -> None:
    """Ask the server to stop (it shuts its kernels down), then make sure it and its children did."""
    import psutil

    try:
        children = psutil.Process(proc.pid).children(recursive=True)
    except psutil.Error:
        children = []
    try:
        req = urllib.request.Request(f"{base}/api/shutdown", method="POST", headers={"Authorization": f"token {token}"})
        urllib.request.urlopen(req, timeout=10).close()
    except OSError:
        pass
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for child in children:  # kernels the server started, should one have outlived it
        try:
            child.terminate()
        except psutil.Error:
            pass
    psutil.wait_procs(children, timeout=10)


_TRACEBACKS_JS = """() => [...document.querySelectorAll('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')]
  .map((e) => e.innerText).filter((t) => t.includes('Traceback (most recent call last)'))"""


def _run_notebook(page, base, token, name: str, n_code: int, shoot, timeout: float = 600) -> None:
    """Open a notebook, Run All Cells from the menu, wait until its ``n_code`` code cells have run
    without a traceback, and take a screenshot of it."""
    page.goto(f"{base}/lab/tree/{name}?token={token}")
    panel = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden)")
    page.locator(".lm-TabBar-tab.lm-mod-current", has_text=name.removesuffix(".ipynb")[:12]).first.wait_for()
    panel.locator(".jp-Cell").first.wait_for()
    page.wait_for_selector("#jp-main-statusbar >> text=Idle")  # this notebook's kernel has started
    panel.locator(".jp-Cell").first.click()  # the notebook has the focus: Run All runs this one
    page.get_by_role("menuitem", name="Run", exact=True).click()
    page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
    deadline = time.monotonic() + timeout
    # Count executed code cells in the notebook's model (cells scrolled out of view may not be in the DOM).
    done = ("([name, n]) => { const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;"
            " if (!w || !w.context || !w.context.path.endsWith(name)) return false;"
            " const cells = [...w.content.model.cells].filter(c => c.type === 'code');"
            " return cells.length === n && cells.every(c => c.executionCount !== null && c.executionCount > 0); }")
    while not page.evaluate(done, [name, n_code]):
        tracebacks = page.evaluate(_TRACEBACKS_JS)
        if tracebacks:
            raise AssertionError(f"{name}: a cell raised:\n" + tracebacks[0][-3000:])
        if time.monotonic() > deadline:
            raise AssertionError(f"{name}: the cells did not finish within {timeout} s")
        page.wait_for_timeout(1000)
    tracebacks = page.evaluate(_TRACEBACKS_JS)
    assert not tracebacks, f"{name}: a cell raised:\n" + (tracebacks[0][-3000:] if tracebacks else "")
    page.wait_for_timeout(1500)  # let the last figures paint
    shoot(page, "notebook_" + name.removesuffix(".ipynb"))


def _wait_for(page, locator, timeout: float) -> None:
    """Wait until ``locator`` is visible; fail at once with the traceback when a cell raised."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        tracebacks = page.evaluate(_TRACEBACKS_JS)
        if tracebacks:
            raise AssertionError("a notebook cell raised:\n" + tracebacks[0][-3000:])
        if locator.count() and locator.is_visible():
            return
        page.wait_for_timeout(500)
    raise AssertionError(f"{locator} did not appear within {timeout} s")


def _lines(sources: dict) -> list[list[float]]:
    """The ys of the singular-value MultiLine (one list per rank)."""
    multi = [s for s in sources.values() if "xs" in s and "ys" in s]
    assert len(multi) == 1, f"expected one MultiLine source, got {[list(s) for s in sources.values()]}"
    return multi[0]["ys"]


def test_quickstart_explorer_in_jupyterlab(tmp_path):
    require_chromium()
    root = tmp_path / "notebooks"
    # The quick start opens on the demo data shipped with sedviz; without both, a developer's run
    # drives a stand-in notebook with the same explorer on synthetic data (CI fails instead).
    missing = [what for what, ok in ((str(QUICKSTART), QUICKSTART.exists()), ("the demo data", demo_shipped())) if not ok]
    real = not missing
    if real:
        shutil.copytree(REPO / "notebooks", root, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    else:
        if os.environ.get("CI"):
            pytest.fail(f"missing: {', '.join(missing)}")
        root.mkdir()
        _stand_in_notebook(root / "quickstart.ipynb")
        warnings.warn(f"missing {', '.join(missing)}: drove a stand-in notebook with the same explorer")
    # Screenshots stay in the temporary folder (scripts/screenshots.sh sends the real ones to the docs).
    shot_dir = screenshot_dir(tmp_path) if real else tmp_path

    def shoot(page_or_locator, name):
        page_or_locator.screenshot(path=str(shot_dir / f"lab_{name}.png"))

    scratch = tmp_path / "jupyter"
    scratch.mkdir()
    with jupyterlab(root, scratch) as (base, token):
        host = base.replace("http://", "")
        with offline_page(allow_prefixes=(base + "/", f"ws://{host}/"), viewport=(1400, 1000)) as (page, log):
            page.set_default_timeout(90_000)
            try:
                _drive(page, log, base, token, shoot)
                if real:
                    for nb in sorted(root.glob("*.ipynb")):
                        if nb.name not in ("quickstart.ipynb", "report.ipynb"):
                            cells = json.loads(nb.read_text(encoding="utf-8"))["cells"]
                            n_code = sum(c["cell_type"] == "code" for c in cells)
                            _run_notebook(page, base, token, nb.name, n_code, shoot)
                    assert log.blocked == [], f"requests outside the JupyterLab server: {log.blocked}"
            except Exception:
                page.screenshot(path=str(tmp_path / "failure.png"))
                print(f"screenshot of the failure: {tmp_path / 'failure.png'}; server log: {scratch / 'server.log'}")
                print("\n".join(log.console[-40:]))
                raise


def _drive(page, log, base, token, shoot):
    page.goto(f"{base}/lab/tree/quickstart.ipynb?token={token}")
    page.wait_for_selector(".jp-NotebookPanel .jp-Notebook .jp-Cell")
    page.wait_for_selector("#jp-main-statusbar >> text=Idle")  # the kernel has started
    # Run > Run All Cells, through the menu bar.
    page.get_by_role("menuitem", name="Run", exact=True).click()
    page.get_by_role("menuitem", name="Run All Cells", exact=True).click()

    # The singular-value explorer: the widget box with a ranks slider and the log-axis checkbox.
    explorer = (page.locator(".widget-vbox").filter(has=page.locator(".widget-hslider", has_text="ranks"))
                .filter(has=page.locator(".widget-checkbox")).last)
    _wait_for(page, explorer, timeout=120)
    handle = explorer.locator(".widget-hslider", has_text="ranks").locator(".noUi-handle-upper")
    el = explorer.element_handle()
    page.wait_for_function(f"(el) => Object.keys(({_SOURCES_JS})(el)).length > 0", arg=el)
    # Wait for every cell to have run (the kernel goes back to idle with no cell queued).
    page.wait_for_function(
        "() => document.querySelectorAll('.jp-Notebook .jp-InputPrompt').length > 0 && "
        "[...document.querySelectorAll('.jp-Notebook .jp-CodeCell .jp-InputPrompt')]"
        ".every(p => /\\[\\d+\\]/.test(p.textContent))", timeout=120_000)
    page.wait_for_timeout(1000)
    before = _lines(page.evaluate(_SOURCES_JS, el))
    upper = int(float(handle.get_attribute("aria-valuenow")))
    # One line per rank from 0 up to the slider's upper end, which is excluded (ranks=(start, stop)
    # is half-open) and equals the layer's rank when that is smaller.
    assert 6 <= len(before) == upper, (upper, len(before))
    explorer.scroll_into_view_if_needed()
    shoot(page, "quickstart")
    shoot(explorer, "explorer_sv")

    # Move the upper end of the ranks slider down by 5 with the keyboard.
    handle.focus()
    target = len(before) - 5
    for _ in range(upper - target):
        page.keyboard.press("ArrowLeft")
    page.wait_for_function(
        f"([el, n]) => {{ const s = Object.values(({_SOURCES_JS})(el)).find(s => s.ys); return s && s.ys.length === n; }}",
        arg=[el, target], timeout=30_000)
    after = _lines(page.evaluate(_SOURCES_JS, el))
    assert int(float(handle.get_attribute("aria-valuenow"))) == target
    assert "0 – " + str(target) in explorer.locator(".widget-hslider", has_text="ranks").inner_text()
    # The same ranks stay, in order, with the same values; the last five are gone.
    assert len(after) == target and after == before[:target]
    shoot(explorer, f"explorer_sv_ranks_0-{target}")

    # Every other explorer the notebook shows, one screenshot each, named by its title.
    for box in page.locator(".jp-OutputArea-output > .widget-vbox").all():
        title = (box.locator("b").first.inner_text() if box.locator("b").count() else "explorer").strip()
        if title != "sv":
            box.scroll_into_view_if_needed()
            shoot(box, "explorer_" + "_".join(title.lower().split()))

    assert log.blocked == [], f"requests outside the JupyterLab server: {log.blocked}"
    errors = [m for m in log.console_errors if "favicon" not in m]
    assert errors == [] and log.page_errors == [], log.problems()
