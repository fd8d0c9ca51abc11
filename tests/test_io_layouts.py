"""Every checkpoint layout sedviz reads, built from small real torch modules in tmp_path.

Each test checks that read_state returns exactly the saved tensors (torch.equal, same names) and
that discovery finds the right steps in numeric order.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from sedviz.io import CheckpointRef, RunSource, discover_run, discover_runs, read_state
from sedviz.io.checkpoints import read_step_key
from sedviz.io.discover import natural_key, step_from_name


def make_state(seed: int) -> dict[str, torch.Tensor]:
    """The state dict of a small real module (linear, conv, norm with buffers), seeded."""
    torch.manual_seed(seed)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(2, 3, 3),
        torch.nn.BatchNorm2d(3),
        torch.nn.Flatten(),
        torch.nn.Linear(12, 5),
        torch.nn.LayerNorm(5),
        torch.nn.Linear(5, 2),
    )
    with torch.no_grad():
        net[1].running_mean.normal_()
    return {k: v.clone() for k, v in net.state_dict().items()}


def assert_same(got: dict, expected: dict, *, ordered: bool = True) -> None:
    """Same names (in the same order for torch files) and bit-identical tensors."""
    assert list(got) == list(expected) if ordered else sorted(got) == sorted(expected)
    for name, tensor in expected.items():
        assert got[name].dtype == tensor.dtype, name
        assert torch.equal(got[name], tensor), name


def save_shards(state: dict, folder: Path, prefix: str, index_name: str, metadata=None) -> Path:
    """Split a state dict over two safetensors shards and write the index, as Hugging Face does."""
    names = list(state)
    parts = [names[: len(names) // 2], names[len(names) // 2:]]
    weight_map = {}
    for i, part in enumerate(parts, start=1):
        shard = f"{prefix}-{i:05d}-of-{len(parts):05d}.safetensors"
        save_file({n: state[n].contiguous() for n in part}, str(folder / shard))
        weight_map.update({n: shard for n in part})
    index = folder / index_name
    index.write_text(json.dumps({"metadata": metadata or {"total_size": 0}, "weight_map": weight_map}))
    return index


@pytest.mark.parametrize(
    "name, step",
    [
        ("step_000100.pt", 100),
        ("step100.pt", 100),
        ("ckpt_100.safetensors", 100),
        ("epoch=3-step=1760.ckpt", 1760),
        ("checkpoint-500", 500),
        ("model_500.pt", 500),
        ("iter_0001000.pt", 1000),
        ("global_step2000.pth", 2000),
        ("resnet18_300.bin", 300),
        ("1200.pt", 1200),
        ("step_40.safetensors.index.json", 40),
        ("last.ckpt", None),
        ("last-v1.ckpt", None),
        ("epoch_3.pt", None),
        ("gpt2.pt", None),
        ("seed1.pt", None),
    ],
)
def test_step_from_name(name, step):
    assert step_from_name(name) == step


def test_natural_order_not_lexical(tmp_path):
    expected = {}
    for step in (100, 2, 10):
        expected[step] = make_state(step)
        torch.save(expected[step], tmp_path / f"step_{step}.pt")
    run = discover_run(tmp_path)
    assert isinstance(run, RunSource)
    assert run.name == tmp_path.name
    assert run.root == tmp_path
    assert [c.step for c in run.checkpoints] == [2, 10, 100]
    assert [c.path.name for c in run.checkpoints] == ["step_2.pt", "step_10.pt", "step_100.pt"]
    assert {c.fmt for c in run.checkpoints} == {"torch"}
    for ref in run.checkpoints:
        assert_same(read_state(ref), expected[ref.step])
    assert sorted(["step_10", "step_2", "step_100"], key=natural_key) == ["step_2", "step_10", "step_100"]


def test_plain_pt_pth_bin_and_legacy_format(tmp_path):
    states = {1: make_state(1), 2: make_state(2), 3: make_state(3), 4: make_state(4)}
    torch.save(states[1], tmp_path / "model_1.pt")
    torch.save(states[2], tmp_path / "model_2.pth")
    torch.save(states[3], tmp_path / "model_3.bin")
    torch.save(states[4], tmp_path / "model_4.pt", _use_new_zipfile_serialization=False)  # not mmap-able
    run = discover_run(tmp_path)
    assert [(c.step, c.path.suffix) for c in run.checkpoints] == [(1, ".pt"), (2, ".pth"), (3, ".bin"), (4, ".pt")]
    for ref in run.checkpoints:
        assert_same(read_state(ref), states[ref.step])
    assert_same(read_state(str(tmp_path / "model_2.pth")), states[2])  # a plain str path works too


@pytest.mark.parametrize(
    "wrap",
    [
        lambda sd: {"state_dict": sd, "epoch": 2},
        lambda sd: {"model": sd, "optimizer": {"state": {0: {"exp_avg": torch.ones(3)}}, "param_groups": []}},
        lambda sd: {"module": sd},
        lambda sd: {"model_state_dict": sd, "optimizer_state_dict": {"state": {}}, "loss": 0.3},
        lambda sd: {"model_state": sd, "note": "text"},
        lambda sd: {"checkpoint_version": 3, "model": {"state_dict": sd, "arch": "mlp"}},  # nested wraps
        lambda sd: {**sd, "step": 7, "tag": "kept-only-tensors"},  # extra non-tensors beside the tensors
        lambda sd: {"state_dict": {f"module.{k}": v for k, v in sd.items()}},  # DDP
        lambda sd: {"model": {f"_orig_mod.{k}": v for k, v in sd.items()}},  # torch.compile
        lambda sd: {f"module._orig_mod.{k}": v for k, v in sd.items()},  # both
    ],
)
def test_wrapped_dicts(tmp_path, wrap):
    state = make_state(5)
    torch.save(wrap(state), tmp_path / "step_5.pt")
    assert_same(read_state(tmp_path / "step_5.pt"), state)


def test_parameters_are_returned_as_plain_tensors(tmp_path):
    net = torch.nn.Linear(3, 2)
    torch.save({"model": dict(net.named_parameters())}, tmp_path / "step_1.pt")
    got = read_state(tmp_path / "step_1.pt")
    assert torch.equal(got["weight"], net.weight.detach())
    assert not got["weight"].requires_grad


def test_model_prefix_kept_outside_lightning(tmp_path):
    state = {f"model.{k}": v for k, v in make_state(6).items()}
    torch.save(state, tmp_path / "step_6.pt")
    assert_same(read_state(tmp_path / "step_6.pt"), state)


def _lightning_ckpt(state: dict, step: int, epoch: int) -> dict:
    """The layout a LightningModule with `self.model = net` saves."""
    return {
        "epoch": epoch,
        "global_step": step,
        "pytorch-lightning_version": "2.4.0",
        "state_dict": {f"model.{k}": v for k, v in state.items()},
        "loops": {"fit_loop": {"epoch_progress": {"current": {"completed": epoch}}}},
        "callbacks": {"ModelCheckpoint{'monitor': None}": {"best_model_path": "", "best_model_score": None}},
        "optimizer_states": [{"state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.zeros(2)}}, "param_groups": []}],
        "lr_schedulers": [],
        "hparams_name": "kwargs",
        "hyper_parameters": {"lr": 0.01, "hidden": 12},
    }


def test_lightning_layout_with_logs_and_last_ckpt(tmp_path):
    ckpt_dir = tmp_path / "lightning_logs" / "version_0" / "checkpoints"
    ckpt_dir.mkdir(parents=True)
    states = {440: make_state(1), 1760: make_state(2), 880: make_state(3)}
    torch.save(_lightning_ckpt(states[440], 440, 0), ckpt_dir / "epoch=0-step=440.ckpt")
    torch.save(_lightning_ckpt(states[1760], 1760, 3), ckpt_dir / "epoch=3-step=1760.ckpt")
    torch.save(_lightning_ckpt(states[880], 880, 1), ckpt_dir / "epoch=1.ckpt")  # step only inside
    torch.save(_lightning_ckpt(states[1760], 1760, 3), ckpt_dir / "last.ckpt")  # a copy of the newest
    (tmp_path / "lightning_logs" / "version_0" / "metrics.csv").write_text("epoch,step,train_loss\n0,439,0.5\n")
    with pytest.warns(UserWarning, match=r"last\.ckpt.*same step 1760"):
        run = discover_run(tmp_path)
    assert [(c.step, c.path.name, c.fmt) for c in run.checkpoints] == [
        (440, "epoch=0-step=440.ckpt", "lightning"),
        (880, "epoch=1.ckpt", "lightning"),
        (1760, "epoch=3-step=1760.ckpt", "lightning"),
    ]
    assert [p.relative_to(tmp_path).as_posix() for p in run.metric_files] == ["lightning_logs/version_0/metrics.csv"]
    for ref in run.checkpoints:
        got = read_state(ref)
        assert "model.0.weight" not in got and "0.weight" in got
        assert_same(got, states[ref.step])
    assert read_step_key(ckpt_dir / "last.ckpt") == 1760


def test_step_key_for_files_without_step_in_name(tmp_path):
    states = {10: make_state(1), 20: make_state(2)}
    torch.save({"model": states[10], "global_step": 10}, tmp_path / "first.pt")
    torch.save({"state_dict": states[20], "step": torch.tensor(20)}, tmp_path / "second.pt")
    run = discover_run(tmp_path)
    assert [(c.step, c.path.name) for c in run.checkpoints] == [(10, "first.pt"), (20, "second.pt")]
    assert_same(read_state(run.checkpoints[1]), states[20])


def test_alias_without_step_is_skipped_when_others_exist(tmp_path):
    root = tmp_path / "sweep_steps1000"  # a run folder's own name gives no step to its files
    root.mkdir()
    torch.save(make_state(1), root / "step_1.pt")
    torch.save(make_state(2), root / "step_2.pt")
    torch.save(make_state(3), root / "final.pt")
    with pytest.warns(UserWarning, match=r"final\.pt: no step"):
        run = discover_run(root)
    assert [c.step for c in run.checkpoints] == [1, 2]


def test_safetensors_files_and_metadata_step(tmp_path):
    states = {100: make_state(1), 300: make_state(3), 200: make_state(2)}
    save_file(states[100], str(tmp_path / "ckpt_100.safetensors"))
    save_file(states[300], str(tmp_path / "ckpt_300.safetensors"))
    save_file(states[200], str(tmp_path / "best.safetensors"), metadata={"step": "200"})
    run = discover_run(tmp_path)
    assert [(c.step, c.path.name, c.fmt) for c in run.checkpoints] == [
        (100, "ckpt_100.safetensors", "safetensors"),
        (200, "best.safetensors", "safetensors"),
        (300, "ckpt_300.safetensors", "safetensors"),
    ]
    for ref in run.checkpoints:
        got = read_state(ref)
        assert set(got) == set(states[ref.step])
        for name, tensor in states[ref.step].items():
            assert torch.equal(got[name], tensor)


def test_safetensors_names_in_natural_order(tmp_path):
    state = {f"h.{i}.w": torch.full((2, 2), float(i)) for i in (0, 1, 2, 10, 11)}
    save_file(state, str(tmp_path / "step_1.safetensors"))
    assert list(read_state(tmp_path / "step_1.safetensors")) == ["h.0.w", "h.1.w", "h.2.w", "h.10.w", "h.11.w"]


def test_flat_series_of_sharded_sets(tmp_path):
    states = {50: make_state(5), 5: make_state(6)}
    for step, state in states.items():
        save_shards(state, tmp_path, f"model_step{step}", f"model_step{step}.safetensors.index.json")
    run = discover_run(tmp_path)
    assert [(c.step, c.path.name, c.fmt) for c in run.checkpoints] == [
        (5, "model_step5.safetensors.index.json", "safetensors_sharded"),
        (50, "model_step50.safetensors.index.json", "safetensors_sharded"),
    ]
    for ref in run.checkpoints:
        got = read_state(ref)
        assert list(got) == sorted(got, key=natural_key)  # safetensors keep no module order
        assert_same(got, states[ref.step], ordered=False)


def test_hf_checkpoint_folders(tmp_path):
    states = {step: make_state(step) for step in (2, 10, 100, 1000)}
    (tmp_path / "checkpoint-10").mkdir()
    save_file(states[10], str(tmp_path / "checkpoint-10" / "model.safetensors"))
    (tmp_path / "checkpoint-2").mkdir()
    torch.save(states[2], tmp_path / "checkpoint-2" / "pytorch_model.bin")
    (tmp_path / "checkpoint-100").mkdir()
    save_shards(states[100], tmp_path / "checkpoint-100", "model", "model.safetensors.index.json")
    for step in (2, 10, 100):
        folder = tmp_path / f"checkpoint-{step}"
        torch.save({"state": {}, "param_groups": []}, folder / "optimizer.pt")
        torch.save({"python": 1}, folder / "rng_state.pth")
        (folder / "trainer_state.json").write_text(json.dumps({"global_step": step, "log_history": []}))
    # The final save at the top of the output folder: a new step (1000) from the root trainer_state.json.
    save_file(states[1000], str(tmp_path / "model.safetensors"))
    torch.save({"lr": 0.1}, tmp_path / "training_args.bin")
    (tmp_path / "trainer_state.json").write_text(json.dumps({"global_step": 1000, "log_history": []}))

    run = discover_run(tmp_path)
    assert [(c.step, c.path.name, c.fmt) for c in run.checkpoints] == [
        (2, "checkpoint-2", "hf_dir"),
        (10, "checkpoint-10", "hf_dir"),
        (100, "checkpoint-100", "hf_dir"),
        (1000, "model.safetensors", "safetensors"),
    ]
    assert run.metric_files == [tmp_path / "trainer_state.json"]
    for ref in run.checkpoints:
        got = read_state(ref)
        assert set(got) == set(states[ref.step])
        for name, tensor in states[ref.step].items():
            assert torch.equal(got[name], tensor)
    assert read_step_key(tmp_path / "checkpoint-100") == 100


def test_hf_final_model_repeating_last_checkpoint_is_dropped(tmp_path):
    state = make_state(1)
    (tmp_path / "checkpoint-500").mkdir()
    save_file(state, str(tmp_path / "checkpoint-500" / "model.safetensors"))
    (tmp_path / "checkpoint-500" / "trainer_state.json").write_text(json.dumps({"global_step": 500, "log_history": []}))
    save_file(state, str(tmp_path / "model.safetensors"))
    (tmp_path / "trainer_state.json").write_text(json.dumps({"global_step": 500, "log_history": []}))
    with pytest.warns(UserWarning, match="same step 500"):
        run = discover_run(tmp_path)
    assert [(c.step, c.path.name) for c in run.checkpoints] == [(500, "checkpoint-500")]


def test_single_hf_folder_or_file_given_directly(tmp_path):
    state = make_state(4)
    folder = tmp_path / "checkpoint-700"
    folder.mkdir()
    save_file(state, str(folder / "model.safetensors"))
    torch.save({}, folder / "scheduler.pt")
    run = discover_run(folder)
    assert [(c.step, c.path.name) for c in run.checkpoints] == [(700, "model.safetensors")]
    assert run.name == "checkpoint-700"
    torch.save(state, tmp_path / "step_9.pt")
    run = discover_run(tmp_path / "step_9.pt")
    assert (run.name, run.root, [c.step for c in run.checkpoints]) == ("step_9", tmp_path, [9])


def test_step_from_folder_above_file(tmp_path):
    states = {}
    for step in (300, 25):
        (tmp_path / f"step_{step}").mkdir()
        states[step] = make_state(step)
        torch.save({"model": states[step]}, tmp_path / f"step_{step}" / "model.pt")
    run = discover_run(tmp_path)
    assert [c.step for c in run.checkpoints] == [25, 300]
    assert_same(read_state(run.checkpoints[0]), states[25])


def test_optimizer_and_data_files_are_not_checkpoints(tmp_path):
    torch.save(make_state(1), tmp_path / "model_100.pt")
    torch.save({"state": {}, "param_groups": []}, tmp_path / "optimizer_100.pt")
    (tmp_path / "train_100.bin").write_bytes(bytes(range(7, 200)))  # raw token data, not torch
    run = discover_run(tmp_path)
    assert [c.path.name for c in run.checkpoints] == ["model_100.pt"]


def test_misnamed_safetensors_file_is_read_by_content(tmp_path):
    state = make_state(8)
    save_file(state, str(tmp_path / "step_8.pt"))
    got = read_state(tmp_path / "step_8.pt")
    assert set(got) == set(state) and all(torch.equal(got[k], v) for k, v in state.items())


def test_discover_runs_names_and_duplicates(tmp_path):
    paths = []
    for seed in ("seed1", "seed2"):
        folder = tmp_path / seed / "run"
        folder.mkdir(parents=True)
        torch.save(make_state(1), folder / "step_1.pt")
        paths.append(folder)
    other = tmp_path / "other"
    other.mkdir()
    torch.save(make_state(2), other / "step_3.pt")
    with pytest.warns(UserWarning, match="renamed"):
        runs = discover_runs([*paths, other])
    assert [r.name for r in runs] == ["seed1/run", "seed2/run", "other"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        runs = discover_runs([*paths, other], names=["a", "b", "c"])
    assert [r.name for r in runs] == ["a", "b", "c"]
    # The same folder twice: parent names collide too, so _2 is appended.
    with pytest.warns(UserWarning, match="renamed"):
        runs = discover_runs([other, other])
    assert [r.name for r in runs] == [f"{tmp_path.name}/other", f"{tmp_path.name}/other_2"]


def test_checkpoint_ref_is_frozen_and_hashable():
    ref = CheckpointRef(path=Path("a/step_1.pt"), step=1, fmt="torch")
    assert {ref: 1}[CheckpointRef(Path("a/step_1.pt"), 1, "torch")] == 1
    with pytest.raises(AttributeError):
        ref.step = 2  # type: ignore[misc]


def _hub_cache(cache: Path, repo: str, revisions: dict[str, dict]) -> Path:
    """A hub cache as ``from_pretrained(repo, revision=rev)`` leaves it: files in blobs/ by content
    hash, snapshots/<commit>/ of symlinks to them, refs/<rev> holding the commit."""
    import hashlib

    import transformers

    root = cache / ("models--" + repo.replace("/", "--"))
    for rev, state in revisions.items():
        commit = hashlib.sha1(rev.encode()).hexdigest() if rev != "main" else None
        if rev == "main":
            commit = (root / "refs" / state["same_as"]).read_text()
        else:
            tmp = cache / "tmp" / rev
            torch.manual_seed(state["seed"])
            model = transformers.GPTNeoXForCausalLM(transformers.GPTNeoXConfig(
                hidden_size=32, num_attention_heads=4, num_hidden_layers=1, intermediate_size=64, vocab_size=40,
                max_position_embeddings=16))
            model.save_pretrained(tmp)
            state["weights"] = {k: v.clone() for k, v in model.state_dict().items()}
            snap = root / "snapshots" / commit
            snap.mkdir(parents=True)
            for f in tmp.iterdir():
                blob = root / "blobs" / hashlib.sha256(f.read_bytes()).hexdigest()
                blob.parent.mkdir(parents=True, exist_ok=True)
                blob.write_bytes(f.read_bytes())
                (snap / f.name).symlink_to(Path("..") / ".." / "blobs" / blob.name)
        (root / "refs").mkdir(parents=True, exist_ok=True)
        (root / "refs" / rev).write_text(commit)
    return root


def test_hub_cache_of_many_revisions_is_one_run(tmp_path):
    pytest.importorskip("transformers")
    from huggingface_hub import scan_cache_dir

    revisions = {"step1000": {"seed": 1}, "step0": {"seed": 0}, "step143000": {"seed": 2}, "main": {"same_as": "step143000"}}
    root = _hub_cache(tmp_path / "hub", "EleutherAI/pythia-tiny", revisions)
    # the layout is the hub library's own: its cache scanner sees one repo with these refs
    info = scan_cache_dir(tmp_path / "hub")
    (repo,) = info.repos
    assert repo.repo_id == "EleutherAI/pythia-tiny" and len(repo.revisions) == 3
    assert sorted(ref for r in repo.revisions for ref in r.refs) == ["main", "step0", "step1000", "step143000"]
    run = discover_run(root)
    assert run.name == "EleutherAI/pythia-tiny"
    assert [c.step for c in run.checkpoints] == [0, 1000, 143000]
    assert all(c.fmt == "hf_dir" and c.path.parent.name == "snapshots" for c in run.checkpoints)
    assert run.model_config.model_type == "gpt_neox" and run.model_config.n_heads == 4
    for ref, rev in zip(run.checkpoints, ("step0", "step1000", "step143000")):
        got = read_state(ref)
        saved = revisions[rev]["weights"]
        assert torch.equal(got["gpt_neox.layers.0.attention.query_key_value.weight"],
                           saved["gpt_neox.layers.0.attention.query_key_value.weight"])
    import sedviz

    ds = sedviz.compute(root, progress=False, sketch=False)
    assert ds.run.values.tolist() == ["EleutherAI/pythia-tiny"] and ds.step.values.tolist() == [0, 1000, 143000]
    qkv = "gpt_neox.layers.0.attention.query_key_value.weight"
    assert f"{qkv} -> {qkv}" in ds.pair.values  # per-head qk: 4 heads from the snapshot's config.json


def test_hub_cache_revision_without_step_is_skipped_with_a_warning(tmp_path):
    pytest.importorskip("transformers")
    root = _hub_cache(tmp_path / "hub", "org/m", {"step5": {"seed": 0}, "v1.0": {"seed": 1}})
    with pytest.warns(UserWarning, match=r"v1\.0 .* carry no step"):
        run = discover_run(root)
    assert [c.step for c in run.checkpoints] == [5]
