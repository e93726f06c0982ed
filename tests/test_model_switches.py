"""AlexNet's --width and --pooling switches (the paper's comparison nets), their flags and validation."""

import pytest
from absl import flags

from alexnet_tf import config as config_lib
from alexnet_tf import model as model_lib
from alexnet_tf.model import build_alexnet
from alexnet_tf.run import Run

PAPER_POOLED_SHAPES = {"conv1_pool": (27, 27, 96), "conv2_pool": (13, 13, 256), "conv5_pool": (6, 6, 256)}


def parse(*argv):
    flag_values = flags.FlagValues()
    config_lib.define_flags(flag_values)
    flag_values(["train", *argv])
    return config_lib.config_from_flags(flag_values)


def test_half_width_is_the_papers_one_gpu_net():
    model = build_alexnet(width="half")
    filters = {name: model.get_layer(name).filters for name in ("conv1", "conv2", "conv3", "conv4", "conv5")}
    assert filters == {"conv1": 48, "conv2": 128, "conv3": 192, "conv4": 192, "conv5": 256}
    assert model.get_layer("fc6").units == model.get_layer("fc7").units == 4096
    assert model.get_layer("conv5_pool").output.shape[1:] == (6, 6, 256)
    assert model.name == "alexnet_lrn_half"
    # By hand: 11x11x3 conv1 on the padded image, 5x5 conv2, 3x3 conv3-conv5, fc6 on 6x6x256.
    conv1 = 11 * 11 * 3 * 48 + 48
    conv2 = 5 * 5 * 48 * 128 + 128
    conv3 = 3 * 3 * 128 * 192 + 192
    conv4 = 3 * 3 * 192 * 192 + 192
    conv5 = 3 * 3 * 192 * 256 + 256
    fc6, fc7, fc8 = 6 * 6 * 256 * 4096 + 4096, 4096 * 4096 + 4096, 4096 * 1000 + 1000
    assert conv1 + conv2 + conv3 + conv4 + conv5 + fc6 + fc7 + fc8 == 59_798_312
    assert model.count_params() == 59_798_312
    # "approximately the same number of parameters" as the two-GPU net (60,965,224).
    assert abs(59_798_312 - 60_965_224) / 60_965_224 < 0.02


def test_half_width_refuses_two_towers():
    with pytest.raises(ValueError, match=r"width='half' is the paper's one-GPU comparison net and needs towers=1"):
        build_alexnet(width="half", towers=2)


def test_non_overlapping_pooling_gives_the_papers_sizes_at_224():
    model = build_alexnet(pooling="non_overlapping")
    for name, shape in PAPER_POOLED_SHAPES.items():
        assert model.get_layer(name).output.shape[1:] == shape, name
        assert model.get_layer(name).pool_size == (2, 2) and model.get_layer(name).strides == (2, 2)
    assert model.count_params() == 62_378_344
    assert model.name == "alexnet_lrn_non_overlapping"
    assert build_alexnet(input_shape=(64, 64, 3)).get_layer("conv1_pool").pool_size == (3, 3)


def test_non_overlapping_pooling_keeps_one_more_row_on_even_maps():
    # At 67, conv1 gives 16x16: 3x3/2 pools it to 7x7, 2x2/2 to 8x8 (the module docstring's example).
    overlapping = build_alexnet(input_shape=(67, 67, 3), num_classes=10)
    non_overlapping = build_alexnet(input_shape=(67, 67, 3), num_classes=10, pooling="non_overlapping")
    assert overlapping.get_layer("conv1").output.shape[1:3] == (16, 16)
    assert overlapping.get_layer("conv1_pool").output.shape[1:3] == (7, 7)
    assert non_overlapping.get_layer("conv1_pool").output.shape[1:3] == (8, 8)
    assert non_overlapping.count_params() > overlapping.count_params()


@pytest.mark.parametrize("pooling", ["overlapping", "non_overlapping"])
def test_the_minimum_image_size_holds_for_both_poolings(pooling):
    model = build_alexnet(input_shape=(63, 63, 3), num_classes=10, pooling=pooling)
    assert model.get_layer("conv5_pool").output.shape[1:3] == (1, 1)
    with pytest.raises(ValueError, match="too small for AlexNet; use at least 63x63"):
        build_alexnet(input_shape=(62, 62, 3), pooling=pooling)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(width="quarter"), "width='quarter' is not supported; choose one of 'full', 'half'"),
        (dict(pooling="average"), "pooling='average' is not supported; choose one of 'overlapping', 'non_overlapping'"),
    ],
)
def test_bad_switch_values_say_what_is_allowed(kwargs, message):
    with pytest.raises(ValueError) as error:
        build_alexnet(**kwargs)
    assert message in str(error.value)


def test_build_for_passes_the_switches():
    config = config_lib.TrainConfig(image_size=64, width="half", pooling="non_overlapping", seed=1)
    model = model_lib.build_for(config, 10)
    assert model.name == "alexnet_lrn_half_non_overlapping"
    assert model.get_layer("conv1").filters == 48 and model.get_layer("conv2_pool").pool_size == (2, 2)
    with pytest.raises(ValueError, match="needs towers=1"):
        model_lib.build_for(config_lib.TrainConfig(image_size=64, width="half", towers=2), 10)
    with pytest.raises(ValueError, match="width='half' applies to model='alexnet' only"):
        model_lib.build_for(config_lib.TrainConfig(model="four_layer", image_size=32, width="half"), 10)


# ---------------------------------------------------------------------------- flags


def test_flags_default_to_the_papers_net_and_map_onto_the_config():
    config = parse()
    assert (config.width, config.pooling) == ("full", "overlapping")
    assert config.hparams()["width"] == "full" and config.hparams()["pooling"] == "overlapping"
    config = parse("--width=half", "--pooling=non_overlapping")
    assert (config.width, config.pooling, config.towers) == ("half", "non_overlapping", 1)
    config = parse("--model=cuda_convnet_11pct", "--image_size=24", "--norm=none")
    assert (config.model, config.image_size, config.norm) == ("cuda_convnet_11pct", 24, "none")


def test_the_switches_are_in_the_model_flag_group():
    (group,) = [names for heading, names in config_lib.FLAG_GROUPS if heading == "model"]
    assert {"width", "pooling"} <= set(group)


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--width=half", "--towers=2"], "needs towers=1"),
        (["--width=half", "--model=four_layer", "--image_size=32"], "width='half' applies to model='alexnet' only"),
        (["--pooling=non_overlapping", "--model=cuda_convnet_11pct", "--image_size=24"],
         "pooling='non_overlapping' applies to model='alexnet' only"),
        (["--towers=2", "--model=cuda_convnet_11pct", "--image_size=24"], "towers=2 applies to model='alexnet' only"),
        (["--width=quarter"], "value should be one of <full|half>"),
        (["--pooling=average"], "value should be one of <overlapping|non_overlapping>"),
    ],
)  # fmt: skip
def test_bad_combinations_are_refused_in_one_line(argv, message):
    with pytest.raises(flags.IllegalFlagValueError) as error:
        parse(*argv)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_four_layer_still_ignores_towers():
    assert parse("--model=four_layer", "--image_size=32", "--towers=2").towers == 2


def test_flagfile_round_trip(tmp_path):
    config = parse("--width=half", "--pooling=non_overlapping", "--norm=none")
    path = tmp_path / "flags.txt"
    path.write_text(config_lib.to_flagfile(config))
    assert "--width=half" in path.read_text() and "--pooling=non_overlapping" in path.read_text()
    assert config_lib.config_from_flagfile(path) == config


def test_a_run_recorded_before_the_switches_existed_is_continued(tmp_path):
    config = config_lib.TrainConfig(epochs=3, norm="batchnorm")
    run = Run(tmp_path / "run1")
    run.claim(config, ["a", "b"])
    # As the trainer wrote flags.txt before --width and --pooling existed.
    lines = run.flags_file.read_text().splitlines()
    run.flags_file.write_text(
        "\n".join(line for line in lines if not line.startswith(("--width=", "--pooling="))) + "\n"
    )
    assert "--width" not in run.flags_file.read_text()
    assert config_lib.config_from_flagfile(run.flags_file) == config
    choice = Run.for_training(tmp_path, config)
    assert (choice.run, choice.resumed, choice.note) == (run, True, None)
    # The same old run is not continued by a command asking for another net.
    other = Run.for_training(tmp_path, config_lib.TrainConfig(epochs=3, norm="batchnorm", width="half"))
    assert not other.resumed and "--width=full (this command: half)" in other.note
