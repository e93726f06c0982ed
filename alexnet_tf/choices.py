"""The allowed values of the library's settings, and the one check that enforces them.

This module imports nothing heavy: the entry points define and check their
flags from these before importing TensorFlow, so a mistyped flag is refused
at once rather than after seconds of start-up. The modules that implement
each setting re-export its names.
"""

DATASETS = ("cifar10", "cifar10_sample", "imagenet2012", "synthetic", "image_folder")
DATA_DIR_ENV = "ALEXNET_TF_DATA_DIR"
MODELS = ("alexnet", "four_layer", "cuda_convnet_11pct")
# conv1's stride 4 and three 3x3/2 pools leave a 1x1 map at 63x63; smaller inputs leave none.
ALEXNET_MIN_IMAGE_SIZE = 63
NORMS = ("lrn", "batchnorm", "none")
ACTIVATIONS = ("relu", "tanh")
TOWERS = (1, 2)
# AlexNet's kernel counts: the paper's, or its one-GPU comparison net's (half in conv1-conv4).
WIDTHS = ("full", "half")
# AlexNet's max-pooling: the paper's 3x3 stride 2, or the 2x2 stride 2 it was compared with.
POOLINGS = ("overlapping", "non_overlapping")
INITS = ("paper", "paper_bias0.1", "he")
MEAN_MODES = ("channel", "image")
LR_SCHEDULES = ("plateau", "cosine")
STRATEGIES = ("mirrored", "one_device", "multi_worker")
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
# Short names for the precisions, as the benchmark's flags and tables use them.
PRECISION_SHORT_NAMES = {"fp32": "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}
LRN_IMPLEMENTATIONS = ("auto", "native", "xla", "matmul", "tf_op")


def check_choice(name, value, allowed, error=ValueError):
    """Raises `error` with one line naming the allowed values unless `value` is one of them."""
    if value not in allowed:
        raise error(f"{name}={value!r} is not supported; choose one of {', '.join(map(repr, allowed))}.")
    return value


def model_switch_conflict(model, towers=1, width="full", pooling="overlapping"):
    """One line saying why these model settings do not go together, or None when they do.

    --width and --pooling are AlexNet's; the half-width net is the paper's one-GPU
    comparison net, so it has one tower; cuda_convnet_11pct has no towers (four_layer
    ignores --towers, as it always has).
    """
    if model != "alexnet":
        alexnet_only = {"width": (width, "full"), "pooling": (pooling, "overlapping")}
        if model == "cuda_convnet_11pct":
            alexnet_only["towers"] = (towers, 1)
        for name, (value, default) in alexnet_only.items():
            if value != default:
                return f"{name}={value!r} applies to model='alexnet' only, not model={model!r}; use {name}={default!r}."
    elif width == "half" and towers != 1:
        return (
            "width='half' is the paper's one-GPU comparison net and needs towers=1 (towers=2 is the "
            "two-GPU net, whose full kernel counts are split between the towers)."
        )
    return None
