"""cuda-convnet's CIFAR-10 net with locally connected layers: the net behind the paper's 11%.

Section 3.3 of the paper: "on CIFAR-10 ... a four-layer CNN achieved a 13%
test error rate without normalization and 11% with normalization". That
net is the example its first author shipped with cuda-convnet,
``example-layers/layers-conv-local-11pct.cfg`` and
``layer-params-conv-local-11pct.cfg``; ``layers-conv-local-13pct.cfg`` is
the file for the net without normalisation (and with 32 filters in local3
instead of 64). Followed here: the two 11pct files as of Krizhevsky's last
change to them in cuda-convnet's Subversion trunk (June 2012, "Cross-map
response layer can now be 'blocked'"), read from the GitHub export
github.com/mbrukman/cuda-convnet, ``example-layers/layers-conv-local-11pct.cfg``
and ``example-layers/layer-params-conv-local-11pct.cfg`` (github.com/dnouri/cuda-convnet
has the same text). The first version of the files (March 2012) differs:
a within-map ``rnorm`` layer with ``crossMap=1`` and size 5 before pool1,
32 filters in local3. The layers' semantics are from the same export's
``layer.py`` and ``src/cudaconv2/conv_util.cu``.

For a 24x24x3 input (see "Input" below)::

    conv1   64 x 5x5, pad 2, ReLU      -> 24x24x64   initW 1e-4
    pool1   max 3x3 / 2                -> 12x12x64
    rnorm1  cross-map, size 9          -> 12x12x64   scale 0.001, pow 0.75
    conv2   64 x 5x5, pad 2, ReLU      -> 12x12x64   initW 0.01
    rnorm2  cross-map, size 9          -> 12x12x64   scale 0.001, pow 0.75
    pool2   max 3x3 / 2                -> 6x6x64
    local3  64 x 3x3, pad 1, ReLU      -> 6x6x64     initW 0.04, locally connected
    local4  32 x 3x3, pad 1, ReLU      -> 6x6x32     initW 0.04, locally connected
    fc10    num_classes (logits)                     initW 0.01

Note the order: rnorm1 comes after pool1, rnorm2 before pool2, as in the
file. Parameters for 10 classes at 24x24: 2,112,970 (4,864 + 102,464 +
1,329,408 + 664,704 + 11,530).

How each of the file's settings is carried over:

- **Normalisation** (``type=cmrnorm``, cross-map response normalisation,
  ``blocked`` unset): cuda-convnet divides ``scale`` by ``size``
  (``layer.py``: ``dic['scale'] /= dic['size']`` for cross-map layers) and
  computes ``x / (1 + (scale/size) * sum x**2) ** pow`` over the maps
  ``f - size//2 .. f + size//2`` clipped at the ends (``kFCNorm``). That
  is `alexnet_tf.layers.LocalResponseNormalization` with ``size=9,
  alpha=0.001, beta=0.75, k=1``, reused as-is. ``norm="none"`` removes
  both layers (the 13pct file's net, but with the 11pct file's 64 filters in
  local3); ``norm="batchnorm"`` puts
  ``BatchNormalization`` in their two places (this project's ablation, not
  a cuda-convnet net).
- **Pooling** (``start=0, sizeX=3, stride=2, outputsX=0``): cuda-convnet
  makes ``ceil((n - 3) / 2) + 1`` outputs, its last window running over
  the map's end on even sizes. That is Keras's ``padding="same"`` max
  pooling for even n (which pads only at the end there) and ``"valid"``
  for odd n; the padding is picked per map size so that every size gives
  cuda-convnet's outputs.
- **Locally connected layers** (``type=local``): unshared weights and
  unshared biases per output position,
  `alexnet_tf.local_layers.LocallyConnected2D`.
- **Initialisation**: weights N(0, initW) per layer as above, biases 0
  (``initB`` unset). ``init`` settings of AlexNet do not apply.
- **Convolutions**: ``sharedBiases=1`` (one bias per filter, Keras's
  ``Conv2D``); ``partialSum`` only chunks cuda-convnet's weight-gradient
  sums on the GPU and has no counterpart.
- **fc10** has no nonlinearity; the softmax is in the loss, as for the
  other nets here (cuda-convnet's ``probs`` + ``logprob``).

Substituted or left out:

- **Per-layer optimisation** (the params file): learning rates
  ``epsW=0.001`` for weights and ``epsB=0.002`` for biases, momentum 0.9,
  weight costs ``wc`` 0 for conv1 and conv2, 0.004 for local3 and local4,
  0.01 for fc10, coupled through the momentum as in the paper (the
  gradient averaged over the batch, cuda-convnet's default batch 128). The
  trainer here has one ``--learning_rate`` and one ``--weight_decay`` for
  every layer (and no decay on biases); the closest is
  ``--learning_rate=0.001 --momentum=0.9 --weight_decay=0.004
  --batch_size=128``, with the file's schedule (about 350 epochs, then
  150 more with the validation batch folded in, then two 10-epoch steps
  at 1/10 and 1/100 of the learning rate) left to the user.
- **Input**: cuda-convnet's ``cifar-cropped`` data provider with
  ``--crop-border=4`` trains on random 24x24 crops of the 32x32 images
  (and their mirror images) with the training set's mean image subtracted
  on the 0-255 scale, and tests on the centre crop or, with
  ``--multiview-test``, on the four corner and centre crops and their
  mirrors. This net is built for whatever ``input_shape`` it is given (the
  local layers and fc10 follow its size): pass ``--image_size=24`` to train
  it at the file's sizes, with ``--mean=image --pca_std=0`` for the same
  mean subtraction and no PCA lighting (the pipeline's random crops and
  flips stay on). The pipeline's crops are then of the image rescaled to
  27x27 (its round(size x 256/224) rule), so they see a little more of
  the image at a slightly lower resolution than cuda-convnet's 24x24 crops
  of the original pixels; ``--image_size=28`` takes crops of the 32x32
  original at its own resolution instead, but builds larger local layers
  than the file's. ``evaluate --ten_crop`` is the multiview test.
- cuda-convnet's own numerics (its column-major layouts, GPU kernels and
  gradient-accumulation order) are not reproduced, only the functions the
  layers compute.
"""

import keras

from alexnet_tf.choices import ACTIVATIONS, NORMS, check_choice
from alexnet_tf.layers import LocalResponseNormalization
from alexnet_tf.local_layers import LocallyConnected2D

# The layer file's initW per layer: the std of the normal weights (biases start at 0).
WEIGHT_STDDEVS = {"conv1": 1e-4, "conv2": 1e-2, "local3": 4e-2, "local4": 4e-2, "fc10": 1e-2}
# [rnorm1] and [rnorm2]: type=cmrnorm, size=9, scale=0.001, pow=0.75; cuda-convnet adds 1.
RESPONSE_NORM = dict(size=9, alpha=1e-3, beta=0.75, k=1.0)
# Two 3x3 / 2 pools each need a map of at least 3x3: 6 -> 3 -> 1.
MIN_IMAGE_SIZE = 6


def max_pool_like_cuda_convnet(size, layer_name):
    """3x3 / 2 max pooling with cuda-convnet's output count, ceil((size - 3) / 2) + 1."""
    # Even sizes: the last window runs one pixel over the end, which is what "same" pads there.
    padding = "same" if size % 2 == 0 else "valid"
    return keras.layers.MaxPooling2D(pool_size=3, strides=2, padding=padding, name=layer_name)


def build_cuda_convnet_11pct(
    num_classes=10, norm="lrn", activation="relu", input_shape=(24, 24, 3), seed=None, name=None
):
    """cuda-convnet's layers-conv-local-11pct net (see the module docstring).

    Args:
      num_classes: size of fc10.
      norm: "lrn" (the file's two cross-map response normalisation layers:
        the 11% net), "none" (without them: the 13% net) or "batchnorm"
        (BatchNormalization in their places).
      activation: "relu" (the file's) or "tanh".
      input_shape: (height, width, 3), at least 6x6; 24x24 is the file's.
      seed: optional int; makes the weight initialisation reproducible.
      name: model name; defaults to e.g. "cuda_convnet_11pct_lrn".
    """
    check_choice("norm", norm, NORMS)
    check_choice("activation", activation, ACTIVATIONS)
    if num_classes < 1:
        raise ValueError(f"num_classes={num_classes!r} must be a positive integer.")
    if input_shape[0] != input_shape[1]:
        raise ValueError(f"input_shape={tuple(input_shape)!r} must be square, as cuda-convnet's images are.")
    if input_shape[0] < MIN_IMAGE_SIZE:
        raise ValueError(
            f"input_shape={tuple(input_shape)!r} is too small for the cuda-convnet net; use at least "
            f"{MIN_IMAGE_SIZE}x{MIN_IMAGE_SIZE} (its two 3x3 pools need it; the file's size is 24x24)."
        )
    seeds = iter(range(seed, seed + 10)) if seed is not None else None

    def initializers(layer_name):
        layer_seed = next(seeds) if seeds is not None else None
        return {
            "kernel_initializer": keras.initializers.RandomNormal(
                mean=0.0, stddev=WEIGHT_STDDEVS[layer_name], seed=layer_seed
            ),
            "bias_initializer": "zeros",
        }

    def normalize(x, layer_name):
        if norm == "lrn":
            return LocalResponseNormalization(**RESPONSE_NORM, name=layer_name)(x)
        if norm == "batchnorm":
            return keras.layers.BatchNormalization(name=f"{layer_name}_bn")(x)
        return x

    def pool(x, layer_name):
        return max_pool_like_cuda_convnet(x.shape[1], layer_name)(x)

    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = keras.layers.Conv2D(64, 5, padding="same", activation=activation, name="conv1", **initializers("conv1"))(inputs)
    x = pool(x, "pool1")
    x = normalize(x, "rnorm1")
    x = keras.layers.Conv2D(64, 5, padding="same", activation=activation, name="conv2", **initializers("conv2"))(x)
    x = normalize(x, "rnorm2")
    x = pool(x, "pool2")
    x = LocallyConnected2D(64, 3, padding=1, activation=activation, name="local3", **initializers("local3"))(x)
    x = LocallyConnected2D(32, 3, padding=1, activation=activation, name="local4", **initializers("local4"))(x)
    x = keras.layers.Flatten(name="flatten")(x)
    # Logits stay float32 under mixed precision so the loss and softmax are exact.
    logits = keras.layers.Dense(num_classes, name="fc10", dtype="float32", **initializers("fc10"))(x)
    return keras.Model(inputs, logits, name=name or f"cuda_convnet_11pct_{norm}")
