"""The run directory's files: statistics, classes, weights and the resume state."""

import pathlib

import h5py
import numpy as np
import pytest
import tensorflow as tf

from alexnet_tf import config as config_lib
from alexnet_tf import model as model_lib
from alexnet_tf import preprocessing as pp
from alexnet_tf import training
from alexnet_tf.run import Run, RunError

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_stats_round_trip_through_files(tmp_path):
    stats = pp.compute_stats(
        tf.data.Dataset.from_tensor_slices(np.random.default_rng(1).integers(0, 255, (10, 6, 6, 3), np.uint8)),
        resize_size=6,
    )
    run = Run(tmp_path)
    run.save_stats(stats)
    loaded = run.load_stats()
    for field in ("mean_rgb", "eigenvalues", "eigenvectors", "mean_image"):
        np.testing.assert_array_equal(getattr(loaded, field), getattr(stats, field))
    assert loaded.num_images == 10
    assert "RGB mean" in loaded.summary()
    assert not list(run.stats_dir.glob("*.tmp"))


def test_a_new_run_records_its_flags_and_classes(tmp_path):
    config = config_lib.TrainConfig(norm="none", epochs=4)
    run = Run(tmp_path / "exp" / "run1")
    run.claim(config, ["cat", "dog"])
    assert run.config() == config
    assert run.class_names() == ("cat", "dog")
    with pytest.raises(OSError, match="cannot create the run directory"):
        run.claim(config, ["cat", "dog"])  # never over an existing run


def test_an_unreadable_flags_file_is_a_run_error(tmp_path):
    run = Run(tmp_path)
    run.flags_file.write_text("--no_such_flag=1\n")
    with pytest.raises(RunError, match="cannot be read as training flags"):
        run.config()


def test_checkpoints_hold_the_weights_without_the_optimizer_and_load_into_a_new_model(tmp_path):
    config = config_lib.TrainConfig(image_size=64, norm="lrn")
    model = training.compile_model(model_lib.build_for(config, 10), config)
    images = np.random.default_rng(0).normal(size=(4, 64, 64, 3)).astype(np.float32)
    model.train_on_batch(images, np.arange(4))  # the optimizer now has momentum variables
    run = Run(tmp_path)
    run.save_weights(model, run.best_weights)

    with h5py.File(run.best_weights) as file:
        assert "optimizer" not in file
    fresh = model_lib.build_for(config, 10)
    fresh.load_weights(run.best_weights)
    for saved, loaded in zip(model.get_weights(), fresh.get_weights()):
        np.testing.assert_array_equal(saved, loaded)
    assert not list(run.checkpoints_dir.glob("*.tmp*"))


def test_resume_states_keep_the_newest_two_and_restore_the_newest(tmp_path):
    config = config_lib.TrainConfig(image_size=64, model="four_layer")
    model = training.compile_model(model_lib.build_for(config, 10), config)
    model.optimizer.build(model.trainable_variables)  # as after a training step
    run = Run(tmp_path)
    assert run.last_saved_epoch() == 0 and run.restore(model) is None
    for epoch in (1, 2, 3):
        run.save_resume_state(model, epoch, {"best": 0.5, "schedule": {"wait": epoch}})
    assert [path.name for path in run.resume_states()] == ["epoch-0002", "epoch-0003"]
    assert run.last_saved_epoch() == 3
    assert run.restore(model) == {"best": 0.5, "schedule": {"wait": 3}, "epoch": 3}
    # A state whose weights cannot be read: the one before it is used.
    (run.resume_dir / "epoch-0003" / "state.weights.h5").write_bytes(b"broken")
    assert run.restore(model)["epoch"] == 2
    run.drop_resume_state()
    assert run.resume_states() == []


def test_committed_runs_record_their_classes_and_held_out_part():
    # What evaluate and predict need of a committed run whose data and weights are elsewhere.
    runs = sorted(path.parent for path in (REPO_ROOT / "experiments").glob("*/run*/results.json"))
    assert len(runs) >= 15
    for run_dir in runs:
        run = Run(run_dir)
        assert run.class_names() is not None, run_dir
        record = run.data_record()
        assert record["train_examples"] + record["holdout_examples"] > 0, run_dir
        assert record["layout"] in ("binary_batches", "image_folder_tree", "embedded_sample", "tfds"), run_dir
