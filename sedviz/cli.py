"""`sedviz compute | info | demo | suite | report | lab` — the command line over the public API.

Parsing imports nothing heavy: torch, xarray and the notebook stack load inside the command that
needs them, so ``sedviz --help`` answers at once (benchmarks/startup.py measures it)."""
from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

from .errors import SedvizError


def _compute(args) -> int:
    from .pipeline import compute
    from .summary import summary

    client = None
    if args.scheduler:
        from dask.distributed import Client

        client = Client(args.scheduler)
    ds = compute(
        args.runs, args.output, names=args.name or None, device=args.device, dtype=args.dtype, k=args.k,
        align=not args.no_align, sva=not args.no_sva, sketch=not args.no_sketch, sketch_dim=args.sketch_dim,
        sketch_seed=args.sketch_seed, windows=tuple(args.windows), max_lag=_max_lag(args.max_lag),
        on_error=args.on_error, client=client, store_format=args.format, progress=not args.quiet,
        n_heads=args.n_heads, kinds=_kinds(args.kinds), pairs=_pairs(args.pairs), threads=args.threads,
    )
    print(summary(ds))
    return 0


def _max_lag(text):
    if text in (None, "auto", "all"):
        return text or "auto"
    if text == "none":
        return None
    try:
        return int(text)
    except ValueError:
        raise SedvizError(f"--max-lag {text!r}: use auto, all, none or a whole number") from None


def _json_file(path: str, option: str, expected: str):
    import json

    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SedvizError(f"{option} {path}: not a readable JSON file ({exc}); it must hold {expected}") from None


def _kinds(items):
    """``--kinds`` NAME=KIND ... or a JSON file {name: kind} -> dict (None when not given)."""
    if not items:
        return None
    out = {}
    for item in items:
        if "=" in item:
            name, kind = item.rsplit("=", 1)
            out[name] = kind
            continue
        data = _json_file(item, "--kinds", 'an object {"layer name": "kind"}')
        if not isinstance(data, dict):
            raise SedvizError(f'--kinds {item}: expected a JSON object {{"layer name": "kind"}}')
        out.update({str(k): str(v) for k, v in data.items()})
    return out


def _pairs(path):
    """``--pairs`` FILE: a JSON list of [src, dst] layer names -> list of tuples (None when not given)."""
    if not path:
        return None
    data = _json_file(path, "--pairs", 'a list of ["src layer", "dst layer"] pairs')
    if not isinstance(data, list) or not all(isinstance(p, list) and len(p) == 2 and all(isinstance(x, str) for x in p) for p in data):
        raise SedvizError(f'--pairs {path}: expected a JSON list of ["src layer", "dst layer"] pairs')
    return [tuple(p) for p in data]


def _info(args) -> int:
    from . import open as open_store
    from .summary import summary

    print(summary(open_store(args.store), events=args.events))
    return 0


def _demo(args) -> int:
    from . import demo
    from .pipeline import compute
    from .summary import summary

    out = Path(args.out)
    t0 = time.perf_counter()
    if args.live:  # record while training: no checkpoints are written
        if args.ship:
            raise SedvizError("sedviz demo --live --ship: the shipped demo data comes from checkpoints; drop --live")
        from . import open as open_store_ds

        store = Path(args.store) if args.store else out / "demo.zarr"
        demo.record_demo(store, progress=not args.quiet)
        print(summary(open_store_ds(store)))
        print(f"\ntrained and recorded {len(demo.RUNS)} runs live in {time.perf_counter() - t0:.0f} s -> {store}")
        return 0
    runs = demo.train_demo(out, progress=not args.quiet)
    t1 = time.perf_counter()
    store = Path(args.store) if args.store else out / "demo.zarr"
    ds = compute(runs, store, progress=not args.quiet, threads=args.threads)
    t2 = time.perf_counter()
    print(summary(ds, events=True))
    print(f"\ntrained {len(runs)} runs in {t1 - t0:.0f} s, computed their spectra in {t2 - t1:.0f} s -> {store}")
    if args.ship:
        from .data import ship_demo

        ship_demo(ds, runs)
    return 0


def _suite(args) -> int:
    from . import suite
    from .summary import summary

    t0 = time.perf_counter()
    res = suite.build_suite(args.out, only=args.only, jobs=args.jobs, store=args.store, progress=not args.quiet,
                            data_out=suite.SUITE_DATA if args.ship else None)
    print(summary(res["dataset"]))
    cpu = res["cpu_s"]
    trained = {k: v for k, v in cpu.items() if k != "compute"}
    print(f"\ntrained {len(trained)} runs ({sum(trained.values()):.0f} s CPU), computed {len(res['runs'])} runs "
          f"({cpu['compute']:.0f} s CPU) in {time.perf_counter() - t0:.0f} s -> {res['store']}")
    return 0


def _report(args) -> int:
    from .report import report

    params = {}
    for name, value in args.parameter or []:
        params[name] = value
    out = report(args.source, args.output, parameters=params)
    print(f"wrote {out['ipynb']} and {out['html']}")
    return 0


def _lab(args) -> int:
    import subprocess

    cmd, folder = lab_command(args.notebook, no_browser=args.no_browser, port=args.port)
    print(f"sedviz lab: opening JupyterLab on {folder} (Ctrl-C stops it)", file=sys.stderr)
    return subprocess.call(cmd)


def lab_command(notebook: str = "quickstart.ipynb", *, no_browser: bool = False, port: int | None = None):
    """The JupyterLab command ``sedviz lab`` runs, and the notebook folder it opens."""
    import importlib.util

    from .report import notebook_folder

    if importlib.util.find_spec("jupyterlab") is None:
        raise SedvizError("JupyterLab is not installed; install sedviz's notebook extra: pip install 'sedviz[viz]'")
    folder = notebook_folder()
    cmd = [sys.executable, "-m", "jupyterlab", f"--ServerApp.root_dir={folder}"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")  # Jupyter refuses to start as root without it (containers, VMs)
    if no_browser:
        cmd.append("--no-browser")
    if port:
        cmd.append(f"--port={port}")
    if (folder / notebook).is_file():
        cmd.append(str(folder / notebook))
    else:
        print(f"sedviz lab: {notebook} is not in {folder}; opening the folder", file=sys.stderr)
    return cmd, folder


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sedviz", description="Spectral dynamics of neural network training.")
    p.add_argument("--version", action="version", version=_version())
    sub = p.add_subparsers(dest="command", required=True)
    threads = argparse.ArgumentParser(add_help=False)
    threads.add_argument("--threads", type=_positive_int, metavar="N",
                         help="CPU threads for torch and BLAS (default: OMP_NUM_THREADS when set, else 1)")

    c = sub.add_parser("compute", parents=[threads], help="compute spectra of one or many runs of checkpoints into a store")
    c.add_argument("runs", nargs="+", help="run folders of checkpoints")
    c.add_argument("-o", "--output", required=True, help="store: a Zarr folder (default) or a .nc file; extended if it exists")
    c.add_argument("--name", action="append", help="run name (repeat once per run; default: folder names)")
    c.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda")
    c.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    c.add_argument("--k", type=int, default=100, help="top singular vectors kept for align and sva (default 100)")
    c.add_argument("--no-align", action="store_true", help="skip alignment of consecutive layers")
    c.add_argument("--no-sva", action="store_true", help="skip agreement with the final checkpoint")
    c.add_argument("--no-sketch", action="store_true", help="skip the JL sketches of the trajectory")
    c.add_argument("--windows", type=int, nargs="+", default=[10, 20], help="window sizes for the spectral edge (default 10 20)")
    c.add_argument("--sketch-dim", type=int, default=None, help="sketch dimension (default 10 x the largest window)")
    c.add_argument("--sketch-seed", type=int, default=0)
    c.add_argument("--max-lag", default="auto", help="exact update dot products: auto, all, none or a lag")
    c.add_argument("--n-heads", type=int, help="attention heads, for per-head Q/K and V/O pairs (default: config.json beside the weights)")
    c.add_argument("--kinds", nargs="+", metavar="NAME=KIND|FILE",
                   help="layer kinds the names do not reveal: NAME=KIND items, or a JSON file {name: kind}")
    c.add_argument("--pairs", metavar="FILE", help='consecutive pairs instead of detection: a JSON file [["src", "dst"], ...]')
    c.add_argument("--on-error", default="raise", choices=["raise", "skip"], help="bad checkpoint: stop, or warn and skip it")
    c.add_argument("--scheduler", help="address of a dask.distributed scheduler to spread checkpoints over")
    c.add_argument("--format", choices=["zarr", "netcdf"], help="store format (default from the file name)")
    c.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    c.set_defaults(func=_compute)

    i = sub.add_parser("info", help="what is in a store")
    i.add_argument("store")
    i.add_argument("--events", action="store_true",
                   help="also say what happened in each run: grok step, effective-rank drop, early warning (seconds)")
    i.set_defaults(func=_info, threads=None)

    d = sub.add_parser("demo", parents=[threads], help="train the demo grokking runs (CPU, a few minutes) and compute their spectra")
    d.add_argument("out", nargs="?", default="runs/demo", help="folder for the runs (default runs/demo)")
    d.add_argument("--store", help="store path (default OUT/demo.zarr)")
    d.add_argument("--ship", action="store_true", help="also refresh the demo data shipped in the package (developers)")
    d.add_argument("--live", action="store_true", help="record the spectra while training (sedviz.Recorder), keep no checkpoints")
    d.add_argument("-q", "--quiet", action="store_true")
    d.set_defaults(func=_demo)

    s = sub.add_parser("suite", parents=[threads], help="train the grokking suite (grokking/control pairs, CPU) and compute it into a store")
    s.add_argument("--out", default="runs/suite", help="folder for the runs (default runs/suite); trained runs are reused")
    s.add_argument("--only", nargs="+", metavar="NAME", help="pair or run names to build (default: every pair)")
    s.add_argument("--jobs", type=int, default=1, help="training processes (default 1; 2 on an idle 2-core machine)")
    s.add_argument("--store", help="store path (default OUT/suite.zarr)")
    s.add_argument("--ship", action="store_true", help="also refresh sedviz/data/suite.json (developers)")
    s.add_argument("-q", "--quiet", action="store_true")
    s.set_defaults(func=_suite)

    r = sub.add_parser("report", parents=[threads], help="execute the report notebook on a store or run folders; write .ipynb and HTML")
    r.add_argument("source", nargs="+", help="a store, or run folders")
    r.add_argument("-o", "--output", required=True, help="output folder")
    r.add_argument("-p", "--parameter", nargs=2, action="append", metavar=("NAME", "VALUE"), help="notebook parameter")
    r.set_defaults(func=_report)

    lab = sub.add_parser("lab", help="open JupyterLab on sedviz's notebooks (the quick start first)")
    lab.add_argument("notebook", nargs="?", default="quickstart.ipynb", help="notebook to open (default quickstart.ipynb)")
    lab.add_argument("--no-browser", action="store_true", help="start the server only; open the printed URL yourself")
    lab.add_argument("--port", type=_positive_int, help="port (default: Jupyter's, 8888 or the next free one)")
    lab.set_defaults(func=_lab, threads=None)
    return p


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 1")
    return value


def _version() -> str:
    from ._version import __version__

    return f"sedviz {__version__}"


def main(argv=None) -> int:
    """Run one command. Every failure is one line on stderr (what, which file, the fix) and a
    non-zero exit: 2 for bad input, 1 for a file system error, 3 for a bug (SEDVIZ_TRACEBACK=1
    prints its traceback), 130 for Ctrl-C."""
    args = build_parser().parse_args(argv)
    from .threads import pin_environment

    pin_environment(args.threads)  # before torch or numpy load: their thread pools read it once
    warnings.formatwarning = _one_line_warning
    try:
        return args.func(args)
    except SedvizError as exc:
        print(f"sedviz {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; the store keeps its last commit and a rerun resumes from it", file=sys.stderr)
        return 130
    except OSError as exc:
        where = exc.filename or "a file"
        _error(args, f"{where}: {exc.strerror or exc}. Check the path, its permissions and the free disk space, and run again")
        return 1
    except MemoryError:
        _error(args, "out of memory. Close other programs, or compute fewer runs at once (results are stored per batch)")
        return 1
    except Exception as exc:  # a bug: one line, the traceback on request
        if os.environ.get("SEDVIZ_TRACEBACK"):
            raise
        _error(args, f"internal error ({type(exc).__name__}: {exc}). This is a bug in sedviz: please report it with the "
                     f"command; SEDVIZ_TRACEBACK=1 prints the traceback")
        return 3


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    return f"sedviz: warning: {' '.join(str(message).split())}\n"


def _error(args, text: str) -> None:
    one_line = " ".join(str(text).split())
    print(f"sedviz {args.command}: error: {one_line}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
