"""Alignment (Yunis et al. 2024 Eqn 3-4) and agreement (Eqn 5) against independent numpy float64."""
import math

import numpy as np
import pytest
import torch
import xarray as xr

from sedviz.analysis.alignment import (
    agreement_diag,
    agreement_matrix,
    alignment_diag,
    alignment_matrix,
    pair_diag,
    pair_matrix,
    score,
)
from sedviz.layers import describe, matrix_view
from sedviz.pairs import Operand, PairSpec, block_of, consecutive_pairs, operands


def haar(rng, n, m=None):
    """Haar-distributed orthonormal columns (QR with the sign fix)."""
    q, r = np.linalg.qr(rng.standard_normal((n, m or n)))
    return q * np.sign(np.diag(r))


def np_svd(m):
    u, s, vh = np.linalg.svd(np.asarray(m, dtype=np.float64), full_matrices=False)
    return u, s, vh.T


def test_functions_match_numpy_float64():
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((7, 5)), rng.standard_normal((7, 6))
    A = np.abs(x.T @ y)
    np.testing.assert_allclose(alignment_matrix(x, y), A, rtol=1e-13)
    np.testing.assert_allclose(alignment_matrix(x, y, 3), A[:3, :3], rtol=1e-13)
    d = alignment_diag(x, y, 4)
    np.testing.assert_allclose(d, [abs(x[:, j] @ y[:, j]) for j in range(4)], rtol=1e-13)
    # torch in -> torch out, same numbers
    dt = alignment_diag(torch.from_numpy(x), torch.from_numpy(y), 4)
    assert isinstance(dt, torch.Tensor) and dt.dtype == torch.float64
    np.testing.assert_allclose(dt.numpy(), d, rtol=0, atol=0)

    Ut, Vt, UT, VT = (rng.standard_normal(s) for s in ((6, 4), (5, 4), (6, 4), (5, 4)))
    S = np.abs(Ut.T @ UT) * np.abs(Vt.T @ VT)
    np.testing.assert_allclose(agreement_matrix(Ut, Vt, UT, VT), S, rtol=1e-13)
    np.testing.assert_allclose(agreement_diag(Ut, Vt, UT, VT, 4), np.diag(S), rtol=1e-13)


def test_diag_is_nan_padded_past_the_available_vectors():
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((5, 3)), rng.standard_normal((5, 4))
    d = alignment_diag(x, y, 6)
    assert d.shape == (6,)
    np.testing.assert_allclose(d[:3], np.abs(np.sum(x * y[:, :3], axis=0)), rtol=1e-13)
    assert np.isnan(d[3:]).all()


def test_score_is_the_mean_of_the_first_ten():
    d = np.linspace(1.0, 0.0, 30)
    assert score(d) == pytest.approx(d[:10].mean(), rel=1e-15)
    assert score(d, n=3) == pytest.approx(d[:3].mean(), rel=1e-15)
    short = np.array([0.9, 0.5, 0.1, np.nan, np.nan])  # a layer of rank 3
    assert score(short) == pytest.approx(0.5, rel=1e-15)
    assert np.isnan(score(np.full(4, np.nan)))
    t = torch.tensor([[1.0, 0.0, float("nan")], [0.5, 0.5, 0.5]], dtype=torch.float64)
    np.testing.assert_allclose(score(t).numpy(), [0.5, 0.5])
    da = xr.DataArray(np.stack([d, d[::-1]]), dims=("layer", "rank"))
    np.testing.assert_allclose(score(da).values, [d[:10].mean(), d[::-1][:10].mean()], rtol=1e-14)


def test_sign_and_ordering_invariance():
    rng = np.random.default_rng(2)
    x, y = haar(rng, 8), haar(rng, 8)
    A = alignment_matrix(x, y)
    signs_x, signs_y = rng.choice([-1.0, 1.0], 8), rng.choice([-1.0, 1.0], 8)
    np.testing.assert_allclose(alignment_matrix(x * signs_x, y * signs_y), A, rtol=1e-13)
    np.testing.assert_allclose(alignment_diag(x * signs_x, y * signs_y, 8), np.diag(A), rtol=1e-13)
    perm = rng.permutation(8)
    np.testing.assert_allclose(alignment_matrix(x[:, perm], y[:, perm]), A[np.ix_(perm, perm)], rtol=1e-13)


def test_random_orthogonal_bases_match_the_expected_overlap():
    # <x_j, y_j> for independent uniform unit vectors in R^n: E|.| = Gamma(n/2) / (sqrt(pi) Gamma((n+1)/2)) ~ sqrt(2/(pi n))
    rng = np.random.default_rng(3)
    n, trials = 64, 20
    means = [alignment_diag(haar(rng, n), haar(rng, n), n).mean() for _ in range(trials)]
    exact = math.exp(math.lgamma(n / 2) - math.lgamma((n + 1) / 2)) / math.sqrt(math.pi)
    assert abs(exact - math.sqrt(2 / (math.pi * n))) < 0.002
    # standard error of the mean of 1280 draws: sqrt((1/n - exact^2) / 1280) ~ 0.0017
    assert np.mean(means) == pytest.approx(exact, abs=0.007)


def _svds(mats: dict, blocks, dtype=torch.float64):
    out = {}
    for key in blocks:
        m = torch.as_tensor(block_of(mats[key[0]], key), dtype=dtype)
        out[key] = torch.linalg.svd(m, full_matrices=False)
    return out


def test_constructed_alignment_is_one():
    """W2's right singular vectors are W1's left ones, so the pair's diagonal is exactly 1."""
    rng = np.random.default_rng(4)
    U1, V1 = haar(rng, 8, 6), haar(rng, 6)
    W1 = U1 @ np.diag([6.0, 5, 4, 3, 2, 1]) @ V1.T  # (8, 6): maps R^6 -> R^8
    W2 = haar(rng, 5) @ np.diag([5.0, 4, 3, 2, 1]) @ U1[:, :5].T  # (5, 8): reads R^8 along U1
    mats = {"a.weight": torch.from_numpy(W1), "b.weight": torch.from_numpy(W2)}
    layers = [describe(n, t) for n, t in mats.items()]
    (pair,) = consecutive_pairs(layers)
    assert pair == PairSpec("a.weight", "b.weight", "linear->linear", ((Operand("a.weight", "left"), Operand("b.weight", "right")),))
    d = pair_diag(_svds(mats, operands([pair])), pair, 6)
    np.testing.assert_allclose(d[:5].numpy(), np.ones(5), atol=1e-12)
    assert torch.isnan(d[5])
    # and a random later layer is far from aligned
    mats["b.weight"] = torch.from_numpy(rng.standard_normal((5, 8)))
    assert pair_diag(_svds(mats, operands([pair])), pair, 5).mean() < 0.8


def test_pair_diag_per_head_matches_numpy():
    """Per-head Q/K of a fused (3d, d) matrix: mean over heads of |<u_j(Q^h), u_j(K^h)>|."""
    rng = np.random.default_rng(5)
    d, H, dh = 8, 2, 4
    W = rng.standard_normal((3 * d, d))
    info = describe("blocks.0.attn.qkv.weight", torch.from_numpy(W))
    out_info = describe("blocks.0.attn.out_proj.weight", torch.zeros(d, d))
    Wo = rng.standard_normal((d, d))
    pairs = consecutive_pairs([info, out_info], n_heads=H)
    qk, vo = pairs
    mats = {info.name: W, out_info.name: Wo}
    svds = _svds(mats, operands(pairs))
    k = 3
    expected = np.mean(
        [np.abs(np.sum(np_svd(W[h * dh:(h + 1) * dh])[0][:, :k] * np_svd(W[d + h * dh:d + (h + 1) * dh])[0][:, :k], axis=0)) for h in range(H)],
        axis=0,
    )
    np.testing.assert_allclose(pair_diag(svds, qk, k).numpy(), expected, rtol=1e-10)
    Uv, Vo = np_svd(W[2 * d:])[0], np_svd(Wo)[2]
    np.testing.assert_allclose(pair_diag(svds, vo, d).numpy(), np.abs(np.sum(Uv * Vo, axis=0)), rtol=1e-10)
    M = np.mean([np.abs(np_svd(W[h * dh:(h + 1) * dh])[0][:, :k].T @ np_svd(W[d + h * dh:d + (h + 1) * dh])[0][:, :k]) for h in range(H)], axis=0)
    np.testing.assert_allclose(pair_matrix(svds, qk, k).numpy(), M, rtol=1e-10)


def test_pair_diag_conv_centre_tap_matches_numpy():
    rng = np.random.default_rng(6)
    w1, w2 = rng.standard_normal((4, 3, 3, 3)), rng.standard_normal((5, 4, 3, 3))
    mats = {"conv1.weight": torch.from_numpy(w1), "conv2.weight": torch.from_numpy(w2)}
    layers = [describe(n, t) for n, t in mats.items()]
    (pair,) = consecutive_pairs(layers)
    views = {n: matrix_view(t, l.kind) for (n, t), l in zip(mats.items(), layers)}
    svds = _svds(views, operands([pair]))
    U1 = np_svd(w1.reshape(4, -1))[0]
    V2 = np_svd(w2.reshape(5, -1))[2]  # (36, 5): coordinate c_in * 9 + tap
    V2c = V2[4::9]  # the centre tap (1, 1) = 4, not re-normalized
    np.testing.assert_allclose(pair_diag(svds, pair, 4).numpy(), np.abs(np.sum(U1[:, :4] * V2c[:, :4], axis=0)), rtol=1e-10)


def test_pair_diag_accepts_spectra_svd_objects_and_numpy():
    from sedviz.spectra import decompose

    rng = np.random.default_rng(7)
    W1, W2 = rng.standard_normal((6, 9)), rng.standard_normal((4, 6))
    mats = {"a.weight": torch.from_numpy(W1), "b.weight": torch.from_numpy(W2)}
    (pair,) = consecutive_pairs([describe(n, t) for n, t in mats.items()])
    blocks = operands([pair])
    svd_objs = dict(zip(blocks, decompose([mats[b.layer] for b in blocks], k=4)))
    expected = np.abs(np.sum(np_svd(W1)[0][:, :4] * np_svd(W2)[2][:, :4], axis=0))
    np.testing.assert_allclose(pair_diag(svd_objs, pair, 4).numpy(), expected, rtol=1e-10)
    np_svds = {b: np.linalg.svd(mats[b.layer].numpy(), full_matrices=False) for b in blocks}
    got = pair_diag(np_svds, pair, 4)
    assert isinstance(got, np.ndarray)
    np.testing.assert_allclose(got, expected, rtol=1e-10)


def test_float32_on_torch_stays_float32():
    x = torch.randn(10, 4, generator=torch.Generator().manual_seed(0))
    d = alignment_diag(x, x, 4)
    assert d.dtype == torch.float32
    np.testing.assert_allclose(d.numpy(), (x * x).sum(0).numpy(), rtol=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_pair_diag_runs_on_cuda_like_on_cpu():
    rng = np.random.default_rng(8)
    W1, W2 = rng.standard_normal((6, 9)), rng.standard_normal((4, 6))
    mats = {"a.weight": torch.from_numpy(W1), "b.weight": torch.from_numpy(W2)}
    (pair,) = consecutive_pairs([describe(n, t) for n, t in mats.items()])
    cpu = _svds(mats, operands([pair]))
    cuda = {key: tuple(t.cuda() for t in v) for key, v in cpu.items()}
    got = pair_diag(cuda, pair, 5)
    assert got.device.type == "cuda"
    np.testing.assert_allclose(got.cpu().numpy(), pair_diag(cpu, pair, 5).numpy(), rtol=1e-10)
    np.testing.assert_allclose(score(got).cpu().numpy(), np.nanmean(got.cpu().numpy()[:10]), rtol=1e-12)
