"""Writes the experiments' report: a table and a plot per study, from the runs' results.json.

    python -m alexnet_tf.report [--experiments_dir=experiments] [--output=experiments/README.md]
    make report

An experiment is `experiments/<name>.flags`; its runs are `experiments/<name>/run<N>/`,
and a finished run has a `results.json` (written by the trainer, with its per-epoch
curves). A flagfile's header comment may name studies (`# Study: <title>` lines);
the experiments of one study share a table and a plot (validation top-1 error against
epochs; training error for the four-layer net of the paper's Figure 1, with the
epochs until it first reaches 25%). Nothing is trained: the report reads only
the committed results, so it can be regenerated anywhere.
"""

import dataclasses
import json
import math
import pathlib
import re

# The paper's Figure 1 counts the epochs until the training error reaches 25%.
FIGURE1_TRAIN_ERROR = 0.25
STUDY_LINE = re.compile(r"^#\s*Study:\s*(?P<title>.+?)\s*$")
# Settings shown in a study's table when they differ between its runs.
SETTING_LABELS = {
    "model": "model",
    "norm": "norm",
    "towers": "towers",
    "activation": "activation",
    "init": "init",
    "learning_rate": "lr",
    "batch_size": "batch",
    "image_size": "size",
    "mixed_precision": "precision",
    "augment": "augment",
    "pca_std": "PCA std",
    "seed": "seed",
}


@dataclasses.dataclass
class Run:
    experiment: str
    name: str
    results: dict

    @property
    def hparams(self):
        return self.results.get("hparams", {})

    @property
    def curves(self):
        return self.results.get("curves", {})

    @property
    def label(self):
        return f"{self.experiment}/{self.name}"


@dataclasses.dataclass
class Experiment:
    name: str
    description: list  # the flagfile's header comment, line by line
    studies: list  # the studies it belongs to (its own name when its flagfile names none)
    runs: list


def read_header(flagfile):
    """(study titles, the description) of an experiment's flagfile: the header comment's
    lines up to its "Run:" line (the command and expected result are the report's own)."""
    studies, lines, described = [], [], True
    for line in pathlib.Path(flagfile).read_text().splitlines():
        if not line.startswith("#"):
            break
        text = line[1:].strip()
        match = STUDY_LINE.match(line)
        if match:
            studies.append(match["title"])
        elif re.match(r"(Run|Result|Expected)\b", text):
            described = False
        elif described:
            lines.append(text)
    return studies, lines


def find_experiments(experiments_dir):
    """Every experiment (flagfile) under `experiments_dir` with at least one finished run, by name."""
    experiments_dir = pathlib.Path(experiments_dir)
    found = []
    for flagfile in sorted(experiments_dir.glob("*.flags")):
        name = flagfile.stem
        runs = []
        for results_path in sorted((experiments_dir / name).glob("run*/results.json"), key=_run_order):
            try:
                results = json.loads(results_path.read_text())
            except (OSError, json.JSONDecodeError) as error:
                raise ValueError(f"{results_path} is not readable JSON ({error}); re-run that run or remove it.")
            runs.append(Run(name, results_path.parent.name, results))
        if runs:
            studies, description = read_header(flagfile)
            found.append(Experiment(name, description, studies or [name], runs))
    return found


def _run_order(results_path):
    digits = re.sub(r"\D", "", results_path.parent.name)
    return (int(digits) if digits else math.inf, results_path.parent.name)


def group_by_study(experiments):
    """{study title: [experiments]}, in the order the studies are first met; an experiment
    whose flagfile names several studies is in each."""
    studies = {}
    for experiment in experiments:
        for study in experiment.studies:
            studies.setdefault(study, []).append(experiment)
    return studies


def epochs_to_reach(curve, threshold):
    """The first epoch (1-based) whose value is <= threshold, or None if none is."""
    for epoch, value in enumerate(curve or [], start=1):
        if value is not None and value <= threshold:
            return epoch
    return None


def varied_settings(runs):
    """The hparams whose values differ between `runs`, in SETTING_LABELS's order."""
    return [key for key in SETTING_LABELS if len({repr(run.hparams.get(key)) for run in runs}) > 1]


def figure1_ratio(runs):
    """Epochs to 25% training error, tanh over ReLU, each at its fastest run (the paper
    chose each net's learning rate to make it train fastest), as (ratio, is_lower_bound,
    relu run, tanh run); or None when ReLU never reached it or tanh has no run.

    When no tanh run reached 25%, the ratio is a lower bound: the longest tanh run's
    epochs over ReLU's."""
    fastest, longest_tanh = {}, None
    for run in runs:
        curve = run.curves.get("top1_error") or []
        epochs = epochs_to_reach(curve, FIGURE1_TRAIN_ERROR)
        activation = run.hparams.get("activation")
        if activation == "tanh" and (longest_tanh is None or len(curve) > len(longest_tanh.curves.get("top1_error") or [])):
            longest_tanh = run
        if epochs is not None and (activation not in fastest or epochs < fastest[activation][0]):
            fastest[activation] = (epochs, run)
    if "relu" not in fastest or longest_tanh is None:
        return None
    relu_epochs, relu_run = fastest["relu"]
    if "tanh" in fastest:
        return fastest["tanh"][0] / relu_epochs, False, relu_run, fastest["tanh"][1]
    return len(longest_tanh.curves["top1_error"]) / relu_epochs, True, relu_run, longest_tanh


def _percent(value):
    return "–" if value is None else f"{100 * value:.1f}"


def _number(value, digits=0):
    return "–" if value is None else f"{value:.{digits}f}"


def _setting(value):
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def study_table(runs):
    """The Markdown table of one study's runs."""
    varied = varied_settings(runs)
    four_layer = any(run.hparams.get("model") == "four_layer" for run in runs)
    header = ["run"] + [SETTING_LABELS[key] for key in varied] + ["epochs"]
    if four_layer:
        header += [f"epochs to {100 * FIGURE1_TRAIN_ERROR:.0f}% train error", "final train top-1 err %"]
    header += ["best val top-1 err %", "best val top-5 err %", "at epoch", "images/s", "wall min"]
    rows = []
    for run in runs:
        r = run.results
        row = [f"`{run.label}`"] + [_setting(run.hparams.get(key)) for key in varied] + [str(r.get("epochs"))]
        if four_layer:
            train_error = run.curves.get("top1_error") or []
            reached = epochs_to_reach(train_error, FIGURE1_TRAIN_ERROR)
            row += [
                str(reached) if reached else f"not in {len(train_error)}",
                _percent(train_error[-1] if train_error else None),
            ]
        row += [
            _percent(r.get("best_validation_top1_error")),
            _percent(r.get("best_validation_top5_error")),
            str(r.get("best_epoch") or "–"),
            _number(r.get("images_per_s")),
            _number(r["wall_time_s_this_process"] / 60, 1) if r.get("wall_time_s_this_process") else "–",
        ]
        rows.append(row)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _slug(title):
    """A file name for a study's plot: its title up to any parenthesis, in lower-case words."""
    return re.sub(r"[^a-z0-9]+", "-", title.split("(")[0].lower()).strip("-") or "study"


def plot_study(title, runs, path):
    """A PNG of the study's learning curves: validation top-1 error per epoch, or the
    training error for the four-layer net (the paper's Figure 1)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    four_layer = all(run.hparams.get("model") == "four_layer" for run in runs)
    key = "top1_error" if four_layer else "val_top1_error"
    varied = varied_settings(runs)
    figure, axes = pyplot.subplots(figsize=(7, 4.2), dpi=100)
    for run in runs:
        curve = run.curves.get(key) or []
        if not curve:
            continue
        settings = ", ".join(f"{SETTING_LABELS[k]}={_setting(run.hparams.get(k))}" for k in varied)
        style = "--" if run.hparams.get("activation") == "tanh" else "-"
        axes.plot(range(1, len(curve) + 1), curve, style, label=f"{run.label}" + (f" ({settings})" if settings else ""))
    if four_layer:
        axes.axhline(FIGURE1_TRAIN_ERROR, color="grey", linewidth=0.8)
    axes.set_xlabel("epoch")
    axes.set_ylabel("training error rate" if four_layer else "validation top-1 error")
    axes.set_ylim(0, 1)
    axes.set_title(title, fontsize=10)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    pyplot.close(figure)


def machines(runs):
    described = set()
    for run in runs:
        m = run.results.get("machine", {})
        gpus = ", ".join(m.get("gpus") or []) or "no GPU"
        described.add(
            f"{m.get('cpu_count', '?')} CPU cores, {gpus}; TensorFlow {m.get('tensorflow', '?')}, "
            f"Keras {m.get('keras', '?')}"
        )
    return sorted(described)


def render(experiments, plots_dir, output):
    """The report's Markdown; writes the plots into `plots_dir` as it goes."""
    output = pathlib.Path(output)
    lines = [
        "# Experiment results",
        "",
        "Written by `make report` (`python -m alexnet_tf.report`) from the `results.json` of every",
        "finished run under `experiments/`; do not edit by hand. Each figure below comes from",
        "one of those files; re-run an experiment with `make experiment NAME=<experiment>",
        "DATA_DIR=<CIFAR-10 folder>`.",
        "",
    ]
    for title, members in group_by_study(experiments).items():
        runs = [run for experiment in members for run in experiment.runs]
        lines += [f"## {title}", ""]
        for experiment in members:
            about = " ".join(line for line in experiment.description if line)
            lines += [
                f"- `experiments/{experiment.name}.flags`" + (f": {about}" if about else ""),
                f"  Run: `make experiment NAME={experiment.name} DATA_DIR=<CIFAR-10 folder>`",
            ]
        lines += ["", study_table(runs), ""]
        if any(run.hparams.get("model") == "four_layer" for run in runs):
            ratio = figure1_ratio(runs)
            target = f"{100 * FIGURE1_TRAIN_ERROR:.0f}% training error"
            if ratio is None:
                lines += [f"No ReLU run (or no tanh run) reached {target}: no ratio.", ""]
            elif ratio[1]:
                value, _, relu_run, tanh_run = ratio
                lines += [
                    f"Epochs to {target}, tanh / ReLU: no tanh run reached it, so at least **{value:.1f}×** "
                    f"(the longest tanh run, `{tanh_run.label}`, over ReLU's fastest, `{relu_run.label}`; "
                    f"the paper: about 6×).",
                    "",
                ]
            else:
                value, _, relu_run, tanh_run = ratio
                lines += [
                    f"Epochs to {target}, tanh / ReLU (each at its fastest learning rate: `{tanh_run.label}`, "
                    f"`{relu_run.label}`): **{value:.1f}×** (the paper: about 6×).",
                    "",
                ]
        plot_path = pathlib.Path(plots_dir) / f"{_slug(title)}.png"
        plot_study(title, runs, plot_path)
        lines += [f"![{title}]({_relative(plot_path, output.parent)})", ""]
        lines += ["Machine: " + "; ".join(machines(runs)) + ".", ""]
    return "\n".join(lines)


def _relative(path, start):
    import os

    return pathlib.Path(os.path.relpath(pathlib.Path(path).resolve(), pathlib.Path(start).resolve())).as_posix()


def write_report(experiments_dir="experiments", output=None, plots_dir=None):
    """Writes the report (and its plots); returns the output path."""
    experiments_dir = pathlib.Path(experiments_dir)
    if not experiments_dir.is_dir():
        raise ValueError(f"{experiments_dir} is not a folder; give --experiments_dir=<the experiments folder>.")
    output = pathlib.Path(output) if output else experiments_dir / "README.md"
    plots_dir = pathlib.Path(plots_dir) if plots_dir else experiments_dir / "plots"
    experiments = find_experiments(experiments_dir)
    if not experiments:
        raise ValueError(f"no finished runs (run*/results.json beside a .flags file) under {experiments_dir}.")
    text = render(experiments, plots_dir, output)
    temporary = output.with_name(output.name + ".tmp")
    temporary.write_text(text)
    temporary.replace(output)
    return output


def main(argv):
    import sys

    from absl import flags

    from alexnet_tf import cli

    cli.refuse_extra_arguments(argv)
    values = flags.FLAGS
    try:
        path = write_report(values.experiments_dir, values.output)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(cli.EXIT_USAGE)
    print(f"Wrote {path}")


if __name__ == "__main__":
    from absl import app, flags

    from alexnet_tf import cli

    flags.DEFINE_string("experiments_dir", "experiments", "The experiments folder to report on.")
    flags.DEFINE_string("output", None, "The report's path (default: <experiments_dir>/README.md).")
    app.run(main, flags_parser=cli.parse_flags)
