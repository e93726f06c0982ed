"""Evaluate a trained checkpoint: python -m alexnet_tf.evaluate --checkpoint PATH [--flags...]

    python -m alexnet_tf.evaluate --checkpoint=experiments/cifar10_lrn/run1
    python -m alexnet_tf.evaluate --checkpoint=experiments/cifar10_lrn/run1/checkpoints/latest.weights.h5
    python -m alexnet_tf.evaluate --checkpoint=RUN --ten_crop            # the paper's ten views
    python -m alexnet_tf.evaluate --checkpoint=RUN --data_dir=OTHER_CIFAR10_FOLDER
    python -m alexnet_tf.evaluate --checkpoint=RUN --split=holdout      # the run's held-out images

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
checkpoint, dataset, split and examples_trained_on. When the evaluated images
include some the run trained on (known for CIFAR-10 binary batches and the
embedded sample, whose test images are official training images), a warning
on stderr says how many.

Errors are one line on stderr. Exit status 2: a usage error (a path that is
not a run or a checkpoint, a dataset whose classes differ from the model's);
1: a missing or unreadable file, or a data problem (unknown split, missing
data).
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import json  # noqa: E402
import sys  # noqa: E402

from absl import app, flags, logging  # noqa: E402

from alexnet_tf import choices, cli, run  # noqa: E402


def format_summary(result):
    """The readable lines printed above the JSON line."""
    views = "10 (corners, centre and their mirrors; softmax averaged)" if result["crops"] == 10 else "1 (centre)"
    held_out = " (the run's held-out part of 'train')" if result["split"] == "holdout" else ""
    return "\n".join(
        [
            f"Checkpoint:  {result['checkpoint']}",
            f"Data:        {result['dataset']}, split {result['split']!r}{held_out}, {result['examples']} images",
            f"Crops:       {views}",
            f"Top-1:       error {result['top1_error']:.4f}   accuracy {result['top1_accuracy']:.4f}",
            f"Top-5:       error {result['top5_error']:.4f}   accuracy {result['top5_accuracy']:.4f}",
        ]
    )


def define_flags(flag_values=flags.FLAGS):
    fv = dict(flag_values=flag_values)
    flags.DEFINE_string(
        "checkpoint", None, f"A run directory (uses its {run.CHECKPOINTS_DIR}/{run.BEST_WEIGHTS}) or a "
        f"*{run.WEIGHTS_SUFFIX} file in a run's {run.CHECKPOINTS_DIR}/ folder.", required=True, **fv)  # fmt: skip
    flags.DEFINE_enum("dataset", None, choices.DATASETS, "Dataset to evaluate on. Default: the run's.", **fv)
    flags.DEFINE_string(
        "data_dir", None, "Folder of the dataset's files. Default: the run's, when --dataset is the run's.", **fv)
    flags.DEFINE_string(
        "split", "test", "Split to evaluate: test (imagenet2012: validation, or test for it), train, or "
        "holdout: the run's own held-out part of the training images (the trainer's rule; data laid out as "
        "the run's). On data without a validation split of its own, validation means holdout.", **fv)  # fmt: skip
    flags.DEFINE_boolean("ten_crop", False, "Average the softmax over the paper's ten views of each image.", **fv)
    flags.DEFINE_integer("batch_size", 100, "Images per batch (ten views each with --ten_crop).", lower_bound=1, **fv)
    flags.DEFINE_boolean("verbose", False, "Show Python tracebacks on errors.", **fv)


def main(argv):
    FLAGS = flags.FLAGS
    cli.refuse_extra_arguments(argv)
    if not FLAGS.verbose:
        logging.set_verbosity(logging.WARNING)
    with cli.one_line_errors(FLAGS.verbose):
        from alexnet_tf import evaluation

        result = evaluation.evaluate_checkpoint(
            FLAGS.checkpoint,
            dataset=FLAGS.dataset,
            data_dir=FLAGS.data_dir,
            split=FLAGS.split,
            ten_crop=FLAGS.ten_crop,
            batch_size=FLAGS.batch_size,
        )
    if result["examples_trained_on"]:
        print(
            f"warning: {result['examples_trained_on']} of the {result['examples']} images evaluated were in "
            f"the training part of run {FLAGS.checkpoint}: this error is not a held-out figure.",
            file=sys.stderr,
        )
    print(format_summary(result))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    define_flags()
    app.run(main, flags_parser=cli.parse_flags)
