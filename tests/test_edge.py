"""Tests of sedviz.analysis.edge (docs/methods.md#spectral-edge): window spectra against numpy float64 SVDs of the
explicitly stacked updates, signal rank on a constructed rank-2 trajectory, the sketch path,
phases on a constructed series.

``make_dataset`` builds a sedviz Dataset (delta_dot, sketch, metrics) from synthetic
trajectories exactly as docs/schema.md defines them; the other trajectory test files import it.
"""
from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from sedviz.analysis.edge import PHASE_CODES, edge, phases
from sedviz.errors import SedvizError


# ---------------------------------------------------------------------------------------------
# synthetic Datasets


def make_dataset(runs, steps=None, *, max_lag=None, sketch_dim=None, sketch="gaussian", seed=0,
                 kinds=None, metrics=None):
    """A sedviz Dataset from synthetic trajectories.

    runs: {run: [ {param: array}, ... ]} one dict per saved checkpoint, in order.
    steps: {run: [step, ...]} (default 0, 1, 2, ...). max_lag: lags of delta_dot (None: no
    delta_dot). sketch_dim: d of the per-parameter map (None: no sketch); ``sketch`` is
    "gaussian" (N(0, 1/d) entries) or "sparse" (Achlioptas: +-sqrt(3/d) w.p. 1/6 each, 0 else).
    kinds: {param: kind}. metrics: {run: {name: values per checkpoint}}.
    """
    rng = np.random.default_rng(seed)
    run_names = list(runs)
    steps = steps or {r: list(range(len(runs[r]))) for r in run_names}
    all_steps = np.array(sorted(set().union(*[set(steps[r]) for r in run_names])), dtype=np.int64)
    params = sorted(set().union(*[set(ck) for r in run_names for ck in runs[r]]))
    sizes = {}
    for r in run_names:
        for ck in runs[r]:
            for p, v in ck.items():
                sizes[p] = np.asarray(v).size
    nR, nS, nP = len(run_names), len(all_steps), len(params)
    data = {}
    coords = {"run": run_names, "step": all_steps, "param": params,
              "param_size": ("param", np.array([sizes[p] for p in params], dtype=np.int64)),
              "param_kind": ("param", np.array([(kinds or {}).get(p, "linear") for p in params], dtype=object))}
    if max_lag is not None:
        dd = np.full((nR, nS, nP, max_lag + 1), np.nan)
        for ir, r in enumerate(run_names):
            pos = np.searchsorted(all_steps, steps[r])
            for ip, p in enumerate(params):
                th = np.array([np.asarray(ck[p], dtype=np.float64).ravel() for ck in runs[r]])
                d = np.diff(th, axis=0)  # d[i-1] = theta_i - theta_{i-1}
                for i in range(1, len(th)):
                    for lag in range(max_lag + 1):
                        if i - lag >= 1:
                            dd[ir, pos[i], ip, lag] = d[i - 1] @ d[i - 1 - lag]
        data["delta_dot"] = (("run", "step", "param", "lag"), dd)
        coords["lag"] = np.arange(max_lag + 1)
    if sketch_dim is not None:
        maps = {}
        for p in params:
            if sketch == "gaussian":
                maps[p] = rng.normal(0.0, 1.0 / np.sqrt(sketch_dim), size=(sketch_dim, sizes[p]))
            else:
                u = rng.random((sketch_dim, sizes[p]))
                maps[p] = np.sqrt(3.0 / sketch_dim) * ((u < 1 / 6).astype(float) - (u > 5 / 6).astype(float))
        sk = np.full((nR, nS, nP, sketch_dim), np.nan)
        for ir, r in enumerate(run_names):
            pos = np.searchsorted(all_steps, steps[r])
            for i, ck in enumerate(runs[r]):
                for ip, p in enumerate(params):
                    sk[ir, pos[i], ip] = maps[p] @ np.asarray(ck[p], dtype=np.float64).ravel()
        data["sketch"] = (("run", "step", "param", "proj"), sk)
        coords["proj"] = np.arange(sketch_dim)
    for r, mets in (metrics or {}).items():
        ir = run_names.index(r)
        pos = np.searchsorted(all_steps, steps[r])
        for name, vals in mets.items():
            if name not in data:
                data[name] = (("run", "step"), np.full((nR, nS), np.nan))
            data[name][1][ir, pos] = vals
    return xr.Dataset(data, coords=coords)


def split_rows(theta, shapes):
    """Rows of a (checkpoints, P) parameter matrix as checkpoint dicts of named arrays."""
    out = []
    for row in theta:
        ck, o = {}, 0
        for name, s in shapes.items():
            k = int(np.prod(s))
            ck[name] = row[o : o + k].reshape(s)
            o += k
        out.append(ck)
    return out


def random_walk(n_ckpt, shapes, *, scale=1.0, seed=0, basis=None, coef=None, noise=0.0):
    """Checkpoints theta_0..theta_{n-1}; updates = coef @ basis + noise (or Gaussian when no basis)."""
    rng = np.random.default_rng(seed)
    P = sum(int(np.prod(s)) for s in shapes.values())
    if basis is None:
        upd = scale * rng.normal(size=(n_ckpt - 1, P))
    else:
        upd = coef @ basis + noise * rng.normal(size=(n_ckpt - 1, P))
    theta = np.vstack([rng.normal(size=P), upd]).cumsum(axis=0)
    return split_rows(theta, shapes), upd


def stacked_updates(ckpts, names=None):
    names = names or sorted(ckpts[0])
    th = np.array([np.concatenate([np.asarray(c[p], dtype=np.float64).ravel() for p in names]) for c in ckpts])
    return np.diff(th, axis=0)


SHAPES = {"blocks.0.attn.qkv.weight": (6, 4), "blocks.0.mlp.fc1.weight": (8, 4), "blocks.0.mlp.fc1.bias": (8,)}
KINDS = {"blocks.0.attn.qkv.weight": "attn_qkv", "blocks.0.mlp.fc1.weight": "mlp_in", "blocks.0.mlp.fc1.bias": "bias"}


# ---------------------------------------------------------------------------------------------
# exact windows


@pytest.fixture(scope="module")
def two_runs():
    a, ua = random_walk(16, SHAPES, seed=1)
    b, ub = random_walk(12, SHAPES, seed=2, scale=0.5)
    steps = {"a": [10 * i for i in range(16)], "b": [15 * i for i in range(12)]}  # different grids
    ds = make_dataset({"a": a, "b": b}, steps, max_lag=6, kinds=KINDS)
    return ds, {"a": (a, steps["a"]), "b": (b, steps["b"])}


def test_exact_windows_match_numpy_svd(two_runs):
    ds, raw = two_runs
    out = edge(ds, windows=(4, 7), exact=True)
    for run, (ck, st) in raw.items():
        U = stacked_updates(ck)
        for W in (4, 7):
            for j in range(W - 1, len(U)):
                s = np.linalg.svd(U[j - W + 1 : j + 1], compute_uv=False)
                got = out["edge_sv"].sel(run=run, window=W, step=st[j + 1]).values
                np.testing.assert_allclose(got[:W], s, rtol=1e-6)
                assert np.all(np.isnan(got[W:]))
                r = s[:-1] / s[1:]
                np.testing.assert_allclose(out["gap_ratio"].sel(run=run, window=W, step=st[j + 1]).values[: W - 1], r, rtol=1e-6)
                assert out["k_star"].sel(run=run, window=W, step=st[j + 1]).item() == 1 + np.argmax(r)
                lam = s**2
                assert out["update_pc1_share"].sel(run=run, window=W, step=st[j + 1]).item() == pytest.approx(lam[0] / lam.sum(), rel=1e-6)
                k95 = 1 + np.argmax(np.cumsum(lam) / lam.sum() >= 0.95)
                assert out["k95"].sel(run=run, window=W, step=st[j + 1]).item() == k95
                speed = np.linalg.norm(U[j - W + 1 : j + 1].sum(axis=0)) / W
                assert out["drift_speed"].sel(run=run, window=W, step=st[j + 1]).item() == pytest.approx(speed, rel=1e-6)
            # no window before W updates, nor at steps the run does not have
            first = st[W]
            sel = out["edge"].sel(run=run, window=W)
            assert np.all(np.isnan(sel.sel(step=sel.step < first).values))
            other = np.setdiff1d(ds.step.values, st)
            assert np.all(np.isnan(sel.sel(step=other).values))


def test_layer_group_is_sum_over_params(two_runs):
    ds, raw = two_runs
    ck, st = raw["a"]
    names = ["blocks.0.attn.qkv.weight"]
    out = edge(ds, windows=5, params="attn", exact=True)
    U = stacked_updates(ck, names)
    s = np.linalg.svd(U[3:8], compute_uv=False)
    np.testing.assert_allclose(out["edge_sv"].sel(run="a", window=5, step=st[8]).values, s, rtol=1e-6)
    out2 = edge(ds, windows=5, params=["mlp", "bias"], exact=True)
    U2 = stacked_updates(ck, ["blocks.0.mlp.fc1.bias", "blocks.0.mlp.fc1.weight"])
    np.testing.assert_allclose(out2["edge_sv"].sel(run="a", window=5, step=st[8]).values,
                               np.linalg.svd(U2[3:8], compute_uv=False), rtol=1e-6)
    out3 = edge(ds, windows=5, params=lambda n: n.endswith("qkv.weight"), exact=True)
    np.testing.assert_allclose(out3["edge_sv"].values, out["edge_sv"].values, rtol=1e-12, equal_nan=True)


def test_rank2_signal_gives_kstar_2():
    rng = np.random.default_rng(5)
    P = 60
    basis = np.linalg.qr(rng.normal(size=(P, 2)))[0].T  # 2 orthonormal directions
    n = 30
    coef = np.column_stack([3.0 + 0.3 * rng.normal(size=n - 1), 2.0 * np.sin(np.arange(n - 1))])
    ck, U = random_walk(n, {"w": (6, 10)}, basis=basis, coef=coef, noise=0.02, seed=6)
    ds = make_dataset({"r": ck}, max_lag=9)
    out = edge(ds, windows=10, exact=True)
    ks = out["k_star"].sel(run="r", window=10).values
    ks = ks[np.isfinite(ks)]
    assert len(ks) == n - 1 - 10 + 1
    assert np.all(ks == 2)
    assert out["k_star_mode"].sel(run="r", window=10).item() == 2
    # the edge series is s2/s3 of each window
    e = out["edge"].sel(run="r", window=10).values
    j = 15
    s = np.linalg.svd(U[j - 9 : j + 1], compute_uv=False)
    assert e[j + 1] == pytest.approx(s[1] / s[2], rel=1e-6)


def test_sketch_agrees_with_exact():
    W = 10
    rng = np.random.default_rng(3)
    shapes = {"a.weight": (40, 30), "b.weight": (30, 30)}
    P = 2100
    basis = np.linalg.qr(rng.normal(size=(P, 3)))[0].T
    n = 26
    coef = np.column_stack([4 + rng.normal(size=n - 1), 2 * rng.normal(size=n - 1), rng.normal(size=n - 1)])
    ck, U = random_walk(n, shapes, basis=basis, coef=coef, noise=0.01, seed=4)
    for kind in ("gaussian", "sparse"):
        # d = 10 W per parameter map (the group's sketch is their concatenation)
        ds = make_dataset({"r": ck}, max_lag=W - 1, sketch_dim=10 * W, sketch=kind, seed=11)
        sk = edge(ds, windows=W, exact=False)
        ex = edge(ds, windows=W, exact=True)
        assert list(sk["edge_source"].values) == ["sketch"] and list(ex["edge_source"].values) == ["delta_dot"]
        rs = sk["gap_ratio"].sel(run="r", window=W).values[:, :3]
        re_ = ex["gap_ratio"].sel(run="r", window=W).values[:, :3]
        m = np.isfinite(re_[:, 0])
        rel = np.abs(rs[m] - re_[m]) / re_[m]
        assert rel.mean() < 0.10
        # sketch_error is that same mean, computed by edge() itself
        np.testing.assert_allclose(sk["sketch_error"].sel(run="r", window=W).values[:3], rel.mean(axis=0), rtol=1e-9)
        np.testing.assert_allclose(ex["sketch_error"].values, sk["sketch_error"].values, rtol=1e-12, equal_nan=True)


def _np_jackknife_rel_se(sketch_ckpts, W, groups):
    """Grouped jackknife of the gap ratios, from the sketches of the checkpoints (n+1, P, d), by loops."""
    D = np.diff(sketch_ckpts, axis=0)  # sketch of each update
    blocks = np.array_split(np.arange(D.shape[2]), groups)
    out = []
    for j in range(W - 1, D.shape[0]):
        X = D[j - W + 1 : j + 1].reshape(W, -1)
        s = np.linalg.svd(X, compute_uv=False)
        r = s[:-1] / s[1:]
        rj = []
        for idx in blocks:
            keep = np.setdiff1d(np.arange(D.shape[2]), idx)
            sj = np.linalg.svd(D[j - W + 1 : j + 1][:, :, keep].reshape(W, -1), compute_uv=False)
            rj.append(sj[:-1] / sj[1:])
        rj = np.array(rj)
        out.append(np.sqrt((groups - 1) / groups * ((rj - rj.mean(0)) ** 2).sum(0)) / r)
    return np.array(out)


def test_sketch_error_estimate_is_the_grouped_jackknife_and_tracks_the_error():
    W = 6
    rng = np.random.default_rng(7)
    shapes = {"a.weight": (20, 15), "b.weight": (15, 15)}
    basis = np.linalg.qr(rng.normal(size=(525, 2)))[0].T
    n = 40
    coef = np.column_stack([3 + rng.normal(size=n - 1), rng.normal(size=n - 1)])
    ck, _ = random_walk(n, shapes, basis=basis, coef=coef, noise=0.05, seed=2)
    ds = make_dataset({"r": ck}, max_lag=W - 1, sketch_dim=60, seed=5)
    sk = edge(ds, windows=W, exact=False, jackknife_groups=6)
    got = sk["gap_ratio_rel_se"].sel(run="r", window=W).values
    ref = _np_jackknife_rel_se(ds["sketch"].sel(run="r").transpose("step", "param", "proj").values, W, 6)
    np.testing.assert_allclose(got[W:, : W - 1], ref, rtol=1e-6)
    k = int(sk["k_star_mode"].sel(run="r", window=W))
    np.testing.assert_allclose(sk["edge_rel_se"].sel(run="r", window=W).values[W:], ref[:, k - 1], rtol=1e-6)
    # the estimate is of the size of the measured error: 2 standard errors cover most windows
    err = sk["sketch_gap_error"].sel(run="r", window=W).values[W:, : W - 1]
    assert np.isfinite(err).all() and (err <= 2 * got[W:, : W - 1]).mean() > 0.8
    # exact windows carry no estimate; jackknife_groups=0 skips it
    assert "gap_ratio_rel_se" not in edge(ds, windows=W, exact=True)
    assert "gap_ratio_rel_se" not in edge(ds, windows=W, exact=False, jackknife_groups=0)
    with pytest.raises(SedvizError, match="jackknife_groups"):
        edge(ds, windows=W, exact=False, jackknife_groups=1)


def test_sketch_gram_is_exact_for_identity_map():
    # a map that is an isometry on the span makes the sketch path exact: checks differences/concat
    ck, U = random_walk(9, {"x": (3,), "y": (2,)}, seed=8)
    ds = make_dataset({"r": ck}, max_lag=8)
    th = {p: np.array([c[p] for c in ck]) for p in ("x", "y")}
    sk = np.full((1, 9, 2, 3), np.nan)
    sk[0, :, 0, :] = th["x"]
    sk[0, :, 1, :2] = th["y"]
    sk[0, :, 1, 2] = 0.0
    ds["sketch"] = (("run", "step", "param", "proj"), sk)
    a = edge(ds, windows=(3, 5), exact=False)
    b = edge(ds, windows=(3, 5), exact=True)
    np.testing.assert_allclose(a["edge_sv"].values, b["edge_sv"].values, rtol=1e-9, equal_nan=True)
    assert np.nanmax(b["sketch_error"].values) < 1e-9
    c = edge(ds, windows=(3, 9))  # lag 8 present: exact for both
    assert list(c["edge_source"].values) == ["delta_dot", "delta_dot"]


def test_auto_source_falls_back_to_sketch_and_errors():
    ck, _ = random_walk(12, {"w": (5, 5)}, seed=9)
    ds = make_dataset({"r": ck}, max_lag=4, sketch_dim=50)
    out = edge(ds, windows=(5, 8))
    assert list(out["edge_source"].values) == ["delta_dot", "sketch"]
    with pytest.raises(SedvizError, match="lag 7"):
        edge(ds, windows=(5, 8), exact=True)
    with pytest.raises(SedvizError, match="windows"):
        edge(ds, windows=1)
    with pytest.raises(SedvizError, match="params"):
        edge(ds, params="nope")
    with pytest.raises(SedvizError, match="exact"):
        edge(ds, exact="yes")
    with pytest.raises(SedvizError, match="xarray.Dataset"):
        edge(ds["delta_dot"])
    no_sketch = ds.drop_vars("sketch")
    with pytest.raises(SedvizError, match="sketch"):
        edge(no_sketch, windows=8)


def test_weighted_kstar_and_fixed_k():
    # a small last singular value: plain argmax picks k = W - 1, the weighted variant k = 1
    rng = np.random.default_rng(0)
    W = 4
    U = np.zeros((W, 20))
    B = np.linalg.qr(rng.normal(size=(20, 4)))[0].T
    svals = [10.0, 5.0, 4.0, 1.0]
    U = np.array(svals)[:, None] * B  # orthogonal rows with known norms
    theta = np.vstack([np.zeros(20), U]).cumsum(axis=0)
    ds = make_dataset({"r": [{"w": t} for t in theta]}, max_lag=3)
    out = edge(ds, windows=W, exact=True)
    assert out["k_star"].sel(run="r", window=W).values[-1] == 3
    s = np.array(svals)
    expect_w = 1 + np.argmax(s[:-1] / s.sum() * s[:-1] / s[1:])
    assert out["k_star_weighted"].sel(run="r", window=W).values[-1] == expect_w
    fixed = edge(ds, windows=W, exact=True, k_star=1)
    assert fixed["edge"].sel(run="r", window=W).values[-1] == pytest.approx(2.0, rel=1e-6)


# ---------------------------------------------------------------------------------------------
# phases


def _series(values, steps):
    return xr.DataArray(np.asarray(values, float), dims=("step",), coords={"step": steps})


def test_phases_on_constructed_series():
    steps = np.arange(0, 200, 10)
    v = [1.0, 1.5, 2.0, 3.0, 4.5, 5.0, 4.8, 4.9, 4.4, 5.2, 4.6, 3.0, 2.0, 1.5, 1.25, 1.1, 1.3, 1.0, 1.0, 1.0]
    ph = phases(_series(v, steps))
    # peak 5.2 at step 90; 0.85 * 5.2 = 4.42 -> plateau 4.5 (40) .. 4.6 (100)
    # (4.4 at step 80 is below 4.42, so the plateau around the peak starts at step 90)
    assert ph["peak_step"].item() == 90
    assert ph["plateau_start"].item() == 90 and ph["plateau_end"].item() == 100
    assert ph["collapse_step"].item() == 150  # first value < 1.20 after the peak
    code = ph["phase"].values
    assert list(code[:9]) == [0] * 9 and list(code[9:11]) == [1, 1] and list(code[11:]) == [2] * 9
    v2 = [1.0, 2.0, 4.6, 5.0, 4.5, 4.3, 3.0, 1.1]
    ph2 = phases(_series(v2, np.arange(8)))
    assert (ph2["plateau_start"].item(), ph2["peak_step"].item(), ph2["plateau_end"].item()) == (2, 3, 5)
    assert ph2["collapse_step"].item() == 7


def test_phases_never_collapses_and_nan_gaps():
    v = [np.nan, 1.0, 2.0, np.nan, 3.0, 2.9, 2.8]
    ph = phases(_series(v, np.arange(7)), threshold=1.2)
    assert np.isnan(ph["collapse_step"].item())
    assert ph["peak_step"].item() == 4 and ph["plateau_start"].item() == 4 and ph["plateau_end"].item() == 6
    assert list(ph["phase"].values) == [PHASE_CODES["none"], 0, 0, -1, 1, 1, 1]


def test_phases_on_edge_dataset(two_runs):
    ds, _ = two_runs
    out = edge(ds, windows=(4, 5), exact=True)
    ph = phases(out)
    assert ph["peak_step"].dims == ("run", "window")
    for run in ("a", "b"):
        for W in (4, 5):
            series = out["edge"].sel(run=run, window=W).dropna("step")
            assert ph["peak_step"].sel(run=run, window=W).item() == series.step.values[int(np.argmax(series.values))]
    with pytest.raises(SedvizError, match="plateau_frac"):
        phases(out, plateau_frac=1.5)


def test_layers_keyword_is_deprecated_for_params(two_runs):
    """params= selects the group; the old layers= gives the same numbers with a DeprecationWarning."""
    from sedviz.analysis import drift, lag_flip

    ds, _ = two_runs
    new = edge(ds, windows=5, params="attn", exact=True)
    assert new["edge_sv"].dims == ("run", "window", "step", "edge_k") and int(new["edge_k"][0]) == 1
    with pytest.warns(DeprecationWarning, match="params="):
        old = edge(ds, windows=5, layers="attn", exact=True)
    np.testing.assert_array_equal(old["edge_sv"].values, new["edge_sv"].values)
    with pytest.warns(DeprecationWarning, match="params="), pytest.raises(SedvizError, match="lag 14"):
        drift(ds, layers="attn")  # warns first; this Dataset's delta_dot is too short for drift
    loss = np.random.default_rng(0).normal(size=(ds.sizes["run"], ds.sizes["step"]))
    with pytest.warns(DeprecationWarning, match="params="):
        lag_flip(ds.assign(val_loss=(("run", "step"), loss)), windows=5, layers="attn", n_surrogates=0)
    with pytest.raises(SedvizError, match="once"):
        edge(ds, windows=5, params="attn", layers="attn")


def test_params_all_is_the_whole_model(two_runs):
    """params="all" (what the notebooks and the report pass) is the whole model, like params=None."""
    ds, _ = two_runs
    every = edge(ds, windows=5, params="all", exact=True)
    default = edge(ds, windows=5, exact=True)
    np.testing.assert_array_equal(every["edge_sv"].values, default["edge_sv"].values)
    assert every.attrs["params"] == default.attrs["params"]
