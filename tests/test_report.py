import json
import pathlib
import shutil
import subprocess
import sys

import pytest

from alexnet_tf import report
from alexnet_tf.report import FinishedRun as Run

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def fake_run(
    experiments, experiment, run, *, model="alexnet", activation="relu", norm="lrn", lr=0.01, train=(), val=(), loss=(),
    precision="float32", seed=0,
):
    run_dir = experiments / experiment / run
    run_dir.mkdir(parents=True)
    best = min(range(len(val)), key=lambda i: val[i]) if val else None
    results = {
        "run": str(run_dir),
        "experiment": experiment,
        "epochs": max(len(train), len(val)),
        "best_epoch": best + 1 if best is not None else None,
        "best_validation_top1_error": val[best] if val else None,
        "best_validation_top5_error": val[best] / 4 if val else None,
        "images_per_s": 123.4,
        "wall_time_s_this_process": 600.0,
        "hparams": {
            "model": model, "norm": norm, "activation": activation, "learning_rate": lr, "mixed_precision": precision,
            "seed": seed,
        },
        "machine": {"cpu_count": 2, "gpus": [], "tensorflow": "2.21.0", "keras": "3.15.1"},
        "curves": {"top1_error": list(train), "val_top1_error": list(val), "loss": list(loss)},
    }
    (run_dir / "results.json").write_text(json.dumps(results))
    return run_dir


@pytest.fixture
def experiments(tmp_path):
    root = tmp_path / "experiments"
    root.mkdir()
    (root / "norms_none.flags").write_text(
        "# Study: LRN vs none\n# AlexNet with no normalisation.\n# Run: make experiment NAME=norms_none\n# more\n--norm=none\n"
    )
    (root / "towers.flags").write_text("# Study: Towers\n--towers=2\n")
    (root / "norms_lrn.flags").write_text("# Study: LRN vs none\n# Study: Towers\n# AlexNet with LRN.\n--norm=lrn\n")
    (root / "fig1_relu.flags").write_text("# Study: Figure 1\n--model=four_layer\n--activation=relu\n")
    (root / "fig1_tanh.flags").write_text("# Study: Figure 1\n--model=four_layer\n--activation=tanh\n")
    (root / "unfinished.flags").write_text("--norm=lrn\n")
    (root / "unfinished" / "run1").mkdir(parents=True)  # no results.json: left out
    fake_run(root, "norms_lrn", "run1", val=[0.9, 0.6, 0.5, 0.55])
    fake_run(root, "norms_none", "run1", norm="none", val=[0.9, 0.7, 0.65])
    fake_run(root, "towers", "run1", val=[0.9, 0.55])
    fake_run(root, "fig1_relu", "run1", model="four_layer", lr=0.01, train=[0.8, 0.5, 0.3, 0.24, 0.2])
    fake_run(root, "fig1_relu", "run2", model="four_layer", lr=0.03, train=[0.7, 0.4, 0.25, 0.2])
    fake_run(root, "fig1_tanh", "run1", model="four_layer", activation="tanh", lr=0.01, train=[0.9, 0.8, 0.6, 0.5, 0.4, 0.3, 0.26, 0.25])
    return root


def test_epochs_to_reach_counts_from_one():
    assert report.epochs_to_reach([0.8, 0.3, 0.25, 0.1], 0.25) == 3
    assert report.epochs_to_reach([0.8, 0.3], 0.25) is None
    assert report.epochs_to_reach([], 0.25) is None


def test_report_tables_ratio_and_plots(experiments):
    output = report.write_report(experiments)
    assert output == experiments / "README.md"
    text = output.read_text()
    assert "## LRN vs none" in text and "## Figure 1" in text and "unfinished" not in text
    # One row per finished run, figures taken from its results.json.
    row = next(line for line in text.splitlines() if line.startswith("| `norms_lrn/run1`"))
    assert "| lrn |" in row and "| 50.0 | 12.5 | 3 | 123 | 10.0 |" in row
    assert "| `norms_none/run1` | none | 3 |" in text
    assert "- `experiments/norms_none.flags`: AlexNet with no normalisation.\n  Run: `make experiment NAME=norms_none" in text
    # An experiment named in two studies is in both tables.
    towers_section = text.split("## Towers")[1]
    assert "`norms_lrn/run1`" in towers_section and "`towers/run1`" in towers_section
    # Figure 1: epochs to 25% training error per run, and tanh/ReLU at each one's fastest lr (8 / 3).
    assert "| `fig1_relu/run2` | relu | 0.03 | 4 | 3 | 20.0 |" in text
    assert "| `fig1_tanh/run1` | tanh | 0.01 | 8 | 8 | 25.0 |" in text
    assert "tanh / ReLU = **2.7×**" in text
    for slug in ("lrn-vs-none", "figure-1", "towers"):  # each study's title
        png = experiments / "plots" / f"{slug}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
        assert f"](plots/{slug}.png)" in text
    assert "2 CPU cores, no GPU; TensorFlow 2.21.0" in text


def test_a_study_s_table_names_the_cpu_only_when_its_runs_ran_on_different_ones(experiments):
    results = experiments / "norms_none" / "run1" / "results.json"
    data = json.loads(results.read_text())
    data["machine"]["cpu"] = "Intel(R) Xeon(R)  Processor"
    results.write_text(json.dumps(data))
    text = report.write_report(experiments).read_text()
    lrn_vs_none = text.split("## LRN vs none")[1].split("\n## ")[0]
    assert "| at epoch | CPU | images/s | wall min |" in lrn_vs_none
    assert "| 3 | Intel Xeon Processor | 123 | 10.0 |" in lrn_vs_none and "| 3 | ? | 123 | 10.0 |" in lrn_vs_none
    towers = text.split("## Towers")[1].split("\n## ")[0]  # norms_lrn and towers: one (unknown) CPU
    assert "| CPU |" not in towers and "| at epoch | images/s | wall min |" in towers


def test_report_without_a_reached_target_says_so(experiments):
    results = experiments / "fig1_tanh" / "run1" / "results.json"
    data = json.loads(results.read_text())
    data["curves"]["top1_error"] = [0.9, 0.8]
    results.write_text(json.dumps(data))
    text = report.write_report(experiments).read_text()
    assert "| `fig1_tanh/run1` | tanh | 0.01 | 8 | not in 2 |" in text
    # tanh never got there in 2 epochs: all that is known is that it needs more than 2 (ReLU: 3).
    assert "no tanh run reached it (the shortest, `fig1_tanh/run1`, trained 2 epochs), so no ratio can be given" in text


def test_precision_study_compares_loss_curves_with_the_seed_noise(tmp_path):
    root = tmp_path / "experiments"
    root.mkdir()
    (root / "fp32.flags").write_text("# Study: Precision\n--norm=lrn\n")
    (root / "bf16.flags").write_text("# Study: Precision\n--mixed_precision=mixed_bfloat16\n")
    fake_run(root, "fp32", "run1", val=[0.9, 0.6], loss=[2.3, 2.0, 1.5])
    fake_run(root, "fp32", "run2", val=[0.9, 0.6], loss=[2.3, 1.9, 1.3], seed=1)
    fake_run(root, "bf16", "run1", val=[0.9, 0.6], loss=[2.3, 2.1], precision="mixed_bfloat16")
    fake_run(root, "bf16", "run2", val=[0.9, 0.6], loss=[2.2, 2.1], precision="mixed_bfloat16", seed=5)
    text = report.write_report(root).read_text()
    assert "| `fp32/run2` | float32 | 1 | 2 | 1.300 |" in text  # varied settings, epochs, final training loss
    # bf16/run1 against the float32 run with its seed (over the 2 epochs both have); bf16/run2 has no such run.
    assert "`bf16/run1` vs `fp32/run1` (mixed_bfloat16 vs float32, nothing else changed): differs by 0.050 on average, at most 0.100, over 2 epochs." in text
    assert "`bf16/run2` vs" not in text
    assert "`fp32/run1` vs `fp32/run2` (two float32 seeds, nothing else changed): differs by 0.100 on average, at most 0.200, over 3 epochs." in text
    # Studies where precision does not vary get no such lines.
    assert report.precision_sentences([Run("a", "run1", {"hparams": {"seed": 0}}), Run("a", "run2", {"hparams": {"seed": 1}})]) == []


def ratio_of(relu_curves, tanh_curves):
    runs = [Run("relu", f"run{i}", {"hparams": {"model": "four_layer", "activation": "relu"}, "curves": {"top1_error": c}})
            for i, c in enumerate(relu_curves)]
    runs += [Run("tanh", f"run{i}", {"hparams": {"model": "four_layer", "activation": "tanh"}, "curves": {"top1_error": c}})
             for i, c in enumerate(tanh_curves)]
    runs.append(Run("alexnet", "run1", {"hparams": {"model": "alexnet", "activation": "tanh"}, "curves": {"top1_error": [0.1]}}))
    return report.figure1_ratio(runs)


def test_figure1_ratio_takes_each_activations_fastest_run_and_knows_its_bounds():
    fast_relu, slow_relu = [0.5, 0.2], [0.5, 0.4, 0.2]
    ratio = ratio_of([slow_relu, fast_relu], [[0.9] * 5 + [0.2], [0.9] * 9 + [0.1]])
    assert (ratio.relu_epochs, ratio.tanh_epochs, ratio.tanh_min_epochs, ratio.value) == (2, 6, 6, 3.0)
    # A 3-epoch tanh run that never got there: tanh's fastest could need only 4 epochs.
    ratio = ratio_of([fast_relu], [[0.9] * 5 + [0.2], [0.9] * 3])
    assert (ratio.tanh_epochs, ratio.tanh_min_epochs) == (6, 4)
    # No tanh run got there: the shortest one bounds it from below (it needs more than 7 epochs).
    ratio = ratio_of([fast_relu], [[0.9] * 7, [0.9] * 20])
    assert (ratio.tanh_epochs, ratio.tanh_min_epochs, ratio.value) == (None, 8, 4.0)
    assert "so tanh / ReLU is at least **4.0×**" in report.figure1_sentence(ratio)
    # Runs without curves (an older results.json), or no ReLU run reaching 25%: no ratio.
    assert ratio_of([fast_relu], [[]]) is None
    assert ratio_of([[0.9, 0.8]], [[0.2]]) is None
    assert report.figure1_sentence(None).startswith("No ReLU run reached 25%")


def test_figure1_ratio_bounds_by_each_tanh_rates_longest_run_only():
    def run(activation, name, rate, curve):
        hparams = {"model": "four_layer", "activation": activation, "learning_rate": rate}
        return Run(activation, name, {"hparams": hparams, "curves": {"top1_error": curve}})

    relu = run("relu", "run1", 0.003, [0.5, 0.2])
    tanh_reached = run("tanh", "run1", 0.01, [0.9] * 5 + [0.2])  # 6 epochs
    short, long = run("tanh", "run2", 0.03, [0.9] * 3), run("tanh", "run3", 0.03, [0.9] * 6)
    # 0.03's 6 epochs without reaching 25% outweigh its 3: it cannot beat 0.01's 6, so the ratio is a figure.
    ratio = report.figure1_ratio([relu, tanh_reached, short, long])
    assert (ratio.tanh_epochs, ratio.tanh_min_epochs, ratio.value) == (6, 6, 3.0)
    # With only the 3-epoch run of 0.03, it could: a bound.
    assert report.figure1_ratio([relu, tanh_reached, short]).tanh_min_epochs == 4


def test_report_of_a_real_run(run_dir, tmp_path):
    # The trainer's own results.json (a one-epoch run) is what the report reads.
    experiments = tmp_path / "experiments"
    shutil.copytree(run_dir, experiments / "t" / "run1", ignore=shutil.ignore_patterns("checkpoints"))
    (experiments / "t.flags").write_text("# Study: tiny\n--epochs=1\n")
    text = report.write_report(experiments, output=tmp_path / "report.md", plots_dir=tmp_path / "plots").read_text()
    results = json.loads((run_dir / "results.json").read_text())
    assert len(results["curves"]["val_top1_error"]) == 1
    assert f"| {100 * results['best_validation_top1_error']:.1f} |" in text
    assert (tmp_path / "plots" / "tiny.png").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["experiments", "plots", "report.md"]  # no leftovers


def test_plots_of_studies_with_one_slug_do_not_collide_and_stale_plots_go(experiments):
    (experiments / "plots").mkdir()
    (experiments / "plots" / "stale.png").write_bytes(b"old")
    (experiments / "norms_none.flags").write_text("# Study: LRN vs none (again)\n--norm=none\n")
    text = report.write_report(experiments).read_text()
    assert "](plots/lrn-vs-none.png)" in text and "](plots/lrn-vs-none-2.png)" in text
    assert sorted(p.name for p in (experiments / "plots").iterdir()) == [
        "figure-1.png", "lrn-vs-none-2.png", "lrn-vs-none.png", "towers.png"
    ]


def test_report_command_refuses_a_folder_without_runs(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "alexnet_tf.report", f"--experiments_dir={tmp_path}"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"error: no finished runs (run*/results.json beside a .flags file) under {tmp_path}."]
    assert not (tmp_path / "README.md").exists()


def test_the_committed_report_is_what_the_committed_results_give(tmp_path):
    # `make report` regenerates experiments/README.md from the committed runs alone.
    committed = REPO_ROOT / "experiments" / "README.md"
    if not committed.is_file():
        pytest.skip("no committed report")
    output = tmp_path / "experiments" / "README.md"
    output.parent.mkdir()
    report.write_report(REPO_ROOT / "experiments", output=output, plots_dir=tmp_path / "experiments" / "plots")
    assert output.read_text(encoding="utf-8") == committed.read_text(encoding="utf-8")
    assert sorted(p.name for p in (tmp_path / "experiments" / "plots").iterdir()) == sorted(
        p.name for p in (REPO_ROOT / "experiments" / "plots").iterdir()
    )


@pytest.mark.parametrize("flagfile", sorted((REPO_ROOT / "experiments").glob("*.flags")), ids=lambda p: p.stem)
def test_every_experiment_flagfile_parses(flagfile):
    from alexnet_tf import config

    parsed = config.config_from_flagfile(flagfile)
    assert parsed.experiment == flagfile.stem


def test_y_limits_fit_the_plotted_values_with_a_margin():
    # Errors between 0.35 and 0.45 get 5% of their range either side, not 0 to 1.
    assert report.y_limits([[0.45, 0.4, None], [0.35, float("nan")]], rate=True) == pytest.approx((0.345, 0.455))
    # Rates stay within [0, 1] and losses above 0; the 25% line of Figure 1 is kept in view.
    assert report.y_limits([[0.01, 0.99]], rate=True) == (0.0, 1.0)
    assert report.y_limits([[2.0, 2.5]], rate=False) == pytest.approx((1.975, 2.525))
    assert report.y_limits([[0.02, 2.0]], rate=False) == pytest.approx((0.0, 2.099))
    assert report.y_limits([[0.4, 0.5]], rate=True, include=(0.25,)) == pytest.approx((0.2375, 0.5125))
    # A flat curve still gets a band around it; no values leave matplotlib's own limits.
    assert report.y_limits([[0.8, 0.8]], rate=True) == pytest.approx((0.76, 0.84))
    assert report.y_limits([[], [None]], rate=True) is None


def cosine(peak, epochs):
    import math

    return [peak * 0.5 * (1 + math.cos(math.pi * epoch / (epochs - 1))) for epoch in range(epochs)]


def test_learning_rate_drops_are_the_first_epochs_at_a_cut_rate_and_not_a_cosine():
    plateau = [0.01] * 5 + [0.001] * 3 + [0.0001] * 2
    assert report.learning_rate_drops(plateau) == [6, 9]
    assert report.learning_rate_drops([0.1, 0.01]) == [2]  # cut after the first epoch
    assert report.learning_rate_drops([0.005, 0.01, 0.01, 0.001]) == [4]  # after a warm-up
    assert report.learning_rate_drops([0.1, 0.1, 0.05, 0.05, 0.03]) == [3]  # halving counts, 0.6x does not
    # A cosine to 0 falls by more than half per epoch at its end, every epoch: no drop.
    for curve in (cosine(0.02, 18), [0.0, 0.01] + cosine(0.02, 30)):
        assert any(later <= 0.5 * earlier for earlier, later in zip(curve, curve[1:]))
        assert report.learning_rate_drops(curve) == []
    assert report.learning_rate_drops([0.01, None, 0.001, 0.0, 0.0]) == []
    assert report.learning_rate_drops(None) == report.learning_rate_drops([]) == []


def test_experiment_colours_differ_within_a_study_and_do_not_depend_on_order():
    studies = [["b", "a"], ["a", "c"], ["d"]]
    colours = report.experiment_colours(studies)
    assert colours == report.experiment_colours([["c", "a"], ["d"], ["a", "b"]])
    assert colours["a"] != colours["b"] and colours["a"] != colours["c"]
    # While the palette lasts, no two experiments of the report share a colour.
    assert len(set(colours.values())) == 4
    many = report.experiment_colours([[f"e{i:02}"] for i in range(12)])
    assert len(set(many.values())) == len(report.PALETTE)
    # More experiments in one study than colours: every colour in use, none more than twice.
    crowded = report.experiment_colours([[f"e{i:02}" for i in range(len(report.PALETTE) + 2)]])
    assert sorted(set(crowded.values())) == sorted(report.PALETTE)
    assert max(list(crowded.values()).count(colour) for colour in report.PALETTE) == 2


def curve_run(experiment, name, val, lr=None, seed=0, loss=None):
    curves = {"val_top1_error": val, "loss": loss or [2.0 - 0.1 * i for i in range(len(val))]}
    if lr:
        curves["learning_rate"] = lr
    return Run(experiment, name, {"hparams": {"model": "alexnet", "seed": seed}, "curves": curves})


def run_lines(axes):
    """{run label: its curve's Line2D} of a panel."""
    return {line.get_label().split(" ")[0]: line for line in axes.get_lines() if "/" in line.get_label()}


def test_a_study_plot_fits_its_data_marks_learning_rate_cuts_and_colours_by_experiment(tmp_path):
    from matplotlib import pyplot

    plateau = [0.01] * 5 + [0.001] * 3
    runs = [
        curve_run("lrn", "run1", [0.45, 0.42, 0.4, 0.38, 0.37, 0.36, 0.355, 0.35], lr=plateau),
        curve_run("lrn", "run2", [0.44, 0.41, 0.4, 0.39, 0.38, 0.37, 0.36, 0.36], lr=plateau, seed=1),
        curve_run("cosine", "run1", [0.45, 0.4, 0.38, 0.37], lr=cosine(0.02, 4)),
    ]
    colours = {"lrn": "#d62728", "cosine": "#2ca02c"}
    figure = report.draw_study("Study", runs, colours)
    try:
        loss_axes, error_axes = figure.axes
        assert error_axes.get_ylim() == pytest.approx((0.345, 0.455))
        assert loss_axes.get_ylim() == pytest.approx((1.265, 2.035))
        for axes in (loss_axes, error_axes):
            lines = run_lines(axes)
            # The seeds of one experiment share its colour and differ in line style.
            assert [lines[label].get_color() for label in ("lrn/run1", "lrn/run2", "cosine/run1")] == ["#d62728"] * 2 + ["#2ca02c"]
            assert lines["lrn/run1"].get_linestyle() != lines["lrn/run2"].get_linestyle()
            # Each lrn run is marked at epoch 6, on its curve and in its colour; the cosine run is not marked.
            markers = [line for line in axes.get_lines() if line.get_label() == "_drop"]
            assert [(list(m.get_xdata()), m.get_color()) for m in markers] == [([6], "#d62728"), ([6], "#d62728")]
            assert [m.get_ydata()[0] for m in markers] == [lines["lrn/run1"].get_ydata()[5], lines["lrn/run2"].get_ydata()[5]]
            assert "first epoch after a learning-rate cut" in axes.get_legend_handles_labels()[1]
    finally:
        pyplot.close(figure)
    path = tmp_path / "plots" / "study.png"
    report.plot_study("Study", runs, path, colours)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000


def test_figure1_plot_labels_its_25_percent_line():
    from matplotlib import pyplot

    runs = [
        Run("relu", "run1", {"hparams": {"model": "four_layer", "activation": "relu"}, "curves": {"top1_error": [0.6, 0.4, 0.3]}}),
        Run("tanh", "run1", {"hparams": {"model": "four_layer", "activation": "tanh"}, "curves": {"top1_error": [0.7, 0.5, 0.45]}}),
    ]
    figure = report.draw_study("Figure 1", runs)
    try:
        (axes,) = figure.axes
        assert [text.get_text() for text in axes.texts] == ["25% training error (the paper's threshold)"]
        assert axes.texts[0].get_position()[1] == 0.25
        bottom, top = axes.get_ylim()
        assert bottom < 0.25 and 0.7 < top < 0.75  # the data and the line, not 0 to 1
        lines = run_lines(axes)
        assert lines["relu/run1"].get_color() != lines["tanh/run1"].get_color()
    finally:
        pyplot.close(figure)


def test_every_experiment_has_one_colour_across_the_reports_plots(experiments, monkeypatch):
    from matplotlib import pyplot

    drawn = {}  # study title: {run label: [colours of its lines, every panel]}
    real_draw_study = report.draw_study

    def spy(title, runs, colours=None):
        figure = real_draw_study(title, runs, colours)
        for axes in figure.axes:
            for label, line in run_lines(axes).items():
                drawn.setdefault(title, {}).setdefault(label, []).append(pyplot.matplotlib.colors.to_hex(line.get_color()))
        return figure

    monkeypatch.setattr(report, "draw_study", spy)
    report.write_report(experiments)
    assert sorted(drawn) == ["Figure 1", "LRN vs none", "Towers"]
    colour_of = {}
    for title, runs in drawn.items():
        for label, colours in runs.items():
            experiment = label.split("/")[0]
            assert colour_of.setdefault(experiment, colours[0]) == colours[0]
            assert set(colours) == {colour_of[experiment]}, (title, label)
    # norms_lrn is in two studies; its colour is its own in both, and the five experiments have five colours.
    assert "norms_lrn/run1" in drawn["LRN vs none"] and "norms_lrn/run1" in drawn["Towers"]
    assert len(set(colour_of.values())) == len(colour_of) == 5
