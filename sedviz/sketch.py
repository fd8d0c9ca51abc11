"""Per-parameter Johnson-Lindenstrauss sketches of a checkpoint (docs/methods.md#spectral-edge).

Xu (2026) sketches the flattened parameter vector with a dense Gaussian map N(0, 1/d). For a
124M-parameter model that map is 124M x d floats, about 150 s per checkpoint to apply on a
2-core CPU, several hundred times the cost of reading the checkpoint. sedviz uses a sparse JL
map instead: the **TensorSketch** of Pham & Pagh (KDD 2013). A parameter viewed as a matrix
M (m x n) gets a row CountSketch (hash h_r: [m] -> [d], signs s_r) and a column CountSketch
(h_c, s_c); coordinate (i, j) goes to bucket (h_r(i) + h_c(j)) mod d with sign s_r(i) s_c(j):

    sketch[b] = sum_{i,j : h_r(i) + h_c(j) = b (mod d)} s_r(i) s_c(j) M[i, j]

Every parameter lands in exactly one bucket with a random sign, so <S x, S y> is an unbiased
estimate of <x, y> with variance O(||x||^2 ||y||^2 / d) (a JL map for inner products), and it
costs one pass over the parameter (a scatter-add along its long side, then a small one along the
other): O(m n + d min(m, n)) instead of O(m n d). It needs only m + n random numbers per
parameter, drawn from a generator seeded by (seed, parameter name), so the same map is
regenerated exactly for every checkpoint, run and worker. The map is linear, so the sketch of an update is the difference of
two stored sketches, and parameters' maps are independent, so inner products of groups of
parameters are sums over parameters.

Accumulation is in float64, including the first stage that sums hundreds of entries per bucket:
sketches of checkpoints are differenced later, and the updates are often 1e-4 of the weights or
less. (A float32 first stage leaves a rounding error of 0.4% in the sketch of a 1e-4 update of a
50257 x 768 embedding, and ~4% at 1e-5; in float64 it is ~1e-12.) The parameter is converted in
cache-sized chunks, so this costs no more than a float32 sparse product did.
"""
from __future__ import annotations

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


def as_matrix(t: torch.Tensor) -> torch.Tensor:
    """The (rows, cols) view a parameter is sketched in: its leading axis against the rest."""
    if t.ndim == 0:
        return t.reshape(1, 1)
    if t.ndim == 1:
        return t.reshape(1, -1)
    return t.reshape(t.shape[0], -1)


# Parameters up to this many elements keep an explicit bucket and sign per element (one
# scatter-add). That map costs 16 bytes per element and, past ~1e5 elements, more time than the
# two-stage path (768 x 768: 4.8 ms vs 0.6 ms), so it is kept for small parameters only.
_SMALL = 1 << 17
# Elements per float64 chunk of the first stage: 2 MiB, so the converted chunk stays in cache.
_CHUNK = 1 << 18


class Sketcher:
    """Applies the seeded TensorSketch of each parameter; maps are built once per parameter.

    Both stages are ``index_add_`` scatter-adds into signed buckets (bucket b for sign +1,
    b + dim for sign -1, subtracted afterwards), accumulated in float64. The first stage hashes
    away the long side, streaming the parameter once in cache-sized float64 chunks: a tall matrix
    adds whole rows into (2 dim x cols) row buckets; a wide or square one adds each row's columns
    into its (rows x 2 dim) column buckets, so a wide matrix is as cheap as its transpose (the
    former float32 CSR product was 5x slower for a 768 x 50257 matrix than for 50257 x 768). The
    second stage hashes the short side of the small result. Which side goes first changes only
    the order of float64 additions, never the map (hashes and signs), which stays a function of
    (seed, parameter name, shape).
    """

    def __init__(self, dim: int, seed: int, device: torch.device | str = "cpu"):
        self.dim = int(dim)
        self.seed = int(seed)
        self.device = torch.device(device)
        self._maps: dict[tuple, tuple] = {}
        d = torch.arange(self.dim, device=self.device)
        self._fold = ((d[:, None] + d[None, :]) % self.dim).reshape(-1)

    def _map(self, name: str, rows: int, cols: int):
        key = (name, rows, cols)
        if key not in self._maps:
            h_r, s_r, h_c, s_c = sketch_maps(name, rows, cols, self.dim, self.seed)
            if rows * cols <= _SMALL:
                # Explicit bucket and sign per element: one scatter-add.
                bucket = ((h_r[:, None] + h_c[None, :]) % self.dim).reshape(-1)
                sign = (s_r[:, None] * s_c[None, :]).reshape(-1).to(torch.float64)
                self._maps[key] = ("small", bucket.to(self.device), sign.to(self.device))
            else:
                signed_r = torch.where(s_r > 0, h_r, h_r + self.dim).to(self.device)
                signed_c = torch.where(s_c > 0, h_c, h_c + self.dim).to(self.device)
                self._maps[key] = ("rows" if rows > cols else "cols", signed_r, signed_c)
        return self._maps[key]

    def __call__(self, name: str, tensor: torch.Tensor) -> torch.Tensor:
        """Sketch of one parameter: ``dim`` float64 coordinates on the sketcher's device."""
        M = as_matrix(tensor.to(self.device))
        rows, cols = M.shape
        how, r2, c2 = self._map(name, rows, cols)
        f64, d = torch.float64, self.dim
        out = torch.zeros(d, dtype=f64, device=self.device)
        if how == "small":
            return out.index_add_(0, r2, M.reshape(-1).to(f64) * c2)
        step = max(1, _CHUNK // cols)
        buf = torch.empty(min(step, rows), cols, dtype=f64, device=self.device)
        if how == "rows":  # tall: rows into row buckets, then the columns of the (dim x cols) result
            R2 = torch.zeros(2 * d, cols, dtype=f64, device=self.device)
            for r0 in range(0, rows, step):
                chunk = buf[: min(step, rows - r0)].copy_(M[r0 : r0 + step])
                R2.index_add_(0, r2[r0 : r0 + step], chunk)
            RC2 = torch.zeros(d, 2 * d, dtype=f64, device=self.device).index_add_(1, c2, R2[:d] - R2[d:])
            RC = RC2[:, :d] - RC2[:, d:]
        else:  # wide or square: each row's columns into column buckets, then the rows of (rows x dim)
            C2 = torch.zeros(rows, 2 * d, dtype=f64, device=self.device)
            for r0 in range(0, rows, step):
                chunk = buf[: min(step, rows - r0)].copy_(M[r0 : r0 + step])
                C2[r0 : r0 + step].index_add_(1, c2, chunk)
            RC2 = torch.zeros(2 * d, d, dtype=f64, device=self.device).index_add_(0, r2, C2[:, :d] - C2[:, d:])
            RC = RC2[:d] - RC2[d:]
        out.index_add_(0, self._fold, RC.reshape(-1))  # bucket (h_r + h_c) mod dim
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
