import numpy as np
import pytest
import tensorflow as tf
import keras

from alexnet_tf.layers import LocalResponseNormalization
from alexnet_tf.model import build_alexnet, build_four_layer_net

# (layer name, output shape) for a 224x224x3 input: the paper's figure 2.
PAPER_SHAPES = [
    ("pad", (228, 228, 3)),
    ("conv1", (55, 55, 96)),
    ("conv1_pool", (27, 27, 96)),
    ("conv2", (27, 27, 256)),
    ("conv2_pool", (13, 13, 256)),
    ("conv3", (13, 13, 384)),
    ("conv4", (13, 13, 384)),
    ("conv5", (13, 13, 256)),
    ("conv5_pool", (6, 6, 256)),
    ("flatten", (9216,)),
    ("fc6", (4096,)),
    ("fc7", (4096,)),
    ("fc8", (1000,)),
]
CONV_AND_FC = ["conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"]


@pytest.fixture(scope="module")
def paper_model():
    return build_alexnet(seed=0)


def test_parameter_count_one_tower(paper_model):
    assert paper_model.count_params() == 62_378_344


def test_parameter_count_two_towers():
    assert build_alexnet(towers=2).count_params() == 60_965_224


@pytest.mark.parametrize("towers", [1, 2])
def test_layer_shapes_follow_the_paper(towers, paper_model):
    model = paper_model if towers == 1 else build_alexnet(towers=2)
    shapes = [(name, model.get_layer(name).output.shape[1:]) for name, _ in PAPER_SHAPES]
    assert shapes == PAPER_SHAPES


def test_norm_placement():
    lrn = build_alexnet(norm="lrn", input_shape=(64, 64, 3))
    bn = build_alexnet(norm="batchnorm", input_shape=(64, 64, 3))
    none = build_alexnet(norm="none", input_shape=(64, 64, 3))
    names = lambda m, cls: [l.name for l in m.layers if isinstance(l, cls)]  # noqa: E731
    assert names(lrn, LocalResponseNormalization) == ["conv1_lrn", "conv2_lrn"]
    assert names(bn, keras.layers.BatchNormalization) == ["conv1_bn", "conv2_bn"]
    assert not names(none, LocalResponseNormalization) + names(none, keras.layers.BatchNormalization)
    order = [l.name for l in lrn.layers]
    for conv in ("conv1", "conv2"):  # after the conv's ReLU, before its pooling
        assert order.index(conv) < order.index(f"{conv}_lrn") < order.index(f"{conv}_pool")


def test_two_tower_lrn_normalises_each_tower():
    model = build_alexnet(towers=2, input_shape=(64, 64, 3))
    assert [model.get_layer(f"conv{i}_lrn").groups for i in (1, 2)] == [2, 2]


@pytest.mark.parametrize("towers", [1, 2])
def test_lrn_applies_the_relu_of_conv1_and_conv2_and_older_checkpoints_load(towers, tmp_path):
    # The LRN takes conv1's and conv2's ReLU into its own fused passes: the net is the same function
    # of the same weights as conv -> ReLU -> LRN, so weights saved from that older structure load.
    model = build_alexnet(norm="lrn", towers=towers, num_classes=10, input_shape=(67, 67, 3), seed=0)
    for conv in ("conv1", "conv2"):
        assert model.get_layer(conv).activation is keras.activations.linear
        assert model.get_layer(f"{conv}_lrn").relu_first
    assert model.get_layer("conv3").activation is keras.activations.relu

    def as_before(layer):
        config = layer.get_config()
        if isinstance(layer, LocalResponseNormalization):
            config["relu_first"] = False
        elif layer.name in ("conv1", "conv2"):
            config["activation"] = "relu"
        return layer.__class__.from_config(config)

    older = keras.models.clone_model(model, clone_function=as_before)
    assert older.get_layer("conv1").activation is keras.activations.relu
    rng = np.random.default_rng(0)
    older.set_weights([w + rng.normal(scale=0.01, size=w.shape).astype(w.dtype) for w in older.get_weights()])
    path = tmp_path / "older.weights.h5"
    keras.Model(older.inputs, older.outputs, name=older.name).save_weights(path)  # as Run.save_weights does
    model.load_weights(path)
    for loaded, saved in zip(model.get_weights(), older.get_weights()):
        np.testing.assert_array_equal(loaded, saved)
    images = rng.normal(scale=50.0, size=(2, 67, 67, 3)).astype(np.float32)
    np.testing.assert_allclose(model(images).numpy(), older(images).numpy(), rtol=1e-5, atol=1e-5)


def test_tanh_lrn_net_keeps_the_activation_in_the_convs():
    model = build_alexnet(norm="lrn", activation="tanh", input_shape=(64, 64, 3))
    assert model.get_layer("conv1").activation is keras.activations.tanh
    assert not model.get_layer("conv1_lrn").relu_first


@pytest.mark.parametrize("layer,towers_apart", [("conv2", True), ("conv3", False), ("conv4", True), ("conv5", True)])
def test_two_tower_connectivity(layer, towers_apart):
    model = build_alexnet(towers=2, input_shape=(64, 64, 3), seed=0)
    conv = model.get_layer(layer)
    x = tf.random.normal((1, 7, 7, conv.input.shape[-1]))
    half = x.shape[-1] // 2
    first_tower_changed = tf.concat([x[..., :half] + 5.0, x[..., half:]], axis=-1)
    out_half = conv.filters // 2
    second_tower_out = lambda inp: conv(inp)[..., out_half:].numpy()  # noqa: E731
    same = np.array_equal(second_tower_out(x), second_tower_out(first_tower_changed))
    assert same == towers_apart


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(norm="layernorm"), "norm='layernorm' is not supported; choose one of 'lrn', 'batchnorm', 'none'"),
        (dict(towers=3), "towers=3 is not supported; choose one of 1, 2"),
        (dict(activation="gelu"), "activation='gelu' is not supported; choose one of 'relu', 'tanh'"),
        (dict(init="glorot"), "init='glorot' is not supported"),
        (dict(dropout=1.0), "dropout"),
        (dict(num_classes=0), "num_classes"),
        (dict(input_shape=(62, 62, 3)), "too small for AlexNet; use at least 63x63"),
    ],
)
def test_bad_arguments_say_what_is_allowed(kwargs, message):
    with pytest.raises(ValueError) as error:
        build_alexnet(**kwargs)
    assert message in str(error.value)


def test_paper_initialisation(paper_model):
    for name in CONV_AND_FC:
        kernel, bias = paper_model.get_layer(name).get_weights()
        assert abs(kernel.mean()) < 3e-3, name
        assert kernel.std() == pytest.approx(0.01, rel=0.1 if name == "conv1" else 0.02), name
        expected_bias = 1.0 if name in {"conv2", "conv4", "conv5", "fc6", "fc7"} else 0.0
        np.testing.assert_array_equal(bias, expected_bias, err_msg=name)


def test_paper_bias01_initialisation_changes_only_the_positive_biases():
    paper = build_alexnet(input_shape=(64, 64, 3), num_classes=10, seed=5)
    small = build_alexnet(input_shape=(64, 64, 3), num_classes=10, seed=5, init="paper_bias0.1")
    for name in CONV_AND_FC:
        (paper_kernel, paper_bias), (kernel, bias) = paper.get_layer(name).get_weights(), small.get_layer(name).get_weights()
        np.testing.assert_array_equal(kernel, paper_kernel, err_msg=name)
        np.testing.assert_allclose(bias, 0.1 * paper_bias, err_msg=name)


def test_seed_makes_initialisation_reproducible():
    a = build_alexnet(input_shape=(64, 64, 3), num_classes=10, seed=7)
    b = build_alexnet(input_shape=(64, 64, 3), num_classes=10, seed=7)
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(wa, wb)


def test_he_initialisation_has_zero_biases():
    model = build_alexnet(input_shape=(64, 64, 3), num_classes=10, init="he")
    for name in CONV_AND_FC:
        kernel, bias = model.get_layer(name).get_weights()
        assert not bias.any(), name
        fan_in = np.prod(kernel.shape[:-1])
        # He-normal is truncated at 2 std, which shrinks its std by ~12%.
        assert kernel.std() == pytest.approx(np.sqrt(2.0 / fan_in), rel=0.25), name


def test_tanh_replaces_every_relu():
    model = build_alexnet(activation="tanh", input_shape=(64, 64, 3))
    for name in CONV_AND_FC[:-1]:
        assert model.get_layer(name).activation is keras.activations.tanh, name
    assert model.get_layer("fc8").activation is keras.activations.linear


def test_small_inputs_build_with_matching_flatten_size():
    model = build_alexnet(input_shape=(64, 64, 3), num_classes=10)
    assert model.get_layer("conv5_pool").output.shape[1:] == (1, 1, 256)
    assert model.get_layer("fc6").kernel.shape == (256, 4096)
    assert model(np.zeros((2, 64, 64, 3), np.float32)).shape == (2, 10)


def test_logits_stay_float32_under_mixed_precision():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    model = build_alexnet(input_shape=(64, 64, 3), num_classes=10)
    assert model.get_layer("conv2").compute_dtype == "bfloat16"
    assert model(np.zeros((1, 64, 64, 3), np.float32)).dtype == tf.float32


@pytest.mark.parametrize(
    "norm,towers,width,pooling",
    [
        ("lrn", 1, "full", "overlapping"), ("batchnorm", 1, "full", "overlapping"), ("none", 1, "full", "overlapping"),
        ("lrn", 2, "full", "overlapping"), ("lrn", 1, "half", "overlapping"), ("lrn", 2, "full", "non_overlapping"),
    ],
)  # fmt: skip
def test_a_few_sgd_steps_lower_the_loss_on_a_fixed_batch(norm, towers, width, pooling):
    # He initialisation on unit-scale inputs: the paper's N(0, 0.01) needs far
    # more steps to leave its initial plateau (studied in the experiments).
    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, size=(8, 64, 64, 3)).astype(np.float32)
    labels = np.arange(8) % 4
    model = build_alexnet(
        num_classes=4, norm=norm, towers=towers, input_shape=(64, 64, 3), dropout=0.0, init="he", seed=0,
        width=width, pooling=pooling,
    )
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    losses = [float(model.train_on_batch(images, labels)) for _ in range(12)]
    assert all(np.isfinite(losses))
    assert np.mean(losses[-3:]) < 0.8 * losses[0], losses


def test_four_layer_net_follows_cuda_convnets_cifar_net():
    model = build_four_layer_net(num_classes=10, seed=0)
    shapes = {name: model.get_layer(name).output.shape[1:] for name in ("conv1", "conv1_pool", "conv2_pool", "conv3_pool")}
    assert shapes == {"conv1": (32, 32, 32), "conv1_pool": (16, 16, 32), "conv2_pool": (8, 8, 32), "conv3_pool": (4, 4, 64)}
    assert isinstance(model.get_layer("conv1_pool"), keras.layers.MaxPooling2D)
    assert isinstance(model.get_layer("conv3_pool"), keras.layers.AveragePooling2D)
    # (5*5*3 + 1)*32 + (5*5*32 + 1)*32 + (5*5*32 + 1)*64 + (4*4*64 + 1)*10
    assert model.count_params() == 89578
    for name, stddev in (("conv1", 1e-4), ("conv2", 1e-2), ("conv3", 1e-2), ("fc", 1e-2)):
        kernel, bias = model.get_layer(name).get_weights()
        assert kernel.std() == pytest.approx(stddev, rel=0.1), name
        assert not bias.any(), name


def test_four_layer_net_takes_either_nonlinearity():
    assert build_four_layer_net(activation="tanh").get_layer("conv2").activation is keras.activations.tanh
    assert build_four_layer_net(activation="relu").get_layer("conv2").activation is keras.activations.relu
    with pytest.raises(ValueError, match="activation='gelu' is not supported"):
        build_four_layer_net(activation="gelu")


@pytest.mark.parametrize("activation,learning_rate", [("relu", 0.003), ("tanh", 0.01)])
def test_four_layer_net_fits_a_fixed_batch(activation, learning_rate):
    rng = np.random.default_rng(0)
    images = rng.normal(0, 60, size=(16, 32, 32, 3)).astype(np.float32)  # mean-subtracted 0-255 pixels
    labels = np.arange(16) % 4
    model = build_four_layer_net(num_classes=4, activation=activation, seed=0)
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=learning_rate, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    losses = [float(model.train_on_batch(images, labels)) for _ in range(40)]
    assert np.mean(losses[-3:]) < 0.8 * losses[0], losses
