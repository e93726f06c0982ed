"""A run's TensorBoard logs: two entries per run, and one HParams trial per run.

Layout, inside the run's `tensorboard/` folder (`alexnet_tf.run.Run.tensorboard_dir`):

    tensorboard/              the run's HParams record, the training scalars per epoch
                              (epoch_loss, epoch_top1_error, ..., epoch_learning_rate),
                              images/..., and final/... (the test and best validation errors)
    tensorboard/validation/   the validation scalars, under the same tags

so `tensorboard --logdir experiments/` lists a run as `<experiment>/<run>/tensorboard`
and `.../tensorboard/validation`, and draws its training and validation curves in the
same charts. Keras's own TensorBoard callback writes the training scalars to a
`train/` folder of their own, which would make every run three entries: the HParams
dashboard reads a trial's metrics only from the trial's folder and folders below it,
so its record cannot sit in `train/` beside them.

The HParams trial id is `<experiment>/<run>` (the run's place under experiments/):
bare run names would merge every experiment's run1 into one trial.
"""

import math
import pathlib

import keras
import numpy as np
import tensorflow as tf

from alexnet_tf import choices

VALIDATION_DIR = "validation"

# The HParams dashboard's table shows five columns at first: the settings runs are most
# often compared by. Every other setting of `TrainConfig.hparams()` (seed, activation,
# learning rate, ...) is a column a tick away; flags.txt holds everything.
SHOWN_HPARAMS = ("norm", "towers", "init", "image_size", "mixed_precision")

# (tag, folder below the trial's, column title): the last value of each is the table's entry.
# The final figures' tags share the prefix "final/" and the images' "images/", so that
# TensorBoard's Time Series groups each set, after the per-epoch charts.
METRICS = (
    ("final/best_validation_top1_error", "", "best validation top-1 error"),
    ("final/best_validation_top5_error", "", "best validation top-5 error"),
    ("final/test_top1_error", "", "test top-1 error"),
    ("final/test_top5_error", "", "test top-5 error"),
    ("epoch_top1_error", VALIDATION_DIR, "validation top-1 error (last epoch)"),
)


def trial_id(run_directory):
    """`<experiment>/<run>`: unique across experiments, and the path a user sees."""
    run_directory = pathlib.Path(run_directory)
    return f"{run_directory.parent.name}/{run_directory.name}"


def write_hparams(log_dir, hparams, trial):
    """Writes the dashboard's columns and the run's HParams session record into `log_dir`."""
    from tensorboard.plugins.hparams import api as hparams_api

    domains = {
        "model": hparams_api.Discrete(list(choices.MODELS)),
        "norm": hparams_api.Discrete(list(choices.NORMS)),
        "towers": hparams_api.Discrete(list(choices.TOWERS)),
        "width": hparams_api.Discrete(list(choices.WIDTHS)),
        "pooling": hparams_api.Discrete(list(choices.POOLINGS)),
        "init": hparams_api.Discrete(list(choices.INITS)),
        "activation": hparams_api.Discrete(list(choices.ACTIVATIONS)),
        "lr_schedule": hparams_api.Discrete(list(choices.LR_SCHEDULES)),
        "mixed_precision": hparams_api.Discrete(list(choices.PRECISIONS)),
    }
    titles = {"mixed_precision": "precision", "image_size": "image size", "learning_rate": "learning rate",
              "lr_schedule": "schedule", "batch_size": "batch", "pca_std": "PCA lighting std"}  # fmt: skip
    names = list(SHOWN_HPARAMS) + [name for name in hparams if name not in SHOWN_HPARAMS]
    columns = [hparams_api.HParam(name, domains.get(name), display_name=titles.get(name, name)) for name in names]
    metrics = [
        hparams_api.Metric(tag, group=group, display_name=title,
                           dataset_type=hparams_api.Metric.VALIDATION if "validation" in title else None)
        for tag, group, title in METRICS
    ]  # fmt: skip
    with tf.summary.create_file_writer(str(log_dir)).as_default() as writer:
        tf.summary.experimental.write_raw_pb(_shown_first(hparams_api.hparams_config_pb(columns, metrics)), step=0)
        hparams_api.hparams(hparams, trial_id=trial)
        writer.flush()


def _shown_first(config):
    """The dashboard's column record with SHOWN_HPARAMS marked as differing between runs.

    TensorBoard's HParams table ticks its first five columns, ordered with those marked
    `differs` first (then by name); the summary API has no argument for the mark, so it is
    set on the record's proto (TensorBoard's `hparams.metadata` and `plugin_data_pb2`
    modules). tests/test_tensorboard_logs.py reads it back from the event files; README
    says what the dashboard showed in a browser."""
    from tensorboard.plugins.hparams import metadata, plugin_data_pb2

    (value,) = config.value
    experiment = metadata.parse_experiment_plugin_data(value.metadata.plugin_data.content)
    for info in experiment.hparam_infos:
        info.differs = info.name in SHOWN_HPARAMS
    value.metadata.CopyFrom(metadata.create_summary_metadata(plugin_data_pb2.HParamsPluginData(experiment=experiment)))
    return config.SerializeToString()


def write_final_errors(log_dir, results, step):
    """The run's test and best validation errors (results.json's) as the dashboard's metrics."""
    with tf.summary.create_file_writer(str(log_dir)).as_default() as writer:
        for tag, group, _ in METRICS:
            value = results.get(tag.removeprefix("final/"))
            if not group and value is not None and math.isfinite(value):
                tf.summary.scalar(tag, value, step=step)
        writer.flush()


class EpochLogs(keras.callbacks.Callback):
    """Per epoch: the logs' training figures into `log_dir`, the validation ones (`val_*`)
    into `log_dir/validation` under the same tags, and conv1's filters as an image; once,
    at the start, a few augmented training images (plus the mean, viewable)."""

    def __init__(self, log_dir, augmented_images, mean_rgb):
        super().__init__()
        self.log_dir = pathlib.Path(log_dir)
        self.augmented_images = augmented_images
        self.mean_rgb = np.asarray(mean_rgb, np.float32)
        self.writer = tf.summary.create_file_writer(str(self.log_dir))
        self.validation_writer = None  # made with the first validation figures (none without a hold-out)

    def on_train_begin(self, logs=None):
        viewable = np.clip((self.augmented_images + self.mean_rgb) / 255.0, 0.0, 1.0)
        with self.writer.as_default():
            tf.summary.image("images/augmented_training", viewable, step=0, max_outputs=len(viewable))
        self.writer.flush()

    def on_epoch_end(self, epoch, logs=None):
        for key, value in (logs or {}).items():
            writer = self.writer
            if key.startswith("val_"):
                if self.validation_writer is None:
                    self.validation_writer = tf.summary.create_file_writer(str(self.log_dir / VALIDATION_DIR))
                writer = self.validation_writer
            with writer.as_default():
                tf.summary.scalar("epoch_" + key.removeprefix("val_"), float(value), step=epoch)
        with self.writer.as_default():
            tf.summary.image("images/conv1_filters", filter_grid(self.model.get_layer("conv1").kernel.numpy()), step=epoch)
        for writer in (self.writer, self.validation_writer):
            if writer is not None:
                writer.flush()

    def on_train_end(self, logs=None):
        for writer in (self.writer, self.validation_writer):
            if writer is not None:
                writer.close()


def filter_grid(kernel):
    """conv1's filters [kh, kw, 3, n] as one [1, H, W, 3] image, each filter scaled to [0, 1]."""
    kernel = np.asarray(kernel, np.float32)
    kh, kw, _, count = kernel.shape
    filters = np.moveaxis(kernel, -1, 0)
    low = filters.min(axis=(1, 2, 3), keepdims=True)
    high = filters.max(axis=(1, 2, 3), keepdims=True)
    filters = (filters - low) / np.maximum(high - low, 1e-12)
    columns = int(math.ceil(math.sqrt(count * 4 / 3)))  # a landscape grid: 12 x 8 for 96
    rows = int(math.ceil(count / columns))
    grid = np.ones((rows * (kh + 1) + 1, columns * (kw + 1) + 1, 3), np.float32)
    for index in range(count):
        row, column = divmod(index, columns)
        top, left = 1 + row * (kh + 1), 1 + column * (kw + 1)
        grid[top : top + kh, left : left + kw] = filters[index]
    return grid[None]
