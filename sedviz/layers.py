"""Parameter names -> matrix views and layer kinds (docs/methods.md#which-matrices).

A state dict says nothing about module types, so the kind of each entry is read from its name
(common torch, GPT-2, NeoX, Llama and sedviz demo names) and its shape. Kinds decide how a
tensor becomes a matrix (conv kernels, transposed convs) and, in :mod:`sedviz.pairs`, which
layers are consecutive.
"""
from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, replace

import torch

# Entries that are state but not trained parameters: never part of spectra or trajectories.
_BUFFER_SUFFIXES = ("running_mean", "running_var", "num_batches_tracked", "masked_bias", "inv_freq")
_BUFFER_RE = re.compile(r"(^|\.)(attn\.bias|causal_mask|mask|position_ids)$")

# A block index in a name: ``layers.3.``, ``h.3.``, ``block.3.``, ``encoder.layer.3.``, and
# torchvision's ``encoder_layer_3.``. The text before the number names the stack of blocks.
_DEPTH_RE = re.compile(r"(?:^|\.)(?:layers?|blocks?|h|[A-Za-z]+_layer)[._](\d+)\.")
_LSTM_RE = re.compile(r"weight_(ih|hh)_l(\d+)(_reverse)?$")
# Parameters that are learned token or position vectors, stored with leading singleton axes
# (ViT ``cls_token`` (1, 1, d), ``position_embeddings`` (1, n, d)): embeddings, never convs.
_TOKEN_PARAM_RE = re.compile(
    r"(^|\.)(cls_token|class_token|dist_token|mask_token|register_tokens|pos_embed(ding)?s?|position_embeddings?)$"
)

# Leaf module names (the name before ``.weight``, or the parameter itself) by role. Single letters
# (q, k, v, o) and names shared by attention and MLP (c_proj, dense, wo, proj, out) are decided by
# the parent module's name (`_ATTN_PARENT_RE`).
_UNEMBED = {"lm_head", "unembed", "W_U", "embed_out", "classifier", "head", "score", "fc_out_vocab", "logits"}
_UNEMBED_TOP = {"fc", "output", "out"}  # the model's head only outside blocks
_EMBED_TOKEN = {"wte", "embed_tokens", "embed_in", "word_embeddings", "tok_embed", "tok_emb", "tok_embeddings",
                "token_embedding", "token_embeddings", "W_E", "shared", "embedding", "embeddings", "embed", "emb"}
_EMBED_POS = {"wpe", "pos_embed", "pos_emb", "pos_embedding", "position_embedding", "position_embeddings",
              "embed_positions", "W_pos", "pos_embeddings"}
_EMBED_OTHER = {"token_type_embeddings", "relative_attention_bias", "cls_token", "class_token", "dist_token",
                "mask_token", "register_tokens"}
_QKV = {"qkv", "c_attn", "query_key_value", "in_proj_weight", "Wqkv", "W_QKV", "qkv_proj", "to_qkv"}
_Q = {"q_proj", "query", "W_Q", "wq", "to_q", "q_lin", "query_proj", "q"}
_K = {"k_proj", "key", "W_K", "wk", "to_k", "k_lin", "key_proj", "k"}
_V = {"v_proj", "value", "W_V", "wv", "to_v", "v_lin", "value_proj", "v"}
_O = {"o_proj", "out_proj", "W_O", "to_out", "out_lin", "o", "attn_out"}
_O_IN_ATTN = {"c_proj", "dense", "wo", "proj", "out", "output"}
_MLP_IN = {"c_fc", "fc_in", "fc1", "dense_h_to_4h", "up_proj", "gate_proj", "w1", "w3", "wi", "wi_0", "wi_1",
           "W_in", "linear1", "lin1", "in", "fc", "up", "gate", "gate_up_proj"}
_MLP_OUT = {"fc_out", "fc2", "dense_4h_to_h", "down_proj", "w2", "W_out", "linear2", "lin2", "wo", "c_proj", "out", "proj",
            "down"}
_ATTN_PARENT_RE = re.compile(r"(att|mha|msa)", re.I)
_CROSS_PARENT_RE = re.compile(r"(multihead_attn|crossattention|cross_attn|encoder_attn|EncDecAttention|cross_attention)", re.I)
_MLP_PARENT_RE = re.compile(r"(mlp|ffn|^ff$|feed_?forward|DenseReluDense|intermediate)", re.I)
_SHORTCUT_RE = re.compile(r"^(downsample|shortcut|skip|skip_proj|residual|res_proj|proj_shortcut)$")
# Module names that sit before the blocks (inputs) or after them (heads), outside blocks.
_EARLY_NAMES = re.compile(r"^(embeddings?|embed\w*|\w*_embed(dings?)?|wte|wpe|shared|stem|conv1|conv_stem|conv_proj|"
                          r"patch_embed\w*|input\w*|in_proj|tok\w*|pos\w*)$")
_LATE_NAMES = re.compile(r"^(lm_head|heads?|classifier|pooler|score|unembed|embed_out|logits|final\w*|ln_f|norm_f|fc|"
                         r"output|out|out_proj|proj_out)$")
_PATCH_RE = re.compile(r"^(patch_embed\w*|conv_proj|embeddings)$")
_ENCODER_RE = re.compile(r"^(encoder|enc)$", re.I)
_DECODER_RE = re.compile(r"^(decoder|dec)$", re.I)

KINDS = frozenset(
    "embed unembed attn_qkv attn_q attn_k attn_v attn_out mlp_in mlp_out conv conv_transpose "
    "lstm_ih lstm_hh linear other".split()
)


@dataclass(frozen=True)
class LayerInfo:
    """One matrix of a model: its name, how it is viewed as a matrix and what kind of layer it is.

    ``rows`` x ``cols`` is the matrix as the layer acts, (outputs, inputs). ``transposed``: stored
    as (inputs, outputs), as GPT-2's ``Conv1D`` does; its matrix view (:func:`matrix_view`) is the
    stored one, of shape ``cols`` x ``rows`` (the spectrum is the same).
    """

    name: str
    kind: str
    depth: int
    shape: tuple[int, ...]
    rows: int
    cols: int
    transposed: bool = False

    @property
    def view_shape(self) -> tuple[int, int]:
        """(rows, cols) of the matrix view whose SVD is taken (the stored orientation)."""
        return (self.cols, self.rows) if self.transposed else (self.rows, self.cols)


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


def block_stack(name: str) -> str | None:
    """The name of the stack of blocks a parameter is in (``encoder.layers`` of
    ``encoder.layers.3.fc1.weight``), None outside blocks."""
    m = _DEPTH_RE.search(name)
    return name[: m.start(1)].rstrip("._") if m else None


def _split(name: str) -> tuple[list[str], str]:
    """(parent module path, leaf): the module (or parameter) a weight belongs to."""
    parts = name.split(".")
    if len(parts) > 1 and parts[-1] in ("weight", "weight_orig"):
        parts = parts[:-1]
    return parts[:-1], parts[-1]


def is_token_param(name: str, shape: tuple[int, ...]) -> bool:
    """A learned token or position table stored with leading singleton axes (ViT's cls_token)."""
    return len(shape) >= 3 and all(s == 1 for s in shape[:-2]) and bool(_TOKEN_PARAM_RE.search(name))


def layer_kind(name: str, shape: tuple[int, ...]) -> str:
    """Kind of a parameter from its name and shape alone (docs/schema.md lists the vocabulary;
    docs/architectures.md the names each kind is read from)."""
    if len(shape) < 2:
        if "norm" in name.lower() or re.search(r"(^|\.)(ln|ln_\w+|layernorm)\b", name):
            return "norm"
        return "bias" if name.endswith("bias") else "vector"
    m = _LSTM_RE.search(name)
    if m:
        return "lstm_" + m.group(1)
    if is_token_param(name, shape):
        return "embed"
    if len(shape) >= 3:
        return "conv_transpose" if "transpose" in name.lower() or "deconv" in name.lower() else "conv"
    parent, leaf = _split(name)
    up = parent[-1] if parent else ""
    context = ".".join(parent[-2:])
    in_attn = bool(_ATTN_PARENT_RE.search(context))
    in_mlp = bool(_MLP_PARENT_RE.search(up))
    in_block = _DEPTH_RE.search(name) is not None
    if leaf in _UNEMBED or (leaf in _UNEMBED_TOP and not parent and not in_block):
        return "unembed"
    if leaf in _EMBED_TOKEN or leaf in _EMBED_POS or leaf in _EMBED_OTHER or re.search(r"(^|_)embed(ding)?s?($|_)", leaf):
        return "embed"
    if leaf in _QKV:
        return "attn_qkv"
    if up == "to_out" and leaf.isdigit():  # diffusers: attn.to_out.0
        return "attn_out"
    if leaf == "dense" and up == "output" and len(parent) >= 2 and _ATTN_PARENT_RE.search(parent[-2]):
        return "attn_out"  # BERT: attention.output.dense
    if leaf == "dense" and up == "output":
        return "mlp_out"  # BERT: output.dense after intermediate.dense
    if leaf == "dense" and up == "intermediate":
        return "mlp_in"
    single = leaf in ("q", "k", "v", "o")
    for kind, names in (("attn_q", _Q), ("attn_k", _K), ("attn_v", _V), ("attn_out", _O)):
        if leaf in names and (in_attn or not single):
            return kind
    if in_attn and not in_mlp and leaf in _O_IN_ATTN:
        return "attn_out"
    if leaf in _MLP_IN and (leaf not in ("in", "fc", "up", "gate") or in_mlp):
        return "mlp_in"
    if leaf in _MLP_OUT and (leaf not in ("out", "proj", "c_proj", "wo", "down") or in_mlp):
        return "mlp_out"
    return "linear"


def matrix_view(tensor: torch.Tensor, kind: str) -> torch.Tensor:
    """The 2-D matrix whose singular values are the layer's spectrum (docs/methods.md#which-matrices).

    Linear: as stored (out, in; GPT-2 ``Conv1D`` as stored, (in, out)). Conv (c_out, c_in, kh, kw):
    reshape to (c_out, c_in*kh*kw). Transposed conv, stored (c_in, c_out, kh, kw): swap the first
    two axes, then reshape. A token or position table with leading singleton axes (ViT's
    (1, n, d) ``position_embeddings``): (n, d). Returns a view where possible (no copy for
    linear and conv).
    """
    if tensor.ndim == 2:
        return tensor
    if kind == "embed":
        return tensor.reshape(-1, tensor.shape[-1])
    if kind == "conv_transpose":
        tensor = tensor.transpose(0, 1)
    return tensor.reshape(tensor.shape[0], -1)


def describe(name: str, tensor: torch.Tensor, kind: str | None = None, *, transposed: bool = False) -> LayerInfo:
    """LayerInfo of one state entry with ndim >= 2 (``kind`` overrides the name-based guess;
    ``transposed``: stored (in, out), as GPT-2's ``Conv1D``)."""
    shape = tuple(int(s) for s in tensor.shape)
    base = LayerInfo(name=name, kind="linear", depth=layer_depth(name), shape=shape, rows=shape[0], cols=_prod(shape[1:]),
                     transposed=transposed)
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
    """The same layer with another kind (rows and cols follow the kind's matrix view, as the layer acts)."""
    if kind not in KINDS:
        raise ValueError(f"layer kind {kind!r} for {info.name!r} is not one of {sorted(KINDS)}")
    shape = info.shape
    if kind == "conv_transpose":
        rows, cols = shape[1], shape[0] * _prod(shape[2:])
    elif kind == "embed" and len(shape) > 2:
        rows, cols = _prod(shape[:-1]), shape[-1]
    else:
        rows, cols = shape[0], _prod(shape[1:])
    if info.transposed:
        rows, cols = cols, rows
    return LayerInfo(name=info.name, kind=kind, depth=info.depth, shape=shape, rows=rows, cols=cols, transposed=info.transposed)


# ----------------------------------------------------------------------------- a model's layers

_GPT2_CONV1D_RE = re.compile(r"(^|\.)(c_attn|c_proj|c_fc)\.weight$")


def model_layers(shapes, *, kinds=None, model_type: str | None = None) -> list[LayerInfo]:
    """The matrices of a model, with kinds, in the canonical module order (docs/schema.md).

    ``shapes``: ``{name: tensor or shape}`` of the model's parameters (entries with fewer than two
    axes, and token tables of one row, are not matrices and are left out). ``kinds``: ``{name:
    kind}`` overrides. ``model_type``: ``config.json``'s ``model_type``, where known.

    Beyond :func:`layer_kind`, the whole model decides: the two numbered ``Linear`` layers of a
    container named ``mlp``/``ffn``/``feed_forward`` (torchvision's ``mlp.0``, ``mlp.3``) are the
    MLP's input and output, and GPT-2's ``c_attn``/``c_proj``/``c_fc`` are ``Conv1D`` stored
    (in, out) when ``c_attn`` is (d, 3d) or ``model_type`` is ``gpt2``. The order follows from the
    names alone (:func:`canonical_order`), so a torch file and a safetensors file (whose keys are
    sorted by name) of the same weights give the same layers.
    """
    kinds = dict(kinds or {})
    shape_of = {n: tuple(int(s) for s in getattr(t, "shape", t)) for n, t in shapes.items()}
    mats = {n: s for n, s in shape_of.items() if len(s) >= 2 and not (is_token_param(n, s) and _prod(s[:-1]) == 1)}
    guess = {n: layer_kind(n, s) for n, s in mats.items()}
    guess.update(_positional_mlp_kinds(mats, guess))
    conv1d = _gpt2_conv1d(mats, model_type)
    layers = []
    for n, s in mats.items():
        base = LayerInfo(name=n, kind="linear", depth=layer_depth(n), shape=s, rows=s[0], cols=_prod(s[1:]),
                         transposed=n in conv1d and len(s) == 2)
        layers.append(with_kind(base, kinds.get(n) or guess[n]))
    notes: list[str] = []
    by = {l.name: l for l in layers}
    out = [by[n] for n in canonical_order(layers, notes=notes)]
    if notes:
        shown = "; ".join(notes[:4]) + (f"; and {len(notes) - 4} more" if len(notes) > 4 else "")
        warnings.warn(
            f"sedviz.layers: the forward order of some modules is not known from their names, so they are put in "
            f"name order ({shown}). This decides the `layer` order and which layers pair as consecutive: if it is "
            "wrong, pass pairs=[(src, dst), ...] (CLI: --pairs FILE).",
            UserWarning,
            stacklevel=2,
        )
    return out


def in_forward_order(layers: list[LayerInfo]) -> list[LayerInfo]:
    """``layers`` (from :func:`describe` or :func:`model_layers`) in the canonical order, with GPT-2
    ``Conv1D`` weights marked ``transposed`` when :func:`describe` could not tell (idempotent)."""
    layers = list(layers)
    if not any(l.transposed for l in layers):
        conv1d = _gpt2_conv1d({l.name: l.shape for l in layers}, None)
        layers = [with_kind(replace(l, transposed=True), l.kind) if l.name in conv1d and len(l.shape) == 2 else l for l in layers]
    by = {l.name: l for l in layers}
    return [by[n] for n in canonical_order(layers)]


def _gpt2_conv1d(mats: dict, model_type: str | None) -> set[str]:
    c_attn = [s for n, s in mats.items() if re.search(r"(^|\.)c_attn\.weight$", n) and len(s) == 2]
    if model_type == "gpt2" or any(s[1] == 3 * s[0] for s in c_attn):
        return {n for n in mats if _GPT2_CONV1D_RE.search(n)}
    return set()


def _positional_mlp_kinds(mats: dict, guess: dict) -> dict[str, str]:
    """``mlp.0``/``mlp.3`` (numbered Linear layers of an MLP container): the first reads, the last writes."""
    groups: dict[str, list[tuple[int, str]]] = {}
    for n in mats:
        parent, leaf = _split(n)
        if leaf.isdigit() and parent and _MLP_PARENT_RE.search(parent[-1]) and guess[n] == "linear" and len(mats[n]) == 2:
            groups.setdefault(".".join(parent), []).append((int(leaf), n))
    out = {}
    for members in groups.values():
        if len(members) == 2:
            (_, first), (_, last) = sorted(members)
            out[first], out[last] = "mlp_in", "mlp_out"
    return out


# Role order inside a block: embeddings, self-attention (q, k, v | qkv, o), cross-attention, MLP
# (in, out), other layers, shortcut branches; heads last.
_ROLE = {"embed": 0, "attn_q": 1, "attn_k": 2, "attn_v": 3, "attn_qkv": 3, "attn_out": 4, "mlp_in": 1, "mlp_out": 2}


def _role_rank(info: LayerInfo) -> tuple[int, int]:
    parent, leaf = _split(info.name)
    if info.kind == "embed":
        sub = 0 if leaf in _EMBED_TOKEN else 1 if leaf in _EMBED_POS or "pos" in leaf else 2
        return (0, sub)
    if info.kind == "conv" and any(_PATCH_RE.match(p) for p in parent + [leaf]):
        return (0, 0)  # a ViT patch projection is the token embedding
    if info.kind.startswith("attn_"):
        cross = any(_CROSS_PARENT_RE.search(p) for p in parent)
        return (2 if cross else 1, _ROLE[info.kind])
    if info.kind in ("mlp_in", "mlp_out"):
        return (3, 0 if info.kind == "mlp_in" and "gate" in leaf else _ROLE[info.kind])
    if info.kind == "unembed":
        return (6, 0)
    if any(_SHORTCUT_RE.match(p) for p in parent + [leaf]):
        return (5, 0)
    return (4, 0)


def _natural(text: str):
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"(\d+)", text) if p != "")


def _stem(text: str) -> str:
    return re.sub(r"[_\d]+$", "", text)


def canonical_order(layers: list[LayerInfo], *, notes: list | None = None) -> list[str]:
    """Layer names in forward order, read from the names alone (file order is never used).

    The names form a tree (``encoder.layers.3.self_attn.q_proj.weight``). Siblings are ordered by:
    numbered ones by number; named ones by (place, stack, role, name): place is inputs
    (embeddings, a stem ``conv1``, ``conv_proj``) before the body before heads (``lm_head``,
    ``classifier``, ``pooler``, a top-level ``fc``); stack puts an ``encoder`` before a
    ``decoder``; role is the first role in the subtree (embeddings; q, k, v or qkv, o; cross-
    attention; MLP in, out; other layers; shortcut branches like ResNet's ``downsample``; heads);
    the name breaks ties, numbers in it compared as numbers (``layer2`` < ``layer10``). Recurrent
    weights go by layer, then direction, then ``ih`` before ``hh``.

    Where two named siblings with unknown roles (plain ``linear``/``conv`` layers) and different
    stems are ordered only by name, the order is a guess: ``notes`` (a list) receives
    ``"a < b"`` for each.
    """
    infos = {l.name: l for l in layers}
    parts = {n: n.split(".") for n in infos}
    under: dict[tuple[str, ...], list[LayerInfo]] = {}
    for n, ps in parts.items():
        for i in range(1, len(ps) + 1):
            under.setdefault(tuple(ps[:i]), []).append(infos[n])

    def key(prefix: tuple[str, ...]):
        c = prefix[-1]
        subtree = under[prefix]
        outside = not any(p.isdigit() for p in prefix[:-1])
        if c.isdigit():
            return (1, 1, (0, 0), (0, int(c)))
        ks = {l.kind for l in subtree}
        if ks == {"embed"} or (outside and _EARLY_NAMES.match(c) and ks != {"unembed"}):
            place = 0
        elif ks == {"unembed"} or (outside and _LATE_NAMES.match(c)):
            place = 2
        else:
            place = 1
        stack = 0 if _ENCODER_RE.match(c) else 2 if _DECODER_RE.match(c) else 1
        rank = min(rank_of[l.name] for l in subtree)
        m = _LSTM_RE.search(c)
        nat = (1, (int(m.group(2)), bool(m.group(3)), m.group(1) == "hh")) if m else (2, _natural(c))
        return (place, stack, rank, nat)

    cache: dict[tuple[str, ...], tuple] = {}  # one key per module path: linear in the number of layers

    def cached(prefix: tuple[str, ...]):
        if prefix not in cache:
            cache[prefix] = key(prefix)
        return cache[prefix]

    rank_of = {n: _role_rank(l) for n, l in infos.items()}
    keys: dict[str, tuple] = {}
    for n, ps in parts.items():
        keys[n] = tuple(cached(tuple(ps[:i])) for i in range(1, len(ps) + 1))
    order = sorted(infos, key=lambda n: keys[n])
    if notes is not None:
        seen = set()
        for a, b in zip(order, order[1:]):
            pa, pb = parts[a], parts[b]
            i = next((j for j in range(min(len(pa), len(pb))) if pa[j] != pb[j]), None)
            if i is None:
                continue
            ka, kb = keys[a][i], keys[b][i]
            if ka[:3] == kb[:3] and ka[2] == (4, 0) and ka[3][0] == 2 and _stem(pa[i]) != _stem(pb[i]):
                note = f"{'.'.join(pa[: i + 1])} < {'.'.join(pb[: i + 1])}"
                if note not in seen:
                    seen.add(note)
                    notes.append(note)
    return order
