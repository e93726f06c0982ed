"""A locally connected layer: a convolution whose weights are not shared between positions.

Keras 3 has no ``LocallyConnected2D`` (Keras 2 had one); cuda-convnet's
``type=local`` layers, used by the CIFAR-10 net in `alexnet_tf.cuda_convnet`,
need it.
"""

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="alexnet_tf")
class LocallyConnected2D(keras.layers.Layer):
    """Like a 2-D convolution, but every output position has its own filters and biases.

    For an input ``x`` of shape ``(batch, H, W, C)`` zero-padded by ``padding``
    pixels on each side to ``xp``, output position ``(y, x)`` and filter ``f``::

        out[b, y, x, f] = bias[(y, x), f] + sum_{i, j, c} xp[b, y*s + i, x*s + j, c] * kernel[y, x, i, j, c, f]

    with ``s`` the stride. Output side: ``(H + 2*padding - kernel_size) // s + 1``.

    - ``padding`` is a number of zero pixels per side, as in cuda-convnet's
      layer files (not "same"/"valid"): cuda-convnet's ``padding=1`` with
      ``filterSize=3`` keeps the map's size.
    - ``kernel`` has shape ``(out_h, out_w, kh, kw, C, filters)``: one
      ``kh x kw x C x filters`` filter bank per output position, drawn
      independently by the initializer.
    - Biases are per output position and filter, as cuda-convnet's local
      layers have them. They are stored flat, shape
      ``(out_h * out_w * filters,)``: the trainer's optimiser
      (`alexnet_tf.optim.SGDCoupledWeightDecay`) decays variables of rank
      >= 2 only, and biases are not decayed, here as in cuda-convnet.

    The input's height, width and channels must be known when the layer is
    built (the weights depend on them). Computed as the ``kh * kw`` shifted
    slices of the padded input, concatenated into patches, and one batched
    matmul over positions.
    """

    def __init__(
        self,
        filters,
        kernel_size,
        strides=1,
        padding=0,
        activation=None,
        use_bias=True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.strides = _pair(strides, "strides")
        self.padding = int(padding)
        if self.filters < 1:
            raise ValueError(f"LocallyConnected2D filters must be >= 1, got {filters}.")
        if self.padding < 0:
            raise ValueError(f"LocallyConnected2D padding is zero pixels per side and must be >= 0, got {padding}.")
        self.activation = keras.activations.get(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)

    def output_size(self, height, width):
        """(out_h, out_w) for an input of height x width."""
        (kh, kw), (sh, sw), p = self.kernel_size, self.strides, self.padding
        return (height + 2 * p - kh) // sh + 1, (width + 2 * p - kw) // sw + 1

    def build(self, input_shape):
        height, width, channels = input_shape[1:]
        if None in (height, width, channels):
            raise ValueError(
                f"LocallyConnected2D needs a fixed input height, width and channels (its weights depend "
                f"on them), got input shape {tuple(input_shape)}."
            )
        out_h, out_w = self.output_size(height, width)
        if out_h < 1 or out_w < 1:
            raise ValueError(
                f"LocallyConnected2D: a {self.kernel_size} kernel does not fit a {height}x{width} input "
                f"padded by {self.padding}."
            )
        self.kernel = self.add_weight(
            name="kernel",
            shape=(out_h, out_w, *self.kernel_size, channels, self.filters),
            initializer=self.kernel_initializer,
        )
        self.bias = None
        if self.use_bias:
            self.bias = self.add_weight(
                name="bias", shape=(out_h * out_w * self.filters,), initializer=self.bias_initializer
            )

    def call(self, inputs):
        (kh, kw), (sh, sw), p = self.kernel_size, self.strides, self.padding
        height, width, channels = inputs.shape[1:]
        out_h, out_w = self.output_size(height, width)
        x = tf.pad(inputs, [[0, 0], [p, p], [p, p], [0, 0]]) if p else inputs
        # Patch entry order (i, j, c), the kernel's axes 2-4 flattened.
        patches = tf.concat(
            [
                x[:, i : i + sh * (out_h - 1) + 1 : sh, j : j + sw * (out_w - 1) + 1 : sw, :]
                for i in range(kh)
                for j in range(kw)
            ],
            axis=-1,
        )
        positions, patch_size = out_h * out_w, kh * kw * channels
        patches = tf.reshape(patches, [-1, positions, patch_size])
        kernel = tf.reshape(self.kernel, [positions, patch_size, self.filters])
        # [positions, batch, patch] x [positions, patch, filters]: one matmul per position.
        outputs = tf.matmul(tf.transpose(patches, [1, 0, 2]), kernel)
        outputs = tf.reshape(tf.transpose(outputs, [1, 0, 2]), [-1, out_h, out_w, self.filters])
        if self.use_bias:
            outputs = outputs + tf.reshape(self.bias, [out_h, out_w, self.filters])
        return self.activation(outputs)

    def compute_output_shape(self, input_shape):
        out_h, out_w = self.output_size(*input_shape[1:3])
        return (input_shape[0], out_h, out_w, self.filters)

    def get_config(self):
        config = super().get_config()
        config.update(
            filters=self.filters,
            kernel_size=self.kernel_size,
            strides=self.strides,
            padding=self.padding,
            activation=keras.activations.serialize(self.activation),
            use_bias=self.use_bias,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
            bias_initializer=keras.initializers.serialize(self.bias_initializer),
        )
        return config


def _pair(value, name):
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) and v >= 1 for v in pair):
        raise ValueError(f"LocallyConnected2D {name} must be a positive int or a pair of them, got {value!r}.")
    return pair
