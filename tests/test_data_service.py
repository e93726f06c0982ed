"""The tf.data service: passes and jobs, batches served by in-process servers, the launchers as
processes on 127.0.0.1, training through them with a worker killed mid-run, and a wrong address."""

import csv
import hashlib
import os
import pathlib
import re
import signal
import socket
import shutil
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import tensorflow as tf

from alexnet_tf import config as config_lib
from alexnet_tf import data, data_service, input_pipeline, preprocessing
from alexnet_tf.run import Run, RunError
from deploy.local_cluster import free_ports  # the single-host recipe's: the same need

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"




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


def test_a_job_is_the_run_s_its_id_s_its_start_epoch_s_and_its_pipeline_s_and_a_file_name(tmp_path):
    run1, run2 = tmp_path / "e" / "run1", tmp_path / "e" / "run2"
    name = data_service.job_name(run1, 0, "id1", "pipeline1")
    assert name == data_service.job_name(str(run1), 0, "id1", "pipeline1")  # the same for all the run's processes
    others = {
        data_service.job_name(run2, 0, "id1", "pipeline1"),
        data_service.job_name(tmp_path / "f" / "run1", 0, "id1", "pipeline1"),
        data_service.job_name(run1, 3, "id1", "pipeline1"),  # a resumption starts a job of its own
        data_service.job_name(run1, 0, "id2", "pipeline1"),  # run1 deleted and started again
        data_service.job_name(run1, 0, "id1", "pipeline2"),  # another pipeline
    }
    assert len(others) == 5 and name not in others
    # The dispatcher files the dataset under this name in its work_dir.
    assert re.fullmatch(r"[\w.-]+", name) and "run1" in name


def test_a_pipeline_digest_changes_with_the_settings_and_statistics_but_not_the_service(sample):
    *_, num_train, stats = sample
    config = config_lib.TrainConfig()
    digest = data_service.pipeline_digest(config, stats, num_train)
    assert digest == data_service.pipeline_digest(config_lib.TrainConfig(data_service="grpc://h:1"), stats, num_train)
    lighter = preprocessing.DatasetStats(
        mean_rgb=stats.mean_rgb, eigenvalues=stats.eigenvalues * 2, eigenvectors=stats.eigenvectors, num_images=1
    )
    changed = {
        data_service.pipeline_digest(config_lib.TrainConfig(seed=1), stats, num_train),
        data_service.pipeline_digest(config_lib.TrainConfig(validation_fraction=0.2), stats, num_train),
        data_service.pipeline_digest(config_lib.TrainConfig(pca_std=0.2), stats, num_train),
        data_service.pipeline_digest(config, lighter, num_train),
        data_service.pipeline_digest(config, stats, num_train - 1),
    }
    assert len(changed) == 5 and digest not in changed


def test_a_claimed_run_has_an_id_of_its_own(tmp_path):
    Run(tmp_path / "run1").claim(config_lib.TrainConfig(), ["a", "b"])
    first = Run(tmp_path / "run1").wait_for_run_id(timeout_s=0)
    shutil.rmtree(tmp_path / "run1")
    Run(tmp_path / "run1").claim(config_lib.TrainConfig(), ["a", "b"])
    assert first and Run(tmp_path / "run1").run_id() not in (None, first)
    with pytest.raises(RunError, match="did not appear within 0 s"):
        Run(tmp_path / "run2").wait_for_run_id(timeout_s=0)


def test_a_run_continues_under_another_data_service_but_not_under_other_flags(tmp_path):
    local = config_lib.TrainConfig(epochs=3)
    Run(tmp_path / "run1").claim(local, ["a", "b"])
    served = config_lib.TrainConfig(epochs=3, data_service="grpc://127.0.0.1:5050")
    choice = Run.for_training(tmp_path, served)
    assert (choice.run.name, choice.resumed, choice.note) == ("run1", True, None)
    choice = Run.for_training(tmp_path, config_lib.TrainConfig(epochs=4, data_service="grpc://127.0.0.1:5050"))
    assert (choice.run.name, choice.resumed) == ("run2", False)


def pass_stream(seed, elements=60):
    part = tf.data.Dataset.range(100, 110).map(lambda x: (x, -x))
    return [((int(image), int(label)), tuple(element_seed)) for (image, label), element_seed in
            data_service.passes(part, 10, seed=seed).take(elements).as_numpy_iterator()]  # fmt: skip


def test_a_pass_holds_every_training_example_once_in_a_seeded_order_with_seeds_of_its_own():
    tf.random.set_seed(7)  # as the trainer does: the pass's tensor shuffle seed must still work
    stream = pass_stream(seed=3)
    passes = [stream[start : start + 10] for start in range(0, 60, 10)]
    for one in passes:
        assert sorted(example for example, _ in one) == [(x, -x) for x in range(100, 110)]
    assert len({tuple(example for example, _ in one) for one in passes}) == 6  # an order per pass
    assert len({element_seed for _, element_seed in stream}) == 60  # a seed per pass and image
    assert stream == pass_stream(seed=3)
    assert stream != pass_stream(seed=4)


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
    """(dispatcher's host:port, worker addresses, servers), on ports chosen here."""
    dispatcher_port, *worker_ports = free_ports(1 + workers)
    dispatcher = tf.data.experimental.service.DispatchServer(
        tf.data.experimental.service.DispatcherConfig(port=dispatcher_port)
    )
    address = data_service.parse_address(dispatcher.target.replace("localhost", HOST))
    worker_addresses = [f"{HOST}:{port}" for port in worker_ports]
    servers = [dispatcher] + [
        tf.data.experimental.service.WorkerServer(
            tf.data.experimental.service.WorkerConfig(dispatcher_address=address, port=port, worker_address=worker)
        )
        for port, worker in zip(worker_ports, worker_addresses)
    ]
    return address, worker_addresses, servers


# tf.data's client retries a failing service for up to an hour: these tests give up long before.
SERVICE_TIMEOUT_S = 120


def within(function, timeout_s=SERVICE_TIMEOUT_S):
    """function()'s result, or a test failure when it has not returned within `timeout_s`
    (it runs in a daemon thread, left behind then)."""
    outcome = {}

    def run():
        try:
            outcome["value"] = function()
        except BaseException as error:  # re-raised in the test's thread
            outcome["error"] = error

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        pytest.fail(f"the tf.data service did not answer within {timeout_s} s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


@pytest.fixture
def two_workers():
    address, worker_addresses, servers = in_process_service(2)
    yield address, worker_addresses
    for server in reversed(servers):
        server.stop()


@pytest.fixture
def one_worker():
    address, _, servers = in_process_service(1)
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


def batches(passes, stats, augment=False):
    """32x32 batches of 30 from `data_service.passes`: without augmentation each image comes out
    the same wherever it is made."""
    return input_pipeline.train_dataset(
        passes, batch_size=30, stats=stats, image_size=32, seed=5, augment=augment, pca_std=0.1 if augment else 0.0,
        element_seeds=True,
    )  # fmt: skip


def fingerprints(images):
    return [hashlib.sha256(np.ascontiguousarray(image).tobytes()).hexdigest() for image in images.numpy()]


def test_two_workers_serve_batches_of_training_images_only_and_never_the_same_batch(two_workers, sample):
    address, _ = two_workers
    train_part, validation_part, num_train, stats = sample
    trained = {f for images, _ in batches(data_service.passes(train_part, num_train, 5).take(num_train), stats)
               for f in fingerprints(images)}  # fmt: skip
    held_out = {f for images, _ in batches(data_service.passes(validation_part, 90, 5).take(90), stats)
                for f in fingerprints(images)}  # fmt: skip
    assert len(trained) == num_train and not trained & held_out

    served = within(lambda: data_service.distribute(
        batches(data_service.passes(train_part, num_train, seed=5), stats), address, "test-two-workers"
    ))  # fmt: skip
    received = within(lambda: [tuple(fingerprints(images)) for images, _ in served.take(90)])  # three passes' worth
    seen = {f for batch in received for f in batch}
    assert seen <= trained
    # Each worker runs the seeded pipeline: without passes of their own they would serve the same batches.
    assert len(set(received)) == len(received)


def test_one_worker_serves_the_same_batches_for_a_seed(one_worker, sample):
    train_part, _, num_train, stats = sample
    pipeline = batches(data_service.passes(train_part, num_train, seed=5), stats, augment=True)
    first, second = (
        within(lambda: [images.numpy() for images, _ in data_service.distribute(pipeline, one_worker, job).take(40)])
        for job in ("test-one-worker-a", "test-one-worker-b")
    )
    assert all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))


def test_a_worker_s_port_is_refused_as_not_a_dispatcher(two_workers):
    _, workers = two_workers
    with pytest.raises(data_service.DataServiceError, match="answers, but not as a tf.data service dispatcher"):
        within(lambda: data_service.distribute(tf.data.Dataset.range(3), workers[0], "test-wrong-port"))


def test_two_workers_never_serve_the_same_augmentation_seed(two_workers):
    address, _ = two_workers
    part = tf.data.Dataset.range(50).map(lambda x: (x, x))
    seeds = data_service.passes(part, 50, seed=5).map(lambda example, element_seed: element_seed)
    served = within(lambda: data_service.distribute(seeds, address, "test-two-workers-seeds"))
    received = within(lambda: [tuple(pair) for pair in served.take(300).as_numpy_iterator()])  # six passes
    assert len(set(received)) == len(received) == 300


def test_a_changed_pipeline_for_the_same_run_path_is_not_served_the_old_one(one_worker, tmp_path, sample):
    *_, num_train, stats = sample
    run = tmp_path / "served" / "run1"
    old = data_service.job_name(run, 0, "first-run1", data_service.pipeline_digest(config_lib.TrainConfig(), stats, num_train))
    served = within(lambda: data_service.distribute(tf.data.Dataset.range(5), one_worker, old))
    assert within(lambda: [int(x) for x in served.take(5)]) == list(range(5))
    # run1 deleted and started again with another seed: another run id and another pipeline.
    new = data_service.job_name(run, 0, "second-run1", data_service.pipeline_digest(config_lib.TrainConfig(seed=1), stats, num_train))
    served = within(lambda: data_service.distribute(tf.data.Dataset.range(100, 105), one_worker, new))
    assert within(lambda: [int(x) for x in served.take(5)]) == list(range(100, 105))


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
    epochs, steps = 5, 20  # at 10 steps an epoch the loss could still be near ln 10 after 5 epochs
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
    # The launchers that are left stop cleanly on SIGTERM (a worker's gRPC shutdown once took over
    # 20 s in CI, with the suite's two test processes on the machine's two cores: a minute's grace).
    for process in (workers[1], dispatcher):
        assert process.stop(timeout_s=60) == 0, process.output()[-2000:]
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
    # TensorFlow's start-up, then at once (a minute allows for the suite's other worker on 2 cores;
    # without the check the trainer waits on the address until the subprocess timeout).
    assert elapsed < 60, elapsed


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
