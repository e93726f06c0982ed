import os

# Keep the test log readable; real errors still show (level 2 hides INFO and WARNING).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

# Two logical CPU devices, so MirroredStrategy can be tested with two replicas on
# a machine without GPUs. This must happen before TensorFlow initialises its devices.
tf.config.set_logical_device_configuration(
    tf.config.list_physical_devices("CPU")[0],
    [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()],
)


@pytest.fixture(autouse=True)
def _fixed_seed_and_policy():
    keras.utils.set_random_seed(1234)
    yield
    keras.mixed_precision.set_global_policy("float32")


@pytest.fixture(autouse=True)
def _no_https_proxy(monkeypatch):
    # The offline-download checks skip their connection probe behind an HTTPS proxy.
    for name in ("https_proxy", "HTTPS_PROXY"):
        monkeypatch.delenv(name, raising=False)


REPO_ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def shared_cifar10_dir():
    """The real CIFAR-10 records of the shared subset (5085 training images).

    Set CIFAR10_SUBSET_DIR to point at them; otherwise `../shared/data/cifar10-subset`
    beside the repository is used (where CI has it). Missing data fails under CI
    and skips elsewhere.
    """
    import os
    import pathlib

    path = pathlib.Path(
        os.environ.get("CIFAR10_SUBSET_DIR", REPO_ROOT.parent / "shared" / "data" / "cifar10-subset")
    )
    if not (path / "data_batch_1.bin").is_file():
        message = f"real CIFAR-10 subset not found at {path}; set CIFAR10_SUBSET_DIR"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def shared_imagenet_dir():
    """Real ILSVRC-2012 JPEGs: 400 training images (one of each of 400 classes, original sizes)
    in train/<wnid>/ and the official validation images 1-10 in validation/<wnid>/.

    Set IMAGENET_SAMPLE_DIR to point at them; otherwise `../shared/data/imagenet-sample`
    beside the repository is used (where CI has it). Missing data fails under CI and skips
    elsewhere.
    """
    import os
    import pathlib

    path = pathlib.Path(
        os.environ.get("IMAGENET_SAMPLE_DIR", REPO_ROOT.parent / "shared" / "data" / "imagenet-sample")
    )
    if not (path / "validation" / "n01751748" / "ILSVRC2012_val_00000001.JPEG").is_file():
        message = f"real ImageNet sample not found at {path}; set IMAGENET_SAMPLE_DIR"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory):
    """A finished one-epoch training run on the embedded sample (64x64 crops), made once per session."""
    from alexnet_tf import config, training

    experiments = tmp_path_factory.mktemp("tiny_alexnet_run")
    training.train(
        config.TrainConfig(
            dataset="cifar10_sample", experiments_dir=str(experiments), experiment="t",
            epochs=1, batch_size=32, image_size=64, steps_per_epoch=2, stats_images=64,
        ),  # fmt: skip
        verbose=0,
    )
    return experiments / "t" / "run1"


@pytest.fixture
def cifar10_download_host(monkeypatch):
    """A listening local socket standing in for tfds's CIFAR-10 download host.

    tfds.testing.mock_data replaces the download, not alexnet_tf.data's check,
    before it, that the host can be reached (this machine may be offline).
    """
    import socket

    from alexnet_tf import data

    with socket.create_server(("127.0.0.1", 0)) as server:
        monkeypatch.setattr(data, "CIFAR10_DOWNLOAD_ADDRESS", server.getsockname()[:2])
        yield server
