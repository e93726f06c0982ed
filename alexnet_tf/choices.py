"""The allowed values of the library's settings, in a module that imports nothing heavy.

The entry points define and check their flags from these before importing
TensorFlow, so a mistyped flag is refused at once rather than after seconds
of start-up. The modules that implement each setting re-export its names.
"""

DATASETS = ("cifar10", "cifar10_sample", "imagenet2012", "synthetic")
DATA_DIR_ENV = "ALEXNET_TF_DATA_DIR"
MODELS = ("alexnet", "four_layer")
# conv1's stride 4 and three 3x3/2 pools leave a 1x1 map at 63x63; smaller inputs leave none.
ALEXNET_MIN_IMAGE_SIZE = 63
NORMS = ("lrn", "batchnorm", "none")
ACTIVATIONS = ("relu", "tanh")
TOWERS = (1, 2)
INITS = ("paper", "paper_bias0.1", "he")
MEAN_MODES = ("channel", "image")
STRATEGIES = ("mirrored", "one_device", "multi_worker")
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
