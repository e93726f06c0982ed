"""Throughput benchmark: the input pipeline alone against the training step.

    python -m alexnet_tf.bench                      # embedded CIFAR-10 sample, 224x224, batch 64
    python -m alexnet_tf.bench --data_dir=PATH      # a folder of CIFAR-10 binary batches
    make bench

Prints images/s for (1) the training input pipeline with full augmentation
(resize to 256, random 224 crop, flip, PCA lighting, mean subtraction),
iterated on its own, and (2) one training step of AlexNet (forward,
backward, SGD update) on a fixed batch, and their ratio: how many times
faster the pipeline produces images than the step consumes them. The
pipeline must stay well ahead, or training waits for data. Each figure is
the median over rounds that alternate the two, so a drift in the machine's
speed affects both alike.
"""

import json
import os
import platform
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("dataset", "cifar10_sample", "Dataset the pipeline reads (see alexnet_tf.data.DATASETS).")
flags.DEFINE_string("data_dir", None, "Folder of the dataset's files (default: $ALEXNET_TF_DATA_DIR).")
flags.DEFINE_integer("batch_size", 64, "Images per batch, for the pipeline and the step.")
flags.DEFINE_integer("image_size", 224, "Crop size.")
flags.DEFINE_enum("norm", "lrn", ["lrn", "batchnorm", "none"], "Normalisation of the timed model.")
flags.DEFINE_integer("rounds", 3, "Alternating rounds of pipeline and step timing.")
flags.DEFINE_float("seconds", 10.0, "Seconds of timing per measurement in each round.")
flags.DEFINE_string("json", None, "Also write the figures as JSON to this path.")


def time_iterations(step, seconds, min_iterations=2):
    """Calls step() repeatedly for about `seconds`; returns seconds per call."""
    count, start = 0, time.perf_counter()
    while count < min_iterations or time.perf_counter() - start < seconds:
        step()
        count += 1
    return (time.perf_counter() - start) / count


def pipeline_images_per_second(dataset, batch_size, seconds):
    iterator = iter(dataset.repeat())
    next(iterator)  # warm-up: builds the pipeline and fills the prefetch buffers
    return batch_size / time_iterations(lambda: next(iterator), seconds)


def train_step_images_per_second(model, images, labels, seconds):
    model.train_on_batch(images, labels)  # warm-up: traces and compiles the step
    return images.shape[0] / time_iterations(lambda: model.train_on_batch(images, labels), seconds)


def run(dataset, data_dir, batch_size, image_size, norm, rounds, seconds):
    import keras
    import numpy as np
    import tensorflow as tf

    from alexnet_tf import data, input_pipeline, preprocessing
    from alexnet_tf.model import build_alexnet

    info = data.dataset_info(dataset, data_dir)
    source = data.load_split(dataset, "train", data_dir, decode=not info.encoded)
    if info.encoded:
        stats = preprocessing.IMAGENET_STATS
    else:
        images_only = source.map(lambda image, label: image)
        stats = preprocessing.compute_stats(images_only, preprocessing.resize_size_for(image_size), max_images=500)
    pipeline = input_pipeline.train_dataset(
        source, batch_size=batch_size, stats=stats, image_size=image_size, encoded=info.encoded
    )

    model = build_alexnet(num_classes=info.num_classes, norm=norm, input_shape=(image_size, image_size, 3))
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=0.01, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    images, labels = next(iter(pipeline))
    images, labels = tf.constant(images), tf.constant(labels)

    pipeline_rates, step_rates = [], []
    for round_index in range(rounds):
        pipeline_rates.append(pipeline_images_per_second(pipeline, batch_size, seconds))
        step_rates.append(train_step_images_per_second(model, images, labels, seconds))
        print(
            f"round {round_index + 1}/{rounds}: pipeline {pipeline_rates[-1]:.0f} images/s, "
            f"training step {step_rates[-1]:.1f} images/s",
            flush=True,
        )
    pipeline_rate = statistics.median(pipeline_rates)
    step_rate = statistics.median(step_rates)
    return {
        "dataset": dataset,
        "batch_size": batch_size,
        "image_size": image_size,
        "norm": norm,
        "rounds": rounds,
        "pipeline_images_per_s": round(pipeline_rate, 1),
        "pipeline_images_per_s_rounds": [round(r, 1) for r in pipeline_rates],
        "train_step_images_per_s": round(step_rate, 2),
        "train_step_images_per_s_rounds": [round(r, 2) for r in step_rates],
        "pipeline_over_step": round(pipeline_rate / step_rate, 1),
        "machine": {
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "numpy": np.__version__,
        },
    }


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    for name in ("batch_size", "image_size", "rounds"):
        if getattr(FLAGS, name) < 1:
            raise app.UsageError(f"--{name} must be a positive integer, got {getattr(FLAGS, name)}")
    results = run(
        FLAGS.dataset, FLAGS.data_dir, FLAGS.batch_size, FLAGS.image_size, FLAGS.norm, FLAGS.rounds, FLAGS.seconds
    )
    print()
    print(f"{'what':34s} {'images/s':>10s}")
    print(f"{'input pipeline (full augmentation)':34s} {results['pipeline_images_per_s']:10.0f}")
    print(f"{'training step (' + results['norm'] + ', fp32)':34s} {results['train_step_images_per_s']:10.1f}")
    print(f"pipeline / step: {results['pipeline_over_step']}x  (medians of {results['rounds']} rounds)")
    if FLAGS.json:
        with open(FLAGS.json, "w") as f:
            json.dump(results, f, indent=2)
            f.write("\n")
    print(json.dumps(results), file=sys.stdout)


if __name__ == "__main__":
    app.run(main)
