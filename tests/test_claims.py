"""The summary table of the paper's claims (alexnet_tf.claims, alexnet_tf.report.claims_table)."""

import math
import pathlib

import pytest

from alexnet_tf import claims, report
from alexnet_tf.report import FinishedRun as Run

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_difference_adds_the_seed_spread_and_the_binomial_error():
    measured = claims.difference([0.30, 0.32], [0.28], 1000)
    worse_seed_variance = 0.0002 / 2  # the sample variance of 0.30 and 0.32, over two runs
    binomial = 0.31 * 0.69 / 1000 + 0.28 * 0.72 / 1000
    assert measured.points == pytest.approx(3.0)
    assert measured.standard_error == pytest.approx(100 * math.sqrt(worse_seed_variance + binomial))
    assert claims.difference([], [0.28], 1000) is None
    assert claims.difference([0.3], [0.28], None) is None


@pytest.mark.parametrize(
    "points, paper, at_least, expected",
    [
        (1.5, 1.4, False, claims.HOLDS),
        (4.0, 1.4, False, claims.DIRECTION_HOLDS),
        (0.5, 1.4, False, claims.INCONCLUSIVE),
        (-1.5, 1.4, False, claims.DOES_NOT_HOLD),
        (4.0, 1.0, True, claims.HOLDS),  # "over 1 point"
        (1.5, None, False, claims.HOLDS),  # the paper gives only the direction
        (-0.9, None, False, claims.INCONCLUSIVE),
        (0.1, 1.4, False, claims.NO_DIFFERENCE),  # 0 ± 1 excludes the paper's 1.4
        (0.5, 1.0, True, claims.INCONCLUSIVE),
    ],
)
def test_verdicts(points, paper, at_least, expected):
    assert claims.verdict(claims.Difference(points, 0.5), paper, at_least) == expected


def test_no_measurement_is_not_measured():
    assert claims.verdict(None, 1.4) == claims.NOT_MEASURED
    assert claims.ratio_verdict(None, 6.0) == claims.NOT_MEASURED


@pytest.mark.parametrize(
    "ratio, bound, expected",
    [
        (5.0, False, claims.HOLDS), (12.0, False, claims.DIRECTION_HOLDS), (2.0, False, claims.DIRECTION_HOLDS),
        (0.8, False, claims.DOES_NOT_HOLD), (12.0, True, claims.DIRECTION_HOLDS), (5.0, True, claims.HOLDS_AT_LEAST),
        (2.0, True, claims.DIRECTION_HOLDS_AT_LEAST), (0.8, True, claims.INCONCLUSIVE),
    ],
)  # fmt: skip
def test_ratio_verdicts(ratio, bound, expected):
    assert claims.ratio_verdict(ratio, 6.0, is_bound=bound) == expected


def error_run(experiment, seed, top1, top5=0.05, best_epoch=10, losses=(2.0, 1.5), holdout=5000):
    results = {
        "best_validation_top1_error": top1, "best_validation_top5_error": top5, "best_epoch": best_epoch,
        "hparams": {"model": "alexnet", "seed": seed, "batch_size": 128}, "curves": {"loss": list(losses)},
    }  # fmt: skip
    return Run(experiment, f"run{seed + 1}", results, {"holdout_examples": holdout, "train_examples": 45000})


def experiments_of(runs):
    grouped = {}
    for run in runs:
        grouped.setdefault(run.experiment, []).append(run)
    return [report.Experiment(name, [], [], [name], members) for name, members in grouped.items()]


def table_rows(table):
    rows = {}
    for line in table.splitlines()[2:]:
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        rows[cells[0]] = cells
    return rows


def test_claims_table_rows_from_the_arms_runs():
    chance = math.log(10)
    runs = [
        error_run("ablation_lrn", 0, 0.300, best_epoch=16), error_run("ablation_lrn", 1, 0.304, best_epoch=15),
        error_run("ablation_none", 0, 0.330, top5=0.064), error_run("ablation_none", 1, 0.326, top5=0.064),
        error_run("ablation_no_dropout", 0, 0.36, best_epoch=6), error_run("ablation_no_dropout", 1, 0.37, best_epoch=8),
        error_run("ablation_non_overlapping", 0, 0.298),
        error_run("ablation_paper_init", 0, 0.50, losses=(chance, chance - 0.01, 2.0)),
        error_run("ablation_paper_init", 1, 0.52, losses=(chance, chance, chance, 2.1)),
    ]  # fmt: skip
    rows = table_rows(report.claims_table(experiments_of(runs)))
    lrn = rows["LRN lowers AlexNet's error (section 3.3)"]
    assert lrn[2].startswith("+2.6 ± ") and lrn[3] == "`ablation_none` 2, `ablation_lrn` 2"
    assert lrn[4] == claims.HOLDS
    pooling = rows["Overlapping pooling lowers the error (section 3.4)"]
    assert pooling[2].startswith("-0.4 ± ") and "seed spread is unknown" in pooling[2]
    assert pooling[4] == claims.INCONCLUSIVE
    dropout = rows["Without dropout the net overfits substantially (section 4.2)"]
    assert dropout[4] == claims.HOLDS and "best epoch 15.5 with dropout, 7 without" in dropout[2]
    init = rows["Biases of 1 accelerate early learning (section 5)"]
    assert "biases 1 2, 3; biases 0.1 0, 0" in init[2] and init[4] == claims.DOES_NOT_HOLD
    for unmeasured in ("Two towers beat the half-width one-GPU net (section 3.2)", "PCA lighting lowers the error (section 4.1)"):
        assert rows[unmeasured][4] == claims.NOT_MEASURED and rows[unmeasured][2] == "–"
    figure1 = rows["ReLUs reach 25% training error on CIFAR-10 faster than tanh (Figure 1)"]
    assert figure1[4] == claims.NOT_MEASURED
    assert figure1[3] == "`full_figure1_relu` 0 runs, `full_figure1_tanh` 0 runs"
    assert "32x32, each side's fastest rate" in figure1[5]


def test_a_gain_that_rounds_to_zero_is_shown_as_zero_not_minus_zero():
    runs = [
        error_run("ablation_lrn", 0, 0.3004, top5=0.0644), error_run("ablation_lrn", 1, 0.3004, top5=0.0644),
        error_run("ablation_no_pca", 0, 0.3000, top5=0.0640), error_run("ablation_no_pca", 1, 0.3000, top5=0.0640),
    ]  # fmt: skip
    pca = table_rows(report.claims_table(experiments_of(runs)))["PCA lighting lowers the error (section 4.1)"]
    assert pca[2].startswith("+0.0 ± ") and ", +0.0 ± " in pca[2], pca[2]


def four_layer_run(experiment, name, activation, lr, train):
    results = {
        "hparams": {"model": "four_layer", "activation": activation, "learning_rate": lr, "batch_size": 128},
        "curves": {"top1_error": train},
    }
    return Run(experiment, name, results, {"train_examples": 45000, "holdout_examples": 5000})


def figure1_runs(tanh_rates=(0.01, 0.03, 0.1)):
    relu = [
        four_layer_run("full_figure1_relu", "run1", "relu", 0.001, [0.6, 0.4, 0.3, 0.26, 0.24]),
        four_layer_run("full_figure1_relu", "run2", "relu", 0.003, [0.5, 0.3, 0.24]),
        four_layer_run("full_figure1_relu", "run3", "relu", 0.01, [0.6, 0.35, 0.3, 0.24]),
    ]
    tanh_curves = {0.01: [0.6] * 20 + [0.24], 0.03: [0.6] * 14 + [0.24], 0.1: [0.6] * 30}
    tanh = [
        four_layer_run("full_figure1_tanh", f"run{i + 1}", "tanh", rate, tanh_curves[rate]) for i, rate in enumerate(tanh_rates)
    ]
    return relu + tanh


def test_figure1_row_sentence_and_sweep():
    runs = figure1_runs()
    row = table_rows(report.claims_table(experiments_of(runs)))[
        "ReLUs reach 25% training error on CIFAR-10 faster than tanh (Figure 1)"
    ]
    assert row[2].startswith("5.0× (epochs to 25%: ReLU 3 at lr 0.003, tanh 15 at lr 0.03)")
    assert row[4] == claims.HOLDS
    sentence = report.figure1_sentence(report.figure1_ratio(runs))
    assert "took 3 epochs (1,053 steps)" in sentence and "took 15 epochs (5,265 steps)" in sentence
    sweep = report.figure1_sweep_sentence(runs)
    assert "ReLU 0.001: 5, 0.003: 3, 0.01: 4; tanh 0.01: 21, 0.03: 15, 0.1: not reached (60.0% after 30)" in sweep
    assert "ReLU's fastest rate, 0.003, lies inside its sweep" in sweep
    assert "tanh's fastest rate, 0.03, lies inside its sweep" in sweep
    edge = report.figure1_sweep_sentence(figure1_runs(tanh_rates=(0.01, 0.03)))
    assert "tanh's fastest rate, 0.03, is at the edge of its sweep" in edge


def test_figure1_sweep_without_a_tanh_run_at_25_percent_names_the_closest_rate():
    relu = figure1_runs(tanh_rates=())

    def tanh(*rates_and_curves):
        return [
            four_layer_run("full_figure1_tanh", f"run{i + 1}", "tanh", rate, curve)
            for i, (rate, curve) in enumerate(rates_and_curves)
        ]

    inside = tanh((0.003, [0.6, 0.33]), (0.01, [0.6, 0.29]), (0.03, [0.6, 0.31]))
    sweep = report.figure1_sweep_sentence(relu + inside)
    assert "tanh 0.003: not reached (33.0% after 2), 0.01: not reached (29.0% after 2), 0.03: not reached (31.0% after 2)" in sweep
    assert "no tanh rate reached it; the closest after 2 epochs, 0.01, lies inside its sweep" in sweep
    at_edge = tanh((0.003, [0.6, 0.33]), (0.01, [0.6, 0.31]), (0.03, [0.6, 0.29]))
    assert "the closest after 2 epochs, 0.03, is at the edge of its sweep" in report.figure1_sweep_sentence(relu + at_edge)
    # A longer run is not closer for its length: the rates compare after the epochs all trained;
    # a rate tried twice counts its better run; an epoch without a figure and a run without a
    # curve are left out.
    uneven = tanh(
        (0.003, [0.6, 0.33]), (0.01, [0.6, 0.30, 0.27, 0.26]), (0.01, [0.6, 0.40]),
        (0.03, [0.6, 0.28, None]), (0.1, []),
    )
    sweep = report.figure1_sweep_sentence(relu + uneven)
    assert "tanh 0.003: not reached (33.0% after 2), 0.01: not reached (26.0% after 4), 0.03: not reached (28.0% after 2)." in sweep
    assert "the closest after 2 epochs, 0.03, is at the edge of its sweep" in sweep


def test_figure1_shorter_rerun_of_a_rate_that_reached_25_percent_leaves_the_ratio_exact():
    # tanh 0.03 reached 25% at epoch 15; a 12-epoch rerun of 0.03 tells nothing new about it.
    runs = figure1_runs() + [four_layer_run("full_figure1_tanh", "run4", "tanh", 0.03, [0.6] * 12)]
    ratio = report.figure1_ratio(runs)
    assert (ratio.tanh_epochs, ratio.tanh_min_epochs, ratio.value) == (15, 15, 5.0)
    # The same 12 epochs at a rate that never reached it could have got there at 13: a bound.
    runs[-1] = four_layer_run("full_figure1_tanh", "run4", "tanh", 0.05, [0.6] * 12)
    assert report.figure1_ratio(runs).tanh_min_epochs == 13


def test_figure1_row_with_a_tanh_run_stopped_short_is_a_lower_bound():
    runs = figure1_runs()
    # A tanh run that stopped after 12 epochs without reaching 25%: tanh may need only 13.
    runs.append(four_layer_run("full_figure1_tanh", "run4", "tanh", 0.05, [0.6] * 12))
    row = table_rows(report.claims_table(experiments_of(runs)))[
        "ReLUs reach 25% training error on CIFAR-10 faster than tanh (Figure 1)"
    ]
    assert row[2].startswith("≥ 4.3× ") and row[4] == claims.HOLDS_AT_LEAST
    # A rate tried twice counts once, and the runs' lengths show in the setting.
    runs.append(four_layer_run("full_figure1_tanh", "run5", "tanh", 0.05, [0.6] * 40))
    row = table_rows(report.claims_table(experiments_of(runs)))[
        "ReLUs reach 25% training error on CIFAR-10 faster than tanh (Figure 1)"
    ]
    assert row[3] == "`full_figure1_relu` 3 learning rates, one run each, `full_figure1_tanh` 4 learning rates (5 runs)"
    assert "32x32, 3–40 epochs;" in row[5]


def test_figure1_plot_draws_relu_solid_and_tanh_dashed_with_a_marker_per_rate():
    from matplotlib import pyplot

    figure = report.draw_study("Figure 1", figure1_runs())
    try:
        lines = {line.get_label().split(" ")[0]: line for line in figure.axes[0].get_lines() if "/" in line.get_label()}
        assert {lines[f"full_figure1_relu/run{i}"].get_linestyle() for i in (1, 2, 3)} == {"-"}
        assert {lines[f"full_figure1_tanh/run{i}"].get_linestyle() for i in (1, 2, 3)} == {"--"}
        # One marker per learning rate, the same for the same rate on both sides.
        assert lines["full_figure1_relu/run3"].get_marker() == lines["full_figure1_tanh/run1"].get_marker()
        assert len({lines[f"full_figure1_tanh/run{i}"].get_marker() for i in (1, 2, 3)}) == 3
    finally:
        pyplot.close(figure)


def test_steps_per_epoch_respects_a_cap():
    run = error_run("x", 0, 0.3)
    assert run.steps_per_epoch == 45000 // 128
    capped = Run("x", "run1", run.results, run.data, step_cap=50)
    assert capped.steps_per_epoch == 50
    assert Run("x", "run1", run.results).steps_per_epoch is None


def test_runs_made_before_a_setting_existed_show_its_default():
    old = Run("x", "run1", {"hparams": {"norm": "lrn"}})
    assert old.hparams["crop_padding"] == 0 and old.hparams["width"] == "full" and old.hparams["norm"] == "lrn"


def test_readme_block_is_renewed_between_its_markers_only(tmp_path):
    readme = tmp_path / "README.md"
    text = f"# Title\n\n{report.README_CLAIMS_START}\nold table\n{report.README_CLAIMS_END}\n\nAfter.\n"
    readme.write_text(text)
    assert report.update_readme_claims(readme, "| new |")
    assert readme.read_text() == f"# Title\n\n{report.README_CLAIMS_START}\n\n| new |\n\n{report.README_CLAIMS_END}\n\nAfter.\n"
    plain = tmp_path / "plain.md"
    plain.write_text("no markers\n")
    assert not report.update_readme_claims(plain, "| new |")
    assert plain.read_text() == "no markers\n"


def test_the_committed_readme_has_the_committed_runs_claims_table(tmp_path):
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    copy = tmp_path / "README.md"
    copy.write_text(readme, encoding="utf-8")
    assert report.update_readme_claims(copy, report.claims_table(report.find_experiments(REPO_ROOT / "experiments")))
    assert copy.read_text(encoding="utf-8") == readme, "run `make report` to renew README's claims table"


def test_figure1_row_when_no_tanh_run_reached_25_percent():
    runs = [run for run in figure1_runs() if run.hparams["activation"] == "relu"]
    runs += [four_layer_run("full_figure1_tanh", f"run{i}", "tanh", rate, [0.6] * 35) for i, rate in enumerate((0.03, 0.1))]
    row = table_rows(report.claims_table(experiments_of(runs)))[
        "ReLUs reach 25% training error on CIFAR-10 faster than tanh (Figure 1)"
    ]
    assert row[2] == "≥ 12.0× (epochs to 25%: ReLU 3 at lr 0.003, no tanh run within 35)"
    assert row[4] == claims.DIRECTION_HOLDS  # at least 12: above the paper's 6 by more than 1.5x
