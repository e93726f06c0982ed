"""Training with Keras `fit`: the paper's recipe, a run directory, TensorBoard, resumption.

`train(config)` is the whole job; `python -m alexnet_tf.train` is a thin
wrapper around it. The run directory layout and the resume rules are in
`alexnet_tf.runs`.
"""

import csv
import dataclasses
import math
import os
import pathlib
import platform
import shutil
import statistics
import sys
import tempfile
import time

import keras
import tensorflow as tf

from alexnet_tf import config as config_lib
from alexnet_tf import callbacks as callbacks_lib
from alexnet_tf import data, distribute, input_pipeline, preprocessing, runs
from alexnet_tf.model import build_alexnet, build_four_layer_net
from alexnet_tf.optim import SGDCoupledWeightDecay

MONITOR = "val_top1_error"
CURVE_KEYS = ("loss", "top1_error", "top5_error", "val_loss", "val_top1_error", "val_top5_error", "learning_rate")
# Model weights only, no optimizer state: the model is rebuilt from the run's flags.txt
# (build_model_for); the state needed to resume lives in checkpoints/resume/ while a run is unfinished.
BEST_WEIGHTS = "best.weights.h5"
LATEST_WEIGHTS = "latest.weights.h5"


@keras.saving.register_keras_serializable(package="alexnet_tf")
class TopKError(keras.metrics.SparseTopKCategoricalAccuracy):
    """Top-k error (1 - top-k accuracy): the figure the paper reports."""

    def result(self):
        return 1.0 - super().result()


def build_model_for(config, num_classes):
    """The net a `TrainConfig` describes (untrained): AlexNet, or Figure 1's four-layer net."""
    input_shape = (config.image_size, config.image_size, 3)
    if config.model == "four_layer":
        return build_four_layer_net(num_classes, config.activation, input_shape=input_shape, seed=config.seed)
    return build_alexnet(
        num_classes=num_classes,
        norm=config.norm,
        towers=config.towers,
        activation=config.activation,
        dropout=config.dropout,
        input_shape=input_shape,
        init=config.init,
        seed=config.seed,
    )


def compile_model(model, config):
    model.compile(
        optimizer=SGDCoupledWeightDecay(
            learning_rate=config.learning_rate, momentum=config.momentum, coupled_weight_decay=config.weight_decay
        ),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[TopKError(k=1, name="top1_error"), TopKError(k=5, name="top5_error")],
        jit_compile=config.jit_compile,
    )
    return model


def write_hparams(log_dir, config, run_name):
    from tensorboard.plugins.hparams import api as hparams_api

    with tf.summary.create_file_writer(str(log_dir)).as_default():
        hparams_api.hparams(config.hparams(), trial_id=run_name)


def read_history(run_dir):
    """Rows of history.csv as dicts of floats, one per epoch (a repeated epoch keeps its last row)."""
    path = pathlib.Path(run_dir) / "history.csv"
    if not path.is_file():
        return []
    by_epoch = {}
    with path.open() as f:
        for row in csv.DictReader(f):
            try:
                by_epoch[int(row["epoch"])] = {k: float(v) for k, v in row.items() if v not in ("", None)}
            except (KeyError, ValueError):
                continue
    return [by_epoch[e] for e in sorted(by_epoch)]


def eval_batch_size(num_examples, batch_size, replicas):
    """A batch size for evaluation under a strategy whose batches give every replica data.

    tf.distribute splits each batch of a file-backed dataset into per-replica
    chunks of size/replicas, so a short last batch can leave the last
    replicas an empty batch, on which TensorFlow 2.21's CPU convolution
    returns a wrong shape and the step fails. Returns the largest multiple
    of `replicas` <= batch_size whose last batch is empty or reaches every
    replica, or None when there is none (then drop the remainder).
    """
    if replicas == 1:
        return batch_size
    for size in range(batch_size - batch_size % replicas, replicas - 1, -replicas):
        remainder = num_examples % size
        if remainder == 0 or remainder > (replicas - 1) * (size // replicas):
            return size
    return None


def dataset_stats(config, train_part, stats_dir):
    """The run's training-set statistics: read back on resume, else computed and saved."""
    if (stats_dir / "stats.json").is_file():
        return preprocessing.DatasetStats.load(stats_dir)
    if config.dataset == "imagenet2012":
        return preprocessing.IMAGENET_STATS
    images = train_part.map(lambda image, label: image)
    resize_size = preprocessing.resize_size_for(config.image_size)
    print(f"Computing the training set's mean and PCA eigen-pairs on up to {config.stats_images} images...", flush=True)
    return preprocessing.compute_stats(images, resize_size, max_images=config.stats_images)


def machine_description():
    return {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "gpus": [d.name for d in tf.config.list_physical_devices("GPU")],
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
    }


def train(config, *, run=None, devices=None, verbose=None):
    """Trains AlexNet as `config` says; returns the results written to results.json
    (None on a multi-worker run's non-chief workers, which write no run files).

    `devices` (mirrored strategy only) pins the replicas, e.g. two logical CPUs in tests.
    """
    wall_start = time.time()
    if config.data_dir is None and os.environ.get(data.DATA_DIR_ENV) and config.dataset in ("cifar10", "imagenet2012"):
        # Record the folder the environment chose, so that the run's flags.txt reproduces it.
        config = dataclasses.replace(config, data_dir=os.environ[data.DATA_DIR_ENV])
    # First: splitting the CPU into replicas must precede any use of TensorFlow's devices.
    strategy = distribute.make_strategy(config.strategy, devices, config.cpu_replicas)
    info = data.dataset_info(config.dataset, config.data_dir, **_source_options(config))
    if "train" not in info.split_sizes:
        raise data.DataError(f"dataset {config.dataset!r} has no training split here.")
    num_examples = info.split_sizes["train"]
    num_validation = math.ceil(config.validation_fraction * num_examples)
    num_train = num_examples - num_validation

    replicas = strategy.num_replicas_in_sync
    if config.batch_size % replicas:
        raise ValueError(
            f"--batch_size={config.batch_size} does not divide by the {replicas} replicas; "
            f"use a multiple of {replicas}."
        )
    steps_per_epoch = num_train // config.batch_size
    if steps_per_epoch == 0:
        raise ValueError(
            f"--batch_size={config.batch_size} is larger than the {num_train} training examples; lower it."
        )
    if config.steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, config.steps_per_epoch)

    flagfile_text = config_lib.to_flagfile(config)
    experiment_dir = pathlib.Path(config.experiments_dir) / config.experiment
    run_dir, resumed = runs.resolve_run_dir(experiment_dir, flagfile_text, run)
    chief = distribute.is_chief()
    if chief:
        if not resumed:
            runs.claim_run_dir(run_dir, flagfile_text)
        files_dir = run_dir
        print(f"{'Resuming' if resumed else 'Starting'} run {run_dir}", flush=True)
    else:
        # Other workers write their checkpoints apart and drop them at the end; only
        # the chief's are kept (Keras's multi-worker pattern).
        files_dir = pathlib.Path(tempfile.mkdtemp(prefix="alexnet_tf_worker_"))
        print(f"Worker {distribute.worker_index()} of {distribute.num_workers()} training run {run_dir}", flush=True)

    keras.utils.set_random_seed(config.seed)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    keras.mixed_precision.set_global_policy(config.mixed_precision)

    source = data.load_split(config.dataset, "train", config.data_dir, decode=not info.encoded, **_source_options(config))
    train_part, validation_part = input_pipeline.split_holdout(source, num_examples, config.validation_fraction)
    stats = dataset_stats(config, train_part if not info.encoded else None, run_dir / "stats")
    if chief and not (run_dir / "stats" / "stats.json").is_file():
        stats.save(run_dir / "stats")
    print(f"Dataset {config.dataset}: {num_train} training, {num_validation} validation examples; {stats.summary()}")

    def make_train_data():
        return input_pipeline.train_dataset(
            train_part.repeat(),
            batch_size=config.batch_size,
            stats=stats,
            image_size=config.image_size,
            seed=config.seed,
            pca_std=config.pca_std,
            mean=config.mean,
            encoded=info.encoded,
            augment=config.augment,
        )

    train_data = make_train_data()
    eval_kwargs = dict(
        batch_size=config.batch_size, stats=stats, image_size=config.image_size, mean=config.mean, encoded=info.encoded
    )
    validation_data = None
    if num_validation:
        validation_batch = eval_batch_size(num_validation, config.batch_size, replicas)
        if validation_batch is None:
            validation_batch = config.batch_size
            kept = num_validation - num_validation % validation_batch
            print(f"Validating on {kept} of the {num_validation} held-out examples: whole batches for {replicas} replicas.")
            validation_part = validation_part.take(kept)
        validation_data = input_pipeline.eval_dataset(validation_part, **{**eval_kwargs, "batch_size": validation_batch})
    monitor = MONITOR if validation_data is not None else "top1_error"

    with strategy.scope():
        model = compile_model(build_model_for(config, info.num_classes), config)
    distribute.prepare_model_for(config.strategy, model)

    checkpoints = files_dir / "checkpoints"
    state_dir = checkpoints / "resume"
    log_dir = run_dir / "tensorboard"
    state = None
    if resumed:
        # Every worker resumes from the chief's state (its own scratch folder is new and empty).
        with strategy.scope():  # the optimizer's variables are built here when missing
            state = callbacks_lib.ResumableState.restore(model, run_dir / "checkpoints" / "resume")
    initial_epoch = state["epoch"] if state else 0
    history = [row for row in read_history(run_dir) if row.get("epoch", math.inf) < initial_epoch]
    if state:
        lr = float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))
        print(f"Resumed from the end of epoch {initial_epoch} (learning rate {lr:.2g}).", flush=True)
    # The monitored values of the epochs done, for the schedule's patience: from the resume
    # state (written with the weights), else from the history.
    completed_values = list(state.get("monitor_values", [])) if state else []
    if state and len(completed_values) != initial_epoch:
        completed_values = [row[monitor] for row in history if monitor in row]
    best_checkpoint = callbacks_lib.AtomicWeights(
        checkpoints / BEST_WEIGHTS, monitor=monitor, best_so_far=state.get("best") if state else None
    )
    # On epoch end, in this order: the learning-rate decision, the checkpoints, the resume
    # state (which records both and the monitored values), then the logs. The state write is
    # the slow step: after it, a kill can only cost an epoch's log lines (a few ms of
    # writes), never make an epoch run twice in the logs.
    callbacks = [
        callbacks_lib.StopOnNonFiniteLoss(state_dir),
        callbacks_lib.Throughput(config.batch_size),
        callbacks_lib.PlateauSchedule(
            monitor=monitor,
            mode="min",
            factor=0.1,
            patience=config.lr_patience,
            min_lr=config.learning_rate * 0.1**config.lr_drops,
            verbose=1,
            initial_learning_rate=config.learning_rate,
            completed_values=completed_values,
        ),
        best_checkpoint,
        callbacks_lib.AtomicWeights(checkpoints / LATEST_WEIGHTS),
        callbacks_lib.ResumableState(state_dir, best_checkpoint, monitor, completed_values),
        callbacks_lib.EpochSummary(config.epochs),
    ]
    if chief:
        # From a pipeline of its own: iterating train_data here would advance its seeds on
        # the chief only, and workers must all build the same global batches.
        augmented = next(iter(make_train_data().take(1)))[0][:6].numpy()
        write_hparams(log_dir, config, run_dir.name)
        callbacks += [
            keras.callbacks.TensorBoard(str(log_dir), write_graph=False, update_freq="epoch"),
            callbacks_lib.ImageSummaries(log_dir, augmented, stats.mean_rgb),
            keras.callbacks.CSVLogger(str(run_dir / "history.csv"), append=True),
        ]

    if verbose is None:
        # A progress bar on a terminal; elsewhere EpochSummary's line per epoch is enough.
        verbose = 1 if sys.stdout.isatty() else 0
    with callbacks_lib.StopOnSignal(state_dir) as stopper:
        stopper.check()  # a signal during the set-up above
        model.fit(
            train_data,
            initial_epoch=initial_epoch,
            epochs=config.epochs,
            steps_per_epoch=steps_per_epoch,
            validation_data=validation_data,
            callbacks=callbacks + [stopper],
            verbose=verbose,
            shuffle=False,  # train_dataset shuffles, with the run's seed
        )
    # Finished: the resume state is no longer needed (it holds weights and optimizer state).
    shutil.rmtree(state_dir, ignore_errors=True)

    if not chief:
        shutil.rmtree(files_dir, ignore_errors=True)
        return None
    results = _results(config, run_dir, monitor, info, eval_kwargs, files_dir, wall_start)
    runs.write_results(run_dir, results)
    print(f"Results: {run_dir / runs.RESULTS_FILE}")
    print(f"TensorBoard: tensorboard --logdir {config.experiments_dir}")
    return results


def _source_options(config):
    return {"tfds_data_dir": config.tfds_data_dir} if config.tfds_data_dir else {}


def _results(config, run_dir, monitor, info, eval_kwargs, files_dir, wall_start):
    history = read_history(run_dir) if (run_dir / "history.csv").is_file() else []
    best_row = min((row for row in history if monitor in row), key=lambda row: row[monitor], default=None)
    results = {
        "run": str(run_dir),
        "experiment": config.experiment,
        "dataset": config.dataset,
        "epochs": len(history),
        "best_epoch": int(best_row["epoch"]) + 1 if best_row else None,
        "best_validation_top1_error": best_row.get("val_top1_error") if best_row else None,
        "best_validation_top5_error": best_row.get("val_top5_error") if best_row else None,
        "test_top1_error": None,
        "test_top5_error": None,
        "images_per_s": statistics.median([r["images_per_s"] for r in history if "images_per_s" in r])
        if any("images_per_s" in r for r in history)
        else None,
        "wall_time_s_this_process": round(time.time() - wall_start, 1),
        "hparams": config.hparams(),
        "machine": machine_description(),
        # Per-epoch curves (from history.csv), so that a report needs nothing but this file.
        "curves": {
            key: [row.get(key) for row in history]
            for key in CURVE_KEYS
            if any(key in row for row in history)
        },
    }
    best_path = files_dir / "checkpoints" / BEST_WEIGHTS
    test_split = "test" if "test" in info.split_sizes else "validation" if "validation" in info.split_sizes else None
    if config.dataset == "imagenet2012" and test_split:
        test_split = "validation"  # ImageNet's validation set is the paper's test set
    if test_split and best_path.is_file():
        model = build_model_for(config, info.num_classes)
        model.load_weights(best_path)
        test = data.load_split(config.dataset, test_split, config.data_dir, decode=not info.encoded, **_source_options(config))
        top1, top5 = evaluate_model(model, input_pipeline.eval_dataset(test, **eval_kwargs))
        results["test_top1_error"], results["test_top5_error"] = top1, top5
        print(f"Test split ({info.split_sizes[test_split]} images, centre crop): top-1 error {top1:.4f}, top-5 error {top5:.4f}")
    else:
        print(f"Dataset {config.dataset!r} has no test split here: no test error recorded.")
    return results


def evaluate_model(model, dataset, crops=1):
    """(top-1 error, top-5 error) of `model` over `dataset`; with crops > 1 the softmax is
    averaged over each image's `crops` consecutive views."""
    top1 = keras.metrics.SparseTopKCategoricalAccuracy(k=1)
    top5 = keras.metrics.SparseTopKCategoricalAccuracy(k=min(5, model.output_shape[-1]))

    @tf.function
    def predict(images):
        return tf.nn.softmax(tf.cast(model(images, training=False), tf.float32))

    for images, labels in dataset:
        probabilities = predict(images)
        if crops > 1:
            probabilities = tf.reduce_mean(tf.reshape(probabilities, [-1, crops, probabilities.shape[-1]]), axis=1)
        top1.update_state(labels, probabilities)
        top5.update_state(labels, probabilities)
    return 1.0 - float(top1.result()), 1.0 - float(top5.result())
