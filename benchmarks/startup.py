"""Start-up of sedviz: the command line and the import, against bare baselines measured in the same run.

    .venv/bin/python -m benchmarks.startup            # 15 repetitions of each command, a few seconds idle
    .venv/bin/python -m benchmarks.startup --repeats 5 --json out.json

Rows (benchmarks/README.md):
  9   `sedviz --help` wall time over `python -c pass`
  9b  `sedviz info <shipped demo store>` wall time (absolute target; the ratio is over `import xarray`)
  10  `python -c "import sedviz"` wall time over `python -c "import numpy"`
  11  peak RSS of `python -c "import sedviz"` over that of `python -c pass`

Each command runs in a fresh process, ``repeats`` times, alternating with its baseline; medians are
reported. Peak RSS is the child's ru_maxrss (os.wait4). Commands run with the environment's thread
variables set to 1, as the CLI would.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MB = 1e6


def _run(cmd: list[str]) -> tuple[float, float]:
    """(wall seconds, peak RSS bytes) of one fresh process running ``cmd``."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, cwd=ROOT)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {err[-500:]}")
    return wall, usage.ru_maxrss * 1024.0  # KiB on Linux


def _paired(a: list[str], b: list[str], repeats: int):
    """Median (wall, rss) of a and of b, run alternately ``repeats`` times each (one warm-up each first)."""
    _run(a), _run(b)  # warm the page cache: imports are read from disk once
    ra, rb = [], []
    for i in range(repeats):
        first, second = (a, b) if i % 2 == 0 else (b, a)
        x, y = _run(first), _run(second)
        (ra, rb)[first is b].append(x)
        (ra, rb)[second is b].append(y)
    med = lambda rs, k: statistics.median(r[k] for r in rs)  # noqa: E731
    return (med(ra, 0), med(ra, 1)), (med(rb, 0), med(rb, 1))


def measure(repeats: int = 15) -> dict:
    py = sys.executable
    sedviz_cli = [py, "-m", "sedviz.cli"]
    demo = ROOT / "sedviz" / "data" / "demo.nc"
    rows = []

    def row(rid, name, value, ratio, target, met, note=""):
        rows.append({"id": rid, "row": name, "value": value, "ratio": ratio, "target": target, "met": met, "note": note})

    (help_s, _), (bare_s, bare_rss) = _paired(sedviz_cli + ["--help"], [py, "-c", "pass"], repeats)
    row("9", "`sedviz --help` / `python -c pass` (wall)", f"sedviz --help {help_s:.3f} s, bare python {bare_s:.3f} s",
        help_s / bare_s, "<= 0.5 s (ratio: information)", help_s <= 0.5)
    if demo.exists():
        n = max(3, repeats // 3)
        (info_s, info_rss), (xr_s, _) = _paired(sedviz_cli + ["info", str(demo)], [py, "-c", "import xarray"], n)
        row("9b", "`sedviz info` demo store / `import xarray` (wall)",
            f"info {info_s:.2f} s ({info_rss / MB:.0f} MB), import xarray {xr_s:.2f} s", info_s / xr_s, "<= 2 s",
            info_s <= 2.0, note="xarray imports dask.array when dask is installed (the [dask] extra)")
    (imp_s, imp_rss), (np_s, _) = _paired([py, "-c", "import sedviz"], [py, "-c", "import numpy"], repeats)
    row("10", "`import sedviz` / `import numpy` (wall)", f"import sedviz {imp_s:.3f} s, import numpy {np_s:.3f} s",
        imp_s / np_s, "<= 1", imp_s <= np_s)
    row("11", "`import sedviz` peak RSS / `python -c pass`", f"{imp_rss / MB:.1f} MB, bare python {bare_rss / MB:.1f} MB",
        imp_rss / bare_rss, "<= 1.5", imp_rss <= 1.5 * bare_rss)
    return {"rows": rows, "repeats": repeats, "load": os.getloadavg(), "python": sys.version.split()[0]}


def format_table(result: dict) -> str:
    head = ("#", "measure", "measured", "ratio", "target", "met")
    body = [(r["id"], r["row"], r["value"], f"{r['ratio']:.2f}", r["target"], "yes" if r["met"] else "NO")
            for r in result["rows"]]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]
    fmt = " | ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*head), "-+-".join("-" * w for w in widths)] + [fmt.format(*b) for b in body]
    notes = [f"  {r['id']}: {r['note']}" for r in result["rows"] if r["note"]]
    load = ", ".join(f"{x:.1f}" for x in result["load"])
    return "\n".join([f"sedviz start-up (python {result['python']}, {result['repeats']} repetitions, "
                      f"load average {load})", "", *lines] + (["", "notes:", *notes] if notes else []))


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.startup", description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=15, help="fresh processes per command (default 15)")
    ap.add_argument("--json", type=Path, help="also write the rows as JSON here")
    args = ap.parse_args(argv)
    result = measure(args.repeats)
    print(format_table(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
