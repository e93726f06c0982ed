"""The AlexNet model (Krizhevsky, Sutskever & Hinton, 2012), Keras functional API.

Layer by layer for a 224x224x3 input (the paper's figure 2):

    input 224x224x3, zero-padded by 2 to 228x228x3
    conv1  96 x 11x11 / 4, ReLU, norm       -> 55x55x96,  max-pool 3x3/2 -> 27x27x96
    conv2 256 x 5x5, pad 2, ReLU, norm      -> 27x27x256, max-pool 3x3/2 -> 13x13x256
    conv3 384 x 3x3, pad 1, ReLU            -> 13x13x384
    conv4 384 x 3x3, pad 1, ReLU            -> 13x13x384
    conv5 256 x 3x3, pad 1, ReLU            -> 13x13x256, max-pool 3x3/2 -> 6x6x256
    dropout 0.5, fc6 4096, ReLU
    dropout 0.5, fc7 4096, ReLU
    fc8 num_classes (logits; apply softmax in the loss)

Padding the 224 input by 2 is what makes conv1's 11x11/4 give 55x55, the
figure's size (feeding 227x227 with no padding is the other known fix).

With ``towers=2``, conv2, conv4 and conv5 see only their own tower's half of
the previous layer's maps (the paper's two-GPU model), and each tower's
LRN normalises only its own maps; conv3 and the fully connected layers see
both towers, as in the paper. Parameters for 1000 classes: 62,378,344 with
one tower, 60,965,224 with two.

Two switches give the paper's comparison nets:

- ``width="half"``: "a net with half as many kernels in each convolutional
  layer trained on one GPU" (section 3.2), whose footnote keeps the
  two-GPU net's 256 kernels in conv5 and the fully connected layers'
  4096 units, "to make the two nets have approximately the same number of
  parameters": conv1-conv5 48, 128, 192, 192, 256 kernels, one tower.
  59,798,312 parameters for 1000 classes.
- ``pooling="non_overlapping"``: 2x2 max-pooling with stride 2 in the
  three places of the paper's 3x3 stride-2 pooling, the scheme section 3.4
  compares it with ("produces output of equivalent dimensions"; overlapping
  pooling lowered top-1 and top-5 error by 0.4% and 0.3%). The output sizes
  are the same when each pooled map's side is odd, as at 224 (55 -> 27,
  27 -> 13, 13 -> 6); on an even side 2x2 pooling keeps one more row and
  column than 3x3 (floor(n/2) against floor((n-1)/2)), e.g. at 67 conv1's
  16x16 pools to 8x8 instead of 7x7, and fc6's input and the parameter
  count grow with it. It would build from 35x35 up, but the one minimum
  image size, 63x63, holds for both.

The net of cuda-convnet that section 3.3's CIFAR-10 figures come from is
`alexnet_tf.cuda_convnet`.
"""

import keras

from alexnet_tf.choices import ACTIVATIONS, ALEXNET_MIN_IMAGE_SIZE, INITS, MODELS, NORMS, TOWERS  # noqa: F401  (re-exported)
from alexnet_tf.choices import POOLINGS, WIDTHS  # noqa: F401  (re-exported)
from alexnet_tf.choices import check_choice, model_switch_conflict
from alexnet_tf.cuda_convnet import build_cuda_convnet_11pct
from alexnet_tf.layers import GroupedConv2D, LocalResponseNormalization

# The paper's initialisation: weights N(0, 0.01); biases 1 in these layers
# ("accelerates the early stages of learning by providing the ReLUs with
# positive inputs"), 0 in the others.
WEIGHT_STDDEV = 0.01
BIAS_ONE_LAYERS = frozenset({"conv2", "conv4", "conv5", "fc6", "fc7"})
# init="paper_bias0.1": the same layers' biases at 0.1 (Caffe's bvlc_alexnet value). With
# biases 1, fc6 and fc7 start out nearly the same for every image (their weighted input is
# ~0.1-0.2 against the bias's 1), and on small data the loss sits at ln(classes) for many
# epochs; see experiments/README.md.
SMALL_POSITIVE_BIAS = 0.1
# Kernels per convolutional layer: the paper's net, and its one-GPU comparison net (section 3.2).
CONV_FILTERS = {
    "full": {"conv1": 96, "conv2": 256, "conv3": 384, "conv4": 384, "conv5": 256},
    "half": {"conv1": 48, "conv2": 128, "conv3": 192, "conv4": 192, "conv5": 256},
}


def build_for(config, num_classes):
    """The untrained net a `TrainConfig` describes: AlexNet, Figure 1's four-layer net, or
    cuda-convnet's CIFAR-10 net with locally connected layers."""
    check_choice("model", config.model, MODELS)
    conflict = model_switch_conflict(config.model, config.towers, config.width, config.pooling)
    if conflict:
        raise ValueError(conflict)
    input_shape = (config.image_size, config.image_size, 3)
    if config.model == "four_layer":
        return build_four_layer_net(num_classes, config.activation, input_shape=input_shape, seed=config.seed)
    if config.model == "cuda_convnet_11pct":
        return build_cuda_convnet_11pct(
            num_classes, norm=config.norm, activation=config.activation, input_shape=input_shape, seed=config.seed
        )
    return build_alexnet(
        num_classes=num_classes,
        norm=config.norm,
        towers=config.towers,
        activation=config.activation,
        dropout=config.dropout,
        input_shape=input_shape,
        init=config.init,
        seed=config.seed,
        width=config.width,
        pooling=config.pooling,
    )


def _initializers(layer_name, init, seed):
    if init == "he":
        return {
            "kernel_initializer": keras.initializers.HeNormal(seed=seed),
            "bias_initializer": "zeros",
        }
    kernel = keras.initializers.RandomNormal(mean=0.0, stddev=WEIGHT_STDDEV, seed=seed)
    positive_bias = SMALL_POSITIVE_BIAS if init == "paper_bias0.1" else 1.0
    bias = keras.initializers.Constant(positive_bias if layer_name in BIAS_ONE_LAYERS else 0.0)
    return {"kernel_initializer": kernel, "bias_initializer": bias}


def build_alexnet(
    num_classes=1000,
    norm="lrn",
    towers=1,
    activation="relu",
    dropout=0.5,
    input_shape=(224, 224, 3),
    init="paper",
    seed=None,
    name=None,
    width="full",
    pooling="overlapping",
):
    """Builds AlexNet as a `keras.Model` that maps images to logits.

    Args:
      num_classes: size of fc8.
      norm: "lrn" (the paper: LRN after the ReLU of conv1 and conv2, before
        pooling), "batchnorm" (BatchNormalization in the same places, the
        modern ablation) or "none".
      towers: 1 (one network) or 2 (the paper's two-GPU model on one device).
      activation: "relu" (the paper) or "tanh" (for the ReLU-vs-tanh study).
      dropout: dropout rate before fc6 and fc7 (0 disables it).
      input_shape: (height, width, 3). Smaller inputs build too (the flatten
        size follows); conv1's stride and the three pools need at least 63x63.
      init: "paper" (weights N(0, 0.01); biases 1 in conv2, conv4, conv5,
        fc6, fc7, else 0), "paper_bias0.1" (the same with those biases at
        0.1: the smallest change found that leaves the paper's initial
        plateau on small data), or "he" (He-normal weights, zero biases,
        for inputs of unit scale).
      seed: optional int; makes the weight initialisation reproducible.
      name: model name; defaults to e.g. "alexnet_lrn", "alexnet_lrn_2towers",
        "alexnet_lrn_half" or "alexnet_lrn_non_overlapping".
      width: "full" (the paper's kernel counts) or "half" (its one-GPU
        comparison net: see the module docstring; needs towers=1).
      pooling: "overlapping" (the paper's 3x3 stride 2) or
        "non_overlapping" (2x2 stride 2; see the module docstring).
    """
    check_choice("norm", norm, NORMS)
    check_choice("towers", towers, TOWERS)
    check_choice("activation", activation, ACTIVATIONS)
    check_choice("init", init, INITS)
    check_choice("width", width, WIDTHS)
    check_choice("pooling", pooling, POOLINGS)
    conflict = model_switch_conflict("alexnet", towers, width, pooling)
    if conflict:
        raise ValueError(conflict)
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout={dropout!r} must be in [0, 1).")
    if num_classes < 1:
        raise ValueError(f"num_classes={num_classes!r} must be a positive integer.")
    if min(input_shape[:2]) < ALEXNET_MIN_IMAGE_SIZE:
        raise ValueError(
            f"input_shape={tuple(input_shape)!r} is too small for AlexNet; use at least "
            f"{ALEXNET_MIN_IMAGE_SIZE}x{ALEXNET_MIN_IMAGE_SIZE} (the four-layer net takes 32x32)."
        )

    seeds = iter(range(seed, seed + 100)) if seed is not None else None

    def initializers(layer_name):
        return _initializers(layer_name, init, next(seeds) if seeds is not None else None)

    # The LRN after a ReLU applies that ReLU itself, inside its fused passes (its relu_first): one
    # pass over conv1's and conv2's outputs fewer in the gradient. Those convs then have no
    # activation of their own; their weights, and so checkpoints, are the same.
    lrn_applies_relu = norm == "lrn" and activation == "relu"
    normalized_conv_activation = None if lrn_applies_relu else activation

    def conv(x, filters, kernel_size, layer_name, strides=1, padding="same", groups=1, activation=activation):
        return GroupedConv2D(
            filters,
            kernel_size,
            strides=strides,
            padding=padding,
            groups=groups,
            activation=activation,
            name=layer_name,
            **initializers(layer_name),
        )(x)

    def normalize(x, layer_name):
        if norm == "lrn":
            return LocalResponseNormalization(groups=towers, relu_first=lrn_applies_relu, name=f"{layer_name}_lrn")(x)
        if norm == "batchnorm":
            return keras.layers.BatchNormalization(name=f"{layer_name}_bn")(x)
        return x

    def pool(x, layer_name):
        pool_size = 3 if pooling == "overlapping" else 2
        return keras.layers.MaxPooling2D(pool_size=pool_size, strides=2, name=f"{layer_name}_pool")(x)

    filters = CONV_FILTERS[width]

    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = keras.layers.ZeroPadding2D(padding=2, name="pad")(inputs)
    x = conv(x, filters["conv1"], 11, "conv1", strides=4, padding="valid", activation=normalized_conv_activation)
    x = pool(normalize(x, "conv1"), "conv1")
    x = conv(x, filters["conv2"], 5, "conv2", groups=towers, activation=normalized_conv_activation)
    x = pool(normalize(x, "conv2"), "conv2")
    x = conv(x, filters["conv3"], 3, "conv3")
    x = conv(x, filters["conv4"], 3, "conv4", groups=towers)
    x = conv(x, filters["conv5"], 3, "conv5", groups=towers)
    x = pool(x, "conv5")
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dropout(dropout, name="fc6_dropout")(x)
    x = keras.layers.Dense(4096, activation=activation, name="fc6", **initializers("fc6"))(x)
    x = keras.layers.Dropout(dropout, name="fc7_dropout")(x)
    x = keras.layers.Dense(4096, activation=activation, name="fc7", **initializers("fc7"))(x)
    # fc8's output stays float32 under mixed precision so the loss and softmax are exact.
    logits = keras.layers.Dense(num_classes, name="fc8", dtype="float32", **initializers("fc8"))(x)

    if name is None:
        name = f"alexnet_{norm}" + ("_2towers" if towers == 2 else "")
        name += ("_half" if width == "half" else "") + ("_non_overlapping" if pooling == "non_overlapping" else "")
    return keras.Model(inputs, logits, name=name)


# Krizhevsky's cuda-convnet CIFAR-10 net "layers-80sec" (the four-layer net of the
# paper's Figure 1): its weight std per layer, biases 0.
FOUR_LAYER_WEIGHT_STDDEVS = {"conv1": 1e-4, "conv2": 1e-2, "conv3": 1e-2, "fc": 1e-2}


def build_four_layer_net(num_classes=10, activation="relu", input_shape=(32, 32, 3), seed=None, name=None):
    """The four-layer convolutional net of the paper's Figure 1 (ReLU vs tanh on CIFAR-10).

    The paper does not spell the net out; its author's cuda-convnet ships the
    CIFAR-10 net this follows (layers-80sec.cfg, "26% error in 80 seconds"),
    four layers with weights, for 32x32 inputs with the mean subtracted:

        conv1 32 x 5x5, pad 2, act -> 32x32x32, max-pool 3x3/2 -> 16x16x32
        conv2 32 x 5x5, pad 2, act -> 16x16x32, avg-pool 3x3/2 -> 8x8x32
        conv3 64 x 5x5, pad 2, act -> 8x8x64,   avg-pool 3x3/2 -> 4x4x64
        fc   num_classes (logits)

    with that file's initialisation (weights N(0, 1e-4) in conv1 for 0-255
    pixels, N(0, 1e-2) elsewhere, biases 0). cuda-convnet's local response
    normalisation layers are left out: the figure compares nonlinearities
    "with no regularization of any kind", and leaving out a layer that
    behaves differently under ReLU and tanh keeps the comparison to the
    nonlinearity alone.
    """
    check_choice("activation", activation, ACTIVATIONS)
    if num_classes < 1:
        raise ValueError(f"num_classes={num_classes!r} must be a positive integer.")
    seeds = iter(range(seed, seed + 10)) if seed is not None else None

    def initializers(layer_name):
        stddev = FOUR_LAYER_WEIGHT_STDDEVS[layer_name]
        layer_seed = next(seeds) if seeds is not None else None
        return {
            "kernel_initializer": keras.initializers.RandomNormal(mean=0.0, stddev=stddev, seed=layer_seed),
            "bias_initializer": "zeros",
        }

    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = inputs
    for layer_name, filters, pool in (("conv1", 32, "max"), ("conv2", 32, "avg"), ("conv3", 64, "avg")):
        x = keras.layers.Conv2D(
            filters, 5, padding="same", activation=activation, name=layer_name, **initializers(layer_name)
        )(x)
        pool_layer = keras.layers.MaxPooling2D if pool == "max" else keras.layers.AveragePooling2D
        x = pool_layer(pool_size=3, strides=2, padding="same", name=f"{layer_name}_pool")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    logits = keras.layers.Dense(num_classes, name="fc", dtype="float32", **initializers("fc"))(x)
    return keras.Model(inputs, logits, name=name or f"four_layer_{activation}")
