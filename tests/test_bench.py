import json
import os
import subprocess
import sys

import pytest
from absl import app

from alexnet_tf import bench, flops, native_lrn
from alexnet_tf.model import build_alexnet

# Hand count of the paper's net at 224x224, forward multiply-accumulates per image:
# output H*W*C_out times kernel kh*kw*C_in/groups per conv, in*out per dense layer.
HAND_COUNT_ONE_TOWER = {
    "conv1": 55 * 55 * 96 * (11 * 11 * 3),
    "conv2": 27 * 27 * 256 * (5 * 5 * 96),
    "conv3": 13 * 13 * 384 * (3 * 3 * 256),
    "conv4": 13 * 13 * 384 * (3 * 3 * 384),
    "conv5": 13 * 13 * 256 * (3 * 3 * 384),
    "fc6": 6 * 6 * 256 * 4096,
    "fc7": 4096 * 4096,
    "fc8": 4096 * 1000,
}
# Two towers: conv2, conv4 and conv5 see half of their input channels.
HAND_COUNT_TWO_TOWERS = dict(
    HAND_COUNT_ONE_TOWER,
    conv2=27 * 27 * 256 * (5 * 5 * 48),
    conv4=13 * 13 * 384 * (3 * 3 * 192),
    conv5=13 * 13 * 256 * (3 * 3 * 192),
)


@pytest.mark.parametrize("towers,hand_count", [(1, HAND_COUNT_ONE_TOWER), (2, HAND_COUNT_TWO_TOWERS)])
def test_flops_match_hand_count_of_the_paper_net(towers, hand_count):
    model = build_alexnet(towers=towers)
    counted = {layer.name: flops.layer_macs(layer) for layer in model.layers if flops.layer_macs(layer)}
    assert counted == hand_count
    assert flops.forward_macs(model) == sum(hand_count.values())
    assert flops.training_flops_per_example(model) == 6 * sum(hand_count.values())


def test_flops_headline_figures():
    # The figures the docs quote: ~0.72 GMAC for the paper's two-tower net,
    # 1.135 GMAC (6.8 GFLOP per training image) for one tower.
    assert flops.forward_macs(build_alexnet(towers=2)) / 1e9 == pytest.approx(0.7244, abs=1e-4)
    assert flops.training_flops_per_example(build_alexnet(towers=1)) / 1e9 == pytest.approx(6.8115, abs=1e-4)


def test_flops_follow_the_input_size_and_ignore_non_arithmetic_layers():
    small = build_alexnet(norm="batchnorm", num_classes=10, input_shape=(96, 96, 3))
    # 96 padded to 100: conv1 gives 23x23, pools 11, 5, 2.
    assert flops.layer_macs(small.get_layer("conv1")) == 23 * 23 * 96 * 363
    assert flops.layer_macs(small.get_layer("fc6")) == 2 * 2 * 256 * 4096
    assert flops.layer_macs(small.get_layer("conv1_bn")) == 0
    assert flops.layer_macs(small.get_layer("conv1_pool")) == 0


def test_median_and_spread():
    assert bench.median_and_spread([3.0, 1.0, 2.0]) == {"median": 2.0, "min": 1.0, "max": 3.0, "rounds": [3.0, 1.0, 2.0]}
    assert bench.median_and_spread([1.0, 2.0])["median"] == 1.5


def test_paired_ratio_is_the_median_of_per_round_ratios():
    # The machine halves its speed in round 2: both configurations slow down
    # together, and the paired ratio stays 0.5 where the ratio of medians would not.
    a, b = [10.0, 5.0, 10.0, 5.0], [20.0, 10.0, 20.0, 10.0]
    assert bench.paired_ratio(a, b) == {"median": 0.5, "min": 0.5, "max": 0.5, "rounds": [0.5] * 4}
    drifting = bench.paired_ratio([9.0, 4.0, 11.0], [10.0, 10.0, 10.0])
    assert drifting["median"] == pytest.approx(0.9) and drifting["min"] == pytest.approx(0.4)
    with pytest.raises(ValueError):
        bench.paired_ratio([1.0], [1.0, 2.0])
    with pytest.raises(ValueError):
        bench.paired_ratio([], [])


def test_round_order_alternates():
    assert bench.round_order("ABC", 0) == ["A", "B", "C"]
    assert bench.round_order("ABC", 1) == ["C", "B", "A"]
    assert bench.round_order("ABC", 2) == ["A", "B", "C"]


def _settings(**changes):
    settings = dict(
        dataset="cifar10_sample", data_dir=None, batch_size=64, image_size=224, norms=["lrn"], towers=[1],
        precisions=["fp32"], xla=False, rounds=3, steps=2, warmup_steps=2, fit_steps=4, pipeline_seconds=2.0,
        matmul_size=4096, lrn_implementation="auto",
    )
    settings.update(changes)
    return settings


@pytest.mark.parametrize(
    "changes,message",
    [
        (dict(batch_size=0), "--batch_size"),
        (dict(rounds=0), "--rounds"),
        (dict(image_size=32), "--image_size"),
        (dict(fit_steps=1), "--fit_steps"),
        (dict(norms=["lrn", "layernorm"]), "--norms"),
        (dict(norms=["lrn", "lrn"]), "--norms"),
        (dict(precisions=["fp8"]), "--precisions"),
        (dict(precisions=["auto", "fp32"]), "--precisions"),
        (dict(towers=[3]), "--towers"),
        (dict(dataset="mnist"), "--dataset"),
        (dict(pipeline_seconds=0.0), "--pipeline_seconds"),
        (dict(service_workers=[1, 0]), "--service_workers"),
        (dict(service_workers=[2, 2]), "--service_workers"),
    ],
)
def test_validate_rejects_bad_settings(changes, message):
    with pytest.raises(app.UsageError, match=message):
        bench.validate(_settings(**changes))
    bench.validate(_settings())  # the defaults pass


def test_auto_precisions_add_float16_only_with_a_gpu():
    import tensorflow as tf

    gpu = bool(tf.config.list_logical_devices("GPU"))
    assert bench.resolve_precisions(["auto"]) == ["fp32", "bf16"] + (["fp16"] if gpu else [])
    assert bench.resolve_precisions(["fp16", "fp32"]) == ["fp16", "fp32"]
    bench.validate(_settings(precisions=["auto"]))
    bench.validate(_settings(precisions=["fp32", "fp16"]))


def _run_bench(*args, timeout=240):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run(
        [sys.executable, "-m", "alexnet_tf.bench", *args], capture_output=True, text=True, timeout=timeout, env=env
    )


@pytest.mark.parametrize("flag,message", [("--towers=1,3", "--towers"), ("--lrn_implementation=fast", "lrn_implementation")])
def test_bad_flag_is_a_one_line_usage_error(flag, message):
    result = _run_bench(flag)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and message in lines[0]


def test_quick_run_prints_the_table_and_writes_the_json(tmp_path):
    path = tmp_path / "bench.json"
    result = _run_bench("--quick", f"--json={path}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "lrn/t1/fp32" in result.stdout and "end-to-end/synthetic" in result.stdout
    figures = json.loads(path.read_text())
    assert set(figures["training_step"]) == {
        f"{norm}/t{towers}/{precision}" for norm in ("lrn", "none") for towers in (1, 2) for precision in ("fp32", "bf16")
    }
    step = figures["training_step"]["lrn/t1/fp32"]
    assert step["images_per_s"]["median"] > 0 and len(step["images_per_s"]["rounds"]) == 2
    assert step["training_gflop_per_image"] == pytest.approx(
        flops.training_flops_per_example(build_alexnet(input_shape=(96, 96, 3))) / 1e9
    )
    assert 0 < step["fraction_of_peak"]["median"]
    for label in ("lrn/none t1 fp32", "bf16/fp32 lrn t1", "towers2/towers1 per FLOP lrn fp32", "end-to-end/synthetic"):
        assert figures["ratios"][label]["median"] > 0
    assert figures["matmul_peak_gflops"]["fp32"]["median"] > 0
    assert figures["input_pipeline_images_per_s"]["median"] > 0
    assert figures["machine"]["cpu_count"] == os.cpu_count()
    assert figures["machine"]["tensorflow"]


def test_float16_model_trains_with_loss_scaling():
    import keras
    import numpy as np

    model = bench.build_model("lrn", 1, "fp16", False, image_size=67)
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert model.get_layer("conv1").compute_dtype == "float16"
    assert keras.mixed_precision.global_policy().name == "float32"  # restored
    images = np.random.default_rng(0).uniform(-1, 1, (2, 67, 67, 3)).astype("float32")
    loss = model.train_on_batch(images, np.array([0, 1]))
    assert np.isfinite(loss)


def test_lrn_layer_mode_times_every_implementation_of_each_lrn_layer(tmp_path):
    path = tmp_path / "lrn.json"
    result = _run_bench(
        "--lrn_layer", "--batch_size=2", "--image_size=67", "--rounds=2", "--precisions=fp32,bf16", f"--json={path}"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    layers = json.loads(path.read_text())["lrn_layer_ms"]
    # conv1's and conv2's LRN, for one tower (groups=1) and two (groups=2), at the shapes AlexNet gives
    # them, in each precision.
    assert set(layers) == {
        f"{layer} groups={groups} {precision}"
        for layer in ("conv1_lrn 16x16x96", "conv2_lrn 7x7x256")
        for groups in (1, 2)
        for precision in ("fp32", "bf16")
    }
    for figures in layers.values():
        assert set(figures) == {"xla", "matmul", "tf_op"} | ({"native"} if native_lrn.ops() else set())
        assert all(len(f["ms"]["rounds"]) == 2 and f["ms"]["median"] > 0 for f in figures.values())
        assert figures["tf_op"]["ratio_to_tf_op"]["median"] == 1.0
    assert "conv1_lrn 16x16x96 groups=1 bf16" in result.stdout and "/ tf_op" in result.stdout


def test_imagenet_mode_times_decoding_and_the_training_pipeline_per_core(shared_imagenet_dir, tmp_path):
    # A few of the real JPEGs, small and large: the figures' bookkeeping, not their size.
    import math
    import shutil

    tree = tmp_path / "imagenet"
    for folder in sorted((shared_imagenet_dir / "train").iterdir())[:12]:
        shutil.copytree(folder, tree / "train" / folder.name)
    settings = _settings(imagenet_dir=str(tree), batch_size=8, image_size=64, rounds=2, pipeline_seconds=0.2)
    results = bench.imagenet_preprocessing_timings(settings, log=lambda *args, **kwargs: None)
    stages = results["images_per_s_per_core"]
    assert list(stages) == ["decode", "decode + rescale to 73", "training"]
    assert all(len(figure["rounds"]) == 2 and figure["median"] > 0 for figure in stages.values())
    # Each ratio pairs a stage's rounds with decoding's; decoding alone is the limit (within noise).
    for name in ("decode + rescale to 73", "training"):
        ratio = results["ratios"][f"{name} / decode"]
        assert ratio["rounds"] == [a / b for a, b in zip(stages[name]["rounds"], stages["decode"]["rounds"])]
        assert 0 < ratio["median"] < 1.5
    assert results["files"]["count"] == 12 and results["all_cores_images_per_s"] > 0
    per_core = stages["training"]["median"]
    assert results["cores_per_accelerator"] == {
        name: {"images_per_s": rate, "cores": math.ceil(rate / per_core)}
        for name, rate in bench.ACCELERATOR_IMAGES_PER_S.items()
    }
    table = "\n".join(bench.format_imagenet_table(results))
    assert "training" in table and "cores one P100 needs at 3,000 images/s" in table
