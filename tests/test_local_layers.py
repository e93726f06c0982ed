import keras
import numpy as np
import pytest
import tensorflow as tf

from alexnet_tf.local_layers import LocallyConnected2D


def numpy_locally_connected(x, kernel, bias, strides, padding):
    """The layer's definition as loops: kernel (out_h, out_w, kh, kw, C, F), bias (out_h, out_w, F)."""
    out_h, out_w, kh, kw, _, filters = kernel.shape
    sh, sw = strides
    padded = np.pad(x, [(0, 0), (padding, padding), (padding, padding), (0, 0)])
    out = np.zeros((x.shape[0], out_h, out_w, filters))
    for b in range(x.shape[0]):
        for y in range(out_h):
            for xx in range(out_w):
                for f in range(filters):
                    total = bias[y, xx, f]
                    for i in range(kh):
                        for j in range(kw):
                            for c in range(x.shape[-1]):
                                total += padded[b, y * sh + i, xx * sw + j, c] * kernel[y, xx, i, j, c, f]
                    out[b, y, xx, f] = total
    return out


@pytest.mark.parametrize(
    "input_hw,kernel_size,strides,padding",
    [((6, 6), 3, 1, 1), ((5, 7), (3, 2), (1, 2), 0), ((7, 5), 2, 2, 2)],
)
def test_matches_a_numpy_loop(input_hw, kernel_size, strides, padding):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, *input_hw, 3)).astype(np.float32)
    layer = LocallyConnected2D(4, kernel_size, strides=strides, padding=padding)
    layer.build(x.shape)
    kernel = rng.normal(size=layer.kernel.shape).astype(np.float32)
    bias = rng.normal(size=layer.bias.shape).astype(np.float32)
    layer.set_weights([kernel, bias])
    out_h, out_w = layer.output_size(*input_hw)
    expected = numpy_locally_connected(x, kernel, bias.reshape(out_h, out_w, 4), layer.strides, padding)
    actual = layer(x).numpy()
    assert actual.shape == (2, out_h, out_w, 4) == layer.compute_output_shape(x.shape)
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5)


def test_each_position_has_its_own_weights():
    layer = LocallyConnected2D(2, 3, padding=1, kernel_initializer="ones")
    x = np.ones((1, 4, 4, 1), np.float32)
    before = layer(x).numpy()
    kernel = layer.kernel.numpy()
    kernel[1, 2] *= 3.0  # only output position (1, 2)'s filters
    layer.kernel.assign(kernel)
    changed = np.argwhere(~np.isclose(layer(x).numpy(), before))
    assert {tuple(index[1:3]) for index in changed} == {(1, 2)}


def test_parameter_count_and_shapes():
    layer = LocallyConnected2D(32, 3, padding=1)
    layer.build((None, 6, 6, 64))
    # 36 positions, each a 3x3x64x32 filter bank and 32 biases.
    assert layer.kernel.shape == (6, 6, 3, 3, 64, 32)
    assert layer.count_params() == 36 * (3 * 3 * 64 * 32 + 32)
    # Flat biases: the trainer's weight decay skips rank-1 variables, as cuda-convnet skips biases.
    assert layer.bias.shape == (36 * 32,)


def test_gradients_flow_to_input_and_weights():
    layer = LocallyConnected2D(3, 3, padding=1, activation="relu", bias_initializer="ones")
    x = tf.random.normal((2, 5, 5, 2))
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = tf.reduce_sum(layer(x) ** 2)
    grads = tape.gradient(loss, [x, layer.kernel, layer.bias])
    assert all(g is not None and np.isfinite(g.numpy()).all() and np.abs(g.numpy()).sum() > 0 for g in grads)


def test_config_round_trip_and_mixed_precision():
    layer = LocallyConnected2D(5, (3, 2), strides=(1, 2), padding=1, activation="tanh", use_bias=False)
    clone = LocallyConnected2D.from_config(layer.get_config())
    settings = (clone.filters, clone.kernel_size, clone.strides, clone.padding, clone.use_bias)
    assert settings == (5, (3, 2), (1, 2), 1, False)
    assert clone.activation is keras.activations.tanh
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    mixed = LocallyConnected2D(4, 3, padding=1)
    out = mixed(np.ones((1, 4, 4, 2), np.float32))
    assert out.dtype == tf.bfloat16 and mixed.kernel.dtype == "float32"


@pytest.mark.parametrize(
    "kwargs,shape,message",
    [
        (dict(filters=2, kernel_size=3), (None, None, None, 3), "needs a fixed input height, width and channels"),
        (dict(filters=2, kernel_size=5), (None, 3, 3, 1), "does not fit a 3x3 input"),
        (dict(filters=2, kernel_size=3, padding=-1), None, "padding is zero pixels per side"),
        (dict(filters=2, kernel_size=0), None, "kernel_size must be a positive int"),
    ],
)
def test_bad_settings_say_what_is_wrong(kwargs, shape, message):
    with pytest.raises(ValueError, match=message):
        LocallyConnected2D(**kwargs).build(shape)
