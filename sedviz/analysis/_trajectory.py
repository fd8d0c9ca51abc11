"""Shared helpers for the trajectory analyses (docs/methods.md, from #spectral-edge to #drift): choosing a group of parameters,
per-run Gram matrices of the updates from ``delta_dot`` or ``sketch``, window Grams and spectra.

Everything here works on one run at a time, on the checkpoints that run actually has (runs may
have different step grids inside the union ``step`` coordinate, see docs/schema.md).

Notation (docs/methods.md#spectral-edge): a run has checkpoints theta_0 .. theta_n at steps t_0 < ... < t_n and updates
d_j = theta_j - theta_{j-1}, j = 1..n, labelled with the step t_j of their later checkpoint.
The *band* of a group of parameters is the n x (L+1) array ``band[j, l] = <d_j, d_{j-l}>`` (inner
products add over the parameters of the group); NaN where j - l falls before the first update.
"""
from __future__ import annotations

import json
import warnings
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import xarray as xr

from sedviz.errors import SedvizError

SOURCES = ("delta_dot", "sketch")
GAP_FLOOR = 1e-15  # docs/methods.md#spectral-edge: denominator floor of the gap ratios


# ---------------------------------------------------------------------------------------------
# input checks


def check_dataset(ds, fn: str) -> xr.Dataset:
    """The Dataset, sorted by step; a clear error when it is not one or holds no trajectory data."""
    if not isinstance(ds, xr.Dataset):
        raise SedvizError(
            f"{fn}(ds=...): expected the sedviz xarray.Dataset (e.g. from sedviz.compute or "
            f"xarray.open_zarr), got {type(ds).__name__}."
        )
    if not any(name in ds.data_vars for name in SOURCES):
        raise SedvizError(
            f"{fn}: the Dataset has neither `delta_dot` nor `sketch`, so update Grams cannot be "
            f"formed. Recompute it with the trajectory options on (sedviz compute with max_lag > 0 "
            f"or sketch_dim > 0)."
        )
    for dim in ("run", "step", "param"):
        if dim not in ds.dims:
            raise SedvizError(f"{fn}: the Dataset has no `{dim}` dimension; see docs/schema.md.")
    if ds.sizes["step"] > 1 and not bool(np.all(np.diff(ds["step"].values) > 0)):
        ds = ds.sortby("step")
    return ds


def check_window(value, name: str, fn: str, minimum: int = 2) -> int:
    """An integer option >= minimum, else a SedvizError naming the option."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) < minimum:
        raise SedvizError(f"{fn}({name}={value!r}): expected an integer >= {minimum}.")
    return int(value)


def check_windows(windows, fn: str) -> list[int]:
    """Window sizes as a sorted list of distinct ints >= 2 (a single int is accepted)."""
    if isinstance(windows, (int, np.integer)) and not isinstance(windows, bool):
        windows = [windows]
    try:
        ws = [check_window(w, "windows", fn) for w in windows]
    except TypeError:
        raise SedvizError(
            f"{fn}(windows={windows!r}): expected an int or a list of ints >= 2, e.g. (10, 20)."
        ) from None
    if not ws:
        raise SedvizError(f"{fn}(windows=()): give at least one window size, e.g. (10, 20).")
    return sorted(set(ws))


def check_exact(exact, fn: str):
    if exact not in (None, True, False):
        raise SedvizError(
            f"{fn}(exact={exact!r}): expected None (delta_dot where it reaches, else sketch), "
            f"True (delta_dot only) or False (sketch only)."
        )
    return exact


def max_lag(ds) -> int:
    """Largest lag held by ``delta_dot`` (-1 when the Dataset has none)."""
    if "delta_dot" not in ds.data_vars:
        return -1
    return int(np.max(ds["lag"].values)) if "lag" in ds.coords else ds.sizes["lag"] - 1


def resolve_source(ds, exact, need_lag: int, fn: str, what: str) -> str:
    """``"delta_dot"`` or ``"sketch"`` for an analysis that needs lags up to ``need_lag``.

    exact=None picks delta_dot when it reaches ``need_lag`` and falls back to the sketch;
    exact=True insists on delta_dot, exact=False on the sketch. ``what`` says which analysis
    asks (for the message).
    """
    L = max_lag(ds)
    has_sketch = "sketch" in ds.data_vars
    if exact is True or (exact is None and not has_sketch):
        if L < 0:
            raise SedvizError(
                f"{fn}(exact={exact}): {what} needs `delta_dot`, which this Dataset lacks. "
                f"Recompute with max_lag >= {need_lag}, or pass exact=False to use `sketch`."
            )
        if L < need_lag:
            alt = "" if has_sketch else " (it has no `sketch` to fall back on either)"
            raise SedvizError(
                f"{fn}(exact={exact}): {what} needs `delta_dot` up to lag {need_lag}, but this "
                f"Dataset holds lags 0..{L}{alt}. Recompute with max_lag >= {need_lag}"
                + (", or pass exact=False to use `sketch`." if has_sketch else ", or ask for smaller windows.")
            )
        return "delta_dot"
    if exact is False:
        if not has_sketch:
            raise SedvizError(
                f"{fn}(exact=False): {what} needs `sketch`, which this Dataset lacks. Recompute "
                f"with sketch_dim > 0, or pass exact=None to use `delta_dot`."
            )
        return "sketch"
    return "delta_dot" if L >= need_lag else "sketch"


# ---------------------------------------------------------------------------------------------
# parameter groups


def _kind_matches(kind: str, wanted: str) -> bool:
    return kind == wanted or kind.startswith(wanted + "_")


#: Default of the deprecated ``layers=`` keyword of the trajectory analyses: "not given".
UNSET = object()


def params_keyword(params, layers, fn: str, default=None):
    """The parameter group from ``params=`` or the deprecated ``layers=`` (one release, with a warning).

    Analyses select parameter groups with ``params=``; ``layers=`` once meant the same and is still
    accepted with a DeprecationWarning. Giving both is an error.
    """
    if layers is UNSET:
        return default if params is UNSET else params
    if params is not UNSET:
        raise SedvizError(f"{fn}(params=..., layers=...): give the parameter group once, as params=.")
    warnings.warn(
        f"{fn}(layers=...) is deprecated and will be removed in the next release; use params= "
        f"(the same values: None, a parameter name or kind, a list of them, or a callable).",
        DeprecationWarning,
        stacklevel=3,
    )
    return layers


def select_params(ds, spec, fn: str, name: str = "layers") -> list[str]:
    """Names of the parameters of the group chosen by ``spec`` (docs/methods.md#spectral-edge: whole model by default).

    ``name`` is the keyword the caller took ``spec`` from (for the message).

    - None or "all" (unless a parameter is named "all"): every parameter.
    - a str: a parameter name, else a ``param_kind`` or a kind prefix ("attn" -> attn_qkv,
      attn_out, ...; "mlp" -> mlp_in, mlp_out).
    - a list of such strings: the union.
    - a callable ``name -> bool``.
    """
    names = [str(p) for p in ds["param"].values]
    kinds = [str(k) for k in ds["param_kind"].values] if "param_kind" in ds.coords else None
    if spec is None or (isinstance(spec, str) and spec == "all" and "all" not in names):
        return names
    if callable(spec):
        chosen = [p for p in names if bool(spec(p))]
        if not chosen:
            raise SedvizError(f"{fn}({name}=<callable>): it selected no parameter; the Dataset has {_some(names)}.")
        return chosen
    wanted = [spec] if isinstance(spec, str) else list(spec) if isinstance(spec, Iterable) else None
    if wanted is None or not all(isinstance(w, str) for w in wanted) or not wanted:
        raise SedvizError(
            f"{fn}({name}={spec!r}): expected None, a parameter name or kind (e.g. 'attn'), a "
            f"list of them, or a callable name -> bool."
        )
    chosen = set()
    for w in wanted:
        if w in names:
            chosen.add(w)
            continue
        if kinds is None:
            raise SedvizError(
                f"{fn}({name}={w!r}): no parameter has that name and the Dataset has no "
                f"`param_kind` coordinate to match kinds against; parameters: {_some(names)}."
            )
        hit = [p for p, k in zip(names, kinds) if _kind_matches(k, w)]
        if not hit:
            raise SedvizError(
                f"{fn}({name}={w!r}): matches no parameter name or kind. Kinds present: "
                f"{sorted(set(kinds))}; parameters: {_some(names)}."
            )
        chosen.update(hit)
    return [p for p in names if p in chosen]


def _some(names, n: int = 6) -> str:
    return ", ".join(names[:n]) + (f", ... ({len(names)} in all)" if len(names) > n else "")


# ---------------------------------------------------------------------------------------------
# per-run Grams of the updates


@dataclass
class RunUpdates:
    """The updates of one run for one group of parameters, seen through one source."""

    run: str
    source: str
    steps: np.ndarray  # (n,) int64: step of the later checkpoint of each update d_1..d_n
    band: np.ndarray | None = None  # (n, L+1) float64 <d_j, d_{j-l}>, NaN before the first update
    diffs: np.ndarray | None = None  # (n, P*d) float64 sketch differences (sketch source only)
    dim: int = 0  # d, the sketch dimension of each parameter (sketch source only)

    @property
    def n(self) -> int:
        return len(self.steps)

    def band_to(self, lag: int) -> np.ndarray:
        """The band up to ``lag`` (computed from the sketch differences when needed)."""
        if self.diffs is None:
            return self.band[:, : lag + 1]
        return _band(self.diffs, lag)

    def group_bands(self, lag: int, groups: int) -> list[np.ndarray]:
        """Bands of the sketch restricted to ``groups`` disjoint groups of its coordinates.

        The d coordinates of every parameter's sketch are split into ``groups`` contiguous
        blocks (``np.array_split``); group g holds block g of every parameter. The bands of the
        groups add up to :meth:`band_to`. Used by the grouped jackknife of :func:`sedviz.analysis.edge.edge`.
        """
        n = self.diffs.shape[0]
        X = self.diffs.reshape(n, -1, self.dim)
        return [_band(X[:, :, idx].reshape(n, -1), lag) for idx in np.array_split(np.arange(self.dim), groups)]

    def full_gram(self) -> np.ndarray:
        """The n x n Gram M[i, j] = <d_i, d_j> of all updates (needs every lag, or the sketch)."""
        if self.diffs is not None:
            return self.diffs @ self.diffs.T
        n = self.n
        if self.band.shape[1] < n:
            raise ValueError("band does not reach lag n-1")
        i, j = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
        M = self.band[np.maximum(i, j), np.abs(i - j)]
        return M


def _band(X: np.ndarray, lag: int) -> np.ndarray:
    """band[j, l] = <X_j, X_(j-l)> for l = 0..lag, NaN before the first row."""
    n = X.shape[0]
    out = np.full((n, lag + 1), np.nan)
    for l in range(min(lag, n - 1) + 1):
        out[l:, l] = np.einsum("ij,ij->i", X[l:], X[: n - l])
    return out


def run_updates(ds, run, params: list[str], source: str, lag: int | None = None) -> RunUpdates:
    """Updates of ``run`` over ``params`` from ``source`` ("delta_dot" or "sketch").

    Parameters absent from the run (all NaN) are left out for that run. The run's update steps
    are those where every remaining parameter has a finite ``delta_dot`` at lag 0 (delta_dot), or
    the steps after the run's first checkpoint where the sketch is finite (sketch).
    ``lag`` bounds the lags read from delta_dot (default: all).
    """
    if source == "delta_dot":
        da = ds["delta_dot"].sel(run=run, param=params).transpose("step", "param", "lag")
        if lag is not None:
            da = da.isel(lag=slice(0, lag + 1))
        v = np.asarray(da.values, dtype=np.float64)
        present = np.isfinite(v[:, :, 0]).any(axis=0)
        v = v[:, present, :]
        ok = np.isfinite(v[:, :, 0]).all(axis=1) & (v.shape[1] > 0)
        steps = ds["step"].values[ok].astype(np.int64)
        band = v[ok].sum(axis=1)  # NaN (lags before the first update) stays NaN
        return RunUpdates(str(run), source, steps, band=band)
    da = ds["sketch"].sel(run=run, param=params).transpose("step", "param", "proj")
    v = np.asarray(da.values, dtype=np.float64)
    present = np.isfinite(v).any(axis=(0, 2))
    v = v[:, present, :]
    ok = np.isfinite(v).all(axis=(1, 2)) & (v.shape[1] > 0)
    ckpt = v[ok].reshape(int(ok.sum()), -1)
    steps = ds["step"].values[ok].astype(np.int64)
    diffs = np.diff(ckpt, axis=0)  # linear map: sketch(d_j) = sketch_j - sketch_{j-1}
    return RunUpdates(str(run), source, steps[1:], diffs=diffs, dim=int(v.shape[2]))


# ---------------------------------------------------------------------------------------------
# windows


def window_grams(band: np.ndarray, W: int) -> np.ndarray:
    """Grams of all windows of W consecutive updates, shape (n - W + 1, W, W).

    Window ending at update j: X = [d_{j-W+1}; ...; d_j] and G[a, b] = <d_{j-W+1+a}, d_{j-W+1+b}>
    = band[j - W + 1 + max(a, b), |a - b|] (docs/methods.md#spectral-edge).
    """
    n = band.shape[0]
    nw = n - W + 1
    if nw <= 0:
        return np.empty((0, W, W))
    a = np.arange(W)
    hi = np.maximum.outer(a, a)
    lg = np.abs(a[:, None] - a[None, :])
    return band[np.arange(nw)[:, None, None] + hi[None], lg[None]]


def gram_eigvals(G: np.ndarray) -> np.ndarray:
    """Eigenvalues of symmetric Grams (..., W, W), descending, negatives clamped to 0 (docs/methods.md#spectral-edge).

    Grams holding a NaN give NaN eigenvalues.
    """
    G = np.asarray(G, dtype=np.float64)
    out = np.full(G.shape[:-1], np.nan)
    ok = np.isfinite(G).all(axis=(-2, -1))
    if ok.any():
        Gs = G[ok]
        lam = np.linalg.eigvalsh(0.5 * (Gs + np.swapaxes(Gs, -1, -2)))[..., ::-1]
        out[ok] = np.clip(lam, 0.0, None)
    return out


def gap_ratios(s: np.ndarray) -> np.ndarray:
    """r_k = s_k / max(s_{k+1}, 1e-15), k = 1..W-1 along the last axis (docs/methods.md#spectral-edge)."""
    return s[..., :-1] / np.maximum(s[..., 1:], GAP_FLOOR)


def options_attr(**kw) -> str:
    """JSON of the options that changed the numbers (repr for what JSON cannot hold)."""
    def enc(v):
        if v is None or isinstance(v, (bool, int, float, str)):
            return v
        if isinstance(v, (list, tuple, range)):
            return [enc(x) for x in v]
        if isinstance(v, np.generic):
            return v.item()
        return repr(v)

    return json.dumps({k: enc(v) for k, v in kw.items()})


def step_positions(all_steps: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """Positions of ``steps`` in the union step coordinate."""
    return np.searchsorted(all_steps, steps)
