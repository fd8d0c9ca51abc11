"""Every ```python block of README.md and docs/*.md runs, in order, one namespace per file.

The blocks of a file run like one session (later blocks use names that earlier ones defined), in a
temporary folder holding two small runs of checkpoints, ``runs/a`` and ``runs/b`` (tests/helpers.py),
so examples like ``sedviz.compute(["runs/a", "runs/b"], store="spectra.zarr")`` run as written.

A block that cannot run here (it needs a GPU, a network, or minutes that another test already
spends) is marked by an HTML comment on the line right before its fence, which Markdown does not
show:

    <!-- docs-test: skip (why) -->

The reason in brackets is required; the test lists the skipped blocks with their reasons.
"""
import re
from pathlib import Path

import pytest

from helpers import write_mlp_run

REPO = Path(__file__).resolve().parents[1]
FILES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
SKIP = re.compile(r"<!--\s*docs-test:\s*skip\s*\((?P<why>[^)]+)\)\s*-->")
FENCE = re.compile(r"^```python[^\n]*\n(?P<code>.*?)^```", re.S | re.M)


def blocks(path: Path) -> list[tuple[int, str, str | None]]:
    """(line number, code, skip reason or None) of each python block."""
    text = path.read_text(encoding="utf-8")
    out = []
    for m in FENCE.finditer(text):
        before = text[: m.start()].rstrip("\n").rsplit("\n", 1)[-1]
        skip = SKIP.search(before)
        out.append((text.count("\n", 0, m.start()) + 1, m.group("code"), skip.group("why") if skip else None))
    return out


def _anchor(heading: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    return re.sub(r"[^a-z0-9 -]", "", heading.strip().lower()).replace(" ", "-")


def test_methods_links_resolve():
    """Every reference to docs/methods.md#section in code, docs, notebooks and tests names a section
    that exists, and no reference to the old numbered METHODS sections is left."""
    text = (REPO / "docs" / "methods.md").read_text(encoding="utf-8")
    sections = {_anchor(h) for h in re.findall(r"^#+ (.+)$", text, re.M)}
    used, old = set(), []
    for folder in ("sedviz", "docs", "notebooks", "tests", "benchmarks"):
        for path in (REPO / folder).rglob("*"):
            if path.suffix not in (".py", ".md", ".ipynb") or not path.is_file() or path.name in ("methods.md", "test_docs.py"):
                continue
            body = path.read_text(encoding="utf-8")
            used |= {(path.name, a) for a in re.findall(r"methods\.md#([a-z0-9-]+)", body)}
            old += [path.name for _ in re.findall(r"METHODS[ .]", body)]
    assert len(used) > 50 and not old
    assert {a for _, a in used} <= sections, sorted((f, a) for f, a in used if a not in sections)


def test_skip_markers_are_parsed(tmp_path):
    md = tmp_path / "x.md"
    md.write_text("x\n<!-- docs-test: skip (needs a GPU) -->\n```python\n1/0\n```\n\n```python\ny = 1\n```\n")
    assert blocks(md) == [(3, "1/0\n", "needs a GPU"), (7, "y = 1\n", None)]


@pytest.mark.slow
@pytest.mark.parametrize("path", [p for p in FILES if blocks(p)], ids=lambda p: p.relative_to(REPO).as_posix())
def test_code_blocks_run(path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    write_mlp_run(tmp_path / "runs" / "a", n=4)
    write_mlp_run(tmp_path / "runs" / "b", n=4, seed=2)
    namespace: dict = {"__name__": "__docs__"}
    ran = 0
    for line, code, skip in blocks(path):
        if skip:
            continue
        try:
            exec(compile(code, f"{path.name}:{line}", "exec"), namespace)
        except Exception as exc:
            raise AssertionError(f"{path.relative_to(REPO)} line {line}: the code block fails: "
                                 f"{type(exc).__name__}: {exc}") from exc
        ran += 1
    assert ran, f"{path}: every block is skipped"
    assert not list(REPO.glob("spectra.zarr")), "a block wrote into the repository"
