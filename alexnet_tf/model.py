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
"""

import keras

from alexnet_tf.layers import GroupedConv2D, LocalResponseNormalization

from alexnet_tf.choices import ACTIVATIONS, INITS, NORMS, TOWERS  # noqa: E402,F401  (re-exported)

# The paper's initialisation: weights N(0, 0.01); biases 1 in these layers
# ("accelerates the early stages of learning by providing the ReLUs with
# positive inputs"), 0 in the others.
WEIGHT_STDDEV = 0.01
BIAS_ONE_LAYERS = frozenset({"conv2", "conv4", "conv5", "fc6", "fc7"})


def _check_choice(name, value, allowed):
    if value not in allowed:
        raise ValueError(
            f"{name}={value!r} is not supported; choose one of {', '.join(map(repr, allowed))}."
        )


def _initializers(layer_name, init, seed):
    if init == "he":
        return {
            "kernel_initializer": keras.initializers.HeNormal(seed=seed),
            "bias_initializer": "zeros",
        }
    kernel = keras.initializers.RandomNormal(mean=0.0, stddev=WEIGHT_STDDEV, seed=seed)
    bias = keras.initializers.Constant(1.0 if layer_name in BIAS_ONE_LAYERS else 0.0)
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
        fc6, fc7, else 0) or "he" (He-normal weights, zero biases; a
        deviation from the paper for runs where its initialisation does not
        leave the initial plateau in a small budget).
      seed: optional int; makes the weight initialisation reproducible.
      name: model name; defaults to e.g. "alexnet_lrn" or "alexnet_lrn_2towers".
    """
    _check_choice("norm", norm, NORMS)
    _check_choice("towers", towers, TOWERS)
    _check_choice("activation", activation, ACTIVATIONS)
    _check_choice("init", init, INITS)
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout={dropout!r} must be in [0, 1).")
    if num_classes < 1:
        raise ValueError(f"num_classes={num_classes!r} must be a positive integer.")

    seeds = iter(range(seed, seed + 100)) if seed is not None else None

    def initializers(layer_name):
        return _initializers(layer_name, init, next(seeds) if seeds is not None else None)

    def conv(x, filters, kernel_size, layer_name, strides=1, padding="same", groups=1):
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
            return LocalResponseNormalization(groups=towers, name=f"{layer_name}_lrn")(x)
        if norm == "batchnorm":
            return keras.layers.BatchNormalization(name=f"{layer_name}_bn")(x)
        return x

    def pool(x, layer_name):
        return keras.layers.MaxPooling2D(pool_size=3, strides=2, name=f"{layer_name}_pool")(x)

    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = keras.layers.ZeroPadding2D(padding=2, name="pad")(inputs)
    x = conv(x, 96, 11, "conv1", strides=4, padding="valid")
    x = pool(normalize(x, "conv1"), "conv1")
    x = conv(x, 256, 5, "conv2", groups=towers)
    x = pool(normalize(x, "conv2"), "conv2")
    x = conv(x, 384, 3, "conv3")
    x = conv(x, 384, 3, "conv4", groups=towers)
    x = conv(x, 256, 3, "conv5", groups=towers)
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
    return keras.Model(inputs, logits, name=name)
