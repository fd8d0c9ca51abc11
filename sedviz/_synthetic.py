"""A small synthetic sedviz Dataset that follows docs/schema.md exactly.

For tests, docs and examples that must not train a model or read checkpoints. The values are
computed, not invented: a tiny transformer-shaped parameter trajectory is simulated, and every
variable is computed from it with the definitions of docs/methods.md (singular values, effective rank,
alignment, agreement with the final checkpoint, sketches, update dot products), so the variables
agree with each other the way real ones do.
"""
from __future__ import annotations

import json
import warnings

import numpy as np
import xarray as xr

from ._version import __version__

# (name, kind, depth, rows, cols, (output space, input space)); state-dict order. Spaces name the
# vectors a layer's growing low-rank part is built from, so consecutive layers share directions
# and their alignment [docs/methods.md#alignment-of-consecutive-layers] rises during training as it does in [Y] Fig. 3.
_D, _HID, _VOCAB = 16, 32, 12
_LAYERS = [
    ("embed.weight", "embed", -1, _VOCAB, _D, ("vocab", "d")),
    ("blocks.0.attn.qkv.weight", "attn_qkv", 0, 3 * _D, _D, ("qkv", "d")),
    ("blocks.0.attn.out_proj.weight", "attn_out", 0, _D, _D, ("d", "attn")),
    ("blocks.0.mlp.fc1.weight", "mlp_in", 0, _HID, _D, ("hid", "d")),
    ("blocks.0.mlp.fc2.weight", "mlp_out", 0, _D, _HID, ("d", "hid")),
    ("unembed.weight", "unembed", -1, _VOCAB, _D, ("vocab", "d")),
]
_SPACE_DIM = {"vocab": _VOCAB, "d": _D, "qkv": 3 * _D, "attn": _D, "hid": _HID}
# (src, dst, pair_kind): the architecture-aware consecutive pairs (docs/methods.md#alignment-of-consecutive-layers) of this model. For the
# embedding, the output side is V (it maps a one-hot token to a row), handled in _align_diag.
_PAIRS = [
    ("embed.weight", "blocks.0.attn.qkv.weight", "embed->attn_qkv"),
    ("blocks.0.attn.out_proj.weight", "blocks.0.mlp.fc1.weight", "attn_out->mlp_in"),
    ("blocks.0.mlp.fc1.weight", "blocks.0.mlp.fc2.weight", "mlp_in->mlp_out"),
]
# 1-D state entries: part of the trajectory (`param`), not of `layer`.
_VECTORS = [
    ("blocks.0.ln_1.weight", "norm", _D, 1.0),
    ("blocks.0.ln_1.bias", "norm", _D, 0.0),
    ("blocks.0.mlp.fc1.bias", "bias", _HID, 0.0),
    ("blocks.0.mlp.fc2.bias", "bias", _D, 0.0),
    ("ln_f.weight", "norm", _D, 1.0),
]
_METRICS = ("train_loss", "train_acc", "val_loss", "val_acc")


def synthetic_dataset(
    runs=("a", "b"),
    steps=None,
    seed: int = 0,
    *,
    k: int = 10,
    sketch_dim: int = 24,
    max_lag: int = 3,
) -> xr.Dataset:
    """A small Dataset with every schema variable, computed from a simulated trajectory.

    Parameters
    ----------
    runs : sequence of str
        Run names. The first run behaves like training with weight decay 1.0: its weights shrink
        toward a low-rank solution and it "groks" (val_acc crosses 0.9 at about 60% of the steps).
        The other runs behave like weight decay 0.0: their spectra stay flat and val_acc stays low.
    steps : sequence of int, or dict run -> sequence of int, optional
        Optimizer steps of the saved checkpoints. One sequence is shared by all runs; a dict gives
        each run its own grid, and the Dataset holds the union with NaN where a run has no
        checkpoint (docs/schema.md). Default ``range(0, 3001, 100)`` (31 checkpoints).
    seed : int
        Seed of everything random (initial weights, noise, sketch map).
    k : int
        Number of leading ranks kept for `sva` and `align` (NaN past it), as the pipeline's ``k``.
    sketch_dim : int
        Dimension d of the per-parameter sketches (`proj`).
    max_lag : int
        Largest lag of `delta_dot`.

    Returns
    -------
    xarray.Dataset
        Dims run, step, layer (6 matrices), rank (16), pair (3), param (11), proj, lag; the
        variables sv, eff_rank, stable_rank, spectral_norm, fro_norm, sva, sva_score, align,
        align_score, sketch, delta_dot, train_loss, train_acc, val_loss, val_acc; the coordinates
        and attrs of docs/schema.md. All float64.
    """
    runs = [str(r) for r in runs]
    if not runs or len(set(runs)) != len(runs):
        raise ValueError(f"synthetic_dataset: runs must be distinct names, got {runs!r}")
    if steps is None:
        steps = np.arange(0, 3001, 100)
    grids = {r: np.asarray(sorted(steps[r] if isinstance(steps, dict) else steps), dtype=np.int64) for r in runs}
    for r, g in grids.items():
        if g.size < 2 or len(np.unique(g)) != g.size:
            raise ValueError(f"synthetic_dataset: run {r!r} needs at least 2 distinct steps, got {g.tolist()}")
    if k < 1:
        raise ValueError(f"synthetic_dataset: k must be >= 1, got {k}")
    all_steps = np.unique(np.concatenate(list(grids.values())))
    rng = np.random.default_rng(seed)

    layer_names = [spec[0] for spec in _LAYERS]
    n_rank = max(min(spec[3], spec[4]) for spec in _LAYERS)
    params = sorted(layer_names + [v[0] for v in _VECTORS])
    sizes = {spec[0]: spec[3] * spec[4] for spec in _LAYERS} | {v[0]: v[2] for v in _VECTORS}
    sketch_maps = {p: _sparse_sign_map(sizes[p], sketch_dim, rng) for p in params}

    shape_rsl = (len(runs), len(all_steps), len(layer_names))
    sv = np.full(shape_rsl + (n_rank,), np.nan)
    sva = np.full_like(sv, np.nan)
    align = np.full((len(runs), len(all_steps), len(_PAIRS), n_rank), np.nan)
    sketch = np.full((len(runs), len(all_steps), len(params), sketch_dim), np.nan)
    delta_dot = np.full((len(runs), len(all_steps), len(params), max_lag + 1), np.nan)
    metrics = {m: np.full((len(runs), len(all_steps)), np.nan) for m in _METRICS}

    for ri, run in enumerate(runs):
        grid = grids[run]
        tau = (grid - grid[0]) / max(grid[-1] - grid[0], 1)  # training progress in [0, 1]
        states = _trajectory(tau, weight_decay=1.0 if ri == 0 else 0.0, rng=rng)
        idx = np.searchsorted(all_steps, grid)
        svds = [{n: np.linalg.svd(st[n], full_matrices=False) for n in layer_names} for st in states]
        final = svds[-1]
        for ti, (si, dec) in enumerate(zip(idx, svds)):
            for li, name in enumerate(layer_names):
                u, s, vt = dec[name]
                sv[ri, si, li, : s.size] = s
                uf, _, vtf = final[name]
                kk = min(k, s.size)
                # S_jj(t) = |<u_j(t), u_j(T)>| |<v_j(t), v_j(T)>|  [Y] Eqn 5
                sva[ri, si, li, :kk] = np.abs(np.sum(u[:, :kk] * uf[:, :kk], 0) * np.sum(vt[:kk] * vtf[:kk], 1))
            for pi, (src, dst, _) in enumerate(_PAIRS):
                diag = _align_diag(dec[src], dec[dst], src)[:k]
                align[ri, si, pi, : diag.size] = diag
            for pj, p in enumerate(params):
                sketch[ri, si, pj] = sketch_maps[p] @ states[ti][p].ravel()
        # delta_dot over the run's own checkpoints: d_i = theta_i - theta_{i-1}
        for pj, p in enumerate(params):
            d = [None] + [(states[i][p] - states[i - 1][p]).ravel() for i in range(1, len(states))]
            for i in range(1, len(states)):
                for lag in range(0, max_lag + 1):
                    if i - lag >= 1:
                        delta_dot[ri, idx[i], pj, lag] = float(d[i] @ d[i - lag])
        for m, values in _metric_curves(tau, grokking=(ri == 0), rng=rng).items():
            metrics[m][ri, idx] = values

    # Per-matrix measures from the singular values [docs/methods.md#effective-rank], NaN where there is no checkpoint.
    with np.errstate(invalid="ignore", divide="ignore"):
        total = np.nansum(sv, axis=-1)
        p = sv / total[..., None]
        entropy = -np.nansum(np.where(p > 0, p * np.log(p), 0.0), axis=-1)
        full_rank = np.array([min(spec[3], spec[4]) for spec in _LAYERS], dtype=float)
        has = ~np.isnan(sv[..., 0])
        eff_rank = np.where(has, np.exp(entropy) / full_rank, np.nan)
        spectral_norm = sv[..., 0]
        fro_norm = np.where(has, np.sqrt(np.nansum(sv**2, axis=-1)), np.nan)
        stable_rank = fro_norm**2 / spectral_norm**2
    with warnings.catch_warnings():  # all-NaN where a run has no checkpoint at a step
        warnings.simplefilter("ignore", RuntimeWarning)
        sva_score = np.nanmean(sva[..., :10], axis=-1)
        align_score = np.nanmean(align[..., :10], axis=-1)

    rsl = ("run", "step", "layer")
    coords = {
        "run": np.array(runs),
        "step": all_steps,
        "layer": np.array(layer_names),
        "rank": np.arange(n_rank),
        "pair": np.array([f"{s} -> {d}" for s, d, _ in _PAIRS]),
        "param": np.array(params),
        "proj": np.arange(sketch_dim),
        "lag": np.arange(max_lag + 1),
        "layer_kind": ("layer", np.array([spec[1] for spec in _LAYERS])),
        "depth": ("layer", np.array([spec[2] for spec in _LAYERS], dtype=np.int64)),
        "rows": ("layer", np.array([spec[3] for spec in _LAYERS], dtype=np.int64)),
        "cols": ("layer", np.array([spec[4] for spec in _LAYERS], dtype=np.int64)),
        "pair_src": ("pair", np.array([s for s, _, _ in _PAIRS])),
        "pair_dst": ("pair", np.array([d for _, d, _ in _PAIRS])),
        "pair_kind": ("pair", np.array([kind for _, _, kind in _PAIRS])),
        "param_size": ("param", np.array([sizes[p] for p in params], dtype=np.int64)),
        "param_kind": ("param", np.array([_param_kind(p) for p in params])),
    }
    data_vars = {
        "sv": (rsl + ("rank",), sv),
        "eff_rank": (rsl, eff_rank),
        "stable_rank": (rsl, stable_rank),
        "spectral_norm": (rsl, spectral_norm),
        "fro_norm": (rsl, fro_norm),
        "sva": (rsl + ("rank",), sva),
        "sva_score": (rsl, sva_score),
        "align": (("run", "step", "pair", "rank"), align),
        "align_score": (("run", "step", "pair"), align_score),
        "sketch": (("run", "step", "param", "proj"), sketch),
        "delta_dot": (("run", "step", "param", "lag"), delta_dot),
    } | {m: (("run", "step"), v) for m, v in metrics.items()}
    attrs = {
        "sedviz_version": __version__,
        "schema_version": 1,
        "device": "cpu",
        "dtype": "float64",
        "options": json.dumps({"k": k, "sketch_dim": sketch_dim, "sketch_seed": seed, "max_lag": max_lag}),
        "sources": json.dumps({r: f"synthetic://{r}" for r in runs}),
        "sva_reference_step": json.dumps({r: int(grids[r][-1]) for r in runs}),
        "synthetic": f"sedviz._synthetic.synthetic_dataset(seed={seed})",
    }
    return xr.Dataset(data_vars, coords=coords, attrs=attrs)


def _param_kind(name: str) -> str:
    for spec in _LAYERS:
        if spec[0] == name:
            return spec[1]
    return next(v[1] for v in _VECTORS if v[0] == name)


def _sparse_sign_map(n: int, d: int, rng: np.random.Generator, s: int = 2) -> np.ndarray:
    """A d x n sparse JL map: each input coordinate goes to s rows with signs +-1/sqrt(s)."""
    m = np.zeros((d, n))
    for j in range(n):
        rows = rng.choice(d, size=min(s, d), replace=False)
        m[rows, j] = rng.choice([-1.0, 1.0], size=rows.size) / np.sqrt(rows.size)
    return m


def _orthonormal(n: int, rng: np.random.Generator) -> np.ndarray:
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    return q


def _trajectory(tau: np.ndarray, weight_decay: float, rng: np.random.Generator) -> list[dict[str, np.ndarray]]:
    """States at progress tau: W(t) = decay(t) W0 + sum_k g_k(t) a_k b_k^T + a noise random walk.

    The low-rank part grows fast then saturates; with weight decay the initial weights decay away,
    so the spectrum concentrates (eff_rank falls) and the update directions settle.
    """
    bases = {sp: _orthonormal(n, rng) for sp, n in _SPACE_DIM.items()}
    gains = np.array([3.0, 2.0, 1.2])
    speeds = np.array([0.08, 0.2, 0.45])
    n_t = tau.size
    states: list[dict[str, np.ndarray]] = [{} for _ in range(n_t)]
    decay = np.exp(-2.5 * weight_decay * tau)
    for name, _kind, _depth, rows, cols, (out_sp, in_sp) in _LAYERS:
        w0 = rng.standard_normal((rows, cols)) / np.sqrt(cols)
        a, b = bases[out_sp][:, :3], bases[in_sp][:, :3]
        walk = np.cumsum(rng.standard_normal((n_t, rows, cols)), axis=0) * (0.01 / np.sqrt(cols))
        walk -= walk[0]
        for t in range(n_t):
            g = gains * (1.0 - np.exp(-tau[t] / speeds))
            states[t][name] = decay[t] * w0 + (a * g) @ b.T + walk[t]
    for name, _kind, size, base in _VECTORS:
        drift = rng.standard_normal(size) * 0.05
        walk = np.cumsum(rng.standard_normal((n_t, size)), axis=0) * 0.005
        for t in range(n_t):
            states[t][name] = base + drift * np.sqrt(tau[t]) + walk[t] - walk[0]
    return states


def _align_diag(src, dst, src_name: str) -> np.ndarray:
    """Diagonal of A_jk = |<u_j, v'_k>| [Y] Eqn 3; the embedding's output side is its V."""
    u, s, vt = src
    out_vectors = vt.T if src_name.startswith("embed") else u
    v_dst = dst[2].T
    r = min(out_vectors.shape[1], v_dst.shape[1])
    return np.abs(np.sum(out_vectors[:, :r] * v_dst[:, :r], axis=0))


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _metric_curves(tau: np.ndarray, grokking: bool, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Loss and accuracy curves of a modular-arithmetic-like run; the grokking one jumps at tau 0.6."""
    noise = lambda scale: rng.normal(0.0, scale, tau.size)  # noqa: E731
    train_loss = 2.4 * np.exp(-tau / 0.08) + 0.02 + np.abs(noise(0.005))
    train_acc = np.clip(1.0 - 0.92 * np.exp(-tau / 0.06) + noise(0.003), 0.0, 1.0)
    if grokking:
        jump = _sigmoid((tau - 0.6) / 0.03)
        val_loss = 2.5 - 0.3 * (1 - np.exp(-tau / 0.1)) - 2.0 * jump + np.abs(noise(0.02))
        val_acc = np.clip(0.08 + 0.07 * tau + 0.83 * jump + noise(0.005), 0.0, 1.0)
    else:
        val_loss = 2.5 - 0.2 * (1 - np.exp(-tau / 0.1)) + 0.6 * tau + np.abs(noise(0.02))
        val_acc = np.clip(0.08 + 0.1 * tau + noise(0.005), 0.0, 1.0)
    return {"train_loss": train_loss, "train_acc": train_acc, "val_loss": val_loss, "val_acc": val_acc}
