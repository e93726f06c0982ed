"""Layers AlexNet needs that Keras does not ship as-is.

- `LocalResponseNormalization`: the paper's cross-channel LRN, with the
  α-divided-by-n convention of the authors' cuda-convnet code, Caffe and
  PyTorch.
- `GroupedConv2D`: a `Conv2D` whose groups run as separate convolutions,
  for the paper's two-tower layers.
"""

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="alexnet_tf")
class LocalResponseNormalization(keras.layers.Layer):
    """Cross-channel local response normalisation (AlexNet, section 3.3).

    For channel ``i`` of ``N`` at one spatial position::

        b_i = a_i / (k + (alpha / size) * sum_{j=max(0, i-size//2)}^{min(N-1, i+size//2)} a_j**2) ** beta

    Conventions, so that numbers can be compared across codebases:

    - **This layer, cuda-convnet2 (the authors' code), Caffe and PyTorch**
      divide ``alpha`` by ``size``. The defaults ``size=5, alpha=1e-4,
      beta=0.75, k=2`` are the paper's hyper-parameters read that way and
      equal PyTorch ``nn.LocalResponseNorm(5, 1e-4, 0.75, 2)``.
    - **The paper's printed formula** has no ``1/size``; read literally,
      its alpha would be ``5e-4`` in this layer's convention. The authors'
      code, which produced the paper's results, divides, so the divided
      form is the default here.
    - **TensorFlow's op** ``tf.nn.local_response_normalization(x,
      depth_radius, bias, alpha, beta)`` does not divide. This layer calls
      it with ``depth_radius = size // 2``, ``bias = k``,
      ``alpha = alpha / size``, ``beta = beta``: the defaults become
      ``depth_radius=2, bias=2, alpha=2e-5, beta=0.75``.

    The window is clipped at the first and last channel (no padding terms),
    as in all of the above. ``groups > 1`` normalises each group of
    ``channels / groups`` consecutive channels on its own, as the paper's
    two-GPU model did (each GPU normalised only its own maps).

    The op is computed in float32 whatever the input dtype, and the result
    cast back: TensorFlow has no half-precision LRN kernel on GPU, and the
    squared sums lose precision in bfloat16.
    """

    def __init__(self, size=5, alpha=1e-4, beta=0.75, k=2.0, groups=1, **kwargs):
        # Keep the caller's float dtype (Keras would cast inputs to the policy's
        # compute dtype): call() runs the op in float32 and returns that dtype.
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        if size < 1 or size % 2 == 0:
            raise ValueError(
                f"LocalResponseNormalization size must be a positive odd number "
                f"(the window is centred on the channel), got {size}."
            )
        if groups < 1:
            raise ValueError(f"LocalResponseNormalization groups must be >= 1, got {groups}.")
        self.size = int(size)
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.k = float(k)
        self.groups = int(groups)

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels is not None and channels % self.groups:
            raise ValueError(
                f"LocalResponseNormalization with groups={self.groups} needs a channel "
                f"count divisible by it, got {channels}."
            )
        super().build(input_shape)

    def call(self, inputs):
        x = tf.cast(inputs, tf.float32)
        if self.groups > 1:
            # Channels-last memory is [..., group, channel-in-group]: folding the
            # group axis into the width makes the op's window stay in its group.
            shape = tf.shape(x)
            x = tf.reshape(
                x, [shape[0], shape[1], shape[2] * self.groups, shape[3] // self.groups]
            )
        y = tf.nn.local_response_normalization(
            x,
            depth_radius=self.size // 2,
            bias=self.k,
            alpha=self.alpha / self.size,
            beta=self.beta,
        )
        if self.groups > 1:
            y = tf.reshape(y, shape)
        return tf.cast(y, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            size=self.size, alpha=self.alpha, beta=self.beta, k=self.k, groups=self.groups
        )
        return config


@keras.saving.register_keras_serializable(package="alexnet_tf")
class GroupedConv2D(keras.layers.Conv2D):
    """`keras.layers.Conv2D` that runs each of its ``groups`` as its own convolution.

    Same weights (kernel ``(kh, kw, in/groups, filters)``), config and
    results as ``Conv2D(groups=...)``; only the execution differs. On CPU,
    TensorFlow's grouped-convolution path is several times slower than
    separate convolutions (measured for conv2's shape, batch 32: 1.66 s vs
    0.23 s forward + input gradient), so the groups are split and concatenated.
    """

    def convolution_op(self, inputs, kernel):
        if self.groups == 1:
            return super().convolution_op(inputs, kernel)
        input_groups = tf.split(inputs, self.groups, axis=-1)
        kernel_groups = tf.split(kernel, self.groups, axis=-1)
        return tf.concat(
            [super(GroupedConv2D, self).convolution_op(x, w) for x, w in zip(input_groups, kernel_groups)],
            axis=-1,
        )
