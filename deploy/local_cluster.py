"""Multi-worker training and a tf.data service on one host: the single-host form of deploy/k8s.

    python -m deploy.local_cluster --workers=2 --data_workers=2 -- --flagfile=experiments/sample.flags --epochs=2

starts a tf.data service dispatcher and --data_workers workers (`python -m
alexnet_tf.data_service`), then --workers training processes (`python -m
alexnet_tf.train --strategy=multi_worker --data_service=grpc://127.0.0.1:P` and the
training flags after `--`), each with a TF_CONFIG that names them all on 127.0.0.1
(worker 0 is the chief). Every line a process prints is shown after its name.
--data_workers=0 runs the trainers without a data service, each reading its own input.

It ends when the trainers have ended: with status 0 when all of them succeeded, or the
first failing one's status, after stopping the others (a multi-worker run cannot go on
without one of its workers). Ctrl-C or SIGTERM asks the trainers to stop (they keep the
state of the last finished epoch; the same command resumes) and then stops the data
service; a second Ctrl-C kills at once. Trainers still running --grace_s seconds after
being asked to stop are killed.
"""

import argparse
import dataclasses
import os
import pathlib
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

from deploy.tf_config import tf_config

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
# The script sets these itself; a second value after `--` would silently win or clash.
OWN_FLAGS = ("--strategy", "--data_service")


@dataclasses.dataclass
class Process:
    """One process of the cluster: its name in the output, its command, its extra environment,
    and the port to wait for before starting the next (services only)."""

    name: str
    argv: list
    env: dict = dataclasses.field(default_factory=dict)
    port: int | None = None


def free_ports(count):
    """`count` distinct ports that are free on 127.0.0.1 now (bound together, then released)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind((HOST, 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def plan(workers, data_workers, train_flags, ports, work_dir, python=sys.executable):
    """(services, trainers): the data service's processes, then the training workers'.

    `ports` holds workers + (1 + data_workers if data_workers else 0) free ports: the
    trainers' first, then the dispatcher's and the data workers'.
    """
    refused = [flag for flag in train_flags if flag.split("=")[0] in OWN_FLAGS]
    if refused:
        raise ValueError(f"{', '.join(refused)}: local_cluster sets --strategy and --data_service itself")
    if workers < 1 or data_workers < 0:
        raise ValueError("--workers must be at least 1 and --data_workers at least 0")
    addresses = [f"{HOST}:{port}" for port in ports[:workers]]
    services, service_flags = [], []
    if data_workers:
        dispatcher_port, *worker_ports = ports[workers : workers + 1 + data_workers]
        data_service = [python, "-m", "alexnet_tf.data_service"]
        services.append(
            Process(
                "dispatcher",
                data_service + ["--role=dispatcher", f"--port={dispatcher_port}", f"--work_dir={work_dir}"],
                port=dispatcher_port,
            )
        )
        for index, port in enumerate(worker_ports):
            services.append(
                Process(
                    f"data worker {index}",
                    # The address the dispatcher hands to trainers: this host's loopback, where they run.
                    data_service + ["--role=worker", f"--dispatcher={HOST}:{dispatcher_port}", f"--port={port}",
                                    f"--worker_address={HOST}:{port}"],
                    port=port,
                )
            )
        service_flags = [f"--data_service=grpc://{HOST}:{dispatcher_port}"]
    trainers = [
        Process(
            f"worker {index}" + (" (chief)" if index == 0 else ""),
            [python, "-m", "alexnet_tf.train", "--strategy=multi_worker", *service_flags, *train_flags],
            env={"TF_CONFIG": tf_config(addresses, index)},
        )
        for index in range(workers)
    ]
    return services, trainers


def exit_status(returncode):
    """A child's return code as a shell reports it: a death by signal N (Popen's -N) is 128 + N."""
    return 128 - returncode if returncode < 0 else returncode


class Cluster:
    """Starts processes, relays their output, and stops them: trainers first, then services."""

    def __init__(self, grace_s=30.0, output=None, poll_s=0.1):
        self.grace_s = grace_s
        self.output = output or sys.stdout
        self.poll_s = poll_s
        self.started = []  # (Process, Popen), in starting order
        self.stop_signal = None
        self._stop = threading.Event()
        self._hurry = threading.Event()
        self._lock = threading.Lock()
        self._relays = []

    def request_stop(self, signum=signal.SIGTERM):
        """Asks the run to stop (from a signal handler or another thread); a second call kills."""
        if self._stop.is_set():
            self._hurry.set()
        self.stop_signal = self.stop_signal or signum
        self._stop.set()

    def say(self, line):
        with self._lock:
            self.output.write(line + "\n")
            self.output.flush()

    def start(self, process):
        popen = subprocess.Popen(
            process.argv,
            cwd=REPO_ROOT,
            # Unbuffered, so that the lines of all processes are relayed in the order they happen.
            env={**os.environ, "PYTHONUNBUFFERED": "1", **process.env},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            # A session of its own: Ctrl-C in the terminal reaches this script only, which then
            # stops the trainers before the data service they read from.
            start_new_session=True,
        )
        self.started.append((process, popen))
        relay = threading.Thread(target=self._relay, args=(process.name, popen.stdout), daemon=True)
        relay.start()
        self._relays.append(relay)
        return popen

    def _relay(self, name, stream):
        for line in stream:
            self.say(f"[{name}] {line.rstrip()}")

    def run(self, services, trainers, ready_timeout_s=120.0):
        """Runs the cluster to its end; returns the exit status (see the module's docstring)."""
        try:
            for process in services:
                popen = self.start(process)
                if process.port is not None and not self._wait_for_port(process, popen, ready_timeout_s):
                    return 1 if self.stop_signal is None else 128 + self.stop_signal
            for process in trainers:
                self.start(process)
            return self._supervise(services, trainers)
        finally:
            self._stop_all(trainers)
            self._stop_all(services)
            for relay in self._relays:
                relay.join(timeout=5)

    def _wait_for_port(self, process, popen, timeout_s):
        deadline = time.monotonic() + timeout_s
        while not self._stop.is_set():
            if popen.poll() is not None:
                self.say(f"local_cluster: {process.name} exited with status {popen.returncode} before listening")
                return False
            try:
                socket.create_connection((HOST, process.port), timeout=1).close()
                return True
            except OSError:
                if time.monotonic() > deadline:
                    self.say(f"local_cluster: {process.name} is not listening on port {process.port} after {timeout_s:.0f} s")
                    return False
                time.sleep(self.poll_s)
        return False

    def _popen(self, process):
        return next(popen for started, popen in self.started if started is process)

    def _supervise(self, services, trainers):
        while True:
            if self._stop.is_set():
                self.say(f"local_cluster: stopping on {signal.Signals(self.stop_signal).name}")
                return 128 + self.stop_signal
            codes = [self._popen(process).poll() for process in trainers]
            failed = [(process, code) for process, code in zip(trainers, codes) if code not in (None, 0)]
            if failed:
                process, code = failed[0]
                self.say(f"local_cluster: {process.name} exited with status {code}; stopping the others")
                return exit_status(code)
            if all(code == 0 for code in codes):
                return 0
            for process in services:
                code = self._popen(process).poll()
                if code is not None:
                    self.say(f"local_cluster: {process.name} exited with status {code} during training; stopping")
                    return exit_status(code) or 1
            time.sleep(self.poll_s)

    def _stop_all(self, processes):
        running = [
            (process, self._popen(process))
            for process in processes
            if any(started is process for started, _ in self.started) and self._popen(process).poll() is None
        ]
        for _, popen in running:
            popen.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.grace_s
        for process, popen in running:
            while popen.poll() is None and time.monotonic() < deadline and not self._hurry.is_set():
                time.sleep(self.poll_s)
            if popen.poll() is None:
                self.say(f"local_cluster: killing {process.name}")
                popen.kill()
                popen.wait()


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m deploy.local_cluster",
        description="Multi-worker training and a tf.data service on one host (README, 'Several machines').",
        epilog="Training flags go after `--`, e.g. -- --flagfile=experiments/sample.flags --epochs=2.",
    )
    parser.add_argument("--workers", type=int, default=2, help="training processes (default 2)")
    parser.add_argument("--data_workers", type=int, default=2, help="tf.data service workers; 0: no data service (default 2)")
    parser.add_argument("--dispatcher_work_dir", help="the dispatcher's state folder (default: a temporary one)")
    parser.add_argument("--grace_s", type=float, default=60.0, help="seconds a trainer has to stop before it is killed")
    split = argv.index("--") if "--" in argv else len(argv)
    return parser, parser.parse_args(argv[:split]), argv[split + 1 :]


def main(argv):
    parser, args, train_flags = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="alexnet_tf_dispatcher_") as scratch:
        count = args.workers + (1 + args.data_workers if args.data_workers > 0 else 0)
        try:
            services, trainers = plan(
                args.workers, args.data_workers, train_flags, free_ports(max(count, 1)), args.dispatcher_work_dir or scratch
            )
        except ValueError as error:
            parser.error(str(error))
        cluster = Cluster(grace_s=args.grace_s)
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda signum, frame: cluster.request_stop(signum))
        return cluster.run(services, trainers)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
