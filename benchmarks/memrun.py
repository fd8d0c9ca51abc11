"""Run one sedviz.compute() in a fresh process and report its peak resident memory (JSON on stdout).

    python -m benchmarks.memrun RUN_DIR STORE '{"align": true, ...}' [THREADS]

Peak RSS is the kernel's high-water mark (VmHWM, the same as ru_maxrss), cross-checked by a
psutil sampler thread; ``baseline`` is the RSS after the imports, before compute() starts.
Resident pages of a memory-mapped checkpoint count, as they should.
"""
from __future__ import annotations

import json
import sys
import threading
import time


def _status(key: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return 0


def main(argv: list[str]) -> None:
    run, store, opts = argv[0], argv[1], json.loads(argv[2])
    threads = int(argv[3]) if len(argv) > 3 else 1
    import psutil
    import torch

    torch.set_num_threads(threads)
    import sedviz

    proc = psutil.Process()
    baseline = proc.memory_info().rss
    peak = [baseline]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            stop.wait(0.01)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    t0, c0 = time.perf_counter(), time.process_time()
    ds = sedviz.compute(run, store if store != "-" else None, progress=False, device="cpu", **opts)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    stop.set()
    th.join()
    print(json.dumps({
        "baseline": baseline,
        "peak_sampled": peak[0],
        "peak_hwm": _status("VmHWM"),
        "wall": wall,
        "cpu": cpu,
        "steps": int(ds.sizes["step"]),
    }))


if __name__ == "__main__":
    main(sys.argv[1:])
