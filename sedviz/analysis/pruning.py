"""Pruning: which directions carry the function (docs/methods.md#pruning; Yunis et al. 2024, Sec. 4.2 Fig. 4, Sec. 7.2 Fig. 10).

- SVD pruning (:func:`prune_curves`): every matrix but the model's last keeps its top (or bottom)
  ceil(R f) singular triplets; the rebuilt model is evaluated. BatchNorm statistics are
  re-estimated after pruning when a ``data_loader`` is given.
- Magnitude pruning (:func:`masks`): one global threshold over all matrices but the last keeps
  weights with |w| > threshold; a random mask with the same per-layer density is the control; the
  singular vector agreement (Eqn 5) between masked and unmasked matrices says which directions a
  mask keeps.

Both rebuild models from the checkpoints listed in ``ds.attrs["checkpoints"]`` with a model
factory and an evaluation function (callables or ``"package.module:function"`` strings).
"Matrices" are the model's parameters with ndim >= 2 in module order, tied duplicates once, viewed
as matrices by :func:`sedviz.layers.matrix_view`; "the last" is the last of them (the output head).
"""
from __future__ import annotations

import json
import math
import warnings

import numpy as np
import torch
import xarray as xr
from torch import nn

from sedviz.errors import SedvizError
from sedviz.layers import matrix_view

from . import _models as M
from .alignment import score

__all__ = ["svd_prune", "prune_curves", "magnitude_masks", "masks"]

_KEEPS = ("top", "bottom")


def svd_prune(tensor: torch.Tensor, kind: str, fraction: float, keep: str = "top", *, svd=None) -> torch.Tensor:
    """The tensor rebuilt from ceil(R * fraction) singular triplets of its matrix view (docs/methods.md#pruning).

    ``keep="top"`` keeps the largest singular values, ``"bottom"`` the smallest; R = min(rows, cols)
    of the view (:func:`sedviz.layers.matrix_view` for ``kind``). The SVD is in float64 (``svd``:
    a precomputed ``(U, S, Vh)`` of the view); the result has the tensor's shape, dtype and device.
    """
    if keep not in _KEEPS:
        raise SedvizError(f"keep={keep!r}: use 'top' or 'bottom'")
    if not 0 < fraction <= 1:
        raise SedvizError(f"fraction={fraction!r}: the kept fraction of singular triplets must be in (0, 1]")
    U, S, Vh = svd if svd is not None else M.svd64(matrix_view(tensor, kind))
    R = S.shape[0]
    n = min(R, math.ceil(R * fraction - 1e-9))  # the epsilon keeps ceil(64 * 0.5) = 32 safe from float noise
    idx = slice(0, n) if keep == "top" else slice(R - n, R)
    rebuilt = (U[:, idx] * S[idx]) @ Vh[idx]
    return M.from_matrix(rebuilt, tuple(tensor.shape), kind).to(dtype=tensor.dtype, device=tensor.device)


def _prepare(ds, runs, steps, model_factory, evaluate, device, data_loader):
    """What prune_curves and masks share: the chosen checkpoints, the model and evaluation, its
    matrices split into those to prune and the last one (left alone, docs/methods.md#pruning), BatchNorm."""
    table = M.checkpoints(ds)
    sel = M.select_steps(table, runs, steps)
    model, evaluate = M.build_model(model_factory, evaluate, device)
    mats = M.model_matrices(model)
    if len(mats) < 2:
        raise SedvizError("model_factory: the model has fewer than two matrices; pruning leaves the last one alone and needs another")
    return table, sel, model, evaluate, mats[:-1], mats[-1][0], _bn_check(model, data_loader)


def _bn_check(model, data_loader) -> bool:
    if not M.has_batchnorm(model):
        return False
    if data_loader is None:
        warnings.warn(
            "the model has BatchNorm but no data_loader was given: its running statistics are not re-estimated "
            "after pruning (docs/methods.md#pruning asks for it); pass data_loader=... (batches of training inputs)",
            stacklevel=3,
        )
        return False
    return True


def _grid(sel: dict[str, list[int]]):
    runs = list(sel)
    steps = sorted({s for v in sel.values() for s in v})
    return runs, steps


def _layer_coords(mats) -> dict:
    names = [n for n, _, _ in mats]
    views = [matrix_view(p, kind) for _, p, kind in mats]
    return {
        "layer": ("layer", names),
        "layer_kind": ("layer", [kind for _, _, kind in mats]),
        "rows": ("layer", np.array([v.shape[0] for v in views], dtype=np.int64)),
        "cols": ("layer", np.array([v.shape[1] for v in views], dtype=np.int64)),
    }


def prune_curves(
    ds: xr.Dataset,
    model_factory,
    evaluate,
    *,
    runs=None,
    steps="final",
    fractions=(0.5,),
    keep=("top", "bottom"),
    data_loader=None,
    device="cpu",
) -> xr.Dataset:
    """Loss and accuracy after SVD pruning, over the kept fraction (docs/methods.md#pruning; Yunis et al. 2024 Fig. 4).

    For each run and step (``"final"``, ``"all"``, or step numbers), every matrix but the model's last
    keeps its top or bottom ceil(R f) singular triplets for each ``f`` in ``fractions``; the model
    is evaluated with ``evaluate(model)`` (a float loss or ``{"loss", "acc"}``). Each matrix is
    decomposed once per checkpoint. ``keep="full"`` is the unpruned model (the same at every f).
    With BatchNorm, running statistics are re-estimated from ``data_loader`` after each pruning.

    Returns a Dataset with ``prune_loss`` and ``prune_acc`` (run, step, keep, fraction); NaN where a
    run has no such step, ``prune_acc`` NaN when ``evaluate`` gives no accuracy.
    """
    keep = (keep,) if isinstance(keep, str) else tuple(keep)
    bad = [k for k in keep if k not in _KEEPS]
    if bad or not keep:
        raise SedvizError(f"keep={keep!r}: choose from {_KEEPS} ('full', the unpruned model, is always included)")
    fractions = tuple(float(f) for f in np.atleast_1d(fractions))
    for f in fractions:
        if not 0 < f <= 1:
            raise SedvizError(f"fractions={fractions!r}: each kept fraction must be in (0, 1]")
    table, sel, model, evaluate, pruned, last, bn = _prepare(ds, runs, steps, model_factory, evaluate, device, data_loader)

    run_names, step_grid = _grid(sel)
    keeps = ("full",) + keep
    loss = np.full((len(run_names), len(step_grid), len(keeps), len(fractions)), np.nan)
    acc = np.full_like(loss, np.nan)
    for i, run in enumerate(run_names):
        for step in sel[run]:
            j = step_grid.index(step)
            path = table[run][step]
            state = M.read_state(path)
            M.load_state(model, state, path)
            loss[i, j, 0, :], acc[i, j, 0, :] = M.run_evaluate(evaluate, model)
            svds = [M.svd64(matrix_view(p, kind)) for _, p, kind in pruned]
            originals = [p.detach().clone() for _, p, _ in pruned]
            for c, kp in enumerate(keep, start=1):
                for f_i, f in enumerate(fractions):
                    with torch.no_grad():
                        for (_, p, kind), W, svd in zip(pruned, originals, svds):
                            p.copy_(svd_prune(W, kind, f, kp, svd=svd))
                    if bn:
                        M.recompute_batchnorm(model, data_loader, device)
                    loss[i, j, c, f_i], acc[i, j, c, f_i] = M.run_evaluate(evaluate, model)
                    M.load_state(model, state, path)  # restore weights and norm statistics
    coords = {"run": run_names, "step": np.array(step_grid, dtype=np.int64), "keep": list(keeps), "fraction": list(fractions)}
    dims = ("run", "step", "keep", "fraction")
    out = xr.Dataset(
        {
            "prune_loss": (dims, loss, {"long_name": "loss after SVD pruning", "units": "as returned by evaluate"}),
            "prune_acc": (dims, acc, {"long_name": "accuracy after SVD pruning"}),
        },
        coords=coords,
    )
    out.attrs["options"] = json.dumps(
        {"fractions": list(fractions), "keep": list(keep), "batchnorm_recomputed": bn, "svd_dtype": "float64",
         "unpruned_last_matrix": last, "pruned_layers": [n for n, _, _ in pruned]}
    )
    out.attrs["method"] = "docs/methods.md#pruning; Yunis et al. 2024 Sec. 4.2: keep ceil(R*fraction) singular triplets of every matrix but the last"
    return out


def magnitude_masks(matrices: list[torch.Tensor], density: float) -> list[torch.Tensor]:
    """Boolean masks keeping |w| > t, one global threshold t over all ``matrices`` (docs/methods.md#pruning).

    t is the (n - round(density n))-th smallest |w| over all n entries, so that round(density n)
    weights are kept (fewer when |w| ties at t).
    """
    if not 0 <= density <= 1:
        raise SedvizError(f"density={density!r}: the kept fraction of weights must be in [0, 1]")
    flat = torch.cat([m.detach().abs().reshape(-1).to(torch.float64) for m in matrices])
    n = flat.numel()
    n_keep = int(round(density * n))
    if n_keep >= n:
        return [torch.ones_like(m, dtype=torch.bool) for m in matrices]
    if n_keep == 0:
        return [torch.zeros_like(m, dtype=torch.bool) for m in matrices]
    t = torch.kthvalue(flat.cpu(), n - n_keep).values.to(flat.device)
    return [m.detach().abs().to(torch.float64) > t for m in matrices]


def _random_like(mask: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """A mask with exactly as many kept entries as ``mask``, uniformly at random."""
    n = int(mask.sum())
    flat = torch.zeros(mask.numel(), dtype=torch.bool)
    flat[torch.randperm(mask.numel(), generator=gen)[:n]] = True
    return flat.reshape(mask.shape).to(mask.device)


def masks(
    ds: xr.Dataset,
    model_factory,
    evaluate,
    *,
    runs=None,
    steps="final",
    density: float = 0.5,
    seed: int = 0,
    k: int = 100,
    data_loader=None,
    device="cpu",
) -> xr.Dataset:
    """Global magnitude pruning against random masks of the same per-layer density (docs/methods.md#pruning;
    Yunis et al. 2024 Sec. 7.2, Fig. 10), with the singular vector agreement they leave (Eqn 5).

    One threshold over all matrices but the model's last keeps a ``density`` fraction of their
    weights (|w| > threshold); the random control keeps, in each layer, as many weights as the
    magnitude mask does there, drawn by a ``torch.Generator`` seeded with ``seed`` (the same
    draw at every checkpoint). BatchNorm statistics are re-estimated from ``data_loader`` when given.

    Returns a Dataset with ``mask_loss``, ``mask_acc`` (run, step, mask) for mask in
    (full, magnitude, random); ``mask_sva`` (run, step, mask, layer, rank): the agreement
    diagonal |<u_j, u_j^mask>| |<v_j, v_j^mask>| between each unmasked and masked matrix (1 for
    ``full``, NaN past the layer's rank), ``mask_sva_score`` (mean of its first 10 ranks) and
    ``mask_density`` (kept fraction per layer). ``layer`` holds the masked matrices.
    """
    if int(k) < 1:
        raise SedvizError(f"k={k!r}: the number of singular vectors compared must be a positive integer")
    if not 0 <= density <= 1:
        raise SedvizError(f"density={density!r}: the kept fraction of weights must be in [0, 1]")
    table, sel, model, evaluate, masked, last, bn = _prepare(ds, runs, steps, model_factory, evaluate, device, data_loader)
    ranks = [min(matrix_view(p, kind).shape) for _, p, kind in masked]
    K = min(int(k), max(ranks))

    run_names, step_grid = _grid(sel)
    kinds = ("full", "magnitude", "random")
    shape = (len(run_names), len(step_grid), len(kinds))
    loss, acc = np.full(shape, np.nan), np.full(shape, np.nan)
    sva = np.full(shape + (len(masked), K), np.nan)
    dens = np.full(shape + (len(masked),), np.nan)
    for i, run in enumerate(run_names):
        for step in sel[run]:
            j = step_grid.index(step)
            path = table[run][step]
            state = M.read_state(path)
            M.load_state(model, state, path)
            loss[i, j, 0], acc[i, j, 0] = M.run_evaluate(evaluate, model)
            for l, R in enumerate(ranks):
                sva[i, j, 0, l, : min(R, K)] = 1.0
                dens[i, j, 0, l] = 1.0
            originals = [p.detach().clone() for _, p, _ in masked]
            mag = magnitude_masks(originals, density)
            gen = torch.Generator().manual_seed(int(seed))
            rnd = [_random_like(m, gen) for m in mag]
            for c, mask_set in ((1, mag), (2, rnd)):
                with torch.no_grad():
                    for (_, p, _), W, m in zip(masked, originals, mask_set):
                        p.copy_(W * m)
                if bn:
                    M.recompute_batchnorm(model, data_loader, device)
                loss[i, j, c], acc[i, j, c] = M.run_evaluate(evaluate, model)
                for l, ((_, _, kind), W, m) in enumerate(zip(masked, originals, mask_set)):
                    d = M.agreement_with(matrix_view(W, kind), matrix_view(W * m, kind), K)
                    sva[i, j, c, l] = d.cpu().numpy()
                    dens[i, j, c, l] = float(m.sum()) / m.numel()
                M.load_state(model, state, path)
    coords = {"run": run_names, "step": np.array(step_grid, dtype=np.int64), "mask": list(kinds), "rank": np.arange(K)}
    coords.update(_layer_coords(masked))
    d3 = ("run", "step", "mask")
    out = xr.Dataset(
        {
            "mask_loss": (d3, loss, {"long_name": "loss with the mask applied"}),
            "mask_acc": (d3, acc, {"long_name": "accuracy with the mask applied"}),
            "mask_sva": (d3 + ("layer", "rank"), sva, {"long_name": "agreement of masked with unmasked singular vectors (Yunis et al. 2024 Eqn 5)"}),
            "mask_density": (d3 + ("layer",), dens, {"long_name": "fraction of the layer's weights kept"}),
        },
        coords=coords,
    )
    out["mask_sva_score"] = score(out["mask_sva"])
    out["mask_sva_score"].attrs["long_name"] = "mean of the first 10 ranks of mask_sva"
    out.attrs["options"] = json.dumps(
        {"density": density, "seed": int(seed), "k": int(k), "batchnorm_recomputed": bn, "svd_dtype": "float64", "unmasked_last_matrix": last}
    )
    out.attrs["method"] = "docs/methods.md#pruning; Yunis et al. 2024 Sec. 7.2: global magnitude mask (|w| > t) vs per-layer-density random mask"
    return out
