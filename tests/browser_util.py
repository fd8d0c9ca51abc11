"""Shared helpers of the browser tests: launch Debian's Chromium through Playwright, offline.

Chromium comes from the system (`scripts/setup.sh` installs it with apt); Playwright's own browser
downloads are never used. Every page runs with the network cut: requests to anything but
``file:``, ``data:``, ``blob:`` and the local JupyterLab server (when one is allowed) are aborted and
recorded, so a test can assert that the page asked for nothing from a CDN.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

CHROMIUM = Path(os.environ.get("SEDVIZ_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
REPO = Path(__file__).resolve().parents[1]
SCREENSHOTS = REPO / "docs" / "screenshots"  # refreshed on purpose by scripts/screenshots.sh only


def screenshot_dir(tmp: Path) -> Path:
    """Where the browser tests save screenshots: ``tmp`` (tests never write tracked files), or the
    folder in ``SEDVIZ_SCREENSHOTS``, which scripts/screenshots.sh sets to docs/screenshots."""
    folder = Path(os.environ.get("SEDVIZ_SCREENSHOTS") or tmp)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def require_chromium() -> None:
    """Skip (locally) or fail (with CI set) when Chromium or Playwright is missing."""
    problems = []
    if not (CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK)):
        problems.append(f"{CHROMIUM} is missing")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        problems.append("the playwright Python package is missing")
    if not problems:
        return
    message = "; ".join(problems) + ": run scripts/setup.sh (it installs Debian's chromium and the test extras)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@dataclass
class PageLog:
    """What a page did that a test may assert on."""

    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)
    console: list[str] = field(default_factory=list)

    def problems(self) -> list[str]:
        return ([f"console error: {m}" for m in self.console_errors] + [f"page error: {m}" for m in self.page_errors]
                + [f"blocked request: {u}" for u in self.blocked])


@contextmanager
def offline_page(*, allow_prefixes: tuple[str, ...] = (), viewport=(1280, 900)):
    """A Chromium page (fresh profile) whose requests outside file:, data:, blob: and
    ``allow_prefixes`` are aborted; yields ``(page, log)``."""
    require_chromium()
    from playwright.sync_api import sync_playwright

    profile = tempfile.mkdtemp(prefix="sedviz-chromium-")
    allowed = ("file:", "data:", "blob:", "about:") + tuple(allow_prefixes)
    log = PageLog()
    try:
        with sync_playwright() as pw:
            context = pw.chromium.launch_persistent_context(
                profile, executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS,
                viewport={"width": viewport[0], "height": viewport[1]}, service_workers="block",
            )
            try:
                def route(r):
                    url = r.request.url
                    if url.startswith(allowed):
                        r.continue_()
                    else:
                        log.blocked.append(url)
                        r.abort()

                context.route("**/*", route)
                page = context.pages[0] if context.pages else context.new_page()

                def on_console(msg):
                    log.console.append(f"{msg.type}: {msg.text}")
                    if msg.type == "error":
                        log.console_errors.append(msg.text)

                page.on("console", on_console)
                page.on("pageerror", lambda exc: log.page_errors.append(str(exc)))
                yield page, log
            finally:
                context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def screenshot(page, name: str, tmp: Path, **kwargs) -> Path:
    """Save a PNG of the page as NAME in :func:`screenshot_dir` (``tmp`` unless asked otherwise)."""
    path = screenshot_dir(tmp) / name
    page.screenshot(path=str(path), **kwargs)
    return path


# ------------------------------------------------------------------------------------------------
# report fixtures shared by test_report.py and test_browser.py (executing the notebook takes ~30 s,
# so each distinct report is made once per test session)

_REPORTS: dict = {}


def make_synthetic_store(path: Path, runs=("grok_wd1", "grok_wd0")) -> Path:
    """Write ``sedviz._synthetic.synthetic_dataset`` into a netCDF store through the store API, so
    that ``sedviz.open(path)`` returns it (the report's input when the demo data is not shipped)."""
    from sedviz._synthetic import synthetic_dataset
    from sedviz.io.store import open_store

    ds = synthetic_dataset(runs=runs)
    metrics = [v for v in ds.data_vars if ds[v].dims == ("run", "step")]
    store = open_store(path)
    with store.writing():
        store.init(dict(ds.attrs))
        for run in ds.run.values.tolist():
            store.write_metrics(run, ds[metrics].sel(run=run).drop_vars("run").to_dataframe())
            store.append(run, ds.sel(run=run).drop_vars(["run", *metrics]), {"source": f"synthetic://{run}", "checkpoints": {}})
        store.flush()
    return Path(path)


def demo_shipped() -> bool:
    from sedviz.data import DEMO_STORE

    return DEMO_STORE.exists()


def report_source(tmp_root: Path) -> str:
    """``"demo"`` when the demo data is shipped, else a synthetic store under ``tmp_root``."""
    if demo_shipped():
        return "demo"
    path = Path(tmp_root) / "synthetic.nc"
    if not path.exists():
        make_synthetic_store(path)
    return str(path)


def shared_report(tmp_root: Path, source: str, parameters: dict | None = None) -> dict:
    """``sedviz.report.report(source, ...)``, made once per session for each (source, parameters)."""
    from sedviz.report import report

    key = (source, tuple(sorted((k, repr(v)) for k, v in (parameters or {}).items())))
    if key not in _REPORTS:
        out = Path(tmp_root) / f"report{len(_REPORTS)}"
        _REPORTS[key] = report(source, out, parameters=parameters)
    return _REPORTS[key]
