import os
import shutil

import numpy as np
import pytest
import tensorflow as tf
import keras

from alexnet_tf import native_lrn
from alexnet_tf.cuda_convnet import RESPONSE_NORM
from alexnet_tf.layers import LRN_IMPLEMENTATIONS, GroupedConv2D, LocalResponseNormalization

# The native kernel where it builds here (test_native_kernel_builds_where_there_is_a_compiler
# makes sure it does wherever g++ is).
NATIVE = ["native"] if native_lrn.ops() is not None else []
IMPLEMENTATIONS = [i for i in LRN_IMPLEMENTATIONS if i != "auto" and (i != "native" or NATIVE)]
FAST_IMPLEMENTATIONS = [*NATIVE, "xla", "matmul"]


def lrn_reference(a, size=5, alpha=1e-4, beta=0.75, k=2.0):
    """The paper's formula, with alpha divided by size (cuda-convnet2/Caffe/PyTorch)."""
    a = np.asarray(a, np.float64)
    channels = a.shape[-1]
    out = np.empty_like(a)
    for i in range(channels):
        lo, hi = max(0, i - size // 2), min(channels - 1, i + size // 2)
        sum_sq = np.sum(a[..., lo : hi + 1] ** 2, axis=-1)
        out[..., i] = a[..., i] / (k + alpha / size * sum_sq) ** beta
    return out


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("channels", [1, 2, 3, 5, 6, 16, 96])
@pytest.mark.parametrize(
    "params",
    [
        dict(),  # the paper's values
        dict(size=3, alpha=0.5, beta=0.75, k=1.0),  # strong normalisation: edge clipping shows
        dict(size=7, alpha=2.0, beta=0.5, k=1.5),
    ],
)
def test_lrn_matches_numpy_reference(channels, params, implementation):
    rng = np.random.default_rng(channels)
    x = rng.normal(scale=3.0, size=(2, 3, 4, channels)).astype(np.float32)
    got = LocalResponseNormalization(implementation=implementation, **params)(x).numpy()
    want = lrn_reference(x, **params)
    assert np.max(np.abs(got - want)) <= 1e-5


def test_lrn_paper_defaults_are_tf_op_with_alpha_over_size():
    x = tf.random.normal((2, 5, 5, 16), stddev=30.0)
    want = tf.nn.local_response_normalization(x, depth_radius=2, bias=2.0, alpha=2e-5, beta=0.75)
    got = LocalResponseNormalization(implementation="tf_op")(x)
    np.testing.assert_array_equal(got.numpy(), want.numpy())
    # The default (fast) implementation: the same to float32 rounding.
    np.testing.assert_allclose(LocalResponseNormalization()(x).numpy(), want.numpy(), rtol=1e-5, atol=1e-5)


def _lrn_and_gradient(layer, x, upstream):
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x)
    return y, tape.gradient(y, x, output_gradients=upstream)


# Each (channels, groups) with channels divisible by groups; 96 and 256 are conv1's and conv2's.
CHANNELS_GROUPS = [(1, 1), (2, 1), (3, 1), (5, 1), (96, 1), (256, 1), (2, 2), (96, 2), (256, 2)]


@pytest.mark.parametrize("implementation", FAST_IMPLEMENTATIONS)
@pytest.mark.parametrize("channels,groups", CHANNELS_GROUPS)
@pytest.mark.parametrize(
    "params",
    [
        dict(),  # the paper's values (beta = 0.75 takes the rsqrt form)
        dict(size=3, alpha=0.5, beta=0.6, k=1.0),  # general beta: the exp/log form
        dict(size=7, alpha=2.0, beta=1.0, k=1.5),
        dict(size=5, alpha=1.0, beta=0.5, k=1.0),  # each beta with a fast form of the kept power
    ],
)
@pytest.mark.parametrize("stddev", [1.0, 300.0])  # 300: sums of squares far above k
def test_fast_lrn_forward_and_gradient_match_tf_op(implementation, channels, groups, params, stddev):
    # The TensorFlow op stays the reference: "within 1e-5" is |got - want| <= 1e-5 * max(1, |want|),
    # float32 rounding for outputs of size ~100.
    rng = np.random.default_rng(channels * 10 + groups)
    x = tf.constant(rng.normal(scale=stddev, size=(3, 4, 5, channels)).astype(np.float32))
    upstream = tf.constant(rng.normal(size=x.shape).astype(np.float32))
    want_y, want_dx = _lrn_and_gradient(
        LocalResponseNormalization(groups=groups, implementation="tf_op", **params), x, upstream
    )
    got_y, got_dx = _lrn_and_gradient(
        LocalResponseNormalization(groups=groups, implementation=implementation, **params), x, upstream
    )
    np.testing.assert_allclose(got_y.numpy(), want_y.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got_dx.numpy(), want_dx.numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("implementation", FAST_IMPLEMENTATIONS)
@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_fast_lrn_half_precision_matches_tf_op(implementation, dtype):
    x = tf.cast(tf.random.stateless_normal((2, 4, 4, 96), seed=[1, 2], stddev=20.0), dtype)
    upstream = tf.cast(tf.random.stateless_normal(x.shape, seed=[3, 4]), dtype)
    want_y, want_dx = _lrn_and_gradient(LocalResponseNormalization(implementation="tf_op"), x, upstream)
    got_y, got_dx = _lrn_and_gradient(LocalResponseNormalization(implementation=implementation), x, upstream)
    assert got_y.dtype == got_dx.dtype == tf.as_dtype(dtype)
    # Both compute in float32 and round once to the half type: at most one unit in the last place apart.
    eps = {"bfloat16": 2.0**-7, "float16": 2.0**-10}[dtype]  # one ulp, relative
    for got, want in ((got_y, want_y), (got_dx, want_dx)):
        got, want = tf.cast(got, tf.float32).numpy(), tf.cast(want, tf.float32).numpy()
        np.testing.assert_allclose(got, want, rtol=eps, atol=1e-5)


def _relu_then_lrn_and_gradient(layer, z, upstream):
    """The reference for relu_first: TensorFlow's ReLU, then `layer`, differentiated through both."""
    with tf.GradientTape() as tape:
        tape.watch(z)
        y = layer(tf.nn.relu(z))
    return y, tape.gradient(y, z, output_gradients=upstream)


def _pre_activations(shape, stddev, seed):
    """Normal pre-activations with a few exact zeros, where relu's gradient is TensorFlow's 0."""
    rng = np.random.default_rng(seed)
    z = rng.normal(scale=stddev, size=shape).astype(np.float32)
    z.reshape(-1)[::7] = 0.0
    return tf.constant(z), tf.constant(rng.normal(size=shape).astype(np.float32))


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("channels,groups", [(5, 1), (96, 1), (256, 1), (96, 2), (256, 2)])
@pytest.mark.parametrize("params", [dict(), dict(size=3, alpha=0.5, beta=0.6, k=1.0)])
@pytest.mark.parametrize("stddev", [1.0, 300.0])
def test_relu_first_lrn_matches_tf_relu_then_tf_op_in_float32(implementation, channels, groups, params, stddev):
    # The same tolerance as the LRN alone: the ReLU adds no rounding.
    z, upstream = _pre_activations((3, 4, 5, channels), stddev, seed=channels + groups)
    reference = LocalResponseNormalization(groups=groups, implementation="tf_op", **params)
    want_y, want_dz = _relu_then_lrn_and_gradient(reference, z, upstream)
    fused = LocalResponseNormalization(groups=groups, implementation=implementation, relu_first=True, **params)
    got_y, got_dz = _lrn_and_gradient(fused, z, upstream)
    np.testing.assert_allclose(got_y.numpy(), want_y.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got_dz.numpy(), want_dz.numpy(), rtol=1e-5, atol=1e-5)
    assert not np.any(got_dz.numpy()[z.numpy() <= 0])  # no gradient where the ReLU is off, at 0 included


# bfloat16 keeps 8 significant bits: one unit in the last place is at most 2**-7 of a value.
BFLOAT16_ULP = 2.0**-7


@pytest.mark.parametrize("implementation", FAST_IMPLEMENTATIONS)
@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("relu_first", [False, True])
def test_bfloat16_lrn_is_the_float32_reference_rounded(implementation, groups, relu_first):
    # bfloat16 in and out, float32 inside: the result should be the float32 reference (TensorFlow's
    # ReLU and LRN op on the same bfloat16 inputs, taken in float32) rounded once to bfloat16. The
    # layer's float32 arithmetic differs from the op's by float32 rounding, far below half a
    # bfloat16 unit, so that rounding can at worst land on the neighbouring bfloat16 value: within
    # one unit in the last place (and an absolute 1e-6 for gradients that cancel to ~0).
    z = tf.cast(tf.random.stateless_normal((2, 5, 5, 96), seed=[1, 2], stddev=20.0), tf.bfloat16)
    upstream = tf.cast(tf.random.stateless_normal(z.shape, seed=[3, 4]), tf.bfloat16)
    reference = LocalResponseNormalization(groups=groups, implementation="tf_op")
    activate = tf.nn.relu if relu_first else tf.identity
    z32, upstream32 = tf.cast(z, tf.float32), tf.cast(upstream, tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(z32)
        want_y = reference(activate(z32))
    want_dz = tape.gradient(want_y, z32, output_gradients=upstream32)
    layer = LocalResponseNormalization(groups=groups, implementation=implementation, relu_first=relu_first)
    got_y, got_dz = _lrn_and_gradient(layer, z, upstream)
    assert got_y.dtype == got_dz.dtype == tf.bfloat16
    for got, want in ((got_y, want_y), (got_dz, want_dz)):
        np.testing.assert_allclose(tf.cast(got, tf.float32).numpy(), want.numpy(), rtol=BFLOAT16_ULP, atol=1e-6)


@pytest.mark.parametrize("implementation", FAST_IMPLEMENTATIONS)
def test_cuda_convnet_response_normalisation_in_bfloat16_is_the_float32_op_rounded(implementation):
    # cuda-convnet's study trains in bfloat16: its size-9 window, k = 1, in bfloat16 in and out, float32
    # inside, is TensorFlow's op in float32 rounded once: within half a bfloat16 unit (2**-8 of the
    # value), plus a hair for the float32 arithmetic's own rounding. Computing in bfloat16 throughout
    # lands up to about a whole unit off and fails here.
    x = tf.cast(tf.random.stateless_uniform((2, 3, 3, 64), seed=[5, 6], maxval=20.0), tf.bfloat16)
    upstream = tf.cast(tf.random.stateless_normal(x.shape, seed=[7, 8]), tf.bfloat16)
    want_y, want_dx = _lrn_and_gradient(
        LocalResponseNormalization(implementation="tf_op", **RESPONSE_NORM), tf.cast(x, tf.float32), tf.cast(upstream, tf.float32)
    )
    got_y, got_dx = _lrn_and_gradient(LocalResponseNormalization(implementation=implementation, **RESPONSE_NORM), x, upstream)
    assert got_y.dtype == got_dx.dtype == tf.bfloat16
    for got, want in ((got_y, want_y), (got_dx, want_dx)):
        np.testing.assert_allclose(tf.cast(got, tf.float32).numpy(), want.numpy(), rtol=BFLOAT16_ULP / 2 * (1 + 1e-3), atol=1e-6)


def test_relu_first_lrn_is_the_same_eagerly_and_nested_in_a_jit_compiled_function():
    # Eagerly under a tape (where the forward's input is kept from the tape) and inside jit_compile=True.
    z, upstream = _pre_activations((2, 3, 3, 8), 5.0, seed=0)
    layer = LocalResponseNormalization(alpha=1.0, relu_first=True)
    eager_y, eager_dz = _lrn_and_gradient(layer, z, upstream)
    compiled = tf.function(lambda z, upstream: _lrn_and_gradient(layer, z, upstream), jit_compile=True)
    jit_y, jit_dz = compiled(z, upstream)
    np.testing.assert_allclose(jit_y.numpy(), eager_y.numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(jit_dz.numpy(), eager_dz.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(shutil.which(os.environ.get("CXX", "g++")) is None, reason="no C++ compiler here")
def test_native_kernel_builds_where_there_is_a_compiler():
    assert native_lrn.ops() is not None, native_lrn.unavailable_reason()


def test_lrn_auto_is_the_native_kernel_on_cpu_unless_turned_off():
    layer = LocalResponseNormalization()
    assert layer.implementation == "auto"
    if tf.config.list_logical_devices("GPU"):
        assert layer.resolved_implementation() == "tf_op"
        return
    assert layer.resolved_implementation() == ("native" if NATIVE else "xla")
    native_lrn.enable(False)
    try:
        assert layer.resolved_implementation() == "xla"
    finally:
        native_lrn.enable(True)


def test_lrn_auto_is_xla_inside_a_jit_compiled_function():
    seen = []

    @tf.function(jit_compile=True)
    def compiled(x):
        seen.append(LocalResponseNormalization().resolved_implementation())
        return x

    compiled(tf.zeros([1]))
    assert seen == ["tf_op" if tf.config.list_logical_devices("GPU") else "xla"]


@pytest.mark.parametrize("implementation", FAST_IMPLEMENTATIONS)
@pytest.mark.parametrize("relu_first", [False, True])
def test_a_nan_input_makes_its_window_nan(implementation, relu_first):
    # A diverging conv must show in the loss, not be hidden by the normalisation (or its ReLU).
    # ("matmul" and TensorFlow's op spread it over all channels: their window sum is a matrix product.)
    x = np.ones([1, 1, 1, 8], np.float32)
    x[..., 3] = np.nan
    got = LocalResponseNormalization(implementation=implementation, relu_first=relu_first)(tf.constant(x))
    window = np.abs(np.arange(8) - 3) <= 2
    assert np.isnan(got.numpy()[0, 0, 0, window]).all()


@pytest.mark.skipif(not NATIVE, reason="the native LRN kernel is unavailable here")
def test_native_lrn_inside_a_jit_compiled_function_is_refused_in_one_line():
    layer = LocalResponseNormalization(implementation="native")
    compiled = tf.function(layer, jit_compile=True)
    with pytest.raises(ValueError, match="cannot run inside an XLA-compiled function"):
        compiled(tf.ones([1, 2, 2, 8]))


def test_native_kernel_build_without_a_compiler_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("CXX", "no-such-compiler")
    with pytest.raises(RuntimeError, match="no C\\+\\+ compiler 'no-such-compiler'"):
        native_lrn.build(tmp_path / "lrn.so")
    assert not (tmp_path / "lrn.so").exists()


def test_native_kernel_cache_key_changes_with_the_cpu_level(tmp_path, monkeypatch):
    monkeypatch.setenv(native_lrn.CACHE_ENV, str(tmp_path))
    paths = {native_lrn.library_path(level) for level in (None, "x86-64-v3", "x86-64-v4")}
    assert len(paths) == 3 and all(path.parent == tmp_path / "kernels" for path in paths)


def test_lrn_rejects_unknown_implementation_and_non_positive_k():
    with pytest.raises(ValueError, match="implementation"):
        LocalResponseNormalization(implementation="cudnn")
    with pytest.raises(ValueError, match="k must be > 0"):
        LocalResponseNormalization(k=0.0)


@pytest.mark.parametrize("implementation", FAST_IMPLEMENTATIONS)
def test_fast_lrn_trains_inside_a_compiled_keras_model(implementation):
    # Symbolic build, a traced train step and nesting inside a jit-compiled step (not for the
    # native kernel, which XLA cannot compile: refused with a clear error, tested below).
    inputs = keras.Input((6, 6, 4))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inputs)
    x = LocalResponseNormalization(alpha=1.0, groups=2, implementation=implementation)(x)
    outputs = keras.layers.Dense(3)(keras.layers.Flatten()(x))
    model = keras.Model(inputs, outputs)
    model.compile(
        optimizer="sgd",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=implementation != "native",
    )
    images = np.random.default_rng(0).normal(size=(4, 6, 6, 4)).astype(np.float32)
    before = [w.copy() for w in model.get_weights()]
    loss = model.train_on_batch(images, np.array([0, 1, 2, 0]))
    assert np.isfinite(loss)
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights()))


def test_lrn_window_is_clipped_not_wrapped_at_the_edges():
    # Only the last channel is large: with a clipped window of 5, channel 0
    # must not see it (a wrap-around window would).
    x = np.ones((1, 1, 1, 8), np.float32)
    x[..., -1] = 100.0
    y = LocalResponseNormalization(alpha=1.0, k=1.0)(x).numpy()[0, 0, 0]
    np.testing.assert_allclose(y[0], 1.0 / (1.0 + 3.0 / 5.0) ** 0.75, rtol=1e-6)
    assert y[5] < 0.1  # channel 5's window reaches channel 7


def test_lrn_groups_normalise_each_group_alone():
    x = tf.random.normal((2, 3, 3, 12), stddev=20.0)
    grouped = LocalResponseNormalization(alpha=1.0, groups=2)(x)
    halves = [LocalResponseNormalization(alpha=1.0)(h) for h in tf.split(x, 2, axis=-1)]
    np.testing.assert_allclose(grouped.numpy(), tf.concat(halves, -1).numpy(), rtol=1e-6)


@pytest.mark.parametrize("size", [0, 2, 4, -1])
def test_lrn_rejects_even_or_non_positive_size(size):
    with pytest.raises(ValueError, match="positive odd"):
        LocalResponseNormalization(size=size)


def test_lrn_rejects_channels_not_divisible_by_groups():
    with pytest.raises(ValueError, match="divisible"):
        LocalResponseNormalization(groups=2)(tf.zeros((1, 2, 2, 5)))


def test_lrn_config_round_trip():
    layer = LocalResponseNormalization(
        size=3, alpha=2e-4, beta=0.5, k=1.0, groups=2, implementation="matmul", relu_first=True, name="n"
    )
    clone = LocalResponseNormalization.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    assert (clone.size, clone.alpha, clone.beta, clone.k, clone.groups) == (3, 2e-4, 0.5, 1.0, 2)
    assert clone.implementation == "matmul" and clone.relu_first
    # A config saved before relu_first existed loads as the plain LRN.
    old_config = {key: value for key, value in layer.get_config().items() if key != "relu_first"}
    assert not LocalResponseNormalization.from_config(old_config).relu_first


def test_custom_layers_survive_keras_save_and_load(tmp_path):
    inputs = keras.Input((8, 8, 4))
    x = GroupedConv2D(6, 3, padding="same", groups=2, name="conv")(inputs)
    outputs = LocalResponseNormalization(groups=2, name="lrn")(x)
    model = keras.Model(inputs, outputs)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path)  # registered: no custom_objects needed
    assert isinstance(loaded.get_layer("lrn"), LocalResponseNormalization)
    assert loaded.get_layer("lrn").groups == 2
    x = np.random.default_rng(0).normal(size=(2, 8, 8, 4)).astype(np.float32)
    np.testing.assert_allclose(loaded(x).numpy(), model(x).numpy(), rtol=1e-6)


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_lrn_computes_in_float32_and_returns_input_dtype(dtype, implementation):
    x = tf.cast(tf.random.normal((2, 4, 4, 8), stddev=10.0), dtype)
    y = LocalResponseNormalization(implementation=implementation)(x)
    assert y.dtype == tf.as_dtype(dtype)
    want = tf.cast(LocalResponseNormalization(implementation=implementation)(tf.cast(x, tf.float32)), dtype)
    np.testing.assert_array_equal(y.numpy(), want.numpy())


def test_lrn_under_mixed_bfloat16_policy():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    layer = LocalResponseNormalization()
    y = layer(tf.cast(tf.random.normal((1, 3, 3, 8)), tf.bfloat16))
    assert y.dtype == tf.bfloat16


def test_grouped_conv_equals_keras_grouped_conv():
    x = tf.random.normal((2, 9, 9, 8))
    ours = GroupedConv2D(6, 3, padding="same", groups=2)
    reference = keras.layers.Conv2D(6, 3, padding="same", groups=2)
    ours.build(x.shape)
    reference.build(x.shape)
    reference.set_weights(ours.get_weights())
    assert ours.kernel.shape == (3, 3, 4, 6)
    np.testing.assert_allclose(ours(x).numpy(), reference(x).numpy(), atol=1e-5)


def test_grouped_conv_groups_do_not_mix():
    conv = GroupedConv2D(4, 3, padding="same", groups=2)
    x = tf.random.normal((1, 5, 5, 4))
    changed = tf.concat([x[..., :2] + 10.0, x[..., 2:]], axis=-1)  # only group 0's inputs
    y0, y1 = conv(x), conv(changed)
    np.testing.assert_array_equal(y0[..., 2:].numpy(), y1[..., 2:].numpy())
    assert not np.allclose(y0[..., :2].numpy(), y1[..., :2].numpy())
