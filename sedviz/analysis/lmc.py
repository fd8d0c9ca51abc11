"""Linear mode connectivity between two endpoints and weight perturbation (docs/methods.md#linear-mode-connectivity;
Yunis et al. 2024, Eqn 6 and App. A.9).

- :func:`lmc`: evaluate the model at theta(alpha) = (1 - alpha) theta_a + alpha theta_b for evenly
  spaced alpha in [0, 1]; the barrier is max over interior alpha of
  L(alpha) - ((1 - alpha) L(0) + alpha L(1)) (signed: negative when the path is below the chord);
  and the singular vector agreement (Eqn 5) between the two endpoints' matrices.
- :func:`perturb`: W <- W + eta ||W|| eps / ||eps|| with Gaussian eps, rescaled to keep ||W||.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
import xarray as xr

from sedviz.errors import SedvizError
from sedviz.layers import is_buffer, matrix_view

from . import _models as M
from .alignment import score

__all__ = ["lmc", "interpolate", "perturb", "barrier"]


def _endpoint(x, param: str) -> tuple[dict[str, torch.Tensor], str]:
    """A state dict and a label from ``(ds, run, step)``, a checkpoint path or a state dict."""
    if isinstance(x, Mapping):
        return dict(x), "state dict"
    if isinstance(x, (str, Path)):
        return M.read_state(x), str(x)
    if isinstance(x, tuple) and len(x) == 3:
        ds, run, step = x
        table = M.checkpoints(ds)
        if run not in table:
            raise SedvizError(f"{param}={(run, step)!r}: run {run!r} has no checkpoints in ds.attrs['checkpoints'] (runs: {sorted(table)})")
        if step == "final":
            step = list(table[run])[-1]
        if int(step) not in table[run]:
            raise SedvizError(f"{param}: run {run!r} has no checkpoint at step {step!r} (steps {list(table[run])[:5]}...)")
        return M.read_state(table[run][int(step)]), f"{run}@{int(step)}"
    raise SedvizError(f"{param}: expected (ds, run, step), a checkpoint path or a state dict, got {type(x).__name__}")


def interpolate(a: Mapping, b: Mapping, alpha: float) -> dict[str, torch.Tensor]:
    """(1 - alpha) a + alpha b for every floating entry (buffers such as BatchNorm statistics too);
    integer entries (counters) are taken from ``a`` (docs/methods.md#linear-mode-connectivity). Exact at alpha = 0 and 1."""
    if set(a) != set(b):
        only_a, only_b = sorted(set(a) - set(b)), sorted(set(b) - set(a))
        raise SedvizError(f"the endpoints have different entries (only in a: {only_a[:5]}, only in b: {only_b[:5]}); both must come from the same architecture")
    out = {}
    for name, ta in a.items():
        tb = b[name]
        if ta.shape != tb.shape:
            raise SedvizError(f"entry {name!r} has shape {tuple(ta.shape)} in a and {tuple(tb.shape)} in b; the endpoints must share the architecture")
        if torch.is_floating_point(ta):
            out[name] = torch.lerp(ta, tb.to(device=ta.device, dtype=ta.dtype), float(alpha))
        else:
            out[name] = ta.clone()
    return out


def barrier(alphas, losses) -> float:
    """max over interior alpha of L(alpha) - ((1 - alpha) L(0) + alpha L(1)) (Yunis et al. 2024 Eqn 6), signed."""
    alphas, losses = np.asarray(alphas, dtype=float), np.asarray(losses, dtype=float)
    chord = (1 - alphas) * losses[0] + alphas * losses[-1]
    return float(np.max((losses - chord)[1:-1]))


def lmc(a, b, model_factory, evaluate, *, n_alphas: int = 11, k: int = 100, device="cpu") -> xr.Dataset:
    """Linear mode connectivity of two endpoints (docs/methods.md#linear-mode-connectivity; Yunis et al. 2024 Eqn 6, App. A.9).

    ``a`` and ``b``: ``(ds, run, step)`` (step may be ``"final"``), a checkpoint path, or a state
    dict. Every state entry is interpolated at ``n_alphas`` evenly spaced alpha in [0, 1] (see
    :func:`interpolate`) and evaluated with ``evaluate(model)`` on the model from ``model_factory``.

    Returns a Dataset with ``lmc_loss``, ``lmc_acc`` (alpha); ``barrier`` (scalar, signed);
    ``endpoint_sva`` (layer, rank): the agreement diagonal |<u_j^a, u_j^b>| |<v_j^a, v_j^b>|
    (Eqn 5) of every matrix of the two endpoints, NaN past a layer's rank; ``endpoint_sva_score``
    (layer): the mean of its first 10 ranks.
    """
    if int(n_alphas) < 3:
        raise SedvizError(f"n_alphas={n_alphas!r}: need at least 3 (the endpoints and one interior point)")
    if int(k) < 1:
        raise SedvizError(f"k={k!r}: the number of singular vectors compared must be a positive integer")
    state_a, label_a = _endpoint(a, "a")
    state_b, label_b = _endpoint(b, "b")
    model, evaluate = M.build_model(model_factory, evaluate, device)

    alphas = np.linspace(0.0, 1.0, int(n_alphas))
    loss, acc = np.full(len(alphas), np.nan), np.full(len(alphas), np.nan)
    for i, alpha in enumerate(alphas):
        M.load_state(model, interpolate(state_a, state_b, alpha), f"interpolation at alpha={alpha:g}")
        loss[i], acc[i] = M.run_evaluate(evaluate, model)

    mats = [(n, p, kind) for n, p, kind in M.model_matrices(model) if n in state_a]
    ranks = [min(matrix_view(p, kind).shape) for _, p, kind in mats]
    K = min(int(k), max(ranks)) if ranks else 0
    sva = np.full((len(mats), K), np.nan)
    for l, (name, _, kind) in enumerate(mats):
        Wa = matrix_view(state_a[name].to(device), kind)
        Wb = matrix_view(state_b[name].to(device), kind)
        sva[l] = M.agreement_with(Wa, Wb, K).cpu().numpy()

    coords = {"alpha": alphas, "rank": np.arange(K)}
    coords.update({
        "layer": ("layer", [n for n, _, _ in mats]),
        "layer_kind": ("layer", [kind for _, _, kind in mats]),
        "rows": ("layer", np.array([matrix_view(p, kind).shape[0] for _, p, kind in mats], dtype=np.int64)),
        "cols": ("layer", np.array([matrix_view(p, kind).shape[1] for _, p, kind in mats], dtype=np.int64)),
    })
    out = xr.Dataset(
        {
            "lmc_loss": ("alpha", loss, {"long_name": "loss on the linear path between the endpoints"}),
            "lmc_acc": ("alpha", acc, {"long_name": "accuracy on the linear path between the endpoints"}),
            "barrier": ((), barrier(alphas, loss), {"long_name": "max over interior alpha of L(alpha) - chord (Yunis et al. 2024 Eqn 6)"}),
            "endpoint_sva": (("layer", "rank"), sva, {"long_name": "singular vector agreement of the endpoints (Yunis et al. 2024 Eqn 5)"}),
        },
        coords=coords,
    )
    out["endpoint_sva_score"] = score(out["endpoint_sva"])
    out.attrs["endpoints"] = json.dumps({"a": label_a, "b": label_b})
    out.attrs["options"] = json.dumps({"n_alphas": int(n_alphas), "k": int(k), "svd_dtype": "float64"})
    return out


def perturb(state: Mapping, eta: float, *, seed: int = 0) -> dict[str, torch.Tensor]:
    """A new state with every matrix perturbed: W <- W + eta ||W|| eps / ||eps||, eps ~ N(0, I),
    then rescaled to keep ||W|| (Frobenius) (docs/methods.md#linear-mode-connectivity; Yunis et al. 2024 App. A.9).

    Matrices are the floating, non-buffer entries with ndim >= 2; eps is drawn in float64 on the
    CPU, matrix after matrix in state order, from ``torch.Generator().manual_seed(seed)``; tied
    entries (one storage) get one perturbation. Other entries are copied; ``state`` is unchanged.
    """
    if eta < 0:
        raise SedvizError(f"eta={eta!r}: the relative perturbation size must be >= 0")
    gen = torch.Generator().manual_seed(int(seed))
    out: dict[str, torch.Tensor] = {}
    done: dict[tuple, torch.Tensor] = {}
    for name, W in state.items():
        if W.ndim < 2 or is_buffer(name, W):
            out[name] = W.clone()
            continue
        key = (W.data_ptr(), tuple(W.shape), tuple(W.stride()), W.dtype)
        if key in done:
            out[name] = done[key]
            continue
        W64 = W.detach().to(device="cpu", dtype=torch.float64)
        norm = torch.linalg.vector_norm(W64)
        eps = torch.randn(W.shape, generator=gen, dtype=torch.float64)
        if norm > 0:
            P = W64 + eta * norm * eps / torch.linalg.vector_norm(eps)
            P = P * (norm / torch.linalg.vector_norm(P))
        else:
            P = W64
        out[name] = done[key] = P.to(dtype=W.dtype, device=W.device)
    return out
