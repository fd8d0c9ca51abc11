"""Consecutive layer pairs whose singular vectors are compared (docs/methods.md#alignment-of-consecutive-layers; Yunis et al. 2024, Eqn 3-4).

A pair says which singular vectors of which (sub)matrices meet: the output side of the earlier
matrix against the input side of the later one. The streaming pass reads :func:`operands` to
know which blocks to decompose, and :func:`sedviz.analysis.alignment.pair_diag` turns the
decompositions into the diagonal of the alignment matrix.

Conventions (the SVD is always of the matrix view of :func:`sedviz.layers.matrix_view`, or of a
row/column block of it taken before the SVD):

- Linear (out, in) and conv views (c_out, c_in*kh*kw): output side = left vectors U, input side
  = right vectors V.
- Embedding (vocab, d): it maps a one-hot token to a row, so its output side is V (d-dim).
- GPT-2 ``Conv1D`` weights (``c_attn``, ``c_proj``, ``c_fc``) are stored transposed, (in, out).
  The spectrum is the same, but the sides swap: output side = V, input side = U, and the fused
  Q, K, V split is a column block. Detected from the names (a ``c_attn`` of shape (d, 3d)).
- Fused attention input (3d, d): Q, K, V are row blocks [Q; K; V], each head a contiguous block of
  d_head rows (sedviz demo, ``nn.MultiheadAttention``, GPT-2 by columns). GPT-NeoX / BLOOM
  ``query_key_value`` interleave per head: rows (h, [q k v], d_head).
- Conv -> conv: the later kernel is read at its centre tap (index k//2 in each spatial axis):
  ``take`` picks the c_in coordinates of that tap from its right vectors in the C-order view,
  without re-normalizing. Transposed convs use the same layout after their view's axis swap.

Which pairs are consecutive (residual connections are not followed):

- Layers are taken in the canonical module order read from their names
  (:func:`sedviz.layers.canonical_order`), never in file order.
- transformer: every embedding -> first attention input; per head Q^h vs K^h (left vectors of
  both, one term per head, ``qk``); V -> O (``vo``; per head when V is not one contiguous block of
  the width of O's input: NeoX interleaving, grouped-query attention); O -> MLP input(s); MLP
  input(s) -> MLP output; MLP output -> next block's attention input(s); last -> unembedding, or
  the token embedding read as the unembedding when the head is tied to it (GPT-2; others when
  ``config.json`` says ``tie_word_embeddings``). Separate ``q_proj``/``k_proj``/``v_proj`` are
  each an attention input. A new stack of blocks (``encoder.layers`` -> ``decoder.layers``) reads
  the model's shared input embeddings (T5's ``shared``), not the last stack; a cross-attention's
  residual input is its Q block only, and its K and V (rows [d, 3d) of a fused matrix) read the
  previous stack's output.
- residual branches (ResNet ``downsample``, ``shortcut``): read the block's input and write beside
  the block's main path, so both pair with the next block's first layer.
- MLP and conv stacks, and anything else: each matrix -> the next one in module order when the
  inner dimensions match (rows of the earlier == input width of the later).
- Recurrent (``nn.LSTM``/``GRU``/``RNN`` names ``weight_ih_lN``/``weight_hh_lN``): the output side
  of a recurrent matrix is its candidate gate block (LSTM ``g``, GRU ``n``: rows [2h, 3h) in
  torch's gate order; the whole matrix for a plain RNN), the block written into the cell/hidden
  state; the input side is the whole matrix (every gate reads the same input). Pairs follow the
  state order: ih_l0 -> hh_l0 -> ih_l1 -> hh_l1 ..., the last hh -> the next module; with
  ``bidirectional`` each direction feeds its half of the next input (a column block).
  ``proj_size`` LSTMs are not recognised and fall back to the generic rule.
"""
from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass
from typing import NamedTuple

from .errors import SedvizError
from .layers import _CROSS_PARENT_RE, _DECODER_RE, _ENCODER_RE, _GPT2_CONV1D_RE, _SHORTCUT_RE, LayerInfo, block_stack, in_forward_order

__all__ = ["Operand", "PairSpec", "Block", "consecutive_pairs", "operands", "block_of", "operand_dim"]

_SIDES = ("left", "right")
_ATTN_IN = ("attn_qkv", "attn_q", "attn_k", "attn_v")
_RECURRENT_RE = re.compile(r"^(?P<mod>.*?)weight_(?P<which>ih|hh)_l(?P<n>\d+)(?P<rev>_reverse)?$")

# Attention heads of well-known model families by model width, where the width decides it.
_GPT2_HEAD_DIM = 64
_NEOX_HEADS = {512: 8, 768: 12, 1024: 16, 2560: 32, 4096: 32, 5120: 40, 6144: 64}  # 2048 is ambiguous
_LLAMA_HEADS = {2048: 32, 3072: 24, 4096: 32, 5120: 40, 8192: 64}


class Block(NamedTuple):
    """A (sub)matrix that is decomposed once: the matrix view of ``layer``, rows and columns [start, stop)."""

    layer: str
    rows: tuple[int, int] | None = None
    cols: tuple[int, int] | None = None


@dataclass(frozen=True)
class Operand:
    """One side of the SVD of a (sub)matrix.

    ``side``: ``"left"`` (U) or ``"right"`` (V) of the SVD of the block ``rows`` x ``cols`` of the
    layer's matrix view (blocks taken before the SVD). ``take``: a slice (start, stop, step) of the
    singular vectors' coordinates taken after the SVD (conv centre tap); not re-normalized.
    """

    layer: str
    side: str
    rows: tuple[int, int] | None = None
    cols: tuple[int, int] | None = None
    take: tuple[int, int, int] | None = None

    def __post_init__(self):
        if self.side not in _SIDES:
            raise SedvizError(f"Operand(side={self.side!r}) for {self.layer!r}: side must be 'left' (U) or 'right' (V)")

    @property
    def key(self) -> Block:
        """The block whose SVD this operand reads (``take`` is applied afterwards)."""
        return Block(self.layer, self.rows, self.cols)


@dataclass(frozen=True)
class PairSpec:
    """A consecutive pair: its diagonal is the mean over ``terms`` of |<x_j, y_j>| (docs/methods.md#alignment-of-consecutive-layers)."""

    src: str
    dst: str
    kind: str
    terms: tuple[tuple[Operand, Operand], ...]  # the diagonal is the mean over terms (per-head Q/K: one per head)

    @property
    def name(self) -> str:
        return f"{self.src} -> {self.dst}"


def operands(pairs) -> list[Block]:
    """The distinct blocks (layer, rows, cols) whose SVD the pairs need, in first-use order."""
    seen: dict[Block, None] = {}
    for pair in pairs:
        for term in pair.terms:
            for op in term:
                seen.setdefault(op.key, None)
    return list(seen)


def block_of(matrix, key):
    """The block ``key`` = (layer, rows, cols) of a matrix view (a view, no copy)."""
    _, rows, cols = key
    r = slice(*rows) if rows else slice(None)
    c = slice(*cols) if cols else slice(None)
    return matrix[r, c]


def operand_dim(op: Operand, info: LayerInfo) -> int:
    """Length of the operand's vectors: block height (left) or width (right), after ``take``."""
    view_rows, view_cols = info.view_shape
    if op.side == "left":
        n = (op.rows[1] - op.rows[0]) if op.rows else view_rows
    else:
        n = (op.cols[1] - op.cols[0]) if op.cols else view_cols
    return len(range(n)[slice(*op.take)]) if op.take else n


# ----------------------------------------------------------------------------- model geometry


class _Geometry:
    """How each layer's output and input sides sit in its matrix view (transposed storage, conv taps)."""

    def __init__(self, layers: list[LayerInfo]):
        self.info = {l.name: l for l in layers}
        self.family = _family(layers)

    def out_dim(self, info: LayerInfo) -> int:
        return info.cols if info.kind == "embed" else info.rows

    def out_op(self, info: LayerInfo, block: tuple[int, int] | None = None) -> Operand:
        """Output side, optionally only the output coordinates [start, stop) (a row block)."""
        if info.kind == "embed" or info.transposed:
            return Operand(info.name, "right", cols=block)
        return Operand(info.name, "left", rows=block)

    def in_op(self, info: LayerInfo, block: tuple[int, int] | None = None) -> Operand | None:
        """Input side, optionally only the input coordinates [start, stop); None for embeddings."""
        if info.kind == "embed":
            return None
        if info.transposed:
            return Operand(info.name, "left", rows=block)
        if len(info.shape) >= 3:  # conv: the c_in coordinates at the centre tap of the kernel
            if block is not None:
                return None
            return Operand(info.name, "right", take=_centre_take(info))
        return Operand(info.name, "right", cols=block)

    def in_dim(self, info: LayerInfo) -> int:
        if len(info.shape) >= 3 and info.kind != "embed":
            return info.shape[0] if info.kind == "conv_transpose" else info.shape[1]
        return info.cols

    def rows_op(self, info: LayerInfo, rows: tuple[int, int]) -> Operand:
        """Input side of the output rows [start, stop) only (the K and V blocks of a fused Q/K/V)."""
        if info.transposed:
            return Operand(info.name, "left", cols=rows)
        return Operand(info.name, "right", rows=rows)


def _centre_take(info: LayerInfo) -> tuple[int, int, int] | None:
    """Slice of the C-order (c_out, c_in*kh*kw) view's columns at the kernel's centre tap."""
    kernel = info.shape[2:]
    taps = math.prod(kernel)
    if taps == 1:
        return None
    centre, stride = 0, taps
    for k in kernel:
        stride //= k
        centre += (k // 2) * stride
    return (centre, info.cols, taps)


def _family(layers: list[LayerInfo]) -> str:
    names = [l.name for l in layers]
    if any(_GPT2_CONV1D_RE.search(n) and "c_attn" in n for n in names):
        return "gpt2"
    if any("query_key_value" in n for n in names):
        return "neox"
    if "tok_embed.weight" in names and any(re.fullmatch(r"blocks\.\d+\.attn\.qkv\.weight", n) for n in names):
        return "demo"
    if any(re.search(r"self_attn\.q_proj\.weight$", n) for n in names) and any("_proj" in n for n in names):
        return "llama"
    return "other"


def _heads_for(family: str, d: int) -> int | None:
    """Heads of a known family at width d, or None when the width does not decide it."""
    if family == "gpt2":
        return d // _GPT2_HEAD_DIM if d % _GPT2_HEAD_DIM == 0 else None
    if family == "neox":
        return _NEOX_HEADS.get(d)
    if family == "llama":
        return _LLAMA_HEADS.get(d)
    if family == "demo":
        try:
            from . import demo
        except Exception:  # the demo is optional here: without it, ask for n_heads
            return None
        cfg = getattr(demo, "CONFIG", {})
        return int(cfg["n_heads"]) if cfg.get("d_model") == d and "n_heads" in cfg else None
    return None


# ------------------------------------------------------------------------------------- stages


@dataclass
class _Writer:
    op: Operand
    info: LayerInfo
    dim: int
    feeds: tuple[int, int] | None = None  # which input coordinates of the reader it writes (bi-RNN)


@dataclass
class _Stage:
    kind: str  # "embed", "attn", "mlp", "rnn", "single"
    layers: list[LayerInfo]
    closed: bool = False


def _build_stages(layers: list[LayerInfo]) -> list[_Stage]:
    stages: list[_Stage] = []
    for info in layers:
        cur = stages[-1] if stages else None
        open_ = cur is not None and not cur.closed and cur.layers[-1].depth == info.depth
        k = info.kind
        if k in _ATTN_IN:
            if open_ and cur.kind == "attn" and k not in {l.kind for l in cur.layers}:
                cur.layers.append(info)
            else:
                stages.append(_Stage("attn", [info]))
        elif k == "attn_out" and open_ and cur.kind == "attn":
            cur.layers.append(info)
            cur.closed = True
        elif k == "mlp_in":
            if open_ and cur.kind == "mlp":
                cur.layers.append(info)
            else:
                stages.append(_Stage("mlp", [info]))
        elif k == "mlp_out" and open_ and cur.kind == "mlp":
            cur.layers.append(info)
            cur.closed = True
        elif k in ("lstm_ih", "lstm_hh"):
            mod = _RECURRENT_RE.match(info.name).group("mod")
            if cur is not None and cur.kind == "rnn" and _RECURRENT_RE.match(cur.layers[0].name).group("mod") == mod:
                cur.layers.append(info)
            else:
                stages.append(_Stage("rnn", [info]))
        elif k == "embed":
            stages.append(_Stage("embed", [info], closed=True))
        else:
            stages.append(_Stage("single", [info], closed=True))
    return stages


def _shortcut_of(name: str) -> str | None:
    """The block path a residual-branch layer belongs to (``layer2.0`` of ``layer2.0.downsample.0.weight``)."""
    parts = name.split(".")
    for i, p in enumerate(parts[:-1]):
        if _SHORTCUT_RE.match(p):
            return ".".join(parts[:i]) or None
    return None


def _in_stack_container(name: str) -> bool:
    """Under an ``encoder``/``decoder`` module (its own embeddings), not shared by the model."""
    return any(_ENCODER_RE.match(p) or _DECODER_RE.match(p) for p in name.split(".")[:-1])


class _Detector:
    def __init__(self, layers: list[LayerInfo], n_heads: int | None, source: str = "n_heads", tied: bool | None = None):
        self.geo = _Geometry(layers)
        self.tied = tied
        self.n_heads = n_heads
        self.source = source
        self.pairs: list[PairSpec] = []
        self.unknown_heads: tuple[str, int] | None = None  # (first layer, width) whose head count is unknown
        self.guessed_heads: tuple[str, int, int] | None = None  # (first layer, width, heads) guessed from the width
        self.memory: list[_Writer] = []  # the encoder's output, read by cross-attention K and V

    # -- helpers
    def add(self, src: LayerInfo, dst: LayerInfo, kind: str, terms) -> None:
        self.pairs.append(PairSpec(src.name, dst.name, kind, tuple(terms)))

    def heads(self, info: LayerInfo, d: int) -> int | None:
        if self.n_heads is not None:
            if d % self.n_heads:
                given = f"n_heads={self.n_heads}" if self.source == "n_heads" else f"{self.n_heads} heads ({self.source})"
                raise SedvizError(
                    f"{given} does not divide the width {d} of {info.name!r}; pass the model's number of attention "
                    "heads as n_heads=... (CLI: --n-heads N)"
                )
            return self.n_heads
        h = _heads_for(self.geo.family, d)
        if h is None and self.unknown_heads is None:
            self.unknown_heads = (info.name, d)
        if h is not None and self.geo.family != "demo" and self.guessed_heads is None:
            self.guessed_heads = (info.name, d, h)
        return h

    def chain(self, writers: list[_Writer], readers: list[LayerInfo], *, cross: bool = False) -> None:
        for w in writers:
            for r in readers:
                if r.name == w.info.name:
                    continue
                op = self.geo.in_op(r, w.feeds)
                if op is None:
                    continue
                if cross:
                    op = self._cross_query(r, op)
                if op is not None and operand_dim(op, r) == w.dim:
                    self.add(w.info, r, f"{w.info.kind}->{r.kind}", [(w.op, op)])

    def _cross_query(self, r: LayerInfo, op: Operand) -> Operand | None:
        """A cross-attention reads the residual stream through its Q block only."""
        if r.kind != "attn_qkv":
            return op if r.kind == "attn_q" else None
        return self.geo.rows_op(r, (0, self.geo.in_dim(r)))

    def cross_memory(self, readers: list[LayerInfo]) -> None:
        """A cross-attention's K and V read the encoder's output (the last writers of the previous stack)."""
        for w in self.memory:
            for r in readers:
                if r.kind == "attn_qkv":
                    d = self.geo.in_dim(r)
                    if self.geo.out_dim(r) != 3 * d:
                        continue
                    op = self.geo.rows_op(r, (d, 3 * d))
                elif r.kind in ("attn_k", "attn_v"):
                    op = self.geo.in_op(r)
                else:
                    continue
                if op is not None and operand_dim(op, r) == w.dim:
                    self.add(w.info, r, f"{w.info.kind}->{r.kind}", [(w.op, op)])

    def writer(self, info: LayerInfo, block=None, feeds=None) -> _Writer:
        op = self.geo.out_op(info, block)
        return _Writer(op, info, operand_dim(op, info), feeds)

    # -- stages
    def attention(self, st: _Stage, writers: list[_Writer]) -> list[_Writer]:
        by = {l.kind: l for l in st.layers}
        out = by.get("attn_out")
        cross = bool(_CROSS_PARENT_RE.search(st.layers[0].name))
        readers = [by["attn_qkv"]] if "attn_qkv" in by else [by[k] for k in ("attn_q", "attn_k", "attn_v") if k in by]
        self.chain(writers, readers, cross=cross)
        if cross:
            self.cross_memory(readers)
        if "attn_qkv" in by:
            self._fused(by["attn_qkv"], out)
        else:
            self._separate(by.get("attn_q"), by.get("attn_k"), by.get("attn_v"), out)
        return [self.writer(out)] if out is not None else []

    def _fused(self, qkv: LayerInfo, out: LayerInfo | None) -> None:
        geo = self.geo
        d, width = geo.in_dim(qkv), geo.out_dim(qkv)
        if width != 3 * d:
            warnings.warn(f"sedviz.pairs: {qkv.name!r} has shape {qkv.shape}, not a fused (3d, d) Q/K/V; its qk and vo pairs are skipped", stacklevel=4)
            return
        interleaved = "query_key_value" in qkv.name
        H = self.heads(qkv, d)
        if H is not None:
            dh = d // H
            if interleaved:
                q = [(3 * h * dh, 3 * h * dh + dh) for h in range(H)]
                k = [(a + dh, b + dh) for a, b in q]
            else:
                q = [(h * dh, (h + 1) * dh) for h in range(H)]
                k = [(a + d, b + d) for a, b in q]
            self.add(qkv, qkv, "qk", [(geo.out_op(qkv, qb), geo.out_op(qkv, kb)) for qb, kb in zip(q, k)])
        if out is None or geo.in_dim(out) != d:
            return
        if not interleaved:
            self.add(qkv, out, "vo", [(geo.out_op(qkv, (2 * d, 3 * d)), geo.in_op(out))])
        elif H is not None:
            dh = d // H
            v = [(3 * h * dh + 2 * dh, 3 * (h + 1) * dh) for h in range(H)]
            self.add(qkv, out, "vo", [(geo.out_op(qkv, vb), geo.in_op(out, (h * dh, (h + 1) * dh))) for h, vb in enumerate(v)])

    def _separate(self, q, k, v, out) -> None:
        geo = self.geo
        ref = q or k or v
        if ref is None:
            return
        width = geo.out_dim(q) if q is not None else (geo.in_dim(out) if out is not None else None)
        H = self.heads(ref, width) if width else None
        dh = width // H if H else None
        if q is not None and k is not None and H is not None and geo.out_dim(k) % dh == 0:
            group = H // (geo.out_dim(k) // dh)  # query heads per key head (grouped-query attention)
            terms = [
                (geo.out_op(q, (h * dh, (h + 1) * dh)), geo.out_op(k, ((h // group) * dh, (h // group + 1) * dh)))
                for h in range(H)
            ]
            self.add(q, k, "qk", terms)
        if v is None or out is None:
            return
        if geo.out_dim(v) == geo.in_dim(out):
            self.add(v, out, "vo", [(geo.out_op(v), geo.in_op(out))])
        elif H is not None and geo.in_dim(out) == H * dh and geo.out_dim(v) % dh == 0:
            group = H // (geo.out_dim(v) // dh)
            terms = [
                (geo.out_op(v, ((h // group) * dh, (h // group + 1) * dh)), geo.in_op(out, (h * dh, (h + 1) * dh)))
                for h in range(H)
            ]
            self.add(v, out, "vo", terms)

    def mlp(self, st: _Stage, writers: list[_Writer]) -> list[_Writer]:
        ins = [l for l in st.layers if l.kind == "mlp_in"]
        outs = [l for l in st.layers if l.kind == "mlp_out"]
        self.chain(writers, ins)
        if not outs:
            return [self.writer(l) for l in ins]
        self.chain([self.writer(l) for l in ins], outs)
        return [self.writer(outs[0])]

    def recurrent(self, st: _Stage, writers: list[_Writer]) -> list[_Writer]:
        mats: dict[tuple[int, int], dict[str, LayerInfo]] = {}
        for l in st.layers:
            m = _RECURRENT_RE.match(l.name)
            mats.setdefault((int(m.group("n")), 1 if m.group("rev") else 0), {})[m.group("which")] = l
        n_layers = 1 + max(n for n, _ in mats)
        dirs = 1 + max(r for _, r in mats)

        def cand(info: LayerInfo, feeds=None) -> _Writer:
            hh = mats.get(_key(info), {}).get("hh")
            h = hh.cols if hh is not None else None
            block = None
            if h and info.rows % h == 0 and info.rows // h in (3, 4):
                block = (2 * h, 3 * h)  # candidate gate: LSTM (i, f, g, o) -> g; GRU (r, z, n) -> n
            return self.writer(info, block, feeds)

        def _key(info):
            m = _RECURRENT_RE.match(info.name)
            return (int(m.group("n")), 1 if m.group("rev") else 0)

        first = [mats[(0, r)]["ih"] for r in range(dirs) if "ih" in mats.get((0, r), {})]
        self.chain(writers, first)
        last: list[_Writer] = []
        for n in range(n_layers):
            for r in range(dirs):
                ih, hh = mats.get((n, r), {}).get("ih"), mats.get((n, r), {}).get("hh")
                if ih is not None and hh is not None:
                    self.chain([cand(ih)], [hh])
            if n + 1 < n_layers:
                for r in range(dirs):
                    hh = mats.get((n, r), {}).get("hh")
                    if hh is None:
                        continue
                    feeds = (r * hh.cols, (r + 1) * hh.cols) if dirs == 2 else None
                    nxt = [mats[(n + 1, t)]["ih"] for t in range(dirs) if "ih" in mats.get((n + 1, t), {})]
                    self.chain([cand(hh, feeds)], nxt)
        for r in range(dirs):
            hh = mats.get((n_layers - 1, r), {}).get("hh")
            if hh is not None:
                last.append(cand(hh, (r * hh.cols, (r + 1) * hh.cols) if dirs == 2 else None))
        return last

    def run(self, layers: list[LayerInfo]) -> list[PairSpec]:
        writers: list[_Writer] = []
        stack = None
        entry: dict[str, list[_Writer]] = {}  # module path -> the writers its first layer read
        inputs = [l for l in layers if l.kind == "embed" and block_stack(l.name) is None and not _in_stack_container(l.name)]
        for st in _build_stages(layers):
            first = st.layers[0]
            s = block_stack(first.name)
            if s is not None:
                if stack is not None and s != stack:
                    # a new stack of blocks (encoder -> decoder) reads the model's shared input
                    # embeddings (T5's ``shared``), not the last stack; its cross-attention reads that
                    self.memory = writers
                    writers = [self.writer(e) for e in inputs]
                stack = s
            parts = first.name.split(".")
            for i in range(1, len(parts)):
                entry.setdefault(".".join(parts[:i]), writers)
            if st.kind == "embed":
                writers = writers + [self.writer(first)]
            elif st.kind == "attn":
                writers = self.attention(st, writers)
            elif st.kind == "mlp":
                writers = self.mlp(st, writers)
            elif st.kind == "rnn":
                writers = self.recurrent(st, writers)
            elif _shortcut_of(first.name) is not None:
                # a residual branch (ResNet ``downsample``) reads the block's input and writes
                # beside the block's main path
                block_input = entry.get(_shortcut_of(first.name), [])
                self.chain(block_input, [first])
                writers = [w for w in writers if _shortcut_of(w.info.name) is None] + [self.writer(first)]
            else:
                self.chain(writers, st.layers)
                writers = [self.writer(first)]
        self._tied_unembedding(layers, writers)
        return self.pairs

    def _tied_unembedding(self, layers: list[LayerInfo], writers: list[_Writer]) -> None:
        """A head tied to the token embedding (GPT-2 always; others when ``config.json`` says
        ``tie_word_embeddings``) is stored once, as the embedding, so the model has no unembedding
        layer: the last writer then pairs with the token embedding read as the unembedding, input
        side = V."""
        tied = self.tied if self.tied is not None else self.geo.family == "gpt2"
        if not tied or any(l.kind == "unembed" for l in layers):
            return
        tokens = [l for l in layers if l.kind == "embed" and block_stack(l.name) is None and _token_table(l.name)]
        emb = tokens[0] if tokens else None
        for w in writers if emb is not None else []:
            if w.dim == emb.cols:
                self.add(w.info, emb, f"{w.info.kind}->unembed", [(w.op, Operand(emb.name, "right"))])


def _token_table(name: str) -> bool:
    from .layers import _EMBED_TOKEN, _split

    return _split(name)[1] in _EMBED_TOKEN


# ---------------------------------------------------------------------------------- public API


def consecutive_pairs(layers: list[LayerInfo], *, explicit=None, n_heads: int | None = None,
                      n_heads_source: str = "n_heads", tied_embeddings: bool | None = None) -> list[PairSpec]:
    """Architecture-aware consecutive pairs of a model's matrices (docs/methods.md#alignment-of-consecutive-layers, Yunis et al. 2024 Eqn 3-4).

    Parameters
    ----------
    layers : the model's matrices, from :func:`sedviz.layers.model_layers` (or
        :func:`sedviz.layers.describe`). They are taken in the canonical module order read from
        their names (:func:`sedviz.layers.canonical_order`), whatever order they come in.
    explicit : overrides detection: a list of ``("src", "dst")`` layer names (output side of src
        against input side of dst, whole matrices, conv centre tap, embedding and GPT-2 sides as
        above) or :class:`PairSpec` objects used as given.
    n_heads : attention heads, for the per-head Q/K pairs (``sedviz.compute`` passes the run's
        ``config.json`` value when the caller gives none). Without it the count is guessed where
        the model family and width decide it (GPT-2 d/64, Pythia/NeoX and Llama widths; the
        sedviz demo from ``sedviz.demo.CONFIG``), with a warning naming ``n_heads``; otherwise
        the per-head pairs are skipped with a warning.
    n_heads_source : where ``n_heads`` came from, for error messages (a ``config.json``).
    tied_embeddings : the output head is the token embedding (``config.json``'s
        ``tie_word_embeddings``); None: only for GPT-2, which always ties.

    Returns one :class:`PairSpec` per pair, with unique names ``"src -> dst"``, in the order of the
    forward pass. The module docstring lists the rules.
    """
    layers = in_forward_order(layers)
    if explicit is not None:
        return _explicit(layers, explicit)
    if n_heads is not None and (isinstance(n_heads, bool) or not isinstance(n_heads, int) or n_heads < 1):
        raise SedvizError(f"n_heads={n_heads!r}: expected a positive integer (the number of attention heads) or None")
    detector = _Detector(layers, n_heads, n_heads_source, tied_embeddings)
    pairs = detector.run(layers)
    if detector.unknown_heads is not None:
        name, d = detector.unknown_heads
        warnings.warn(
            f"sedviz.pairs: cannot tell the number of attention heads of {name!r} (width {d}); per-head pairs "
            "(Q/K, and V/O where V is split by heads) are skipped. Pass n_heads=... (CLI: --n-heads N), or keep "
            "the model's config.json beside its weights, to include them.",
            stacklevel=2,
        )
    elif detector.guessed_heads is not None:
        name, d, h = detector.guessed_heads
        warnings.warn(
            f"sedviz.pairs: guessed {h} attention heads for {name!r} from its width {d} (no config.json with the head "
            "count was found); the per-head Q/K and V/O pairs depend on it. Pass n_heads=... (CLI: --n-heads N) to "
            "set it.",
            stacklevel=2,
        )
    out: dict[str, PairSpec] = {}
    for p in pairs:
        out.setdefault(p.name, p)  # a name is a Dataset label: the first pair of that name wins
    return list(out.values())


def _explicit(layers: list[LayerInfo], explicit) -> list[PairSpec]:
    info = {l.name: l for l in layers}
    geo = _Geometry(layers)
    out: list[PairSpec] = []
    for item in explicit:
        if isinstance(item, PairSpec):
            spec = item
        else:
            try:
                src, dst = item
            except (TypeError, ValueError):
                raise SedvizError(f"explicit: {item!r} is neither a PairSpec nor a (src, dst) pair of layer names") from None
            for name in (src, dst):
                if name not in info:
                    raise SedvizError(f"explicit: layer {name!r} is not a matrix of this model; known layers: {sorted(info)[:8]}...")
            a, b = info[src], info[dst]
            dst_op = geo.in_op(b)
            if dst_op is None:
                raise SedvizError(f"explicit: {dst!r} is an embedding, which has no input side to pair with")
            spec = PairSpec(src, dst, f"{a.kind}->{b.kind}", ((geo.out_op(a), dst_op),))
        for x, y in spec.terms:
            for op in (x, y):
                if op.layer not in info:
                    raise SedvizError(f"explicit: pair {spec.name!r} uses layer {op.layer!r}, which is not a matrix of this model")
            nx, ny = operand_dim(x, info[x.layer]), operand_dim(y, info[y.layer])
            if nx != ny:
                raise SedvizError(
                    f"explicit: pair {spec.name!r} compares vectors of length {nx} ({x.layer}, {x.side}) and {ny} "
                    f"({y.layer}, {y.side}); the output width of the earlier layer must equal the input width of the later one"
                )
        if any(p.name == spec.name for p in out):
            raise SedvizError(f"explicit: pair {spec.name!r} is given twice; pair names label the Dataset and must be unique")
        out.append(spec)
    return out
