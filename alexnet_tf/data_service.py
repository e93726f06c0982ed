"""The tf.data service: its launchers, and the trainer's side of it.

    python -m alexnet_tf.data_service --role=dispatcher --port=5050 --work_dir=/var/alexnet_dispatcher
    python -m alexnet_tf.data_service --role=worker --dispatcher=HOST:5050 --port=5051 [--worker_address=HOST:5051]
    python -m alexnet_tf.train ... --data_service=grpc://HOST:5050

Each launcher prints one line once it serves, then runs until SIGTERM or
Ctrl-C (exit status 0). The dispatcher, given `--work_dir`, runs in
fault-tolerant mode: it journals its datasets, jobs and split positions
there, so a dispatcher restarted on the same folder carries on the running
jobs. Workers register themselves with the dispatcher (and wait for it while
it is down); they may join, leave or be killed while a run trains.

With `--data_service`, the training pipeline's preprocessing (reading,
decoding, crop, flip, PCA lighting, mean, batching) runs on the service's
workers; the trainer only receives the batches. The training-set statistics,
the validation batches, the test score and the six preview images of
TensorBoard stay in the training process.

**Processing mode.** `ShardingPolicy.DYNAMIC`: the dispatcher hands out
*passes* over the training part (`passes`: the pass numbers 0, 1, 2, ... are
the splits), a worker turns each pass it is handed into augmented batches,
and each pass is handed to one worker only. So every training image is
processed once per pass, as locally, however many workers there are
(`ShardingPolicy.OFF` would have every worker run the whole seeded pipeline:
identical batch streams, each batch trained on once per worker). Splitting
finer than a pass, by file or record, is not done: the held-out part is cut
from the training split by position (`input_pipeline.split_holdout`), which a
worker holding only some of the records cannot apply (it would train on
held-out images). A worker shuffles each pass it gets (over
`PASS_SHUFFLE_BUFFER` images, with a seed drawn from the run's seed and the
pass number) before the pipeline's own seeded shuffle, and gives each image
the augmentation seed (run's seed, pass number, record index): otherwise
two workers would shuffle the same sequence into the same order, and draw
the same seeds.

**Epochs.** The trainer's epochs are `steps_per_epoch` batches of an endless
stream, as locally. Batches cross pass boundaries within a worker (nothing is
dropped at a pass's end), and every worker is partway through passes of its
own, so an epoch mixes images of several passes, as the local pipeline's
shuffle buffer already does across pass boundaries (a worker takes passes
until its shuffle buffer is full: about 11 passes of the embedded sample's
900 images).

**Determinism.** With one worker the batches are a fixed function of the
run's seed (the same on every run with that seed; not the same batches as
without the service). With several, each pass's content is fixed by the seed,
but which worker serves which pass, and the order in which the trainer
receives their batches, depend on timing: runs are not reproducible, even
with `--deterministic`.

**Jobs.** A run's job (and its dataset id) is named after its run
directory, its run id (`run_id.txt`, drawn when the run is started), the
epoch it starts or resumes from and a digest of its pipeline's settings and
statistics (`job_name`): the training processes of one multi-worker run
share it, each batch going to one of them, and two runs never do, nor a run
deleted and started again at the same path. A resumed run starts a new job
at pass 0, as a resumed local run restarts its pipeline.

**Failures.** A worker that dies loses the rest of the passes it held
(tf.data's at-most-once visitation in DYNAMIC mode: those images are skipped
in those passes); the trainer goes on with the other workers' batches, and a
restarted worker takes new passes. With no worker left the trainer waits. A
dispatcher that is down stops the trainer's input until it is back (with
`--work_dir`, where it was). The trainer checks at start that the dispatcher
answers within `CONNECT_TIMEOUT_S`, so a wrong address fails in one line
instead of hanging in tf.data's retries (they last up to an hour).
"""

import hashlib
import os
import re
import signal
import socket
import sys
import threading
import time

from absl import app, flags, logging

from alexnet_tf import cli

ROLES = ("dispatcher", "worker")
DEFAULT_PORTS = {"dispatcher": 5050, "worker": 5051}
PROTOCOL = "grpc"
# How long the trainer waits for the dispatcher's gRPC handshake before giving up: long enough
# for a loaded machine or a remote host, short enough that a wrong address fails at once.
CONNECT_TIMEOUT_S = 10.0
_ADDRESS = re.compile(r"^(?:(?P<scheme>[a-z][a-z0-9+.-]*)://)?(?P<host>\[[^\]]+\]|[^:/\s]+):(?P<port>\d+)$")
_START_HINT = (
    "start one with `python -m alexnet_tf.data_service --role=dispatcher --port={port}`, fix the address, "
    "or leave out --data_service to preprocess in this process."
)


class DataServiceError(OSError):
    """The tf.data service cannot be used: nothing answers at its address, or not a dispatcher."""


def parse_address(address, flag="--data_service"):
    """'host:port' from 'grpc://host:port' or 'host:port'; ValueError (one line) otherwise."""
    match = _ADDRESS.match(address or "")
    port = int(match["port"]) if match else 0
    if not match or match["scheme"] not in (None, PROTOCOL) or not 0 < port < 65536:
        raise ValueError(
            f"{flag}={address!r} is not a tf.data service address: give grpc://HOST:PORT (or HOST:PORT), "
            f"e.g. grpc://localhost:{DEFAULT_PORTS['dispatcher']}."
        )
    return f"{match['host']}:{port}"


# ---------------------------------------------------------------------------- the servers


def check_port_free(port):
    """Raises OSError when something listens on `port`: gRPC servers share a port (SO_REUSEPORT),
    so a second server there would start and silently take part of the first one's connections."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a closed connection's port is free
        try:
            probe.bind(("", port))
        except OSError as error:
            raise OSError(
                f"port {port} is in use ({error.strerror or error}; another dispatcher or worker?): "
                f"stop it or choose another --port."
            ) from None


def start_dispatcher(port=DEFAULT_PORTS["dispatcher"], work_dir=None):
    """A running `DispatchServer` on `port`; fault-tolerant, journaling to `work_dir`, when given."""
    import tensorflow as tf

    check_port_free(port)
    if work_dir:
        os.makedirs(work_dir, exist_ok=True)  # an OSError names a folder that cannot be made
    config = tf.data.experimental.service.DispatcherConfig(
        port=port, protocol=PROTOCOL, work_dir=work_dir or None, fault_tolerant_mode=bool(work_dir)
    )
    return tf.data.experimental.service.DispatchServer(config)


def start_worker(dispatcher, port=DEFAULT_PORTS["worker"], worker_address=None, on_wait=None):
    """A running `WorkerServer` on `port`, registered with `dispatcher` ('host:port').

    `worker_address` is the 'host:port' the dispatcher hands to trainers to
    reach this worker (default: this machine's host name and `port`).
    Waits for the dispatcher as long as it takes; `on_wait()` is called once
    when it does not answer at once.
    """
    import tensorflow as tf

    check_port_free(port)
    target = parse_address(dispatcher, "--dispatcher")
    # WorkerServer registers when it starts and blocks, holding Python's interpreter lock (no
    # signal handler runs), until the dispatcher answers: wait for its answer here instead.
    if _grpc_answers(target, timeout_s=1.0) is not None:
        if on_wait:
            on_wait()
        while _grpc_answers(target, timeout_s=1.0) is not None:
            time.sleep(1.0)
    config = tf.data.experimental.service.WorkerConfig(
        dispatcher_address=target,
        worker_address=worker_address or f"{socket.gethostname()}:{port}",
        port=port,
        protocol=PROTOCOL,
    )
    return tf.data.experimental.service.WorkerServer(config)


def start_server(role, port=None, *, work_dir=None, dispatcher=None, worker_address=None, on_wait=None):
    """(server, the line that says it serves): the launcher's dispatcher or worker, started."""
    port = port or DEFAULT_PORTS[role]
    if role == "dispatcher":
        state = f"fault-tolerant, state in {work_dir}" if work_dir else "state in memory only"
        serving = f"tf.data service dispatcher serving on port {port} ({state}); stop with Ctrl-C or SIGTERM"
        return start_dispatcher(port, work_dir), serving
    address = worker_address or f"{socket.gethostname()}:{port}"
    server = start_worker(dispatcher, port, address, on_wait)
    serving = (
        f"tf.data service worker serving on port {port} as {address}, registered with the dispatcher at "
        f"{dispatcher}; stop with Ctrl-C or SIGTERM"
    )
    return server, serving


class StopRequested(Exception):
    def __init__(self, signal_number):
        super().__init__(signal.Signals(signal_number).name)
        self.signal_number = signal_number


def stop_on_signals():
    """Makes SIGTERM and SIGINT raise `StopRequested` in the main thread."""

    def handler(signal_number, frame):
        raise StopRequested(signal_number)

    for signal_number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signal_number, handler)


def wait_for_stop():
    """Blocks until SIGTERM or SIGINT; returns the signal's name."""
    try:
        while True:
            threading.Event().wait(3600)
    except StopRequested as stop:
        return str(stop)


# ---------------------------------------------------------------------------- the trainer's side


def check_reachable(address, timeout_s=CONNECT_TIMEOUT_S):
    """Raises `DataServiceError` unless a gRPC server answers at `address` within `timeout_s`.

    tf.data's own client retries an unreachable dispatcher for up to an hour
    (`kRetryTimeoutMicros` in TensorFlow's register_dataset_op.cc); this makes
    a wrong address one line at once. (A gRPC server that is not a
    dispatcher passes here and is refused by `distribute`.)
    """
    target = parse_address(address)
    reason = _grpc_answers(target, timeout_s)
    if reason is not None:
        raise DataServiceError(
            f"no tf.data service dispatcher at {target} (--data_service={address}: {reason}): "
            f"{_START_HINT.format(port=target.rsplit(':', 1)[1])}"
        )


def _grpc_answers(target, timeout_s):
    """None when a gRPC server at `target` ('host:port') completes a handshake within
    `timeout_s`; otherwise why not, in a few words."""
    import grpc

    host, port = target.rsplit(":", 1)
    try:  # a refused connection or an unknown host: known at once, with the system's reason
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as error:
        return error.strerror or str(error)
    channel = grpc.insecure_channel(target)
    try:
        grpc.channel_ready_future(channel).result(timeout=timeout_s)
        return None
    except grpc.FutureTimeoutError:
        return f"no gRPC handshake within {timeout_s:g} s"
    finally:
        channel.close()


# Images a pass is shuffled over before the pipeline's own shuffle: enough to give every pass an
# order of its own (workers would otherwise feed their pipelines the same sequence), without
# holding a whole pass in memory.
PASS_SHUFFLE_BUFFER = 1000


def passes(train_part, num_examples, seed):
    """The training part, pass after pass, as the splits DYNAMIC sharding hands to workers:
    ((image, label), [2] int64 augmentation seed) elements, for `train_dataset(element_seeds=True)`.

    The dispatcher runs only the source, a `Dataset.range` of pass numbers:
    its elements are the splits. (`Dataset.counter()` would not do: it is not
    split, so every worker would make every pass.) A worker turns pass p into
    every training example once, in an order shuffled with a seed drawn from
    (`seed`, p), each with the seed (`seed`, p, its record index). The seeds
    travel with the elements because a worker's own `Dataset.random` is not
    split: every worker would draw the same seeds, giving the k-th image of
    each the same crop, flip and lighting. The order is shuffled rather than
    rotated by skipping ahead because skipping still reads and decodes the
    skipped records.
    """
    import tensorflow as tf

    def one_pass(pass_number):
        pass_seed = tf.stack([tf.constant(seed, tf.int64), pass_number])
        order_seed = tf.random.stateless_uniform([], seed=pass_seed, dtype=tf.int64, minval=None, maxval=None)
        seeded = train_part.enumerate().map(
            lambda index, example: (example, tf.random.experimental.stateless_fold_in(pass_seed, index))
        )
        # With a global seed set (the trainer's keras.utils.set_random_seed), TensorFlow's get_seed
        # compares the op seed as a Python value and fails on a tensor seed; this function's graph
        # forgets the global seed, which `order_seed` (drawn from `seed`) replaces.
        tf.compat.v1.get_default_graph().seed = None
        return seeded.shuffle(max(1, min(num_examples, PASS_SHUFFLE_BUFFER)), seed=order_seed)

    return tf.data.Dataset.range(sys.maxsize).flat_map(one_pass)


def pipeline_digest(config, stats, num_train):
    """A hash of what shapes the training pipeline the workers run: the run's settings (all but
    where preprocessing runs), its training-set statistics and its training-part size."""
    import dataclasses

    import numpy as np

    from alexnet_tf import config as config_lib

    digest = hashlib.sha256()
    settings = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
    for name in config_lib.PLACEMENT_FIELDS:
        settings.pop(name, None)
    digest.update(repr(sorted(settings.items())).encode())
    digest.update(str(num_train).encode())
    for name, value in sorted(vars(stats).items()):
        digest.update(name.encode())
        digest.update(b"-" if value is None else np.ascontiguousarray(value).tobytes())
    return digest.hexdigest()[:16]


def job_name(run_directory, initial_epoch, run_id, pipeline):
    """The run's job and dataset id: shared by its training processes (they share the run
    directory, its `run_id` and the configuration), never by another run, nor by a later
    resumption of it (which starts a job of its own), nor by a pipeline built otherwise.

    The dispatcher keeps a dataset id for as long as it runs (and in its --work_dir across
    restarts), and given a known id it serves the dataset first registered under it, checking
    only the element structure: so the name holds `run_id` (new for each run, so a deleted and
    restarted run1 gets a name of its own) and `pipeline` (`pipeline_digest`). Hashed, as the
    dispatcher files the dataset under this name."""
    path = os.path.abspath(run_directory)
    digest = hashlib.sha256(f"{path}\n{run_id}\n{initial_epoch}\n{pipeline}".encode()).hexdigest()[:16]
    return f"alexnet_tf.{os.path.basename(os.path.dirname(path))}.{os.path.basename(path)}.epoch{initial_epoch}.{digest}"


def distribute(dataset, address, job):
    """`dataset` (an endless training pipeline built on `passes`) run by the service's workers.

    Registered under `job` as its dataset id, so that every training process
    of a multi-worker run reads the dataset the first one registered (they
    build the same one) and shares the job.
    """
    import tensorflow as tf

    service = f"{PROTOCOL}://{parse_address(address)}"
    try:
        dataset_id = tf.data.experimental.service.register_dataset(service, dataset, dataset_id=job)
    except tf.errors.UnimplementedError:
        raise DataServiceError(
            f"{parse_address(address)} answers, but not as a tf.data service dispatcher (a worker's port?): "
            f"give --data_service the dispatcher's address."
        ) from None
    return tf.data.experimental.service.from_dataset_id(
        processing_mode=tf.data.experimental.service.ShardingPolicy.DYNAMIC,
        service=service,
        dataset_id=dataset_id,
        element_spec=dataset.element_spec,
        job_name=job,
    )


# ---------------------------------------------------------------------------- the launchers

FLAGS = flags.FLAGS


def define_flags(flag_values=flags.FLAGS):
    fv = dict(flag_values=flag_values)
    flags.DEFINE_enum("role", None, ROLES, "Which server to run.", required=True, **fv)
    flags.DEFINE_integer(
        "port", None, f"Port to serve on. Default: {DEFAULT_PORTS['dispatcher']} for the dispatcher, "
        f"{DEFAULT_PORTS['worker']} for a worker.", lower_bound=1, upper_bound=65535, **fv)  # fmt: skip
    flags.DEFINE_string(
        "work_dir", None, "Dispatcher: the folder it journals its state to (fault-tolerant mode), so that a "
        "restart on the same folder carries on the running jobs. Without it the state is in memory only.", **fv)  # fmt: skip
    flags.DEFINE_string("dispatcher", None, "Worker: the dispatcher's HOST:PORT (or grpc://HOST:PORT).", **fv)
    flags.DEFINE_string(
        "worker_address", None, "Worker: the HOST:PORT trainers reach it at, which it registers with the "
        "dispatcher. Default: this machine's host name and --port; give an address other machines can "
        "resolve where that name is local (e.g. a Kubernetes pod's IP).", **fv)  # fmt: skip
    flags.DEFINE_boolean("verbose", False, "Show Python tracebacks on errors.", **fv)
    # Checked while parsing, so that a wrong combination is refused before TensorFlow loads.
    flags.register_multi_flags_validator(
        ["role", "work_dir", "dispatcher", "worker_address"], _check_role_flags, flag_values=flag_values
    )


def _check_role_flags(values):
    """Refuses (one line) flags that do not belong to the role, and a worker without its dispatcher."""
    if values["role"] == "dispatcher" and (values["dispatcher"] or values["worker_address"]):
        raise flags.ValidationError(
            "--dispatcher and --worker_address are a worker's flags; the dispatcher takes --port and --work_dir"
        )
    if values["role"] == "worker" and values["work_dir"]:
        raise flags.ValidationError("--work_dir is the dispatcher's flag; a worker keeps no state")
    if values["role"] == "worker" and not values["dispatcher"]:
        raise flags.ValidationError("a worker needs --dispatcher=HOST:PORT, the dispatcher's address")
    try:
        for name in ("dispatcher", "worker_address"):
            if values[name]:
                parse_address(values[name], f"--{name}")
    except ValueError as error:
        raise flags.ValidationError(str(error).rstrip(".")) from None
    return True


def main(argv):
    cli.refuse_extra_arguments(argv)
    if not FLAGS.verbose:
        logging.set_verbosity(logging.WARNING)
    stop_on_signals()
    server = None
    try:
        with cli.one_line_errors(FLAGS.verbose):
            server, serving = start_server(
                FLAGS.role, FLAGS.port, work_dir=FLAGS.work_dir, dispatcher=FLAGS.dispatcher,
                worker_address=FLAGS.worker_address,
                on_wait=lambda: print(f"waiting for the dispatcher at {FLAGS.dispatcher}...", flush=True),
            )  # fmt: skip
        print(serving, flush=True)
        stopped_by = wait_for_stop()
    except StopRequested as stop:  # while starting
        stopped_by = str(stop)
    if server is not None:
        server.stop()
    print(f"tf.data service {FLAGS.role} stopped by {stopped_by}", flush=True)


if __name__ == "__main__":
    # Before TensorFlow loads (this module imports it only where it is used), as the other entry points.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    define_flags()
    app.run(main, flags_parser=cli.parse_flags)
