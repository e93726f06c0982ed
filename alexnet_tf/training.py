"""Training with Keras `fit`: the paper's recipe, a run directory, TensorBoard, resumption.

`train(config)` is the whole job, as a short list of named steps below;
`python -m alexnet_tf.train` is a thin wrapper around it. The run
directory's layout and the resume rules belong to `alexnet_tf.run`.
"""

import collections
import dataclasses
import math
import os
import pathlib
import shutil
import statistics
import sys
import tempfile
import time

import keras
import tensorflow as tf

from alexnet_tf import callbacks as callbacks_lib
from alexnet_tf import data, data_service, distribute, evaluation, input_pipeline, machine, preprocessing, tensorboard_logs
from alexnet_tf import model as model_lib
from alexnet_tf.optim import SGDCoupledWeightDecay
from alexnet_tf.run import Run

MONITOR = "val_top1_error"
CURVE_KEYS = (
    "loss", "top1_error", "top5_error", "val_loss", "val_top1_error", "val_top5_error", "learning_rate", "wall_minutes",
)  # fmt: skip


def train(config, *, run_name=None, devices=None, verbose=None):
    """Trains the net `config` describes; returns the results written to results.json
    (None on a multi-worker run's non-chief workers, which write no run files).

    `run_name` names the run directory (default: continue or start one, see `alexnet_tf.run`).
    `devices` (mirrored strategy only) pins the replicas, e.g. two logical CPUs in tests.
    """
    wall_start = time.time()
    # First: splitting the CPU into replicas must precede any use of TensorFlow's devices.
    strategy = distribute.make_strategy(config.strategy, devices, config.cpu_replicas)
    if config.data_service:  # a wrong address fails now, not after the set-up (or in an hour of retries)
        data_service.check_reachable(config.data_service)
    source = data.source_for(config)
    if config.data_dir is None and source.data_dir is not None:
        # Record the folder the environment chose, so that the run's flags.txt reproduces it.
        config = dataclasses.replace(config, data_dir=os.environ[data.DATA_DIR_ENV])
    info = source.info()
    num_train, num_validation = holdout_sizes(info, config.validation_fraction)
    steps_per_epoch = steps_per_epoch_for(config, num_train, strategy.num_replicas_in_sync)

    run, resumed, writer = open_run(config, run_name, info.class_names, (source.layout, num_train, num_validation))
    set_seeds_and_precision(config)
    train_part, validation_part = input_pipeline.split_holdout(
        source.load("train", decode=not info.encoded), info.split_sizes["train"], config.validation_fraction
    )
    stats = training_stats(config, run, source, train_part, info.encoded)
    if run is writer and not run.has_stats():  # the chief records them; other workers use the same
        run.save_stats(stats)
    print(f"Dataset {config.dataset}: {num_train} training, {num_validation} validation examples; {stats.summary()}")
    print_validation_classes(source, info, num_train)

    def make_train_data(source, **options):
        return input_pipeline.train_dataset(
            source,
            **options,
            batch_size=config.batch_size,
            stats=stats,
            image_size=config.image_size,
            seed=config.seed,
            pca_std=config.pca_std,
            mean=config.mean,
            encoded=info.encoded,
            augment=config.augment,
            crop_padding=config.crop_padding,
        )

    eval_kwargs = dict(
        batch_size=config.batch_size, stats=stats, image_size=config.image_size, mean=config.mean,
        encoded=info.encoded, crop_padding=config.crop_padding,
    )
    validation_data = validation_dataset(validation_part, num_validation, eval_kwargs, strategy.num_replicas_in_sync)
    monitor = MONITOR if validation_data is not None else "top1_error"
    if validation_data is None:
        print("No validation part (--validation_fraction=0): the learning-rate schedule and the best "
              "checkpoint follow the training error; results.json has no validation figures.", flush=True)

    with strategy.scope():
        model = compile_model(model_lib.build_for(config, info.num_classes), config, steps_per_epoch)
    distribute.prepare_model_for(config.strategy, model)
    state = restore(run, model, strategy) if resumed else None

    callbacks = training_callbacks(config, run, writer, monitor, state, wall_start)
    callbacks.append(callbacks_lib.PlateauWarning(info.num_classes, steps_per_epoch))
    if run is writer:  # the chief
        # From a pipeline of its own: iterating the training data here would advance its seeds
        # on the chief only, and workers must all build the same global batches.
        augmented = next(iter(make_train_data(train_part.repeat()).take(1)))[0][:6].numpy()
        callbacks += logging_callbacks(config, run, augmented, stats, resumed)

    train_data = training_data(config, make_train_data, train_part, num_train, run, state, stats)
    fit(model, train_data, validation_data, config, steps_per_epoch, state, callbacks, writer, verbose)
    return finish(config, run, writer, source, info, monitor, eval_kwargs, wall_start)


# ---------------------------------------------------------------------------- the steps


def holdout_sizes(info, validation_fraction):
    """(training examples, held-out validation examples) of the training split."""
    if "train" not in info.split_sizes:
        raise data.DataError(f"dataset {info.name!r} has no training split here.")
    num_examples = info.split_sizes["train"]
    num_validation = math.ceil(validation_fraction * num_examples)
    return num_examples - num_validation, num_validation


def steps_per_epoch_for(config, num_train, replicas):
    if config.batch_size % replicas:
        raise ValueError(
            f"--batch_size={config.batch_size} does not divide by the {replicas} replicas; "
            f"use a multiple of {replicas}."
        )
    steps = num_train // config.batch_size
    if steps == 0:
        raise ValueError(
            f"--batch_size={config.batch_size} is larger than the {num_train} training examples; lower it."
        )
    return min(steps, config.steps_per_epoch) if config.steps_per_epoch else steps


def open_run(config, name, class_names, data_record):
    """(run, resumed, writer): the run directory this command trains, and where this process
    writes checkpoints (the run itself on the chief; a scratch folder on other workers).
    `data_record`: `Run.record_data`'s arguments."""
    choice = Run.for_training(pathlib.Path(config.experiments_dir) / config.experiment, config, name)
    run = choice.run
    if not distribute.is_chief():
        # Other workers write their checkpoints apart and drop them at the end; only the
        # chief's are kept (Keras's multi-worker pattern).
        print(f"Worker {distribute.worker_index()} of {distribute.num_workers()} training run {run.directory}", flush=True)
        return run, choice.resumed, Run(tempfile.mkdtemp(prefix="alexnet_tf_worker_"))
    if choice.note:
        print(choice.note, flush=True)
    if choice.resumed:
        if run.class_names() is None:  # a run started before classes.json was recorded
            run.record_classes(class_names)
        if run.run_id() is None:  # a run started before run_id.txt was recorded
            run.record_run_id()
    else:
        run.claim(config, class_names)
    if run.data_record() is None:
        run.record_data(*data_record)
    print(f"{'Resuming' if choice.resumed else 'Starting'} run {run.directory}", flush=True)
    return run, choice.resumed, run


def set_seeds_and_precision(config):
    keras.utils.set_random_seed(config.seed)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    keras.mixed_precision.set_global_policy(config.mixed_precision)


def training_stats(config, run, source, train_part, encoded):
    """The run's training-set statistics: read back on resume, else the source's published ones
    (ImageNet's) or computed from `train_part`."""
    if run.has_stats():
        return run.load_stats(config.mean)
    if source.published_stats is not None:
        stats = source.published_stats
    else:
        print(f"Computing the training set's mean and PCA eigen-pairs on up to {config.stats_images} images...", flush=True)
        images = train_part.map(lambda image, label: image)
        if encoded:
            images = images.map(input_pipeline.decode_center_square)
        resize_size = preprocessing.resize_size_for(config.image_size)
        stats = preprocessing.compute_stats(images, resize_size, max_images=config.stats_images)
    return stats


def validation_dataset(validation_part, num_validation, eval_kwargs, replicas):
    """Batches of the held-out part, sized so that every replica gets data; None without one."""
    if not num_validation:
        return None
    batch_size = eval_batch_size(num_validation, eval_kwargs["batch_size"], replicas)
    if batch_size is None:
        batch_size = eval_kwargs["batch_size"]
        kept = num_validation - num_validation % batch_size
        print(f"Validating on {kept} of the {num_validation} held-out examples: whole batches for {replicas} replicas.")
        validation_part = validation_part.take(kept)
    return input_pipeline.eval_dataset(validation_part, **{**eval_kwargs, "batch_size": batch_size})


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


# More classes than this (ImageNet's 1000) are summed up rather than listed when a run starts.
MAX_CLASSES_LISTED = 20


def print_validation_classes(source, info, num_train):
    """One line with the held-out part's images per class, when the source knows its labels cheaply."""
    labels = source.labels("train")
    if labels is None or len(labels) <= num_train:
        return
    counts = collections.Counter(int(label) for label in labels[num_train:])
    if len(info.class_names) > MAX_CLASSES_LISTED:
        # ImageNet's 1000 classes: the range, and the classes the training split has but the part lacks.
        trained = set(int(label) for label in labels[:num_train])
        per_class = [counts.get(index, 0) for index in sorted(trained | set(counts))]
        missing = sum(1 for index in trained if index not in counts)
        print(
            f"Validation images per class: {min(per_class)} to {max(per_class)} over the {len(per_class)} "
            f"classes of the training split ({missing} of them with none held out)",
            flush=True,
        )
        return
    listed = ", ".join(f"{name} {counts.get(index, 0)}" for index, name in enumerate(info.class_names))
    print(f"Validation images per class: {listed}", flush=True)


def training_data(config, make_train_data, train_part, num_train, run, state, stats):
    """The batches `fit` trains on: from this process's pipeline over the repeated training part,
    or, with --data_service, from the service's workers running it pass by pass
    (`alexnet_tf.data_service`)."""
    if not config.data_service:
        return make_train_data(train_part.repeat())
    pipeline = data_service.pipeline_digest(config, stats, num_train)
    job = data_service.job_name(run.directory, state["epoch"] if state else 0, run.wait_for_run_id(), pipeline)
    print(f"Training batches from the tf.data service at {config.data_service} (job {job}); statistics and "
          f"validation in this process.", flush=True)
    batches = make_train_data(data_service.passes(train_part, num_train, config.seed), element_seeds=True)
    return data_service.distribute(batches, config.data_service, job)


def learning_rate_for(config, steps_per_epoch):
    """The optimizer's learning rate: a value that the plateau rule lowers, or a cosine schedule
    over the run's steps (after a linear warm-up from 0)."""
    if config.lr_schedule == "plateau":
        return config.learning_rate
    total_steps = config.epochs * steps_per_epoch
    warmup_steps = min(round(config.warmup_epochs * steps_per_epoch), total_steps)
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if warmup_steps else config.learning_rate,
        decay_steps=max(1, total_steps - warmup_steps),
        warmup_target=config.learning_rate if warmup_steps else None,
        warmup_steps=warmup_steps,
    )


def classification_loss(label_smoothing=0.0):
    """Softmax cross-entropy of the logits against integer labels, the target's 1 smoothed to
    1 - label_smoothing + label_smoothing / classes (the others' 0 to label_smoothing / classes)."""
    if not label_smoothing:
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    # Keras's sparse loss takes no smoothing; its one-hot loss does, once the labels are one-hot.
    def smoothed_crossentropy(labels, logits):
        one_hot = tf.one_hot(tf.reshape(tf.cast(labels, tf.int32), [-1]), tf.shape(logits)[-1], dtype=logits.dtype)
        return keras.losses.categorical_crossentropy(
            one_hot, logits, from_logits=True, label_smoothing=label_smoothing
        )

    return smoothed_crossentropy


def compile_model(model, config, steps_per_epoch=None):
    if config.lr_schedule != "plateau" and steps_per_epoch is None:
        raise ValueError(f"--lr_schedule={config.lr_schedule} needs the number of steps per epoch.")
    model.compile(
        optimizer=SGDCoupledWeightDecay(
            learning_rate=learning_rate_for(config, steps_per_epoch),
            momentum=config.momentum,
            coupled_weight_decay=config.weight_decay,
        ),
        loss=classification_loss(config.label_smoothing),
        metrics=[evaluation.TopKError(k=1, name="top1_error"), evaluation.TopKError(k=5, name="top5_error")],
        jit_compile=config.jit_compile,
    )
    return model


def restore(run, model, strategy):
    """Loads the run's newest resume state into `model`; returns its meta, or None if there is none.
    Every worker resumes from the chief's state (its own scratch folder is new and empty)."""
    with strategy.scope():  # the optimizer's variables are built here when missing
        state = run.restore(model)
    if state:
        lr = float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))
        print(f"Resumed from the end of epoch {state['epoch']} (learning rate {lr:.2g}).", flush=True)
    return state


def training_callbacks(config, run, writer, monitor, state, wall_start):
    """The callbacks every worker runs. On each epoch's end they act in list order: the
    learning-rate decision, the checkpoints, then the resume state, which records both (the
    logging callbacks come after it). The state write is the slow step: after it, a kill can
    only cost an epoch's log lines (a few ms of writes), never make an epoch run twice in the logs."""
    state = state or {}
    if config.lr_schedule == "plateau":
        schedule = callbacks_lib.PlateauSchedule(
            monitor=monitor,
            mode="min",
            factor=0.1,
            patience=config.lr_patience,
            min_lr=config.learning_rate * 0.1**config.lr_drops,
            verbose=1,
            restored=state.get("schedule") or callbacks_lib.PlateauSchedule.counters_from(
                state.get("monitor_values"), config.lr_patience, config.lr_drops
            ),
        )
    else:  # the schedule is a function of the optimizer's step count, which the state restores
        schedule = callbacks_lib.LearningRateLog()
    done = [row for row in run.read_history() if row.get("epoch", math.inf) < state.get("epoch", 0)]
    minutes_before = done[-1].get("wall_minutes", 0.0) if done else 0.0
    best_checkpoint = callbacks_lib.AtomicWeights(writer, writer.best_weights, monitor=monitor, best_so_far=state.get("best"))
    return [
        callbacks_lib.StopOnNonFiniteLoss(writer),
        callbacks_lib.Throughput(config.batch_size),
        callbacks_lib.WallClock(wall_start, minutes_before),
        schedule,
        best_checkpoint,
        callbacks_lib.AtomicWeights(writer, writer.latest_weights),
        callbacks_lib.ResumableState(writer, best_checkpoint, schedule),
    ]


def logging_callbacks(config, run, augmented_images, stats, resumed):
    """The chief's logs: TensorBoard scalars, HParams (once, when the run starts) and images,
    and history.csv."""
    if not resumed:
        tensorboard_logs.write_hparams(run.tensorboard_dir, config.hparams(), tensorboard_logs.trial_id(run.directory))
    return [
        tensorboard_logs.EpochLogs(run.tensorboard_dir, augmented_images, stats.mean_rgb),
        keras.callbacks.CSVLogger(str(run.history_file), append=True),
    ]


def fit(model, train_data, validation_data, config, steps_per_epoch, state, callbacks, writer, verbose):
    if verbose is None:
        # A progress bar on a terminal; elsewhere Keras's one line per epoch.
        verbose = 1 if sys.stdout.isatty() else 2
    with callbacks_lib.StopOnSignal(writer) as stopper:
        stopper.check()  # a signal during the set-up
        model.fit(
            train_data,
            initial_epoch=state["epoch"] if state else 0,
            epochs=config.epochs,
            steps_per_epoch=steps_per_epoch,
            validation_data=validation_data,
            callbacks=callbacks + [stopper],
            verbose=verbose,
            shuffle=False,  # train_dataset shuffles, with the run's seed
        )


def finish(config, run, writer, source, info, monitor, eval_kwargs, wall_start):
    """Drops the resume state (it holds weights and optimizer state) and, on the chief, scores
    the best checkpoint on the test split and writes results.json."""
    writer.drop_resume_state()
    if run is not writer:
        shutil.rmtree(writer.directory, ignore_errors=True)
        return None
    results = results_of(config, run, monitor, wall_start)
    test_split = source.test_split()
    if test_split and run.best_weights.is_file():
        model = model_lib.build_for(config, info.num_classes)
        model.load_weights(run.best_weights)
        test = input_pipeline.eval_dataset(source.load(test_split, decode=not info.encoded), **eval_kwargs)
        top1, top5 = evaluation.evaluate_model(model, test)
        results["test_top1_error"], results["test_top5_error"] = top1, top5
        print(f"Test split ({info.split_sizes[test_split]} images, centre crop): top-1 error {top1:.4f}, top-5 error {top5:.4f}")
    else:
        print(f"Dataset {config.dataset!r} has no test split here: no test error recorded.")
    run.write_results(results)
    tensorboard_logs.write_final_errors(run.tensorboard_dir, results, step=max(results["epochs"] - 1, 0))
    print(f"Results: {run.results_file}")
    print(f"Run {run.directory} finished; its curves: tensorboard --logdir {run.tensorboard_dir}", flush=True)
    return results


def results_of(config, run, monitor, wall_start):
    """results.json's figures from the run's history (the test error is filled in by `finish`)."""
    history = run.read_history()
    best_row = min((row for row in history if monitor in row), key=lambda row: row[monitor], default=None)
    speeds = [row["images_per_s"] for row in history if "images_per_s" in row]
    return {
        "run": str(run.directory),
        "experiment": config.experiment,
        "dataset": config.dataset,
        "epochs": len(history),
        "best_epoch": int(best_row["epoch"]) + 1 if best_row else None,
        "best_validation_top1_error": best_row.get("val_top1_error") if best_row else None,
        "best_validation_top5_error": best_row.get("val_top5_error") if best_row else None,
        "test_top1_error": None,
        "test_top5_error": None,
        "images_per_s": statistics.median(speeds) if speeds else None,
        "wall_time_s_this_process": round(time.time() - wall_start, 1),
        "hparams": config.hparams(),
        "machine": machine.describe(),
        # Per-epoch curves (from history.csv), so that a report needs nothing but this file.
        "curves": {key: [row.get(key) for row in history] for key in CURVE_KEYS if any(key in row for row in history)},
    }
