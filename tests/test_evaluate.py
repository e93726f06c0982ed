import dataclasses
import json
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from alexnet_tf import cli, data, evaluation, run as run_lib
from alexnet_tf import config as config_lib
from alexnet_tf import model as model_lib
from alexnet_tf import preprocessing as pp
from alexnet_tf.run import Run

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SAMPLE_TEST_BATCH = data.SAMPLE_CIFAR10_DIR / data.CIFAR10_TEST_FILE


def sample_records(count):
    """The first `count` records of the sample's test batch: (uint8 images [N, 32, 32, 3], raw records)."""
    records = np.fromfile(SAMPLE_TEST_BATCH, np.uint8).reshape(-1, data.CIFAR10_RECORD_BYTES)[:count].copy()
    images = records[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return images, records


def write_cifar10_folder(folder, records):
    folder.mkdir(parents=True)
    records.tofile(folder / data.CIFAR10_TEST_FILE)
    shutil.copy(data.SAMPLE_CIFAR10_DIR / data.CIFAR10_META_FILE, folder)
    return folder


def copy_run(run_dir, destination, checkpoints=True):
    """The run's flags and statistics (and checkpoints) in a new run directory."""
    destination.mkdir(parents=True)
    shutil.copy(run_dir / run_lib.FLAGS_FILE, destination)
    shutil.copytree(run_dir / "stats", destination / "stats")
    (destination / "checkpoints").mkdir()
    if checkpoints:
        for name in (run_lib.BEST_WEIGHTS, run_lib.LATEST_WEIGHTS):
            shutil.copy(run_dir / "checkpoints" / name, destination / "checkpoints")
    return destination


def test_centre_crop_evaluation_matches_the_runs_own_test_error(run_dir):
    result = evaluation.evaluate_checkpoint(run_dir, batch_size=32)
    recorded = Run(run_dir).read_results()

    assert tuple(result) == evaluation.RESULT_KEYS
    assert result["checkpoint"] == str((run_dir / "checkpoints" / run_lib.BEST_WEIGHTS).resolve())
    assert (result["dataset"], result["split"]) == ("cifar10_sample", "test")
    assert (result["examples"], result["crops"]) == (200, 1)
    assert result["top1_error"] == pytest.approx(recorded["test_top1_error"], abs=1e-6)
    assert result["top5_error"] == pytest.approx(recorded["test_top5_error"], abs=1e-6)
    assert 0.0 <= result["top5_error"] <= result["top1_error"] <= 1.0
    assert result["top1_accuracy"] == pytest.approx(1.0 - result["top1_error"])
    assert result["top5_accuracy"] == pytest.approx(1.0 - result["top5_error"])


def test_ten_crop_averages_the_softmax_over_the_ten_views(run_dir, tmp_path):
    # Weights whose views disagree (the one-epoch run predicts nearly one class everywhere), and labels
    # placed at chosen ranks of the ten-crop average, so the expected errors are known exactly.
    run = copy_run(run_dir, tmp_path / "run", checkpoints=False)
    config = config_lib.config_from_flagfile(run / run_lib.FLAGS_FILE)
    model = model_lib.build_for(dataclasses.replace(config, init="he", seed=3), 10)
    model.save_weights(run / "checkpoints" / run_lib.BEST_WEIGHTS)

    images, records = sample_records(20)
    stats = Run(run).load_stats()
    prepared = pp.subtract_mean(pp.resize_and_center_crop(images, pp.resize_size_for(64)), stats.mean_rgb)
    views = tf.stack([pp.ten_crop(image, 64) for image in prepared])  # [20, 10, 64, 64, 3]
    probabilities = tf.nn.softmax(model(tf.reshape(views, [-1, 64, 64, 3]), training=False)).numpy()
    probabilities = probabilities.reshape(20, 10, 10)
    ten_crop_ranking = np.argsort(-probabilities.mean(axis=1), axis=1)
    ranks = np.array([9, 0, 0, 0] * 5)  # with ten crops: top-1 error 0.25, top-5 error 0.25
    labels = ten_crop_ranking[np.arange(20), ranks]
    records[:, 0] = labels
    folder = write_cifar10_folder(tmp_path / "cifar10", records)

    ten = evaluation.evaluate_checkpoint(run, data_dir=str(folder), ten_crop=True, batch_size=8)
    centre = evaluation.evaluate_checkpoint(run, data_dir=str(folder), batch_size=8)

    assert (ten["dataset"], ten["examples"], ten["crops"]) == ("cifar10", 20, 10)
    assert (ten["top1_error"], ten["top5_error"]) == pytest.approx((0.25, 0.25), abs=1e-6)
    # The centre crop is view 4 (preprocessing.ten_crop's order). Its top class differs from the
    # ten-crop average's on some images, so a centre-crop evaluation could not pass the check above.
    centre_ranking = np.argsort(-probabilities[:, 4], axis=1)
    centre_rank = np.argmax(centre_ranking == labels[:, None], axis=1)
    assert np.mean(centre_rank > 0) > 0.25
    assert (centre["examples"], centre["crops"]) == (20, 1)
    assert centre["top1_error"] == pytest.approx(np.mean(centre_rank > 0), abs=1e-6)
    assert centre["top5_error"] == pytest.approx(np.mean(centre_rank > 4), abs=1e-6)


def one_line_error(capsys, **kwargs):
    """(exit status, stderr) of evaluate_checkpoint's failure as the command reports it."""
    with pytest.raises(SystemExit) as exit_info, cli.one_line_errors():
        evaluation.evaluate_checkpoint(**kwargs)
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return exit_info.value.code, err


def test_bad_checkpoint_paths_are_one_line_errors(run_dir, tmp_path, capsys):
    code, err = one_line_error(capsys, checkpoint=tmp_path / "nowhere")
    assert code == cli.EXIT_DATA and "does not exist" in err

    code, err = one_line_error(capsys, checkpoint=run_dir / run_lib.FLAGS_FILE)
    assert code == cli.EXIT_USAGE and "is not a checkpoint" in err

    code, err = one_line_error(capsys, checkpoint=tmp_path)
    assert code == cli.EXIT_USAGE and "not a run directory (it has no flags.txt)" in err

    loose = tmp_path / "loose" / run_lib.BEST_WEIGHTS
    loose.parent.mkdir()
    shutil.copy(run_dir / "checkpoints" / run_lib.BEST_WEIGHTS, loose)
    code, err = one_line_error(capsys, checkpoint=loose)
    assert code == cli.EXIT_USAGE and "is not inside a run directory" in err

    unfinished = copy_run(run_dir, tmp_path / "unfinished", checkpoints=False)
    code, err = one_line_error(capsys, checkpoint=unfinished)
    assert code == cli.EXIT_DATA and "has no checkpoints/best.weights.h5 (it has not finished an epoch yet?)" in err

    # A committed run: finished (results.json), its weights never committed.
    shutil.copy(run_dir / run_lib.RESULTS_FILE, unfinished)
    code, err = one_line_error(capsys, checkpoint=unfinished)
    assert code == cli.EXIT_DATA and "finished, but its weights are not in the folder" in err

    corrupt = copy_run(run_dir, tmp_path / "corrupt")
    (corrupt / "checkpoints" / run_lib.BEST_WEIGHTS).write_bytes(b"not hdf5")
    code, err = one_line_error(capsys, checkpoint=corrupt)
    assert code == cli.EXIT_DATA and "not a readable Keras weights file" in err


def test_data_that_does_not_fit_the_model_is_a_one_line_error(run_dir, capsys):
    code, err = one_line_error(capsys, checkpoint=run_dir, dataset="synthetic")
    assert code == cli.EXIT_USAGE
    assert "dataset 'synthetic' has 1000 classes but the checkpoint's model has 10 outputs" in err

    code, err = one_line_error(capsys, checkpoint=run_dir, split="valid")
    assert code == cli.EXIT_DATA and "split='valid' is not a split of cifar10_sample" in err

    code, err = one_line_error(capsys, checkpoint=run_dir, dataset="cifar10_sample", data_dir="/tmp")
    assert code == cli.EXIT_USAGE and "reads no files" in err


def test_a_run_without_recorded_classes_needs_only_the_data_it_is_evaluated_on(run_dir, tmp_path):
    # As a run from before classes.json, trained on a CIFAR-10 folder that is no longer there.
    run = copy_run(run_dir, tmp_path / "old")
    flags_text = (run / run_lib.FLAGS_FILE).read_text().replace("--dataset=cifar10_sample", "--dataset=cifar10")
    (run / run_lib.FLAGS_FILE).write_text(flags_text + "--data_dir=/nowhere/cifar10\n")
    _, records = sample_records(20)
    folder = write_cifar10_folder(tmp_path / "cifar10", records)

    result = evaluation.evaluate_checkpoint(run, data_dir=str(folder), batch_size=10)

    assert (result["dataset"], result["examples"]) == ("cifar10", 20)
    assert 0.0 <= result["top1_error"] <= 1.0


def evaluate_command(*args):
    return subprocess.run(
        [sys.executable, "-m", "alexnet_tf.evaluate", *map(str, args)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_command_prints_a_summary_and_a_json_last_line(run_dir, tmp_path):
    _, records = sample_records(20)
    folder = write_cifar10_folder(tmp_path / "cifar10", records)
    latest = run_dir / "checkpoints" / run_lib.LATEST_WEIGHTS

    done = evaluate_command(f"--checkpoint={latest}", f"--data_dir={folder}", "--ten_crop", "--batch_size=8")

    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    result = json.loads(lines[-1])
    assert sorted(result) == sorted(evaluation.RESULT_KEYS)
    assert (result["dataset"], result["split"], result["examples"], result["crops"]) == ("cifar10", "test", 20, 10)
    assert result["checkpoint"] == str(latest.resolve())
    assert 0.0 <= result["top5_error"] <= result["top1_error"] <= 1.0
    summary = "\n".join(lines[:-1])
    assert f"Checkpoint:  {latest.resolve()}" in summary
    assert "cifar10, split 'test', 20 images" in summary
    assert f"Top-1:       error {result['top1_error']:.4f}   accuracy {result['top1_accuracy']:.4f}" in summary


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["--dataset=synthetic"], cli.EXIT_USAGE, "has 1000 classes but the checkpoint's model has 10 outputs"),
        (["--split=valid"], cli.EXIT_DATA, "split='valid' is not a split of cifar10_sample"),
    ],
)
def test_command_errors_are_one_line_with_the_exit_status(run_dir, args, code, message):
    done = evaluate_command(f"--checkpoint={run_dir}", *args)
    assert done.returncode == code
    assert done.stdout == ""
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and message in errors[0], done.stderr
    assert "Traceback" not in done.stderr


def test_validation_is_the_runs_own_held_out_part(run_dir):
    held_out = evaluation.evaluate_checkpoint(run_dir, split="validation", batch_size=25)
    recorded = Run(run_dir).read_results()
    # The sample's 1000 training records, the last 10% held out: what the trainer validated on.
    assert (held_out["split"], held_out["examples"], held_out["examples_trained_on"]) == ("holdout", 100, 0)
    assert Run(run_dir).data_record() == {"layout": "embedded_sample", "train_examples": 900, "holdout_examples": 100}
    assert held_out["top1_error"] == pytest.approx(recorded["best_validation_top1_error"], abs=1e-6)

    training = evaluation.evaluate_checkpoint(run_dir, split="train", batch_size=100)
    assert (training["examples"], training["examples_trained_on"]) == (1000, 900)
    assert evaluation.evaluate_checkpoint(run_dir, batch_size=100)["examples_trained_on"] == 0


def a_run_on_cifar10_batches(run_dir, tmp_path, **flags):
    """A copy of the sample run as if trained on a CIFAR-10 folder of data_batch_1.bin (the sample's
    training records) and data_batch_2.bin (the first 200 records of the official data_batch_2.bin,
    which are the sample's test images)."""
    folder = tmp_path / "cifar10"
    folder.mkdir()
    shutil.copy(data.SAMPLE_CIFAR10_DIR / "data_batch_1.bin", folder)
    shutil.copy(SAMPLE_TEST_BATCH, folder / "data_batch_2.bin")
    shutil.copy(data.SAMPLE_CIFAR10_DIR / data.CIFAR10_META_FILE, folder)
    run = copy_run(run_dir, tmp_path / "exp" / "run1")
    settings = {"dataset": "cifar10", "data_dir": str(folder), **flags}
    kept = [line for line in (run / run_lib.FLAGS_FILE).read_text().splitlines()
            if line.split("=")[0].lstrip("-") not in settings]  # fmt: skip
    (run / run_lib.FLAGS_FILE).write_text("\n".join(kept + [f"--{k}={v}" for k, v in settings.items()]) + "\n")
    return run


def test_evaluating_images_the_run_trained_on_is_counted_and_warned_about(run_dir, tmp_path, capsys):
    # A run from before data.json: its own data, here, gives the same figures.
    run = a_run_on_cifar10_batches(run_dir, tmp_path)
    # 1200 training records, the last 120 held out: data_batch_2.bin's records 80-199.
    result = evaluation.evaluate_checkpoint(run, dataset="cifar10_sample", batch_size=100)
    assert (result["examples"], result["examples_trained_on"]) == (200, 80)
    held_out = evaluation.evaluate_checkpoint(run, split="holdout", batch_size=120)
    assert (held_out["examples"], held_out["examples_trained_on"]) == (120, 0)

    done = evaluate_command(f"--checkpoint={run}", "--dataset=cifar10_sample")
    assert done.returncode == 0, done.stderr
    warnings = [line for line in done.stderr.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 1 and "80 of the 200 images evaluated were in the training part of run" in warnings[0]
    assert json.loads(done.stdout.splitlines()[-1])["examples_trained_on"] == 80

    # The run's data gone (a committed run records ../shared/..., relative to where it ran): a
    # copy given with --data_dir, laid out as the run's data.json says, tells the same.
    Run(run).record_data("binary_batches", 1080, 120)
    shutil.move(tmp_path / "cifar10", tmp_path / "copy")
    result = evaluation.evaluate_checkpoint(run, data_dir=str(tmp_path / "copy"), split="train", batch_size=100)
    assert (result["examples"], result["examples_trained_on"]) == (1200, 1080)
    quiet = evaluate_command(f"--checkpoint={run}", f"--data_dir={tmp_path / 'copy'}", "--split=validation")
    assert quiet.returncode == 0 and "warning" not in quiet.stderr, quiet.stderr
    assert "split 'holdout' (the run's held-out part of 'train'), 120 images" in quiet.stdout

    # Other data's last records are not the run's held-out ones.
    (tmp_path / "copy" / "data_batch_2.bin").unlink()
    code, err = one_line_error(capsys, checkpoint=run, data_dir=str(tmp_path / "copy"), split="holdout")
    assert code == cli.EXIT_USAGE and "held out the last 120 of 1200 training records laid out as binary_batches" in err


def test_a_run_that_held_out_nothing_has_no_validation_split(run_dir, tmp_path, capsys):
    run = a_run_on_cifar10_batches(run_dir, tmp_path, validation_fraction=0.0)
    code, err = one_line_error(capsys, checkpoint=run, split="validation")
    assert code == cli.EXIT_USAGE and "held out no validation images (--validation_fraction=0)" in err


def test_a_committed_run_without_its_mean_image_evaluates_unless_it_used_it(run_dir, tmp_path):
    # stats/mean_image.npy is git-ignored: a committed run has stats.json naming it, not the file.
    run = copy_run(run_dir, tmp_path / "exp" / "run1")
    (run / "stats" / run_lib.MEAN_IMAGE_FILE).unlink()
    done = evaluate_command(f"--checkpoint={run}")
    assert done.returncode == 0, done.stderr

    with (run / run_lib.FLAGS_FILE).open("a") as flags_file:
        flags_file.write("--mean=image\n")
    done = evaluate_command(f"--checkpoint={run}")
    assert done.returncode == cli.EXIT_DATA
    assert done.stderr.strip().splitlines()[-1].startswith("error: ") and "mean_image.npy is missing" in done.stderr


def test_command_on_a_committed_run_says_its_weights_are_not_in_the_folder(run_dir, tmp_path):
    run = copy_run(run_dir, tmp_path / "exp" / "run1", checkpoints=False)
    shutil.copy(run_dir / run_lib.RESULTS_FILE, run)  # finished: results.json, the weights never committed
    done = evaluate_command(f"--checkpoint={run}")
    assert done.returncode == cli.EXIT_DATA and done.stdout == ""
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "finished, but its weights are not in the folder" in errors[0], done.stderr
