import math

import keras
import numpy as np
import pytest

from alexnet_tf import config as config_lib
from alexnet_tf import model as model_lib
from alexnet_tf import training
from alexnet_tf.cuda_convnet import build_cuda_convnet_11pct, max_pool_like_cuda_convnet
from alexnet_tf.layers import LocalResponseNormalization
from alexnet_tf.local_layers import LocallyConnected2D

# (layer, output shape) at the layer file's 24x24 input, in the file's order.
CFG_SHAPES = [
    ("conv1", (24, 24, 64)),
    ("pool1", (12, 12, 64)),
    ("rnorm1", (12, 12, 64)),
    ("conv2", (12, 12, 64)),
    ("rnorm2", (12, 12, 64)),
    ("pool2", (6, 6, 64)),
    ("local3", (6, 6, 64)),
    ("local4", (6, 6, 32)),
    ("flatten", (1152,)),
    ("fc10", (10,)),
]


@pytest.fixture(scope="module")
def cfg_net():
    return build_cuda_convnet_11pct(seed=0)


def test_layers_follow_the_layer_file(cfg_net):
    assert [(layer.name, tuple(layer.output.shape[1:])) for layer in cfg_net.layers[1:]] == CFG_SHAPES
    assert isinstance(cfg_net.get_layer("local3"), LocallyConnected2D)
    assert cfg_net.get_layer("fc10").activation is keras.activations.linear
    assert cfg_net.name == "cuda_convnet_11pct_lrn"


def test_parameter_count_from_the_layer_file(cfg_net):
    conv1 = 5 * 5 * 3 * 64 + 64  # shared biases
    conv2 = 5 * 5 * 64 * 64 + 64
    local3 = 6 * 6 * (3 * 3 * 64 * 64 + 64)  # 36 positions, unshared weights and biases
    local4 = 6 * 6 * (3 * 3 * 64 * 32 + 32)
    fc10 = 6 * 6 * 32 * 10 + 10
    assert conv1 + conv2 + local3 + local4 + fc10 == 2_112_970
    assert cfg_net.count_params() == 2_112_970


def test_response_normalisation_is_cuda_convnets_cmrnorm(cfg_net):
    layer = cfg_net.get_layer("rnorm1")
    assert (layer.size, layer.alpha, layer.beta, layer.k, layer.groups) == (9, 1e-3, 0.75, 1.0, 1)
    # kFCNorm (src/cudaconv2/conv_util.cu): x * (1 + (scale/size) * sum of x**2 over the maps
    # f - size/2 .. f - size/2 + size - 1, clipped) ** -pow, with scale/size from layer.py.
    x = np.random.default_rng(0).uniform(0, 20, size=(2, 3, 3, 64)).astype(np.float32)
    size, scale, power = 9, 0.001, 0.75
    expected = np.empty_like(x)
    for f in range(64):
        start = f - size // 2
        window = x[..., max(0, start) : min(64, start + size)]
        expected[..., f] = x[..., f] * (1 + scale / size * (window**2).sum(-1)) ** -power
    np.testing.assert_allclose(layer(x).numpy(), expected, rtol=1e-5)


def test_pooling_makes_cuda_convnets_output_count():
    for size in range(3, 40):
        expected = math.ceil((size - 3) / 2) + 1  # layer.py, PoolLayerParser, start=0 sizeX=3 stride=2
        assert max_pool_like_cuda_convnet(size, "p").compute_output_shape((1, size, size, 1))[1] == expected, size
    # On an even size the last window is clipped to the map's last two columns.
    x = np.arange(16, dtype=np.float32).reshape(1, 1, 16, 1) * np.ones((1, 16, 1, 1), np.float32)
    pooled = max_pool_like_cuda_convnet(16, "p")(x).numpy()[0, 0, :, 0]
    assert pooled.tolist() == [min(start + 2, 15) for start in range(0, 16, 2)]


def test_norm_switch():
    none = build_cuda_convnet_11pct(norm="none")
    bn = build_cuda_convnet_11pct(norm="batchnorm")
    layers = lambda m, cls: [l.name for l in m.layers if isinstance(l, cls)]  # noqa: E731
    assert not layers(none, LocalResponseNormalization) + layers(none, keras.layers.BatchNormalization)
    assert none.count_params() == 2_112_970
    assert layers(bn, keras.layers.BatchNormalization) == ["rnorm1_bn", "rnorm2_bn"]
    assert bn.count_params() == 2_112_970 + 2 * 4 * 64
    order = [l.name for l in bn.layers]
    positions = [order.index(name) for name in ("pool1", "rnorm1_bn", "conv2", "rnorm2_bn", "pool2")]
    assert positions == sorted(positions)  # rnorm1 after pool1, rnorm2 before pool2, as in the file


def test_initialisation_follows_initw(cfg_net):
    for name, stddev in (("conv1", 1e-4), ("conv2", 1e-2), ("local3", 4e-2), ("local4", 4e-2), ("fc10", 1e-2)):
        kernel, bias = cfg_net.get_layer(name).get_weights()
        assert kernel.std() == pytest.approx(stddev, rel=0.1), name
        assert not bias.any(), name


@pytest.mark.parametrize("size,pool2", [(32, 8), (25, 6), (6, 1)])
def test_other_input_sizes_build(size, pool2):
    net = build_cuda_convnet_11pct(input_shape=(size, size, 3), num_classes=4)
    assert net.get_layer("pool2").output.shape[1:3] == (pool2, pool2)
    assert net(np.zeros((1, size, size, 3), np.float32)).shape == (1, 4)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(input_shape=(5, 5, 3)), "too small for the cuda-convnet net; use at least 6x6"),
        (dict(input_shape=(24, 32, 3)), "must be square"),
        (dict(norm="layernorm"), "norm='layernorm' is not supported"),
        (dict(activation="gelu"), "activation='gelu' is not supported"),
        (dict(num_classes=0), "num_classes"),
    ],
)
def test_bad_arguments_say_what_is_wrong(kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_cuda_convnet_11pct(**kwargs)


def test_build_for_picks_it_and_refuses_alexnet_switches():
    config = config_lib.TrainConfig(model="cuda_convnet_11pct", image_size=24, norm="none", seed=3)
    net = model_lib.build_for(config, 10)
    assert net.name == "cuda_convnet_11pct_none" and net.count_params() == 2_112_970
    for switch, message in (
        (dict(towers=2), "towers=2 applies to model='alexnet' only"),
        (dict(width="half"), "width='half' applies to model='alexnet' only"),
        (dict(pooling="non_overlapping"), "pooling='non_overlapping' applies to model='alexnet' only"),
    ):
        with pytest.raises(ValueError, match=message):
            model_lib.build_for(config_lib.TrainConfig(model="cuda_convnet_11pct", image_size=24, **switch), 10)


def test_logits_stay_float32_under_mixed_precision():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    net = build_cuda_convnet_11pct(num_classes=10)
    assert net.get_layer("local3").compute_dtype == "bfloat16"
    assert net(np.zeros((2, 24, 24, 3), np.float32)).dtype == "float32"


@pytest.mark.parametrize("norm", ["lrn", "none"])
def test_a_few_sgd_steps_lower_the_loss_on_a_fixed_batch(norm):
    rng = np.random.default_rng(0)
    images = rng.normal(0, 60, size=(16, 24, 24, 3)).astype(np.float32)  # mean-subtracted 0-255 pixels
    labels = np.arange(16) % 4
    net = build_cuda_convnet_11pct(num_classes=4, norm=norm, seed=0)
    net.compile(
        optimizer=keras.optimizers.SGD(learning_rate=0.003, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    losses = [float(net.train_on_batch(images, labels)) for _ in range(15)]
    assert np.all(np.isfinite(losses))
    assert np.mean(losses[-3:]) < 0.8 * losses[0], losses


@pytest.mark.slow  # a real run: the trainer's start-up, checkpoints and evaluation dominate
def test_it_trains_through_the_trainer_and_its_checkpoint_reloads(tmp_path):
    config = config_lib.TrainConfig(
        dataset="cifar10_sample", experiments_dir=str(tmp_path), experiment="ccn", model="cuda_convnet_11pct",
        image_size=24, mean="image", pca_std=0.0, learning_rate=0.001, weight_decay=0.004, batch_size=32,
        steps_per_epoch=2, stats_images=64, epochs=1,
    )  # fmt: skip
    results = training.train(config, verbose=0)
    run_dir = tmp_path / "ccn" / "run1"
    assert config_lib.config_from_flagfile(run_dir / "flags.txt") == config
    assert results["hparams"]["model"] == "cuda_convnet_11pct" and np.isfinite(results["curves"]["loss"][0])
    net = model_lib.build_for(config, 10)
    net.load_weights(run_dir / "checkpoints" / "best.weights.h5")
    assert net.count_params() == 2_112_970
