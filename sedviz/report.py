"""Reports: execute the report notebook with papermill, then export it as one self-contained HTML file.

    from sedviz.report import report
    report("spectra.zarr", "out/", parameters={"windows": [10, 20]})  # -> {"ipynb": ..., "html": ...}
    report("demo", "out/")                                             # the demo data shipped with sedviz
    report(["runs/a", "runs/b"], "out/")                               # computes out/spectra.zarr first

The notebook (``sedviz/notebooks/report.ipynb``, or ``notebooks/report.ipynb`` of a source checkout)
declares its parameters in one cell tagged ``parameters``, one typed assignment with a comment
each; :func:`notebook_parameters` reads them and ``papermill --help-notebook`` prints them.
Parameters are checked against those declarations *before* anything runs, and values given as
text (the command line's ``-p NAME VALUE``) are converted to the declared type.

The HTML needs no network: the notebook displays BokehJS (and the JavaScript of every Bokeh
extension loaded) inline once, with :func:`embed_bokehjs`, and each plot as a Bokeh document
embedded next to its ``<div>``, with :func:`show`; the exported page hides the code cells and
loads nothing from a CDN (nbconvert's require.js, MathJax and Mermaid tags are left out).

The display helpers :func:`embed_bokehjs`, :func:`show` and :func:`note` are what the report
notebook calls; they need IPython, not papermill or nbconvert (those are imported by
:func:`report` only).
"""
from __future__ import annotations

import ast
import difflib
import html as _html
import os
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import SedvizError

__all__ = ["report", "notebook_folder", "notebook_parameters", "validate_parameters", "convert_parameter", "find_notebook", "embed_bokehjs",
           "bokehjs_html", "show", "note", "md_text", "md_code", "external_resources",
           "ReportParameter"]

NOTEBOOK = "report.ipynb"
_PACKAGE_NOTEBOOK = Path(__file__).parent / "notebooks" / NOTEBOOK
_REPO_NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / NOTEBOOK
STORE_SUFFIXES = (".zarr", ".nc", ".nc4", ".netcdf", ".h5")

# nbconvert's lab template, minus the three <script src="https://..."> it adds (require.js, MathJax,
# Mermaid): the report uses none of them and must open without a network.
_TEMPLATE_NAME = "sedviz_report.html.j2"
_TEMPLATE = """{%- extends 'lab/index.html.j2' -%}
{%- block html_head_js_requirejs -%}{%- endblock html_head_js_requirejs -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
"""


# ------------------------------------------------------------------------------------------------
# the notebook and its parameters


@dataclass(frozen=True)
class ReportParameter:
    """One parameter declared in the notebook's ``parameters`` cell."""

    name: str
    type: str  # as declared, e.g. "int", "list[int]", "Optional[list[str]]"
    default: str  # the default's source text
    help: str

    def describe(self) -> str:
        return f"{self.name} ({self.type}, default {self.default}): {self.help}"


def find_notebook(notebook=None) -> Path:
    """The report notebook: ``notebook`` when given, else the one installed in the package
    (``sedviz/notebooks/report.ipynb``), else the source checkout's ``notebooks/report.ipynb``."""
    if notebook is not None:
        path = Path(notebook)
        if not path.is_file():
            raise SedvizError(f"report(notebook={str(notebook)!r}): no such notebook file; pass the path of an .ipynb "
                              f"or leave notebook=None for sedviz's own report notebook")
        return path
    for path in (_PACKAGE_NOTEBOOK, _REPO_NOTEBOOK):
        if path.is_file():
            return path
    raise SedvizError(f"the report notebook is missing from this installation (looked for {_PACKAGE_NOTEBOOK} and "
                      f"{_REPO_NOTEBOOK}); reinstall sedviz, or pass notebook= the path of a report notebook")


def notebook_folder() -> Path:
    """The folder of sedviz's notebooks that ``sedviz lab`` opens: a source checkout's ``notebooks/``
    (the tutorials and the report), else the one installed in the package (the report)."""
    for folder in (_REPO_NOTEBOOK.parent, _PACKAGE_NOTEBOOK.parent):
        if folder.is_dir() and any(folder.glob("*.ipynb")):
            return folder
    raise SedvizError(f"no notebooks found in {_REPO_NOTEBOOK.parent} or {_PACKAGE_NOTEBOOK.parent}; reinstall sedviz")


def notebook_parameters(notebook=None) -> dict[str, ReportParameter]:
    """The parameters the notebook declares (name -> :class:`ReportParameter`), in cell order, as
    papermill's inspection reads them from the cell tagged ``parameters``."""
    import papermill

    path = find_notebook(notebook)
    try:
        found = papermill.inspect_notebook(str(path))
    except Exception as exc:  # papermill raises several types for an unreadable notebook
        raise SedvizError(f"{path}: cannot read the notebook's parameters ({type(exc).__name__}: {exc})") from exc
    if not found:
        raise SedvizError(f"{path}: the notebook has no cell tagged 'parameters' with typed assignments; "
                          f"tag one cell 'parameters' (papermill's convention) and declare `name: type = default  # help`")
    return {name: ReportParameter(name, str(p["inferred_type_name"]), str(p["default"]), str(p["help"] or ""))
            for name, p in found.items()}


_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}
_SCALARS = ("str", "int", "float", "bool")


def _split_members(inner: str) -> list[str]:
    """Top-level comma-separated members of ``Union[...]``."""
    members, depth, current = [], 0, ""
    for ch in inner:
        depth += ch == "["
        depth -= ch == "]"
        if ch == "," and depth == 0:
            members.append(current)
            current = ""
        else:
            current += ch
    return [m for m in members + [current] if m]


def _members(declared: str) -> list[str]:
    """The alternatives of a declared type: ``"Optional[list[int]]"`` -> ["list[int]", "None"]."""
    t = declared.replace(" ", "")
    m = re.fullmatch(r"Optional\[(.*)\]", t)
    if m:
        return _members(m.group(1)) + ["None"]
    m = re.fullmatch(r"Union\[(.*)\]", t)
    if m:
        return [x for member in _split_members(m.group(1)) for x in _members(member)]
    return [t]


def _list_item(member: str) -> tuple[bool, str | None]:
    """(is a list type, its item type or None)."""
    m = re.fullmatch(r"(?:list|List|tuple|Tuple)(?:\[(\w+)(?:,\.\.\.)?\])?", member)
    return (True, m.group(1)) if m else (False, None)


def _example(member: str) -> str:
    is_list, item = _list_item(member)
    if is_list:
        return {"int": '"[10, 20]"', "float": '"[0.5, 0.9]"', "str": "\"['a', 'b']\""}.get(item or "", '"[1, 2]"')
    return {"int": "10", "float": "0.9", "bool": "true", "str": "text", "None": "None"}.get(member, "VALUE")


def _is_bool(value) -> bool:
    return type(value).__name__ in ("bool", "bool_")


def _scalar(value, base: str, *, text: bool):
    """``value`` as the scalar type ``base`` (parsing it when ``text``); ValueError when it is not one."""
    if base == "str":
        if isinstance(value, os.PathLike):
            return os.fspath(value)
        if isinstance(value, str):
            return value
        raise ValueError("not a string")
    if base == "bool":
        if text and isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        if _is_bool(value):
            return bool(value)
        raise ValueError("not true or false")
    if _is_bool(value):
        raise ValueError("true/false is not a number here")
    if base == "int":
        if text and isinstance(value, str):
            return int(value.strip())
        if hasattr(value, "__index__"):
            return int(value.__index__())
        raise ValueError("not a whole number")
    if base == "float":
        if text and isinstance(value, str):
            return float(value.strip())
        if not isinstance(value, str) and hasattr(value, "__float__"):
            return float(value)
        raise ValueError("not a number")
    raise ValueError(f"unsupported type {base}")


def _as_member(value, member: str, *, text: bool, loose: bool = True):
    """``value`` as one alternative of the declared type; ValueError (with the reason) if it is not.
    ``loose``: text that is not a list literal may still be a list ("a, b" or one bare value); off
    when a str alternative should take such text instead."""
    if member == "None":
        if value is None:
            return None
        raise ValueError("not None")
    if value is None:
        raise ValueError("None is not allowed")
    if member in _SCALARS:
        return _scalar(value, member, text=text)
    is_list, item = _list_item(member)
    if is_list:
        items = value
        if text:
            try:
                items = ast.literal_eval(value.strip())
            except (ValueError, SyntaxError):
                if item not in (None, "str") or not loose:
                    raise ValueError("not a list (write it as Python, e.g. [10, 20])") from None
                items = [s.strip() for s in value.split(",")] if "," in value else [value.strip()]
            if not isinstance(items, (list, tuple)):
                if not loose:
                    raise ValueError("not a list")
                items = [items]
        if not isinstance(items, (list, tuple)) and type(items).__name__ != "ndarray":
            raise ValueError("not a list")
        items = list(items)
        if item in _SCALARS:
            try:
                items = [_scalar(v, item, text=text and isinstance(v, str) and item != "str") for v in items]
            except ValueError as exc:
                raise ValueError(f"an entry is not a {item} ({exc})") from None
        return items
    # dict and other literal types: text goes through literal_eval, Python values pass unchanged
    if text:
        try:
            return ast.literal_eval(value)
        except (ValueError, SyntaxError):
            raise ValueError("not a Python literal") from None
    return value


def convert_parameter(spec: ReportParameter, value: Any) -> Any:
    """``value`` converted to the declared type of ``spec``.

    Text (as from the command line) is parsed: ``int``, ``float``, ``bool`` (true/false, yes/no,
    1/0), lists with :func:`ast.literal_eval` (``"[10, 20]"``; also ``"10, 20"`` or one bare value),
    ``None``/``null`` where the type is ``Optional``; for a ``Union`` the first alternative the
    text parses as (a string alternative takes what parses as nothing else). Python values must
    already have the type (an int passes for a float, a tuple for a list). Raises SedvizError
    naming the parameter, its type and an example of a good value.
    """
    if spec.type in ("None", ""):  # papermill found no annotation: nothing to check
        return value
    members = _members(spec.type)
    text = isinstance(value, str)
    if text and "None" in members:
        nones = {"none", "null"} | (set() if "str" in members else {""})
        if value.strip().lower() in nones:
            return None
    # Text tries the typed alternatives first; a str alternative takes what parses as nothing else.
    tries = [m for m in members if m not in ("str", "None")] + [m for m in members if m == "str"] if text else members
    reasons = []
    for member in tries:
        try:
            return _as_member(value, member, text=text, loose="str" not in members)
        except ValueError as exc:
            reasons.append(str(exc))
    why = reasons[0] if len(reasons) == 1 else "; ".join(dict.fromkeys(reasons))
    examples = " or ".join(f"-p {spec.name} {_example(m)}" for m in members)
    raise SedvizError(f"report parameter {spec.name}={value!r}: {why}. {spec.name} is declared {spec.type} "
                      f"(default {spec.default}: {spec.help}). Fix: pass a {spec.type} value, e.g. {examples}")


#: Report parameters renamed in 0.2 (one name per concept: ``params`` is a parameter group) -> new name.
RENAMED = {"edge_layers": "edge_params", "warning_layers": "warning_params"}


def validate_parameters(parameters: Mapping[str, Any] | None, notebook=None) -> dict[str, Any]:
    """Parameters checked against the notebook's declarations and converted to the declared
    types (see :func:`convert_parameter`). Unknown names raise SedvizError listing the valid ones;
    an old name of :data:`RENAMED` is accepted for one release, with a DeprecationWarning."""
    specs = notebook_parameters(notebook)
    out = {}
    for name, value in dict(parameters or {}).items():
        if name in RENAMED and name not in specs and RENAMED[name] in specs:
            warnings.warn(f"report parameter {name!r} is now {RENAMED[name]!r}; the old name will be removed "
                          f"in the next release", DeprecationWarning, stacklevel=2)
            name = RENAMED[name]
        if name not in specs:
            close = difflib.get_close_matches(str(name), list(specs), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            listing = "\n  ".join(s.describe() for s in specs.values())
            raise SedvizError(f"unknown report parameter {name!r}; {hint}the report notebook "
                              f"{find_notebook(notebook)} takes:\n  {listing}\nFix: use one of these names "
                              f"(sedviz report SOURCE -o OUT -p NAME VALUE).")
        out[name] = convert_parameter(specs[name], value)
    return out


# ------------------------------------------------------------------------------------------------
# the source: demo, a store, or run folders


def _is_store(path: Path) -> bool:
    if path.suffix.lower() in STORE_SUFFIXES:
        return True
    return path.is_dir() and any((path / m).exists() for m in ("zarr.json", ".zgroup", "sedviz_commits"))


def _resolve_source(source, out_dir: Path, windows) -> str:
    """The ``store`` parameter for the notebook: "demo", or the absolute path of a store
    (computed from run folders into ``out_dir/spectra.zarr`` first)."""
    if isinstance(source, (str, os.PathLike)):
        items = [source]
    elif isinstance(source, Sequence) and source:
        items = list(source)
    else:
        raise SedvizError(f"report(source={source!r}): pass a store (Zarr folder or .nc file), a list of run folders, "
                          f"or 'demo'")
    if len(items) == 1 and str(items[0]) == "demo":
        from .data import DEMO_STORE

        if not DEMO_STORE.exists():
            raise SedvizError(f"report('demo'): the demo data {DEMO_STORE} is missing from this installation; rebuild "
                              f"it with `sedviz demo --ship` from a source checkout, or pass a store")
        return "demo"
    paths = [Path(p) for p in items]
    if len(paths) == 1 and _is_store(paths[0]):
        if not paths[0].exists():
            raise SedvizError(f"report: {paths[0]}: no such store; compute one with "
                              f"`sedviz compute RUNS -o {paths[0]}`, or pass run folders")
        return str(paths[0].resolve())
    for p in paths:
        if _is_store(p):
            raise SedvizError(f"report: {p} is a store; pass one store on its own, or only run folders")
        if not p.is_dir():
            raise SedvizError(f"report: {p}: no such run folder or store; pass a store (Zarr folder or .nc file), "
                              f"run folders of checkpoints, or 'demo'")
    from .pipeline import compute

    store = out_dir / "spectra.zarr"
    kw = {"windows": tuple(windows)} if windows else {}
    compute([str(p) for p in paths], store, **kw)
    return str(store.resolve())


# ------------------------------------------------------------------------------------------------
# running and exporting


def _cell_where(nb, exc) -> str:
    """'cell 7 (section "Spectral edge")' for a papermill error: the cell is found by its execution
    count (papermill puts an error banner above the first cell, so indices shift), the section by
    the nearest markdown heading above it."""
    count = getattr(exc, "exec_count", None)
    where = f"cell {count if count is not None else getattr(exc, 'cell_index', '?')}"
    if nb is None or count is None:
        return where
    cells = list(nb.cells)
    index = next((i for i, c in enumerate(cells) if c.cell_type == "code" and c.get("execution_count") == count), None)
    if index is None:
        return where
    for cell in reversed(cells[:index]):
        if cell.cell_type == "markdown":
            heading = next((ln.lstrip("# ").strip() for ln in cell.source.splitlines() if ln.startswith("#")), None)
            if heading:
                return f'{where} (section "{heading}")'
    return where


def external_resources(html: str) -> list[str]:
    """Files the page would fetch when opened: the ``src``/``href`` of ``<script>``, ``<link>``,
    ``<img>``, ``<iframe>`` elements, CSS ``@import`` and ``url()`` in ``<style>`` elements, and the
    ``url`` of every Bokeh ``ImportedStyleSheet`` in the embedded documents; ``data:`` URLs and
    in-page anchors excepted. Inline JavaScript is not searched for URLs in its strings (BokehJS
    holds many it never fetches); the browser test checks what a page really requests."""
    scripts = re.findall(r"<script\b[^>]*>(.*?)</script>", html, flags=re.S | re.I)
    markup = re.sub(r"(<script\b[^>]*>).*?(</script>)", r"\1\2", html, flags=re.S | re.I)
    found = []
    for pat in (r"<(?:script|img|iframe)\b[^>]*\bsrc\s*=\s*[\"']?([^\"'\s>]+)",
                r"<link\b[^>]*\bhref\s*=\s*[\"']?([^\"'\s>]+)",
                r"@import\s+(?:url\()?\s*[\"']?([^\"')\s;]+)",
                r"url\(\s*[\"']?([^\"')\s]+)"):
        found += re.findall(pat, markup, flags=re.I)
    for body in scripts:
        found += re.findall(r"\"name\":\s*\"ImportedStyleSheet\".{0,300}?\"url\":\s*\"([^\"]+)\"", body)
    return sorted({u for u in found if not u.startswith(("data:", "#"))})


def _default(spec: ReportParameter | None):
    """The declared default of a parameter as a Python value (None when it is not a literal)."""
    try:
        return ast.literal_eval(spec.default) if spec is not None else None
    except (ValueError, SyntaxError):
        return None


def _export_html(nb, path: Path, title: str) -> None:
    import jinja2
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(
        exclude_input=True, exclude_input_prompt=True, exclude_output_prompt=True,
        extra_loaders=[jinja2.DictLoader({_TEMPLATE_NAME: _TEMPLATE})], template_file=_TEMPLATE_NAME,
    )
    nb.metadata["title"] = title  # the page's <title>
    body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": title}})
    remote = external_resources(body)
    if remote:
        raise SedvizError(f"{path}: the exported report would load {remote} from the network; a report must be "
                          f"self-contained (display plots with sedviz.report.show, BokehJS with embed_bokehjs)")
    path.write_text(body, encoding="utf-8")


def report(source, out_dir, *, parameters=None, notebook=None, kernel_name=None, timeout=600) -> dict:
    """Execute the report notebook on ``source`` and write ``report.ipynb`` and ``report.html``.

    Parameters
    ----------
    source : str, path or list
        A store (Zarr folder or ``.nc`` file), ``"demo"`` for the demo data shipped with sedviz, or
        run folders of checkpoints (then computed first into ``out_dir/spectra.zarr``, with the
        ``windows`` parameter's window sizes). A one-element list is read like its element.
    out_dir : path
        Output folder (created). The notebook runs with it as its working directory.
    parameters : dict, optional
        Notebook parameters by name (see :func:`notebook_parameters`, or
        ``papermill --help-notebook sedviz/notebooks/report.ipynb``). Values may be text, as from
        the command line, and are converted to the declared type; ``store`` comes from ``source``.
    notebook : path, optional
        Another report notebook (default: sedviz's own, see :func:`find_notebook`).
    kernel_name : str, optional
        Jupyter kernel to run it on (default: the notebook's, ``python3``).
    timeout : float
        Seconds any one cell may take.

    Returns
    -------
    dict with ``ipynb`` (the executed notebook) and ``html`` (the self-contained page, code hidden,
    BokehJS inline), both :class:`pathlib.Path`.

    Raises
    ------
    SedvizError
        for an unknown parameter or a value of the wrong type (before anything runs), a missing
        source, or a failure inside the notebook (naming the cell, the error and the partially
        executed notebook).
    """
    nb_path = find_notebook(notebook)
    params = validate_parameters(parameters, nb_path)
    specs = notebook_parameters(nb_path)
    if "store" in params:
        raise SedvizError("report(parameters={'store': ...}): the store is the source argument; pass it as "
                          "report(STORE, OUT_DIR) or `sedviz report STORE -o OUT`")
    if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or timeout <= 0:
        raise SedvizError(f"report(timeout={timeout!r}): expected seconds per cell, a number > 0")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise SedvizError(f"report: output folder {out} is a file; pass a folder path")
    out.mkdir(parents=True, exist_ok=True)
    windows = params.get("windows")
    store = _resolve_source(source, out, windows)
    if "store" in specs:
        params = {"store": store, **params}

    import nbformat
    import papermill
    from papermill.exceptions import PapermillExecutionError

    ipynb, html = out / "report.ipynb", out / "report.html"
    try:
        papermill.execute_notebook(
            str(nb_path), str(ipynb), parameters=params, kernel_name=kernel_name, cwd=str(out),
            execution_timeout=timeout, progress_bar=False, log_output=False,
        )
    except PapermillExecutionError as exc:
        nb = nbformat.read(str(ipynb), as_version=4) if ipynb.exists() else None
        hint = ""
        if exc.ename == "ModuleNotFoundError" and "sedviz" in str(exc.evalue):
            hint = (f" The kernel {kernel_name or 'python3'!r} runs a Python without sedviz: register this environment's "
                    f"kernel (python -m ipykernel install --user --name sedviz) and pass kernel_name='sedviz'.")
        raise SedvizError(f"the report notebook failed in {_cell_where(nb, exc)}: {exc.ename}: {exc.evalue}. "
                          f"The partially executed notebook, with the traceback, is {ipynb}.{hint}") from None
    except Exception as exc:  # kernel missing or died, cell timeout: say which and where
        name = type(exc).__name__
        if name == "NoSuchKernel":
            raise SedvizError(f"report(kernel_name={kernel_name!r}): no such Jupyter kernel ({exc}); see "
                              f"`jupyter kernelspec list`, or leave kernel_name=None") from None
        if name in ("CellTimeoutError", "DeadKernelError", "TimeoutError"):
            raise SedvizError(f"the report notebook stopped: {name}: {exc} (timeout={timeout} s per cell). The "
                              f"partially executed notebook is {ipynb}; raise timeout= for large stores") from None
        raise
    nb = nbformat.read(str(ipynb), as_version=4)
    title = str(params.get("title") or _default(specs.get("title")) or "sedviz report")
    _export_html(nb, html, title)
    return {"ipynb": ipynb, "html": html}


# ------------------------------------------------------------------------------------------------
# display helpers the notebook uses


def embed_bokehjs() -> None:
    """Display BokehJS and the JavaScript of every loaded Bokeh extension, inline (no CDN), once
    at the top of a notebook whose plots are shown with :func:`show`."""
    display_html = _ipython_html()
    display_html(bokehjs_html())


def bokehjs_html() -> str:
    """``<script>`` (and ``<style>``) elements holding BokehJS and the JavaScript of every loaded
    Bokeh extension, inline. Only the inline code: ``Resources.render()`` would also emit
    ``<script src>`` tags for files an extension serves (Panel's es-module-shims), which do not
    exist beside a saved report."""
    import holoviews.plotting.bokeh  # noqa: F401  (registers the extension models whose JS must be inlined)
    from bokeh.resources import INLINE

    parts = [f"<style>{css}</style>" for css in INLINE.css_raw]
    parts += [f'<script type="text/javascript">{js}</script>' for js in INLINE.js_raw]
    return "\n".join(parts)


def _ipython_html():
    from IPython.display import HTML, display

    return lambda text: display(HTML(text))


def show(obj, **opts) -> None:
    """Display a HoloViews object (from :mod:`sedviz.plots`) as an embedded Bokeh document.

    ``opts`` are Bokeh plot options applied first (e.g. ``width=480``). The output is plain HTML
    (a ``<div>`` and a ``<script>`` with the document's JSON) that draws with the BokehJS
    :func:`embed_bokehjs` displayed: it works in JupyterLab and in the exported HTML, offline.
    """
    import holoviews as hv
    from bokeh.embed import components
    from IPython.display import HTML, display

    if opts:
        obj = obj.opts(backend="bokeh", **opts)
    script, div = components(hv.render(obj, backend="bokeh"))
    display(HTML(div + script))


_MD_PUNCTUATION = re.compile(r"([\\`*_{}\[\]()#+\-.!|~:=])")


def md_text(value) -> str:
    """``value`` as literal text inside Markdown: Markdown punctuation is backslash-escaped and
    ``& < > " '`` become HTML entities, so a title, a run name or a path shows exactly as written
    and nothing in it becomes markup, a link or a script. Newlines become spaces."""
    text = " ".join(str(value).splitlines())
    return _html.escape(_MD_PUNCTUATION.sub(r"\\\1", text), quote=True)


def md_code(value) -> str:
    """``value`` as inline code inside Markdown (an HTML ``<code>`` element holding :func:`md_text`;
    a backtick code span would end at the first backtick of the value)."""
    return f"<code>{md_text(value)}</code>"


def note(text: str, *, kind: str = "info") -> None:
    """Display a short boxed note (``kind`` "info" or "skip": a section that could not be drawn,
    with the reason). Notes carry the class ``sedviz-note sedviz-<kind>``."""
    from IPython.display import HTML, display

    colors = {"info": ("#eef5fb", "#1f77b4"), "skip": ("#fff4e5", "#d97706")}
    bg, border = colors.get(kind, colors["info"])
    display(HTML(f'<div class="sedviz-note sedviz-{kind}" style="background:{bg};border-left:4px solid {border};'
                 f'padding:6px 10px;margin:6px 0">{_html.escape(text)}</div>'))
