"""WeightWatcher's analyze() on one checkpoint, in its own process (JSON on stdout).

    python -m benchmarks.wwrun CHECKPOINT WWLIB_DIR

WeightWatcher is imported from the environment, or else from WWLIB_DIR (a ``pip install
--target`` folder appended *after* the environment's site-packages, so it can never shadow this
environment's torch). Only what analyze() needs for singular values is switched on: no plots, no
Marchenko-Pastur fit, no randomization, no vectors; ``max_N`` is raised so that the 50257-row
embedding is analyzed too (WeightWatcher skips matrices with more than 50000 rows by default).
"""
from __future__ import annotations

import json
import logging
import os
import sys
import time


def main(argv: list[str]) -> None:
    ckpt, wwlib = argv[0], argv[1]
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    before = torch.__version__
    try:
        import weightwatcher as ww
    except ImportError:
        sys.path.append(wwlib)
        import weightwatcher as ww
    logging.getLogger("weightwatcher").setLevel(logging.ERROR)
    t0, c0 = time.perf_counter(), time.process_time()
    state = torch.load(ckpt, map_location="cpu", weights_only=True, mmap=True)
    watcher = ww.WeightWatcher(model=dict(state))
    df = watcher.analyze(plot=False, mp_fit=False, randomize=False, vectors=False, max_N=10**9, min_evals=1)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    print(json.dumps({
        "wall": wall,
        "cpu": cpu,
        "layers": int(len(df)),
        "version": getattr(ww, "__version__", "?"),
        "torch": torch.__version__,
        "torch_unchanged": torch.__version__ == before,
        "sv_max": {str(n): float(v) for n, v in zip(df["name"], df["sv_max"])},
    }))


if __name__ == "__main__":
    main(sys.argv[1:])
