"""The paper's claims, each against this project's measurement: the report's summary table.

A claim compares two arms, each an experiment (a flagfile) with one run per seed: the arm
the paper says does worse and the one it says does better. Our figure is the difference of
the arms' mean best validation error, in points, positive when it goes the paper's way, with
its standard error from both sources of noise: the spread between seeds (an arm's sample
variance over its n runs, divided by n) and the binomial error of the validation set,
p(1 - p)/N for an error rate p on N images, for each arm. Adding the binomial terms of two
arms scored on the same images counts that noise in full, as if it were independent: the
error is, if anything, too large.

The verdict, with SE the standard error of the difference d and P the paper's gain:
`holds` when d is more than 2 SE above 0 and within 2 SE of P (for "over P": at least P - 2 SE);
`direction holds, size differs` when d is more than 2 SE above 0 but not near P;
`does not hold` when d is more than 2 SE below 0, or within 2 SE of 0 but more than 2 SE below P
(no difference found, and the paper's excluded); `inconclusive` otherwise.

With two runs per arm the seeds' spread is itself uncertain (one degree of freedom each), so
2 SE is only roughly a 95% bound; an arm of one run adds no seed spread at all (the table
says so). Treat verdicts near the line as such.
"""

import dataclasses
import math
import statistics

HOLDS = "holds"
DIRECTION_HOLDS = "direction holds, size differs"
DOES_NOT_HOLD = "does not hold"
INCONCLUSIVE = "inconclusive"
NOT_MEASURED = "not measured yet"
NO_DIFFERENCE = "does not hold (no difference found; the paper's excluded)"
HOLDS_AT_LEAST = "holds (a lower bound: the ratio may be larger)"
DIRECTION_HOLDS_AT_LEAST = "direction holds (a lower bound, below the paper's)"


@dataclasses.dataclass(frozen=True)
class Claim:
    """One of the paper's comparisons of two arms.

    `worse` and `better` name the experiments of the arm the paper says does worse and the one
    it says does better; `paper_top1`/`paper_top5` are the paper's gains (points of error) of
    `better` over `worse`, None where it gives no figure; `at_least` marks a gain the paper
    gives as "over" its figure; `differs` says how our setting differs from the paper's.
    """

    claim: str
    paper: str
    worse: str
    better: str
    paper_top1: float | None
    paper_top5: float | None
    differs: str
    at_least: bool = False


@dataclasses.dataclass(frozen=True)
class Arm:
    """An arm's best validation errors (fractions), one per run, and its validation set's size."""

    top1: tuple
    top5: tuple
    validation_examples: int | None
    epochs_to_best: tuple = ()

    @property
    def seeds(self):
        return len(self.top1)


@dataclasses.dataclass(frozen=True)
class Difference:
    """worse's mean error - better's, in points, and its standard error (see the module docstring)."""

    points: float
    standard_error: float


def difference(worse_errors, better_errors, validation_examples):
    """The `Difference` of two arms' best validation errors (fractions, one per seed) scored on
    `validation_examples` images; None when an arm has no run."""
    if not worse_errors or not better_errors or not validation_examples:
        return None
    variance = 0.0
    for errors in (worse_errors, better_errors):
        mean = statistics.mean(errors)
        if len(errors) > 1:
            variance += statistics.variance(errors) / len(errors)
        variance += mean * (1.0 - mean) / validation_examples
    points = 100.0 * (statistics.mean(worse_errors) - statistics.mean(better_errors))
    return Difference(points, 100.0 * math.sqrt(variance))


def verdict(measured, paper_gain, at_least=False):
    """The verdict (module docstring) of a `Difference` against the paper's gain in points
    (None: the paper gives only the direction)."""
    if measured is None:
        return NOT_MEASURED
    d, margin = measured.points, 2.0 * measured.standard_error
    if d <= -margin:
        return DOES_NOT_HOLD
    if d < margin:
        if paper_gain is not None and d < paper_gain - margin:
            return NO_DIFFERENCE
        return INCONCLUSIVE
    if paper_gain is None:
        return HOLDS
    near = d >= paper_gain - margin if at_least else abs(d - paper_gain) <= margin
    return HOLDS if near else DIRECTION_HOLDS


def ratio_verdict(ratio, paper_ratio, is_bound=False):
    """The verdict of a speed ratio (tanh's epochs over ReLU's) against the paper's: `holds`
    within a factor 1.5 of it, `direction holds, size differs` otherwise above 1, `does not
    hold` at or below 1. A lower bound (`is_bound`: the ratio is at least this) only shows the
    ratio could be the paper's (within the factor), that it is larger than the paper's (above
    it), or that ReLU is faster (above 1); at or below 1 it shows nothing."""
    if ratio is None:
        return NOT_MEASURED
    low, high = paper_ratio / 1.5, paper_ratio * 1.5
    if is_bound:
        if ratio > high:
            return DIRECTION_HOLDS
        if ratio >= low:
            return HOLDS_AT_LEAST
        return DIRECTION_HOLDS_AT_LEAST if ratio > 1.0 else INCONCLUSIVE
    if low <= ratio <= high:
        return HOLDS
    return DIRECTION_HOLDS if ratio > 1.0 else DOES_NOT_HOLD


SETTING = "CIFAR-10 (45,000 training images, 5,000 held out) at 64x64, 16 epochs; the paper: ImageNet at 224, ~90 epochs"

# The paper's claims this project measures, in the order of the paper.
CLAIMS = (
    Claim(
        "Normalisation helps cuda-convnet's CIFAR-10 net (section 3.3)",
        "13% → 11% test error (−2 points)",
        worse="cuda_convnet_none", better="cuda_convnet_lrn", paper_top1=2.0, paper_top5=None,
        differs="validation part of the training images, 60 epochs (the cfg's schedule: over 500), one learning rate and weight decay for all layers, bfloat16 compute",
    ),
    Claim(
        "LRN lowers AlexNet's error (section 3.3)",
        "−1.4 top-1, −1.2 top-5 points (ImageNet)",
        worse="ablation_none", better="ablation_lrn", paper_top1=1.4, paper_top5=1.2, differs=SETTING,
    ),
    Claim(
        "Overlapping pooling lowers the error (section 3.4)",
        "−0.4 top-1, −0.3 top-5 points",
        worse="ablation_non_overlapping", better="ablation_lrn", paper_top1=0.4, paper_top5=0.3, differs=SETTING,
    ),
    Claim(
        "Two towers beat the half-width one-GPU net (section 3.2)",
        "−1.7 top-1, −1.2 top-5 points",
        worse="ablation_half_width", better="ablation_two_towers", paper_top1=1.7, paper_top5=1.2, differs=SETTING,
    ),
    Claim(
        "PCA lighting lowers the error (section 4.1)",
        "over 1 point top-1",
        worse="ablation_no_pca", better="ablation_lrn", paper_top1=1.0, paper_top5=None, at_least=True, differs=SETTING,
    ),
    Claim(
        "Without dropout the net overfits substantially (section 4.2)",
        "no figure; dropout roughly doubles the iterations to converge",
        worse="ablation_no_dropout", better="ablation_lrn", paper_top1=None, paper_top5=None,
        differs=SETTING + "; a cosine schedule of fixed length, so epochs to the best are bounded by it",
    ),
)
# Not a claim with a figure, shown beside them: BatchNorm (not in the paper) against LRN.
BATCHNORM_ROW = Claim(
    "BatchNorm in LRN's places (not in the paper)",
    "–",
    worse="ablation_lrn", better="ablation_batchnorm", paper_top1=None, paper_top5=None, differs=SETTING,
)
