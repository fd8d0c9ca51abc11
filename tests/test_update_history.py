"""The update history behind ``delta_dot``: one matrix-vector product per parameter gives the same
dot products as taking each lag on its own, through wrap-arounds and missing updates."""
import numpy as np
import pytest
import torch

from sedviz.pipeline import _History


@pytest.mark.parametrize("size", [1, 3, 19, 40, 255])
def test_history_dots_equal_one_product_per_lag(size):
    rng = np.random.default_rng(size)
    missed = 2
    hist = _History(size, 6, "cpu", missed=missed)
    kept: list = [None] * missed  # every update so far, None where the parameter was missing
    for t in range(3 * size + 20):
        d = rng.standard_normal(6)
        got = hist.dots(torch.from_numpy(d))
        recent = kept[::-1][:size]
        want = np.array([np.nan if u is None else float(np.dot(d, u)) for u in recent])
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12, equal_nan=True)
        missing = t % 7 == 3
        hist.push(None if missing else torch.from_numpy(d))
        kept.append(None if missing else d)


def test_history_memory_stays_near_its_size():
    # max_lag="auto" budgets size + 1 updates; the buffer adds at most an eighth (16 rows at most)
    for size in (1, 19, 255):
        rows = _History(size, 4, "cpu").buf.shape[0]
        assert size < rows <= size + max(1, min(16, size // 8))
