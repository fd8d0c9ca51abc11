"""The HTML report in a real browser with the network cut off: every Bokeh plot draws, nothing is
requested from anywhere but the file itself, and the console stays free of errors.

Headless Debian Chromium through Playwright (tests/browser_util.py). The screenshot of the demo
report goes to the test's temporary folder (docs/screenshots/report.png with scripts/screenshots.sh).
"""
from __future__ import annotations

import bokeh
import pytest

from browser_util import offline_page, report_source, require_chromium, screenshot, shared_report

pytestmark = [pytest.mark.browser, pytest.mark.slow]

# Canvas elements inside the Bokeh views (they live in shadow roots, so walk them).
_COUNT_JS = """() => {
  const found = {roots: 0, canvases: 0, drawn: 0};
  const walk = (root) => {
    for (const el of root.querySelectorAll('*')) {
      if (el.tagName === 'CANVAS' && el.width > 0 && el.height > 0) {
        found.canvases++;
        try {  // a drawn canvas has some pixel that is not transparent white
          const ctx = el.getContext('2d');
          if (ctx) {
            const d = ctx.getImageData(0, 0, el.width, el.height).data;
            for (let i = 3; i < d.length; i += 4 * 97) { if (d[i] !== 0 && (d[i-3] < 250 || d[i-2] < 250 || d[i-1] < 250)) { found.drawn++; break; } }
          }
        } catch (e) {}
      }
      if (el.shadowRoot) walk(el.shadowRoot);
    }
  };
  walk(document);
  found.roots = document.querySelectorAll('[data-root-id]').length;
  found.docs = window.Bokeh ? window.Bokeh.documents.length : -1;
  found.views = window.Bokeh ? Object.keys(window.Bokeh.index).length : -1;
  return found;
}"""


def test_report_renders_offline(tmp_path_factory):
    require_chromium()
    base = tmp_path_factory.getbasetemp()
    source = report_source(base)
    page_path = shared_report(base, source)["html"]
    with offline_page(viewport=(1280, 900)) as (page, log):
        page.goto(page_path.as_uri(), wait_until="load")
        # BokehJS is inline, so it is defined once the page has loaded; the nine embedded documents
        # then build their views asynchronously.
        page.wait_for_function("() => window.Bokeh !== undefined && window.Bokeh.documents.length >= 9", timeout=60_000)
        page.wait_for_function(f"() => ({_COUNT_JS})().views >= 9", timeout=60_000)
        page.wait_for_timeout(1500)  # let the last canvases paint
        found = page.evaluate(_COUNT_JS)
        assert found["docs"] == 9 and found["roots"] >= 9, found
        # Each figure has at least one canvas, and at least one per document carries ink.
        assert found["canvases"] >= 9 and found["drawn"] >= 9, found
        assert page.evaluate("() => window.Bokeh.version") == bokeh.__version__
        assert log.blocked == [], f"the report requested files from the network: {log.blocked}"
        assert log.console_errors == [] and log.page_errors == [], log.problems()
        # Screenshot the demo report for the docs (a synthetic store goes to a temporary file).
        screenshot(page, "report.png" if source == "demo" else "report-synthetic.png", base, full_page=False)


def test_blocking_is_real():
    """The network guard of these tests does stop a remote script (so an empty block list means
    the report asked for nothing)."""
    require_chromium()
    with offline_page() as (page, log):
        page.set_content('<html><body><script src="https://cdn.bokeh.org/bokeh/release/bokeh-3.9.2.min.js"></script>'
                         '<p id="x">x</p></body></html>')
        page.wait_for_timeout(300)
        assert page.evaluate("() => window.Bokeh === undefined")
        assert any("cdn.bokeh.org" in u for u in log.blocked)
