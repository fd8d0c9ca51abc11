"""Batched singular value decompositions on a device, and the per-matrix measures built on them.

Matrices of the same shape are stacked and decomposed in one call (LAPACK/cuSOLVER batch);
wide matrices are transposed to tall first, which LAPACK's gesdd handles several times faster
and which leaves singular values unchanged (left and right vectors swap back afterwards).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .errors import SedvizError

# Cap on one stacked batch, so batching never costs more than a fraction of a checkpoint of memory.
_BATCH_BYTES = 256 * 2**20


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; anything else is passed to :class:`torch.device`."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise SedvizError(f"device={device!r} is not a torch device; use 'auto', 'cpu' or 'cuda[:N]'") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SedvizError(f"device={device!r} asks for CUDA but torch sees no GPU; use device='auto' or 'cpu'")
    return dev


def resolve_dtype(dtype: str | torch.dtype = "float32") -> torch.dtype:
    """``"float32"`` (default, what Yunis et al. used) or ``"float64"`` (reference checks)."""
    table = {"float32": torch.float32, "float64": torch.float64, torch.float32: torch.float32, torch.float64: torch.float64}
    if dtype not in table:
        raise SedvizError(f"dtype={dtype!r} is not supported; use 'float32' or 'float64'")
    return table[dtype]


@dataclass
class SVD:
    """Singular values (descending) and, when asked for, the top-k singular vectors.

    ``U`` is (rows, k) and ``V`` is (cols, k): columns are the left / right singular vectors.
    """

    S: torch.Tensor
    U: torch.Tensor | None = None
    V: torch.Tensor | None = None


def decompose(mats: list[torch.Tensor], *, k: int | None = None) -> list[SVD]:
    """Decompose each matrix once; stack matrices of the same shape into one batched call.

    ``k=None`` computes singular values only (``svdvals``); an integer also keeps the top-k
    left and right singular vectors from one thin SVD.
    """
    out: list[SVD | None] = [None] * len(mats)
    groups: dict[tuple, list[int]] = {}
    for i, m in enumerate(mats):
        groups.setdefault((tuple(m.shape), m.dtype, m.device), []).append(i)
    for (shape, dtype, _), idx in groups.items():
        per = math.prod(shape) * torch.finfo(dtype).bits // 8
        chunk = max(1, _BATCH_BYTES // max(per, 1))
        for start in range(0, len(idx), chunk):
            part = idx[start : start + chunk]
            for i, res in zip(part, _decompose_same_shape([mats[i] for i in part], k)):
                out[i] = res
    return out  # type: ignore[return-value]


def _decompose_same_shape(mats: list[torch.Tensor], k: int | None) -> list[SVD]:
    rows, cols = mats[0].shape
    wide = cols > rows
    if len(mats) == 1:
        batch = mats[0].unsqueeze(0)
    else:
        batch = torch.stack(mats)
    if wide:
        batch = batch.transpose(-2, -1)
    if k is None:
        S = torch.linalg.svdvals(batch)
        return [SVD(S=s) for s in S]
    U, S, Vh = torch.linalg.svd(batch, full_matrices=False)
    kk = min(k, S.shape[-1])
    left, right = U[..., :kk], Vh[..., :kk, :].transpose(-2, -1)
    if wide:
        left, right = right, left
    return [SVD(S=S[i], U=left[i].contiguous(), V=right[i].contiguous()) for i in range(len(mats))]


def measures(S: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-matrix measures from singular values ``S`` (..., R), descending, NaN-free.

    - ``eff_rank``: normalized effective rank exp(-sum p_i log p_i) / R with p_i = s_i / sum s
      (Yunis et al. 2024, Eqn 1-2; unsquared values, exp of the entropy as in their code).
    - ``stable_rank``: sum s_i^2 / s_1^2.  ``spectral_norm``: s_1.  ``fro_norm``: sqrt(sum s_i^2).
    Computed in float64 so that the entropy of long spectra does not lose digits.
    """
    s = S.to(torch.float64)
    R = s.shape[-1]
    total = s.sum(-1, keepdim=True)
    p = s / total
    plogp = torch.where(p > 0, p * torch.log(p), torch.zeros_like(p))
    eff = torch.exp(-plogp.sum(-1)) / R
    s1 = s[..., 0]
    sq = (s * s).sum(-1)
    zero = total.squeeze(-1) == 0
    nan = torch.full_like(s1, float("nan"))
    return {
        "eff_rank": torch.where(zero, nan, eff),
        "stable_rank": torch.where(zero, nan, sq / (s1 * s1)),
        "spectral_norm": s1,
        "fro_norm": torch.sqrt(sq),
    }
