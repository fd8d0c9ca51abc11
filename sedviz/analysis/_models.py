"""Shared helpers of the analyses that rebuild a model from a checkpoint (pruning, LMC).

- :func:`resolve_callable` turns a ``"package.module:function"`` string into the function.
- :func:`read_state` is :func:`sedviz.io.read_state` (safe loading of every checkpoint format).
- :func:`checkpoints` reads the Dataset's ``checkpoints`` attribute; :func:`select_steps` picks steps.
- :func:`load_state`, :func:`run_evaluate`, :func:`model_matrices` put a state into a model, score it,
  and list its matrices with their kinds.
"""
from __future__ import annotations

import importlib
import json
import math

import torch
from torch import nn

from sedviz.errors import SedvizError
from sedviz.io import read_state  # noqa: F401 - re-exported: the one way the analyses load a checkpoint
from sedviz.layers import describe, kinds_from_model

__all__ = [
    "resolve_callable",
    "read_state",
    "checkpoints",
    "select_steps",
    "load_state",
    "run_evaluate",
    "model_matrices",
    "from_matrix",
    "svd64",
    "agreement_with",
    "has_batchnorm",
    "recompute_batchnorm",
]


def resolve_callable(obj, param: str):
    """A callable as given, or the function named by ``"package.module:function"``.

    ``param`` is the name of the argument, used in the error message.
    """
    if callable(obj):
        return obj
    if not isinstance(obj, str) or ":" not in obj:
        raise SedvizError(f"{param}={obj!r}: expected a callable or a 'package.module:function' string")
    mod_name, _, attr = obj.partition(":")
    try:
        mod = importlib.import_module(mod_name)
    except Exception as exc:  # any import failure is the user's path: say which
        raise SedvizError(f"{param}={obj!r}: cannot import module {mod_name!r} ({exc}); check the name and that it is on sys.path") from exc
    fn = mod
    for part in attr.split("."):
        if not hasattr(fn, part):
            raise SedvizError(f"{param}={obj!r}: module {mod_name!r} has no attribute {attr!r}")
        fn = getattr(fn, part)
    if not callable(fn):
        raise SedvizError(f"{param}={obj!r}: {attr!r} in {mod_name!r} is not callable")
    return fn


def build_model(model_factory, evaluate, device) -> tuple[nn.Module, object]:
    """The factory's model on ``device`` and the evaluation callable, both resolved from
    callables or "package.module:function" strings, with a clear error for a non-Module."""
    factory = resolve_callable(model_factory, "model_factory")
    evaluate = resolve_callable(evaluate, "evaluate")
    model = factory()
    if not isinstance(model, nn.Module):
        raise SedvizError(f"model_factory returned {type(model).__name__}, not a torch.nn.Module; it must build the model (untrained is fine)")
    return model.to(device), evaluate


def checkpoints(ds) -> dict[str, dict[int, str]]:
    """``ds.attrs["checkpoints"]`` (JSON ``{run: {step: path}}``) as ``{run: {int step: path}}``, steps sorted."""
    raw = ds.attrs.get("checkpoints") if hasattr(ds, "attrs") else None
    if raw is None:
        raise SedvizError("ds.attrs['checkpoints'] is missing: compute the Dataset with sedviz (it records each run's checkpoint paths) or set it to a JSON {run: {step: path}}")
    table = json.loads(raw) if isinstance(raw, str) else raw
    return {
        str(run): {int(s): str(p) for s, p in sorted((steps or {}).items(), key=lambda kv: int(kv[0]))}
        for run, steps in table.items()
    }


def select_steps(table: dict[str, dict[int, str]], runs, steps) -> dict[str, list[int]]:
    """Steps to analyse per run: ``"final"`` (last checkpoint), ``"all"``, an int or a list of ints."""
    if runs is None:
        runs = list(table)
    elif isinstance(runs, str):
        runs = [runs]
    out: dict[str, list[int]] = {}
    for run in runs:
        if run not in table:
            raise SedvizError(f"runs={runs!r}: run {run!r} has no checkpoints in ds.attrs['checkpoints'] (runs: {sorted(table)})")
        have = list(table[run])
        if not have:
            raise SedvizError(f"runs={runs!r}: ds.attrs['checkpoints'] lists no checkpoint paths for run {run!r}")
        if steps == "final":
            out[run] = have[-1:]
        elif steps == "all":
            out[run] = have
        else:
            want = [int(steps)] if isinstance(steps, (int, float)) else [int(s) for s in steps]
            missing = [s for s in want if s not in table[run]]
            if missing:
                raise SedvizError(f"steps={steps!r}: run {run!r} has no checkpoint at steps {missing}")
            out[run] = want
    return out


def load_state(model: nn.Module, state: dict[str, torch.Tensor], where: str = "state") -> None:
    """Copy ``state`` into ``model`` (all entries must match), with an error naming ``where``."""
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise SedvizError(f"{where}: does not fit the model from model_factory ({str(exc).splitlines()[0]} ...); the factory must build the architecture that was saved") from exc


def run_evaluate(evaluate, model: nn.Module) -> tuple[float, float]:
    """(loss, acc) from ``evaluate(model)``: a float loss, or a dict with ``"loss"`` and maybe ``"acc"`` (NaN if absent)."""
    model.eval()
    with torch.no_grad():
        res = evaluate(model)
    if isinstance(res, dict):
        if "loss" not in res:
            raise SedvizError(f"evaluate returned a dict without 'loss' (keys {sorted(res)}); return {{'loss': ..., 'acc': ...}} or a float loss")
        return float(res["loss"]), float(res.get("acc", math.nan))
    try:
        return float(res), math.nan
    except (TypeError, ValueError):
        raise SedvizError(f"evaluate returned {type(res).__name__}; return a float loss or a dict with 'loss' (and 'acc')") from None


def model_matrices(model: nn.Module) -> list[tuple[str, torch.nn.Parameter, str]]:
    """(name, parameter, kind) of every matrix parameter (ndim >= 2) of ``model``, in module order,
    tied duplicates once. Kinds come from the module types where the name does not reveal them
    (:func:`sedviz.layers.kinds_from_model`: a transposed conv in a ``Sequential``), else from the name.
    """
    kinds = kinds_from_model(model)
    out = []
    for name, p in model.named_parameters():  # removes tied duplicates
        if p.ndim < 2 or not torch.is_floating_point(p):
            continue
        out.append((name, p, describe(name, p, kinds.get(name)).kind))
    return out


def from_matrix(M: torch.Tensor, shape: tuple[int, ...], kind: str) -> torch.Tensor:
    """Inverse of :func:`sedviz.layers.matrix_view`: the tensor of ``shape`` whose view is ``M``."""
    if len(shape) == 2:
        return M.reshape(shape)
    if kind == "conv_transpose":
        return M.reshape(shape[1], shape[0], *shape[2:]).transpose(0, 1)
    return M.reshape(shape)


def svd64(M: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Thin SVD (U, S, Vh) of a matrix in float64 on its device (reference accuracy for analyses that
    decompose a handful of checkpoints)."""
    return torch.linalg.svd(M.detach().to(torch.float64), full_matrices=False)


def agreement_with(M_a: torch.Tensor, M_b: torch.Tensor, k: int) -> torch.Tensor:
    """Agreement diagonal (Yunis et al. 2024, Eqn 5) between two matrices of the same shape, length k, NaN-padded."""
    from .alignment import agreement_diag

    Ua, _, Vha = svd64(M_a)
    Ub, _, Vhb = svd64(M_b)
    return agreement_diag(Ua, Vha.mT, Ub, Vhb.mT, k)


def has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def recompute_batchnorm(model: nn.Module, data_loader, device) -> None:
    """Reset every BatchNorm's running statistics and re-estimate them from ``data_loader``.

    Each batch (a tensor, or a tuple/list whose first item is the input, or a dict of keyword
    inputs) is forwarded in train mode under ``no_grad``; ``momentum=None`` makes the estimate the
    equal-weight average over batches (as ``torch.optim.swa_utils.update_bn``). Modes and momenta
    are restored.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in bns]
    was_training = model.training
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    try:
        with torch.no_grad():
            for batch in data_loader:
                if isinstance(batch, dict):
                    model(**{k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()})
                    continue
                x = batch[0] if isinstance(batch, (tuple, list)) else batch
                model(x.to(device))
    finally:
        for m, mom in zip(bns, momenta):
            m.momentum = mom
        model.train(was_training)
