"""Consecutive pair detection (docs/methods.md#alignment-of-consecutive-layers): exact pair lists for real small torch models and for
name/shape lists of GPT-2, NeoX, Llama and the sedviz demo."""
import json
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from sedviz.errors import SedvizError
from sedviz.layers import describe, is_buffer, kinds_from_model, matrix_view
from sedviz.pairs import Block, Operand, PairSpec, block_of, consecutive_pairs, operand_dim, operands


def layers_of(model: nn.Module):
    kinds = kinds_from_model(model)  # module types where the names do not tell (a transposed conv)
    return [describe(n, t, kinds.get(n)) for n, t in model.state_dict().items() if t.ndim >= 2 and not is_buffer(n, t)]


def layers_from(spec):
    """LayerInfo from (name, shape) without allocating (meta tensors)."""
    return [describe(n, torch.empty(s, device="meta")) for n, s in spec]


def O(layer, side, rows=None, cols=None, take=None):
    return Operand(layer, side, rows, cols, take)


def P(src, dst, kind, *terms):
    return PairSpec(src, dst, kind, tuple(terms))


def one(src, dst, kind, src_side="left", dst_side="right", **dst_kw):
    return P(src, dst, kind, (O(src, src_side), O(dst, dst_side, **dst_kw)))


def test_mlp_stack_pairs_in_module_order():
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 3))
    assert consecutive_pairs(layers_of(model)) == [
        one("0.weight", "2.weight", "linear->linear"),
        one("2.weight", "4.weight", "linear->linear"),
    ]


def test_generic_fallback_skips_mismatched_inner_dims():
    layers = layers_from([("a.weight", (8, 4)), ("b.weight", (3, 8)), ("c.weight", (5, 5)), ("d.weight", (2, 5))])
    assert consecutive_pairs(layers) == [one("a.weight", "b.weight", "linear->linear"), one("c.weight", "d.weight", "linear->linear")]


class ConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 16, (3, 5))
        self.conv3 = nn.ConvTranspose2d(16, 4, 3)
        self.conv4 = nn.Conv2d(4, 4, 1)
        self.fc = nn.Linear(4, 2)


def test_conv_pairs_take_the_centre_tap_of_the_later_kernel():
    pairs = consecutive_pairs(layers_of(ConvNet()))
    # conv2 view (16, 8*3*5): centre tap (1, 2) is flat index 1*5 + 2 = 7 of each 15-tap group.
    # conv3 (transposed) stored (16, 4, 3, 3) -> view (4, 16*9): centre (1, 1) = index 4 of each 9-tap group.
    assert pairs == [
        one("conv1.weight", "conv2.weight", "conv->conv", take=(7, 120, 15)),
        one("conv2.weight", "conv3.weight", "conv->conv_transpose", take=(4, 144, 9)),
        one("conv3.weight", "conv4.weight", "conv_transpose->conv"),
        one("conv4.weight", "fc.weight", "conv->unembed"),  # a top-level fc is the model's head
    ]


def test_centre_take_selects_the_centre_tap_coordinates():
    net = ConvNet()
    infos = {l.name: l for l in layers_of(net)}
    for name, module, centre in (("conv2.weight", net.conv2, (1, 2)), ("conv3.weight", net.conv3, (1, 1))):
        pair = next(p for p in consecutive_pairs(list(infos.values())) if p.dst == name)
        take = pair.terms[0][1].take
        w = module.weight.detach()
        view = matrix_view(w, infos[name].kind)
        # independent: the centre tap of the kernel, with the c_in axis of the view's layout
        by_cin = w.transpose(0, 1) if infos[name].kind == "conv_transpose" else w
        expected = by_cin[:, :, centre[0], centre[1]]
        assert torch.equal(view[:, slice(*take)], expected)
        assert operand_dim(pair.terms[0][1], infos[name]) == expected.shape[1]


def test_flattened_conv_to_linear_has_no_pair():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(2 * 4 * 4, 3))
    assert consecutive_pairs(layers_of(model)) == []


def test_torch_transformer_encoder_layers():
    enc = nn.TransformerEncoder(nn.TransformerEncoderLayer(8, 2, 16, batch_first=True), 2, enable_nested_tensor=False)
    pairs = consecutive_pairs(layers_of(enc), n_heads=2)
    exp = []
    for i in range(2):
        qkv, out = f"layers.{i}.self_attn.in_proj_weight", f"layers.{i}.self_attn.out_proj.weight"
        l1, l2 = f"layers.{i}.linear1.weight", f"layers.{i}.linear2.weight"
        if i == 1:
            exp.append(one("layers.0.linear2.weight", qkv, "mlp_out->attn_qkv"))
        exp += [
            P(qkv, qkv, "qk", (O(qkv, "left", (0, 4)), O(qkv, "left", (8, 12))), (O(qkv, "left", (4, 8)), O(qkv, "left", (12, 16)))),
            P(qkv, out, "vo", (O(qkv, "left", (16, 24)), O(out, "right"))),
            one(out, l1, "attn_out->mlp_in"),
            one(l1, l2, "mlp_in->mlp_out"),
        ]
    assert pairs == exp


def test_unknown_heads_warn_and_skip_qk():
    layer = nn.TransformerEncoderLayer(8, 2, 16)
    with pytest.warns(UserWarning, match="n_heads"):
        pairs = consecutive_pairs(layers_of(layer))
    assert [p.kind for p in pairs] == ["vo", "attn_out->mlp_in", "mlp_in->mlp_out"]
    with pytest.raises(SedvizError, match="n_heads=3"):
        consecutive_pairs(layers_of(layer), n_heads=3)


def test_torch_transformer_decoder_restarts_chain_and_reads_cross_attention_query():
    model = nn.Transformer(8, 2, 1, 1, 16, batch_first=True)
    pairs = consecutive_pairs(layers_of(model), n_heads=2)
    names = [p.name for p in pairs]
    assert "encoder.layers.0.linear2.weight -> decoder.layers.0.self_attn.in_proj_weight" not in names
    cross = "decoder.layers.0.multihead_attn.in_proj_weight"
    assert one("decoder.layers.0.self_attn.out_proj.weight", cross, "attn_out->attn_qkv", rows=(0, 8)) in pairs


def gpt2_layers(d=128, n_layer=2, vocab=100, lm_head=True):
    spec = [("wte.weight", (vocab, d)), ("wpe.weight", (10, d))]
    for i in range(n_layer):
        spec += [
            (f"h.{i}.attn.c_attn.weight", (d, 3 * d)),
            (f"h.{i}.attn.c_proj.weight", (d, d)),
            (f"h.{i}.mlp.c_fc.weight", (d, 4 * d)),
            (f"h.{i}.mlp.c_proj.weight", (4 * d, d)),
        ]
    if lm_head:
        spec.append(("lm_head.weight", (vocab, d)))
    return layers_from(spec)


def test_gpt2_conv1d_is_transposed_and_heads_are_inferred():
    # d = 128: GPT-2 heads are 64 wide, so 2 heads. Conv1D weights are (in, out): output side = V.
    with pytest.warns(UserWarning, match="guessed 2 attention heads"):
        pairs = consecutive_pairs(gpt2_layers())
    d = 128
    exp = [
        P("wte.weight", "h.0.attn.c_attn.weight", "embed->attn_qkv", (O("wte.weight", "right"), O("h.0.attn.c_attn.weight", "left"))),
        P("wpe.weight", "h.0.attn.c_attn.weight", "embed->attn_qkv", (O("wpe.weight", "right"), O("h.0.attn.c_attn.weight", "left"))),
    ]
    for i in range(2):
        qkv, ao = f"h.{i}.attn.c_attn.weight", f"h.{i}.attn.c_proj.weight"
        fc, mo = f"h.{i}.mlp.c_fc.weight", f"h.{i}.mlp.c_proj.weight"
        if i == 1:
            exp.append(P("h.0.mlp.c_proj.weight", qkv, "mlp_out->attn_qkv", (O("h.0.mlp.c_proj.weight", "right"), O(qkv, "left"))))
        exp += [
            P(qkv, qkv, "qk", (O(qkv, "right", cols=(0, 64)), O(qkv, "right", cols=(d, d + 64))),
              (O(qkv, "right", cols=(64, 128)), O(qkv, "right", cols=(d + 64, 2 * d)))),
            P(qkv, ao, "vo", (O(qkv, "right", cols=(2 * d, 3 * d)), O(ao, "left"))),
            P(ao, fc, "attn_out->mlp_in", (O(ao, "right"), O(fc, "left"))),
            P(fc, mo, "mlp_in->mlp_out", (O(fc, "right"), O(mo, "left"))),
        ]
    exp.append(P("h.1.mlp.c_proj.weight", "lm_head.weight", "mlp_out->unembed", (O("h.1.mlp.c_proj.weight", "right"), O("lm_head.weight", "right"))))
    assert pairs == exp


def test_gpt2_tied_head_pairs_with_wte():
    pairs = consecutive_pairs(gpt2_layers(lm_head=False), n_heads=2)
    assert pairs[-1] == P("h.1.mlp.c_proj.weight", "wte.weight", "mlp_out->unembed", (O("h.1.mlp.c_proj.weight", "right"), O("wte.weight", "right")))


def test_neox_interleaved_heads():
    d = 16
    pre = "gpt_neox.layers.0."
    layers = layers_from([
        ("gpt_neox.embed_in.weight", (50, d)),
        (pre + "attention.query_key_value.weight", (3 * d, d)),
        (pre + "attention.dense.weight", (d, d)),
        (pre + "mlp.dense_h_to_4h.weight", (4 * d, d)),
        (pre + "mlp.dense_4h_to_h.weight", (d, 4 * d)),
        ("embed_out.weight", (50, d)),
    ])
    qkv, dense = pre + "attention.query_key_value.weight", pre + "attention.dense.weight"
    up, down = pre + "mlp.dense_h_to_4h.weight", pre + "mlp.dense_4h_to_h.weight"
    # rows (head, [q, k, v], d_head=8): head 0 q 0:8 k 8:16 v 16:24, head 1 q 24:32 k 32:40 v 40:48
    assert consecutive_pairs(layers, n_heads=2) == [
        one("gpt_neox.embed_in.weight", qkv, "embed->attn_qkv", src_side="right"),
        P(qkv, qkv, "qk", (O(qkv, "left", (0, 8)), O(qkv, "left", (8, 16))), (O(qkv, "left", (24, 32)), O(qkv, "left", (32, 40)))),
        P(qkv, dense, "vo", (O(qkv, "left", (16, 24)), O(dense, "right", cols=(0, 8))), (O(qkv, "left", (40, 48)), O(dense, "right", cols=(8, 16)))),
        one(dense, up, "attn_out->mlp_in"),
        one(up, down, "mlp_in->mlp_out"),
        one(down, "embed_out.weight", "mlp_out->unembed"),
    ]


def test_llama_separate_projections_with_grouped_query_attention():
    d, pre = 64, "model.layers.0."
    layers = layers_from([
        ("model.embed_tokens.weight", (100, d)),
        (pre + "self_attn.q_proj.weight", (d, d)),
        (pre + "self_attn.k_proj.weight", (32, d)),  # 2 key/value heads of 16 for 4 query heads
        (pre + "self_attn.v_proj.weight", (32, d)),
        (pre + "self_attn.o_proj.weight", (d, d)),
        (pre + "mlp.gate_proj.weight", (128, d)),
        (pre + "mlp.up_proj.weight", (128, d)),
        (pre + "mlp.down_proj.weight", (d, 128)),
        ("lm_head.weight", (100, d)),
    ])
    q, k, v, o = (pre + f"self_attn.{x}_proj.weight" for x in "qkvo")
    g, u, dn = (pre + f"mlp.{x}_proj.weight" for x in ("gate", "up", "down"))
    emb = "model.embed_tokens.weight"
    blocks = [(0, 16), (16, 32), (32, 48), (48, 64)]
    kv = [(0, 16), (0, 16), (16, 32), (16, 32)]
    assert consecutive_pairs(layers, n_heads=4) == [
        one(emb, q, "embed->attn_q", src_side="right"),
        one(emb, k, "embed->attn_k", src_side="right"),
        one(emb, v, "embed->attn_v", src_side="right"),
        P(q, k, "qk", *[(O(q, "left", b), O(k, "left", c)) for b, c in zip(blocks, kv)]),
        P(v, o, "vo", *[(O(v, "left", c), O(o, "right", cols=b)) for b, c in zip(blocks, kv)]),
        one(o, g, "attn_out->mlp_in"),
        one(o, u, "attn_out->mlp_in"),
        one(g, dn, "mlp_in->mlp_out"),
        one(u, dn, "mlp_in->mlp_out"),
        one(dn, "lm_head.weight", "mlp_out->unembed"),
    ]


DEMO_NAMES = [
    ("tok_embed.weight", (60, 64)),
    ("pos_embed.weight", (3, 64)),
    ("blocks.0.attn.qkv.weight", (192, 64)),
    ("blocks.0.attn.out_proj.weight", (64, 64)),
    ("blocks.0.mlp.fc_in.weight", (256, 64)),
    ("blocks.0.mlp.fc_out.weight", (64, 256)),
    ("unembed.weight", (59, 64)),
]


def demo_expected(n_heads):
    qkv, out, fi, fo = (n for n, _ in DEMO_NAMES[2:6])
    dh = 64 // n_heads
    return [
        one("tok_embed.weight", qkv, "embed->attn_qkv", src_side="right"),
        one("pos_embed.weight", qkv, "embed->attn_qkv", src_side="right"),
        P(qkv, qkv, "qk", *[(O(qkv, "left", (h * dh, (h + 1) * dh)), O(qkv, "left", (64 + h * dh, 64 + (h + 1) * dh))) for h in range(n_heads)]),
        P(qkv, out, "vo", (O(qkv, "left", (128, 192)), O(out, "right"))),
        one(out, fi, "attn_out->mlp_in"),
        one(fi, fo, "mlp_in->mlp_out"),
        one(fo, "unembed.weight", "mlp_out->unembed"),
    ]


def test_demo_names_heads_from_the_demo_config():
    from sedviz import demo

    assert demo.CONFIG["d_model"] == 64
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert consecutive_pairs(layers_from(DEMO_NAMES)) == demo_expected(demo.CONFIG["n_heads"])
    assert consecutive_pairs(layers_from(DEMO_NAMES), n_heads=2) == demo_expected(2)


def test_demo_model_state_dict():
    from sedviz.demo import CONFIG, make_model

    assert consecutive_pairs(layers_of(make_model())) == demo_expected(CONFIG["n_heads"])


class Recurrent(nn.Module):
    def __init__(self, bidirectional=False):
        super().__init__()
        self.embed = nn.Embedding(10, 5)
        self.lstm = nn.LSTM(5, 4, num_layers=2, bidirectional=bidirectional)
        self.head = nn.Linear(8 if bidirectional else 4, 3)


def test_lstm_gate_blocks():
    g = (8, 12)  # candidate gate g of (i, f, g, o), hidden 4
    assert consecutive_pairs(layers_of(Recurrent())) == [
        one("embed.weight", "lstm.weight_ih_l0", "embed->lstm_ih", src_side="right"),
        P("lstm.weight_ih_l0", "lstm.weight_hh_l0", "lstm_ih->lstm_hh", (O("lstm.weight_ih_l0", "left", g), O("lstm.weight_hh_l0", "right"))),
        P("lstm.weight_hh_l0", "lstm.weight_ih_l1", "lstm_hh->lstm_ih", (O("lstm.weight_hh_l0", "left", g), O("lstm.weight_ih_l1", "right"))),
        P("lstm.weight_ih_l1", "lstm.weight_hh_l1", "lstm_ih->lstm_hh", (O("lstm.weight_ih_l1", "left", g), O("lstm.weight_hh_l1", "right"))),
        P("lstm.weight_hh_l1", "head.weight", "lstm_hh->unembed", (O("lstm.weight_hh_l1", "left", g), O("head.weight", "right"))),
    ]


def test_bidirectional_lstm_feeds_column_halves():
    pairs = {p.name: p for p in consecutive_pairs(layers_of(Recurrent(bidirectional=True)))}
    assert len(pairs) == 12
    t = pairs["lstm.weight_hh_l0_reverse -> lstm.weight_ih_l1"].terms
    assert t == ((O("lstm.weight_hh_l0_reverse", "left", (8, 12)), O("lstm.weight_ih_l1", "right", cols=(4, 8))),)
    assert pairs["lstm.weight_hh_l1 -> head.weight"].terms[0][1] == O("head.weight", "right", cols=(0, 4))


def test_explicit_pairs_override_detection():
    layers = layers_of(nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 6), nn.Linear(6, 8)))
    spec = P("0.weight", "0.weight", "custom", (O("0.weight", "left"), O("0.weight", "left")))
    assert consecutive_pairs(layers, explicit=[("0.weight", "1.weight"), spec]) == [one("0.weight", "1.weight", "linear->linear"), spec]
    with pytest.raises(SedvizError, match=r"explicit.*length 8 .*and 6 "):
        consecutive_pairs(layers, explicit=[("0.weight", "2.weight")])
    with pytest.raises(SedvizError, match="nope"):
        consecutive_pairs(layers, explicit=[("0.weight", "nope")])


def test_operands_are_distinct_blocks_in_first_use_order():
    pairs = consecutive_pairs(layers_from(DEMO_NAMES), n_heads=2)
    qkv = "blocks.0.attn.qkv.weight"
    assert operands(pairs) == [
        Block("tok_embed.weight"), Block(qkv), Block("pos_embed.weight"),
        Block(qkv, (0, 32)), Block(qkv, (64, 96)), Block(qkv, (32, 64)), Block(qkv, (96, 128)), Block(qkv, (128, 192)),
        Block("blocks.0.attn.out_proj.weight"), Block("blocks.0.mlp.fc_in.weight"), Block("blocks.0.mlp.fc_out.weight"),
        Block("unembed.weight"),
    ]
    assert operands(pairs)[3] == (qkv, (0, 32), None)  # plain tuples work as dict keys too
    m = np.arange(12.0).reshape(3, 4)
    np.testing.assert_array_equal(block_of(m, ("x", (1, 3), (0, 2))), m[1:3, 0:2])


# ------------------------------------------------------------------ hand-written and torch models
# Saved with torch.save (module order) and safetensors (keys sorted by name): the same layers,
# kinds and pairs, read from the names alone.

from safetensors.torch import save_file  # noqa: E402

import sedviz  # noqa: E402
from arch_models import MinimalTransformer, write_config  # noqa: E402


def _compute_both(model, tmp_path, **kw):
    """(ds from step_1.pt, ds from step_1.safetensors) of one state dict, with a config.json giving 2 heads."""
    out = []
    for fmt in ("pt", "st"):
        run = tmp_path / fmt
        run.mkdir(parents=True)
        sd = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
        if fmt == "pt":
            torch.save(sd, run / "step_1.pt")
        else:
            save_file(sd, str(run / "step_1.safetensors"))
        write_config(run, n_heads=2)
        out.append(sedviz.compute(run, progress=False, sketch=False, sva=False, max_lag=None, **kw))
    return out


def _table(ds):
    return (list(zip(ds.layer.values.tolist(), ds.layer_kind.values.tolist())),
            list(zip(ds.pair_src.values.tolist(), ds.pair_dst.values.tolist(), ds.pair_kind.values.tolist())))


def minimal_expected(attn, names, n_layer=2):
    """The forward pass of MinimalTransformer, written out: embeddings -> attention -> MLP -> head."""
    fused = isinstance(names, str)
    w = (lambda n: n) if names[0].startswith("W_") else (lambda n: n + ".weight")
    layers = [("tok_emb.weight", "embed"), ("pos_emb.weight", "embed")]
    pairs = []
    writers = ["tok_emb.weight", "pos_emb.weight"]
    for i in range(n_layer):
        a = f"blocks.{i}.{attn}."
        fc1, fc2 = f"blocks.{i}.mlp.fc1.weight", f"blocks.{i}.mlp.fc2.weight"
        if fused:
            qkv, o = a + names + ".weight", a + "o.weight"
            layers += [(qkv, "attn_qkv"), (o, "attn_out")]
            pairs += [(s, qkv, ("embed" if i == 0 else "mlp_out") + "->attn_qkv") for s in writers]
            pairs += [(qkv, qkv, "qk"), (qkv, o, "vo")]
        else:
            q, k, v, o = (a + w(n) for n in names)
            layers += [(q, "attn_q"), (k, "attn_k"), (v, "attn_v"), (o, "attn_out")]
            src = "embed" if i == 0 else "mlp_out"
            pairs += [(s, r, f"{src}->{kind}") for s in writers for r, kind in ((q, "attn_q"), (k, "attn_k"), (v, "attn_v"))]
            pairs += [(q, k, "qk"), (v, o, "vo")]
        layers += [(fc1, "mlp_in"), (fc2, "mlp_out")]
        pairs += [(o, fc1, "attn_out->mlp_in"), (fc1, fc2, "mlp_in->mlp_out")]
        writers = [fc2]
    layers.append(("head.weight", "unembed"))
    pairs.append((writers[0], "head.weight", "mlp_out->unembed"))
    return layers, pairs


@pytest.mark.parametrize("attn, names, params", [
    ("attn", ("q", "k", "v", "o"), False),
    ("attn", ("W_Q", "W_K", "W_V", "W_O"), True),
    ("self_attn", ("q_proj", "k_proj", "v_proj", "out_proj"), False),
    ("attention", ("query", "key", "value", "out"), False),
    ("attn", ("to_q", "to_k", "to_v", "to_out"), False),
    ("attn", "qkv", False),
    ("attn", "Wqkv", False),
])
def test_minimal_transformers_read_by_name(tmp_path, attn, names, params):
    model = MinimalTransformer(attn, names, params=params)
    pt, st = _compute_both(model, tmp_path)
    assert _table(pt) == _table(st) == minimal_expected(attn, names)


def test_per_head_qk_of_attn_q_k_v_o_naming(tmp_path):
    model = MinimalTransformer("attn", ("q", "k", "v", "o"))
    _, ds = _compute_both(model, tmp_path, dtype="float64")
    q = model.blocks[1].attn.q.weight.detach().double().numpy()
    k = model.blocks[1].attn.k.weight.detach().double().numpy()
    dh = q.shape[0] // 2
    per_head = []
    for h in range(2):  # left singular vectors of each head's Q and K rows, numpy float64
        uq = np.linalg.svd(q[h * dh:(h + 1) * dh])[0]
        uk = np.linalg.svd(k[h * dh:(h + 1) * dh])[0]
        per_head.append(np.abs(np.sum(uq * uk, axis=0)))
    expected = np.mean(np.mean(per_head, axis=0)[:10])
    got = ds.align_score.sel(pair="blocks.1.attn.q.weight -> blocks.1.attn.k.weight").item()
    assert got == pytest.approx(expected, abs=1e-9)


def test_early_warning_defaults_find_attn_q_k_v_o(tmp_path):
    """early_warning(ds) selects layers='attn' by kind: attn.q/k/v/o must be attention kinds."""
    from sedviz.analysis import early_warning

    model = MinimalTransformer("attn", ("q", "k", "v", "o"), n_layer=1)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    g = torch.Generator().manual_seed(0)
    lines = ["step,train_acc,val_acc"]
    for step in range(1, 31):
        loss = sum((p * torch.randn(p.shape, generator=g)).sum() * 1e-2 + (p**2).sum() * 1e-3 for p in model.parameters())
        opt.zero_grad()
        loss.backward()
        opt.step()
        torch.save(model.state_dict(), tmp_path / f"step_{step}.pt")
        lines.append(f"{step},{min(1, step / 10)},{min(1, step / 25)}")
    (tmp_path / "metrics.csv").write_text("\n".join(lines) + "\n")
    write_config(tmp_path, n_heads=2)
    ds = sedviz.compute(tmp_path, progress=False)
    kinds = dict(zip(ds.param.values.tolist(), ds.param_kind.values.tolist()))
    assert [kinds[f"blocks.0.attn.{x}.weight"] for x in "qkvo"] == ["attn_q", "attn_k", "attn_v", "attn_out"]
    res = early_warning(ds)
    assert res.grok_step.item() == 23  # first step with val_acc = step / 25 >= 0.9
    assert sorted(json.loads(res.attrs["params"])) == sorted(f"blocks.0.attn.{x}.weight" for x in "qkvo")


def test_torch_transformer_and_recurrent_models_pt_equals_safetensors(tmp_path):
    models = {
        "transformer": nn.Transformer(16, 2, 1, 1, 32, batch_first=True),
        "lstm": Recurrent(),
    }
    gru = nn.Module()
    gru.embed, gru.rnn, gru.head = nn.Embedding(10, 8), nn.GRU(8, 6, num_layers=2), nn.Linear(6, 3)
    models["gru"] = gru
    for name, model in models.items():
        pt, st = _compute_both(model, tmp_path / name)
        assert _table(pt) == _table(st), name
    layers, pairs = _table(pt)  # the GRU: n = rows [2h, 3h) is the candidate gate, as LSTM's g
    assert [k for _, k in layers] == ["embed", "lstm_ih", "lstm_hh", "lstm_ih", "lstm_hh", "unembed"]
    assert [(s.split(".")[-1], d.split(".")[-1]) for s, d, _ in pairs] == [
        ("weight", "weight_ih_l0"), ("weight_ih_l0", "weight_hh_l0"), ("weight_hh_l0", "weight_ih_l1"),
        ("weight_ih_l1", "weight_hh_l1"), ("weight_hh_l1", "weight")]


def test_cli_n_heads_kinds_and_pairs(tmp_path, capsys):
    from sedviz.cli import main

    model = MinimalTransformer("attn", ("q", "k", "v", "o"), n_layer=1)
    run = tmp_path / "run"
    run.mkdir()
    torch.save(model.state_dict(), run / "step_1.pt")
    q, k = "blocks.0.attn.q.weight", "blocks.0.attn.k.weight"
    args = ["compute", str(run), "-q", "--no-sketch", "--no-sva", "--max-lag", "none"]
    with pytest.warns(UserWarning, match="--n-heads"):
        assert main(args + ["-o", str(tmp_path / "a.zarr")]) == 0
    assert f"{q} -> {k}" not in sedviz.open(tmp_path / "a.zarr").pair.values  # heads unknown: no qk
    assert main(args + ["-o", str(tmp_path / "b.zarr"), "--n-heads", "2", "--kinds", "head.weight=linear"]) == 0
    ds = sedviz.open(tmp_path / "b.zarr")
    assert str(ds.pair_kind.sel(pair=f"{q} -> {k}").values) == "qk"
    assert str(ds.layer_kind.sel(layer="head.weight").values) == "linear"
    (tmp_path / "pairs.json").write_text(json.dumps([[q, k], ["blocks.0.mlp.fc1.weight", "blocks.0.mlp.fc2.weight"]]))
    assert main(args + ["-o", str(tmp_path / "c.zarr"), "--pairs", str(tmp_path / "pairs.json")]) == 0
    assert sedviz.open(tmp_path / "c.zarr").pair.values.tolist() == [f"{q} -> {k}", "blocks.0.mlp.fc1.weight -> blocks.0.mlp.fc2.weight"]
    (tmp_path / "bad.json").write_text("{")
    assert main(args + ["-o", str(tmp_path / "d.zarr"), "--pairs", str(tmp_path / "bad.json")]) == 2
    assert "--pairs" in capsys.readouterr().err
