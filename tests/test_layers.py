import numpy as np
import pytest
import tensorflow as tf
import keras

from alexnet_tf.layers import GroupedConv2D, LocalResponseNormalization


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


@pytest.mark.parametrize("channels", [1, 2, 3, 5, 6, 16, 96])
@pytest.mark.parametrize(
    "params",
    [
        dict(),  # the paper's values
        dict(size=3, alpha=0.5, beta=0.75, k=1.0),  # strong normalisation: edge clipping shows
        dict(size=7, alpha=2.0, beta=0.5, k=1.5),
    ],
)
def test_lrn_matches_numpy_reference(channels, params):
    rng = np.random.default_rng(channels)
    x = rng.normal(scale=3.0, size=(2, 3, 4, channels)).astype(np.float32)
    got = LocalResponseNormalization(**params)(x).numpy()
    want = lrn_reference(x, **params)
    assert np.max(np.abs(got - want)) <= 1e-5


def test_lrn_paper_defaults_are_tf_op_with_alpha_over_size():
    x = tf.random.normal((2, 5, 5, 16), stddev=30.0)
    got = LocalResponseNormalization()(x)
    want = tf.nn.local_response_normalization(x, depth_radius=2, bias=2.0, alpha=2e-5, beta=0.75)
    np.testing.assert_array_equal(got.numpy(), want.numpy())


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
    layer = LocalResponseNormalization(size=3, alpha=2e-4, beta=0.5, k=1.0, groups=2, name="n")
    clone = LocalResponseNormalization.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    assert (clone.size, clone.alpha, clone.beta, clone.k, clone.groups) == (3, 2e-4, 0.5, 1.0, 2)


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


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_lrn_computes_in_float32_and_returns_input_dtype(dtype):
    x = tf.cast(tf.random.normal((2, 4, 4, 8), stddev=10.0), dtype)
    y = LocalResponseNormalization()(x)
    assert y.dtype == tf.as_dtype(dtype)
    want = tf.cast(LocalResponseNormalization()(tf.cast(x, tf.float32)), dtype)
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
