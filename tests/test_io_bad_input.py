"""Bad input to discovery and reading: every case a CheckpointError/SedvizError that names the file
and says what to do, raised from the original exception, never a deep torch/safetensors traceback."""
from __future__ import annotations

import builtins
import json
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from sedviz.errors import CheckpointError, SedvizError
from sedviz.io import discover_run, discover_runs, read_metrics, read_state
from sedviz.io.checkpoints import read_step_key


def small_state(seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.Linear(32, 8))
    return {k: v.clone() for k, v in net.state_dict().items()}


class RunsCode:
    """Unpickling this would execute code that creates the marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (builtins.exec, (f"open({str(self.marker)!r}, 'w').close()",))


def test_missing_path(tmp_path):
    missing = tmp_path / "no_such_run"
    with pytest.raises(CheckpointError, match="does not exist") as info:
        discover_run(missing)
    assert info.value.path == str(missing)
    with pytest.raises(CheckpointError, match=r"step_1\.pt: does not exist"):
        read_state(tmp_path / "step_1.pt")


def test_empty_folder(tmp_path):
    (tmp_path / ".hidden").write_text("x")  # hidden files do not count
    with pytest.raises(CheckpointError, match="is an empty folder.*Point sedviz at the folder") as info:
        discover_run(tmp_path)
    assert info.value.path == str(tmp_path)


def test_folder_without_checkpoints_lists_what_it_found(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "weights.npy").write_bytes(b"\x93NUMPY")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "config.yaml").write_text("a: 1")
    with pytest.raises(CheckpointError) as info:
        discover_run(tmp_path)
    message = str(info.value)
    assert "holds no checkpoint sedviz recognises" in message
    assert "notes.txt" in message and "weights.npy" in message and "sub/config.yaml" in message
    assert "*.safetensors" in info.value.fix


def test_zero_byte_file(tmp_path):
    empty = tmp_path / "step_2.pt"
    empty.touch()
    with pytest.raises(CheckpointError, match=r"step_2\.pt: is empty \(0 bytes\)"):
        read_state(empty)
    torch.save(small_state(), tmp_path / "step_1.pt")
    with pytest.raises(CheckpointError, match=r"step_2\.pt: is empty"):
        discover_run(tmp_path)
    with pytest.warns(UserWarning, match=r"step_2\.pt: is empty.*skipped"):
        run = discover_run(tmp_path, on_error="skip")
    assert [c.path.name for c in run.checkpoints] == ["step_1.pt"]


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_truncated_files(tmp_path, suffix):
    whole = tmp_path / f"whole{suffix}"
    state = small_state(1)
    if suffix == ".pt":
        torch.save(state, whole)
    else:
        save_file(state, str(whole))
    data = whole.read_bytes()
    cut = tmp_path / f"step_5{suffix}"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError) as info:
        read_state(cut)
    assert info.value.path == str(cut)
    assert f"{len(data) // 2} bytes" in info.value.problem
    assert "truncated or corrupted" in info.value.fix
    # The original error is kept as the cause, not lost and not shown as the message.
    assert info.value.__cause__ is not None
    assert not isinstance(info.value.__cause__, SedvizError)


def test_pickle_that_is_not_a_state_dict(tmp_path):
    torch.save([torch.ones(2), torch.zeros(2)], tmp_path / "a_list.pt")
    with pytest.raises(CheckpointError, match=r"a_list\.pt: holds a list, not a state dict.*model\.state_dict\(\)"):
        read_state(tmp_path / "a_list.pt")
    torch.save({"epoch": 3, "lr": 0.1, "name": "run"}, tmp_path / "no_tensors.pt")
    with pytest.raises(CheckpointError, match=r"no_tensors\.pt: holds a dict with no tensors \(keys: 'epoch', 'lr', 'name'\)"):
        read_state(tmp_path / "no_tensors.pt")
    torch.save({"weights": small_state()}, tmp_path / "odd_key.pt")
    with pytest.raises(CheckpointError, match=r"dicts under 'weights'"):
        read_state(tmp_path / "odd_key.pt")
    torch.save(torch.ones(3, 3), tmp_path / "tensor.pt")
    with pytest.raises(CheckpointError, match="a single tensor of shape \\(3, 3\\)"):
        read_state(tmp_path / "tensor.pt")


def test_whole_module_pickle_is_refused(tmp_path):
    torch.save(torch.nn.Linear(2, 2), tmp_path / "step_1.pt")
    with pytest.raises(CheckpointError, match=r"torch\.nn\.modules\.linear\.Linear.*refused") as info:
        read_state(tmp_path / "step_1.pt")
    assert "torch.save(model.state_dict(), path)" in info.value.fix


def test_pickle_that_would_run_code_is_refused(tmp_path):
    # The payload is live: a plain unpickle really creates the marker.
    control = tmp_path / "control_marker"
    pickle.loads(pickle.dumps(RunsCode(control)))
    assert control.exists()

    marker = tmp_path / "marker"
    torch.save({"model": small_state(), "extra": RunsCode(marker)}, tmp_path / "step_1.pt")
    with open(tmp_path / "step_2.pt", "wb") as fh:  # a raw pickle, not written by torch.save
        pickle.dump({"state_dict": RunsCode(marker)}, fh, protocol=2)
    with open(tmp_path / "step_3.pt", "wb") as fh:  # a raw pickle at the current protocol
        pickle.dump(RunsCode(marker), fh)

    with pytest.raises(CheckpointError, match=r"step_1\.pt: holds pickled Python objects.*builtins\.exec.*refused"):
        read_state(tmp_path / "step_1.pt")
    with pytest.raises(CheckpointError, match=r"step_2\.pt: holds pickled Python objects.*exec.*refused"):
        read_state(tmp_path / "step_2.pt")
    with pytest.raises(CheckpointError, match=r"step_3\.pt: .*refused"):
        read_state(tmp_path / "step_3.pt")
    # A file without a step in its name is opened during discovery, for its step key: refused too.
    torch.save({"model": RunsCode(marker), "step": 4}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match=r"evil\.pt: holds pickled Python objects"):
        read_step_key(tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match=r"evil\.pt"):
        discover_run(tmp_path)
    assert not marker.exists()


def test_duplicate_steps(tmp_path):
    torch.save(small_state(1), tmp_path / "b_step_5.pt")
    torch.save(small_state(2), tmp_path / "a_step_5.pt")
    torch.save(small_state(3), tmp_path / "step_7.pt")
    with pytest.raises(CheckpointError) as info:
        discover_run(tmp_path)
    message = str(info.value)
    assert "a_step_5.pt" in message and "b_step_5.pt" in message and "step 5" in message
    assert "one file per step" in info.value.fix
    with pytest.warns(UserWarning, match=r"kept a_step_5\.pt"):
        run = discover_run(tmp_path, on_error="skip")
    assert [(c.step, c.path.name) for c in run.checkpoints] == [(5, "a_step_5.pt"), (7, "step_7.pt")]


def test_duplicate_step_from_name_and_key(tmp_path):
    torch.save(small_state(1), tmp_path / "ckpt_10.pt")
    torch.save({"model": small_state(2), "step": 10}, tmp_path / "export.pt")
    with pytest.raises(CheckpointError, match="step 10"):
        discover_run(tmp_path)


def test_file_without_step(tmp_path):
    torch.save(small_state(), tmp_path / "weights_epoch_3.pt")
    with pytest.raises(CheckpointError, match=r"weights_epoch_3\.pt: has no step") as info:
        discover_run(tmp_path)
    assert "Put the optimizer step in the file name" in info.value.fix
    torch.save(small_state(), tmp_path / "step_1.pt")
    with pytest.warns(UserWarning, match=r"weights_epoch_3\.pt: has no step"):
        run = discover_run(tmp_path, on_error="skip")
    assert [c.step for c in run.checkpoints] == [1]


def test_every_file_skipped_still_raises(tmp_path):
    (tmp_path / "step_1.pt").touch()
    with pytest.warns(UserWarning, match="is empty"):
        with pytest.raises(CheckpointError, match="none could be used"):
            discover_run(tmp_path, on_error="skip")


def test_shard_without_index_and_index_with_missing_shard(tmp_path):
    state = small_state()
    save_file(state, str(tmp_path / "model-00001-of-00002.safetensors"))
    with pytest.raises(CheckpointError, match=r"model-00001-of-00002\.safetensors: is one shard.*no \*\.index\.json"):
        discover_run(tmp_path)
    index = tmp_path / "step_3.safetensors.index.json"
    index.write_text(json.dumps({"weight_map": {name: "step_3-00001-of-00002.safetensors" for name in state}}))
    with pytest.raises(CheckpointError, match=r"step_3\.safetensors\.index\.json: names the shard step_3-00001"):
        read_state(index)
    index.write_text("{not json")
    with pytest.raises(CheckpointError, match=r"step_3\.safetensors\.index\.json: is not a readable JSON shard index"):
        read_state(index)


def test_hf_folder_without_weights(tmp_path):
    folder = tmp_path / "checkpoint-5"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    with pytest.raises(CheckpointError, match=r"checkpoint-5: has none of model\.safetensors.*found: config\.json"):
        read_state(folder)


def test_lfs_pointer_and_unknown_bytes(tmp_path):
    pointer = tmp_path / "step_1.safetensors"
    pointer.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 123\n")
    with pytest.raises(CheckpointError, match=r"Git LFS pointer.*git lfs pull"):
        read_state(pointer)
    junk = tmp_path / "step_2.pt"
    junk.write_bytes(b"hello, this is text and not a checkpoint")
    with pytest.raises(CheckpointError, match=r"step_2\.pt: is neither a torch\.save file nor a safetensors file"):
        read_state(junk)


def test_bad_parameters():
    with pytest.raises(SedvizError, match="on_error='ignore'.*'raise' or 'skip'"):
        discover_run(".", on_error="ignore")
    with pytest.raises(SedvizError, match="on_error='never'"):
        read_metrics(None, on_error="never")
    with pytest.raises(SedvizError, match="no run folders given"):
        discover_runs([])


def test_bad_run_names(tmp_path):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        torch.save(small_state(), tmp_path / name / "step_1.pt")
    with pytest.raises(SedvizError, match="1 names for 2 paths"):
        discover_runs([tmp_path / "a", tmp_path / "b"], names=["x"])
    with pytest.raises(SedvizError, match=r"names \['x'\] are repeated"):
        discover_runs([tmp_path / "a", tmp_path / "b"], names=["x", "x"])
