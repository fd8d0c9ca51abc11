"""Train the demo at several initialization seeds and print its findings per seed.

    python scripts/demo_seeds.py train OUT [--seeds 0 1 2 3 4]   # both runs per seed + their store
    python scripts/demo_seeds.py report OUT [--seeds ...]        # one table row per seed

Each seed gets OUT/seed{N}/{grok_wd1,grok_wd0} (checkpoints) and OUT/seed{N}/demo.zarr (spectra,
the same options as ``sedviz demo``). Only CONFIG["seed"] (the initialization) changes; the
train/validation split (split_seed) and every other hyperparameter stay those of the demo.
Training one seed takes about 2 min of CPU (one thread); a seed whose store is complete is skipped.
``--seeds`` in report may name ``shipped`` for the data shipped in the package.

The report measures, per seed, the findings docs/demo.md states (the same definitions as
tests/test_demo_findings.py): the grok step (first val_acc >= 0.9 of grok_wd1) and the control's
best val_acc; the drop of the mean effective rank of the attention and MLP matrices from 250
steps before to 500 steps after the grok, for both runs; W = 20 signal rank k* and collapse step
of the spectral edge (phases, tau = 1.2) for both runs; the lag-flip verdict (windows 5, 10, 15,
20); the accuracy of grok_wd1's final checkpoint keeping the top and the bottom half of every SVD;
the fire steps of the current early-warning detectors on both runs; the sketch's gap-ratio error
at W = 20 (mean, and the per-window maximum of the edge r_k*). It prints one table and adds the
seeds' rows to OUT/findings.json.
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


def _open(out: Path, seed):
    import sedviz

    if seed == "shipped":
        return sedviz.load_demo()
    return sedviz.open(out / f"seed{seed}" / "demo.zarr").load()


def findings(ds) -> dict:
    """The demo findings of one seed's Dataset (see the module docstring)."""
    import numpy as np

    from sedviz import analysis as sa

    f: dict = {}
    acc = ds.val_acc.sel(run="grok_wd1").dropna("step")
    hit = acc.step[acc >= 0.9]
    grok = int(hit.min()) if hit.size else None
    f["grok_step"] = grok
    f["control_max_val_acc"] = float(ds.val_acc.sel(run="grok_wd0").max())
    layers = ds.sed.layers(kind=["attn", "mlp"])
    last = int(ds.step.max())
    if grok is not None:
        before, after = grok - 250, min(grok + 500, last)
        er = ds.eff_rank.sel(layer=layers)
        drop = (er.sel(step=before) - er.sel(step=after)).mean("layer")
        f["eff_rank_drop"] = {r: float(drop.sel(run=r)) for r in ("grok_wd1", "grok_wd0")}
        f["eff_rank_steps"] = [before, after]
        f["eff_rank_all_lower_at_end"] = bool((er.sel(run="grok_wd1", step=last)
                                               < er.sel(run="grok_wd1", step=before)).all())
    e = sa.edge(ds, windows=[20])
    p = sa.phases(e)
    f["k_star_w20"] = {r: int(e.k_star_mode.sel(run=r, window=20)) for r in ("grok_wd1", "grok_wd0")}
    f["collapse_w20"] = {r: (None if np.isnan(v := float(p.collapse_step.sel(run=r, window=20))) else int(v))
                         for r in ("grok_wd1", "grok_wd0")}
    f["peak_w20"] = {r: int(p.peak_step.sel(run=r, window=20)) for r in ("grok_wd1", "grok_wd0")}
    lf = sa.lag_flip(ds, windows=[5, 10, 15, 20])
    f["lag_flip"] = {r: str(lf.flip.sel(run=r).item()) for r in ("grok_wd1", "grok_wd0")}
    f["lag_flip_text"] = {r: str(lf.flip_text.sel(run=r).item()) for r in ("grok_wd1", "grok_wd0")}
    f["lag_peaks_grok"] = {int(w): [int(lf.peak_lag.sel(run="grok_wd1", window=w)),
                                    round(float(lf.peak_r.sel(run="grok_wd1", window=w)), 3),
                                    round(float(lf.p_value.sel(run="grok_wd1", window=w)), 3)]
                           for w in lf.window.values}
    ew = sa.early_warning(ds)
    f["early_warning"] = {
        r: {str(d): (None if np.isnan(v := float(ew.fire_step.sel(run=r, detector=d))) else int(v))
            for d in ew.detector.values}
        for r in ("grok_wd1", "grok_wd0")
    }
    sk = sa.edge(ds, windows=[20], exact=False)
    ex = sa.edge(ds, windows=[20], exact=True)
    err = {}
    for r in ("grok_wd1", "grok_wd0"):
        k = int(ex.k_star_mode.sel(run=r, window=20))
        w = sk.sketch_gap_error.sel(run=r, window=20).values[:, :19]
        w = w[np.isfinite(w).all(axis=1)]
        err[r] = {"mean": float(w.mean()), "edge_median": float(np.median(w[:, k - 1])),
                  "edge_p90": float(np.quantile(w[:, k - 1], 0.9)), "edge_max": float(w[:, k - 1].max()),
                  "worst_k_max": float(w.max())}
    f["sketch_error_w20"] = err
    if "sources" in ds.attrs or ds.attrs.get("sources"):
        pc = sa.prune_curves(ds, "sedviz.demo:make_model", "sedviz.demo:evaluate", runs=["grok_wd1"], fractions=[0.5])
        a = pc.prune_acc.sel(run="grok_wd1").squeeze()
        f["prune_acc"] = {k: float(a.sel(keep=k)) for k in ("full", "top", "bottom")}
    return f


def report(out: Path, seeds) -> None:
    import json

    rows = {}
    saved = out / "findings.json"
    old = json.loads(saved.read_text()) if saved.exists() else {}
    for seed in seeds:
        rows[str(seed)] = findings(_open(out, seed))
        print(f"seed {seed}: " + json.dumps(rows[str(seed)]), flush=True)
    saved.write_text(json.dumps({**old, **rows}, indent=1) + "\n")  # earlier seeds' rows are kept
    head = (f"{'seed':>7} {'grok':>5} {'ctl acc':>7} {'eff-rank drop g/c':>18} {'k* g/c':>6} "
            f"{'collapse W20 g / c':>20} {'prune top/bot':>13}  lag flip (grok run)")
    print(head)
    for seed, f in rows.items():
        col = f["collapse_w20"]
        dr = f.get("eff_rank_drop", {})
        pa = f.get("prune_acc", {})
        print(f"{seed:>7} {f['grok_step']!s:>5} {f['control_max_val_acc']:7.3f} "
              f"{dr.get('grok_wd1', float('nan')):8.3f} /{dr.get('grok_wd0', float('nan')):8.4f} "
              f"{f['k_star_w20']['grok_wd1']}/{f['k_star_w20']['grok_wd0']:<4} "
              f"{col['grok_wd1'] or 'none':>9} / {col['grok_wd0'] or 'none':<8} "
              f"{pa.get('top', float('nan')):5.3f}/{pa.get('bottom', float('nan')):5.3f}  {f['lag_flip']['grok_wd1']}")
    print("early warning fire steps (grok run; control):")
    for seed, f in rows.items():
        print(f"{seed:>7} grok {f['grok_step']}: {f['early_warning']['grok_wd1']}; control {f['early_warning']['grok_wd0']}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("command", choices=["train", "report"])
    p.add_argument("out", type=Path)
    p.add_argument("--seeds", nargs="+", default=["0", "1", "2", "3", "4"],
                   help="initialization seeds (report also takes 'shipped': the data shipped in the package)")
    a = p.parse_args(argv)
    if a.command == "train":
        train(a.out, [int(x) for x in a.seeds])
    else:
        report(a.out, a.seeds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
