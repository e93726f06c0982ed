"""Layers AlexNet needs that Keras does not ship as-is.

- `LocalResponseNormalization`: the paper's cross-channel LRN, with the
  α-divided-by-n convention of the authors' cuda-convnet code, Caffe and
  PyTorch.
- `GroupedConv2D`: a `Conv2D` whose groups run as separate convolutions,
  for the paper's two-tower layers.
"""

import functools

import keras
import numpy as np
import tensorflow as tf

from alexnet_tf import native_lrn
from alexnet_tf.choices import LRN_IMPLEMENTATIONS, check_choice  # noqa: F401  (LRN_IMPLEMENTATIONS re-exported)


def _inverse_power(scale, beta):
    """scale ** -beta for scale >= k > 0, with exact fast forms for common betas.

    The paper's beta = 0.75 is rsqrt(s) * sqrt(rsqrt(s)): two cheap
    instructions instead of exp(-beta * log(s)), whose polynomial
    evaluations cost about a third of the fused kernel's time on CPU.
    """
    if beta == 0.75:
        r = tf.math.rsqrt(scale)
        return r * tf.sqrt(r)
    if beta == 0.5:
        return tf.math.rsqrt(scale)
    if beta == 1.0:
        return tf.math.reciprocal(scale)
    return tf.exp(-beta * tf.math.log(scale))


def _kept_power(scale, beta):
    """The power of the scale s that the "xla" forward keeps for the gradient.

    Chosen so that both powers the layer needs, s**-beta (forward and
    gradient) and s**(-beta-1) (gradient), follow from it by multiplications
    alone (`_powers_from_kept`): the paper's beta = 0.75 keeps s**-1/4, whose
    cube and seventh power they are. Evaluating a power of s costs about as
    much as the rest of a fused pass on CPU, so it is done once per step, in
    the forward.
    """
    if beta == 0.75:
        return tf.sqrt(tf.math.rsqrt(scale))
    if beta == 0.5:
        return tf.math.rsqrt(scale)
    if beta == 1.0:
        return tf.math.reciprocal(scale)
    return scale  # any other beta: keep s, and take the powers with exp and log


def _powers_from_kept(kept, beta):
    """(s**-beta, s**(-beta-1)) from `_kept_power(s, beta)`."""
    if beta == 0.75:
        square = kept * kept
        power = square * kept
        return power, power * (square * square)
    if beta == 0.5:
        return kept, kept * kept * kept
    if beta == 1.0:
        return kept, kept * kept
    power = tf.exp(-beta * tf.math.log(kept))
    return power, power / kept


def _shifted_window_sum(v, radius, groups):
    """Sum over the clipped channel window, as 2*radius+1 shifted slices of a zero-padded copy.

    The zero padding is the clipping at the first and last channel. With
    groups, a shift's terms that would cross a group boundary are multiplied
    by a constant 0/1 channel mask: cheaper under XLA than reshaping to
    [..., groups, channels/groups], which leaves short inner loops (measured:
    two-tower LRN fwd+bwd 0.6-0.7x the reshaped form's time). Under XLA the
    slices fuse with the surrounding element-wise work into one pass over
    memory.
    """
    channels = v.shape[-1]
    per_group = channels // groups
    padded = tf.pad(v, [[0, 0]] * (v.shape.rank - 1) + [[radius, radius]])
    channel = np.arange(channels)
    terms = []
    for shift in range(-radius, radius + 1):
        term = padded[..., shift + radius : shift + radius + channels]
        neighbour = channel + shift
        in_group = (neighbour // per_group == channel // per_group) | (neighbour < 0) | (neighbour >= channels)
        if not in_group.all():
            term = term * in_group.astype(v.dtype.as_numpy_dtype)
        terms.append(term)
    return tf.add_n(terms)


def _band_matrix(channels, radius, groups):
    """[channels, channels] 0/1 matrix: entry (i, j) is 1 when j is in i's window (same group)."""
    index = np.arange(channels)
    group = index // (channels // groups)
    band = (np.abs(index[:, None] - index[None, :]) <= radius) & (group[:, None] == group[None, :])
    return band.astype(np.float32)


def _banded_matmul_window_sum(v, band):
    """Sum over the clipped channel window as one [pixels, C] x [C, C] matmul.

    Wastes C / size of its FLOPs on zeros, but a single matmul is one pass
    over memory where the shifted slices are 2*radius+2 passes when XLA does
    not fuse them.
    """
    shape = tf.shape(v)
    summed = tf.matmul(tf.reshape(v, [-1, v.shape[-1]]), band)
    return tf.reshape(summed, shape)


@functools.cache
def _native_lrn(radius, alpha_over_size, beta, k, groups, relu_first):
    """The LRN as a `tf.custom_gradient` function of the C++ kernel's two ops (`native_lrn`)."""
    library = native_lrn.ops()
    settings = dict(
        radius=radius, alpha_over_size=alpha_over_size, beta=beta, k=k, groups=groups, relu_first=relu_first
    )

    @tf.custom_gradient
    def lrn(inputs):
        # The kernel reads and writes float32 and bfloat16; other dtypes (float16) go through float32.
        kernel_dtype = inputs.dtype if inputs.dtype in (tf.float32, tf.bfloat16) else tf.float32
        kernel_inputs = tf.cast(inputs, kernel_dtype)
        outputs, kept = library.alexnet_lrn_forward(kernel_inputs, **settings)

        def gradient(upstream):
            input_gradient = library.alexnet_lrn_backward(
                kernel_inputs, tf.cast(upstream, kernel_dtype), kept, **settings
            )
            return tf.cast(input_gradient, inputs.dtype)

        return tf.cast(outputs, inputs.dtype), gradient

    return lrn


def _inside_xla_compilation():
    """Whether the function being traced is compiled by XLA (`jit_compile=True`), which cannot run
    the native kernel's ops. TensorFlow has no public test for it; this private one is pinned by
    `test_lrn_auto_is_xla_inside_a_jit_compiled_function`."""
    from tensorflow.python.framework import ops
    from tensorflow.python.ops import control_flow_util

    return control_flow_util.GraphOrParentsInXlaContext(ops.get_default_graph())


@functools.cache
def _custom_gradient_lrn(implementation, radius, alpha_over_size, beta, k, groups, relu_first):
    """The LRN as a `tf.custom_gradient` function of its hyper-parameters ("xla" or "matmul").

    With s = k + (alpha/size) * W(x**2), W the clipped window sum (a
    symmetric operator), and y = x * s**-beta:

        dx = dy * s**-beta - (2 * beta * alpha / size) * x * W(dy * x * s**(-beta-1))

    With `relu_first` the function takes the pre-activation z and uses
    x = relu(z) inside the same fused passes; its gradient is then dx masked
    by z > 0, so that no separate ReLU pass or ReLU gradient pass runs.

    "xla" runs as two XLA computations. The forward writes x**2 zero-padded
    along the channels, then the power of s it keeps for the gradient (one
    float32 tensor, from which s**-beta and s**(-beta-1) follow by
    multiplications: `_kept_power`), then y. The backward writes
    t = dy * x * s**(-beta-1), zero-padded, then dx. On this project's CPU
    the powers, not memory traffic, dominate such a pass, so they are
    evaluated once, in the forward: recomputing s and its powers in the
    backward from the input alone (three evaluations per step) or keeping
    s itself (two) measured slower, for conv1's and conv2's shapes in
    bfloat16 and in float32, than keeping the power.
    Casts to and from float32 happen inside the XLA computations, so they
    fuse: bfloat16 inputs, outputs and gradients stay bfloat16 in memory.

    "matmul" keeps s from the forward for the backward (recomputing it would
    cost another matmul).

    Cached per hyper-parameters (not per layer): layers with equal settings
    share one function and its XLA compilations, and no layer is kept alive
    by the cache.
    """
    gradient_scale = 2.0 * beta * alpha_over_size

    def activate(inputs):
        x = tf.cast(inputs, tf.float32)
        return tf.nn.relu(x) if relu_first else x

    def through_relu(dx, x):
        # relu'(z) is 1 where z > 0, that is where x = relu(z) > 0 (TensorFlow's ReluGrad convention at 0).
        return tf.where(x > 0.0, dx, 0.0) if relu_first else dx

    if implementation == "xla":
        window_sum = functools.partial(_shifted_window_sum, radius=radius, groups=groups)
        fused = functools.partial(tf.function, jit_compile=True, autograph=False)

        @fused
        def forward(inputs):
            x = activate(inputs)
            kept = _kept_power(k + alpha_over_size * window_sum(tf.square(x)), beta)
            power, _ = _powers_from_kept(kept, beta)
            return tf.cast(x * power, inputs.dtype), kept

        @fused
        def backward(inputs, upstream, kept):
            x = activate(inputs)
            dy = tf.cast(upstream, tf.float32)
            power, power_over_scale = _powers_from_kept(kept, beta)
            dx = dy * power - gradient_scale * x * window_sum(dy * x * power_over_scale)
            return tf.cast(through_relu(dx, x), inputs.dtype)

        @tf.custom_gradient
        def lrn(inputs):
            # stop_gradient: under an eager GradientTape, a tf.function whose input is watched is
            # compiled in a variant that also writes out its intermediates for its own gradient,
            # which the custom gradient below makes useless.
            outputs, kept = forward(tf.stop_gradient(inputs))

            def gradient(upstream):
                return backward(inputs, upstream, kept)

            return outputs, gradient

        return lrn

    bands = {}  # per channel count, made on first use

    def window_sum(v):
        channels = v.shape[-1]
        if channels not in bands:
            bands[channels] = _band_matrix(channels, radius, groups)
        return _banded_matmul_window_sum(v, bands[channels])

    @tf.custom_gradient
    def lrn_keeping_scale(inputs):
        x = activate(inputs)
        scale = k + alpha_over_size * window_sum(tf.square(x))
        outputs = tf.cast(x * _inverse_power(scale, beta), inputs.dtype)

        def gradient(upstream):
            dy = tf.cast(upstream, tf.float32)
            power = _inverse_power(scale, beta)
            dx = dy * power - gradient_scale * x * window_sum(dy * x * power / scale)
            return tf.cast(through_relu(dx, x), inputs.dtype)

        return outputs, gradient

    return lrn_keeping_scale


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
      depth_radius, bias, alpha, beta)`` does not divide. This layer equals
      it with ``depth_radius = size // 2``, ``bias = k``,
      ``alpha = alpha / size``, ``beta = beta``: the defaults become
      ``depth_radius=2, bias=2, alpha=2e-5, beta=0.75``.

    The window is clipped at the first and last channel (no padding terms),
    as in all of the above. ``groups > 1`` normalises each group of
    ``channels / groups`` consecutive channels on its own, as the paper's
    two-GPU model did (each GPU normalised only its own maps).

    The layer is computed in float32 whatever the input dtype, and the
    result cast back: TensorFlow has no half-precision LRN kernel on GPU,
    and the squared sums lose precision in bfloat16.

    ``relu_first=True`` makes the layer take the pre-activation ``z`` and
    normalise ``a = relu(z)``: the paper's conv -> ReLU -> LRN with the ReLU
    inside the layer's own fused passes, forward and gradient, instead of a
    separate ReLU gradient pass over the same tensor (``build_alexnet`` does
    this at conv1 and conv2; the conv's weights are unchanged).

    ``implementation`` picks how it is computed; all give the same values
    (within float32 rounding, tested against TensorFlow's op, forward and
    gradient):

    - ``"native"``: this project's C++ kernel (`native_lrn`, built with the
      machine's compiler on first use): forward and gradient each one pass
      over memory, in float32, reading and writing bfloat16 as such. The
      fastest on CPU (``python -m alexnet_tf.bench --lrn_layer``); it cannot
      run inside XLA-compiled functions or in a SavedModel served without it.
    - ``"xla"``: the window sum as shifted slices, with a closed-form
      gradient (``tf.custom_gradient``) instead of TensorFlow's
      per-element gradient loop; forward and backward are one XLA
      computation each, of a few fused passes over memory, and the forward
      keeps one float32 power of ``k + (alpha/size) * sum`` for the
      backward (see `_custom_gradient_lrn`). On this project's 2-core CPU
      it is several times faster than the op, forward + input gradient
      (``python -m alexnet_tf.bench --lrn_layer``).
    - ``"matmul"``: the same maths without XLA, the window sum as a banded
      [C, C] matmul (about 2-3x faster than the op on that CPU). For
      platforms without XLA.
    - ``"tf_op"``: ``tf.nn.local_response_normalization`` (cuDNN's LRN on GPU).
    - ``"auto"`` (default): ``"tf_op"`` when a GPU is visible (cuDNN's
      kernel is a known-good single fused op there; the others were measured
      only on CPU); on CPU ``"native"`` where it builds, outside
      XLA-compiled functions and unless `native_lrn.enable(False)`, else
      ``"xla"`` (`serving.Predictor` sets its model's to ``"xla"``, so that
      its SavedModel export holds only TensorFlow's ops).
    """

    def __init__(
        self, size=5, alpha=1e-4, beta=0.75, k=2.0, groups=1, implementation="auto", relu_first=False, **kwargs
    ):
        # Keep the caller's float dtype (Keras would cast inputs to the policy's
        # compute dtype): call() computes in float32 and returns that dtype.
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        if size < 1 or size % 2 == 0:
            raise ValueError(
                f"LocalResponseNormalization size must be a positive odd number "
                f"(the window is centred on the channel), got {size}."
            )
        if groups < 1:
            raise ValueError(f"LocalResponseNormalization groups must be >= 1, got {groups}.")
        check_choice("LocalResponseNormalization implementation", implementation, LRN_IMPLEMENTATIONS)
        if k <= 0:
            # The fast forms take rsqrt/log of k + (alpha/size) * sum: k > 0 keeps that positive.
            raise ValueError(f"LocalResponseNormalization k must be > 0, got {k}.")
        self.size = int(size)
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.k = float(k)
        self.groups = int(groups)
        self.implementation = implementation
        self.relu_first = bool(relu_first)

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels is not None and channels % self.groups:
            raise ValueError(
                f"LocalResponseNormalization with groups={self.groups} needs a channel "
                f"count divisible by it, got {channels}."
            )
        super().build(input_shape)

    def resolved_implementation(self):
        """The implementation `call` uses: "auto" resolved for the devices visible now.

        "auto" is "tf_op" when a GPU is visible; on CPU, "native" where the
        kernel builds and loads and `native_lrn.enable` has not turned it
        off, outside XLA-compiled functions; "xla" otherwise.
        """
        if self.implementation != "auto":
            return self.implementation
        if tf.config.list_logical_devices("GPU"):
            return "tf_op"
        if native_lrn.enabled() and native_lrn.ops() is not None and not _inside_xla_compilation():
            return "native"
        return "xla"

    def call(self, inputs):
        implementation = self.resolved_implementation()
        if implementation == "tf_op":
            return self._tf_op(inputs)
        settings = (self.size // 2, self.alpha / self.size, self.beta, self.k, self.groups, self.relu_first)
        if implementation == "native":
            if _inside_xla_compilation():
                raise ValueError(
                    "LocalResponseNormalization implementation='native' cannot run inside an XLA-compiled "
                    "function (jit_compile=True); use implementation='auto' or 'xla' there."
                )
            if native_lrn.ops() is None:
                raise RuntimeError(
                    f"LocalResponseNormalization implementation='native' is unavailable here "
                    f"({native_lrn.unavailable_reason()}); use implementation='xla'."
                )
            return _native_lrn(*settings)(inputs)
        return _custom_gradient_lrn(implementation, *settings)(inputs)

    def _tf_op(self, inputs):
        x = tf.cast(inputs, tf.float32)
        if self.relu_first:
            x = tf.nn.relu(x)
        if self.groups > 1:
            # Channels-last memory is [..., group, channel-in-group]: folding the
            # group axis into the width makes the op's window stay in its group.
            shape = tf.shape(x)
            x = tf.reshape(x, [shape[0], shape[1], shape[2] * self.groups, shape[3] // self.groups])
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
            size=self.size,
            alpha=self.alpha,
            beta=self.beta,
            k=self.k,
            groups=self.groups,
            implementation=self.implementation,
            relu_first=self.relu_first,
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
