"""Alignment of consecutive layers and agreement of singular vectors over time (docs/methods.md#alignment-of-consecutive-layers, 4).

Yunis et al., "Approaching Deep Learning through the Spectral Dynamics of Weights" (2024):

- alignment (Eqn 3-4): W_i = U S V^T, W_{i+1} = U' S' V'^T, A_jk = |<u_j, v'_k>|, the output-side
  vectors of the earlier matrix against the input-side vectors of the later one;
- agreement (Eqn 5): S_jk(t) = |<u_j(t) v_j(t)^T, u_k(T) v_k(T)^T>_F| = |<u_j(t), u_k(T)>| |<v_j(t), v_k(T)>|;
- the score of either: the mean of the first 10 diagonal entries.

Vectors are columns: ``x`` is (dim, r) with x[:, j] the j-th singular vector (sorted by descending
singular value), so pass U and V = Vh^T, not Vh. Absolute values make every measure invariant to
the sign of each singular vector. The functions run on torch tensors on any device, in the
inputs' dtype; numpy arrays in give numpy arrays out.
"""
from __future__ import annotations

import warnings

import numpy as np
import torch

from sedviz.errors import SedvizError
from sedviz.pairs import Operand, PairSpec

__all__ = [
    "alignment_matrix",
    "alignment_diag",
    "agreement_matrix",
    "agreement_diag",
    "score",
    "pair_diag",
    "pair_matrix",
    "SCORE_RANKS",
]

#: Number of leading diagonal entries averaged by :func:`score` (Yunis et al. 2024, Sec. 4.1).
SCORE_RANKS = 10


def _torch(*arrays):
    """Tensors of the inputs (sharing memory), promoted to one floating dtype, and whether to return numpy."""
    to_numpy = any(not isinstance(a, torch.Tensor) for a in arrays)
    ts = [a if isinstance(a, torch.Tensor) else torch.as_tensor(np.asarray(a)) for a in arrays]
    dtype = ts[0].dtype
    for t in ts[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    if not dtype.is_floating_point:
        dtype = torch.float64
    return [t.to(dtype) for t in ts], to_numpy


def _out(t: torch.Tensor, to_numpy: bool):
    return t.detach().cpu().numpy() if to_numpy else t


def _check(name: str, t: torch.Tensor) -> None:
    if t.ndim != 2:
        raise SedvizError(f"{name}: expected a (dim, r) matrix whose columns are singular vectors, got shape {tuple(t.shape)}")


def _cols(k: int | None, *ts: torch.Tensor) -> int:
    n = min(t.shape[1] for t in ts)
    return n if k is None else min(int(k), n)


def _pad(diag: torch.Tensor, k: int | None) -> torch.Tensor:
    """Diagonal of length k, NaN where a matrix has fewer than k singular vectors."""
    if k is None or diag.shape[-1] >= k:
        return diag
    pad = torch.full((*diag.shape[:-1], int(k) - diag.shape[-1]), float("nan"), dtype=diag.dtype, device=diag.device)
    return torch.cat([diag, pad], dim=-1)


def alignment_matrix(x, y, k: int | None = None):
    """A_jk = |<x_j, y_k>| for j, k < min(k, available) (Yunis et al. 2024, Eqn 3-4).

    ``x`` (dim, >= k): output-side singular vectors of the earlier matrix (columns); ``y`` (dim, >= k):
    input-side singular vectors of the later one. Returns (kx, ky), kx = min(k, x.shape[1]).
    """
    (x, y), to_numpy = _torch(x, y)
    _check("alignment_matrix(x)", x)
    _check("alignment_matrix(y)", y)
    if x.shape[0] != y.shape[0]:
        raise SedvizError(f"alignment_matrix: x has vectors of length {x.shape[0]}, y of length {y.shape[0]}; they must live in the same space")
    kx = x.shape[1] if k is None else min(int(k), x.shape[1])
    ky = y.shape[1] if k is None else min(int(k), y.shape[1])
    return _out((x[:, :kx].mT @ y[:, :ky]).abs(), to_numpy)


def alignment_diag(x, y, k: int):
    """Diagonal |<x_j, y_j>|, j < k, of the alignment matrix (Yunis et al. 2024, Eqn 3-4).

    Length k; NaN past min(x.shape[1], y.shape[1]) so that diagonals of layers of any rank stack.
    """
    (x, y), to_numpy = _torch(x, y)
    _check("alignment_diag(x)", x)
    _check("alignment_diag(y)", y)
    if x.shape[0] != y.shape[0]:
        raise SedvizError(f"alignment_diag: x has vectors of length {x.shape[0]}, y of length {y.shape[0]}; they must live in the same space")
    n = _cols(k, x, y)
    d = (x[:, :n] * y[:, :n]).sum(0).abs()
    return _out(_pad(d, k), to_numpy)


def agreement_matrix(U_t, V_t, U_T, V_T, k: int | None = None):
    """S_jk = |<u_j(t), u_k(T)>| * |<v_j(t), v_k(T)>| (Yunis et al. 2024, Eqn 5).

    U_t, U_T (rows, >= k) and V_t, V_T (cols, >= k): left and right singular vectors as columns
    at checkpoint t and at the reference T (the final checkpoint, or another run's endpoint).
    """
    (U_t, V_t, U_T, V_T), to_numpy = _torch(U_t, V_t, U_T, V_T)
    a = alignment_matrix(U_t, U_T, k)
    b = alignment_matrix(V_t, V_T, k)
    n1, n2 = min(a.shape[0], b.shape[0]), min(a.shape[1], b.shape[1])
    return _out(a[:n1, :n2] * b[:n1, :n2], to_numpy)


def agreement_diag(U_t, V_t, U_T, V_T, k: int):
    """Diagonal |<u_j(t), u_j(T)>| * |<v_j(t), v_j(T)>|, j < k (Yunis et al. 2024, Eqn 5); NaN-padded to k."""
    (U_t, V_t, U_T, V_T), to_numpy = _torch(U_t, V_t, U_T, V_T)
    return _out(alignment_diag(U_t, U_T, k) * alignment_diag(V_t, V_T, k), to_numpy)


def score(diag, n: int = SCORE_RANKS, *, dim: str = "rank"):
    """Mean of the first ``n`` diagonal entries (Yunis et al. 2024: a = mean of the first 10 of Eqn 4's
    diagonal; s(t) likewise for Eqn 5).

    Takes the last axis of a tensor or array, or the ``dim`` dimension of an xarray DataArray.
    NaN entries (ranks a layer does not have) are skipped; all-NaN gives NaN.
    """
    if hasattr(diag, "dims") and hasattr(diag, "isel"):  # xarray
        if dim not in diag.dims:
            raise SedvizError(f"score: the DataArray has no dimension {dim!r} (dims {diag.dims}); pass dim=...")
        return diag.isel({dim: slice(0, n)}).mean(dim, skipna=True)
    if isinstance(diag, torch.Tensor):
        return torch.nanmean(diag[..., :n], dim=-1)
    arr = np.asarray(diag, dtype=float)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)  # all-NaN slices give NaN, as documented
        return np.nanmean(arr[..., :n], axis=-1)


def _vectors(svds, op: Operand, k: int) -> torch.Tensor:
    """Top-k singular vectors (columns) of one operand, with ``take`` applied."""
    key = op.key
    if key not in svds:
        raise SedvizError(
            f"pair_diag: svds has no decomposition of block {tuple(key)}; decompose every block listed by sedviz.pairs.operands(pairs)"
        )
    d = svds[key]
    if hasattr(d, "V"):  # sedviz.spectra.SVD: U and V hold the vectors as columns
        vec = d.U if op.side == "left" else d.V
    else:
        U, _, Vh = d
        vec = U if op.side == "left" else Vh.mT
    if not isinstance(vec, torch.Tensor):
        vec = torch.as_tensor(np.asarray(vec))
    vec = vec[:, :k]
    if op.take is not None:
        vec = vec[slice(*op.take)]
    return vec


def pair_diag(svds, pair: PairSpec, k: int):
    """Alignment diagonal (length k, NaN-padded) of a consecutive pair, averaged over its terms
    (per-head Q/K: the mean over heads) (docs/methods.md#alignment-of-consecutive-layers; Yunis et al. 2024, Eqn 3-4).

    ``svds`` maps each block ``(layer, rows, cols)`` of :func:`sedviz.pairs.operands` to its SVD:
    a tuple ``(U, S, Vh)`` as from ``torch.linalg.svd`` or a :class:`sedviz.spectra.SVD`
    (vectors as columns); only the top-k vectors are read.
    """
    numpy_in = any(not isinstance(_first(svds[op.key]), torch.Tensor) for t in pair.terms for op in t if op.key in svds)
    diags = [alignment_diag(_vectors(svds, a, k), _vectors(svds, b, k), k) for a, b in pair.terms]
    if not diags:
        raise SedvizError(f"pair_diag: pair {pair.name!r} has no terms")
    diags, _ = _torch(*diags)
    return _out(torch.stack(diags).mean(0), numpy_in)


def pair_matrix(svds, pair: PairSpec, k: int):
    """Alignment matrix (Eqn 3-4) of a pair, averaged over its terms; (k', k') with k' <= k."""
    numpy_in = any(not isinstance(_first(svds[op.key]), torch.Tensor) for t in pair.terms for op in t if op.key in svds)
    mats = [alignment_matrix(_vectors(svds, a, k), _vectors(svds, b, k), k) for a, b in pair.terms]
    n1, n2 = min(m.shape[0] for m in mats), min(m.shape[1] for m in mats)
    mats, _ = _torch(*[m[:n1, :n2] for m in mats])
    return _out(torch.stack(mats).mean(0), numpy_in)


def _first(d):
    return d.U if hasattr(d, "U") else d[0]
