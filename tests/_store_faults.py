"""Fault injection for tests/test_store_faults.py: kill a compute at chosen file operations.

    python tests/_store_faults.py SPEC.json   ->  one JSON line per kill on stdout

Run in its own process (one thread) so that each kill is a ``fork`` of it: the child arms an audit
hook (``sys.addaudithook``) that counts the file operations that change something under the work
folder (opens for writing, renames, removals, mkdir, truncation) and sends itself SIGKILL just
before operation K, so the kill lands at an exact point, including before the very first
operation and before each commit's rename. After each kill the parent checks what a user would
see and then computes again:

- ``open``: "ok" (the store opens and every value it shows equals the fresh compute's, or the
  ``before`` state's), "nothing" (a clear StoreError: nothing computed yet), or the error;
- ``rerun``: whether computing again gives exactly the fresh compute's numbers;
- ``leftover``: temporary files still there after the rerun.

SPEC: {"runs": [...], "store": path, "work": folder, "options": {...}, "before": path of a store
to copy first (an update) or null, "every": N}.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import warnings

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ["SEDVIZ_FLUSH_SECONDS"] = "0"  # commit every checkpoint: many commits to kill around

import numpy as np  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)
import sedviz  # noqa: E402
from sedviz.errors import StoreError  # noqa: E402

STATE = {"armed": False, "count": 0, "kill_at": None, "log": None, "root": ""}
WRITE_EVENTS = {"os.rename", "os.remove", "os.rmdir", "os.mkdir", "shutil.rmtree", "os.truncate", "os.link"}
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


def _hook(event, args):
    if not STATE["armed"]:
        return
    if event == "open":
        path, mode, flags = args
        writes = (any(c in mode for c in "wax+") if isinstance(mode, str) else bool((flags or 0) & WRITE_FLAGS))
        if not writes:
            return
        dst = None
    elif event not in WRITE_EVENTS:
        return
    else:
        path = args[0] if args else ""
        dst = args[1] if event in ("os.rename", "os.link") and len(args) > 1 else None
    path = _text(path)
    if path is None or not path.startswith(STATE["root"]):
        return
    STATE["count"] += 1
    if STATE["log"] is not None:
        STATE["log"].append([event, path, _text(dst)])
    if STATE["count"] == STATE["kill_at"]:
        os.kill(os.getpid(), signal.SIGKILL)


def _text(path):
    if isinstance(path, bytes):
        return path.decode("utf-8", "replace")
    if isinstance(path, (str, os.PathLike)):
        return os.path.abspath(os.fspath(path))
    return None


sys.addaudithook(_hook)


def compute(spec, store):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return sedviz.compute(spec["runs"], store, progress=False, **spec.get("options", {}))


def same(a, b) -> bool:
    """The same runs, steps, variables and numbers (NaN in the same places), exactly."""
    if a.run.values.tolist() != b.run.values.tolist() or not np.array_equal(a.step.values, b.step.values):
        return False
    if sorted(a.data_vars) != sorted(b.data_vars):
        return False
    return all(np.array_equal(a[v].transpose(*b[v].dims).values, b[v].values, equal_nan=True) for v in a.data_vars)


def consistent(seen, fresh, before) -> bool:
    """What a reader sees after a kill is a committed state: the ``before`` store exactly, or a part
    of the fresh result (some runs and steps, each value equal to the fresh one)."""
    if before is not None and same(seen, before):
        return True
    try:
        part = fresh.sel(run=seen.run.values, step=seen.step.values)
    except KeyError:
        return False
    if sorted(part.data_vars) != sorted(seen.data_vars):
        return False
    for v in seen.data_vars:
        x, y = seen[v].transpose(*part[v].dims).values, part[v].values
        if x.shape != y.shape or not np.array_equal(x, y, equal_nan=True):
            return False
    return True


def leftovers(work: str) -> list[str]:
    out = []
    for root, dirs, files in os.walk(work):
        out += [os.path.join(root, f) for f in files if ".sedviz-tmp-" in f or f.endswith(".partial")]
        out += [os.path.join(root, d) for d in dirs if ".sedviz-tmp-" in d]
    return out


def main(spec_path: str) -> None:
    spec = json.loads(open(spec_path).read())
    work, store = spec["work"], spec["store"]
    STATE["root"] = work
    before_src = spec.get("before")
    before = sedviz.open(before_src).load() if before_src else None

    def fresh_store():
        if os.path.exists(store):
            shutil.rmtree(store) if os.path.isdir(store) else os.unlink(store)
        if before_src:
            (shutil.copytree if os.path.isdir(before_src) else shutil.copy2)(before_src, store)

    # 1. the reference: one uninterrupted compute, counting its file operations
    fresh_store()
    STATE.update(armed=True, count=0, kill_at=None, log=[])
    fresh = compute(spec, store).load()
    STATE["armed"] = False
    ops = STATE["log"]
    scratch = os.path.join(work, "scratch" + os.path.splitext(store)[1])
    from_scratch = same(compute(spec, scratch).load(), fresh)
    # a commit: the rename of a commit file, or of the netCDF file, into place
    commits = [i + 1 for i, (ev, _, dst) in enumerate(ops) if ev == "os.rename" and dst is not None
               and ("sedviz_commits" in dst or os.path.abspath(dst) == os.path.abspath(store))]
    print(json.dumps({"ops": len(ops), "commits": len(commits), "equals_scratch": from_scratch,
                      "first": ops[:3], "last": ops[-3:]}), flush=True)
    every = int(spec.get("every", 10))
    kills = sorted({1, 2, 3, len(ops) - 1, len(ops)} | set(range(every, len(ops), every)) | set(commits[:3])
                   | set(commits[-2:]) | {c - 1 for c in commits[-2:]})
    kills = [k for k in kills if 1 <= k <= len(ops)]
    for k in kills:
        fresh_store()
        pid = os.fork()
        if pid == 0:  # the child: compute until operation k kills it
            STATE.update(armed=True, count=0, kill_at=k, log=None)
            try:
                compute(spec, store)
            finally:
                os._exit(0)  # an operation count that differs from the reference's: not killed
        _, status = os.waitpid(pid, 0)
        killed = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
        what = ops[k - 1]
        row = {"k": k, "op": what[0], "path": os.path.relpath(what[1], work), "killed": killed, "commit": k in commits}
        try:
            seen = sedviz.open(store).load()
            row["open"] = "ok" if consistent(seen, fresh, before) else "inconsistent"
        except StoreError as exc:
            text = str(exc)
            row["open"] = "nothing" if ("no computed checkpoints yet" in text or "no such store" in text) else f"error: {text}"
        except Exception as exc:  # noqa: BLE001 - a raw exception is what this test hunts
            row["open"] = f"raw {type(exc).__name__}: {exc}"
        try:
            row["rerun"] = same(compute(spec, store).load(), fresh)
        except Exception as exc:  # noqa: BLE001
            row["rerun"] = False
            row["rerun_error"] = f"{type(exc).__name__}: {exc}"
        row["leftover"] = leftovers(work)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
