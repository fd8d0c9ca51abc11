"""Per-parameter Johnson-Lindenstrauss sketches of a checkpoint (METHODS 7).

Xu (2026) sketches the flattened parameter vector with a dense Gaussian map N(0, 1/d). For a
124M-parameter model that map is 124M x d floats, about 150 s per checkpoint to apply on a
2-core CPU, several hundred times the cost of reading the checkpoint. sedviz uses a sparse JL
map instead: the **TensorSketch** of Pham & Pagh (KDD 2013). A parameter viewed as a matrix
M (m x n) gets a row CountSketch (hash h_r: [m] -> [d], signs s_r) and a column CountSketch
(h_c, s_c); coordinate (i, j) goes to bucket (h_r(i) + h_c(j)) mod d with sign s_r(i) s_c(j):

    sketch[b] = sum_{i,j : h_r(i) + h_c(j) = b (mod d)} s_r(i) s_c(j) M[i, j]

Every parameter lands in exactly one bucket with a random sign, so <S x, S y> is an unbiased
estimate of <x, y> with variance O(||x||^2 ||y||^2 / d) (a JL map for inner products), and it
costs one pass over the parameter (a scatter-add of the columns, then of m x d row sums):
O(m n + m d) instead of O(m n d). It needs only m + n random numbers per parameter, drawn from
a generator seeded by (seed, parameter name), so the same map is regenerated exactly for every
checkpoint, run and worker. The map is linear, so the sketch of an update is the difference of
two stored sketches, and parameters' maps are independent, so inner products of groups of
parameters are sums over parameters.

Accumulation is in float64: sketches of checkpoints are differenced later, and the updates are
often 1e-4 of the weights.
"""
from __future__ import annotations

import warnings
import zlib

import torch


def _generator(seed: int, name: str) -> torch.Generator:
    g = torch.Generator(device="cpu")
    g.manual_seed((int(seed) * 1_000_003 + zlib.crc32(name.encode())) % (2**63 - 1))
    return g


def sketch_maps(name: str, rows: int, cols: int, dim: int, seed: int):
    """The hashes and signs of one parameter's map: (h_rows, s_rows, h_cols, s_cols)."""
    g = _generator(seed, name)
    h_r = torch.randint(0, dim, (rows,), generator=g)
    s_r = torch.randint(0, 2, (rows,), generator=g) * 2 - 1
    h_c = torch.randint(0, dim, (cols,), generator=g)
    s_c = torch.randint(0, 2, (cols,), generator=g) * 2 - 1
    return h_r, s_r, h_c, s_c


def _hash_matrix(h: torch.Tensor, s: torch.Tensor, dim: int, dtype, device) -> torch.Tensor:
    """CountSketch of one axis as a sparse CSR (dim x len) matrix with one signed 1 per column."""
    order = torch.argsort(h, stable=True)
    crow = torch.zeros(dim + 1, dtype=torch.int64)
    crow[1:] = torch.cumsum(torch.bincount(h, minlength=dim), 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "sparse CSR support is in beta"
        return torch.sparse_csr_tensor(crow, order, s[order].to(dtype), size=(dim, h.numel())).to(device)


def as_matrix(t: torch.Tensor) -> torch.Tensor:
    """The (rows, cols) view a parameter is sketched in: its leading axis against the rest."""
    if t.ndim == 0:
        return t.reshape(1, 1)
    if t.ndim == 1:
        return t.reshape(1, -1)
    return t.reshape(t.shape[0], -1)


# Parameters up to this many elements keep an explicit bucket index (a sparse product costs ~20 ms
# of fixed overhead per call on a CPU, more than the whole scatter-add of a small parameter).
_SMALL = 1 << 20


class Sketcher:
    """Applies the seeded TensorSketch of each parameter; maps are built once per parameter.

    The row stage (the only one that touches every parameter) is a sparse CSR product in the
    parameter's float dtype: float32 rounding of a bucket sum is ~1e-7 of the bucket, far below
    the sketch's own error; the small (dim x cols) column stage and the fold run in float64.
    """

    def __init__(self, dim: int, seed: int, device: torch.device | str = "cpu"):
        self.dim = int(dim)
        self.seed = int(seed)
        self.device = torch.device(device)
        self._maps: dict[tuple, tuple] = {}
        d = torch.arange(self.dim, device=self.device)
        self._fold = ((d[:, None] + d[None, :]) % self.dim).reshape(-1)

    def _map(self, name: str, rows: int, cols: int, dtype):
        key = (name, rows, cols, dtype)
        if key not in self._maps:
            h_r, s_r, h_c, s_c = sketch_maps(name, rows, cols, self.dim, self.seed)
            if rows * cols <= _SMALL:
                # Explicit bucket and sign per element: one scatter-add, no sparse-call overhead.
                bucket = ((h_r[:, None] + h_c[None, :]) % self.dim).reshape(-1)
                sign = (s_r[:, None] * s_c[None, :]).reshape(-1).to(torch.float64)
                self._maps[key] = ("small", bucket.to(self.device), sign.to(self.device))
            else:
                self._maps[key] = (
                    "csr",
                    _hash_matrix(h_r, s_r, self.dim, dtype, self.device),
                    _hash_matrix(h_c, s_c, self.dim, torch.float64, self.device),
                )
        return self._maps[key]

    def __call__(self, name: str, tensor: torch.Tensor) -> torch.Tensor:
        """Sketch of one parameter: ``dim`` float64 coordinates on the sketcher's device."""
        M = as_matrix(tensor.to(self.device))
        if M.dtype not in (torch.float32, torch.float64):
            M = M.to(torch.float32)
        rows, cols = M.shape
        how, a, b = self._map(name, rows, cols, M.dtype)
        out = torch.zeros(self.dim, dtype=torch.float64, device=self.device)
        if how == "small":
            return out.index_add_(0, a, M.reshape(-1).to(torch.float64) * b)
        H_r, H_c = a, b
        R = (H_r @ M).to(torch.float64)  # (dim, cols): rows hashed and signed
        RC = (H_c @ R.T.contiguous()).T  # (dim, dim): columns hashed and signed
        out.index_add_(0, self._fold, RC.reshape(-1))  # bucket (a + c) mod dim
        return out


def dense_matrix(name: str, shape: tuple[int, ...], dim: int, seed: int) -> torch.Tensor:
    """The map of one parameter as an explicit (dim, numel) matrix; for tests on small shapes."""
    M = as_matrix(torch.zeros(shape))
    rows, cols = M.shape
    h_r, s_r, h_c, s_c = sketch_maps(name, rows, cols, dim, seed)
    out = torch.zeros(dim, rows * cols, dtype=torch.float64)
    for i in range(rows):
        for j in range(cols):
            out[(h_r[i] + h_c[j]) % dim, i * cols + j] = float(s_r[i] * s_c[j])
    return out
