"""Run directories: where a training run keeps its files, and which run a command continues.

    <experiments_dir>/<experiment>/<run>/
        flags.txt        flagfile that reproduces the run (python -m alexnet_tf.train --flagfile=...)
        stats/           training-set mean and PCA eigen-pairs the run computed
        tensorboard/     TensorBoard event files (train/, validation/, hparams)
        checkpoints/     best.weights.h5 (lowest validation top-1 error), latest.weights.h5,
                         resume/ (the state an unfinished run continues from; removed when it finishes)
        history.csv      one row per epoch
        results.json     written when the run finishes

The rules: a run never overwrites another run. Without `--run`, a command
continues the newest unfinished run of its experiment whose recorded flags
are the same as its own, and otherwise starts `run<N+1>`. With `--run=NAME`,
it continues NAME if NAME is unfinished and was started with the same flags,
starts NAME if it does not exist, and refuses otherwise.
"""

import json
import pathlib
import re

FLAGS_FILE = "flags.txt"
RESULTS_FILE = "results.json"
_RUN_NAME = re.compile(r"run(\d+)$")


class RunError(ValueError):
    """A run directory that cannot be used for this command."""


def is_finished(run_dir):
    return (pathlib.Path(run_dir) / RESULTS_FILE).is_file()


def recorded_flags(run_dir):
    path = pathlib.Path(run_dir) / FLAGS_FILE
    return path.read_text() if path.is_file() else None


def _numbered_runs(experiment_dir):
    runs = []
    if experiment_dir.is_dir():
        for child in experiment_dir.iterdir():
            match = _RUN_NAME.match(child.name)
            if match and child.is_dir():
                runs.append((int(match.group(1)), child))
    return [path for _, path in sorted(runs)]


def resolve_run_dir(experiment_dir, flagfile_text, run=None):
    """Picks the run directory for a command: (path, resumed).

    Creates nothing; `claim_run_dir` does, once the command's input has been checked.
    """
    experiment_dir = pathlib.Path(experiment_dir)
    if run is not None:
        if not run or "/" in run or run in (".", ".."):
            raise RunError(f"--run={run!r} is not a usable run name; use letters, digits, '-' or '_'.")
        run_dir = experiment_dir / run
        if not run_dir.exists():
            return run_dir, False
        if is_finished(run_dir):
            raise RunError(
                f"run {run_dir} has already finished (see its {RESULTS_FILE}); "
                "omit --run to start a new run, or pick another name."
            )
        if recorded_flags(run_dir) != flagfile_text:
            raise RunError(
                f"run {run_dir} was started with other flags (see its {FLAGS_FILE}); "
                "continue it with --flagfile=<that file>, or omit --run to start a new run."
            )
        return run_dir, True
    runs = _numbered_runs(experiment_dir)
    for run_dir in reversed(runs):
        if not is_finished(run_dir) and recorded_flags(run_dir) == flagfile_text:
            return run_dir, True
    next_number = 1 + max((int(_RUN_NAME.match(p.name).group(1)) for p in runs), default=0)
    return experiment_dir / f"run{next_number}", False


def claim_run_dir(run_dir, flagfile_text):
    """Creates a new run directory and records its flags (atomically: a half-written
    flags file is never left behind)."""
    run_dir = pathlib.Path(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=False)
        write_atomically(run_dir / FLAGS_FILE, flagfile_text)
    except OSError as error:
        raise OSError(
            f"cannot create the run directory {run_dir} ({error.strerror or error}); "
            "choose a writable --experiments_dir."
        ) from error


def write_atomically(path, text):
    path = pathlib.Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def write_results(run_dir, results):
    write_atomically(pathlib.Path(run_dir) / RESULTS_FILE, json.dumps(results, indent=2) + "\n")


def read_results(run_dir):
    return json.loads((pathlib.Path(run_dir) / RESULTS_FILE).read_text())
