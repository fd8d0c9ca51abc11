"""Real checkpoints from real libraries: layer roles, module order and consecutive pairs with no hints.

Every model is built by transformers (or plain torch) from a tiny config with random weights and saved
by the library's own code: ``save_pretrained`` (safetensors, keys sorted by name, config.json), and
``torch.save`` / ``safetensors.torch.save_file`` of the same state dict. For each architecture the
test asserts the exact layers, kinds and pairs, identical for the .pt and the safetensors file, and
the per-head Q/K and V/O alignment against numpy float64 computed here from the saved weights, with
no head count passed (it comes from config.json).
"""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

import sedviz

transformers = pytest.importorskip("transformers", reason="the test extra installs transformers: pip install -e '.[test]'")

from arch_models import (  # noqa: E402
    HF_ARCHS,
    MinimalTransformer,
    hf_model,
    save_pretrained_run,
    save_pt_and_safetensors,
    write_config,
)


def compute(run, **kw):
    kw = {"progress": False, "sketch": False, "sva": False, "max_lag": None, **kw}
    return sedviz.compute(run, **kw)


def table(ds):
    layers = list(zip(ds.layer.values.tolist(), ds.layer_kind.values.tolist()))
    pairs = list(zip(ds.pair_src.values.tolist(), ds.pair_dst.values.tolist(), ds.pair_kind.values.tolist()))
    return layers, pairs


# ------------------------------------------------------------------------------ expected tables
# Forward order, read from names alone; one block of each architecture (two for GPT-2).

GPT2_LAYERS = [
    ('transformer.wte.weight', 'embed'),
    ('transformer.wpe.weight', 'embed'),
    ('transformer.h.0.attn.c_attn.weight', 'attn_qkv'),
    ('transformer.h.0.attn.c_proj.weight', 'attn_out'),
    ('transformer.h.0.mlp.c_fc.weight', 'mlp_in'),
    ('transformer.h.0.mlp.c_proj.weight', 'mlp_out'),
    ('transformer.h.1.attn.c_attn.weight', 'attn_qkv'),
    ('transformer.h.1.attn.c_proj.weight', 'attn_out'),
    ('transformer.h.1.mlp.c_fc.weight', 'mlp_in'),
    ('transformer.h.1.mlp.c_proj.weight', 'mlp_out'),
]
GPT2_PAIRS = [
    ('transformer.wte.weight', 'transformer.h.0.attn.c_attn.weight', 'embed->attn_qkv'),
    ('transformer.wpe.weight', 'transformer.h.0.attn.c_attn.weight', 'embed->attn_qkv'),
    ('transformer.h.0.attn.c_attn.weight', 'transformer.h.0.attn.c_attn.weight', 'qk'),
    ('transformer.h.0.attn.c_attn.weight', 'transformer.h.0.attn.c_proj.weight', 'vo'),
    ('transformer.h.0.attn.c_proj.weight', 'transformer.h.0.mlp.c_fc.weight', 'attn_out->mlp_in'),
    ('transformer.h.0.mlp.c_fc.weight', 'transformer.h.0.mlp.c_proj.weight', 'mlp_in->mlp_out'),
    ('transformer.h.0.mlp.c_proj.weight', 'transformer.h.1.attn.c_attn.weight', 'mlp_out->attn_qkv'),
    ('transformer.h.1.attn.c_attn.weight', 'transformer.h.1.attn.c_attn.weight', 'qk'),
    ('transformer.h.1.attn.c_attn.weight', 'transformer.h.1.attn.c_proj.weight', 'vo'),
    ('transformer.h.1.attn.c_proj.weight', 'transformer.h.1.mlp.c_fc.weight', 'attn_out->mlp_in'),
    ('transformer.h.1.mlp.c_fc.weight', 'transformer.h.1.mlp.c_proj.weight', 'mlp_in->mlp_out'),
    ('transformer.h.1.mlp.c_proj.weight', 'transformer.wte.weight', 'mlp_out->unembed'),
]
GPT_NEOX_LAYERS = [
    ('gpt_neox.embed_in.weight', 'embed'),
    ('gpt_neox.layers.0.attention.query_key_value.weight', 'attn_qkv'),
    ('gpt_neox.layers.0.attention.dense.weight', 'attn_out'),
    ('gpt_neox.layers.0.mlp.dense_h_to_4h.weight', 'mlp_in'),
    ('gpt_neox.layers.0.mlp.dense_4h_to_h.weight', 'mlp_out'),
    ('lm_head.weight', 'unembed'),
]
GPT_NEOX_PAIRS = [
    ('gpt_neox.embed_in.weight', 'gpt_neox.layers.0.attention.query_key_value.weight', 'embed->attn_qkv'),
    ('gpt_neox.layers.0.attention.query_key_value.weight', 'gpt_neox.layers.0.attention.query_key_value.weight', 'qk'),
    ('gpt_neox.layers.0.attention.query_key_value.weight', 'gpt_neox.layers.0.attention.dense.weight', 'vo'),
    ('gpt_neox.layers.0.attention.dense.weight', 'gpt_neox.layers.0.mlp.dense_h_to_4h.weight', 'attn_out->mlp_in'),
    ('gpt_neox.layers.0.mlp.dense_h_to_4h.weight', 'gpt_neox.layers.0.mlp.dense_4h_to_h.weight', 'mlp_in->mlp_out'),
    ('gpt_neox.layers.0.mlp.dense_4h_to_h.weight', 'lm_head.weight', 'mlp_out->unembed'),
]
GPT_NEOX_PRETRAINED_LAYERS = [
    ('gpt_neox.embed_in.weight', 'embed'),
    ('gpt_neox.layers.0.attention.query_key_value.weight', 'attn_qkv'),
    ('gpt_neox.layers.0.attention.dense.weight', 'attn_out'),
    ('gpt_neox.layers.0.mlp.dense_h_to_4h.weight', 'mlp_in'),
    ('gpt_neox.layers.0.mlp.dense_4h_to_h.weight', 'mlp_out'),
    ('embed_out.weight', 'unembed'),
]
GPT_NEOX_PRETRAINED_PAIRS = [
    ('gpt_neox.embed_in.weight', 'gpt_neox.layers.0.attention.query_key_value.weight', 'embed->attn_qkv'),
    ('gpt_neox.layers.0.attention.query_key_value.weight', 'gpt_neox.layers.0.attention.query_key_value.weight', 'qk'),
    ('gpt_neox.layers.0.attention.query_key_value.weight', 'gpt_neox.layers.0.attention.dense.weight', 'vo'),
    ('gpt_neox.layers.0.attention.dense.weight', 'gpt_neox.layers.0.mlp.dense_h_to_4h.weight', 'attn_out->mlp_in'),
    ('gpt_neox.layers.0.mlp.dense_h_to_4h.weight', 'gpt_neox.layers.0.mlp.dense_4h_to_h.weight', 'mlp_in->mlp_out'),
    ('gpt_neox.layers.0.mlp.dense_4h_to_h.weight', 'embed_out.weight', 'mlp_out->unembed'),
]
LLAMA_LAYERS = [
    ('model.embed_tokens.weight', 'embed'),
    ('model.layers.0.self_attn.q_proj.weight', 'attn_q'),
    ('model.layers.0.self_attn.k_proj.weight', 'attn_k'),
    ('model.layers.0.self_attn.v_proj.weight', 'attn_v'),
    ('model.layers.0.self_attn.o_proj.weight', 'attn_out'),
    ('model.layers.0.mlp.gate_proj.weight', 'mlp_in'),
    ('model.layers.0.mlp.up_proj.weight', 'mlp_in'),
    ('model.layers.0.mlp.down_proj.weight', 'mlp_out'),
    ('lm_head.weight', 'unembed'),
]
LLAMA_PAIRS = [
    ('model.embed_tokens.weight', 'model.layers.0.self_attn.q_proj.weight', 'embed->attn_q'),
    ('model.embed_tokens.weight', 'model.layers.0.self_attn.k_proj.weight', 'embed->attn_k'),
    ('model.embed_tokens.weight', 'model.layers.0.self_attn.v_proj.weight', 'embed->attn_v'),
    ('model.layers.0.self_attn.q_proj.weight', 'model.layers.0.self_attn.k_proj.weight', 'qk'),
    ('model.layers.0.self_attn.v_proj.weight', 'model.layers.0.self_attn.o_proj.weight', 'vo'),
    ('model.layers.0.self_attn.o_proj.weight', 'model.layers.0.mlp.gate_proj.weight', 'attn_out->mlp_in'),
    ('model.layers.0.self_attn.o_proj.weight', 'model.layers.0.mlp.up_proj.weight', 'attn_out->mlp_in'),
    ('model.layers.0.mlp.gate_proj.weight', 'model.layers.0.mlp.down_proj.weight', 'mlp_in->mlp_out'),
    ('model.layers.0.mlp.up_proj.weight', 'model.layers.0.mlp.down_proj.weight', 'mlp_in->mlp_out'),
    ('model.layers.0.mlp.down_proj.weight', 'lm_head.weight', 'mlp_out->unembed'),
]
MISTRAL_LAYERS = [
    ('model.embed_tokens.weight', 'embed'),
    ('model.layers.0.self_attn.q_proj.weight', 'attn_q'),
    ('model.layers.0.self_attn.k_proj.weight', 'attn_k'),
    ('model.layers.0.self_attn.v_proj.weight', 'attn_v'),
    ('model.layers.0.self_attn.o_proj.weight', 'attn_out'),
    ('model.layers.0.mlp.gate_proj.weight', 'mlp_in'),
    ('model.layers.0.mlp.up_proj.weight', 'mlp_in'),
    ('model.layers.0.mlp.down_proj.weight', 'mlp_out'),
    ('lm_head.weight', 'unembed'),
]
MISTRAL_PAIRS = [
    ('model.embed_tokens.weight', 'model.layers.0.self_attn.q_proj.weight', 'embed->attn_q'),
    ('model.embed_tokens.weight', 'model.layers.0.self_attn.k_proj.weight', 'embed->attn_k'),
    ('model.embed_tokens.weight', 'model.layers.0.self_attn.v_proj.weight', 'embed->attn_v'),
    ('model.layers.0.self_attn.q_proj.weight', 'model.layers.0.self_attn.k_proj.weight', 'qk'),
    ('model.layers.0.self_attn.v_proj.weight', 'model.layers.0.self_attn.o_proj.weight', 'vo'),
    ('model.layers.0.self_attn.o_proj.weight', 'model.layers.0.mlp.gate_proj.weight', 'attn_out->mlp_in'),
    ('model.layers.0.self_attn.o_proj.weight', 'model.layers.0.mlp.up_proj.weight', 'attn_out->mlp_in'),
    ('model.layers.0.mlp.gate_proj.weight', 'model.layers.0.mlp.down_proj.weight', 'mlp_in->mlp_out'),
    ('model.layers.0.mlp.up_proj.weight', 'model.layers.0.mlp.down_proj.weight', 'mlp_in->mlp_out'),
    ('model.layers.0.mlp.down_proj.weight', 'lm_head.weight', 'mlp_out->unembed'),
]
QWEN2_LAYERS = [
    ('model.embed_tokens.weight', 'embed'),
    ('model.layers.0.self_attn.q_proj.weight', 'attn_q'),
    ('model.layers.0.self_attn.k_proj.weight', 'attn_k'),
    ('model.layers.0.self_attn.v_proj.weight', 'attn_v'),
    ('model.layers.0.self_attn.o_proj.weight', 'attn_out'),
    ('model.layers.0.mlp.gate_proj.weight', 'mlp_in'),
    ('model.layers.0.mlp.up_proj.weight', 'mlp_in'),
    ('model.layers.0.mlp.down_proj.weight', 'mlp_out'),
    ('lm_head.weight', 'unembed'),
]
QWEN2_PAIRS = [
    ('model.embed_tokens.weight', 'model.layers.0.self_attn.q_proj.weight', 'embed->attn_q'),
    ('model.embed_tokens.weight', 'model.layers.0.self_attn.k_proj.weight', 'embed->attn_k'),
    ('model.embed_tokens.weight', 'model.layers.0.self_attn.v_proj.weight', 'embed->attn_v'),
    ('model.layers.0.self_attn.q_proj.weight', 'model.layers.0.self_attn.k_proj.weight', 'qk'),
    ('model.layers.0.self_attn.v_proj.weight', 'model.layers.0.self_attn.o_proj.weight', 'vo'),
    ('model.layers.0.self_attn.o_proj.weight', 'model.layers.0.mlp.gate_proj.weight', 'attn_out->mlp_in'),
    ('model.layers.0.self_attn.o_proj.weight', 'model.layers.0.mlp.up_proj.weight', 'attn_out->mlp_in'),
    ('model.layers.0.mlp.gate_proj.weight', 'model.layers.0.mlp.down_proj.weight', 'mlp_in->mlp_out'),
    ('model.layers.0.mlp.up_proj.weight', 'model.layers.0.mlp.down_proj.weight', 'mlp_in->mlp_out'),
    ('model.layers.0.mlp.down_proj.weight', 'lm_head.weight', 'mlp_out->unembed'),
]
OPT_LAYERS = [
    ('model.decoder.embed_tokens.weight', 'embed'),
    ('model.decoder.embed_positions.weight', 'embed'),
    ('model.decoder.layers.0.self_attn.q_proj.weight', 'attn_q'),
    ('model.decoder.layers.0.self_attn.k_proj.weight', 'attn_k'),
    ('model.decoder.layers.0.self_attn.v_proj.weight', 'attn_v'),
    ('model.decoder.layers.0.self_attn.out_proj.weight', 'attn_out'),
    ('model.decoder.layers.0.fc1.weight', 'mlp_in'),
    ('model.decoder.layers.0.fc2.weight', 'mlp_out'),
]
OPT_PAIRS = [
    ('model.decoder.embed_tokens.weight', 'model.decoder.layers.0.self_attn.q_proj.weight', 'embed->attn_q'),
    ('model.decoder.embed_tokens.weight', 'model.decoder.layers.0.self_attn.k_proj.weight', 'embed->attn_k'),
    ('model.decoder.embed_tokens.weight', 'model.decoder.layers.0.self_attn.v_proj.weight', 'embed->attn_v'),
    ('model.decoder.embed_positions.weight', 'model.decoder.layers.0.self_attn.q_proj.weight', 'embed->attn_q'),
    ('model.decoder.embed_positions.weight', 'model.decoder.layers.0.self_attn.k_proj.weight', 'embed->attn_k'),
    ('model.decoder.embed_positions.weight', 'model.decoder.layers.0.self_attn.v_proj.weight', 'embed->attn_v'),
    ('model.decoder.layers.0.self_attn.q_proj.weight', 'model.decoder.layers.0.self_attn.k_proj.weight', 'qk'),
    ('model.decoder.layers.0.self_attn.v_proj.weight', 'model.decoder.layers.0.self_attn.out_proj.weight', 'vo'),
    ('model.decoder.layers.0.self_attn.out_proj.weight', 'model.decoder.layers.0.fc1.weight', 'attn_out->mlp_in'),
    ('model.decoder.layers.0.fc1.weight', 'model.decoder.layers.0.fc2.weight', 'mlp_in->mlp_out'),
    ('model.decoder.layers.0.fc2.weight', 'model.decoder.embed_tokens.weight', 'mlp_out->unembed'),
]
BERT_LAYERS = [
    ('bert.embeddings.word_embeddings.weight', 'embed'),
    ('bert.embeddings.position_embeddings.weight', 'embed'),
    ('bert.embeddings.token_type_embeddings.weight', 'embed'),
    ('bert.encoder.layer.0.attention.self.query.weight', 'attn_q'),
    ('bert.encoder.layer.0.attention.self.key.weight', 'attn_k'),
    ('bert.encoder.layer.0.attention.self.value.weight', 'attn_v'),
    ('bert.encoder.layer.0.attention.output.dense.weight', 'attn_out'),
    ('bert.encoder.layer.0.intermediate.dense.weight', 'mlp_in'),
    ('bert.encoder.layer.0.output.dense.weight', 'mlp_out'),
    ('bert.pooler.dense.weight', 'linear'),
    ('classifier.weight', 'unembed'),
]
BERT_PAIRS = [
    ('bert.embeddings.word_embeddings.weight', 'bert.encoder.layer.0.attention.self.query.weight', 'embed->attn_q'),
    ('bert.embeddings.word_embeddings.weight', 'bert.encoder.layer.0.attention.self.key.weight', 'embed->attn_k'),
    ('bert.embeddings.word_embeddings.weight', 'bert.encoder.layer.0.attention.self.value.weight', 'embed->attn_v'),
    ('bert.embeddings.position_embeddings.weight', 'bert.encoder.layer.0.attention.self.query.weight', 'embed->attn_q'),
    ('bert.embeddings.position_embeddings.weight', 'bert.encoder.layer.0.attention.self.key.weight', 'embed->attn_k'),
    ('bert.embeddings.position_embeddings.weight', 'bert.encoder.layer.0.attention.self.value.weight', 'embed->attn_v'),
    ('bert.embeddings.token_type_embeddings.weight', 'bert.encoder.layer.0.attention.self.query.weight', 'embed->attn_q'),
    ('bert.embeddings.token_type_embeddings.weight', 'bert.encoder.layer.0.attention.self.key.weight', 'embed->attn_k'),
    ('bert.embeddings.token_type_embeddings.weight', 'bert.encoder.layer.0.attention.self.value.weight', 'embed->attn_v'),
    ('bert.encoder.layer.0.attention.self.query.weight', 'bert.encoder.layer.0.attention.self.key.weight', 'qk'),
    ('bert.encoder.layer.0.attention.self.value.weight', 'bert.encoder.layer.0.attention.output.dense.weight', 'vo'),
    ('bert.encoder.layer.0.attention.output.dense.weight', 'bert.encoder.layer.0.intermediate.dense.weight', 'attn_out->mlp_in'),
    ('bert.encoder.layer.0.intermediate.dense.weight', 'bert.encoder.layer.0.output.dense.weight', 'mlp_in->mlp_out'),
    ('bert.encoder.layer.0.output.dense.weight', 'bert.pooler.dense.weight', 'mlp_out->linear'),
    ('bert.pooler.dense.weight', 'classifier.weight', 'linear->unembed'),
]
T5_LAYERS = [
    ('shared.weight', 'embed'),
    ('encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight', 'embed'),
    ('encoder.block.0.layer.0.SelfAttention.q.weight', 'attn_q'),
    ('encoder.block.0.layer.0.SelfAttention.k.weight', 'attn_k'),
    ('encoder.block.0.layer.0.SelfAttention.v.weight', 'attn_v'),
    ('encoder.block.0.layer.0.SelfAttention.o.weight', 'attn_out'),
    ('encoder.block.0.layer.1.DenseReluDense.wi.weight', 'mlp_in'),
    ('encoder.block.0.layer.1.DenseReluDense.wo.weight', 'mlp_out'),
    ('decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight', 'embed'),
    ('decoder.block.0.layer.0.SelfAttention.q.weight', 'attn_q'),
    ('decoder.block.0.layer.0.SelfAttention.k.weight', 'attn_k'),
    ('decoder.block.0.layer.0.SelfAttention.v.weight', 'attn_v'),
    ('decoder.block.0.layer.0.SelfAttention.o.weight', 'attn_out'),
    ('decoder.block.0.layer.1.EncDecAttention.q.weight', 'attn_q'),
    ('decoder.block.0.layer.1.EncDecAttention.k.weight', 'attn_k'),
    ('decoder.block.0.layer.1.EncDecAttention.v.weight', 'attn_v'),
    ('decoder.block.0.layer.1.EncDecAttention.o.weight', 'attn_out'),
    ('decoder.block.0.layer.2.DenseReluDense.wi.weight', 'mlp_in'),
    ('decoder.block.0.layer.2.DenseReluDense.wo.weight', 'mlp_out'),
]
T5_PAIRS = [
    ('shared.weight', 'encoder.block.0.layer.0.SelfAttention.q.weight', 'embed->attn_q'),
    ('shared.weight', 'encoder.block.0.layer.0.SelfAttention.k.weight', 'embed->attn_k'),
    ('shared.weight', 'encoder.block.0.layer.0.SelfAttention.v.weight', 'embed->attn_v'),
    ('encoder.block.0.layer.0.SelfAttention.q.weight', 'encoder.block.0.layer.0.SelfAttention.k.weight', 'qk'),
    ('encoder.block.0.layer.0.SelfAttention.v.weight', 'encoder.block.0.layer.0.SelfAttention.o.weight', 'vo'),
    ('encoder.block.0.layer.0.SelfAttention.o.weight', 'encoder.block.0.layer.1.DenseReluDense.wi.weight', 'attn_out->mlp_in'),
    ('encoder.block.0.layer.1.DenseReluDense.wi.weight', 'encoder.block.0.layer.1.DenseReluDense.wo.weight', 'mlp_in->mlp_out'),
    ('shared.weight', 'decoder.block.0.layer.0.SelfAttention.q.weight', 'embed->attn_q'),
    ('shared.weight', 'decoder.block.0.layer.0.SelfAttention.k.weight', 'embed->attn_k'),
    ('shared.weight', 'decoder.block.0.layer.0.SelfAttention.v.weight', 'embed->attn_v'),
    ('decoder.block.0.layer.0.SelfAttention.q.weight', 'decoder.block.0.layer.0.SelfAttention.k.weight', 'qk'),
    ('decoder.block.0.layer.0.SelfAttention.v.weight', 'decoder.block.0.layer.0.SelfAttention.o.weight', 'vo'),
    ('decoder.block.0.layer.0.SelfAttention.o.weight', 'decoder.block.0.layer.1.EncDecAttention.q.weight', 'attn_out->attn_q'),
    ('encoder.block.0.layer.1.DenseReluDense.wo.weight', 'decoder.block.0.layer.1.EncDecAttention.k.weight', 'mlp_out->attn_k'),
    ('encoder.block.0.layer.1.DenseReluDense.wo.weight', 'decoder.block.0.layer.1.EncDecAttention.v.weight', 'mlp_out->attn_v'),
    ('decoder.block.0.layer.1.EncDecAttention.q.weight', 'decoder.block.0.layer.1.EncDecAttention.k.weight', 'qk'),
    ('decoder.block.0.layer.1.EncDecAttention.v.weight', 'decoder.block.0.layer.1.EncDecAttention.o.weight', 'vo'),
    ('decoder.block.0.layer.1.EncDecAttention.o.weight', 'decoder.block.0.layer.2.DenseReluDense.wi.weight', 'attn_out->mlp_in'),
    ('decoder.block.0.layer.2.DenseReluDense.wi.weight', 'decoder.block.0.layer.2.DenseReluDense.wo.weight', 'mlp_in->mlp_out'),
    ('decoder.block.0.layer.2.DenseReluDense.wo.weight', 'shared.weight', 'mlp_out->unembed'),
]
VIT_LAYERS = [
    ('vit.embeddings.patch_embeddings.projection.weight', 'conv'),
    ('vit.embeddings.position_embeddings', 'embed'),
    ('vit.layers.0.attention.q_proj.weight', 'attn_q'),
    ('vit.layers.0.attention.k_proj.weight', 'attn_k'),
    ('vit.layers.0.attention.v_proj.weight', 'attn_v'),
    ('vit.layers.0.attention.o_proj.weight', 'attn_out'),
    ('vit.layers.0.mlp.fc1.weight', 'mlp_in'),
    ('vit.layers.0.mlp.fc2.weight', 'mlp_out'),
    ('classifier.weight', 'unembed'),
]
VIT_PAIRS = [
    ('vit.embeddings.patch_embeddings.projection.weight', 'vit.layers.0.attention.q_proj.weight', 'conv->attn_q'),
    ('vit.embeddings.patch_embeddings.projection.weight', 'vit.layers.0.attention.k_proj.weight', 'conv->attn_k'),
    ('vit.embeddings.patch_embeddings.projection.weight', 'vit.layers.0.attention.v_proj.weight', 'conv->attn_v'),
    ('vit.embeddings.position_embeddings', 'vit.layers.0.attention.q_proj.weight', 'embed->attn_q'),
    ('vit.embeddings.position_embeddings', 'vit.layers.0.attention.k_proj.weight', 'embed->attn_k'),
    ('vit.embeddings.position_embeddings', 'vit.layers.0.attention.v_proj.weight', 'embed->attn_v'),
    ('vit.layers.0.attention.q_proj.weight', 'vit.layers.0.attention.k_proj.weight', 'qk'),
    ('vit.layers.0.attention.v_proj.weight', 'vit.layers.0.attention.o_proj.weight', 'vo'),
    ('vit.layers.0.attention.o_proj.weight', 'vit.layers.0.mlp.fc1.weight', 'attn_out->mlp_in'),
    ('vit.layers.0.mlp.fc1.weight', 'vit.layers.0.mlp.fc2.weight', 'mlp_in->mlp_out'),
    ('vit.layers.0.mlp.fc2.weight', 'classifier.weight', 'mlp_out->unembed'),
]
VIT_PRETRAINED_LAYERS = [
    ('vit.embeddings.patch_embeddings.projection.weight', 'conv'),
    ('vit.embeddings.position_embeddings', 'embed'),
    ('vit.encoder.layer.0.attention.attention.query.weight', 'attn_q'),
    ('vit.encoder.layer.0.attention.attention.key.weight', 'attn_k'),
    ('vit.encoder.layer.0.attention.attention.value.weight', 'attn_v'),
    ('vit.encoder.layer.0.attention.output.dense.weight', 'attn_out'),
    ('vit.encoder.layer.0.intermediate.dense.weight', 'mlp_in'),
    ('vit.encoder.layer.0.output.dense.weight', 'mlp_out'),
    ('classifier.weight', 'unembed'),
]
VIT_PRETRAINED_PAIRS = [
    ('vit.embeddings.patch_embeddings.projection.weight', 'vit.encoder.layer.0.attention.attention.query.weight', 'conv->attn_q'),
    ('vit.embeddings.patch_embeddings.projection.weight', 'vit.encoder.layer.0.attention.attention.key.weight', 'conv->attn_k'),
    ('vit.embeddings.patch_embeddings.projection.weight', 'vit.encoder.layer.0.attention.attention.value.weight', 'conv->attn_v'),
    ('vit.embeddings.position_embeddings', 'vit.encoder.layer.0.attention.attention.query.weight', 'embed->attn_q'),
    ('vit.embeddings.position_embeddings', 'vit.encoder.layer.0.attention.attention.key.weight', 'embed->attn_k'),
    ('vit.embeddings.position_embeddings', 'vit.encoder.layer.0.attention.attention.value.weight', 'embed->attn_v'),
    ('vit.encoder.layer.0.attention.attention.query.weight', 'vit.encoder.layer.0.attention.attention.key.weight', 'qk'),
    ('vit.encoder.layer.0.attention.attention.value.weight', 'vit.encoder.layer.0.attention.output.dense.weight', 'vo'),
    ('vit.encoder.layer.0.attention.output.dense.weight', 'vit.encoder.layer.0.intermediate.dense.weight', 'attn_out->mlp_in'),
    ('vit.encoder.layer.0.intermediate.dense.weight', 'vit.encoder.layer.0.output.dense.weight', 'mlp_in->mlp_out'),
    ('vit.encoder.layer.0.output.dense.weight', 'classifier.weight', 'mlp_out->unembed'),
]

EXPECTED = {
    "gpt2": (GPT2_LAYERS, GPT2_PAIRS),
    "gpt_neox": (GPT_NEOX_LAYERS, GPT_NEOX_PAIRS),
    "llama": (LLAMA_LAYERS, LLAMA_PAIRS),
    "mistral": (MISTRAL_LAYERS, MISTRAL_PAIRS),
    "qwen2": (QWEN2_LAYERS, QWEN2_PAIRS),
    "opt": (OPT_LAYERS, OPT_PAIRS),
    "bert": (BERT_LAYERS, BERT_PAIRS),
    "t5": (T5_LAYERS, T5_PAIRS),
    "vit": (VIT_LAYERS, VIT_PAIRS),
}
# transformers 5 writes some families under their older names (save_pretrained converts).
EXPECTED_PRETRAINED = {"gpt_neox": (GPT_NEOX_PRETRAINED_LAYERS, GPT_NEOX_PRETRAINED_PAIRS),
                       "vit": (VIT_PRETRAINED_LAYERS, VIT_PRETRAINED_PAIRS)}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """arch -> (model, .pt run, safetensors run, save_pretrained run)."""
    root = tmp_path_factory.mktemp("archs")
    out = {}
    for arch in HF_ARCHS:
        model = hf_model(arch)
        pt, st = save_pt_and_safetensors(model, root / arch)
        out[arch] = (model, pt, st, save_pretrained_run(model, root / arch / "hf"))
    return out


@pytest.mark.parametrize("arch", HF_ARCHS)
def test_roles_and_pairs_same_for_pt_safetensors_and_save_pretrained(saved, arch):
    _, pt, st, hf = saved[arch]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # heads come from config.json: nothing is guessed
        got = {name: table(compute(run)) for name, run in (("pt", pt), ("st", st), ("hf", hf))}
    layers, pairs = EXPECTED[arch]
    assert got["pt"] == (layers, pairs)
    assert got["st"] == (layers, pairs)  # keys sorted by name: the same order, kinds and pairs
    assert got["hf"] == EXPECTED_PRETRAINED.get(arch, (layers, pairs))


def test_sharded_save_pretrained_reads_as_one_checkpoint(saved, tmp_path):
    model = saved["llama"][0]
    run = save_pretrained_run(model, tmp_path / "sharded", step=7, max_shard_size="20KB")
    shards = sorted(p.name for p in (run / "checkpoint-7").glob("*.safetensors"))
    assert len(shards) > 1 and (run / "checkpoint-7" / "model.safetensors.index.json").is_file()
    ds = compute(run)
    assert ds.step.values.tolist() == [7]
    assert table(ds) == (LLAMA_LAYERS, [p for p in LLAMA_PAIRS])


# ------------------------------------------------------------------------- numbers, per head
# Independent reference: numpy float64 SVDs of the blocks each pair names, from the saved tensors.


def left(m):
    return np.linalg.svd(m, full_matrices=False)[0]


def right(m):
    return np.linalg.svd(m, full_matrices=False)[2].T


def diag(x, y):
    n = min(x.shape[1], y.shape[1])
    return np.abs(np.sum(x[:, :n] * y[:, :n], axis=0))


def score(terms):
    """Mean over terms (heads) of |<x_j, y_j>|, then the mean of its first 10 entries."""
    return float(np.mean(np.mean(terms, axis=0)[:10]))


def weights(model):
    return {k: v.detach().double().numpy() for k, v in model.state_dict().items()}


def gpt2_reference(w, layer, heads):
    """GPT-2 Conv1D c_attn is stored (in, out): the layer acts as its transpose, rows [Q; K; V]."""
    a = w[f"transformer.h.{layer}.attn.c_attn.weight"].T
    o = w[f"transformer.h.{layer}.attn.c_proj.weight"].T
    d = a.shape[1]
    dh = d // heads
    qk = [diag(left(a[h * dh:(h + 1) * dh]), left(a[d + h * dh:d + (h + 1) * dh])) for h in range(heads)]
    vo = [diag(left(a[2 * d:]), right(o))]
    return score(qk), score(vo)


def neox_reference(w, heads):
    """query_key_value rows interleave per head: (head, [q, k, v], d_head)."""
    a = w["gpt_neox.layers.0.attention.query_key_value.weight"]
    o = w["gpt_neox.layers.0.attention.dense.weight"]
    dh = a.shape[1] // heads
    q = lambda h, j: a[(3 * h + j) * dh:(3 * h + j + 1) * dh]  # noqa: E731
    qk = [diag(left(q(h, 0)), left(q(h, 1))) for h in range(heads)]
    vo = [diag(left(q(h, 2)), right(o[:, h * dh:(h + 1) * dh])) for h in range(heads)]
    return score(qk), score(vo)


def gqa_reference(w, pre, heads, kv_heads):
    """Grouped-query attention: query head h reads key/value head h // (heads / kv_heads)."""
    q, k, v, o = (w[f"{pre}.{x}_proj.weight"] for x in "qkvo")
    dh = q.shape[0] // heads
    g = heads // kv_heads
    qk = [diag(left(q[h * dh:(h + 1) * dh]), left(k[(h // g) * dh:(h // g + 1) * dh])) for h in range(heads)]
    vo = [diag(left(v[(h // g) * dh:(h // g + 1) * dh]), right(o[:, h * dh:(h + 1) * dh])) for h in range(heads)]
    return score(qk), score(vo)


def separate_reference(q, k, v, o, heads):
    dh = q.shape[0] // heads
    qk = [diag(left(q[h * dh:(h + 1) * dh]), left(k[h * dh:(h + 1) * dh])) for h in range(heads)]
    return score(qk), score([diag(left(v), right(o))])


def align(ds, src, dst):
    return float(ds.align_score.sel(pair=f"{src} -> {dst}").squeeze())


def test_gpt2_heads_from_config_json(saved):
    model, pt, st, hf = saved["gpt2"]
    w = weights(model)
    ds = compute(hf, dtype="float64")
    for layer in (0, 1):
        qkv, out = f"transformer.h.{layer}.attn.c_attn.weight", f"transformer.h.{layer}.attn.c_proj.weight"
        qk, vo = gpt2_reference(w, layer, heads=4)
        assert align(ds, qkv, qkv) == pytest.approx(qk, abs=1e-9)
        assert align(ds, qkv, out) == pytest.approx(vo, abs=1e-9)
    # The width/64 guess (1 head here) gives another number, and says so.
    wrong, _ = gpt2_reference(w, 0, heads=1)
    assert abs(wrong - gpt2_reference(w, 0, heads=4)[0]) > 0.05
    (pt / "config.json").unlink()
    with pytest.warns(UserWarning, match=r"guessed 1 attention heads.*n_heads=.*--n-heads"):
        guessed = compute(pt, dtype="float64")
    qkv = "transformer.h.0.attn.c_attn.weight"
    assert align(guessed, qkv, qkv) == pytest.approx(wrong, abs=1e-9)
    assert align(compute(pt, dtype="float64", n_heads=4), qkv, qkv) == pytest.approx(align(ds, qkv, qkv), abs=1e-12)
    # rows x cols as the layer acts (out x in), not as Conv1D stores it (in x out)
    assert int(ds.rows.sel(layer=qkv)) == 192 and int(ds.cols.sel(layer=qkv)) == 64
    fc = "transformer.h.0.mlp.c_fc.weight"
    assert (int(ds.rows.sel(layer=fc)), int(ds.cols.sel(layer=fc))) == (256, 64)


def test_neox_interleaved_heads(saved):
    model, _, st, _ = saved["gpt_neox"]
    ds = compute(st, dtype="float64")
    qk, vo = neox_reference(weights(model), heads=4)
    qkv, dense = "gpt_neox.layers.0.attention.query_key_value.weight", "gpt_neox.layers.0.attention.dense.weight"
    assert align(ds, qkv, qkv) == pytest.approx(qk, abs=1e-9)
    assert align(ds, qkv, dense) == pytest.approx(vo, abs=1e-9)


@pytest.mark.parametrize("arch", ["llama", "mistral", "qwen2"])
def test_grouped_query_attention_heads(saved, arch):
    model, _, st, _ = saved[arch]
    ds = compute(st, dtype="float64")
    pre = "model.layers.0.self_attn"
    qk, vo = gqa_reference(weights(model), pre, heads=4, kv_heads=2)
    assert align(ds, f"{pre}.q_proj.weight", f"{pre}.k_proj.weight") == pytest.approx(qk, abs=1e-9)
    assert align(ds, f"{pre}.v_proj.weight", f"{pre}.o_proj.weight") == pytest.approx(vo, abs=1e-9)


@pytest.mark.parametrize("arch, pre, names", [
    ("bert", "bert.encoder.layer.0.attention", ("self.query", "self.key", "self.value", "output.dense")),
    ("opt", "model.decoder.layers.0.self_attn", ("q_proj", "k_proj", "v_proj", "out_proj")),
    ("t5", "decoder.block.0.layer.1.EncDecAttention", ("q", "k", "v", "o")),
])
def test_separate_projection_heads(saved, arch, pre, names):
    model, pt, _, _ = saved[arch]
    w = weights(model)
    ds = compute(pt, dtype="float64")
    q, k, v, o = (f"{pre}.{n}.weight" for n in names)
    qk, vo = separate_reference(w[q], w[k], w[v], w[o], heads=4)
    assert align(ds, q, k) == pytest.approx(qk, abs=1e-9)
    assert align(ds, v, o) == pytest.approx(vo, abs=1e-9)
