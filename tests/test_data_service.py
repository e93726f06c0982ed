"""The tf.data service: passes and jobs, batches served by in-process servers, the launchers as
processes on 127.0.0.1, training through them with a worker killed mid-run, and a wrong address."""

import csv
import hashlib
import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from alexnet_tf import config as config_lib
from alexnet_tf import data, data_service, input_pipeline, preprocessing
from alexnet_tf.run import Run

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"


def free_ports(count):
    """`count` distinct ports free on 127.0.0.1 now (bound together, then released)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind((HOST, 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


# ---------------------------------------------------------------------------- no servers


@pytest.mark.parametrize(
    "address,parsed",
    [("grpc://127.0.0.1:5050", "127.0.0.1:5050"), ("dispatcher:5050", "dispatcher:5050"), ("grpc://[::1]:7", "[::1]:7")],
)
def test_addresses_are_host_and_port_with_or_without_grpc(address, parsed):
    assert data_service.parse_address(address) == parsed


@pytest.mark.parametrize("address", ["127.0.0.1", "http://h:5050", "grpc://h:0", "grpc://h:70000", "", "h:5050/x"])
def test_other_addresses_are_refused_in_one_line(address):
    with pytest.raises(ValueError, match="is not a tf.data service address: give grpc://HOST:PORT") as error:
        data_service.parse_address(address)
    assert "\n" not in str(error.value)


def test_a_job_is_the_run_s_and_its_start_epoch_s_and_a_file_name(tmp_path):
    run1, run2 = tmp_path / "e" / "run1", tmp_path / "e" / "run2"
    name = data_service.job_name(run1, 0)
    assert name == data_service.job_name(str(run1), 0)  # the same run: the same job for all its processes
    assert len({name, data_service.job_name(run2, 0), data_service.job_name(tmp_path / "f" / "run1", 0)}) == 3
    assert data_service.job_name(run1, 3) != name  # a resumption starts a job of its own
    # The dispatcher files the dataset under this name in its work_dir.
    assert re.fullmatch(r"[\w.-]+", name) and "run1" in name


def test_a_run_continues_under_another_data_service_but_not_under_other_flags(tmp_path):
    local = config_lib.TrainConfig(epochs=3)
    Run(tmp_path / "run1").claim(local, ["a", "b"])
    served = config_lib.TrainConfig(epochs=3, data_service="grpc://127.0.0.1:5050")
    choice = Run.for_training(tmp_path, served)
    assert (choice.run.name, choice.resumed, choice.note) == ("run1", True, None)
    choice = Run.for_training(tmp_path, config_lib.TrainConfig(epochs=4, data_service="grpc://127.0.0.1:5050"))
    assert (choice.run.name, choice.resumed) == ("run2", False)


def test_a_pass_holds_every_training_example_once_from_a_seeded_offset():
    part = tf.data.Dataset.range(100, 110)
    stream = [int(x) for x in data_service.passes(part, 10, seed=3).take(60)]
    passes = [stream[start : start + 10] for start in range(0, 60, 10)]
    for one in passes:
        offset = one[0] - 100
        assert one == list(range(100 + offset, 110)) + list(range(100, 100 + offset))  # a rotation
    assert len({one[0] for one in passes}) > 1
    assert stream == [int(x) for x in data_service.passes(part, 10, seed=3).take(60)]
    assert stream != [int(x) for x in data_service.passes(part, 10, seed=4).take(60)]


def test_nothing_listening_is_refused_at_once():
    (port,) = free_ports(1)
    start = time.monotonic()
    with pytest.raises(data_service.DataServiceError, match=f"no tf.data service dispatcher at {HOST}:{port}"):
        data_service.check_reachable(f"grpc://{HOST}:{port}")
    assert time.monotonic() - start < 2


def test_a_server_that_does_not_speak_grpc_is_refused_within_the_timeout():
    with socket.create_server((HOST, 0)) as silent:  # accepts connections, never answers
        port = silent.getsockname()[1]
        start = time.monotonic()
        with pytest.raises(data_service.DataServiceError, match="no gRPC handshake within 1 s"):
            data_service.check_reachable(f"{HOST}:{port}", timeout_s=1)
        assert time.monotonic() - start < 5


# ---------------------------------------------------------------------------- in-process servers


def in_process_service(workers):
    dispatcher = tf.data.experimental.service.DispatchServer(tf.data.experimental.service.DispatcherConfig(port=0))
    address = f"{HOST}:{dispatcher._address.rsplit(':', 1)[1]}"
    servers = [dispatcher] + [
        tf.data.experimental.service.WorkerServer(
            tf.data.experimental.service.WorkerConfig(dispatcher_address=address, worker_address=f"{HOST}:%port%")
        )
        for _ in range(workers)
    ]
    return address, servers


@pytest.fixture
def two_workers():
    address, servers = in_process_service(2)
    yield address, servers[1:]
    for server in reversed(servers):
        server.stop()


@pytest.fixture
def one_worker():
    address, servers = in_process_service(1)
    yield address
    for server in reversed(servers):
        server.stop()


@pytest.fixture(scope="module")
def sample():
    """The embedded sample's training and held-out parts, and statistics to prepare them with."""
    source = data.source("cifar10_sample")
    size = source.info().split_sizes["train"]
    train_part, validation_part = input_pipeline.split_holdout(source.load("train"), size, 0.1)
    stats = preprocessing.DatasetStats(
        mean_rgb=np.array([120.0, 120.0, 110.0], np.float32), eigenvalues=np.ones(3, np.float32),
        eigenvectors=np.eye(3, dtype=np.float32), num_images=1,
    )  # fmt: skip
    return train_part, validation_part, size - len(validation_part), stats


def batches(source, stats, augment=False):
    """32x32 batches of 30: without augmentation each image comes out the same wherever it is made."""
    return input_pipeline.train_dataset(
        source, batch_size=30, stats=stats, image_size=32, seed=5, augment=augment, pca_std=0.1 if augment else 0.0
    )


def fingerprints(images):
    return [hashlib.sha256(np.ascontiguousarray(image).tobytes()).hexdigest() for image in images.numpy()]


def test_two_workers_serve_batches_of_training_images_only_and_never_the_same_batch(two_workers, sample):
    address, _ = two_workers
    train_part, validation_part, num_train, stats = sample
    trained = {f for images, _ in batches(train_part, stats) for f in fingerprints(images)}
    held_out = {f for images, _ in batches(validation_part, stats) for f in fingerprints(images)}
    assert len(trained) == num_train and not trained & held_out

    served = data_service.distribute(
        batches(data_service.passes(train_part, num_train, seed=5), stats), address, "test-two-workers"
    )
    received = [tuple(fingerprints(images)) for images, _ in served.take(90)]  # three passes' worth
    seen = {f for batch in received for f in batch}
    assert seen <= trained
    # Each worker runs the seeded pipeline: without passes of their own they would serve the same batches.
    assert len(set(received)) == len(received)


def test_one_worker_serves_the_same_batches_for_a_seed(one_worker, sample):
    train_part, _, num_train, stats = sample
    pipeline = batches(data_service.passes(train_part, num_train, seed=5), stats, augment=True)
    first, second = (
        [images.numpy() for images, _ in data_service.distribute(pipeline, one_worker, job).take(40)]
        for job in ("test-one-worker-a", "test-one-worker-b")
    )
    assert all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))


def test_a_worker_s_port_is_refused_as_not_a_dispatcher(two_workers):
    _, workers = two_workers
    worker = f"{HOST}:{workers[0]._address.rsplit(':', 1)[1]}"
    with pytest.raises(data_service.DataServiceError, match="answers, but not as a tf.data service dispatcher"):
        data_service.distribute(tf.data.Dataset.range(3), worker, "test-wrong-port")


# ---------------------------------------------------------------------------- processes


def environment():
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1"}
    env.pop("ALEXNET_TF_DATA_DIR", None)
    return env


class Launched:
    """A process started with its output in a file, which it is always stopped with."""

    def __init__(self, args, log):
        self.log = log
        with open(log, "w") as out:
            self.process = subprocess.Popen(
                [sys.executable, *map(str, args)], cwd=REPO_ROOT, env=environment(), stdout=out, stderr=subprocess.STDOUT
            )

    def output(self):
        return self.log.read_text(errors="replace")

    def wait_for(self, text, timeout_s):
        deadline = time.monotonic() + timeout_s
        while text not in self.output():
            assert self.process.poll() is None, f"exited with {self.process.returncode}: {self.output()[-2000:]}"
            assert time.monotonic() < deadline, f"no {text!r} after {timeout_s} s: {self.output()[-2000:]}"
            time.sleep(0.2)

    def stop(self, timeout_s=20):
        """SIGTERM, then SIGKILL if it is still running after `timeout_s`; returns the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


@pytest.fixture
def launched_service(tmp_path):
    """A dispatcher (fault-tolerant, with a work_dir) and two workers, launched as processes on
    127.0.0.1, all serving; they are stopped whatever the test does."""
    dispatcher_port, *worker_ports = free_ports(3)
    module = ["-m", "alexnet_tf.data_service"]
    dispatcher = Launched(
        [*module, "--role=dispatcher", f"--port={dispatcher_port}", f"--work_dir={tmp_path / 'dispatcher'}"],
        tmp_path / "dispatcher.log",
    )
    workers = [
        Launched(
            [*module, "--role=worker", f"--dispatcher={HOST}:{dispatcher_port}", f"--port={port}",
             f"--worker_address={HOST}:{port}"],
            tmp_path / f"worker{index}.log",
        )  # fmt: skip
        for index, port in enumerate(worker_ports)
    ]
    try:
        for process in [dispatcher, *workers]:
            process.wait_for("serving on port", timeout_s=120)
        yield f"grpc://{HOST}:{dispatcher_port}", dispatcher, workers
    finally:
        for process in [*workers, dispatcher]:
            process.stop(timeout_s=5)


def epoch_losses(history_file):
    with open(history_file) as f:
        return [float(row["loss"]) for row in csv.DictReader(f)]


@pytest.mark.slow
def test_training_through_the_service_goes_on_when_a_worker_is_killed(launched_service, tmp_path):
    address, dispatcher, workers = launched_service
    epochs, steps = 5, 10
    trainer = Launched(
        ["-m", "alexnet_tf.train", f"--data_service={address}", f"--experiments_dir={tmp_path / 'experiments'}",
         "--experiment=served", "--dataset=cifar10_sample", "--model=four_layer", "--image_size=32",
         "--batch_size=32", f"--steps_per_epoch={steps}", f"--epochs={epochs}", "--stats_images=64",
         "--learning_rate=0.003", "--weight_decay=0"],
        tmp_path / "trainer.log",
    )  # fmt: skip
    try:
        trainer.wait_for("Epoch 2/", timeout_s=180)
        workers[0].process.kill()  # mid-run: both workers hold passes of the run's job
        workers[0].process.wait(30)
        assert trainer.process.wait(180) == 0, trainer.output()[-3000:]
    finally:
        trainer.stop(timeout_s=5)
    output = trainer.output()
    assert "Training batches from the tf.data service" in output
    assert re.findall(r"^(\d+)/(\d+) - ", output, re.MULTILINE) == [(str(steps), str(steps))] * epochs
    losses = epoch_losses(tmp_path / "experiments" / "served" / "run1" / "history.csv")
    assert len(losses) == epochs and losses[-1] < losses[0] - 0.05, losses
    assert workers[0].process.returncode == -signal.SIGKILL
    # The launchers that are left stop cleanly on SIGTERM.
    for process in (workers[1], dispatcher):
        assert process.stop() == 0, process.output()[-2000:]
        assert "stopped by SIGTERM" in process.output()


@pytest.mark.slow
def test_a_wrong_dispatcher_address_fails_in_one_line_within_seconds(tmp_path):
    (port,) = free_ports(1)
    start = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "alexnet_tf.train", f"--data_service=grpc://{HOST}:{port}",
         f"--experiments_dir={tmp_path}", "--model=four_layer", "--image_size=32"],
        cwd=REPO_ROOT, env=environment(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    elapsed = time.monotonic() - start
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 1 and len(errors) == 1, result.stderr[-2000:]
    assert f"no tf.data service dispatcher at {HOST}:{port}" in errors[0] and "--role=dispatcher" in errors[0]
    assert "Traceback" not in result.stderr and not any(tmp_path.iterdir())  # refused before the run was made
    assert elapsed < 30, elapsed  # TensorFlow's start-up, then at once


@pytest.mark.parametrize(
    "args,message",
    [
        (["--role=worker"], "a worker needs --dispatcher=HOST:PORT"),
        (["--role=dispatcher", "--dispatcher=h:1"], "are a worker's flags"),
        (["--role=worker", "--dispatcher=h"], "--dispatcher='h' is not a tf.data service address"),
    ],
)
def test_the_launcher_refuses_bad_flags_in_one_line(args, message):
    result = subprocess.run(
        [sys.executable, "-m", "alexnet_tf.data_service", *args],
        cwd=REPO_ROOT, env=environment(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and len(errors) == 1 and message in errors[0], result.stderr[-2000:]
