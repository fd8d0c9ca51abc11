"""What sedviz is compared with: the bare floor, and the naive per-measure loop of reference code.

Both read the checkpoint files with the bare library calls (``torch.load(mmap=True,
weights_only=True)`` or ``safetensors.safe_open``) and share nothing with sedviz's pass except the
*definitions* of which matrices and blocks exist (``sedviz.layers`` / ``sedviz.pairs``), so the
numbers they produce are an independent check of the pass.
"""
from __future__ import annotations

import math
import os
import time
from pathlib import Path

import numpy as np
import torch

from sedviz.layers import describe, is_buffer, matrix_view
from sedviz.pairs import consecutive_pairs, operands


# ---------------------------------------------------------------------------------------------
# reading


def bare_read(path: Path) -> dict[str, torch.Tensor]:
    """The checkpoint as the libraries give it (tensors are views of the mapped file)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt", device="cpu") as fh:
            return {k: fh.get_tensor(k) for k in fh.keys()}
    return torch.load(path, map_location="cpu", weights_only=True, mmap=True)


def touch(state: dict[str, torch.Tensor]) -> float:
    """Read every byte once (what a pass must at least do after mapping the file)."""
    total = 0.0
    for t in state.values():
        if isinstance(t, torch.Tensor) and t.is_floating_point():
            total += float(t.sum())
    return total


def evict(path: Path) -> None:
    """Drop a file's pages from the page cache (a cold read next time); best effort."""
    try:
        fd = os.open(str(path), os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
    except (OSError, AttributeError):
        pass



def matrices(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Matrix views of every float parameter with ndim >= 2 (docs/methods.md#which-matrices), tied copies once."""
    seen, out = set(), {}
    for name, t in state.items():
        if not isinstance(t, torch.Tensor) or t.ndim < 2 or is_buffer(name, t):
            continue
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape))
        if key in seen:
            continue
        seen.add(key)
        out[name] = matrix_view(t, describe(name, t).kind)
    return out


def plan(state: dict[str, torch.Tensor]):
    """(layer infos, consecutive pairs, the blocks the pairs decompose besides whole matrices)."""
    layers = [describe(n, t) for n, t in matrices(state).items()]
    pairs = consecutive_pairs(layers)
    blocks = [b for b in operands(pairs) if b.rows is not None or b.cols is not None]
    return layers, pairs, blocks


def _block(mats, key) -> torch.Tensor:
    layer, rows, cols = key
    m = mats[layer]
    if rows is not None:
        m = m[rows[0] : rows[1]]
    if cols is not None:
        m = m[:, cols[0] : cols[1]]
    return m


def _tall(m: torch.Tensor) -> torch.Tensor:
    return m if m.shape[0] >= m.shape[1] else m.mT


# ---------------------------------------------------------------------------------------------
# the floor: read + one bare LAPACK call per matrix


def floor_pass(paths, *, vectors: bool, blocks: bool = True) -> dict:
    """Read each checkpoint and make the bare call for each matrix, one at a time, tall side up.

    ``vectors=False``: ``torch.linalg.svdvals``. ``vectors=True``: thin ``torch.linalg.svd`` of
    every matrix and (``blocks``) of every block the alignment pairs need (per-head Q/K, V), the
    same decompositions the pass with align/sva on must make. Returns per-checkpoint seconds.
    """
    times, block_times, n_calls = [], [], 0
    extra = None
    for p in paths:
        t0 = time.perf_counter()
        state = bare_read(p)
        mats = matrices(state)
        for m in mats.values():
            if vectors:
                torch.linalg.svd(_tall(m), full_matrices=False)
            else:
                torch.linalg.svdvals(_tall(m))
            n_calls += 1
        tb = time.perf_counter()
        if vectors and blocks:
            if extra is None:
                extra = plan(state)[2]
            for key in extra:
                torch.linalg.svd(_tall(_block(mats, key)), full_matrices=False)
                n_calls += 1
        del state, mats
        t1 = time.perf_counter()
        times.append(t1 - t0)
        block_times.append(t1 - tb)
    return {"per_ckpt": times, "total": sum(times), "blocks_total": sum(block_times), "calls": n_calls}


# ---------------------------------------------------------------------------------------------
# the naive loop: reference code decomposes each matrix once per measure


def _measures(S: torch.Tensor) -> dict[str, float]:
    s = S.double().numpy()
    p = s / s.sum()
    nz = p[p > 0]
    return {
        "eff_rank": float(np.exp(-(nz * np.log(nz)).sum()) / len(s)),
        "stable_rank": float((s**2).sum() / s[0] ** 2),
        "spectral_norm": float(s[0]),
        "fro_norm": float(np.sqrt((s**2).sum())),
    }


def _svd(m: torch.Tensor):
    """What reference code calls: a thin SVD with vectors of the matrix as stored.

    (``full_matrices=True`` would form a 50257 x 50257 U for the embedding: thin is the kind choice.)
    """
    return torch.linalg.svd(m, full_matrices=False)


def _side(usv, side: str, k: int, take=None) -> torch.Tensor:
    U, _, Vh = usv
    vec = (U if side == "left" else Vh.mT)[:, :k]
    return vec[slice(*take)] if take is not None else vec


def _diag(x: torch.Tensor, y: torch.Tensor, k: int) -> np.ndarray:
    n = min(k, x.shape[1], y.shape[1])
    d = (x[:, :n] * y[:, :n]).sum(0).abs().double().numpy()
    return np.concatenate([d, np.full(k - n, np.nan)])


def naive_pass(paths, final: Path, *, k: int = 100) -> dict:
    """Per checkpoint: spectra (1 SVD per matrix), alignment (an SVD of both blocks of every term of
    every pair), agreement (an SVD of the matrix and of the final checkpoint's matrix): about five
    SVDs of each matrix per checkpoint, as the reference code of Yunis et al. does.

    Returns per-checkpoint seconds, the number of SVDs and the values per step (for the check).
    """
    t0 = time.perf_counter()
    ref_mats = matrices(bare_read(final))
    setup = time.perf_counter() - t0
    times, out, n_svd = [], {}, 0
    pairs = None
    for p in paths:
        t0 = time.perf_counter()
        state = bare_read(p)
        mats = matrices(state)
        if pairs is None:
            _, pairs, _ = plan(state)
        rec = {"sv": {}, "eff_rank": {}, "stable_rank": {}, "spectral_norm": {}, "fro_norm": {}, "sva": {}, "align": {}}
        for name, m in mats.items():  # 1. spectra
            _, S, _ = _svd(m)
            n_svd += 1
            rec["sv"][name] = S.double().numpy()
            for key, v in _measures(S).items():
                rec[key][name] = v
        for pair in pairs:  # 2. alignment: each term's blocks decomposed again
            diags = []
            for a, b in pair.terms:
                xa, xb = _svd(_block(mats, a.key)), _svd(_block(mats, b.key))
                n_svd += 2
                diags.append(_diag(_side(xa, a.side, k, a.take), _side(xb, b.side, k, b.take), k))
            rec["align"][pair.name] = np.mean(diags, axis=0)
        for name, m in mats.items():  # 3. agreement with the final checkpoint
            U, _, Vh = _svd(m)
            Uf, _, Vhf = _svd(ref_mats[name])
            n_svd += 2
            rec["sva"][name] = _diag(U, Uf, k) * _diag(Vh.mT, Vhf.mT, k)
        del state, mats
        times.append(time.perf_counter() - t0)
        out[p.stem] = rec
    return {"per_ckpt": times, "total": sum(times) + setup, "svds": n_svd, "values": out}


def compare(ds, naive_values: dict, run: str, step_of) -> dict:
    """Largest differences between the pass's Dataset and the naive loop's values (``sva_top8``,
    ``align_top8``: over the well-separated top ranks only; see TOP)."""
    worst = {}
    for stem, rec in naive_values.items():
        step = step_of(stem)
        for var in ("sv",):
            for name, s in rec[var].items():
                got = ds[var].sel(run=run, step=step, layer=name).values[: len(s)].astype(np.float64)
                err = float(np.max(np.abs(got - s) / np.maximum(np.abs(s), 1e-30 + s.max() * 1e-6)))
                worst[var] = max(worst.get(var, 0.0), err)
        for var in ("eff_rank", "stable_rank", "spectral_norm", "fro_norm"):
            for name, v in rec[var].items():
                got = float(ds[var].sel(run=run, step=step, layer=name))
                worst[var] = max(worst.get(var, 0.0), abs(got - v) / max(abs(v), 1e-30))
        for var, dim in (("sva", "layer"), ("align", "pair")):
            for name, d in rec[var].items():
                got = ds[var].sel(run=run, step=step, **{dim: name}).values[: len(d)]
                both = ~np.isnan(d)
                if (np.isnan(got[: len(d)]) != np.isnan(d)).any():
                    worst[var] = worst[var + "_top8"] = float("inf")
                    continue
                diff = np.where(both, np.abs(got - d), 0.0)
                worst[var] = max(worst.get(var, 0.0), float(diff.max(initial=0.0)))
                worst[var + "_top8"] = max(worst.get(var + "_top8", 0.0), float(diff[:TOP].max(initial=0.0)))
    return worst


# The synthetic weights plant a rank-8 part with well separated singular values; past it, the
# spectrum is a Marchenko-Pastur bulk whose neighbouring values are 1e-4 apart (relative), so its
# singular vectors rotate within near-degenerate pairs under float32 rounding, differently for
# each LAPACK route (a matrix and its transpose through gesdd already differ by ~2e-3 in ``sva``).
# Diagonals are compared strictly on the top ranks, and loosely on all.
TOP = 8


def params_total(state) -> int:
    return sum(math.prod(t.shape) for t in state.values() if isinstance(t, torch.Tensor))
