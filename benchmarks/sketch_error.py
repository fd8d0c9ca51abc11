"""How far the sketched window spectra are from the exact ones: sedviz's per-parameter TensorSketch
against a dense Gaussian JL map of the same total dimension (docs/methods.md#spectral-edge; Xu 2026, [S]).

    .venv/bin/python -m benchmarks.sketch_error RUN [RUN ...] [--windows 10 20] [--dim 200] [--seeds 3]

RUN is a folder of plain state-dict checkpoints (``step_*.pt``, e.g. a run of ``sedviz demo`` or of
scripts/demo_seeds.py). For every run the updates d_j = theta_j - theta_(j-1) of all parameters
are formed in float64 and the exact W x W window Grams computed. Then the same window spectra come
from three sketches of the updates:

- ``tensorsketch``: sedviz's map (``sedviz.sketch.Sketcher``), d coordinates per parameter; a
  group of P parameters is their concatenation, P x d coordinates in all (the demo: 7 x 200 = 1400).
- ``gauss-equal``: a dense Gaussian map N(0, 1/D) of the flattened parameter vector with the same
  total dimension D = P x d.
- ``gauss-d``: a dense Gaussian map with D = d (what [S] uses, d = 10 W at W = 20).

For each map, W and ``--seeds`` map seeds, the relative error |r_k(sketch) - r_k(exact)| / r_k(exact)
of the gap ratios r_k = s_k / s_(k+1) is measured in every window. The table gives, over all
windows of all seeds, the median, 90th percentile and maximum of the error of the edge r_(k*)
(k* the exact series' most frequent argmax) and of the per-window maximum over k = 1..W-1, and the
mean over windows and k (what ``edge()``'s ``sketch_error`` reports). Accuracy, not speed: no
timing, no target; the numbers are quoted in docs/schema.md (section "Sketch error").
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from sedviz.analysis import _trajectory as T
from sedviz.sketch import Sketcher


def load_updates(run: Path) -> tuple[np.ndarray, list[tuple[str, tuple]], list[dict]]:
    """Updates (n, P) float64 of a run's step_*.pt checkpoints, the (name, shape) of every parameter, the states."""
    files = sorted(run.glob("step_*.pt"))
    if len(files) < 3:
        raise SystemExit(f"{run}: expected step_*.pt checkpoints (at least 3), found {len(files)}")
    states = [torch.load(f, map_location="cpu", weights_only=True) for f in files]
    names = [k for k, v in states[0].items() if v.is_floating_point()]
    shapes = [(k, tuple(states[0][k].shape)) for k in names]
    theta = np.stack([np.concatenate([s[k].double().reshape(-1).numpy() for k in names]) for s in states])
    return np.diff(theta, axis=0), shapes, states


def tensorsketch(states, shapes, dim: int, seed: int) -> np.ndarray:
    sk = Sketcher(dim, seed)
    rows = [np.concatenate([sk(k, s[k]).double().reshape(-1).numpy() for k, _ in shapes]) for s in states]
    return np.diff(np.stack(rows), axis=0)  # the map is linear: sketch of an update = difference


def gaussian(D_upd: np.ndarray, dim: int, seed: int, chunk: int = 4096) -> np.ndarray:
    """D_upd @ G with G (P, dim) ~ N(0, 1/dim), generated in row chunks."""
    rng = np.random.default_rng(seed)
    out = np.zeros((D_upd.shape[0], dim))
    for a in range(0, D_upd.shape[1], chunk):
        b = min(a + chunk, D_upd.shape[1])
        out += D_upd[:, a:b] @ (rng.standard_normal((b - a, dim)) / np.sqrt(dim))
    return out


def gap_ratios(X: np.ndarray, W: int) -> np.ndarray:
    """Gap ratios (n - W + 1, W - 1) of every window of W consecutive rows of X."""
    band = T._band(X, W - 1)
    return T.gap_ratios(np.sqrt(T.gram_eigvals(T.window_grams(band, W))))


def errors(exact: np.ndarray, approx: np.ndarray) -> np.ndarray:
    return np.abs(approx - exact) / exact


def summarize(errs: list[np.ndarray], k: int) -> dict:
    e = np.concatenate(errs)
    edge, worst = e[:, k - 1], e.max(axis=1)
    q = lambda v: [float(np.quantile(v, p)) for p in (0.5, 0.9, 1.0)]  # noqa: E731
    return {"edge": q(edge), "worst_k": q(worst), "mean": float(e.mean()), "windows": len(e)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--windows", type=int, nargs="+", default=[10, 20])
    p.add_argument("--dim", type=int, default=200, help="d per parameter of the TensorSketch (default 200)")
    p.add_argument("--seeds", type=int, default=3, help="map seeds per sketch (default 3)")
    a = p.parse_args(argv)
    print(f"{'run':<28} {'W':>3} {'map':<13} {'D':>5}  {'edge r_k* err: median / 90% / max':<36} "
          f"{'max over k: median / 90% / max':<34} {'mean':>6}")
    for run in a.runs:
        D_upd, shapes, states = load_updates(run)
        total = a.dim * len(shapes)
        for W in a.windows:
            r_ex = gap_ratios(D_upd, W)
            ks = 1 + np.argmax(r_ex, axis=1)
            k = int(np.argmax(np.bincount(ks)))
            maps = {
                "tensorsketch": (total, lambda s: tensorsketch(states, shapes, a.dim, s)),
                "gauss-equal": (total, lambda s: gaussian(D_upd, total, s)),
                "gauss-d": (a.dim, lambda s: gaussian(D_upd, a.dim, s)),
            }
            for name, (dim, make) in maps.items():
                errs = [errors(r_ex, gap_ratios(make(seed), W)) for seed in range(a.seeds)]
                s = summarize(errs, k)
                fmt = lambda v: " / ".join(f"{x:6.2%}" for x in v)  # noqa: E731
                print(f"{str(run)[-28:]:<28} {W:>3} {name:<13} {dim:>5}  k*={k}: {fmt(s['edge']):<31} "
                      f"{fmt(s['worst_k']):<34} {s['mean']:6.2%}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
