"""Throughput benchmark: training steps, input pipeline, end-to-end fit, matmul peak.

    python -m alexnet_tf.bench                      # defaults: batch 64, 224x224, 5 rounds (< 5 min on 2 cores)
    python -m alexnet_tf.bench --xla --precisions=fp32 --towers=1   # XLA on/off per norm
    python -m alexnet_tf.bench --lrn_layer          # the LRN layer alone, per implementation and precision
    python -m alexnet_tf.bench --service_workers=1,2    # the pipeline here vs through a local tf.data service
    python -m alexnet_tf.bench --imagenet_dir=PATH  # ImageNet preprocessing per core, on that tree's JPEGs
    python -m alexnet_tf.bench --quick              # smoke run, well under a minute
    python -m alexnet_tf.bench --data_dir=PATH --dataset=cifar10 --json=bench.json
    make bench BENCH_FLAGS="--json=bench.json"

What is timed, in one process, after warm-up:

- **Training step** (forward, backward, SGD-with-momentum update;
  ``model.train_on_batch`` on one fixed batch of the real pipeline's
  images, 1000 classes as in the paper) for every norm in ``--norms``,
  towers in ``--towers`` and precision in ``--precisions`` ("fp32";
  "bf16": Keras' ``mixed_bfloat16`` policy, LRN still computed in float32
  inside; "fp16": ``mixed_float16``, with the loss scaling Keras' compile
  adds for it; the default "auto" is fp32 and bf16, plus fp16 when a GPU is
  visible, since CPUs rarely compute float16 fast). With ``--xla``, the
  fp32 one-tower nets again with ``jit_compile=True``.
- **Input pipeline** alone: `alexnet_tf.input_pipeline.train_dataset` on
  real data (full augmentation), iterated without a model.
- **End-to-end**: ``model.fit`` of the fp32 one-tower LRN net on that
  pipeline; timed from the end of its first step to the end of its last.
- **Matmul peak**: a square ``tf.matmul`` of side ``--matmul_size`` in
  fp32 and each timed precision, the machine's practical peak.

With ``--imagenet_dir``, only ImageNet's preprocessing instead, on the real
JPEGs of that image-folder tree (read and checked once, then cycled from
memory), each stage on one tf.data thread, in images per CPU-second:
decoding alone (the fused decode-and-crop of the whole central square, the
exact route's decoding), decoding and the rescale to 256, and the whole training
pipeline (`input_pipeline.train_dataset`: crop, flip, PCA lighting, mean);
then the cores one accelerator needs at `ACCELERATOR_IMAGES_PER_S`.

Every round times every configuration once, in an order that reverses from
one round to the next (A B C, C B A, ...), so a drift in the machine's
speed touches all alike; the no-norm net is timed between the LRN and
BatchNorm nets, so each ratio's two steps run back to back. Each figure is
the median over rounds, with the spread (min-max). Ratios (LRN/none,
bf16/fp32, ...) are the median of the per-round ratios, which cancels drift
better than a ratio of medians. On a shared machine a neighbour's burst can
slow one step by a third for a few seconds; five rounds keep one or two such
rounds from moving a median (three did not: on this project's machine, a
3-round run with a slowed step in two of its rounds gave LRN/none 0.89,
where 12 rounds of just those two nets gave 0.97).

Achieved GFLOP/s counts 2 FLOPs per multiply-accumulate of the conv and
dense layers and 3x the forward for a training step (see
`alexnet_tf.flops`: 6.81 GFLOP per image for one tower at 224x224, 4.35
for two); fraction of peak divides it by the matmul peak of the same
precision.
"""

import contextlib
import gc
import json
import logging
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

from alexnet_tf import cli  # noqa: E402
from alexnet_tf.choices import (  # noqa: E402
    ALEXNET_MIN_IMAGE_SIZE,
    DATASETS,
    LRN_IMPLEMENTATIONS,
    NORMS,
    PRECISION_SHORT_NAMES,
    TOWERS,
    check_choice,
)

MATMUL_DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
NUM_CLASSES = 1000  # the paper's head, whatever data set feeds the end-to-end run

FLAGS = flags.FLAGS
flags.DEFINE_string("dataset", "cifar10_sample", "Dataset the pipeline reads (see alexnet_tf.choices.DATASETS).")
flags.DEFINE_string("data_dir", None, "Folder of the dataset's files (default: $ALEXNET_TF_DATA_DIR).")
flags.DEFINE_integer("batch_size", 64, "Images per batch, for every model and the pipeline.")
flags.DEFINE_integer("image_size", 224, f"Crop size (at least {ALEXNET_MIN_IMAGE_SIZE}).")
flags.DEFINE_list("norms", list(NORMS), "Normalisations to time.")
flags.DEFINE_list("towers", [str(t) for t in TOWERS], "Tower counts to time.")
flags.DEFINE_list(
    "precisions",
    ["auto"],
    f"Precisions to time: {', '.join(PRECISION_SHORT_NAMES)}; auto: fp32,bf16, and fp16 too when a GPU is visible.",
)
flags.DEFINE_enum(
    "lrn_implementation",
    "auto",
    list(LRN_IMPLEMENTATIONS),
    "LocalResponseNormalization implementation of the LRN nets (tf_op: the TensorFlow op, the 'before').",
)
flags.DEFINE_boolean(
    "xla",
    False,
    "Also time the fp32 one-tower nets compiled with XLA (jit_compile=True). Off by default: it was slower "
    "for every norm on CPU (see README, Performance), and compiling it costs a minute.",
)
flags.DEFINE_integer("rounds", 5, "Rounds; each times every configuration once.")
flags.DEFINE_boolean(
    "lrn_layer",
    False,
    "Time only the LRN layers alone instead (forward + input gradient, at the input shapes AlexNet gives "
    "them for --image_size, --batch_size and --towers, in each of --precisions), for every implementation, "
    "alternating over --rounds.",
)
flags.DEFINE_list(
    "service_workers",
    [],
    "Time only the training input pipeline instead: in this process, and through a tf.data service on "
    "127.0.0.1 with each of these worker counts (e.g. 1,2; its dispatcher and workers are launched as "
    "processes with python -m alexnet_tf.data_service), alternating over --rounds of --pipeline_seconds.",
)
flags.DEFINE_string(
    "imagenet_dir",
    None,
    "Time only the ImageNet preprocessing instead, per CPU core, on the JPEGs of this image-folder tree "
    "(train/<wnid>/*.JPEG, cycled): decoding alone, decoding and the rescale to 256, and the full training "
    "pipeline, alternating over --rounds of --pipeline_seconds; and the cores an accelerator needs.",
)
flags.DEFINE_integer("steps", 1, "Training steps timed per configuration per round.")
flags.DEFINE_integer("warmup_steps", 1, "Untimed training steps per model before the first round (the first traces it).")
flags.DEFINE_integer("fit_steps", 3, "Steps of each end-to-end fit (the first is not timed; 0 skips it).")
flags.DEFINE_float("pipeline_seconds", 2.0, "Seconds of pipeline iteration per round.")
flags.DEFINE_integer("matmul_size", 4096, "Side of the square matmuls that measure the peak.")
flags.DEFINE_string("json", None, "Also write the figures as JSON to this path.")
flags.DEFINE_boolean("verbose", False, "Show Python tracebacks on errors.")
flags.DEFINE_boolean(
    "quick",
    False,
    "Smoke run (well under a minute): batch 4, 96x96, 2 rounds of 1 step, lrn and none, no XLA, "
    "512 matmuls. Overrides those flags.",
)

QUICK_SETTINGS = dict(
    batch_size=4,
    image_size=96,
    norms=["lrn", "none"],
    rounds=2,
    steps=1,
    warmup_steps=1,
    fit_steps=3,
    pipeline_seconds=0.5,
    matmul_size=512,
    xla=False,
)


# ---------------------------------------------------------------- statistics


def median_and_spread(values):
    """{"median", "min", "max", "rounds"} of a list of per-round figures."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "rounds": list(values)}


def paired_ratio(numerators, denominators):
    """Median and spread of the per-round ratios numerator[i] / denominator[i].

    Both lists come from the same rounds, so each ratio compares figures
    taken moments apart; the median of those is robust to a drift or a
    disturbed round that a ratio of medians would absorb.
    """
    if len(numerators) != len(denominators) or not numerators:
        raise ValueError("paired_ratio needs two equally long, non-empty lists of per-round figures.")
    return median_and_spread([n / d for n, d in zip(numerators, denominators)])


def round_order(items, round_index):
    """Items in order on even rounds, reversed on odd ones (A B C, C B A, ...)."""
    return list(items) if round_index % 2 == 0 else list(reversed(items))


# ---------------------------------------------------------------- what is timed


def config_name(norm, towers, precision, xla):
    return f"{norm}/t{towers}/{precision}" + ("/xla" if xla else "")


def build_model(norm, towers, precision, xla, image_size, lrn_implementation="auto"):
    """AlexNet compiled for training, built under its precision's Keras policy.

    The global policy is restored afterwards, so the next model (and the
    caller) see the one they expect.
    """
    import keras

    from alexnet_tf.layers import LocalResponseNormalization
    from alexnet_tf.model import build_alexnet

    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(PRECISION_SHORT_NAMES[precision])
    try:
        model = build_alexnet(
            num_classes=NUM_CLASSES, norm=norm, towers=towers, input_shape=(image_size, image_size, 3), seed=0
        )
        for layer in model.layers:
            if isinstance(layer, LocalResponseNormalization):
                layer.implementation = lrn_implementation  # read when the train step is traced
        model.compile(
            optimizer=keras.optimizers.SGD(learning_rate=0.01, momentum=0.9),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            jit_compile=xla,
        )
    finally:
        keras.mixed_precision.set_global_policy(previous)
    return model


def time_calls(fn, count):
    """Seconds per call of fn(), over `count` calls."""
    start = time.perf_counter()
    for _ in range(count):
        fn()
    return (time.perf_counter() - start) / count


def pipeline_images_per_second(dataset, batch_size, seconds):
    """Images/s of iterating `dataset` alone, after its first batch.

    The iterator lives only inside this call: a live one keeps refilling its
    prefetch buffers in the background, which would slow whatever is timed next.
    """
    iterator = iter(dataset)
    next(iterator)  # start-up: threads, buffers, the first batch
    count, start = 0, time.perf_counter()
    while count < 2 or time.perf_counter() - start < seconds:
        next(iterator)
        count += 1
    rate = count * batch_size / (time.perf_counter() - start)
    del iterator
    return rate


def fit_images_per_second(model, dataset, steps, batch_size):
    """Steady-state images/s of model.fit: from the end of its first step to the end of its last."""
    import keras

    ends = []

    class StepEnds(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            ends.append(time.perf_counter())

    model.fit(dataset, epochs=1, steps_per_epoch=steps, verbose=0, shuffle=False, callbacks=[StepEnds()])
    gc.collect()  # fit's iterator may sit in a reference cycle, prefetching in the background until collected
    return (len(ends) - 1) * batch_size / (ends[-1] - ends[0])


def matmul_gflops(size, dtype, seconds=0.5):
    import tensorflow as tf

    a = tf.random.stateless_normal((size, size), seed=[0, 1], dtype=tf.float32)
    a = tf.cast(a, dtype)
    matmul = tf.function(lambda x: tf.matmul(x, x))
    matmul(a).numpy()  # warm-up
    count, start = 0, time.perf_counter()
    while count < 2 or time.perf_counter() - start < seconds:
        matmul(a).numpy()
        count += 1
    return 2 * size**3 * count / (time.perf_counter() - start) / 1e9


# ---------------------------------------------------------------- the run


def resolve_precisions(precisions):
    """The precisions to time: `precisions` as given, or for ["auto"] fp32 and bf16, plus fp16 with a GPU."""
    if precisions != ["auto"]:
        return list(precisions)
    import tensorflow as tf

    return ["fp32", "bf16"] + (["fp16"] if tf.config.list_logical_devices("GPU") else [])


class _SkipRetracingWarning(logging.Filter):
    """Drops TensorFlow's "triggered tf.function retracing" warning: each model here has its own
    train function, traced once, which that warning miscounts as retracing."""

    def filter(self, record):
        return "triggered tf.function retracing" not in record.getMessage()


def training_source(settings):
    """(info, training split, statistics) of the benchmark's dataset, for its input pipelines."""
    from alexnet_tf import data, preprocessing

    info = data.dataset_info(settings["dataset"], settings["data_dir"])
    source = data.load_split(settings["dataset"], "train", settings["data_dir"], decode=not info.encoded)
    if info.encoded:
        return info, source, preprocessing.IMAGENET_STATS
    images_only = source.map(lambda image, label: image)
    resize_size = preprocessing.resize_size_for(settings["image_size"])
    return info, source, preprocessing.compute_stats(images_only, resize_size, max_images=500)


def run(settings, log=print):
    """Times everything `settings` (a dict of this module's flag values) asks for; returns the figures."""
    import tensorflow as tf

    tf.get_logger().addFilter(_SkipRetracingWarning())

    from alexnet_tf import flops, input_pipeline, machine

    start = time.perf_counter()
    load_before = os.getloadavg()[0]
    settings = dict(settings, precisions=resolve_precisions(settings["precisions"]))
    batch_size, image_size = settings["batch_size"], settings["image_size"]

    def progress(message):
        log(f"[{time.perf_counter() - start:5.0f} s] {message}", flush=True)

    progress(f"input pipeline on {settings['dataset']}, {image_size}x{image_size}, batch {batch_size}")
    info, source, stats = training_source(settings)
    pipeline = input_pipeline.train_dataset(
        source, batch_size=batch_size, stats=stats, image_size=image_size, encoded=info.encoded
    ).repeat()
    images, labels = next(iter(pipeline))  # the fixed batch of the synthetic-step timings
    images, labels = tf.constant(images), tf.constant(labels)
    gc.collect()

    norms = [norm for norm in ("lrn", "none", "batchnorm") if norm in settings["norms"]]  # none beside each
    configs = [
        (norm, towers, precision, False)
        for precision in settings["precisions"]
        for towers in settings["towers"]
        for norm in norms
    ]
    if settings["xla"]:
        configs += [(norm, 1, "fp32", True) for norm in norms]
    models, flops_per_image = {}, {}
    for config in configs:
        name = config_name(*config)
        progress(f"building and warming up {name}")
        model = build_model(*config, image_size=image_size, lrn_implementation=settings["lrn_implementation"])
        for _ in range(settings["warmup_steps"]):
            model.train_on_batch(images, labels)
        models[name] = model
        flops_per_image[name] = flops.training_flops_per_example(model)

    end_to_end_name = config_name("lrn", 1, "fp32", False) if settings["fit_steps"] > 1 else None
    if end_to_end_name not in models:
        end_to_end_name = None

    step_rates = {name: [] for name in models}
    pipeline_rates, fit_rates = [], []
    peak_precisions = ["fp32"] + [p for p in settings["precisions"] if p != "fp32"]
    peak_rates = {precision: [] for precision in peak_precisions}
    tasks = [(name, "step") for name in models] + [(None, "pipeline")]
    if end_to_end_name:
        tasks.append((end_to_end_name, "fit"))
    tasks += [(precision, "matmul") for precision in peak_precisions]
    for round_index in range(settings["rounds"]):
        for name, kind in round_order(tasks, round_index):
            if kind == "step":
                seconds = time_calls(lambda: models[name].train_on_batch(images, labels), settings["steps"])
                step_rates[name].append(batch_size / seconds)
            elif kind == "pipeline":
                pipeline_rates.append(pipeline_images_per_second(pipeline, batch_size, settings["pipeline_seconds"]))
            elif kind == "fit":
                fit_rates.append(fit_images_per_second(models[name], pipeline, settings["fit_steps"], batch_size))
            else:
                peak_rates[name].append(matmul_gflops(settings["matmul_size"], MATMUL_DTYPES[name]))
        summary = ", ".join(f"{name} {rates[-1]:.1f}" for name, rates in step_rates.items())
        progress(
            f"round {round_index + 1}/{settings['rounds']} images/s: {summary} "
            f"(load average {os.getloadavg()[0]:.1f})"
        )

    peaks = {precision: median_and_spread(rates) for precision, rates in peak_rates.items()}
    steps = {}
    for name, rates in step_rates.items():
        norm, towers, precision, xla = next(c for c in configs if config_name(*c) == name)
        gflops = [rate * flops_per_image[name] / 1e9 for rate in rates]
        steps[name] = {
            "norm": norm,
            "towers": towers,
            "precision": precision,
            "xla": xla,
            "images_per_s": median_and_spread(rates),
            "training_gflop_per_image": flops_per_image[name] / 1e9,
            "gflops": median_and_spread(gflops),
            "fraction_of_peak": paired_ratio(gflops, peak_rates[precision]),
        }

    ratios = {}

    def add_ratio(label, numerator, denominator, per_flop=False):
        if numerator in steps and denominator in steps:
            key = "gflops" if per_flop else "images_per_s"
            ratios[label] = paired_ratio(steps[numerator][key]["rounds"], steps[denominator][key]["rounds"])

    for precision in settings["precisions"]:
        for towers in settings["towers"]:
            none = config_name("none", towers, precision, False)
            add_ratio(f"lrn/none t{towers} {precision}", config_name("lrn", towers, precision, False), none)
            add_ratio(f"batchnorm/none t{towers} {precision}", config_name("batchnorm", towers, precision, False), none)
    for norm in settings["norms"]:
        for towers in settings["towers"]:
            for precision in peak_precisions[1:]:
                fp32, low = (config_name(norm, towers, p, False) for p in ("fp32", precision))
                add_ratio(f"{precision}/fp32 {norm} t{towers}", low, fp32)
        for precision in settings["precisions"]:
            one, two = (config_name(norm, t, precision, False) for t in (1, 2))
            add_ratio(f"towers2/towers1 per FLOP {norm} {precision}", two, one, per_flop=True)
        add_ratio(f"xla/no-xla {norm} fp32", config_name(norm, 1, "fp32", True), config_name(norm, 1, "fp32", False))
    if settings["xla"]:
        add_ratio("lrn/none t1 fp32 xla", config_name("lrn", 1, "fp32", True), config_name("none", 1, "fp32", True))
    for precision in peak_precisions[1:]:
        ratios[f"{precision}/fp32 matmul peak"] = paired_ratio(peak_rates[precision], peak_rates["fp32"])
    end_to_end = None
    if end_to_end_name:
        end_to_end = {
            "config": end_to_end_name,
            "images_per_s": median_and_spread(fit_rates),
            "steps_per_fit": settings["fit_steps"],
        }
        ratios["end-to-end/synthetic"] = paired_ratio(fit_rates, step_rates[end_to_end_name])
    pipeline_figures = median_and_spread(pipeline_rates)
    if end_to_end_name:
        ratios["pipeline/step"] = paired_ratio(pipeline_rates, step_rates[end_to_end_name])

    progress("done")
    return {
        "settings": settings,
        "flop_counting": (
            "2 FLOPs per multiply-accumulate of conv and dense layers; a training step is 3x the forward"
        ),
        "matmul_peak_gflops": peaks,
        "training_step": steps,
        "input_pipeline_images_per_s": pipeline_figures,
        "end_to_end": end_to_end,
        "ratios": ratios,
        "machine": machine.describe(),
        # Other processes' load skews absolute figures far more than ratios: a load average
        # well above 0 at the start means the machine was not idle.
        "load_average_1min": {"start": load_before, "end": os.getloadavg()[0]},
        "seconds": time.perf_counter() - start,
    }


def lrn_layer_timings(settings, log=print):
    """Milliseconds per forward + input gradient of each of AlexNet's LRN layers alone, per implementation
    and precision (inputs and gradients in that precision's compute dtype, as in the training step)."""
    import tensorflow as tf

    from alexnet_tf import machine
    from alexnet_tf.layers import LocalResponseNormalization
    from alexnet_tf.model import build_alexnet

    tf.get_logger().addFilter(_SkipRetracingWarning())
    start = time.perf_counter()
    batch_size, image_size = settings["batch_size"], settings["image_size"]
    from alexnet_tf import native_lrn

    implementations = [n for n in LRN_IMPLEMENTATIONS if n != "auto" and (n != "native" or native_lrn.ops())]
    if "native" not in implementations:
        log(f"LRN kernel unavailable, left out: {native_lrn.unavailable_reason()}", flush=True)
    precisions = resolve_precisions(settings["precisions"])
    calls = {}  # (layer description, implementation) -> a function timing one call
    for towers, precision in ((t, p) for t in settings["towers"] for p in precisions):
        model = build_alexnet(num_classes=NUM_CLASSES, norm="lrn", towers=towers, input_shape=(image_size, image_size, 3))
        for layer in model.layers:
            if not isinstance(layer, LocalResponseNormalization):
                continue
            shape = (batch_size, *layer.input.shape[1:])
            case = f"{layer.name} {'x'.join(map(str, shape[1:]))} groups={layer.groups} {precision}"
            # The layer's input: conv pre-activations when the layer applies the ReLU (relu_first), as in the net.
            dtype = MATMUL_DTYPES[precision]
            x = tf.cast(tf.random.stateless_normal(shape, seed=[0, 1], stddev=5.0), dtype)
            if not layer.relu_first:
                x = tf.abs(x)
            upstream = tf.cast(tf.random.stateless_normal(shape, seed=[0, 2]), dtype)
            for implementation in implementations:
                lrn = LocalResponseNormalization.from_config({**layer.get_config(), "implementation": implementation})

                @tf.function
                def forward_and_gradient(x, upstream, lrn=lrn):
                    with tf.GradientTape() as tape:
                        tape.watch(x)
                        y = lrn(x)
                    return y, tape.gradient(y, x, upstream)

                def one_call(fn=forward_and_gradient, x=x, upstream=upstream):
                    y, dx = fn(x, upstream)
                    dx[0, 0, 0, 0].numpy()  # waits for the device

                one_call()  # traces (and compiles)
                calls[(case, implementation)] = one_call
    log(f"[{time.perf_counter() - start:5.0f} s] timing {len(calls)} LRN layer calls x {settings['rounds']} rounds", flush=True)
    milliseconds = {key: [] for key in calls}
    for round_index in range(settings["rounds"]):
        for key in round_order(list(calls), round_index):
            milliseconds[key].append(1000 * time_calls(calls[key], settings["steps"]))
    layers = {}
    for (case, implementation), values in milliseconds.items():
        layers.setdefault(case, {})[implementation] = {"ms": median_and_spread(values)}
    for case, figures in layers.items():
        for implementation, figure in figures.items():
            figure["ratio_to_tf_op"] = paired_ratio(figure["ms"]["rounds"], figures["tf_op"]["ms"]["rounds"])
    return {
        "settings": dict(settings, precisions=precisions),
        "lrn_layer_ms": layers,
        "machine": machine.describe(),
        "load_average_1min": os.getloadavg()[0],
        "seconds": time.perf_counter() - start,
    }


def format_lrn_layer_table(results):
    lines = [f"{'LRN layer: forward + input gradient':44s} {'impl':>7s} {'ms':>8s} {'spread':>13s} {'/ tf_op':>8s}"]
    for case, figures in results["lrn_layer_ms"].items():
        for implementation, figure in figures.items():
            lines.append(
                f"{case:44s} {implementation:>7s} {figure['ms']['median']:8.1f} {_spread(figure['ms'], 1):>13s} "
                f"{figure['ratio_to_tf_op']['median']:8.2f}"
            )
    settings = results["settings"]
    lines.append("")
    lines.append(
        f"batch {settings['batch_size']}, AlexNet at {settings['image_size']}x{settings['image_size']}, "
        f"{settings['rounds']} rounds x {settings['steps']} calls; '/ tf_op' is the median of per-round ratios; "
        f"{results['machine']['cpu_count']} cores, TensorFlow {results['machine']['tensorflow']}; {results['seconds']:.0f} s"
    )
    return lines


@contextlib.contextmanager
def local_data_service(workers, log_dir, timeout_s=120.0):
    """A tf.data service on 127.0.0.1: a dispatcher and `workers` workers, each a process of
    `python -m alexnet_tf.data_service` logging to `log_dir`; yields the dispatcher's address
    once all serve, and stops them (SIGTERM, then SIGKILL after 10 s) on the way out."""
    ports = []
    for _ in range(workers + 1):
        with socket.socket() as probe:  # a free port, released for the server to bind
            probe.bind(("127.0.0.1", 0))
            ports.append(probe.getsockname()[1])
    dispatcher = f"127.0.0.1:{ports[0]}"
    roles = [["--role=dispatcher"]] + [
        ["--role=worker", f"--dispatcher={dispatcher}", f"--worker_address=127.0.0.1:{port}"] for port in ports[1:]
    ]
    processes = []
    try:
        for index, (role, port) in enumerate(zip(roles, ports)):
            log = open(os.path.join(log_dir, f"server{index}.log"), "w+")
            process = subprocess.Popen(
                [sys.executable, "-m", "alexnet_tf.data_service", *role, f"--port={port}"],
                stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )  # fmt: skip
            processes.append((process, log))
        deadline = time.monotonic() + timeout_s
        for process, log in processes:
            while "serving on port" not in open(log.name).read():
                if process.poll() is not None or time.monotonic() > deadline:
                    raise OSError(f"a local tf.data service server did not start; its output: {log.name}")
                time.sleep(0.2)
        yield f"grpc://{dispatcher}"
    finally:
        for process, _ in processes:
            process.send_signal(signal.SIGTERM)
        for process, log in processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            log.close()


def service_pipeline_timings(settings, log=print):
    """Images/s of the training input pipeline in this process and through local tf.data services
    with each of `settings["service_workers"]` workers, in alternating rounds."""
    import tensorflow as tf

    tf.get_logger().addFilter(_SkipRetracingWarning())

    from alexnet_tf import data_service, input_pipeline, machine

    start = time.perf_counter()
    load_before = os.getloadavg()[0]
    batch_size, image_size = settings["batch_size"], settings["image_size"]
    info, source, stats = training_source(settings)

    def pipeline(examples, **options):
        return input_pipeline.train_dataset(
            examples, batch_size=batch_size, stats=stats, image_size=image_size, encoded=info.encoded, **options
        )

    local = pipeline(source.repeat())
    names = ["local"] + [f"service, {n} worker{'s' if n > 1 else ''}" for n in settings["service_workers"]]
    rates = {name: [] for name in names}
    with tempfile.TemporaryDirectory(prefix="alexnet_tf_bench_service_") as logs, contextlib.ExitStack() as stack:
        addresses = {}
        for name, workers in zip(names[1:], settings["service_workers"]):
            log(f"[{time.perf_counter() - start:5.0f} s] starting a tf.data service with {workers} worker(s)", flush=True)
            addresses[name] = stack.enter_context(local_data_service(workers, logs))
        num_examples = info.split_sizes["train"]
        for round_index in range(settings["rounds"]):
            for name in round_order(names, round_index):
                if name == "local":
                    dataset = local
                else:  # one job per service for all rounds: later rounds find its workers warm, as a run does
                    served = pipeline(data_service.passes(source, num_examples, seed=0), element_seeds=True)
                    dataset = data_service.distribute(served, addresses[name], f"alexnet_tf.bench.{os.getpid()}")
                rates[name].append(pipeline_images_per_second(dataset, batch_size, settings["pipeline_seconds"]))
            summary = ", ".join(f"{name} {values[-1]:.0f}" for name, values in rates.items())
            log(f"[{time.perf_counter() - start:5.0f} s] round {round_index + 1}/{settings['rounds']} images/s: {summary}", flush=True)
    return {
        "settings": settings,
        "pipeline_images_per_s": {name: median_and_spread(values) for name, values in rates.items()},
        "ratios": {f"{name} / local": paired_ratio(rates[name], rates["local"]) for name in names[1:]},
        "machine": machine.describe(),
        "load_average_1min": {"start": load_before, "end": os.getloadavg()[0]},
        "seconds": time.perf_counter() - start,
    }


def format_service_pipeline_table(results):
    lines = [f"{'training input pipeline':28s} {'images/s':>9s} {'spread':>13s} {'/ local':>8s}"]
    for name, figure in results["pipeline_images_per_s"].items():
        ratio = results["ratios"].get(f"{name} / local")
        lines.append(
            f"{name:28s} {figure['median']:9.0f} {_spread(figure, 0):>13s} {ratio['median'] if ratio else 1.0:8.2f}"
        )
    settings = results["settings"]
    lines.append("")
    lines.append(
        f"{settings['dataset']}, batch {settings['batch_size']}, {settings['image_size']}x{settings['image_size']}, "
        f"full augmentation; {settings['rounds']} rounds x {settings['pipeline_seconds']:g} s; '/ local' is the median "
        f"of per-round ratios; {results['machine']['cpu_count']} cores, TensorFlow {results['machine']['tensorflow']}; "
        f"{results['seconds']:.0f} s; 1-min load average {results['load_average_1min']['start']:.1f} at the start"
    )
    return lines


# Published AlexNet training throughput of one accelerator (images/s), as the project's issue 15
# gives them: what the preprocessing has to keep up with. Not measured here.
ACCELERATOR_IMAGES_PER_S = {"P100": 3000, "A100 (fp16)": 11800}


def per_core_images_per_second(dataset, seconds):
    """Images per CPU-second of iterating `dataset` (its tf.data work kept on one thread), after its
    first element; `dataset` yields (images or per-image figures, labels) batches.

    CPU time rather than wall time, so that other processes on a shared machine slow the figure
    less; Python's garbage collector is paused, since the loop here is not the pipeline's cost.
    """
    import tensorflow as tf

    options = tf.data.Options()
    options.threading.private_threadpool_size = 1
    options.threading.max_intra_op_parallelism = 1
    iterator = iter(dataset.with_options(options))
    next(iterator)
    gc.disable()
    try:
        count, cpu_start, wall_start = 0, time.process_time(), time.perf_counter()
        while count < 2 * 64 or time.perf_counter() - wall_start < seconds:
            count += int(next(iterator)[1].shape[0])
        rate = count / (time.process_time() - cpu_start)
    finally:
        gc.enable()
    del iterator
    return rate


def imagenet_preprocessing_timings(settings, log=print):
    """Images/s per CPU core of ImageNet's preprocessing on the JPEGs of `settings["imagenet_dir"]`:
    decoding the central square alone (the exact route's decoding), decoding and rescaling, and
    the full training pipeline;
    and how many cores one accelerator needs at `ACCELERATOR_IMAGES_PER_S`."""
    import math

    import tensorflow as tf

    from alexnet_tf import data, input_pipeline, machine, preprocessing

    tf.get_logger().addFilter(_SkipRetracingWarning())
    start = time.perf_counter()
    load_before = os.getloadavg()[0]
    batch_size, image_size = settings["batch_size"], settings["image_size"]
    resize_size = preprocessing.resize_size_for(image_size)
    if not os.path.isdir(settings["imagenet_dir"]):
        raise data.DataError(
            f"--imagenet_dir={settings['imagenet_dir']} is not a folder; point it at an ImageNet tree "
            f"holding train/<wnid>/*.JPEG."
        )
    source = data.source("imagenet2012", settings["imagenet_dir"])
    num_files = source.info().split_sizes.get("train", 0)
    if not num_files:
        raise data.DataError(f"--imagenet_dir={settings['imagenet_dir']} has no train/<wnid>/ images to time.")
    files = source.load("train", decode=False)
    # The files' bytes in memory, read (and checked) once: what is timed is the preprocessing, not the disk.
    encoded = files.cache()
    read_start = time.process_time()
    sizes = [len(contents) for contents, _ in encoded.as_numpy_iterator()]
    read_rate = num_files / (time.process_time() - read_start)
    mean_kb = sum(sizes) / num_files / 1e3
    log(f"[{time.perf_counter() - start:5.0f} s] {num_files} JPEGs read and checked (mean {mean_kb:.0f} kB)", flush=True)

    def decode_only():
        # The central square's fused decode-and-crop, as the pipeline decodes; its shape, so that nothing is copied.
        decoded = encoded.repeat().map(
            lambda contents, label: (tf.shape(input_pipeline.decode_center_square(contents)), label),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
        return decoded.batch(batch_size)

    def decode_and_rescale():
        def rescaled(contents, label):
            image = preprocessing.resize_and_center_crop(input_pipeline.decode_center_square(contents), resize_size)
            return image, label

        return encoded.repeat().map(rescaled, num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size)

    def training():
        return input_pipeline.train_dataset(
            encoded.repeat(), batch_size=batch_size, stats=preprocessing.IMAGENET_STATS, image_size=image_size,
            shuffle_buffer=num_files, encoded=True,
        )  # fmt: skip

    stages = {"decode": decode_only, f"decode + rescale to {resize_size}": decode_and_rescale, "training": training}
    rates = {name: [] for name in stages}
    for round_index in range(settings["rounds"]):
        for name in round_order(list(stages), round_index):
            rates[name].append(per_core_images_per_second(stages[name](), settings["pipeline_seconds"]))
        summary = ", ".join(f"{name} {values[-1]:.0f}" for name, values in rates.items())
        done = f"round {round_index + 1}/{settings['rounds']}"
        log(f"[{time.perf_counter() - start:5.0f} s] {done} images/s per core: {summary}", flush=True)
    # The same training pipeline with tf.data's own parallelism, all cores: how the per-core figure scales.
    all_cores = pipeline_images_per_second(training(), batch_size, settings["pipeline_seconds"])
    per_core = median_and_spread(rates["training"])["median"]
    return {
        "settings": settings,
        "files": {"count": num_files, "mean_bytes": sum(sizes) / num_files, "read_and_checked_per_cpu_s": read_rate},
        "images_per_s_per_core": {name: median_and_spread(values) for name, values in rates.items()},
        "ratios": {
            f"{name} / decode": paired_ratio(values, rates["decode"]) for name, values in rates.items() if name != "decode"
        },
        "all_cores_images_per_s": all_cores,
        "cores_per_accelerator": {
            name: {"images_per_s": rate, "cores": math.ceil(rate / per_core)}
            for name, rate in ACCELERATOR_IMAGES_PER_S.items()
        },
        "machine": machine.describe(),
        "load_average_1min": {"start": load_before, "end": os.getloadavg()[0]},
        "seconds": time.perf_counter() - start,
    }


def format_imagenet_table(results):
    settings, files = results["settings"], results["files"]
    lines = [f"{'ImageNet preprocessing, one core':36s} {'images/s':>9s} {'spread':>13s} {'/ decode':>9s}"]
    for name, figure in results["images_per_s_per_core"].items():
        ratio = results["ratios"].get(f"{name} / decode")
        lines.append(
            f"{name:36s} {figure['median']:9.0f} {_spread(figure, 0):>13s} {ratio['median'] if ratio else 1.0:9.2f}"
        )
    lines.append("")
    cores = results["machine"]["cpu_count"]
    lines.append(f"training pipeline on all {cores} cores: {results['all_cores_images_per_s']:.0f} images/s")
    lines.append(f"reading and checking the files (once): {files['read_and_checked_per_cpu_s']:.0f} images per CPU-second")
    for name, need in results["cores_per_accelerator"].items():
        lines.append(f"cores one {name} needs at {need['images_per_s']:,} images/s: {need['cores']}")
    lines.append("")
    lines.append(
        f"{files['count']} JPEGs from {settings['imagenet_dir']} (mean {files['mean_bytes'] / 1e3:.0f} kB), cycled; "
        f"{settings['image_size']}x{settings['image_size']} crops, batch {settings['batch_size']}; images per CPU-second "
        f"of one tf.data thread, median of {settings['rounds']} rounds of {settings['pipeline_seconds']:g} s; "
        f"'/ decode' is the median of per-round ratios; TensorFlow {results['machine']['tensorflow']}; "
        f"{results['seconds']:.0f} s; 1-min load average {results['load_average_1min']['start']:.1f} at the start"
    )
    return lines


# ---------------------------------------------------------------- output


def _spread(figure, digits):
    return f"{figure['min']:.{digits}f}-{figure['max']:.{digits}f}"


def format_table(results):
    """The figures as aligned text lines."""
    lines = []
    peaks = results["matmul_peak_gflops"]
    lines.append(f"{'training step':28s} {'images/s':>9s} {'spread':>13s} {'GFLOP/s':>8s} {'of peak':>8s}")
    for name, step in results["training_step"].items():
        lines.append(
            f"{name:28s} {step['images_per_s']['median']:9.1f} {_spread(step['images_per_s'], 1):>13s} "
            f"{step['gflops']['median']:8.0f} {step['fraction_of_peak']['median']:8.2f}"
        )
    lines.append("")
    for precision, peak in peaks.items():
        size = results["settings"]["matmul_size"]
        lines.append(f"matmul peak {precision} ({size}^3): {peak['median']:.0f} GFLOP/s (spread {_spread(peak, 0)})")
    pipeline = results["input_pipeline_images_per_s"]
    lines.append(f"input pipeline alone: {pipeline['median']:.0f} images/s (spread {_spread(pipeline, 0)})")
    if results["end_to_end"]:
        e2e = results["end_to_end"]
        lines.append(
            f"end-to-end fit ({e2e['config']}, real data, full augmentation): "
            f"{e2e['images_per_s']['median']:.1f} images/s (spread {_spread(e2e['images_per_s'], 1)})"
        )
    lines.append("")
    lines.append(f"{'ratio (median of per-round ratios)':44s} {'median':>7s} {'spread':>12s}")
    for label, ratio in results["ratios"].items():
        lines.append(f"{label:44s} {ratio['median']:7.3f} {_spread(ratio, 3):>12s}")
    settings = results["settings"]
    lines.append("")
    lines.append(
        f"batch {settings['batch_size']}, {settings['image_size']}x{settings['image_size']}, "
        f"{settings['rounds']} rounds x {settings['steps']} steps, LRN implementation "
        f"{settings['lrn_implementation']}; GFLOP/s counts 2 FLOPs per MAC of "
        f"conv/dense layers, 3x forward per step; 'of peak' is against the same precision's matmul; "
        f"{results['machine']['cpu_count']} cores, TensorFlow {results['machine']['tensorflow']}; "
        f"{results['seconds']:.0f} s; 1-min load average {results['load_average_1min']['start']:.1f} at the start"
    )
    return lines


def _settings_from_flags():
    settings = {
        name: getattr(FLAGS, name)
        for name in (
            "dataset", "data_dir", "batch_size", "image_size", "norms", "rounds", "steps", "warmup_steps",
            "fit_steps", "pipeline_seconds", "matmul_size", "xla", "precisions", "lrn_implementation",
            "imagenet_dir",
        )
    }
    try:
        settings["towers"] = [int(t) for t in FLAGS.towers]
    except ValueError:
        allowed = " and/or ".join(map(str, TOWERS))
        raise app.UsageError(f"--towers must list {allowed}, got {','.join(FLAGS.towers)}") from None
    try:
        settings["service_workers"] = [int(n) for n in FLAGS.service_workers]
    except ValueError:
        raise app.UsageError(f"--service_workers must list worker counts, got {','.join(FLAGS.service_workers)}") from None
    if FLAGS.quick:
        settings.update(QUICK_SETTINGS)
    return settings


def validate(settings):
    """Raises app.UsageError (one line) for settings the benchmark cannot run."""
    check_choice("--dataset", settings["dataset"], DATASETS, error=app.UsageError)
    for name in ("batch_size", "rounds", "steps", "matmul_size"):
        if settings[name] < 1:
            raise app.UsageError(f"--{name} must be a positive integer, got {settings[name]}")
    for name in ("warmup_steps", "fit_steps"):
        if settings[name] < 0:
            raise app.UsageError(f"--{name} must be >= 0, got {settings[name]}")
    if settings["fit_steps"] == 1:
        raise app.UsageError("--fit_steps must be 0 (skip) or >= 2: the first step of a fit is not timed")
    if settings["image_size"] < ALEXNET_MIN_IMAGE_SIZE:
        raise app.UsageError(
            f"--image_size must be at least {ALEXNET_MIN_IMAGE_SIZE} (conv1's stride and three pools), "
            f"got {settings['image_size']}"
        )
    if settings["pipeline_seconds"] <= 0:
        raise app.UsageError(f"--pipeline_seconds must be > 0, got {settings['pipeline_seconds']}")
    workers = settings.get("service_workers", [])
    if any(n < 1 for n in workers) or len(set(workers)) != len(workers):
        raise app.UsageError(f"--service_workers must list distinct positive worker counts, got {','.join(map(str, workers))}")
    for name, allowed in (("norms", NORMS), ("precisions", tuple(PRECISION_SHORT_NAMES)), ("towers", TOWERS)):
        values = settings[name]
        if name == "precisions" and values == ["auto"]:
            continue
        if not values or any(v not in allowed for v in values) or len(set(values)) != len(values):
            raise app.UsageError(
                f"--{name} must list distinct values from {','.join(map(str, allowed))}, got {','.join(map(str, values))}"
            )


def main(argv):
    cli.refuse_extra_arguments(argv)
    try:
        settings = _settings_from_flags()
        validate(settings)
    except app.UsageError as error:
        # One line and exit status 2, like the other entry points (absl would print its whole usage).
        print(f"error: {error}", file=sys.stderr)
        sys.exit(cli.EXIT_USAGE)
    with cli.one_line_errors(FLAGS.verbose):
        if settings["imagenet_dir"]:
            results = imagenet_preprocessing_timings(settings)
        elif settings["service_workers"]:
            results = service_pipeline_timings(settings)
        else:
            results = lrn_layer_timings(settings) if FLAGS.lrn_layer else run(settings)
    print()
    if settings["imagenet_dir"]:
        print("\n".join(format_imagenet_table(results)))
    elif settings["service_workers"]:
        print("\n".join(format_service_pipeline_table(results)))
    else:
        print("\n".join(format_lrn_layer_table(results) if FLAGS.lrn_layer else format_table(results)))
    if FLAGS.json:
        with open(FLAGS.json, "w") as f:
            json.dump(results, f, indent=2)
            f.write("\n")
        print(f"figures written to {FLAGS.json}")


if __name__ == "__main__":
    app.run(main, flags_parser=cli.parse_flags)
