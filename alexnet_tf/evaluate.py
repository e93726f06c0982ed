"""Evaluate a trained checkpoint: python -m alexnet_tf.evaluate --checkpoint PATH [--flags...]

    python -m alexnet_tf.evaluate --checkpoint=experiments/cifar10_lrn/run1
    python -m alexnet_tf.evaluate --checkpoint=experiments/cifar10_lrn/run1/checkpoints/latest.weights.h5
    python -m alexnet_tf.evaluate --checkpoint=RUN --ten_crop            # the paper's ten views
    python -m alexnet_tf.evaluate --checkpoint=RUN --data_dir=OTHER_CIFAR10_FOLDER

`--checkpoint` is a run directory (its checkpoints/best.weights.h5 is used)
or a weights file inside a run's checkpoints/ folder. The model is rebuilt
from the run's flags.txt and the images are prepared with the run's
statistics (stats/), exactly as training evaluated them, so no
architecture flag needs repeating. The dataset and data folder default to
the run's; `--dataset` and `--data_dir` evaluate on something else with the
same classes (`--data_dir` alone, for a run on the embedded cifar10_sample,
evaluates dataset cifar10 from that folder).

Output: a readable summary, then, as the last line of stdout, one JSON object
with top1_error, top5_error, top1_accuracy, top5_accuracy, examples, crops,
checkpoint, dataset and split.

Errors are one line on stderr. Exit status 2: a usage error (a path that is
not a run or a checkpoint, a dataset whose classes differ from the model's);
1: a missing or unreadable file, or a data problem (unknown split, missing
data).
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import contextlib  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import pathlib  # noqa: E402
import re  # noqa: E402

from absl import app, flags, logging  # noqa: E402

from alexnet_tf import cli, data, preprocessing, runs  # noqa: E402
from alexnet_tf import config as config_lib  # noqa: E402

CHECKPOINTS_DIR = "checkpoints"
STATS_DIR = "stats"
BEST_WEIGHTS = "best.weights.h5"  # training.BEST_WEIGHTS (not imported: that pulls in Keras at import time)
WEIGHTS_SUFFIX = ".weights.h5"
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
)


# Sources that ignore data_dir (data.load_split): a data_dir given with them is a mistake.
DATASETS_WITHOUT_FILES = ("cifar10_sample", "synthetic")


class CheckpointError(OSError):
    """A checkpoint file that exists but cannot be read as this run's weights."""


@dataclasses.dataclass(frozen=True)
class TrainedRun:
    """A checkpoint and the run it belongs to: what is needed to rebuild its model."""

    run_dir: pathlib.Path
    checkpoint: pathlib.Path
    config: config_lib.TrainConfig
    num_classes: int  # fc8's units, read from the checkpoint

    def stats(self):
        """The training-set statistics the run prepared its images with."""
        directory = self.run_dir / STATS_DIR
        if not (directory / "stats.json").is_file():
            raise FileNotFoundError(
                f"run {self.run_dir} has no {STATS_DIR}/stats.json: its preprocessing statistics are missing."
            )
        return preprocessing.DatasetStats.load(directory)

    def build_model(self):
        """The run's AlexNet with the checkpoint's weights, in float32 for inference."""
        from alexnet_tf import training

        with _float32_policy():
            model = training.build_model_for(self.config, self.num_classes)
        try:
            model.load_weights(self.checkpoint)
        except (ValueError, OSError) as error:
            raise CheckpointError(
                f"{self.checkpoint} does not fit the model in {self.run_dir / runs.FLAGS_FILE}: "
                f"{_first_line(error)}"
            ) from error
        return model

    def source_options(self, dataset):
        """Data-source options recorded with the run, for `dataset` (only the run's own uses them)."""
        if dataset == self.config.dataset and self.config.tfds_data_dir:
            return {"tfds_data_dir": self.config.tfds_data_dir}
        return {}


def find_run(path):
    """The `TrainedRun` of `path`: a run directory (its best checkpoint) or a
    `<run>/checkpoints/*.weights.h5` file. Reads the run's flags and the
    checkpoint's class count; builds nothing."""
    path = pathlib.Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"--checkpoint {path} does not exist.")
    if path.is_dir():
        run_dir = path
        if not (run_dir / runs.FLAGS_FILE).is_file():
            raise ValueError(
                f"--checkpoint {path} is a folder but not a run directory (it has no {runs.FLAGS_FILE}); "
                f"pass a run directory or one of its {CHECKPOINTS_DIR}/*{WEIGHTS_SUFFIX} files."
            )
        checkpoint = run_dir / CHECKPOINTS_DIR / BEST_WEIGHTS
        if not checkpoint.is_file():
            raise FileNotFoundError(
                f"run {run_dir} has no {CHECKPOINTS_DIR}/{BEST_WEIGHTS} (it has not finished an epoch yet?); "
                f"pass another weights file from its {CHECKPOINTS_DIR}/ folder, if any."
            )
    else:
        checkpoint = path
        if not checkpoint.name.endswith(WEIGHTS_SUFFIX):
            raise ValueError(
                f"--checkpoint {path} is not a checkpoint: expected a run directory or a "
                f"*{WEIGHTS_SUFFIX} file from a run's {CHECKPOINTS_DIR}/ folder."
            )
        run_dir = checkpoint.parent.parent
        if checkpoint.parent.name != CHECKPOINTS_DIR or not (run_dir / runs.FLAGS_FILE).is_file():
            raise ValueError(
                f"--checkpoint {path} is not inside a run directory (expected <run>/{CHECKPOINTS_DIR}/"
                f"{checkpoint.name} beside <run>/{runs.FLAGS_FILE}, which rebuilds the model)."
            )
    run_dir = run_dir.resolve()
    checkpoint = checkpoint.resolve()
    try:
        config = config_lib.config_from_flagfile(run_dir / runs.FLAGS_FILE)
    except flags.Error as error:  # a flags.txt edited by hand
        flagfile = run_dir / runs.FLAGS_FILE
        raise ValueError(f"{flagfile} cannot be read as training flags: {_first_line(error)}") from error
    return TrainedRun(run_dir, checkpoint, config, checkpoint_num_classes(checkpoint))


_DENSE_KEY = re.compile(r"dense(?:_(\d+))?$")


def checkpoint_num_classes(checkpoint):
    """fc8's units in a Keras `.weights.h5` file of an AlexNet (its last Dense layer's bias).

    Keras names the layers in the file by class and order (dense, dense_1,
    dense_2 for fc6, fc7, fc8), not by the layers' own names.
    """
    import h5py

    try:
        with h5py.File(checkpoint, "r") as file:
            layers = file.get("layers")
            dense = sorted(
                (int(match.group(1) or 0), key)
                for key in (layers.keys() if layers is not None else ())
                if (match := _DENSE_KEY.match(key))
            )
            bias = layers[dense[-1][1]].get("vars/1") if dense else None
            if bias is None or len(bias.shape) != 1:
                raise CheckpointError(f"{checkpoint} does not hold AlexNet weights (no fully connected output layer).")
            return int(bias.shape[0])
    except CheckpointError:
        raise
    except OSError as error:
        raise CheckpointError(f"{checkpoint} is not a readable Keras weights file ({_first_line(error)}).") from error


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
      split: the split to evaluate ("test"; imagenet2012 calls it "validation").
      ten_crop: average the softmax over the paper's ten views of each image
        (four corners, centre, and their mirrors) instead of the centre crop.
      batch_size: images per batch (with ten_crop, each batch holds ten times
        as many views).

    Returns a dict with the keys of `RESULT_KEYS`.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be a positive integer.")
    run = find_run(checkpoint)
    config = run.config
    if dataset is None:
        dataset = config.dataset
        if data_dir is not None and dataset == "cifar10_sample":
            dataset = "cifar10"  # the sample's run on another folder of CIFAR-10 binary batches
    if data_dir is not None and dataset in DATASETS_WITHOUT_FILES:
        raise ValueError(f"dataset {dataset!r} reads no files, so --data_dir={data_dir} would be ignored.")
    if data_dir is None and dataset == config.dataset:
        data_dir = config.data_dir
    options = run.source_options(dataset)

    info = data.dataset_info(dataset, data_dir, **options)
    if info.num_classes != run.num_classes:
        raise ValueError(
            f"dataset {dataset!r} has {info.num_classes} classes but the checkpoint's model has "
            f"{run.num_classes} outputs (run {run.run_dir} trained on {config.dataset!r})."
        )
    source = data.load_split(dataset, split, data_dir, decode=not info.encoded, **options)
    stats = run.stats()
    model = run.build_model()

    from alexnet_tf import input_pipeline, training

    batches = input_pipeline.eval_dataset(
        source,
        batch_size=batch_size,
        stats=stats,
        image_size=config.image_size,
        ten_crop=ten_crop,
        mean=config.mean,
        encoded=info.encoded,
    )
    counter = _Counter(batches)
    crops = 10 if ten_crop else 1
    top1_error, top5_error = training.evaluate_model(model, counter, crops=crops)
    if counter.examples == 0:
        raise data.DataError(f"split {split!r} of {dataset!r} has no examples to evaluate.")
    return {
        "top1_error": top1_error,
        "top5_error": top5_error,
        "top1_accuracy": 1.0 - top1_error,
        "top5_accuracy": 1.0 - top5_error,
        "examples": counter.examples,
        "crops": crops,
        "checkpoint": str(run.checkpoint),
        "dataset": dataset,
        "split": split,
    }


class _Counter:
    """Iterates a dataset of (images, labels) batches, counting the labels that pass."""

    def __init__(self, batches):
        self.batches = batches
        self.examples = 0

    def __iter__(self):
        for images, labels in self.batches:
            self.examples += int(labels.shape[0])
            yield images, labels


def format_summary(result):
    """The readable lines printed above the JSON line."""
    views = "10 (corners, centre and their mirrors; softmax averaged)" if result["crops"] == 10 else "1 (centre)"
    return "\n".join(
        [
            f"Checkpoint:  {result['checkpoint']}",
            f"Data:        {result['dataset']}, split {result['split']!r}, {result['examples']} images",
            f"Crops:       {views}",
            f"Top-1:       error {result['top1_error']:.4f}   accuracy {result['top1_accuracy']:.4f}",
            f"Top-5:       error {result['top5_error']:.4f}   accuracy {result['top5_accuracy']:.4f}",
        ]
    )


@contextlib.contextmanager
def _float32_policy():
    import keras

    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float32")
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def _first_line(error):
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def define_flags(flag_values=flags.FLAGS):
    fv = dict(flag_values=flag_values)
    flags.DEFINE_string(
        "checkpoint", None, f"A run directory (uses its {CHECKPOINTS_DIR}/{BEST_WEIGHTS}) or a *{WEIGHTS_SUFFIX} "
        f"file in a run's {CHECKPOINTS_DIR}/ folder.", required=True, **fv)  # fmt: skip
    flags.DEFINE_enum("dataset", None, data.DATASETS, "Dataset to evaluate on. Default: the run's.", **fv)
    flags.DEFINE_string(
        "data_dir", None, "Folder of the dataset's files. Default: the run's, when --dataset is the run's.", **fv)
    flags.DEFINE_string("split", "test", "Split to evaluate (imagenet2012: 'validation', or 'test' for it).", **fv)
    flags.DEFINE_boolean("ten_crop", False, "Average the softmax over the paper's ten views of each image.", **fv)
    flags.DEFINE_integer("batch_size", 100, "Images per batch (ten views each with --ten_crop).", lower_bound=1, **fv)
    flags.DEFINE_boolean("verbose", False, "Show Python tracebacks on errors.", **fv)


def main(argv):
    FLAGS = flags.FLAGS
    cli.refuse_extra_arguments(argv)
    if not FLAGS.verbose:
        logging.set_verbosity(logging.WARNING)
    with cli.one_line_errors(FLAGS.verbose):
        result = evaluate_checkpoint(
            FLAGS.checkpoint,
            dataset=FLAGS.dataset,
            data_dir=FLAGS.data_dir,
            split=FLAGS.split,
            ten_crop=FLAGS.ten_crop,
            batch_size=FLAGS.batch_size,
        )
    print(format_summary(result))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    define_flags()
    app.run(main, flags_parser=cli.parse_flags)
