"""Parameter names -> matrix views and layer kinds (METHODS 1).

A state dict says nothing about module types, so the kind of each entry is read from its name
(common torch, GPT-2, NeoX, Llama and sedviz demo names) and its shape. Kinds decide how a
tensor becomes a matrix (conv kernels, transposed convs) and, in :mod:`sedviz.pairs`, which
layers are consecutive.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import torch

# Entries that are state but not trained parameters: never part of spectra or trajectories.
_BUFFER_SUFFIXES = ("running_mean", "running_var", "num_batches_tracked", "masked_bias", "inv_freq")
_BUFFER_RE = re.compile(r"(^|\.)(attn\.bias|causal_mask|mask|position_ids)$")

_DEPTH_RE = re.compile(r"(?:^|\.)(?:layers?|blocks?|h|encoder\.layer|decoder\.layer|layer)\.(\d+)\.")
_LSTM_RE = re.compile(r"weight_(ih|hh)_l(\d+)(_reverse)?$")

# (kind, name pattern), first match wins; patterns see the full parameter name.
_KIND_RULES: list[tuple[str, re.Pattern]] = [
    (kind, re.compile(pat))
    for kind, pat in [
        ("unembed", r"(^|\.)(lm_head|unembed|W_U|embed_out|output|head|classifier|fc_out_vocab)(\.weight)?$"),
        ("embed", r"(embed|wte|wpe|embed_tokens|embed_in|word_embeddings|position_embeddings|W_E|W_pos|pos_emb|tok_emb)"),
        ("attn_qkv", r"(qkv|c_attn|query_key_value|in_proj_weight|Wqkv)"),
        ("attn_q", r"(^|\.|_)(q_proj|query|W_Q|wq)(\.|$)"),
        ("attn_k", r"(^|\.|_)(k_proj|key|W_K|wk)(\.|$)"),
        ("attn_v", r"(^|\.|_)(v_proj|value|W_V|wv)(\.|$)"),
        ("attn_out", r"(attn\.c_proj|attention\.dense|attention\.output\.dense|o_proj|out_proj|attn\.out|W_O|wo\b|self_attn\.out)"),
        ("mlp_in", r"(c_fc|fc_in|fc1|dense_h_to_4h|up_proj|gate_proj|intermediate\.dense|mlp\.in|linear1|w1|w3|W_in)"),
        ("mlp_out", r"(mlp\.c_proj|fc_out|fc2|dense_4h_to_h|down_proj|output\.dense|mlp\.out|linear2|w2|W_out)"),
    ]
]


@dataclass(frozen=True)
class LayerInfo:
    """One matrix of a model: its name, how it is viewed as a matrix and what kind of layer it is."""

    name: str
    kind: str
    depth: int
    shape: tuple[int, ...]
    rows: int
    cols: int


def is_buffer(name: str, tensor: torch.Tensor) -> bool:
    """True for state entries that are not trained parameters (norm statistics, masks, counters)."""
    if not torch.is_floating_point(tensor):
        return True
    return name.endswith(_BUFFER_SUFFIXES) or bool(_BUFFER_RE.search(name))


def layer_depth(name: str) -> int:
    """Block index read from the name (``blocks.3.mlp...`` -> 3), -1 when there is none."""
    m = _DEPTH_RE.search(name)
    if m:
        return int(m.group(1))
    m = _LSTM_RE.search(name)
    return int(m.group(2)) if m else -1


def layer_kind(name: str, shape: tuple[int, ...]) -> str:
    """Kind of a parameter from its name and shape (see docs/schema.md for the vocabulary)."""
    if len(shape) < 2:
        if "norm" in name.lower() or re.search(r"(^|\.)(ln|ln_\w+|layernorm)\b", name):
            return "norm"
        return "bias" if name.endswith("bias") else "vector"
    m = _LSTM_RE.search(name)
    if m:
        return "lstm_" + m.group(1)
    if len(shape) >= 3:
        return "conv_transpose" if "transpose" in name.lower() or "deconv" in name.lower() else "conv"
    for kind, pattern in _KIND_RULES:
        if pattern.search(name):
            return kind
    return "linear"


def matrix_view(tensor: torch.Tensor, kind: str) -> torch.Tensor:
    """The 2-D matrix whose singular values are the layer's spectrum (METHODS 1).

    Linear: as stored (out, in). Conv (c_out, c_in, kh, kw): reshape to (c_out, c_in*kh*kw).
    Transposed conv, stored (c_in, c_out, kh, kw): swap the first two axes, then reshape.
    Returns a view where possible (no copy for linear and conv).
    """
    if tensor.ndim == 2:
        return tensor
    if kind == "conv_transpose":
        tensor = tensor.transpose(0, 1)
    return tensor.reshape(tensor.shape[0], -1)


def describe(name: str, tensor: torch.Tensor) -> LayerInfo:
    """LayerInfo of one state entry with ndim >= 2."""
    shape = tuple(int(s) for s in tensor.shape)
    kind = layer_kind(name, shape)
    if kind == "conv_transpose":
        rows, cols = shape[1], shape[0] * _prod(shape[2:])
    else:
        rows, cols = shape[0], _prod(shape[1:])
    return LayerInfo(name=name, kind=kind, depth=layer_depth(name), shape=shape, rows=rows, cols=cols)


def _prod(xs) -> int:
    out = 1
    for x in xs:
        out *= int(x)
    return out
