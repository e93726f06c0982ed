import csv
import dataclasses
import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from absl import flags

from alexnet_tf import config as config_lib
from alexnet_tf import callbacks, optim, training
from alexnet_tf import model as model_lib
from alexnet_tf.run import Run, RunError

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
# A run small enough for CPU tests: 64x64 crops, a few steps per epoch.
TINY = dict(batch_size=16, image_size=64, steps_per_epoch=2, stats_images=64, epochs=1)


def parse(*argv):
    flag_values = flags.FlagValues()
    config_lib.define_flags(flag_values)
    flag_values(["train", *argv])
    return config_lib.config_from_flags(flag_values)


def test_default_flags_are_the_papers_recipe():
    config = parse()
    assert config == config_lib.TrainConfig()
    assert (config.learning_rate, config.momentum, config.weight_decay, config.batch_size) == (0.01, 0.9, 5e-4, 128)
    assert (config.epochs, config.lr_drops, config.norm, config.towers, config.init) == (90, 3, "lrn", 1, "paper")
    assert (config.image_size, config.dropout, config.pca_std) == (224, 0.5, 0.1)


def test_flags_map_onto_the_config():
    config = parse(
        "--dataset=cifar10", "--data_dir=/data/c10", "--experiment=e", "--epochs=3", "--batch_size=64",
        "--learning_rate=0.02", "--norm=batchnorm", "--towers=2", "--activation=tanh", "--image_size=112",
        "--seed=4", "--validation_fraction=0.2", "--mixed_precision=mixed_bfloat16", "--strategy=one_device",
        "--deterministic",
    )
    assert config.towers == 2 and isinstance(config.towers, int)
    assert (config.dataset, config.data_dir, config.experiment, config.epochs) == ("cifar10", "/data/c10", "e", 3)
    assert (config.norm, config.activation, config.image_size, config.seed) == ("batchnorm", "tanh", 112, 4)
    assert (config.mixed_precision, config.strategy, config.deterministic) == ("mixed_bfloat16", "one_device", True)


@pytest.mark.parametrize(
    "argv",
    [
        ["--norm=layernorm"], ["--towers=3"], ["--epochs=0"], ["--batch_size=-1"], ["--activation=gelu"],
        ["--dataset=mnist"], ["--model=vgg"], ["--init=glorot"], ["--image_size=62"], ["--image_size=7", "--model=four_layer"],
    ],  # fmt: skip
)
def test_bad_flag_values_are_refused(argv):
    with pytest.raises(flags.IllegalFlagValueError):
        parse(*argv)


def test_the_four_layer_net_takes_cifar_sized_images():
    config = parse("--model=four_layer", "--image_size=32", "--noaugment", "--init=paper_bias0.1")
    assert (config.model, config.image_size, config.augment, config.init) == ("four_layer", 32, False, "paper_bias0.1")


def test_flagfile_round_trip(tmp_path):
    config = parse("--norm=none", "--towers=2", "--deterministic", "--data_dir=/x", "--epochs=7")
    path = tmp_path / "flags.txt"
    path.write_text(config_lib.to_flagfile(config))
    assert config_lib.config_from_flagfile(path) == config


def chosen(experiment_dir, config, name=None):
    choice = Run.for_training(experiment_dir, config, name)
    return choice.run.directory, choice.resumed


def test_run_rules(tmp_path):
    config_a, config_b = config_lib.TrainConfig(epochs=1), config_lib.TrainConfig(epochs=2)
    run_dir, resumed = chosen(tmp_path, config_a)
    assert (run_dir.name, resumed) == ("run1", False)
    Run(run_dir).claim(config_a, ["a", "b"])
    assert chosen(tmp_path, config_a) == (run_dir, True)  # unfinished, same flags: resume
    assert chosen(tmp_path, config_b)[0].name == "run2"  # other flags: a new run
    Run(run_dir).write_results({"done": True})
    assert chosen(tmp_path, config_a) == (tmp_path / "run2", False)  # finished: never reused
    with pytest.raises(RunError, match="already finished"):
        chosen(tmp_path, config_a, name="run1")
    Run(tmp_path / "mine").claim(config_a, ["a", "b"])
    with pytest.raises(RunError, match="other flags"):
        chosen(tmp_path, config_b, name="mine")
    assert chosen(tmp_path, config_a, name="mine") == (tmp_path / "mine", True)
    with pytest.raises(RunError, match="not a usable run name"):
        chosen(tmp_path, config_a, name="../elsewhere")


def test_a_run_whose_flags_lack_a_newer_field_is_continued(tmp_path):
    config = config_lib.TrainConfig(epochs=3, norm="batchnorm")
    run = Run(tmp_path / "run1")
    run.claim(config, ["a", "b"])
    # As an older version of the trainer wrote it: without a field today's config has.
    lines = run.flags_file.read_text().splitlines()
    run.flags_file.write_text("\n".join(line for line in lines if not line.startswith("--lr_drops=")) + "\n")
    choice = Run.for_training(tmp_path, config)
    assert (choice.run, choice.resumed, choice.note) == (run, True, None)
    assert Run.for_training(tmp_path, config, "run1").resumed


def test_a_run_whose_flag_differs_is_not_continued_and_the_flag_is_named(tmp_path):
    Run(tmp_path / "run1").claim(config_lib.TrainConfig(epochs=3, lr_patience=3), ["a", "b"])
    choice = Run.for_training(tmp_path, config_lib.TrainConfig(epochs=3, lr_patience=5))
    assert (choice.run.name, choice.resumed) == ("run2", False)
    assert "--lr_patience=3 (this command: 5)" in choice.note and "--epochs" not in choice.note
    with pytest.raises(RunError, match=r"--lr_patience=3 \(this command: 5\)"):
        Run.for_training(tmp_path, config_lib.TrainConfig(epochs=3, lr_patience=5), "run1")


def hparams_trial_ids(event_dir):
    """The HParams session records' trial ids in one log folder's event files."""
    from tensorboard.plugins.hparams import metadata

    ids = []
    for path in sorted(pathlib.Path(event_dir).glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                if value.tag == metadata.SESSION_START_INFO_TAG:
                    content = value.metadata.plugin_data.content
                    ids.append(metadata.parse_session_start_info_plugin_data(content).group_name)
    return ids


def scalar_tags(event_dir):
    tags = set()
    for path in pathlib.Path(event_dir).glob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                tags.add(value.tag)
    return tags


@pytest.mark.slow
def test_one_epoch_on_tfds_mock_data_writes_the_run_directory(tmp_path, cifar10_download_host):
    config = config_lib.TrainConfig(dataset="cifar10", experiments_dir=str(tmp_path), experiment="mock", **TINY)
    with tfds.testing.mock_data(num_examples=40):
        results = training.train(config, verbose=0)
    run_dir = tmp_path / "mock" / "run1"
    assert config_lib.config_from_flagfile(run_dir / "flags.txt") == config
    for name in ("results.json", "history.csv", "stats/stats.json", "checkpoints/best.weights.h5",
                 "checkpoints/latest.weights.h5"):
        assert (run_dir / name).is_file(), name
    assert json.loads((run_dir / "results.json").read_text()) == results
    assert results["epochs"] == 1 and 0.0 <= results["best_validation_top1_error"] <= 1.0
    assert results["test_top1_error"] is not None and results["images_per_s"] > 0
    # TensorBoard: two entries per run (training with HParams and images, and validation).
    logs = run_dir / "tensorboard"
    assert {path.parent for path in logs.rglob("events.out.tfevents.*")} == {logs, logs / "validation"}
    assert {
        "epoch_loss", "epoch_top1_error", "epoch_top5_error", "epoch_learning_rate", "epoch_images_per_s",
        "images/augmented_training", "images/conv1_filters", "_hparams_/session_start_info", "_hparams_/experiment",
        "final/test_top1_error", "final/best_validation_top1_error",
    } <= scalar_tags(logs)  # fmt: skip
    assert {"epoch_loss", "epoch_top1_error", "epoch_top5_error"} <= scalar_tags(logs / "validation")
    assert hparams_trial_ids(logs) == ["mock/run1"]


def test_the_four_layer_net_trains_through_the_same_trainer(tmp_path):
    config = config_lib.TrainConfig(
        dataset="cifar10_sample", experiments_dir=str(tmp_path), experiment="fig1", model="four_layer",
        activation="tanh", image_size=32, augment=False, pca_std=0.0, weight_decay=0.0, batch_size=32,
        steps_per_epoch=4, stats_images=64, epochs=2,
    )  # fmt: skip
    results = training.train(config, verbose=0)
    run_dir = tmp_path / "fig1" / "run1"
    assert config_lib.config_from_flagfile(run_dir / "flags.txt") == config
    assert results["hparams"]["model"] == "four_layer" and results["hparams"]["augment"] is False
    # The per-epoch curves the report reads, as history.csv has them.
    assert [round(v, 6) for v in results["curves"]["top1_error"]] == [
        round(row["top1_error"], 6) for row in Run(run_dir).read_history()
    ]
    assert len(results["curves"]["val_top1_error"]) == 2
    model = model_lib.build_for(config, 10)
    model.load_weights(run_dir / "checkpoints" / "best.weights.h5")
    assert model.name == "four_layer_tanh" and model.count_params() == 89578


def test_float16_training_goes_through_the_trainer_with_loss_scaling(tmp_path, monkeypatch):
    import keras

    compiled_optimizers = []
    compile_ = keras.Model.compile

    def recording_compile(model, *args, **kwargs):
        compile_(model, *args, **kwargs)
        compiled_optimizers.append(model.optimizer)

    monkeypatch.setattr(keras.Model, "compile", recording_compile)
    config = config_lib.TrainConfig(
        dataset="cifar10_sample", experiments_dir=str(tmp_path), experiment="fp16", model="four_layer",
        image_size=32, batch_size=32, steps_per_epoch=2, stats_images=64, epochs=1, mixed_precision="mixed_float16",
    )  # fmt: skip
    results = training.train(config, verbose=0)
    assert results["hparams"]["mixed_precision"] == "mixed_float16"
    assert np.isfinite(results["curves"]["loss"]).all()
    # Keras wraps the paper's optimiser in dynamic loss scaling for float16 (and only then).
    assert compiled_optimizers and all(isinstance(o, keras.optimizers.LossScaleOptimizer) for o in compiled_optimizers)
    assert isinstance(compiled_optimizers[0].inner_optimizer, optim.SGDCoupledWeightDecay)


def test_a_data_dir_from_the_environment_is_recorded_in_the_flags(tmp_path, monkeypatch, shared_cifar10_dir):
    monkeypatch.setenv("ALEXNET_TF_DATA_DIR", str(shared_cifar10_dir))
    config = config_lib.TrainConfig(
        dataset="cifar10", experiments_dir=str(tmp_path), **{**TINY, "epochs": 1, "steps_per_epoch": 1}
    )
    training.train(config, verbose=0)
    recorded = config_lib.config_from_flagfile(tmp_path / "default" / "run1" / "flags.txt")
    assert recorded.data_dir == str(shared_cifar10_dir)


@pytest.mark.slow
def test_two_replicas_match_one_device(tmp_path):
    base = config_lib.TrainConfig(
        dataset="cifar10_sample", experiments_dir=str(tmp_path), dropout=0.0, pca_std=0.0, **TINY
    )
    weights = {}
    for name, devices in (("one", ["/cpu:0"]), ("two", ["/cpu:0", "/cpu:1"])):
        config = dataclasses.replace(base, experiment=name)
        training.train(config, devices=devices, verbose=0)
        model = model_lib.build_for(config, 10)
        model.load_weights(tmp_path / name / "run1" / "checkpoints" / "latest.weights.h5")
        weights[name] = model.get_weights()
    for one, two in zip(weights["one"], weights["two"]):
        np.testing.assert_allclose(one, two, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("examples,batch,replicas", [(100, 16, 2), (33, 16, 2), (103, 10, 4), (7, 128, 2), (40, 16, 2)])
def test_eval_batches_never_leave_a_replica_empty(examples, batch, replicas):
    size = training.eval_batch_size(examples, batch, replicas)
    assert size % replicas == 0 and replicas <= size <= batch
    per_replica = size // replicas
    last = examples % size or size
    assert all(min(per_replica, last - k * per_replica) > 0 for k in range(replicas))


def test_eval_batch_size_none_when_no_size_fits():
    assert training.eval_batch_size(5, 4, 4) is None  # sizes 4: remainder 1 reaches one replica only
    assert training.eval_batch_size(5, 4, 1) == 4


def test_a_global_batch_that_does_not_split_across_replicas_is_refused(tmp_path):
    config = config_lib.TrainConfig(
        dataset="cifar10_sample", experiments_dir=str(tmp_path), **{**TINY, "batch_size": 15}
    )
    with pytest.raises(ValueError, match="does not divide by the 2 replicas"):
        training.train(config, devices=["/cpu:0", "/cpu:1"], verbose=0)
    assert not (tmp_path / "default").exists()  # refused before anything was written


def train_command(experiments_dir, epochs):
    return [
        sys.executable, "-m", "alexnet_tf.train", "--dataset=cifar10_sample", f"--experiments_dir={experiments_dir}",
        "--experiment=resume", f"--epochs={epochs}", "--batch_size=16", "--image_size=64", "--steps_per_epoch=6",
        "--stats_images=64",
    ]


def history_epochs(run_dir):
    path = run_dir / "history.csv"
    if not path.is_file():
        return []
    with path.open() as f:
        return [int(row["epoch"]) for row in csv.DictReader(f)]


def start_training(command):
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.Popen(
        command, cwd=REPO_ROOT, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def wait_for_epochs(process, run_dir, count, timeout=240):
    deadline = time.time() + timeout
    while len(history_epochs(run_dir)) < count and time.time() < deadline and process.poll() is None:
        time.sleep(0.2)
    assert process.poll() is None, process.stdout.read()[-2000:]


def epoch_steps(event_dir, tag="epoch_loss"):
    steps = []
    for path in sorted(pathlib.Path(event_dir).glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            steps += [event.step for value in event.summary.value if value.tag == tag]
    return steps


@pytest.mark.slow
def test_stopped_and_killed_runs_resume_when_the_same_command_runs_again(tmp_path):
    # --lr_patience=1 makes the learning rate drop during the run, so that its
    # restoration is visible; 5 epochs of 6 steps at 64x64.
    command = train_command(tmp_path, epochs=5) + ["--lr_patience=1"]
    run_dir = tmp_path / "resume" / "run1"

    # 1. SIGTERM: a clean stop at a batch boundary, exit status 128 + 15.
    process = start_training(command)
    wait_for_epochs(process, run_dir, 1)
    process.send_signal(signal.SIGTERM)
    output = process.communicate(timeout=120)[0]
    assert process.returncode == 128 + signal.SIGTERM, output[-2000:]
    assert "stopped: stopped by SIGTERM; run the same command again to resume from epoch" in output

    # 2. SIGKILL, without warning, later on.
    process = start_training(command)
    wait_for_epochs(process, run_dir, 3)
    process.send_signal(signal.SIGKILL)
    process.wait()
    done_before_kill = len(set(history_epochs(run_dir)))
    assert 3 <= done_before_kill < 5 and not (run_dir / "results.json").exists()

    # 3. The same command finishes the run.
    finished = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stdout[-2000:] + finished.stderr[-2000:]
    assert f"Resuming run {run_dir}" in finished.stdout and "Resumed from the end of epoch" in finished.stdout
    assert sorted(set(history_epochs(run_dir))) == [0, 1, 2, 3, 4]
    assert json.loads((run_dir / "results.json").read_text())["epochs"] == 5
    assert not (tmp_path / "resume" / "run2").exists()
    assert (run_dir / "checkpoints" / "best.weights.h5").is_file()
    assert not (run_dir / "checkpoints" / "resume").exists()  # removed once the run finished
    # TensorBoard: one point per epoch, no duplicates.
    assert sorted(epoch_steps(run_dir / "tensorboard")) == [0, 1, 2, 3, 4]
    # The learning rate carried across the restarts: it never goes back up.
    with (run_dir / "history.csv").open() as f:
        rates = [float(row["learning_rate"]) for row in csv.DictReader(f)]
    assert all(later <= earlier * 1.0001 for earlier, later in zip(rates, rates[1:])), rates


def test_plateau_schedule_counters_survive_a_resumption():
    import keras

    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    settings = dict(monitor="val_top1_error", mode="min", factor=0.1, patience=2, min_lr=1e-4)
    schedule = callbacks.PlateauSchedule(**settings)
    schedule.set_model(model)
    schedule.on_train_begin()
    for epoch, value in enumerate([0.9, 0.8, 0.85, 0.86, 0.87]):
        schedule.on_epoch_end(epoch, {"val_top1_error": value})
    # best 0.8 at the 2nd epoch; two worse epochs dropped the rate (wait back to 0), one more since.
    assert (schedule.best, schedule.wait) == (0.8, 1)
    assert float(model.optimizer.learning_rate) == pytest.approx(0.001)
    # A new process's schedule, given the saved counters, carries on where this one stopped.
    resumed = callbacks.PlateauSchedule(**settings, restored=schedule.counters())
    resumed.set_model(model)
    resumed.on_train_begin()
    assert (resumed.best, resumed.wait, resumed.cooldown_counter) == (0.8, 1, 0)
    resumed.on_epoch_end(5, {"val_top1_error": 0.88})  # a second epoch without improvement: patience 2
    assert float(model.optimizer.learning_rate) == pytest.approx(0.0001)


def free_ports(count):
    import socket

    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.mark.slow
def test_two_workers_on_localhost_train_together_and_only_the_chief_writes(tmp_path):
    workers = [f"127.0.0.1:{port}" for port in free_ports(2)]
    command = [
        sys.executable, "-m", "alexnet_tf.train", "--strategy=multi_worker", "--dataset=cifar10_sample",
        f"--experiments_dir={tmp_path / 'experiments'}", "--experiment=mw", "--epochs=2", "--batch_size=16",
        "--image_size=64", "--steps_per_epoch=2", "--stats_images=64",
    ]
    processes = []
    for index in range(2):
        tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        scratch = tmp_path / f"tmp{index}"
        scratch.mkdir()
        environment = {**os.environ, "TF_CONFIG": json.dumps(tf_config), "TMPDIR": str(scratch)}
        processes.append(
            subprocess.Popen(command, cwd=REPO_ROOT, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        )
    outputs = []
    for process in processes:
        try:
            outputs.append(process.communicate(timeout=300)[0])
        finally:
            process.kill()
    for process, output in zip(processes, outputs):
        assert process.returncode == 0, output[-3000:]
    run_dir = tmp_path / "experiments" / "mw" / "run1"
    assert json.loads((run_dir / "results.json").read_text())["epochs"] == 2
    assert sorted(p.name for p in (tmp_path / "experiments" / "mw").iterdir()) == ["run1"]
    assert "Worker 1 of 2 training run" in outputs[1] and "Results:" not in outputs[1]
    assert not list((tmp_path / "tmp1").iterdir())  # the non-chief's scratch checkpoints are gone
    # Synchronous training: both workers logged the same losses.
    losses = [re.findall(r"(?<![\w])loss: (\S+)", out) for out in outputs]
    assert losses[0] == losses[1] and len(losses[0]) == 2


def run_warning(losses_per_epoch, num_classes=10):
    """What a PlateauWarning printed for per-step losses, fed as Keras does (each epoch's running mean)."""
    import io
    import contextlib

    warning = callbacks.PlateauWarning(num_classes=num_classes, steps_per_epoch=len(losses_per_epoch[0]))
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        for epoch, losses in enumerate(losses_per_epoch):
            warning.on_epoch_begin(epoch)
            for batch in range(len(losses)):
                warning.on_train_batch_end(batch, {"loss": float(np.mean(losses[: batch + 1]))})
    return printed.getvalue()


def test_plateau_warning_says_once_when_the_loss_sits_at_chance():
    rng = np.random.default_rng(0)
    flat = [np.log(10) + rng.normal(0, 0.01, 100) for _ in range(2)]
    printed = run_warning(flat)
    assert printed.count("Warning: the training loss has stayed at ln(10) = 2.303") == 1
    assert "for the last 50 steps (epoch 1)" in printed and "--init=paper_bias0.1" in printed
    assert "--learning_rate" in printed
    # The embedded sample's short epochs (14 steps) are watched too, from the 100th step on.
    assert "for the last 7 steps (epoch 8)" in run_warning([np.full(14, np.log(10))] * 10)


def test_plateau_warning_stays_quiet_while_the_net_learns():
    assert run_warning([np.full(100, 2.2)]) == ""
    # Every net starts at chance: one that leaves it within the first 100 steps is not warned about.
    assert run_warning([np.concatenate([np.full(60, np.log(10)), np.linspace(2.25, 1.8, 140)])]) == ""
    # Falling through ln 10 (2.4 to 2.2 over the window): the running mean passes 2.30, the halves do not.
    assert run_warning([np.linspace(2.4, 2.2, 100)]) == ""
    assert run_warning([np.zeros(20)], num_classes=1) == ""


def test_the_cosine_schedule_warms_up_then_decays_to_zero():
    config = config_lib.TrainConfig(lr_schedule="cosine", learning_rate=0.02, warmup_epochs=2, epochs=10)
    schedule = training.learning_rate_for(config, steps_per_epoch=10)
    assert float(schedule(0)) == 0.0
    assert float(schedule(10)) == pytest.approx(0.01)
    assert float(schedule(20)) == pytest.approx(0.02)
    assert float(schedule(60)) == pytest.approx(0.01, rel=1e-3)  # halfway through the decay
    assert float(schedule(100)) == pytest.approx(0.0, abs=1e-9)
    assert training.learning_rate_for(config_lib.TrainConfig(), steps_per_epoch=10) == 0.01
    # A warm-up longer than the run is cut to the run.
    short = dataclasses.replace(config, epochs=1)
    assert float(training.learning_rate_for(short, steps_per_epoch=10)(10)) == pytest.approx(0.02)


def test_warmup_needs_the_cosine_schedule():
    with pytest.raises(flags.IllegalFlagValueError):
        parse("--warmup_epochs=1")
    assert parse("--warmup_epochs=1", "--lr_schedule=cosine").warmup_epochs == 1.0


@pytest.mark.slow
def test_a_cosine_run_records_its_learning_rate_and_wall_clock(tmp_path, capsys):
    config = config_lib.TrainConfig(
        dataset="cifar10_sample", experiments_dir=str(tmp_path), experiment="cos", model="four_layer",
        image_size=32, batch_size=32, steps_per_epoch=3, stats_images=64, epochs=3,
        lr_schedule="cosine", warmup_epochs=1, learning_rate=0.01,
    )  # fmt: skip
    results = training.train(config, verbose=0)
    rates, minutes = results["curves"]["learning_rate"], results["curves"]["wall_minutes"]
    assert rates[0] == pytest.approx(0.01, rel=1e-3) and rates[0] > rates[1] > rates[2] >= 0.0
    assert 0 < minutes[0] < minutes[1] < minutes[2]
    printed = capsys.readouterr().out
    assert "Validation images per class: airplane" in printed
    assert printed.strip().splitlines()[-1].endswith(f"tensorboard --logdir {tmp_path / 'cos' / 'run1' / 'tensorboard'}")


def test_schedule_counters_of_a_resume_state_from_before_they_were_saved():
    # Such a state has only the monitored values: Keras's rule rebuilds the counters.
    counters = callbacks.PlateauSchedule.counters_from([0.9, 0.8, 0.85, 0.86, 0.87], patience=2, drops=3)
    assert counters == {"best": 0.8, "wait": 1, "cooldown_counter": 0}
    # With no drop left, Keras keeps counting.
    assert callbacks.PlateauSchedule.counters_from([0.5, 0.6, 0.7, 0.8], patience=2, drops=0)["wait"] == 3
    assert callbacks.PlateauSchedule.counters_from([], patience=2, drops=3) is None


def test_a_run_that_holds_out_nothing_reports_its_training_figures(tmp_path, capsys):
    config = config_lib.TrainConfig(
        dataset="cifar10_sample", experiments_dir=str(tmp_path), experiment="all", model="four_layer",
        image_size=32, batch_size=32, steps_per_epoch=2, stats_images=64, epochs=2, validation_fraction=0.0,
    )  # fmt: skip
    results = training.train(config, verbose=0)
    assert "No validation part (--validation_fraction=0)" in capsys.readouterr().out
    # Keras's CSVLogger leaves NA in the val_ columns; the rows still count.
    assert "NA" in (tmp_path / "all" / "run1" / "history.csv").read_text()
    assert results["epochs"] == 2 and results["best_epoch"] in (1, 2) and results["images_per_s"] > 0
    assert results["best_validation_top1_error"] is None and "val_top1_error" not in results["curves"]
    assert results["test_top1_error"] is not None
    assert (tmp_path / "all" / "run1" / "checkpoints" / "best.weights.h5").is_file()
    assert not (tmp_path / "all" / "run1" / "tensorboard" / "validation").exists()
