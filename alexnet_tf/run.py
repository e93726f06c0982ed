"""The run directory: where a training run keeps its files, and the one owner of their layout.

    <experiments_dir>/<experiment>/<run>/
        flags.txt        flagfile that reproduces the run (python -m alexnet_tf.train --flagfile=...)
        classes.json     the class count and names the model was built for
        data.json        the data's layout and its training and held-out example counts
        run_id.txt       an id drawn when the run was started (the tf.data service's job names hold it)
        stats/           training-set mean and PCA eigen-pairs the run computed
        tensorboard/     TensorBoard event files (alexnet_tf.tensorboard_logs: training and validation/)
        checkpoints/     best.weights.h5 (lowest validation top-1 error), latest.weights.h5,
                         resume/ (the state an unfinished run continues from; removed when it finishes)
        history.csv      one row per epoch
        results.json     written when the run finishes

The rules: a run never overwrites another run. Without a run name, a
command continues the newest unfinished run of its experiment whose
recorded configuration equals its own (field by field: a field the run's
flags.txt lacks takes its default; where the input is preprocessed,
`--data_service`, does not count), and otherwise starts `run<N+1>`. With a
name, it continues that run if it is unfinished and was started with the
same configuration, starts it if it does not exist, and refuses otherwise.

The files a kill must not leave half-written (flags.txt, classes.json,
stats.json, results.json, the checkpoints, the resume state) are written
beside their destination and renamed over it.
"""

import csv
import dataclasses
import json
import math
import os
import pathlib
import re
import shutil
import time
import uuid

import numpy as np

from alexnet_tf import config as config_lib
from alexnet_tf.cli import first_line

FLAGS_FILE = "flags.txt"
CLASSES_FILE = "classes.json"
DATA_FILE = "data.json"
RUN_ID_FILE = "run_id.txt"
# How long a worker of a multi-worker run waits for the chief's run_id.txt to show on the shared volume.
RUN_ID_WAIT_S = 60.0
RESULTS_FILE = "results.json"
HISTORY_FILE = "history.csv"
STATS_DIR = "stats"
STATS_FILE = "stats.json"
MEAN_IMAGE_FILE = "mean_image.npy"
TENSORBOARD_DIR = "tensorboard"
CHECKPOINTS_DIR = "checkpoints"
RESUME_DIR = "resume"
# Model weights only, no optimizer state: the model is rebuilt from flags.txt; the state
# needed to resume (weights with optimizer state) lives in checkpoints/resume/.
BEST_WEIGHTS = "best.weights.h5"
LATEST_WEIGHTS = "latest.weights.h5"
WEIGHTS_SUFFIX = ".weights.h5"
_RUN_NAME = re.compile(r"run(\d+)$")
_STATE_NAME = re.compile(r"epoch-(\d{4})$")
_STATE_META = "meta.json"
_STATE_WEIGHTS = "state.weights.h5"


class RunError(ValueError):
    """A run directory that cannot be used for this command."""


def write_atomically(path, text):
    """Writes `text` to `path` through a temporary file renamed over it."""
    path = pathlib.Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def config_differences(recorded, requested):
    """The flags on which two `TrainConfig`s differ, as '--name=recorded (this command: requested)';
    fields that only say where the work runs (`config.PLACEMENT_FIELDS`) do not count."""
    return [
        f"{_as_flag(field.name, getattr(recorded, field.name))} (this command: "
        f"{_as_flag(field.name, getattr(requested, field.name), value_only=True)})"
        for field in dataclasses.fields(config_lib.TrainConfig)
        if field.name not in config_lib.PLACEMENT_FIELDS
        and getattr(recorded, field.name) != getattr(requested, field.name)
    ]


def _as_flag(name, value, value_only=False):
    if isinstance(value, bool):
        return f"--{name}" if value else f"--no{name}"
    if value is None:
        return f"--{name} unset"
    return str(value) if value_only else f"--{name}={value}"


@dataclasses.dataclass(frozen=True)
class Choice:
    """The run a training command writes to: `resumed` when it continues an unfinished run;
    `note` says why an unfinished run of the experiment was not continued, if one was not."""

    run: "Run"
    resumed: bool
    note: str | None = None


class Run:
    """One run directory: its files' names, and reading and writing them."""

    def __init__(self, directory):
        self.directory = pathlib.Path(directory)

    def __repr__(self):
        return f"Run({str(self.directory)!r})"

    def __eq__(self, other):
        return isinstance(other, Run) and self.directory == other.directory

    def __hash__(self):
        return hash(self.directory)

    name = property(lambda self: self.directory.name)
    flags_file = property(lambda self: self.directory / FLAGS_FILE)
    classes_file = property(lambda self: self.directory / CLASSES_FILE)
    data_file = property(lambda self: self.directory / DATA_FILE)
    run_id_file = property(lambda self: self.directory / RUN_ID_FILE)
    results_file = property(lambda self: self.directory / RESULTS_FILE)
    history_file = property(lambda self: self.directory / HISTORY_FILE)
    stats_dir = property(lambda self: self.directory / STATS_DIR)
    tensorboard_dir = property(lambda self: self.directory / TENSORBOARD_DIR)
    checkpoints_dir = property(lambda self: self.directory / CHECKPOINTS_DIR)
    resume_dir = property(lambda self: self.directory / CHECKPOINTS_DIR / RESUME_DIR)
    best_weights = property(lambda self: self.directory / CHECKPOINTS_DIR / BEST_WEIGHTS)
    latest_weights = property(lambda self: self.directory / CHECKPOINTS_DIR / LATEST_WEIGHTS)

    # ------------------------------------------------------------------ which run

    @classmethod
    def for_training(cls, experiment_dir, config, name=None):
        """The run a training command with `config` writes to, as a `Choice`. Creates nothing;
        `claim` does, once the command's input has been checked."""
        experiment_dir = pathlib.Path(experiment_dir)
        if name is not None:
            if not name or "/" in name or name in (".", ".."):
                raise RunError(f"--run={name!r} is not a usable run name; use letters, digits, '-' or '_'.")
            run = cls(experiment_dir / name)
            if not run.directory.exists():
                return Choice(run, False)
            if not run.flags_file.is_file():
                raise RunError(f"{run.directory} exists but is not a run (it has no {FLAGS_FILE}); pick another --run name.")
            if run.is_finished():
                raise RunError(
                    f"run {run.directory} has already finished (see its {RESULTS_FILE}); "
                    "omit --run to start a new run, or pick another name."
                )
            differences = run.differences_from(config)
            if differences:
                raise RunError(
                    f"run {run.directory} was started with other flags: {'; '.join(differences)}. "
                    f"Continue it with --flagfile={run.flags_file}, or omit --run to start a new run."
                )
            return Choice(run, True)
        numbered = cls._numbered(experiment_dir)
        note = None
        for run in reversed(numbered):
            if run.is_finished():
                continue
            differences = run.differences_from(config)
            if not differences:
                return Choice(run, True, note)
            if note is None:
                note = f"Not continuing the unfinished run {run.directory}: other flags: {'; '.join(differences)}."
        next_number = 1 + max((int(_RUN_NAME.match(run.name).group(1)) for run in numbered), default=0)
        return Choice(cls(experiment_dir / f"run{next_number}"), False, note)

    @staticmethod
    def _numbered(experiment_dir):
        found = []
        if experiment_dir.is_dir():
            for child in experiment_dir.iterdir():
                match = _RUN_NAME.match(child.name)
                if match and child.is_dir():
                    found.append((int(match.group(1)), Run(child)))
        return [run for _, run in sorted(found, key=lambda item: item[0])]

    def claim(self, config, class_names):
        """Creates this new run's directory and records its flags and classes."""
        try:
            self.directory.mkdir(parents=True, exist_ok=False)
            write_atomically(self.flags_file, config_lib.to_flagfile(config))
            self.record_classes(class_names)
            self.record_run_id()
        except OSError as error:
            raise OSError(
                f"cannot create the run directory {self.directory} ({error.strerror or error}); "
                "choose a writable --experiments_dir."
            ) from error

    def record_run_id(self):
        """Draws and records the run's id: a run deleted and started again under the same path
        gets a new one, so it shares no tf.data service job or dataset with its predecessor."""
        write_atomically(self.run_id_file, uuid.uuid4().hex + "\n")

    def run_id(self):
        """The id `record_run_id` recorded, or None for a run from before it was."""
        return self.run_id_file.read_text().strip() if self.run_id_file.is_file() else None

    def wait_for_run_id(self, timeout_s=RUN_ID_WAIT_S):
        """The run's id, waiting up to `timeout_s` for it to appear: a multi-worker run's other
        workers read the id the chief wrote, on a shared volume that may show it late."""
        deadline = time.monotonic() + timeout_s
        while (run_id := self.run_id()) is None:
            if time.monotonic() > deadline:
                raise RunError(
                    f"{self.run_id_file} did not appear within {timeout_s:g} s: the chief writes it when it "
                    f"starts the run; is --experiments_dir the same shared folder on every worker?"
                )
            time.sleep(0.5)
        return run_id

    @classmethod
    def find(cls, path):
        """(run, weights file) for a path given to evaluate or predict: a run directory (its
        best checkpoint) or a `<run>/checkpoints/*.weights.h5` file."""
        path = pathlib.Path(path).expanduser()
        if not path.exists():
            raise FileNotFoundError(f"--checkpoint {path} does not exist.")
        if path.is_dir():
            run = cls(path.resolve())
            if not run.flags_file.is_file():
                raise ValueError(
                    f"--checkpoint {path} is a folder but not a run directory (it has no {FLAGS_FILE}); "
                    f"pass a run directory or one of its {CHECKPOINTS_DIR}/*{WEIGHTS_SUFFIX} files."
                )
            if not run.best_weights.is_file() and run.is_finished():
                raise FileNotFoundError(
                    f"run {path} finished, but its weights are not in the folder ({CHECKPOINTS_DIR}/{BEST_WEIGHTS}; "
                    f"weights are never committed): copy them from the machine that trained it, or train it "
                    f"again with --flagfile={run.flags_file}."
                )
            if not run.best_weights.is_file():
                raise FileNotFoundError(
                    f"run {path} has no {CHECKPOINTS_DIR}/{BEST_WEIGHTS} (it has not finished an epoch yet?); "
                    f"pass another weights file from its {CHECKPOINTS_DIR}/ folder, if any."
                )
            return run, run.best_weights
        if not path.name.endswith(WEIGHTS_SUFFIX):
            raise ValueError(
                f"--checkpoint {path} is not a checkpoint: expected a run directory or a "
                f"*{WEIGHTS_SUFFIX} file from a run's {CHECKPOINTS_DIR}/ folder."
            )
        run = cls(path.parent.parent)
        if path.parent.name != CHECKPOINTS_DIR or not run.flags_file.is_file():
            raise ValueError(
                f"--checkpoint {path} is not inside a run directory (expected <run>/{CHECKPOINTS_DIR}/"
                f"{path.name} beside <run>/{FLAGS_FILE}, which rebuilds the model)."
            )
        return cls(run.directory.resolve()), path.resolve()

    # ------------------------------------------------------------------ what it recorded

    def is_finished(self):
        return self.results_file.is_file()

    def config(self):
        """The `TrainConfig` recorded in flags.txt; a field it lacks takes today's default."""
        from absl import flags

        try:
            return config_lib.config_from_flagfile(self.flags_file)
        except flags.Error as error:  # a flags.txt edited by hand, or a flag since removed
            raise RunError(f"{self.flags_file} cannot be read as training flags: {first_line(error)}") from error

    def differences_from(self, config):
        """How `config` differs from this run's recorded one (empty when it would continue it)."""
        if not self.flags_file.is_file():
            return [f"it has no {FLAGS_FILE}"]
        try:
            recorded = self.config()
        except RunError as error:
            return [str(error)]
        return config_differences(recorded, config)

    def record_classes(self, class_names):
        names = [str(name) for name in class_names]
        write_atomically(self.classes_file, json.dumps({"num_classes": len(names), "class_names": names}) + "\n")

    def record_data(self, layout, train_examples, holdout_examples):
        """What identifies the run's held-out part without its data: the source's `layout`
        (which fixes the records' order) and the split of its training records."""
        record = {"layout": layout, "train_examples": int(train_examples), "holdout_examples": int(holdout_examples)}
        write_atomically(self.data_file, json.dumps(record) + "\n")

    def data_record(self):
        """`record_data`'s record, or None for a run from before it was recorded."""
        if not self.data_file.is_file():
            return None
        return json.loads(self.data_file.read_text())

    def class_names(self):
        """The class names recorded when the run started, or None for a run from before they were."""
        if not self.classes_file.is_file():
            return None
        return tuple(json.loads(self.classes_file.read_text())["class_names"])

    # ------------------------------------------------------------------ statistics

    def has_stats(self):
        return (self.stats_dir / STATS_FILE).is_file()

    def save_stats(self, stats):
        """Writes stats.json (and mean_image.npy when there is a mean image)."""
        self.stats_dir.mkdir(parents=True, exist_ok=True)
        record = {
            "mean_rgb": np.asarray(stats.mean_rgb).tolist(),
            "eigenvalues": np.asarray(stats.eigenvalues).tolist(),
            "eigenvectors": np.asarray(stats.eigenvectors).tolist(),
            "num_images": int(stats.num_images),
            "mean_image": MEAN_IMAGE_FILE if stats.mean_image is not None else None,
        }
        if stats.mean_image is not None:
            np.save(self.stats_dir / MEAN_IMAGE_FILE, np.asarray(stats.mean_image, np.float32))
        write_atomically(self.stats_dir / STATS_FILE, json.dumps(record, indent=2) + "\n")

    def load_stats(self, mean="image"):
        """The training-set statistics the run prepared its images with; the mean image (a
        git-ignored file) only when `mean` is "image", the mode that subtracts it."""
        from alexnet_tf.preprocessing import DatasetStats

        if not self.has_stats():
            raise FileNotFoundError(
                f"run {self.directory} has no {STATS_DIR}/{STATS_FILE}: its preprocessing statistics are missing."
            )
        record = json.loads((self.stats_dir / STATS_FILE).read_text())
        mean_image = record.get("mean_image") if mean == "image" else None
        if mean_image and not (self.stats_dir / mean_image).is_file():
            raise FileNotFoundError(
                f"run {self.directory} subtracts the mean image, but {STATS_DIR}/{mean_image} is missing "
                f"(it is not committed): copy it from the machine that trained the run."
            )
        return DatasetStats(
            mean_rgb=np.asarray(record["mean_rgb"], np.float32),
            eigenvalues=np.asarray(record["eigenvalues"], np.float32),
            eigenvectors=np.asarray(record["eigenvectors"], np.float32),
            num_images=int(record["num_images"]),
            mean_image=np.load(self.stats_dir / mean_image) if mean_image else None,
        )

    # ------------------------------------------------------------------ history and results

    def read_history(self):
        """Rows of history.csv as dicts of floats, one per epoch (a repeated epoch keeps its last row)."""
        if not self.history_file.is_file():
            return []
        by_epoch = {}
        with self.history_file.open() as f:
            for row in csv.DictReader(f):
                try:
                    # A run resumed by a newer version may log a column its header lacks: csv puts it under None.
                    # Keras's CSVLogger writes NA for a column an epoch did not log (all the val_
                    # columns of a run that holds out nothing).
                    by_epoch[int(row["epoch"])] = {
                        k: float(v) for k, v in row.items() if k is not None and v not in ("", "NA", None)
                    }
                except (KeyError, ValueError):
                    continue
        return [by_epoch[e] for e in sorted(by_epoch)]

    def write_results(self, results):
        write_atomically(self.results_file, json.dumps(results, indent=2) + "\n")

    def read_results(self):
        return json.loads(self.results_file.read_text())

    # ------------------------------------------------------------------ weights and the resume state

    def save_weights(self, model, path):
        """Writes the model's weights, without the optimizer's state, atomically.

        `model.save_weights` would also store the optimizer's variables (as
        large as the weights again for momentum SGD); a functional model over
        the same layers shares every weight but has no optimizer, and its file
        loads into a freshly built model of the same config.
        """
        import keras

        path = pathlib.Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        weights_only = keras.Model(model.inputs, model.outputs, name=model.name)
        tmp = path.with_name(path.name.replace(WEIGHTS_SUFFIX, ".tmp" + WEIGHTS_SUFFIX))
        weights_only.save_weights(tmp, overwrite=True)
        os.replace(tmp, path)

    def resume_states(self):
        """The complete saved states, oldest first."""
        if not self.resume_dir.is_dir():
            return []
        return sorted(
            path
            for path in self.resume_dir.iterdir()
            if _STATE_NAME.match(path.name) and (path / _STATE_META).is_file()
        )

    def last_saved_epoch(self):
        """The number of epochs the newest complete resume state holds, or 0."""
        states = self.resume_states()
        return int(_STATE_NAME.match(states[-1].name).group(1)) if states else 0

    def save_resume_state(self, model, epochs_done, meta, keep=2):
        """Writes weights with optimizer state and `meta` into `epoch-NNNN.partial/`, then renames it
        `epoch-NNNN/`: the newest complete state is always a consistent one."""
        final = self.resume_dir / f"epoch-{epochs_done:04d}"
        partial = final.with_name(final.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        model.save_weights(partial / _STATE_WEIGHTS)
        (partial / _STATE_META).write_text(json.dumps({**meta, "epoch": epochs_done}) + "\n")
        shutil.rmtree(final, ignore_errors=True)
        os.replace(partial, final)
        for old in self.resume_states()[:-keep]:
            shutil.rmtree(old, ignore_errors=True)

    def restore(self, model):
        """Loads the newest readable resume state into `model` (built and compiled); returns its
        meta (with "epoch") or None."""
        for state in reversed(self.resume_states()):
            try:
                meta = json.loads((state / _STATE_META).read_text())
                if not model.optimizer.built:
                    model.optimizer.build(model.trainable_variables)
                model.load_weights(state / _STATE_WEIGHTS)
                return meta
            except (OSError, ValueError) as error:  # an unreadable state: fall back to the one before
                print(f"Skipping unreadable resume state {state}: {error}", flush=True)
        return None

    def drop_resume_state(self):
        shutil.rmtree(self.resume_dir, ignore_errors=True)


def finite_or_none(value):
    """A float for JSON, or None for infinity (JSON has none)."""
    return None if value is None or math.isinf(value) else float(value)
