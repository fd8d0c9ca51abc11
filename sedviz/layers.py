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
        ("embed", r"((^|\.|_)emb(\.|$)|embed|wte|wpe|embed_tokens|embed_in|word_embeddings|position_embeddings|W_E|W_pos|pos_emb|tok_emb)"),
        ("attn_qkv", r"(qkv|c_attn|query_key_value|in_proj_weight|Wqkv)"),
        ("attn_q", r"(^|\.|_)(q_proj|query|W_Q|wq)(\.|$)"),
        ("attn_k", r"(^|\.|_)(k_proj|key|W_K|wk)(\.|$)"),
        ("attn_v", r"(^|\.|_)(v_proj|value|W_V|wv)(\.|$)"),
        ("attn_out", r"(attn\.c_proj|attention\.dense|attention\.output\.dense|o_proj|out_proj|attn\.out|W_O|wo\b|self_attn\.out)"),
        ("mlp_in", r"(c_fc|fc_in|fc1|dense_h_to_4h|up_proj|gate_proj|intermediate\.dense|mlp\.in|linear1|w1|w3|W_in)"),
        ("mlp_out", r"(mlp\.c_proj|fc_out|fc2|dense_4h_to_h|down_proj|output\.dense|mlp\.out|linear2|w2|W_out)"),
    ]
]


KINDS = frozenset(
    "embed unembed attn_qkv attn_q attn_k attn_v attn_out mlp_in mlp_out conv conv_transpose "
    "lstm_ih lstm_hh linear other".split()
)


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


def describe(name: str, tensor: torch.Tensor, kind: str | None = None) -> LayerInfo:
    """LayerInfo of one state entry with ndim >= 2 (``kind`` overrides the name-based guess)."""
    shape = tuple(int(s) for s in tensor.shape)
    base = LayerInfo(name=name, kind="linear", depth=layer_depth(name), shape=shape, rows=shape[0], cols=_prod(shape[1:]))
    return with_kind(base, kind or layer_kind(name, shape))


def _prod(xs) -> int:
    out = 1
    for x in xs:
        out *= int(x)
    return out


def kinds_from_model(model: torch.nn.Module) -> dict[str, str]:
    """Layer kinds read from module types, for names that do not reveal them.

    A state dict stores no module types, so ``1.weight`` of a ``ConvTranspose2d`` looks like a
    conv. Pass the result as ``sedviz.compute(..., kinds=kinds_from_model(model))``.
    """
    table = [
        (torch.nn.modules.conv._ConvTransposeNd, "conv_transpose"),
        (torch.nn.modules.conv._ConvNd, "conv"),
        (torch.nn.Embedding, "embed"),
    ]
    out = {}
    for mod_name, mod in model.named_modules():
        prefix = f"{mod_name}." if mod_name else ""
        for cls, kind in table:
            if isinstance(mod, cls):
                out[prefix + "weight"] = kind
                break
    return out


def with_kind(info: LayerInfo, kind: str) -> LayerInfo:
    """The same layer with another kind (rows and cols follow the kind's matrix view)."""
    if kind not in KINDS:
        raise ValueError(f"layer kind {kind!r} for {info.name!r} is not one of {sorted(KINDS)}")
    shape = info.shape
    if kind == "conv_transpose":
        rows, cols = shape[1], shape[0] * _prod(shape[2:])
    else:
        rows, cols = shape[0], _prod(shape[1:])
    return LayerInfo(name=info.name, kind=kind, depth=info.depth, shape=shape, rows=rows, cols=cols)
