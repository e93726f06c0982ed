"""Evaluation: the paper's top-k error, centre-crop and ten-crop scoring, and a trained run's model.

    trained = evaluation.load_trained("experiments/cifar10_lrn/run1")   # its best checkpoint
    model = trained.build_model()
    result = evaluation.evaluate_checkpoint("experiments/cifar10_lrn/run1", ten_crop=True)
"""

import contextlib
import dataclasses
import math
import pathlib

import keras
import tensorflow as tf

from alexnet_tf import data, input_pipeline, model as model_lib
from alexnet_tf import run as run_lib
from alexnet_tf import config as config_lib
from alexnet_tf.cli import first_line
from alexnet_tf.run import Run

RESULT_KEYS = (
    "top1_error",
    "top5_error",
    "top1_accuracy",
    "top5_accuracy",
    "examples",
    "crops",
    "checkpoint",
    "dataset",
    "split",
    "examples_trained_on",
)
# The run's own held-out part of the training split; "validation" means it too on data
# without a split of that name (all but imagenet2012, whose validation set is its test set).
HOLDOUT_SPLIT = "holdout"


@keras.saving.register_keras_serializable(package="alexnet_tf")
class TopKError(keras.metrics.SparseTopKCategoricalAccuracy):
    """Top-k error (1 - top-k accuracy): the figure the paper reports."""

    def result(self):
        return 1.0 - super().result()


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


class CheckpointError(OSError):
    """A checkpoint file that exists but cannot be read as this run's weights."""


@dataclasses.dataclass(frozen=True)
class TrainedRun:
    """A checkpoint and the run it belongs to: what is needed to rebuild its model.

    `class_names` is None for a run from before they were recorded (classes.json):
    then the data it is used with gives the class count, and `run_class_names` reads
    the names from the run's own dataset.
    """

    run: Run
    checkpoint: pathlib.Path
    config: config_lib.TrainConfig
    class_names: tuple | None

    @property
    def num_classes(self):
        return None if self.class_names is None else len(self.class_names)

    def run_class_names(self):
        """The class names, from the run's record or else from its dataset (which must be reachable)."""
        if self.class_names is not None:
            return self.class_names
        return self.source(self.config.dataset, self.config.data_dir).info().class_names

    def stats(self):
        """The training-set statistics the run prepared its images with."""
        return self.run.load_stats(self.config.mean)

    def build_model(self, num_classes=None):
        """The run's net with the checkpoint's weights, in float32 for inference
        (`num_classes` only for a run that did not record its classes)."""
        with _float32_policy():
            model = model_lib.build_for(self.config, self.num_classes or num_classes)
        try:
            model.load_weights(self.checkpoint)
        except (ValueError, OSError) as error:
            import h5py

            if not h5py.is_hdf5(self.checkpoint):
                raise CheckpointError(
                    f"{self.checkpoint} is not a readable Keras weights file ({first_line(error)})."
                ) from error
            raise CheckpointError(
                f"{self.checkpoint} does not fit the model in {self.run.flags_file}: {first_line(error)}"
            ) from error
        return model

    def source(self, dataset=None, data_dir=None):
        """The data source of `dataset` (default the run's), with the run's recorded options
        when it is the run's own dataset."""
        dataset = dataset or self.config.dataset
        if dataset == "image_folder" and self.class_names is not None:
            # The run's labels, whatever classes the evaluated tree's train/ has (or if it has none).
            return data.source(dataset, data_dir, class_names=self.class_names)
        if dataset == self.config.dataset and self.config.tfds_data_dir:
            return data.source(dataset, data_dir, tfds_data_dir=self.config.tfds_data_dir)
        return data.source(dataset, data_dir)


def load_trained(path):
    """The `TrainedRun` of a run directory (its best checkpoint) or of a weights file in a
    run's checkpoints/ folder. Builds nothing."""
    run, checkpoint = Run.find(path)
    return TrainedRun(run, checkpoint, run.config(), run.class_names())


def evaluate_checkpoint(checkpoint, dataset=None, data_dir=None, split="test", ten_crop=False, batch_size=100):
    """Top-1 and top-5 error of a run's checkpoint on one split of a dataset.

    Args:
      checkpoint: a run directory (its checkpoints/best.weights.h5) or a
        weights file in a run's checkpoints/ folder.
      dataset: default the run's dataset.
      data_dir: default the run's data folder when `dataset` is the run's
        dataset, else None (the data module's default). Given without
        `dataset` for a run on cifar10_sample, it evaluates dataset cifar10
        from that folder.
      split: the split to evaluate: "test" (imagenet2012 calls it "validation"), "train",
        or "holdout": the run's held-out part of the training split, by the
        trainer's rule, from data laid out as the run's was (same layout and
        size, see `Run.record_data`); "validation" is "holdout" on data
        without a split of that name.
      ten_crop: average the softmax over the paper's ten views of each image
        (four corners, centre, and their mirrors) instead of the centre crop.
      batch_size: images per batch (with ten_crop, each batch holds ten times
        as many views).

    Returns a dict with the keys of `RESULT_KEYS`; `examples_trained_on` counts the evaluated
    images that were in the run's training part (0 for held-out data), None where the data
    sources cannot tell (they can for CIFAR-10 binary batches and the embedded sample).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be a positive integer.")
    trained = load_trained(checkpoint)
    config = trained.config
    if dataset is None:
        dataset = config.dataset
        if data_dir is not None and dataset == "cifar10_sample":
            dataset = "cifar10"  # the sample's run on another folder of CIFAR-10 binary batches
    given_data_dir = data_dir
    if data_dir is None and dataset == config.dataset:
        data_dir = config.data_dir
    source = trained.source(dataset, data_dir)
    if given_data_dir is not None and not source.reads_files:
        raise ValueError(f"dataset {dataset!r} reads no files, so --data_dir={given_data_dir} would be ignored.")

    info = source.info()
    if trained.num_classes is not None and info.num_classes != trained.num_classes:
        raise ValueError(
            f"dataset {dataset!r} has {info.num_classes} classes but the checkpoint's model has "
            f"{trained.num_classes} outputs (run {trained.run.directory} trained on {config.dataset!r})."
        )
    if trained.class_names is not None and tuple(info.class_names) != trained.class_names:
        raise ValueError(
            f"dataset {dataset!r} names its classes {_names(info.class_names)}, but run {trained.run.directory} "
            f"was trained on {_names(trained.class_names)}: its labels would not match."
        )
    if split == HOLDOUT_SPLIT or (split == "validation" and split not in data.SPLITS[dataset]):
        split = HOLDOUT_SPLIT
        images, ids = held_out_part(source, info, trained)
    else:
        images, ids = source.load(split, decode=not info.encoded), source.record_ids(split)
    stats = trained.stats()
    # A run without recorded classes is built for the data's; a checkpoint of another
    # class count then fails to load, with a one-line error.
    model = trained.build_model(info.num_classes)
    batches = input_pipeline.eval_dataset(
        images,
        batch_size=batch_size,
        stats=stats,
        image_size=config.image_size,
        ten_crop=ten_crop,
        mean=config.mean,
        encoded=info.encoded,
        crop_padding=config.crop_padding,
    )
    counter = _Counter(batches)
    crops = 10 if ten_crop else 1
    top1_error, top5_error = evaluate_model(model, counter, crops=crops)
    if counter.examples == 0:
        raise data.DataError(f"split {split!r} of {dataset!r} has no examples to evaluate.")
    return {
        "top1_error": top1_error,
        "top5_error": top5_error,
        "top1_accuracy": 1.0 - top1_error,
        "top5_accuracy": 1.0 - top5_error,
        "examples": counter.examples,
        "crops": crops,
        "checkpoint": str(trained.checkpoint),
        "dataset": dataset,
        "split": split,
        "examples_trained_on": examples_trained_on(trained, dataset, source, ids),
    }


def held_out_part(source, info, trained):
    """(images, record ids or None): the part of `source`'s training split that the run held
    out, by the trainer's rule (`input_pipeline.split_holdout`), when `source` is laid out as
    the run's data was (a one-line error otherwise: its last records would be others)."""
    run = trained.run
    if not trained.config.validation_fraction:
        raise ValueError(
            f"run {run.directory} held out no validation images (--validation_fraction=0); "
            f"evaluate a test split instead."
        )
    record = _run_data_record(trained)
    size = info.split_sizes["train"]
    if record is None:
        raise ValueError(
            f"run {run.directory} does not record which data it held out ({run_lib.DATA_FILE}, written since "
            f"the data's layout is recorded) and its own data is not here: evaluate --split=test instead."
        )
    if (record["layout"], record["train_examples"] + record["holdout_examples"]) != (source.layout, size):
        raise ValueError(
            f"run {run.directory} held out the last {record['holdout_examples']} of "
            f"{record['train_examples'] + record['holdout_examples']} training records laid out as "
            f"{record['layout']}; this data has {size} laid out as {source.layout}, so its last records are "
            f"not the run's held-out ones: evaluate the data the run trained on."
        )
    _, part = input_pipeline.split_holdout(
        source.load("train", decode=not info.encoded), size, trained.config.validation_fraction
    )
    ids = source.record_ids("train")
    return part, None if ids is None else ids[record["train_examples"] :]


def examples_trained_on(trained, dataset, source, evaluated_ids):
    """How many of the evaluated records (`evaluated_ids`, see `data.Source.record_ids`) were in
    the run's training part; None where that cannot be known here. The run's own data tells
    which records it trained on; where it is not here, evaluated data of the run's dataset
    laid out as the run's was (`--data_dir` to a copy) tells the same."""
    if evaluated_ids is None:
        return None
    record = _run_data_record(trained)
    run_source = _run_source(trained)
    if run_source is None and record and dataset == trained.config.dataset and source.layout == record["layout"]:
        run_source = source
    if run_source is None or record is None:
        return None
    ids = run_source.record_ids("train")
    if ids is None:
        return None
    trained_ids = set(ids[: record["train_examples"]])
    return sum(record_id in trained_ids for record_id in evaluated_ids)


def _run_source(trained):
    """The run's own data source, or None where its data is not here (local sources check
    their files when made; tensorflow-datasets is not asked to prepare anything)."""
    try:
        return trained.source(trained.config.dataset, trained.config.data_dir)
    except (data.DataError, OSError):
        return None


def _run_data_record(trained):
    """The run's `Run.data_record`; for a run from before it was recorded, the same figures
    from the run's own data where it is here (else None)."""
    record = trained.run.data_record()
    if record is not None:
        return record
    run_source = _run_source(trained)
    if run_source is None or run_source.layout == "tfds":  # not prepared here, just to count it
        return None
    size = run_source.info().split_sizes["train"]
    holdout = math.ceil(trained.config.validation_fraction * size)
    return {"layout": run_source.layout, "train_examples": size - holdout, "holdout_examples": holdout}


class _Counter:
    """Iterates a dataset of (images, labels) batches, counting the labels that pass."""

    def __init__(self, batches):
        self.batches = batches
        self.examples = 0

    def __iter__(self):
        for images, labels in self.batches:
            self.examples += int(labels.shape[0])
            yield images, labels


@contextlib.contextmanager
def _float32_policy():
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float32")
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def _names(names, limit=4):
    shown = ", ".join(names[:limit])
    return f"({shown}{', …' if len(names) > limit else ''})"
