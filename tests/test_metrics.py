"""Metric logs beside checkpoints -> one step-indexed float64 table with sedviz names."""
from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from sedviz.errors import SedvizError
from sedviz.io import RunSource, discover_run, read_metrics
from sedviz.io.metrics import metric_name


def run_with(tmp_path, files: dict[str, str]) -> RunSource:
    """A run folder with one tiny checkpoint and the given log files (relative path -> text)."""
    torch.save({"w": torch.eye(2)}, tmp_path / "step_1.pt")
    for rel, text in files.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return discover_run(tmp_path)


def check_table(table: pd.DataFrame) -> None:
    assert table.index.name == "step"
    assert table.index.dtype == np.int64
    assert table.index.is_unique and table.index.is_monotonic_increasing
    assert all(dtype == np.float64 for dtype in table.dtypes)


@pytest.mark.parametrize(
    "logged, name",
    [
        ("loss", "train_loss"),
        ("train/loss", "train_loss"),
        ("eval_loss", "val_loss"),
        ("val/loss", "val_loss"),
        ("validation_loss", "val_loss"),
        ("eval_accuracy", "val_acc"),
        ("val/acc", "val_acc"),
        ("val_accuracy", "val_acc"),
        ("train/acc", "train_acc"),
        ("lr-Adam/pg1", "lr-Adam_pg1"),
        ("grad_norm", "grad_norm"),
    ],
)
def test_metric_names(logged, name):
    assert metric_name(logged) == name


def test_csv_columns_normalized_and_text_dropped(tmp_path):
    run = run_with(
        tmp_path,
        {"metrics.csv": "step,train/loss,val/loss,val/acc,phase\n20,0.5,0.75,0.25,warm\n3,1.5,,,warm\n100,0.125,0.5,0.875,main\n"},
    )
    table = read_metrics(run)
    check_table(table)
    assert list(table.index) == [3, 20, 100]
    assert list(table.columns) == ["train_loss", "val_loss", "val_acc"]
    assert table.loc[3, "train_loss"] == 1.5 and math.isnan(table.loc[3, "val_loss"])
    assert table.loc[20, "val_acc"] == 0.25
    assert table.loc[100].tolist() == [0.125, 0.5, 0.875]


def test_lightning_csvlogger_rows_merged(tmp_path):
    # CSVLogger writes train and validation rows separately, both at the same step.
    text = (
        "epoch,step,train_loss,val_loss,val_acc\n"
        "0,49,0.9,,\n"
        "0,49,,0.8,0.5\n"
        "1,99,0.7,,\n"
        "1,99,,0.6,0.75\n"
    )
    run = run_with(tmp_path, {"lightning_logs/version_0/metrics.csv": text})
    assert [p.name for p in run.metric_files] == ["metrics.csv"]
    table = read_metrics(run)
    check_table(table)
    assert table.to_dict("index") == {
        49: {"epoch": 0.0, "train_loss": 0.9, "val_loss": 0.8, "val_acc": 0.5},
        99: {"epoch": 1.0, "train_loss": 0.7, "val_loss": 0.6, "val_acc": 0.75},
    }


def test_jsonl_with_nested_records_and_truncated_last_line(tmp_path):
    lines = [
        json.dumps({"config": {"lr": 0.1}}),  # no step: not a metric row
        json.dumps({"step": 10, "train": {"loss": 2.0}, "note": "x"}),
        json.dumps({"global_step": 20, "train/loss": 1.0, "val/loss": 1.25, "flag": True}),
        json.dumps({"step": 10, "val/acc": 0.5}),
        '{"step": 30, "train/lo',  # the writer was killed mid-line
    ]
    run = run_with(tmp_path, {"log.jsonl": "\n".join(lines) + "\n"})
    with pytest.warns(UserWarning, match=r"log\.jsonl: skipped 1 line\(s\).*line 5.*kept the other 3 rows"):
        table = read_metrics(run)
    check_table(table)
    assert list(table.index) == [10, 20]
    assert table.loc[10, "train_loss"] == 2.0 and table.loc[10, "val_acc"] == 0.5
    assert table.loc[20, "val_loss"] == 1.25 and table.loc[20, "flag"] == 1.0
    with pytest.raises(SedvizError, match=r"log\.jsonl: has 1 line\(s\) that are not JSON objects \(line 5\)"):
        read_metrics(run, on_error="raise")


def test_trainer_state_log_history(tmp_path):
    history = [
        {"epoch": 0.5, "grad_norm": 1.5, "learning_rate": 0.001, "loss": 2.5, "step": 10},
        {"epoch": 0.5, "eval_loss": 2.25, "eval_accuracy": 0.25, "eval_runtime": 1.0, "step": 10},
        {"epoch": 1.0, "loss": 1.5, "step": 20},
        {"epoch": 1.0, "eval_loss": 1.75, "eval_accuracy": 0.5, "step": 20},
        # End-of-training summary: its train_loss is the mean of all steps, not step 20's loss.
        {"epoch": 1.0, "step": 20, "total_flos": 1e9, "train_loss": 2.0, "train_runtime": 12.0},
    ]
    state = {"global_step": 20, "log_history": history}
    (tmp_path / "checkpoint-20").mkdir()
    torch.save({"w": torch.eye(2)}, tmp_path / "checkpoint-20" / "pytorch_model.bin")
    (tmp_path / "checkpoint-20" / "trainer_state.json").write_text(json.dumps(state))
    (tmp_path / "checkpoint-10").mkdir()
    torch.save({"w": torch.eye(2)}, tmp_path / "checkpoint-10" / "pytorch_model.bin")
    (tmp_path / "checkpoint-10" / "trainer_state.json").write_text(json.dumps({"log_history": history[:2]}))
    run = discover_run(tmp_path)
    # The newest checkpoint's trainer_state.json is used when the run folder has none.
    assert run.metric_files == [tmp_path / "checkpoint-20" / "trainer_state.json"]
    table = read_metrics(run)
    check_table(table)
    assert list(table.index) == [10, 20]
    assert table.loc[10, "train_loss"] == 2.5 and table.loc[10, "val_loss"] == 2.25
    assert table.loc[20, "train_loss"] == 1.5  # not the summary's 2.0
    assert table.loc[20, "val_acc"] == 0.5
    assert table.loc[20, "train_runtime"] == 12.0 and math.isnan(table.loc[10, "train_runtime"])
    assert table.loc[10, "learning_rate"] == 0.001


def test_several_files_merged_later_file_wins(tmp_path):
    run = run_with(
        tmp_path,
        {
            "a_metrics.csv": "global_step,loss\n1,3.0\n2,2.0\n",
            "b_eval.jsonl": json.dumps({"step": 2, "eval_loss": 2.5, "loss": 1.75}) + "\n",
        },
    )
    assert [p.name for p in run.metric_files] == ["a_metrics.csv", "b_eval.jsonl"]
    table = read_metrics(run)
    check_table(table)
    assert list(table.columns) == ["train_loss", "val_loss"]
    assert table.loc[2].tolist() == [1.75, 2.5]  # b_eval.jsonl is read after a_metrics.csv
    assert table.loc[1, "train_loss"] == 3.0 and math.isnan(table.loc[1, "val_loss"])


def test_csv_without_step_column_is_not_a_metric_file(tmp_path):
    run = run_with(tmp_path, {"predictions.csv": "id,label\n1,0\n", "metrics.csv": "id,loss\n1,0.5\n"})
    assert [p.name for p in run.metric_files] == ["metrics.csv"]  # metrics.csv is always looked at
    with pytest.warns(UserWarning, match=r"metrics\.csv: has no step column \(columns: id, loss\).*skipped"):
        table = read_metrics(run)
    assert table.empty and table.index.dtype == np.int64


def test_garbled_logs_are_skipped_with_a_warning_or_raise(tmp_path):
    run = run_with(
        tmp_path,
        {
            "good.csv": "step,val_loss\n5,0.5\n",
            "garbled.csv": "step,loss\n1,0.5\n2,0.4,9,9,9\n",
            "junk.jsonl": "\x00\x01 not json at all\n{{{\n",
            "trainer_state.json": '{"log_history": [',
        },
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        table = read_metrics(run)
    messages = [str(w.message) for w in caught]
    assert any("garbled.csv: is not a readable CSV" in m and "skipped" in m for m in messages)
    assert any("junk.jsonl: has 2 line(s) that are not JSON objects" in m for m in messages)
    assert any("trainer_state.json: is not readable JSON" in m for m in messages)
    assert table.to_dict("index") == {5: {"val_loss": 0.5}}
    with pytest.raises(SedvizError, match=r"garbled\.csv: is not a readable CSV.*Fix or delete the file"):
        read_metrics(run, on_error="raise")


def test_non_numeric_cells_become_nan_with_a_warning(tmp_path):
    run = run_with(tmp_path, {"metrics.csv": "step,loss\n1,0.5\n2,oops\n3,0.25\n"})
    with pytest.warns(UserWarning, match=r"1 value\(s\) in column 'loss' are not numbers"):
        table = read_metrics(run)
    assert table.loc[1, "train_loss"] == 0.5 and math.isnan(table.loc[2, "train_loss"])
    assert table.loc[3, "train_loss"] == 0.25


def test_no_metric_files_gives_an_empty_table(tmp_path):
    run = run_with(tmp_path, {})
    assert run.metric_files == []
    table = read_metrics(run)
    check_table(table)
    assert table.shape == (0, 0)


def test_align_metrics_matches_each_column_on_its_own_steps():
    from sedviz.dataset import align_metrics

    checkpoints = np.arange(15, 151, 15)
    logged = pd.DataFrame(
        {"train_loss": [1.0 / s for s in range(5, 151, 5)]}, index=pd.Index(range(5, 151, 5), name="step")
    )
    val = pd.DataFrame({"val_loss": [s / 1000 for s in range(25, 151, 25)]}, index=pd.Index(range(25, 151, 25), name="step"))
    table = pd.concat([logged, val], axis=1).sort_index()
    got = align_metrics(table, checkpoints)
    assert got.index.tolist() == checkpoints.tolist()
    np.testing.assert_array_equal(got.train_loss.values, 1.0 / checkpoints)  # logged at every checkpoint step
    # validation every 25 steps: the nearest within 7.5 steps of a checkpoint saved every 15
    want = {15: np.nan, 30: 0.025, 45: 0.05, 60: np.nan, 75: 0.075, 90: np.nan, 105: 0.1, 120: 0.125, 135: np.nan, 150: 0.15}
    np.testing.assert_array_equal(got.val_loss.values, [want[s] for s in checkpoints])


def test_align_metrics_uneven_checkpoints_and_ties():
    from sedviz.dataset import align_metrics

    table = pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0]}, index=pd.Index([0, 6, 9, 1000], name="step"))
    # checkpoints 0, 10, 1000 (log-spaced): 10 reaches back 5 steps (to 6: 4 away; 9 is nearer),
    # 1000 reaches 495 steps both ways; a value exactly midway goes to both sides, the later one wins a tie.
    got = align_metrics(table, np.array([0, 10, 1000]))
    assert got.x.tolist() == [1.0, 3.0, 4.0]
    tie = pd.DataFrame({"x": [1.0, 2.0]}, index=pd.Index([8, 12], name="step"))
    assert align_metrics(tie, np.array([0, 10, 20])).x.tolist()[1] == 2.0
    lone = align_metrics(table, np.array([6]))
    assert lone.x.tolist() == [2.0]
    assert np.isnan(align_metrics(table, np.array([7])).x.item())  # a lone checkpoint takes exact steps only


def test_end_of_training_summaries_become_run_attrs(tmp_path):
    import sedviz

    from helpers import write_mlp_run

    write_mlp_run(tmp_path / "r", n=3)
    history = [
        {"step": 10, "loss": 2.5}, {"step": 20, "eval_loss": 2.0, "eval_runtime": 0.5, "eval_samples_per_second": 9.0},
        {"step": 30, "train_runtime": 12.0, "total_flos": 1e9, "train_steps_per_second": 2.5, "train_loss": 2.2},
    ]
    (tmp_path / "r" / "trainer_state.json").write_text(json.dumps({"global_step": 30, "log_history": history}))
    ds = sedviz.compute(tmp_path / "r", progress=False, sketch=False)
    for name in ("train_runtime", "total_flos", "train_steps_per_second", "eval_runtime", "eval_samples_per_second"):
        assert name not in ds.data_vars
    assert json.loads(ds.attrs["summary"]) == {
        "r": {"eval_runtime": 0.5, "eval_samples_per_second": 9.0, "total_flos": 1e9, "train_runtime": 12.0,
              "train_steps_per_second": 2.5}
    }
    assert "val_loss" in ds.data_vars and ds.val_loss.sel(run="r", step=20).item() == 2.0
