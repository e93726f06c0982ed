"""TensorBoard logs: two entries per run, HParams trials named <experiment>/<run>, and the
committed runs laid out the same way."""

import json
import pathlib

import keras
import numpy as np
import tensorflow as tf
from tensorboard.plugins.hparams import metadata

from alexnet_tf import tensorboard_logs

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def events(log_dir):
    """(tag, step, summary value) of every summary in one log folder's event files."""
    found = []
    for path in sorted(pathlib.Path(log_dir).glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            found += [(value.tag, event.step, value) for value in event.summary.value]
    return found


def trial_ids(log_dir):
    return [
        metadata.parse_session_start_info_plugin_data(value.metadata.plugin_data.content).group_name
        for tag, _, value in events(log_dir)
        if tag == metadata.SESSION_START_INFO_TAG
    ]


def dashboard_columns(log_dir):
    """(hparam names, (group, tag) of the metrics) of the HParams dashboard's column record,
    checking that the columns shown at first are the SHOWN_HPARAMS."""
    for tag, _, value in events(log_dir):
        if tag == metadata.EXPERIMENT_TAG:
            experiment = metadata.parse_experiment_plugin_data(value.metadata.plugin_data.content)
            shown = [info.name for info in experiment.hparam_infos if info.differs]
            assert shown == list(tensorboard_logs.SHOWN_HPARAMS)
            return (
                [info.name for info in experiment.hparam_infos],
                [(info.name.group, info.name.tag) for info in experiment.metric_infos],
            )
    return None


def scalar(value):
    return float(tf.make_ndarray(value.tensor))


def test_trial_ids_tell_experiments_apart():
    assert tensorboard_logs.trial_id("experiments/subset_lrn/run1") == "subset_lrn/run1"
    assert tensorboard_logs.trial_id(pathlib.Path("/x/subset_none/run1")) == "subset_none/run1"


def test_hparams_record_and_final_errors(tmp_path):
    hparams = {"norm": "lrn", "towers": 2, "init": "paper", "activation": "relu", "image_size": 96,
               "mixed_precision": "mixed_bfloat16", "seed": 3, "learning_rate": 0.01}  # fmt: skip
    tensorboard_logs.write_hparams(tmp_path, hparams, "exp/run2")
    results = {"test_top1_error": 0.25, "test_top5_error": None, "best_validation_top1_error": 0.3}
    tensorboard_logs.write_final_errors(tmp_path, results, step=4)

    assert trial_ids(tmp_path) == ["exp/run2"]
    columns, metrics = dashboard_columns(tmp_path)
    assert columns == ["norm", "towers", "init", "image_size", "mixed_precision", "activation", "seed", "learning_rate"]
    assert ("validation", "epoch_top1_error") in metrics and ("", "final/test_top1_error") in metrics
    finals = {tag: (step, scalar(value)) for tag, step, value in events(tmp_path) if not tag.startswith("_hparams_")}
    # A missing figure (no test split) is left out, not written as a number.
    assert finals == {"final/test_top1_error": (4, 0.25), "final/best_validation_top1_error": (4, np.float32(0.3))}


def test_epoch_logs_write_training_and_validation_under_the_same_tags(tmp_path):
    inputs = keras.Input((8, 8, 3))
    model = keras.Model(inputs, keras.layers.Conv2D(4, 3, name="conv1")(inputs))
    images = np.zeros((2, 8, 8, 3), np.float32)
    callback = tensorboard_logs.EpochLogs(tmp_path, images, mean_rgb=(120.0, 115.0, 100.0))
    callback.set_model(model)
    callback.on_train_begin()
    for epoch in range(2):
        callback.on_epoch_end(epoch, {"loss": 2.0 - epoch, "top1_error": 0.5, "val_loss": 2.5, "learning_rate": 0.01})
    callback.on_train_end()

    assert {path.parent for path in tmp_path.rglob("events.out.tfevents.*")} == {tmp_path, tmp_path / "validation"}
    training = {(tag, step) for tag, step, _ in events(tmp_path)}
    assert {("epoch_loss", 1), ("epoch_top1_error", 1), ("epoch_learning_rate", 0)} <= training
    assert {("images/augmented_training", 0), ("images/conv1_filters", 1)} <= training
    assert {(tag, step) for tag, step, _ in events(tmp_path / "validation")} == {("epoch_loss", 0), ("epoch_loss", 1)}
    assert [scalar(v) for tag, _, v in events(tmp_path) if tag == "epoch_loss"] == [2.0, 1.0]


def test_filter_grid_scales_each_filter():
    kernel = np.random.default_rng(0).normal(size=(11, 11, 3, 96))
    grid = tensorboard_logs.filter_grid(kernel)
    assert grid.shape == (1, 8 * 12 + 1, 12 * 12 + 1, 3)
    assert grid.min() == 0.0 and grid.max() == 1.0


def test_committed_runs_are_two_entries_and_distinct_trials():
    runs = sorted(path.parent for path in (REPO_ROOT / "experiments").glob("*/run*/results.json"))
    assert len(runs) >= 15
    seen = {}
    for run in runs:
        logs = run / "tensorboard"
        assert {path.parent for path in logs.rglob("events.out.tfevents.*")} == {logs, logs / "validation"}, run
        (trial,) = trial_ids(logs)
        assert trial == f"{run.parent.name}/{run.name}" and trial not in seen, run
        seen[trial] = run
        columns = dashboard_columns(logs)[0]
        assert columns[:5] == list(tensorboard_logs.SHOWN_HPARAMS) and {"seed", "learning_rate"} <= set(columns), run
        results = json.loads((run / "results.json").read_text())
        best = [scalar(v) for tag, _, v in events(logs) if tag == "final/best_validation_top1_error"]
        if results["best_validation_top1_error"] is not None:
            assert best == [np.float32(results["best_validation_top1_error"])], run


def test_runs_in_the_old_layout_are_upgraded(tmp_path):
    import importlib.util

    from tensorboard.plugins.hparams import api as hparams_api

    from alexnet_tf import config as config_lib
    from alexnet_tf.run import Run

    spec = importlib.util.spec_from_file_location("upgrade", REPO_ROOT / "scripts" / "upgrade_tensorboard_logs.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)

    # A finished run as the trainer wrote it before: four log folders, the bare run name as trial id.
    run = Run(tmp_path / "exp" / "run1")
    run.claim(config_lib.TrainConfig(norm="none"), ["a", "b"])
    run.write_results({"epochs": 2, "best_validation_top1_error": 0.5, "test_top1_error": 0.25})
    logs = run.tensorboard_dir
    for folder, write in [
        ("", lambda: hparams_api.hparams({"norm": "none"}, trial_id="run1")),
        ("train", lambda: tf.summary.scalar("epoch_loss", 1.5, step=1)),
        ("images", lambda: tf.summary.image("conv1_filters", np.zeros((1, 4, 4, 3)), step=1)),
        ("validation", lambda: tf.summary.scalar("epoch_loss", 2.0, step=1)),
    ]:
        with tf.summary.create_file_writer(str(logs / folder)).as_default() as writer:
            write()
            writer.flush()

    assert script.upgrade(run.directory) == "upgraded"
    assert {path.parent for path in logs.rglob("events.out.tfevents.*")} == {logs, logs / "validation"}
    assert trial_ids(logs) == ["exp/run1"]
    tags = {(tag, step) for tag, step, _ in events(logs)}
    assert {("epoch_loss", 1), ("images/conv1_filters", 1), ("final/test_top1_error", 1)} <= tags
    assert script.upgrade(run.directory) == "already in the current layout"
