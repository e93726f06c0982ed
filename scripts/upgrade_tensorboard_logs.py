"""Rewrites the TensorBoard logs of runs made before `alexnet_tf.tensorboard_logs` into its layout.

    python scripts/upgrade_tensorboard_logs.py experiments/          # every run below
    python scripts/upgrade_tensorboard_logs.py experiments/subset_lrn/run1

Old runs wrote four log folders (tensorboard/ with an HParams record whose trial id was
the bare run name, train/, images/, validation/); the layout now is two: tensorboard/
(training scalars, images under images/, the HParams record with trial id
<experiment>/<run>, the final errors under final/) and validation/. For each finished
run in the old layout this moves train/'s and images/'s event files up, renames the
image tags, and writes the HParams record and final errors again from the run's
flags.txt and results.json. A run already in the new layout is left as it is.
"""

import json
import os
import pathlib
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # run from anywhere, as make's scripts are

import tensorflow as tf  # noqa: E402
from tensorboard.compat.proto import event_pb2  # noqa: E402

from alexnet_tf import tensorboard_logs  # noqa: E402
from alexnet_tf.run import RESULTS_FILE, Run  # noqa: E402

OLD_IMAGE_TAGS = {"augmented_training_images": "images/augmented_training", "conv1_filters": "images/conv1_filters"}
OLD_FOLDERS = ("train", "images")


def events(path):
    return [event_pb2.Event.FromString(record.numpy()) for record in tf.data.TFRecordDataset(str(path))]


def upgrade(run_dir):
    """Upgrades one finished run's logs; returns what was done, in words."""
    logs = Run(run_dir).tensorboard_dir
    if not (logs / "train").is_dir():
        return "already in the current layout"
    if not (run_dir / RESULTS_FILE).is_file():
        return "not finished: upgrade it once it has (a resumed old run keeps writing the old layout)"
    for old_record in logs.glob("events.out.tfevents.*"):  # the HParams record with the bare run name
        tags = {value.tag for event in events(old_record) for value in event.summary.value}
        if not all(tag.startswith("_hparams_") for tag in tags):
            raise SystemExit(f"error: {old_record} holds more than an HParams record ({sorted(tags)}); not upgraded.")
        old_record.unlink()
    for folder in OLD_FOLDERS:
        for path in sorted((logs / folder).glob("*")) if (logs / folder).is_dir() else []:
            renamed = events(path)
            for event in renamed:
                for value in event.summary.value:
                    value.tag = OLD_IMAGE_TAGS.get(value.tag, value.tag)
            with tf.io.TFRecordWriter(str(logs / path.name)) as writer:
                for event in renamed:
                    writer.write(event.SerializeToString())
            path.unlink()
        if (logs / folder).is_dir():
            (logs / folder).rmdir()
    run = Run(run_dir)
    tensorboard_logs.write_hparams(logs, run.config().hparams(), tensorboard_logs.trial_id(run_dir))
    results = json.loads(run.results_file.read_text())
    tensorboard_logs.write_final_errors(logs, results, step=max(results["epochs"] - 1, 0))
    return "upgraded"


def main(paths):
    if not paths:
        raise SystemExit(__doc__.split("\n\n")[1])
    for path in map(pathlib.Path, paths):
        run_dirs = [path] if (path / "flags.txt").is_file() else sorted(p.parent for p in path.glob("**/flags.txt"))
        for run_dir in run_dirs:
            print(f"{run_dir}: {upgrade(run_dir)}")


if __name__ == "__main__":
    main(sys.argv[1:])
