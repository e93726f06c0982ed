"""The allowed values of the library's settings, and the one check that enforces them.

This module imports nothing heavy: the entry points define and check their
flags from these before importing TensorFlow, so a mistyped flag is refused
at once rather than after seconds of start-up. The modules that implement
each setting re-export its names.
"""

DATASETS = ("cifar10", "cifar10_sample", "imagenet2012", "synthetic", "image_folder")
DATA_DIR_ENV = "ALEXNET_TF_DATA_DIR"
MODELS = ("alexnet", "four_layer")
# conv1's stride 4 and three 3x3/2 pools leave a 1x1 map at 63x63; smaller inputs leave none.
ALEXNET_MIN_IMAGE_SIZE = 63
NORMS = ("lrn", "batchnorm", "none")
ACTIVATIONS = ("relu", "tanh")
TOWERS = (1, 2)
INITS = ("paper", "paper_bias0.1", "he")
MEAN_MODES = ("channel", "image")
LR_SCHEDULES = ("plateau", "cosine")
STRATEGIES = ("mirrored", "one_device", "multi_worker")
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
# Short names for the precisions, as the benchmark's flags and tables use them.
PRECISION_SHORT_NAMES = {"fp32": "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}
LRN_IMPLEMENTATIONS = ("auto", "xla", "matmul", "tf_op")


def check_choice(name, value, allowed, error=ValueError):
    """Raises `error` with one line naming the allowed values unless `value` is one of them."""
    if value not in allowed:
        raise error(f"{name}={value!r} is not supported; choose one of {', '.join(map(repr, allowed))}.")
    return value
