"""Writes the experiments' report: a table and a plot per study, from the runs' results.json.

    python -m alexnet_tf.report [--experiments_dir=experiments] [--output=experiments/README.md]
    make report

An experiment is `experiments/<name>.flags`; its runs are `experiments/<name>/run<N>/`,
and a finished run has a `results.json` (written by the trainer, with its per-epoch
curves). A flagfile's header comment may name studies (`# Study: <title>` lines);
the experiments of one study share a table and a plot (validation top-1 error against
epochs; training error for the four-layer net of the paper's Figure 1, with the
epochs until it first reaches 25%), each experiment in one colour throughout the report
and a triangle on the first epoch after each cut of a run's learning rate. Nothing is
trained: the report reads only the committed results, so it can be regenerated anywhere.
"""

import dataclasses
import json
import math
import pathlib
import re
import shutil
import statistics

from alexnet_tf import claims

# The paper's Figure 1 counts the epochs until the training error reaches 25%.
FIGURE1_TRAIN_ERROR = 0.25
STUDY_LINE = re.compile(r"^#\s*Study:\s*(?P<title>.+?)\s*$")
# Settings shown in a study's table when they differ between its runs.
SETTING_LABELS = {
    "model": "model",
    "norm": "norm",
    "towers": "towers",
    "width": "width",
    "pooling": "pooling",
    "activation": "activation",
    "init": "init",
    "learning_rate": "lr",
    "lr_schedule": "schedule",
    "batch_size": "batch",
    "image_size": "size",
    "mixed_precision": "precision",
    "dropout": "dropout",
    "augment": "augment",
    "crop_padding": "crop padding",
    "pca_std": "PCA std",
    "label_smoothing": "label smoothing",
    "seed": "seed",
}
# Settings added after some committed runs were made: a run without one was made before it
# existed, with the behaviour its default keeps.
SETTING_DEFAULTS = {"width": "full", "pooling": "overlapping", "dropout": 0.5, "crop_padding": 0, "label_smoothing": 0.0}


@dataclasses.dataclass
class FinishedRun:
    experiment: str
    name: str
    results: dict
    data: dict = dataclasses.field(default_factory=dict)  # the run's data.json: {} when it has none
    step_cap: int | None = None  # the run's --steps_per_epoch, from its flags.txt

    @property
    def hparams(self):
        return {**SETTING_DEFAULTS, **self.results.get("hparams", {})}

    @property
    def steps_per_epoch(self):
        """Training steps per epoch: whole batches of the training part (data.json), at most the
        run's --steps_per_epoch; None for a run without data.json."""
        examples, batch = self.data.get("train_examples"), self.hparams.get("batch_size")
        if not examples or not batch:
            return None
        return min(examples // batch, self.step_cap or math.inf)

    @property
    def curves(self):
        return self.results.get("curves", {})

    @property
    def label(self):
        return f"{self.experiment}/{self.name}"


@dataclasses.dataclass
class Experiment:
    name: str
    description: list  # the flagfile's header comment up to its "Run:" line
    commands: list  # the header's "Run:" line and the "or:" lines after it
    studies: list  # the studies it belongs to (its own name when its flagfile names none)
    runs: list


def read_header(flagfile):
    """(study titles, description lines, command lines) of an experiment's flagfile header.

    The description is the comment up to a "Run:" line; the commands are that line and
    any "or:" lines right after it; a "Result:" or "Expected:" line ends both."""
    studies, description, commands, part = [], [], [], "description"
    for line in pathlib.Path(flagfile).read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        text = line[1:].strip()
        match = STUDY_LINE.match(line)
        if match:
            studies.append(match["title"])
        elif re.match(r"Run:", text) or (part == "commands" and re.match(r"or:", text)):
            part = "commands"
            commands.append(re.sub(r"^(Run|or):\s*", "", text))
        elif re.match(r"(Run|Result|Expected):", text) or part == "commands":
            part = "done"
        elif part == "description":
            description.append(text)
    return studies, description, commands


def find_experiments(experiments_dir):
    """Every experiment (flagfile) under `experiments_dir` with at least one finished run, by name."""
    experiments_dir = pathlib.Path(experiments_dir)
    found = []
    for flagfile in sorted(experiments_dir.glob("*.flags")):
        name = flagfile.stem
        runs = []
        for results_path in sorted((experiments_dir / name).glob("run*/results.json"), key=_run_order):
            try:
                results = json.loads(results_path.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError) as error:
                raise ValueError(f"{results_path} is not readable JSON ({error}); re-run that run or remove it.")
            data_path, flags_path = results_path.with_name("data.json"), results_path.with_name("flags.txt")
            data = json.loads(data_path.read_text(encoding="utf-8")) if data_path.is_file() else {}
            cap = re.search(r"^--steps_per_epoch=(\d+)$", flags_path.read_text(encoding="utf-8"), re.M) if flags_path.is_file() else None
            runs.append(FinishedRun(name, results_path.parent.name, results, data, int(cap[1]) if cap else None))
        if runs:
            studies, description, commands = read_header(flagfile)
            found.append(Experiment(name, description, commands, studies or [name], runs))
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


def is_four_layer(run):
    return run.hparams.get("model") == "four_layer"


@dataclasses.dataclass
class Figure1Ratio:
    """tanh's epochs to 25% training error over ReLU's, each at its fastest learning rate
    (the paper chose each net's learning rate to make it train fastest)."""

    relu_epochs: int
    relu_run: FinishedRun
    tanh_epochs: int | None  # None: no tanh run reached 25%
    tanh_run: FinishedRun | None  # the fastest tanh run; or, when none reached 25%, the shortest one
    tanh_min_epochs: int  # tanh's fastest run needs at least this many epochs

    @property
    def value(self):
        return (self.tanh_epochs or self.tanh_min_epochs) / self.relu_epochs


def figure1_ratio(runs):
    """The `Figure1Ratio` of a study's four-layer runs, or None when no ReLU run reached
    25% training error or no tanh run has a training curve.

    A tanh run that trained N epochs without reaching 25% shows only that its learning
    rate needs more than N; so when no tanh run reached it, or one that did took longer
    than N + 1, the figure is a bound (`tanh_min_epochs`). A shorter rerun of a rate that
    reached 25% in another run, or that a longer run of it did not reach in its N, says
    nothing new about that rate and is left out."""
    fastest, unfinished_tanh, reached_tanh_rates = {}, [], set()
    for run in runs:
        curve = run.curves.get("top1_error") or []
        if not is_four_layer(run) or not curve:
            continue
        activation, rate = run.hparams.get("activation"), run.hparams.get("learning_rate")
        epochs = epochs_to_reach(curve, FIGURE1_TRAIN_ERROR)
        if epochs is None:
            if activation == "tanh":
                unfinished_tanh.append((len(curve), run))
        else:
            if activation == "tanh" and rate is not None:  # runs of unknown rate are not reruns
                reached_tanh_rates.add(rate)
            if activation not in fastest or epochs < fastest[activation][0]:
                fastest[activation] = (epochs, run)
    longest_unfinished = {}  # per learning rate (runs of unknown rate each on their own): its longest run
    for n, run in unfinished_tanh:
        rate = run.hparams.get("learning_rate")
        key = ("rate", rate) if rate is not None else ("run", id(run))
        if rate not in reached_tanh_rates and (key not in longest_unfinished or n > longest_unfinished[key][0]):
            longest_unfinished[key] = (n, run)
    unfinished_tanh = list(longest_unfinished.values())
    if "relu" not in fastest or ("tanh" not in fastest and not unfinished_tanh):
        return None
    relu_epochs, relu_run = fastest["relu"]
    shortest = min(unfinished_tanh, key=lambda item: item[0], default=None)
    if "tanh" in fastest:
        tanh_epochs, tanh_run = fastest["tanh"]
        lower = min(tanh_epochs, shortest[0] + 1) if shortest else tanh_epochs
        return Figure1Ratio(relu_epochs, relu_run, tanh_epochs, tanh_run, lower)
    return Figure1Ratio(relu_epochs, relu_run, None, shortest[1], shortest[0] + 1)


def loss_gap(a, b):
    """(epochs, mean, largest) |difference| of two runs' per-epoch training loss over the
    epochs both have, or None when they share none."""
    pairs = [
        (x, y)
        for x, y in zip(a.curves.get("loss") or [], b.curves.get("loss") or [])
        if x is not None and y is not None
    ]
    if not pairs:
        return None
    gaps = [abs(x - y) for x, y in pairs]
    return len(gaps), statistics.mean(gaps), max(gaps)


def _settings_except(run, *keys):
    return tuple((key, repr(run.hparams.get(key))) for key in SETTING_LABELS if key not in keys)


def precision_sentences(runs):
    """When a study's runs differ in precision: one sentence per pair of runs that differ
    only in precision, comparing their training-loss curves, and one per pair of float32
    runs that differ only in seed, the noise to judge those gaps by."""
    if "mixed_precision" not in varied_settings(runs):
        return []
    float32 = [run for run in runs if run.hparams.get("mixed_precision") == "float32"]
    pairs = [
        (low, reference, f"{low.hparams.get('mixed_precision')} vs float32, nothing else changed")
        for low in runs
        if low not in float32
        for reference in float32
        if _settings_except(low, "mixed_precision") == _settings_except(reference, "mixed_precision")
    ]
    pairs += [
        (a, b, "two float32 seeds, nothing else changed")
        for i, a in enumerate(float32)
        for b in float32[i + 1 :]
        if a.hparams.get("seed") != b.hparams.get("seed")
        and _settings_except(a, "seed") == _settings_except(b, "seed")
    ]
    sentences = []
    for a, b, what in pairs:
        gap = loss_gap(a, b)
        if gap:
            epochs, mean, largest = gap
            sentences.append(
                f"Training loss per epoch, `{a.label}` vs `{b.label}` ({what}): "
                f"differs by {mean:.3f} on average, at most {largest:.3f}, over {epochs} epochs."
            )
    return sentences


def _percent(value):
    return "–" if value is None else f"{100 * value:.1f}"


def _number(value, digits=0):
    return "–" if value is None else f"{value:.{digits}f}"


def _setting(value):
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _cpu(run):
    name = run.results.get("machine", {}).get("cpu") or "?"
    return re.sub(r"\s+", " ", re.sub(r"\((R|TM)\)", "", name)).strip()


def study_table(runs):
    """The Markdown table of one study's runs."""
    varied = varied_settings(runs)
    four_layer = any(is_four_layer(run) for run in runs)
    # images/s and wall time are the machine's as much as the setting's: name it when it varies.
    by_cpu = len({_cpu(run) for run in runs}) > 1
    header = ["run"] + [SETTING_LABELS[key] for key in varied] + ["epochs"]
    if four_layer:
        header += [f"epochs to {100 * FIGURE1_TRAIN_ERROR:.0f}% train error", "final train top-1 err %"]
    header += ["final train loss", "best val top-1 err %", "best val top-5 err %", "at epoch"]
    header += (["CPU"] if by_cpu else []) + ["images/s", "wall min"]
    rows = []
    for run in runs:
        r = run.results
        row = [f"`{run.label}`"] + [_setting(run.hparams.get(key)) for key in varied] + [str(r.get("epochs"))]
        if four_layer and not is_four_layer(run):
            row += ["–", "–"]
        elif four_layer:
            train_error = run.curves.get("top1_error") or []
            reached = epochs_to_reach(train_error, FIGURE1_TRAIN_ERROR)
            row += [
                str(reached) if reached else f"not in {len(train_error)}",
                _percent(train_error[-1] if train_error else None),
            ]
        losses = run.curves.get("loss") or []
        row += [
            _number(losses[-1] if losses else None, 3),
            _percent(r.get("best_validation_top1_error")),
            _percent(r.get("best_validation_top5_error")),
            str(r.get("best_epoch") or "–"),
            *([_cpu(run)] if by_cpu else []),
            _number(r.get("images_per_s")),
            _number(r["wall_time_s_this_process"] / 60, 1) if r.get("wall_time_s_this_process") else "–",
        ]
        rows.append(row)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _slug(title, taken):
    """A file name for a study's plot: its title up to any parenthesis, in lower-case
    words, numbered when another study's already has it."""
    base = re.sub(r"[^a-z0-9]+", "-", title.split("(")[0].lower()).strip("-") or "study"
    slug, number = base, 2
    while slug in taken:
        slug, number = f"{base}-{number}", number + 1
    taken.add(slug)
    return slug


# tab10 without its grey, which the 25% line of Figure 1 uses.
PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf",
)  # fmt: skip
# The runs (seeds, learning rates) of one experiment share its colour and differ in line style.
RUN_LINE_STYLES = ("-", "--", ":", "-.")
FIGURE1_RATE_MARKERS = ("o", "s", "^", "D", "v", "x")
# A fall to at most this fraction of the previous epoch's learning rate is a drop: the plateau
# schedule divides by 10, and 0.5 would still catch a schedule that halves.
LEARNING_RATE_DROP = 0.5
Y_MARGIN = 0.05  # of the plotted values' range, above and below them


def experiment_colours(studies):
    """{experiment name: colour} for the experiments of `studies` (groups of experiment names).

    Assigned in sorted name order, so the same experiments and studies give the same colours
    on every regeneration, whatever order they are met in: each experiment takes the palette
    colour least used so far among those no experiment of its studies has, so the experiments
    of one plot never share a colour (up to the palette's size) and, as far as the palette
    goes, no two experiments of the report do."""
    studies = [set(names) for names in studies]
    colours, uses = {}, dict.fromkeys(PALETTE, 0)
    for name in sorted(set().union(*studies)):
        neighbours = {colours[other] for names in studies if name in names for other in names if other in colours}
        free = [colour for colour in PALETTE if colour not in neighbours] or list(PALETTE)
        colours[name] = min(free, key=lambda colour: uses[colour])  # the first such in palette order
        uses[colours[name]] += 1
    return colours


def learning_rate_drops(curve, fraction=LEARNING_RATE_DROP):
    """The epochs (1-based) of `curve`, a run's per-epoch learning rate, that are the first at a
    rate cut to at most `fraction` of the previous epoch's.

    Only a rate that held or rose for the epoch before counts: a step schedule (the plateau
    one) keeps its rate for at least an epoch before each cut, while a cosine falls every
    epoch and, near its end, by more than half per epoch (0.0015, 0.00068, 0.00017, 0 in
    cifar10_best/run1), which is a smooth decay and no drop."""
    drops = []
    for index in range(1, len(curve or [])):
        before, previous, value = (curve[index - 2] if index > 1 else None), curve[index - 1], curve[index]
        if value is None or previous is None or not previous > 0:
            continue
        # The first epoch has nothing before it; after a missing value, whether the rate held is unknown.
        held = previous >= before if before is not None else index == 1
        if held and value <= fraction * previous:
            drops.append(index + 1)
    return drops


def y_limits(curves, *, rate, include=(), margin=Y_MARGIN):
    """(bottom, top) of a panel's y-axis: the finite values of `curves` and `include` with
    `margin` of their range beyond each end, never below 0 (errors and losses are not
    negative) nor, for a `rate`, above 1; None when there is nothing to fit (matplotlib's own
    limits then)."""
    values = [value for curve in curves for value in curve if value is not None and math.isfinite(value)]
    values += list(include)
    if not values:
        return None
    low, high = min(values), max(values)
    pad = margin * ((high - low) or abs(high) or 1.0)  # a flat curve still gets a visible band
    return max(low - pad, 0.0), (min(high + pad, 1.0) if rate else high + pad)


def _run_line_styles(runs):
    """{run label: line style}: each experiment's runs, in their order, through RUN_LINE_STYLES;
    the four-layer net's as in the paper's Figure 1 (ReLU solid, tanh dashed), with a marker
    per learning rate (FIGURE1_RATE_MARKERS, in increasing order of rate)."""
    seen, styles = {}, {}
    rates = sorted({run.hparams.get("learning_rate") or 0.0 for run in runs if is_four_layer(run)})
    for run in runs:
        if is_four_layer(run):
            marker = FIGURE1_RATE_MARKERS[rates.index(run.hparams.get("learning_rate") or 0.0) % len(FIGURE1_RATE_MARKERS)]
            styles[run.label] = ("--" if run.hparams.get("activation") == "tanh" else "-") + marker
            continue
        number = seen.get(run.experiment, 0)
        seen[run.experiment] = number + 1
        styles[run.label] = RUN_LINE_STYLES[number % len(RUN_LINE_STYLES)]
    return styles


def draw_study(title, runs, colours=None):
    """The matplotlib figure of the study's learning curves: training loss and validation top-1
    error per epoch, or the training error for the four-layer net (the paper's Figure 1); and,
    when the runs recorded it, validation top-1 error against wall-clock minutes (time to
    accuracy). Each experiment is drawn in its colour from `colours` (by default, those of
    this study alone), its runs in their line styles; a triangle marks each epoch that starts
    at a dropped learning rate."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    colours = colours or experiment_colours([[run.experiment for run in runs]])
    styles = _run_line_styles(runs)
    four_layer = all(is_four_layer(run) for run in runs)
    varied = varied_settings(runs)
    if four_layer:
        panels = [("top1_error", "training error rate", True)]
    else:
        panels = [("loss", "training loss", False), ("val_top1_error", "validation top-1 error", True)]
        if any(run.curves.get("wall_minutes") for run in runs):
            panels.append(("val_top1_error", "validation top-1 error", True, "wall_minutes"))
    figure, all_axes = pyplot.subplots(1, len(panels), figsize=(7 * len(panels), 4.2), dpi=100, squeeze=False)
    for axes, (key, label, rate, *x_key) in zip(all_axes[0], panels):
        plotted, dropped = [], False
        for run in runs:
            curve = [math.nan if value is None else value for value in run.curves.get(key) or []]
            if x_key:
                x = [math.nan if value is None else value for value in run.curves.get(x_key[0]) or []]
            else:
                x = list(range(1, len(curve) + 1))
            if not curve or not x:
                continue
            settings = ", ".join(f"{SETTING_LABELS[k]}={_setting(run.hparams.get(k))}" for k in varied)
            colour = colours[run.experiment]
            axes.plot(
                x, curve, styles[run.label], color=colour, label=f"{run.label}" + (f" ({settings})" if settings else ""),
                markevery=max(1, len(curve) // 8), markersize=4,
            )  # fmt: skip
            plotted.append(curve[: len(x)])
            drops = learning_rate_drops(run.curves.get("learning_rate"))
            drops = [epoch for epoch in drops if epoch <= min(len(x), len(curve))]
            if drops:
                axes.plot(
                    [x[epoch - 1] for epoch in drops], [curve[epoch - 1] for epoch in drops], "v",
                    color=colour, markersize=7, markeredgecolor="black", markeredgewidth=0.5, label="_drop",
                )  # fmt: skip
                dropped = True
        if dropped:  # one legend entry for every run's markers
            axes.plot([], [], "v", color="white", markeredgecolor="black", label="first epoch after a learning-rate cut")
        include = ()
        if four_layer:
            include = (FIGURE1_TRAIN_ERROR,)  # so that the threshold line is always in view
            axes.axhline(FIGURE1_TRAIN_ERROR, color="grey", linewidth=0.8)
            # Under the line's left end: the early epochs' errors are still far above it.
            axes.text(
                0.01, FIGURE1_TRAIN_ERROR, f"{100 * FIGURE1_TRAIN_ERROR:.0f}% training error (the paper's threshold)",
                transform=axes.get_yaxis_transform(), ha="left", va="top", fontsize=8, color="dimgrey",
            )  # fmt: skip
        limits = y_limits(plotted, rate=rate, include=include)
        if limits:
            axes.set_ylim(*limits)
        axes.set_xlabel("wall-clock minutes" if x_key else "epoch")
        axes.set_ylabel(label)
        axes.grid(alpha=0.3)
        if axes.get_legend_handles_labels()[0]:
            axes.legend(fontsize=7)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    return figure


def plot_study(title, runs, path, colours=None):
    """Writes `draw_study`'s figure as a PNG at `path`."""
    from matplotlib import pyplot

    figure = draw_study(title, runs, colours)
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


def _epochs_and_steps(run, epochs):
    steps = run.steps_per_epoch
    return f"{epochs} epochs ({epochs * steps:,} steps)" if steps else f"{epochs} epochs"


def figure1_sweep_sentence(runs):
    """Each activation's learning rates and their epochs to 25% training error, and whether the
    fastest rate lies inside the sweep (a rate at its edge leaves open that one beyond is faster).
    Rates that never reached it rank by their training error after the epochs all of them trained:
    the rate that came closest."""
    parts, verdicts = [], []
    for activation in ("relu", "tanh"):
        curves = {}  # rate -> the training-error curves of its runs (epochs without a figure left out)
        for run in runs:
            if is_four_layer(run) and run.hparams.get("activation") == activation:
                curve = [value for value in run.curves.get("top1_error") or [] if value is not None]
                if curve:
                    curves.setdefault(run.hparams.get("learning_rate"), []).append(curve)
        if not curves:
            continue
        reached = {rate: min((epochs_to_reach(c, FIGURE1_TRAIN_ERROR) or math.inf for c in cs)) for rate, cs in curves.items()}
        unreached = {rate: cs for rate, cs in curves.items() if reached[rate] == math.inf}
        # Unreached rates compare at the same epoch, so that a longer run is not closer for its length.
        common = min((len(c) for cs in unreached.values() for c in cs), default=0)
        closeness = {rate: min(c[common - 1] for c in cs) for rate, cs in unreached.items()}
        rates = sorted(curves)
        name = "ReLU" if activation == "relu" else "tanh"

        def outcome(rate):
            if reached[rate] != math.inf:
                return str(reached[rate])
            longest = max(curves[rate], key=len)
            return f"not reached ({_percent(min(c[-1] for c in curves[rate] if len(c) == len(longest)))}% after {len(longest)})"

        parts.append(f"{name} " + ", ".join(f"{rate:g}: {outcome(rate)}" for rate in rates))
        best = min(rates, key=lambda rate: (reached[rate], closeness.get(rate, 0), rate))
        inside = len(rates) >= 3 and best not in (rates[0], rates[-1])
        if reached[best] == math.inf:
            closest = f"no {name} rate reached it; the closest after {common} epochs, {best:g}, "
            verdicts.append(closest + ("lies inside its sweep" if inside else "is at the edge of its sweep"))
        elif inside:
            verdicts.append(f"{name}'s fastest rate, {best:g}, lies inside its sweep")
        else:
            verdicts.append(f"{name}'s fastest rate, {best:g}, is at the edge of its sweep (a rate beyond it may be faster)")
    if not parts:
        return None
    verdict = "; ".join(verdicts)
    return (
        f"Learning-rate sweep, epochs to {100 * FIGURE1_TRAIN_ERROR:.0f}% training error: " + "; ".join(parts)
        + ". " + verdict[0].upper() + verdict[1:] + "."
    )


def figure1_sentence(ratio):
    target = f"{100 * FIGURE1_TRAIN_ERROR:.0f}% training error"
    if ratio is None:
        return f"No ReLU run reached {target}, or there is no tanh run: no ratio."
    relu = f"ReLU's fastest, `{ratio.relu_run.label}`, took {_epochs_and_steps(ratio.relu_run, ratio.relu_epochs)}"
    if ratio.tanh_epochs is None:
        bound = ratio.value
        claim = f"tanh / ReLU is at least **{bound:.1f}×**" if bound > 1 else "no ratio can be given"
        return (
            f"Epochs to {target}: {relu}; no tanh run reached it (the shortest, `{ratio.tanh_run.label}`, "
            f"trained {ratio.tanh_min_epochs - 1} epochs), so {claim} (the paper: about 6×)."
        )
    if ratio.tanh_min_epochs < ratio.tanh_epochs:
        return (
            f"Epochs to {target}: {relu}; tanh's fastest, `{ratio.tanh_run.label}`, took {ratio.tanh_epochs}, but a "
            f"shorter tanh run stopped before reaching it, so tanh / ReLU is between "
            f"{ratio.tanh_min_epochs / ratio.relu_epochs:.1f}× and **{ratio.value:.1f}×** (the paper: about 6×)."
        )
    return (
        f"Epochs to {target}: {relu}; tanh's fastest, `{ratio.tanh_run.label}`, took "
        f"{_epochs_and_steps(ratio.tanh_run, ratio.tanh_epochs)}: "
        f"tanh / ReLU = **{ratio.value:.1f}×** (the paper: about 6×), each at its fastest learning rate."
    )


# A run has left the initial plateau once its epoch's training loss is this far below ln(classes).
PLATEAU_MARGIN = 0.1
# Figure 1's experiments on the full training set, and the paper's ratio ("six times faster").
FIGURE1_EXPERIMENTS = ("full_figure1_relu", "full_figure1_tanh")
FIGURE1_PAPER_RATIO = 6.0


def epochs_on_plateau(run, classes=10):
    """How many epochs passed before the run's training loss first fell PLATEAU_MARGIN below
    ln(classes) (all of them, when it never did)."""
    losses = run.curves.get("loss") or []
    for epoch, loss in enumerate(losses):
        if loss is not None and loss < math.log(classes) - PLATEAU_MARGIN:
            return epoch
    return len(losses)


def _arm(runs):
    top1 = tuple(run.results["best_validation_top1_error"] for run in runs if run.results.get("best_validation_top1_error") is not None)
    top5 = tuple(run.results["best_validation_top5_error"] for run in runs if run.results.get("best_validation_top5_error") is not None)
    sizes = {run.data.get("holdout_examples") for run in runs}
    best_epochs = tuple(run.results["best_epoch"] for run in runs if run.results.get("best_epoch") is not None)
    return claims.Arm(top1, top5, sizes.pop() if len(sizes) == 1 else None, best_epochs)


def _gain(difference):
    if difference is None:
        return "–"
    points = round(difference.points, 1) + 0.0  # + 0.0 turns a rounded -0.0 into 0.0: "+0.0", not "-0.0"
    return f"{points:+.1f} ± {difference.standard_error:.1f}"


def claim_row(claim, runs_of):
    """[claim, paper, ours, seeds, verdict, differs] for an error `claims.Claim`."""
    worse, better = _arm(runs_of.get(claim.worse, [])), _arm(runs_of.get(claim.better, []))
    top1 = claims.difference(worse.top1, better.top1, worse.validation_examples or better.validation_examples)
    top5 = claims.difference(worse.top5, better.top5, worse.validation_examples or better.validation_examples)
    ours = f"{_gain(top1)} top-1, {_gain(top5)} top-5"
    if min(worse.seeds, better.seeds) == 1:
        ours += " (an arm of one run: its seed spread is unknown and not in ±)"
    if claim.worse == "ablation_no_dropout" and worse.epochs_to_best and better.epochs_to_best:
        ours += (
            f"; best epoch {statistics.mean(better.epochs_to_best):g} with dropout, "
            f"{statistics.mean(worse.epochs_to_best):g} without"
        )
    if claim.paper == "–":  # shown beside the claims, not one of them
        judged = "– (no claim)" if top1 else claims.NOT_MEASURED
    else:
        judged = claims.verdict(top1, claim.paper_top1, claim.at_least)
        if top1 and claim.paper_top5 is not None and top5 and judged != claims.verdict(top5, claim.paper_top5):
            judged += f" (top-5: {claims.verdict(top5, claim.paper_top5)})"
    arms = f"`{claim.worse}` {worse.seeds}, `{claim.better}` {better.seeds}"
    return [claim.claim, claim.paper, ours if top1 else "–", arms, judged, claim.differs]


def figure1_claim_row(runs_of):
    runs = [run for name in FIGURE1_EXPERIMENTS for run in runs_of.get(name, [])]
    ratio = figure1_ratio(runs) if runs else None
    if ratio is None:
        ours, judged = "–", claims.NOT_MEASURED
    else:
        # When some tanh run stopped short of 25%, the ratio is only known to be at least this.
        bound = ratio.tanh_epochs is None or ratio.tanh_min_epochs < ratio.tanh_epochs
        value = ratio.tanh_min_epochs / ratio.relu_epochs if bound else ratio.value
        if ratio.tanh_epochs is None:
            tanh = f"no tanh run within {ratio.tanh_min_epochs - 1}"
        else:
            tanh = f"tanh {ratio.tanh_epochs} at lr {ratio.tanh_run.hparams.get('learning_rate'):g}"
        ours = (
            f"{'≥ ' if bound else ''}{value:.1f}× (epochs to 25%: ReLU {ratio.relu_epochs} at lr "
            f"{ratio.relu_run.hparams.get('learning_rate'):g}, {tanh})"
        )
        judged = claims.ratio_verdict(value, FIGURE1_PAPER_RATIO, is_bound=bound)
    arms = ", ".join(_sweep_arm(name, runs_of.get(name, [])) for name in FIGURE1_EXPERIMENTS)
    lengths = sorted({len(run.curves.get("top1_error") or []) for run in runs if is_four_layer(run)} - {0})
    if len(lengths) > 1:
        epochs = f"{lengths[0]}–{lengths[-1]} epochs; "
    else:
        epochs = f"{lengths[0]} epochs; " if lengths else ""
    return [
        "ReLUs reach 25% training error on CIFAR-10 faster than tanh (Figure 1)",
        "about 6× fewer epochs",
        ours, arms, judged,
        f"the training set's 45,000 images, 32x32, {epochs}each side's fastest rate of its sweep (the study below)",
    ]


def _sweep_arm(name, runs):
    """"`name` 4 learning rates (5 runs)": a rate run twice counts once."""
    runs = [run for run in runs if is_four_layer(run)]
    if not runs:
        return f"`{name}` 0 runs"
    rates = {run.hparams.get("learning_rate") for run in runs}
    text = f"`{name}` {len(rates)} learning rate{'' if len(rates) == 1 else 's'}"
    return text + (f" ({len(runs)} runs)" if len(runs) != len(rates) else ", one run each")


def init_claim_row(runs_of, paper="ablation_paper_init", small="ablation_lrn"):
    """The paper's biases of 1 "accelerate the early stages of learning": epochs each arm spent
    on the initial plateau, per seed."""
    paper_runs, small_runs = runs_of.get(paper, []), runs_of.get(small, [])
    row = ["Biases of 1 accelerate early learning (section 5)", "no figure"]
    # The paper's alternative is biases of 0; this project's base arm has 0.1, also positive.
    differs = claims.SETTING + "; biases 1 against 0.1, not against 0"
    if not paper_runs or not small_runs:
        return row + ["–", f"`{paper}` {len(paper_runs)}, `{small}` {len(small_runs)}", claims.NOT_MEASURED, differs]
    on_paper = [epochs_on_plateau(run) for run in paper_runs]
    on_small = [epochs_on_plateau(run) for run in small_runs]
    if max(on_paper) < min(on_small):
        judged = claims.HOLDS
    elif min(on_paper) > max(on_small):
        judged = claims.DOES_NOT_HOLD
    else:
        judged = claims.INCONCLUSIVE
    paper_arm = _arm(paper_runs)
    top1 = claims.difference(_arm(small_runs).top1, paper_arm.top1, paper_arm.validation_examples)
    ours = (
        f"epochs before the loss left ln 10: biases 1 {', '.join(map(str, on_paper))}; biases 0.1 "
        f"{', '.join(map(str, on_small))} (per seed); top-1 {_gain(top1)} points for biases 1"
    )
    return row + [ours, f"`{paper}` {len(paper_runs)}, `{small}` {len(small_runs)}", judged, differs]


def claims_table(experiments):
    """The Markdown summary table: each of the paper's claims, its figure, ours, the verdict."""
    runs_of = {experiment.name: experiment.runs for experiment in experiments}
    rows = [figure1_claim_row(runs_of)]
    rows += [claim_row(claim, runs_of) for claim in claims.CLAIMS]
    rows += [init_claim_row(runs_of), claim_row(claims.BATCHNORM_ROW, runs_of)]
    header = [
        "claim", "the paper", "ours: gain of the paper's better arm, points of validation error ± SE",
        "runs per arm", "verdict", "our setting, where it differs",
    ]  # fmt: skip
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def claims_section(experiments):
    return [
        "## The paper's claims, measured",
        "",
        "Each row compares two experiments' mean best validation error over their runs (seeds);",
        "± is the standard error from the seeds' spread and the validation set's binomial error",
        "(`alexnet_tf/claims.py` says how, and how the verdict follows). The studies below have",
        "each arm's runs and curves.",
        "",
        claims_table(experiments),
        "",
    ]


def render(experiments, plots_dir, output, plots_link_dir=None):
    """The report's Markdown; writes the plots into `plots_dir` as it goes, linked as if
    they were in `plots_link_dir` (default: `plots_dir`)."""
    output = pathlib.Path(output)
    plots_link_dir = pathlib.Path(plots_link_dir or plots_dir)
    lines = [
        "# Experiment results",
        "",
        "Written by `make report` (`python -m alexnet_tf.report`) from the `results.json` of every",
        "finished run under `experiments/`; do not edit by hand. Every figure below comes from one",
        "of those files, written by this project's trainer.",
        "",
    ]
    lines += claims_section(experiments)
    taken = set()
    studies = group_by_study(experiments)
    # One assignment for the whole report: an experiment has its colour in every plot.
    colours = experiment_colours([experiment.name for experiment in members] for members in studies.values())
    for title, members in studies.items():
        runs = [run for experiment in members for run in experiment.runs]
        lines += [f"## {title}", ""]
        for experiment in members:
            about = " ".join(line for line in experiment.description if line)
            commands = experiment.commands or [f"make experiment NAME={experiment.name}"]
            lines += [f"- `experiments/{experiment.name}.flags`" + (f": {about}" if about else "")]
            lines += [f"  Run: `{command}`" for command in commands]
        lines += ["", study_table(runs), ""]
        if any(is_four_layer(run) for run in runs):
            lines += [figure1_sentence(figure1_ratio(runs)), ""]
            sweep = figure1_sweep_sentence(runs)
            if sweep:
                lines += [sweep, ""]
        for sentence in precision_sentences(runs):
            lines += [sentence, ""]
        name = f"{_slug(title, taken)}.png"
        plot_study(title, runs, pathlib.Path(plots_dir) / name, colours)
        lines += [f"![{title}]({_relative(plots_link_dir / name, output.parent)})", ""]
        lines += ["Machine: " + "; ".join(machines(runs)) + ".", ""]
    return "\n".join(lines)


def _relative(path, start):
    import os

    return pathlib.Path(os.path.relpath(pathlib.Path(path).resolve(), pathlib.Path(start).resolve())).as_posix()


# The project README's copy of the claims table lies between these lines; `write_report` renews it.
README_CLAIMS_START = "<!-- The claims table: written by make report (alexnet_tf/report.py), do not edit. -->"
README_CLAIMS_END = "<!-- End of the claims table. -->"


def update_readme_claims(readme, table):
    """Puts `table` between README_CLAIMS_START and README_CLAIMS_END in the file `readme`;
    returns False (and leaves the file alone) when it has no such lines."""
    readme = pathlib.Path(readme)
    text = readme.read_text(encoding="utf-8") if readme.is_file() else ""
    start, end = text.find(README_CLAIMS_START), text.find(README_CLAIMS_END)
    if start < 0 or end < start:
        return False
    renewed = text[: start + len(README_CLAIMS_START)] + "\n\n" + table + "\n\n" + text[end:]
    if renewed != text:
        temporary = readme.with_name(readme.name + ".tmp")
        temporary.write_text(renewed, encoding="utf-8")
        temporary.replace(readme)
    return True


def write_report(experiments_dir="experiments", output=None, plots_dir=None, readme=None):
    """Writes the report (and its plots) and renews the claims table in `readme` (default: the
    README.md beside the experiments folder, when it has the table's marker lines); returns
    the output path."""
    experiments_dir = pathlib.Path(experiments_dir)
    if not experiments_dir.is_dir():
        raise ValueError(f"{experiments_dir} is not a folder; give --experiments_dir=<the experiments folder>.")
    output = pathlib.Path(output) if output else experiments_dir / "README.md"
    plots_dir = pathlib.Path(plots_dir) if plots_dir else experiments_dir / "plots"
    experiments = find_experiments(experiments_dir)
    if not experiments:
        raise ValueError(f"no finished runs (run*/results.json beside a .flags file) under {experiments_dir}.")
    # The plots folder is the report's own: built aside, then swapped in with the report,
    # so a failure leaves the previous report and plots as they were and no stale plot stays.
    new_plots = plots_dir.with_name(plots_dir.name + ".new")
    old_plots = plots_dir.with_name(plots_dir.name + ".old")
    temporary = output.with_name(output.name + ".tmp")
    for leftover in (new_plots, old_plots):
        shutil.rmtree(leftover, ignore_errors=True)
    try:
        new_plots.mkdir(parents=True)
        temporary.write_text(render(experiments, new_plots, output, plots_link_dir=plots_dir), encoding="utf-8")
        if plots_dir.exists():
            plots_dir.rename(old_plots)
        new_plots.rename(plots_dir)
        temporary.replace(output)
        update_readme_claims(readme or experiments_dir.resolve().parent / "README.md", claims_table(experiments))
    finally:
        shutil.rmtree(new_plots, ignore_errors=True)
        shutil.rmtree(old_plots, ignore_errors=True)
        temporary.unlink(missing_ok=True)
    return output


def define_flags():
    from absl import flags

    flags.DEFINE_string("experiments_dir", "experiments", "The experiments folder to report on.")
    flags.DEFINE_string("output", None, "The report's path (default: <experiments_dir>/README.md).")


def main(argv):
    import sys

    from absl import flags

    from alexnet_tf import cli

    cli.refuse_extra_arguments(argv)
    try:
        path = write_report(flags.FLAGS.experiments_dir, flags.FLAGS.output)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(cli.EXIT_USAGE)
    except (OSError, ImportError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(cli.EXIT_DATA)
    print(f"Wrote {path}")


if __name__ == "__main__":
    from absl import app

    from alexnet_tf import cli

    define_flags()
    app.run(main, flags_parser=cli.parse_flags)
