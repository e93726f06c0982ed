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


def shared_data(variable, folder, probe, what):
    """A folder of real data: $`variable`, else ../shared/data/`folder` beside the repository
    (where CI has it), checked by the file `probe` inside it. Missing data fails under CI and
    skips elsewhere."""
    import os
    import pathlib

    path = pathlib.Path(os.environ.get(variable, REPO_ROOT.parent / "shared" / "data" / folder))
    if not (path / probe).is_file():
        message = f"{what} not found at {path}; set {variable}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def shared_cifar10_dir():
    """The real CIFAR-10 records of the shared subset (5085 training images)."""
    return shared_data("CIFAR10_SUBSET_DIR", "cifar10-subset", "data_batch_1.bin", "real CIFAR-10 subset")


@pytest.fixture(scope="session")
def shared_cifar10_jpeg_dir():
    """The shared tree of all 50,000 real CIFAR-10 training images as JPEG (train/<class>/NNNN.jpg)."""
    return shared_data("CIFAR10_JPEG_DIR", "cifar10-jpeg", "train/airplane/0000.jpg", "real CIFAR-10 JPEG tree")


@pytest.fixture(scope="session")
def shared_imagenet_dir():
    """Real ILSVRC-2012 JPEGs: 400 training images (one of each of 400 classes, original sizes)
    in train/<wnid>/ and the official validation images 1-10 in validation/<wnid>/."""
    return shared_data(
        "IMAGENET_SAMPLE_DIR", "imagenet-sample", "validation/n01751748/ILSVRC2012_val_00000001.JPEG",
        "real ImageNet sample",
    )  # fmt: skip


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
