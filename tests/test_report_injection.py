"""Script injection: strings from report parameters and from the store (title, run names, the
store's path) reach the report's Markdown and HTML as text, never as markup. The report is
opened in headless Chromium (tests/browser_util.py) and the injected scripts must not have run.
"""
from __future__ import annotations

import pytest

from browser_util import make_synthetic_store, offline_page, require_chromium

pytestmark = [pytest.mark.browser, pytest.mark.slow]

TITLE = "<script>window.__pwnedTitle = 1</script>Spectra *of* `x` [link](javascript:alert(1))"
RUN = "<img src=x onerror=\"window.__pwnedRun = 1\">"
FOLDER = "p<img src=y onerror=window.__pwnedPath=1>"


def test_injected_strings_do_not_run_in_the_report(tmp_path):
    require_chromium()
    from sedviz.report import report

    store = tmp_path / FOLDER / "s.nc"
    store.parent.mkdir()
    make_synthetic_store(store, runs=(RUN, "grok_wd0"))
    out = report(str(store), tmp_path / "out", parameters={"title": TITLE, "runs": [RUN, "grok_wd0"]})
    html = out["html"].read_text(encoding="utf-8")
    assert "<script>window.__pwned" not in html and "<img src=x" not in html and "<img src=y" not in html
    with offline_page() as (page, log):
        page.goto(out["html"].as_uri(), wait_until="load")
        page.wait_for_timeout(1500)
        ran = page.evaluate("() => [window.__pwnedTitle, window.__pwnedRun, window.__pwnedPath]")
        assert ran == [None, None, None], ran
        heading = page.inner_text("h1")
        assert TITLE in heading, heading  # shown as written, punctuation and all
        assert page.title().startswith("<script>window.__pwnedTitle")
        body = page.inner_text("body")
        assert RUN in body and FOLDER in body
        assert page.evaluate("() => document.querySelectorAll('a[href^=\"javascript\"]').length") == 0
