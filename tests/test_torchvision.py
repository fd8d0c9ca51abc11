"""torchvision models (ResNet, VGG, ViT) saved with torch.save and safetensors: the same layers,
kinds and pairs from both files, read from torchvision's real module names with no hints.

The models are built in .venv-torchvision (scripts/torchvision_venv.sh, run by scripts/test.sh),
because torchvision does not load beside this venv's CPU torch build; sedviz reads the files here.
Without that venv the tests are skipped, except under CI, where they fail.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import sedviz

ROOT = Path(__file__).resolve().parents[1]
HELPER = ROOT / ".venv-torchvision" / "bin" / "python"


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    if not HELPER.exists():
        message = "no .venv-torchvision: run `bash scripts/torchvision_venv.sh` (scripts/test.sh does)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    out = tmp_path_factory.mktemp("torchvision")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    r = subprocess.run([str(HELPER), str(ROOT / "tests" / "torchvision_models.py"), str(out)],
                       capture_output=True, text=True, env={**env, "OMP_NUM_THREADS": "1"}, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return out


def read(run):
    ds = sedviz.compute(run, progress=False, sketch=False, sva=False, max_lag=None)
    return (list(zip(ds.layer.values.tolist(), ds.layer_kind.values.tolist())),
            list(zip(ds.pair_src.values.tolist(), ds.pair_dst.values.tolist(), ds.pair_kind.values.tolist())))


def resnet_expected(convs):
    """ResNet with one block per stage: conv1 (stem) -> blocks -> fc. A block's shortcut
    ``downsample.0`` reads the block's input and writes beside its last conv."""
    layers = [("conv1.weight", "conv")]
    pairs = []
    writers = ["conv1.weight"]
    for stage in range(1, 5):
        b = f"layer{stage}.0."
        names = [f"{b}conv{i}.weight" for i in range(1, convs + 1)]
        layers += [(n, "conv") for n in names]
        pairs += [(w, names[0], "conv->conv") for w in writers]
        pairs += [(a, c, "conv->conv") for a, c in zip(names, names[1:])]
        block_writers = [names[-1]]
        if stage > 1 or convs == 3:  # stride or width change: a 1x1 conv shortcut
            sc = f"{b}downsample.0.weight"
            layers.append((sc, "conv"))
            pairs += [(w, sc, "conv->conv") for w in writers]
            block_writers.append(sc)
        writers = block_writers
    layers.append(("fc.weight", "unembed"))
    pairs += [(w, "fc.weight", "conv->unembed") for w in writers]
    return layers, pairs


VGG11_CONVS = [0, 3, 6, 8, 11, 13, 16, 18]


def vgg_expected():
    convs = [f"features.{i}.weight" for i in VGG11_CONVS]
    lin = [f"classifier.{i}.weight" for i in (0, 3, 6)]
    layers = [(n, "conv") for n in convs] + [(n, "linear") for n in lin]
    # the last conv's 512 channels are flattened with 7x7 positions: no pair into classifier.0
    pairs = [(a, b, "conv->conv") for a, b in zip(convs, convs[1:])]
    pairs += [(lin[0], lin[1], "linear->linear"), (lin[1], lin[2], "linear->linear")]
    return layers, pairs


def vit_expected():
    layers = [("conv_proj.weight", "conv"), ("encoder.pos_embedding", "embed")]
    pairs = []
    writers = [("conv_proj.weight", "conv"), ("encoder.pos_embedding", "embed")]
    for i in range(2):
        b = f"encoder.layers.encoder_layer_{i}."
        qkv, out = b + "self_attention.in_proj_weight", b + "self_attention.out_proj.weight"
        fc1, fc2 = b + "mlp.0.weight", b + "mlp.3.weight"
        layers += [(qkv, "attn_qkv"), (out, "attn_out"), (fc1, "mlp_in"), (fc2, "mlp_out")]
        pairs += [(w, qkv, f"{k}->attn_qkv") for w, k in writers]
        pairs += [(qkv, qkv, "qk"), (qkv, out, "vo"), (out, fc1, "attn_out->mlp_in"), (fc1, fc2, "mlp_in->mlp_out")]
        writers = [(fc2, "mlp_out")]
    layers.append(("heads.head.weight", "unembed"))
    pairs.append((writers[0][0], "heads.head.weight", "mlp_out->unembed"))
    return layers, pairs


@pytest.mark.parametrize("name, expected", [
    ("resnet", resnet_expected(2)),
    ("resnet_bottleneck", resnet_expected(3)),
    ("vgg", vgg_expected()),
])
def test_convnets(saved, name, expected):
    pt, st = read(saved / "pt" / name), read(saved / "st" / name)
    assert pt == st
    layers, pairs = pt
    assert layers == expected[0]
    assert sorted(pairs) == sorted(expected[1])


def test_vit_heads_need_n_heads(saved):
    with pytest.warns(UserWarning, match=r"number of attention heads.*--n-heads"):
        read(saved / "st" / "vit")  # no config.json: the per-head Q/K pairs are skipped, and it says so
    ds = sedviz.compute(saved / "st" / "vit", progress=False, sketch=False, sva=False, max_lag=None, n_heads=2)
    got = (list(zip(ds.layer.values.tolist(), ds.layer_kind.values.tolist())),
           list(zip(ds.pair_src.values.tolist(), ds.pair_dst.values.tolist(), ds.pair_kind.values.tolist())))
    layers, pairs = vit_expected()
    assert got[0] == layers
    assert sorted(got[1]) == sorted(pairs)
