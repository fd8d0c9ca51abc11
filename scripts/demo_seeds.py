"""Train the demo at several initialization seeds and print its findings per seed.

    python scripts/demo_seeds.py train OUT [--seeds 0 1 2 3 4]   # both runs per seed + their store
    python scripts/demo_seeds.py report OUT [--seeds ...]        # one table row per seed

Each seed gets OUT/seed{N}/{grok_wd1,grok_wd0} (checkpoints) and OUT/seed{N}/demo.zarr (spectra,
the same options as ``sedviz demo``). Only CONFIG["seed"] (the initialization) changes; the
train/validation split (split_seed) and every other hyperparameter stay those of the demo.
Training one seed takes about 2 min of CPU (one thread); a seed whose store exists is skipped.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def train(out: Path, seeds) -> None:
    from sedviz import demo
    from sedviz.pipeline import compute

    for seed in seeds:
        root = out / f"seed{seed}"
        store = root / "demo.zarr"
        if (root / "DONE").exists():
            print(f"seed {seed}: {store} exists, skipped", flush=True)
            continue
        t0 = time.perf_counter()
        runs = demo.train_demo(root, config={"seed": seed}, progress=False)
        t1 = time.perf_counter()
        compute(runs, store, progress=False)
        (root / "DONE").write_text("trained and computed\n")
        print(f"seed {seed}: trained in {t1 - t0:.0f} s, computed in {time.perf_counter() - t1:.0f} s -> {store}",
              flush=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("command", choices=["train", "report"])
    p.add_argument("out", type=Path)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    a = p.parse_args(argv)
    if a.command == "train":
        train(a.out, a.seeds)
    else:
        report(a.out, a.seeds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
