"""The benchmark command in quick mode (a smoke test: every row, sane numbers, no timing asserted),
and the numerics behind the pass's fast paths: top-k vectors through QR, the sketch's orientation
and float64 accumulation, the cheap finiteness check, a cached record without entries."""
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import write_mlp_run

ROOT = Path(__file__).resolve().parents[1]
ROWS = {"1a", "1b", "1c", "2", "3", "4", "5", "6", "7", "8"}


def test_quick_benchmark_has_every_row_and_sane_numbers(tmp_path):
    out = tmp_path / "bench.json"
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--quick", "--ww-install", "no", "--work", str(tmp_path / "work"),
         "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    took = time.monotonic() - t0
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(out.read_text())
    rows = {r["id"]: r for r in res["rows"]}
    assert set(rows) >= ROWS - {"8"} and any(k.startswith("8") for k in rows)  # 8, or 8a/8b with a GPU
    for rid in ROWS - {"8"}:
        assert rid in proc.stdout.split("notes:")[0], f"row {rid} missing from the printed table"
    for r in res["rows"]:
        if r["ratio"] is not None:
            assert math.isfinite(r["ratio"]) and r["ratio"] > 0, r
    # the pass computes the same numbers as the naive per-measure loop
    naive = res["raw"]["naive"]
    assert naive["same_numbers"], naive["max_diff"]
    d = naive["max_diff"]
    assert d["sv"] < 1e-4 and d["align_top8"] < 1e-3 and d["sva_top8"] < 1e-3 and d["align"] < 2e-2 and d["sva"] < 2e-2
    assert naive["svds_per_ckpt"] > 3 * 10  # ~5 SVDs of each of the 10 matrices (and the head blocks)
    mem = res["raw"]["memory"]
    assert mem["peak_hwm"] >= mem["baseline"] > 0 and mem["steps"] == 4
    assert res["raw"]["sketch"]["sketch_cpu"] > 0 and res["raw"]["sketch"]["read_cold_wall"] > 0
    assert len(res["raw"]["increment"]["ratios_cpu"]) == 1
    assert rows["3"]["value"] == "not measured" or rows["3"]["ratio"] > 0
    assert not (tmp_path / "work").exists(), "checkpoints are deleted without --keep"
    assert took < 120, f"the quick benchmark took {took:.0f} s"


# ------------------------------------------------------------------------- numerics of fast paths


@pytest.mark.parametrize("shape", [(3000, 300), (300, 3000), (500, 400), (1000, 256), (64, 700), (2000, 10)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_top_k_vectors_match_float64_svd(shape, dtype):
    """decompose(k=...) on every route (QR for tall, transpose for wide, thin SVD) against numpy."""
    from sedviz.spectra import decompose

    g = torch.Generator().manual_seed(0)
    A = torch.randn(*shape, generator=g, dtype=torch.float64)
    A += 4 * torch.randn(shape[0], 6, generator=g, dtype=torch.float64) @ torch.randn(6, shape[1], generator=g, dtype=torch.float64)
    A = A.to(dtype)
    k = 20
    r = decompose([A], k=k)[0]
    Ad = A.double().numpy()
    U, S, Vh = np.linalg.svd(Ad, full_matrices=False)
    kk = min(k, len(S))
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    assert r.U.shape == (shape[0], kk) and r.V.shape == (shape[1], kk)
    np.testing.assert_allclose(r.S.double().numpy(), S, atol=tol * S[0], rtol=0)
    Uk, Vk = r.U.double().numpy(), r.V.double().numpy()
    assert np.abs(Ad @ Vk - Uk * S[:kk]).max() < tol * S[0] * 10  # W v_j = s_j u_j
    assert np.abs(Uk.T @ Uk - np.eye(kk)).max() < tol * 10
    assert np.abs(Vk.T @ Vk - np.eye(kk)).max() < tol * 10
    # the planted top-6 directions are well separated: the vectors agree with LAPACK's up to sign
    np.testing.assert_allclose(np.abs((Uk[:, :6] * U[:, :6]).sum(0)), 1, atol=tol * 100)
    np.testing.assert_allclose(np.abs((Vk[:, :6] * Vh[:6].T).sum(0)), 1, atol=tol * 100)


def test_rank_deficient_and_zero_matrices():
    from sedviz.spectra import decompose

    A = torch.randn(1200, 3) @ torch.randn(3, 400)
    r = decompose([A, torch.zeros(1000, 256)], k=5)
    assert (r[0].S[3:] < 1e-4 * r[0].S[0]).all()
    assert float(r[1].S.abs().max()) == 0 and r[1].U.shape == (1000, 5)
    assert torch.allclose(r[1].U.T @ r[1].U, torch.eye(5), atol=1e-6)


def _exact_sketch(name, t, dim, seed):
    from sedviz.sketch import as_matrix, sketch_maps

    M = as_matrix(t).double()
    rows, cols = M.shape
    h_r, s_r, h_c, s_c = sketch_maps(name, rows, cols, dim, seed)
    bucket = (h_r[:, None] + h_c[None, :]) % dim
    sign = (s_r[:, None] * s_c[None, :]).double()
    return torch.zeros(dim, dtype=torch.float64).index_add_(0, bucket.reshape(-1), (M * sign).reshape(-1))


@pytest.mark.parametrize("shape", [(20, 30), (40000, 30), (30, 40000), (700, 700), (3, 700, 800), (800, 400, 2), (300000,)])
def test_sketch_every_orientation_is_the_same_map_in_float64(shape):
    """Tall (rows first), wide and square (columns first), small (explicit): one map, float64 sums,
    so the sketch of a tiny update (the difference of two sketches) is exact to rounding."""
    from sedviz.sketch import Sketcher

    g = torch.Generator().manual_seed(1)
    a = 0.02 * torch.randn(*shape, generator=g)
    b = a + 1e-5 * 0.02 * torch.randn(*shape, generator=g)
    sk = Sketcher(64, 7)
    sa, sb = sk("p", a), sk("p", b)
    ea, eb = _exact_sketch("p", a, 64, 7), _exact_sketch("p", b, 64, 7)
    assert float((sa - ea).abs().max()) <= 1e-12 * float(ea.abs().max())
    assert float(((sb - sa) - (eb - ea)).norm()) <= 1e-6 * float((eb - ea).norm())
    assert torch.equal(Sketcher(64, 7)("p", a), sa)  # deterministic


def test_finite_check():
    from sedviz.pipeline import Engine

    x = torch.randn(50, 40)
    assert Engine._finite(x)
    for bad in (float("nan"), float("inf"), -float("inf")):
        y = x.clone()
        y[3, 7] = bad
        assert not Engine._finite(y)
    y = x.clone()
    y[0, 0], y[1, 1] = float("inf"), -float("inf")
    assert not Engine._finite(y)
    assert Engine._finite(torch.full((4, 4), 3e38))  # the sum overflows, every entry is finite


def test_cached_record_without_entries_rereads_for_the_trajectory(tmp_path):
    """process_block accepts (None, record) for a step: the record is used, the checkpoint re-read
    only for the sketch, and the result equals the pass that kept the entries."""
    import sedviz
    from sedviz.io import discover_runs, read_state
    from sedviz.pipeline import Engine, Options, _entries, plan_run, process_block

    write_mlp_run(tmp_path / "a", n=3)
    src = discover_runs([tmp_path / "a"])[0]
    refs = list(src.checkpoints)
    opts = Options(sketch=True, sketch_dim=16, max_lag=None, sva=False)
    final_state = read_state(refs[-1].path)
    plan = plan_run("a", final_state, opts, max_steps=3, reference_step=None)
    eng = Engine(plan, opts, torch.device("cpu"), on_error="raise")
    final_rec, _ = eng.spectra(str(refs[-1].path), _entries(final_state))
    kept = list(process_block(plan, opts, refs, [], device="cpu", on_error="raise",
                              cached={refs[-1].step: (_entries(final_state), final_rec)}))
    reread = list(process_block(plan, opts, refs, [], device="cpu", on_error="raise", cached={refs[-1].step: (None, final_rec)}))
    assert [r["step"] for r in kept] == [r["step"] for r in reread] == [r.step for r in refs]
    for a, b in zip(kept, reread):
        np.testing.assert_array_equal(a["sketch"], b["sketch"])
        np.testing.assert_array_equal(a["sv"], b["sv"])
    ds = sedviz.compute(tmp_path / "a", progress=False, sketch_dim=16, max_lag=None, sva=False)
    np.testing.assert_allclose(ds.sketch.sel(run="a").values[-1], reread[-1]["sketch"], rtol=1e-12)
