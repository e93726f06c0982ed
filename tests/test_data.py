"""Tests of the data sources (alexnet_tf/data.py).

Expected pixels and labels are decoded here from the raw bytes with plain
Python (the record layout written out by hand), independently of the
tf.data reader under test.
"""

import importlib.util
import pathlib
import re
import shutil
import subprocess
import tarfile
import threading
import time

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from alexnet_tf import data
from alexnet_tf.config import TrainConfig
from alexnet_tf.data import DataError

RECORD_BYTES = 3073
REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SAMPLE_DIR = REPO_ROOT / "alexnet_tf" / "sample_data" / "cifar10"


@pytest.fixture(autouse=True)
def _no_data_dir_from_environment(monkeypatch):
    # A developer's ALEXNET_TF_DATA_DIR must not change what these tests read.
    monkeypatch.delenv(data.DATA_DIR_ENV, raising=False)


# ---------------------------------------------------------------------------
# Helpers


def expected_record(raw, index):
    """(label, image as nested lists [row][col][channel]) of record ``index``, by hand."""
    record = raw[index * RECORD_BYTES : (index + 1) * RECORD_BYTES]
    pixels = record[1:]
    image = [
        [[pixels[channel * 1024 + row * 32 + col] for channel in range(3)] for col in range(32)]
        for row in range(32)
    ]
    return record[0], image


def random_records(count, rng, labels=None):
    labels = rng.integers(0, 10, count) if labels is None else np.asarray(labels)
    pixels = rng.integers(0, 256, (count, RECORD_BYTES - 1))
    return np.concatenate([labels[:, None], pixels], axis=1).astype(np.uint8).tobytes()


def write_cifar10_folder(folder, train_counts=(3, 2), test_count=2, meta=True, seed=0):
    """A folder of CIFAR-10 binary batches with random records; returns {file name: bytes}."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    contents = {f"data_batch_{i + 1}.bin": random_records(n, rng) for i, n in enumerate(train_counts)}
    if test_count:
        contents["test_batch.bin"] = random_records(test_count, rng)
    for name, raw in contents.items():
        (folder / name).write_bytes(raw)
    if meta:
        (folder / "batches.meta.txt").write_text("\n".join(data.CIFAR10_CLASS_NAMES) + "\n\n")
    return contents


def as_lists(dataset):
    images, labels = [], []
    for image, label in dataset.as_numpy_iterator():
        images.append(image)
        labels.append(int(label))
    return images, labels


def solid_image(value, height=6, width=8):
    """A small image with a different value in each channel, so channel order shows."""
    base = np.arange(height * width, dtype=np.int32).reshape(height, width, 1)
    return ((base + np.array([value, value + 80, value + 160])) % 256).astype(np.uint8)


def write_image(path, image):
    path.parent.mkdir(parents=True, exist_ok=True)
    encode = tf.io.encode_png if path.suffix == ".png" else tf.io.encode_jpeg
    path.write_bytes(encode(image).numpy())


# ---------------------------------------------------------------------------
# CIFAR-10 from local binary batches


def test_local_cifar10_matches_the_shared_records_byte_for_byte(shared_cifar10_dir):
    dataset = data.load_split("cifar10", "train", shared_cifar10_dir)
    assert dataset.element_spec == (
        tf.TensorSpec([32, 32, 3], tf.uint8),
        tf.TensorSpec([], tf.int64),
    )
    assert int(dataset.cardinality()) == 5085
    images, labels = as_lists(dataset)
    assert len(labels) == 5085
    assert labels[:5] == [6, 9, 9, 4, 1]

    raw = b"".join((shared_cifar10_dir / f"data_batch_{i}.bin").read_bytes() for i in range(1, 6))
    assert labels == list(raw[::RECORD_BYTES])
    # First and last record of the first file, the first of the second, the very last.
    for index in (0, 1, 1016, 1017, 5084):
        label, image = expected_record(raw, index)
        assert labels[index] == label
        assert images[index].tolist() == image


def test_local_cifar10_info_counts_what_is_there(shared_cifar10_dir):
    info = data.dataset_info("cifar10", shared_cifar10_dir)
    assert info == data.DatasetInfo(
        name="cifar10",
        num_classes=10,
        class_names=data.CIFAR10_CLASS_NAMES,
        split_sizes={"train": 5085},
        encoded=False,
    )


def test_missing_test_batch_names_the_file_and_what_was_found(shared_cifar10_dir):
    with pytest.raises(DataError) as raised:
        data.load_split("cifar10", "test", shared_cifar10_dir)
    message = str(raised.value)
    assert "test_batch.bin" in message and "missing" in message
    assert "data_batch_1.bin" in message and str(shared_cifar10_dir) in message
    assert "\n" not in message


def test_local_cifar10_train_and_test_splits(tmp_path):
    contents = write_cifar10_folder(tmp_path, train_counts=(3, 2), test_count=4)
    info = data.dataset_info("cifar10", tmp_path)
    assert info.split_sizes == {"train": 5, "test": 4}

    _, train_labels = as_lists(data.load_split("cifar10", "train", tmp_path))
    assert train_labels == list((contents["data_batch_1.bin"] + contents["data_batch_2.bin"])[::RECORD_BYTES])
    test_images, test_labels = as_lists(data.load_split("cifar10", "test", tmp_path))
    assert test_labels == list(contents["test_batch.bin"][::RECORD_BYTES])
    assert test_images[3].tolist() == expected_record(contents["test_batch.bin"], 3)[1]


def test_training_batches_are_read_in_numeric_order(tmp_path):
    rng = np.random.default_rng(0)
    # Each file's label is its number: lexical order would put 10 before 2.
    for number in (10, 2, 1):
        (tmp_path / f"data_batch_{number}.bin").write_bytes(random_records(1, rng, labels=[number % 10]))
    _, labels = as_lists(data.load_split("cifar10", "train", tmp_path))
    assert labels == [1, 2, 0]


def test_data_dir_defaults_to_the_environment_variable(tmp_path, monkeypatch):
    contents = write_cifar10_folder(tmp_path, train_counts=(2,), test_count=0)
    monkeypatch.setenv(data.DATA_DIR_ENV, str(tmp_path))
    _, labels = as_lists(data.load_split("cifar10", "train"))
    assert labels == list(contents["data_batch_1.bin"][::RECORD_BYTES])


def test_the_extracted_tar_folder_below_data_dir_is_found(tmp_path):
    write_cifar10_folder(tmp_path / "cifar-10-batches-bin", train_counts=(2,), test_count=1)
    assert data.dataset_info("cifar10", tmp_path).split_sizes == {"train": 2, "test": 1}


def test_class_names_fall_back_to_the_standard_ones_without_meta_file(tmp_path):
    write_cifar10_folder(tmp_path, meta=False)
    assert data.dataset_info("cifar10", tmp_path).class_names == data.CIFAR10_CLASS_NAMES


def test_class_names_come_from_the_meta_file(tmp_path):
    write_cifar10_folder(tmp_path)
    names = [f"name{i}" for i in range(10)]
    (tmp_path / "batches.meta.txt").write_text("\n".join(names[:5]) + "\n\n" + "\n".join(names[5:]))
    assert data.dataset_info("cifar10", tmp_path).class_names == tuple(names)


# ---------------------------------------------------------------------------
# CIFAR-10 bad input


def test_missing_data_dir_is_an_error(tmp_path):
    with pytest.raises(DataError, match=r"CIFAR-10 folder .*nowhere \(from data_dir\) does not exist"):
        data.load_split("cifar10", "train", tmp_path / "nowhere")


def test_missing_env_var_folder_says_it_came_from_the_env_var(tmp_path, monkeypatch):
    monkeypatch.setenv(data.DATA_DIR_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(DataError, match=r"from \$ALEXNET_TF_DATA_DIR"):
        data.dataset_info("cifar10")


def test_folder_without_batches_lists_its_contents(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "images").mkdir()
    with pytest.raises(DataError) as raised:
        data.load_split("cifar10", "train", tmp_path)
    message = str(raised.value)
    assert "no CIFAR-10 binary batches" in message
    assert "data_batch_1.bin" in message  # what was expected
    assert "images/, notes.txt" in message  # what was found


def test_python_version_of_cifar10_gets_a_hint(tmp_path):
    (tmp_path / "data_batch_1").write_bytes(b"\x80\x02pickle")
    with pytest.raises(DataError, match="cifar-10-binary.tar.gz"):
        data.load_split("cifar10", "train", tmp_path)


def test_truncated_batch_file_names_file_and_size(tmp_path):
    write_cifar10_folder(tmp_path, train_counts=(3, 2))
    truncated = tmp_path / "data_batch_2.bin"
    truncated.write_bytes(truncated.read_bytes()[:-100])
    with pytest.raises(DataError) as raised:
        data.load_split("cifar10", "train", tmp_path)
    message = str(raised.value)
    assert str(truncated) in message and f"is {2 * RECORD_BYTES - 100} bytes" in message
    assert "truncated" in message
    with pytest.raises(DataError, match="data_batch_2.bin"):
        data.dataset_info("cifar10", tmp_path)


def test_empty_batch_file_is_an_error(tmp_path):
    write_cifar10_folder(tmp_path)
    (tmp_path / "test_batch.bin").write_bytes(b"")
    with pytest.raises(DataError, match=r"test_batch.bin is 0 bytes"):
        data.load_split("cifar10", "test", tmp_path)


def test_meta_file_with_wrong_class_count_is_an_error(tmp_path):
    write_cifar10_folder(tmp_path)
    (tmp_path / "batches.meta.txt").write_text("\n".join(f"c{i}" for i in range(100)))
    with pytest.raises(DataError, match="lists 100 class names; CIFAR-10 has 10"):
        data.dataset_info("cifar10", tmp_path)


def test_training_split_without_training_files(tmp_path):
    write_cifar10_folder(tmp_path, train_counts=(), test_count=2)
    with pytest.raises(DataError, match=r"'train' needs data_batch_\*\.bin, which is missing"):
        data.load_split("cifar10", "train", tmp_path)


# ---------------------------------------------------------------------------
# Names and options


@pytest.mark.parametrize(
    "dataset, split, pattern",
    [
        ("cifar100", "train", r"dataset='cifar100' is not supported; choose one of 'cifar10', 'cifar10_sample'"),
        ("cifar10", "validation", r"split='validation' is not a split of cifar10; choose one of 'train', 'test'"),
        ("cifar10_sample", "val", r"choose one of 'train', 'test'"),
        ("synthetic", "validation", r"choose one of 'train', 'test'"),
        ("imagenet2012", "dev", r"choose one of 'train', 'validation' \(or 'test' for 'validation'\)"),
    ],
)
def test_unknown_dataset_or_split_names_the_allowed_ones(dataset, split, pattern):
    with pytest.raises(DataError, match=pattern):
        data.load_split(dataset, split)


def test_unknown_dataset_in_dataset_info():
    with pytest.raises(DataError, match="choose one of"):
        data.dataset_info("mnist")


def test_unknown_option_lists_the_options():
    with pytest.raises(DataError, match=r"unknown data source option\(s\) imagesize; the options are class_names, download"):
        data.load_split("synthetic", "train", imagesize=32)


def test_an_option_of_another_source_is_an_error_unless_none():
    with pytest.raises(DataError, match=r"tfds_data_dir do not apply to dataset 'synthetic'"):
        data.load_split("synthetic", "train", tfds_data_dir="/tmp")
    # None means "not given", so a caller can forward all of its flags.
    dataset = data.load_split("synthetic", "train", tfds_data_dir=None, skip_bad_images=None, num_examples=2)
    assert len(list(dataset)) == 2


def test_data_error_is_a_value_error():
    assert issubclass(DataError, ValueError)


# ---------------------------------------------------------------------------
# The embedded sample


def test_embedded_sample_sizes_and_types():
    info = data.dataset_info("cifar10_sample")
    assert info.split_sizes == {"train": 1000, "test": 200}
    assert info.class_names == data.CIFAR10_CLASS_NAMES and not info.encoded
    for split, size in info.split_sizes.items():
        dataset = data.load_split("cifar10_sample", split)
        assert dataset.element_spec == (tf.TensorSpec([32, 32, 3], tf.uint8), tf.TensorSpec([], tf.int64))
        _, labels = as_lists(dataset)
        assert len(labels) == size and set(labels) == set(range(10))


def test_embedded_sample_is_small_enough_to_ship():
    total = sum(path.stat().st_size for path in SAMPLE_DIR.iterdir())
    assert total < 4_000_000


def test_embedded_sample_ignores_data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv(data.DATA_DIR_ENV, str(tmp_path / "nowhere"))
    dataset = data.load_split("cifar10_sample", "test", data_dir=tmp_path / "nowhere")
    assert int(dataset.cardinality()) == 200


def test_embedded_sample_holds_the_shared_records_it_came_from(shared_cifar10_dir):
    sources = {
        "train": (shared_cifar10_dir / "data_batch_1.bin", 1000),
        "test": (shared_cifar10_dir / "data_batch_2.bin", 200),
    }
    for split, (source, count) in sources.items():
        raw = source.read_bytes()[: count * RECORD_BYTES]
        images, labels = as_lists(data.load_split("cifar10_sample", split))
        assert labels == list(raw[::RECORD_BYTES])
        for index in (0, count - 1):
            assert images[index].tolist() == expected_record(raw, index)[1]


def test_sample_script_regenerates_the_committed_sample(shared_cifar10_dir, tmp_path):
    spec = importlib.util.spec_from_file_location(
        "make_cifar10_sample", REPO_ROOT / "scripts" / "make_cifar10_sample.py"
    )
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    script.main(["--source", str(shared_cifar10_dir), "--out", str(tmp_path)])
    committed = sorted(path.name for path in SAMPLE_DIR.iterdir())
    assert sorted(path.name for path in tmp_path.iterdir()) == committed
    for name in committed:
        assert (tmp_path / name).read_bytes() == (SAMPLE_DIR / name).read_bytes(), name


def tiny_cifar10_archive(folder, records=10, inside=data.CIFAR10_TAR_FOLDER):
    """A cifar-10-binary.tar.gz in `folder` with `records` sample records per split, as the official
    one is laid out (its files inside `inside`/, or at the top when `inside` is empty)."""
    archive = folder / "cifar-10-binary.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name in ("batches.meta.txt", "data_batch_1.bin", "test_batch.bin"):
            content = (SAMPLE_DIR / name).read_bytes()
            file = folder / name
            file.write_bytes(content if name.endswith(".txt") else content[: records * 3073])
            tar.add(file, arcname=f"{inside}/{name}" if inside else name)
            file.unlink()
    return archive


@pytest.mark.parametrize("inside", [data.CIFAR10_TAR_FOLDER, ""])
def test_cifar10_data_dir_that_is_the_archive_says_how_to_unpack_it(tmp_path, inside):
    archive = tiny_cifar10_archive(tmp_path, inside=inside)
    with pytest.raises(DataError) as raised:
        data.source("cifar10", archive)
    message = str(raised.value)
    assert message.startswith(f"CIFAR-10 folder {archive} (from data_dir) is a file, not a folder: it is a tar archive")
    assert "\n" not in message
    # The advice works: its command unpacks the archive, and the folder it names reads.
    advice = r".*\((mkdir .*|tar xf .*)\) and pass (?:the folder it makes, (.*)|that folder)\."
    command, folder = re.fullmatch(advice, message).groups()
    shutil.which("tar") or pytest.skip("tar is not installed")
    subprocess.run(command, shell=True, check=True)
    folder = folder or str(tmp_path / "cifar-10-binary")
    assert folder == str(tmp_path / (inside or "cifar-10-binary"))
    assert data.source("cifar10", folder).info().split_sizes == {"train": 10, "test": 10}


def test_a_data_dir_that_is_an_ordinary_file_is_refused_without_unpack_advice(tmp_path):
    (tmp_path / "notes.txt").write_text("not data")
    with pytest.raises(DataError, match=r"notes.txt \(from data_dir\) is a file, not a folder\.$"):
        data.source("cifar10", tmp_path / "notes.txt")


# ---------------------------------------------------------------------------
# tensorflow-datasets (mocked: no network here)


def test_cifar10_without_data_dir_comes_from_tfds(tmp_path, cifar10_download_host):
    with tfds.testing.mock_data(num_examples=7):
        dataset = data.load_split("cifar10", "train", tfds_data_dir=str(tmp_path))
        assert dataset.element_spec == (tf.TensorSpec([32, 32, 3], tf.uint8), tf.TensorSpec([], tf.int64))
        images, labels = as_lists(dataset)
        info = data.dataset_info("cifar10", tfds_data_dir=str(tmp_path))
    assert len(images) == 7 and all(0 <= label < 10 for label in labels)
    assert info.split_sizes == {"train": 7, "test": 7}
    assert info.num_classes == 10 and not info.encoded


def test_tfds_failure_is_one_line_pointing_at_local_files(tmp_path):
    # download=False fails at once, without network, as a missing download does.
    with pytest.raises(DataError) as raised:
        data.load_split("cifar10", "train", tfds_data_dir=str(tmp_path), download=False)
    message = str(raised.value)
    assert "\n" not in message
    assert "tensorflow-datasets could not load cifar10" in message
    assert "--data_dir or $ALEXNET_TF_DATA_DIR" in message and "data_batch_1.bin" in message


def test_tfds_download_error_is_turned_into_a_data_error(tmp_path, monkeypatch, cifar10_download_host):
    def offline_load(*args, **kwargs):
        raise tfds.download.DownloadError("Failed to get url https://www.cs.toronto.edu/...\nretries exhausted")

    monkeypatch.setattr(tfds, "load", offline_load)
    with pytest.raises(DataError, match=r"^tensorflow-datasets could not load cifar10 .*DownloadError: Failed to get url[^\n]*$") as raised:
        data.load_split("cifar10", "test", tfds_data_dir=str(tmp_path))
    assert isinstance(raised.value.__cause__, tfds.download.DownloadError)


def test_imagenet_from_tfds_yields_jpeg_bytes_when_not_decoding(tmp_path):
    manual = {"tfds_data_dir": str(tmp_path), "tfds_manual_dir": str(tmp_path / "manual")}
    (tmp_path / "manual").mkdir()
    (tmp_path / "manual" / "ILSVRC2012_img_val.tar").write_bytes(b"")  # mock_data does not read it
    with tfds.testing.mock_data(num_examples=3):
        encoded = data.load_split("imagenet2012", "validation", decode=False, **manual)
        decoded = data.load_split("imagenet2012", "test", **manual)
        for (jpeg, label), (image, same_label) in zip(encoded, decoded):
            assert jpeg.dtype == tf.string and bool(tf.io.is_jpeg(jpeg))
            assert image.dtype == tf.uint8 and image.shape[-1] == 3
            assert int(label) == int(same_label)


def test_imagenet_without_image_folder_or_manual_files_says_what_is_missing(tmp_path):
    manual_dir = tmp_path / "manual"
    manual_dir.mkdir()
    (manual_dir / "ILSVRC2012_img_val.tar").write_bytes(b"")
    with pytest.raises(DataError) as raised:
        data.load_split("imagenet2012", "train", manual_dir, tfds_data_dir=str(tmp_path / "tfds"))
    message = str(raised.value)
    assert "\n" not in message
    assert "it prepares split 'train' from ILSVRC2012_img_train.tar" in message
    assert f"the manual dir {manual_dir} lacks ILSVRC2012_img_train.tar" in message
    assert "train/<class>/<image>" in message
    assert not (tmp_path / "tfds").exists()  # tfds was not asked to prepare anything


def test_imagenet_without_manual_dir_looks_where_tfds_would_and_leaves_nothing(tmp_path):
    with pytest.raises(DataError) as raised:
        data.load_split("imagenet2012", "validation", tfds_data_dir=str(tmp_path))
    message = str(raised.value)
    missing_from = tmp_path / "downloads" / "manual"
    assert f"from ILSVRC2012_img_val.tar, missing from {missing_from})" in message
    assert "no manual dir was given" in message and "\n" not in message
    assert list(tmp_path.iterdir()) == []


def closed_port():
    """A local socket bound but never listening: connecting to it is refused at once."""
    import socket

    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    return closed


def test_cifar10_download_fails_at_once_when_its_host_cannot_be_reached(tmp_path, monkeypatch):
    with closed_port() as closed:
        host, port = closed.getsockname()
        monkeypatch.setattr(data, "CIFAR10_DOWNLOAD_ADDRESS", (host, port))
        start = time.monotonic()
        with pytest.raises(DataError) as raised:
            data.load_split("cifar10", "train", tfds_data_dir=str(tmp_path))
        elapsed = time.monotonic() - start
    message = str(raised.value)
    assert f"(cannot reach {host}:{port} to download it: " in message and "refused" in message
    assert "point --data_dir or $ALEXNET_TF_DATA_DIR at a folder of CIFAR-10 binary batches" in message
    assert "\n" not in message
    assert elapsed < 5, elapsed
    assert list(tmp_path.iterdir()) == []


def test_the_download_check_gives_up_after_its_timeout(tmp_path, monkeypatch):
    import socket

    released = threading.Event()

    def hanging_lookup(*args, **kwargs):  # as a name lookup without a DNS answer
        released.wait(60)
        raise OSError("released")

    monkeypatch.setattr(socket, "create_connection", hanging_lookup)
    monkeypatch.setattr(data, "DOWNLOAD_PROBE_TIMEOUT_S", 0.2)
    start = time.monotonic()
    try:
        with pytest.raises(DataError, match=r"to download it: no answer within 0.2 s\)"):
            data.load_split("cifar10", "train", tfds_data_dir=str(tmp_path))
    finally:
        released.set()
    assert time.monotonic() - start < 5


# ---------------------------------------------------------------------------
# ImageNet as an image folder


# Three ILSVRC-2012 classes and their standard labels (positions among all 1000 wnids).
GOLDFISH, SEA_SNAKE, TOILET_TISSUE = "n01443537", "n01751748", "n15075141"
LABEL = {GOLDFISH: 1, SEA_SNAKE: 65, TOILET_TISSUE: 999}


@pytest.fixture
def image_folder(tmp_path):
    """train/ and validation/ with three classes whose sorted order is not creation order."""
    root = tmp_path / "imagenet"
    images = {}
    # (split, class, file); values make every image different. Neither the
    # creation order nor its reverse (what tmpfs lists) is the sorted order.
    layout = [
        ("train", TOILET_TISSUE, "b.JPEG"),
        ("train", TOILET_TISSUE, "c.JPEG"),
        ("train", TOILET_TISSUE, "a.JPEG"),
        ("train", GOLDFISH, "x.png"),
        ("train", SEA_SNAKE, "c.jpg"),
        ("train", SEA_SNAKE, "a.jpg"),
        ("validation", SEA_SNAKE, "v2.JPEG"),
        ("validation", GOLDFISH, "v1.JPEG"),
    ]
    for value, (split, class_name, file_name) in enumerate(layout):
        path = root / split / class_name / file_name
        images[path] = solid_image(value * 7)
        write_image(path, images[path])
    (root / "train" / GOLDFISH / "README.txt").write_text("not an image")
    (root / "train" / ".DS_Store").write_text("")
    return root


def test_imagenet_class_list_is_the_standard_one(tmp_path):
    wnids = data.imagenet_wnids()
    assert len(wnids) == 1000 and list(wnids) == sorted(wnids)
    assert (wnids[0], wnids[1], wnids[65], wnids[999]) == ("n01440764", GOLDFISH, SEA_SNAKE, TOILET_TISSUE)
    # The labels of tensorflow-datasets' own imagenet2012: both ways of reading ImageNet agree.
    assert tuple(tfds.builder("imagenet2012", data_dir=str(tmp_path)).info.features["label"].names) == wnids


def test_image_folder_labels_are_the_standard_imagenet_indices(image_folder):
    info = data.dataset_info("imagenet2012", image_folder)
    assert info == data.DatasetInfo(
        name="imagenet2012",
        num_classes=1000,
        class_names=data.imagenet_wnids(),
        split_sizes={"train": 6, "validation": 2},
        encoded=True,
    )
    dataset = data.load_split("imagenet2012", "train", image_folder)
    assert dataset.element_spec == (tf.TensorSpec([None, None, 3], tf.uint8), tf.TensorSpec([], tf.int64))
    assert int(dataset.cardinality()) == 6
    images, labels = as_lists(dataset)
    assert sorted(labels) == [1, 65, 65, 999, 999, 999]
    expected_files = [f"{GOLDFISH}/x.png", f"{SEA_SNAKE}/a.jpg", f"{SEA_SNAKE}/c.jpg"] + [
        f"{TOILET_TISSUE}/{name}" for name in ("a.JPEG", "b.JPEG", "c.JPEG")
    ]
    decoded = {
        relative: tf.io.decode_image((image_folder / "train" / relative).read_bytes(), channels=3).numpy()
        for relative in expected_files
    }
    # Each image comes with its own class's label (the training order is a fixed permutation).
    for image, label in zip(images, labels):
        matches = [r for r, pixels in decoded.items() if pixels.shape == image.shape and np.array_equal(pixels, image)]
        assert matches and all(LABEL[r.split("/")[0]] == label for r in matches)
    # The PNG is lossless: exactly the pixels that were written.
    assert any(np.array_equal(image, solid_image(3 * 7)) for image in images)


def test_image_folder_order_is_label_then_file_name(tmp_path):
    # Eight classes, created shuffled: a directory listing (hash or creation
    # order) comes out sorted by chance once in 40320.
    wnids = data.imagenet_wnids()
    labels_made = [7, 2, 5, 0, 6, 3, 1, 4]
    for label in labels_made:
        write_image(tmp_path / "train" / wnids[label] / "only.png", solid_image(label))
        write_image(tmp_path / "validation" / wnids[0] / f"{label}.png", solid_image(label))
    images, labels = as_lists(data.load_split("imagenet2012", "train", tmp_path))
    assert sorted(labels) == list(range(8)) and labels != list(range(8))  # every class, not class-sorted
    assert [int(image[0, 0, 0]) for image in images] == labels  # each image with its own label
    again = as_lists(data.load_split("imagenet2012", "train", tmp_path))[1]
    assert again == labels  # a fixed order
    images, labels = as_lists(data.load_split("imagenet2012", "validation", tmp_path))
    assert labels == [0] * 8
    assert [int(image[0, 0, 0]) for image in images] == list(range(8))


def test_image_folder_validation_keeps_the_standard_labels(image_folder):
    _, labels = as_lists(data.load_split("imagenet2012", "validation", image_folder))
    assert labels == [1, 65]
    _, alias_labels = as_lists(data.load_split("imagenet2012", "test", image_folder))
    assert alias_labels == labels


def test_image_folder_without_decoding_yields_the_file_bytes(image_folder):
    encoded = list(data.load_split("imagenet2012", "validation", image_folder, decode=False))
    decoded = list(data.load_split("imagenet2012", "validation", image_folder))
    assert encoded[0][0].dtype == tf.string
    assert encoded[0][0].numpy() == (image_folder / "validation" / GOLDFISH / "v1.JPEG").read_bytes()
    for (jpeg, label), (image, same_label) in zip(encoded, decoded):
        np.testing.assert_array_equal(tf.io.decode_jpeg(jpeg, channels=3), image)
        assert int(label) == int(same_label)


def test_validation_class_missing_from_train_keeps_its_standard_label(image_folder):
    write_image(image_folder / "validation" / "n01440764" / "tench.JPEG", solid_image(1))
    _, labels = as_lists(data.load_split("imagenet2012", "validation", image_folder))
    assert labels == [0, 1, 65]


@pytest.mark.parametrize("split", ["train", "validation"])
@pytest.mark.parametrize("folder", ["n99999999", "tench", "N01440764"])
def test_a_folder_that_is_not_an_ilsvrc_class_is_a_one_line_error(image_folder, split, folder):
    write_image(image_folder / split / folder / "x.JPEG", solid_image(1))
    with pytest.raises(DataError) as raised:
        data.source("imagenet2012", image_folder)  # when the source is made, before any run starts
    message = str(raised.value)
    assert "\n" not in message
    assert f"{image_folder / split} has folder(s) that are not ILSVRC-2012 classes: {folder};" in message
    assert "named by WordNet id" in message and "n01440764" in message


def test_flat_validation_folder_is_an_error(image_folder):
    write_image(image_folder / "validation" / "ILSVRC2012_val_00000001.JPEG", solid_image(1))
    with pytest.raises(DataError, match=r"holds images directly .* expected one subfolder per class"):
        data.load_split("imagenet2012", "validation", image_folder)


def test_missing_validation_folder_is_an_error_and_left_out_of_info(image_folder):
    for path in sorted((image_folder / "validation").rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    (image_folder / "validation").rmdir()
    assert data.dataset_info("imagenet2012", image_folder).split_sizes == {"train": 6}
    with pytest.raises(DataError, match=r"needs the folder .*validation, which is missing; .* contains train/"):
        data.load_split("imagenet2012", "validation", image_folder)


def test_a_tree_with_only_validation_is_read_with_the_standard_labels(tmp_path):
    write_image(tmp_path / "validation" / SEA_SNAKE / "ILSVRC2012_val_00000001.JPEG", solid_image(1))
    src = data.source("imagenet2012", tmp_path)
    assert src.info().split_sizes == {"validation": 1} and src.test_split() == "validation"
    assert as_lists(src.load("validation"))[1] == [65]
    with pytest.raises(DataError, match=r"split 'train' needs the folder .*train, which is missing"):
        src.load("train")


def test_train_folder_without_class_folders_is_an_error(tmp_path):
    write_image(tmp_path / "train" / "loose.JPEG", solid_image(1))
    with pytest.raises(DataError, match=r"holds images directly \(e.g. loose.JPEG\); expected one subfolder per class"):
        data.dataset_info("imagenet2012", tmp_path)


def test_missing_imagenet_folder_is_an_error(tmp_path):
    with pytest.raises(DataError, match="ImageNet folder .* does not exist"):
        data.load_split("imagenet2012", "train", tmp_path / "nowhere")


def test_undecodable_image_stops_iteration_naming_the_file(image_folder):
    # The last file of the last class: found through the end-of-data check.
    broken = image_folder / "train" / TOILET_TISSUE / "zz_broken.JPEG"
    broken.write_bytes(b"this is not an image")
    dataset = data.load_split("imagenet2012", "train", image_folder)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"could not read or decode image file.*zz_broken\.JPEG"):
        list(dataset)


def test_undecodable_image_in_the_middle_names_that_file(image_folder):
    (image_folder / "train" / SEA_SNAKE / "b_broken.jpg").write_bytes(b"\xff\xd8 truncated")
    with pytest.raises(tf.errors.InvalidArgumentError, match=rf"{SEA_SNAKE}/b_broken\.jpg"):
        list(data.load_split("imagenet2012", "train", image_folder))


def test_skip_bad_images_drops_and_reports_them(image_folder, capfd):
    (image_folder / "train" / SEA_SNAKE / "b_broken.jpg").write_bytes(b"garbage")
    (image_folder / "train" / TOILET_TISSUE / "zz_broken.JPEG").write_bytes(b"")
    dataset = data.load_split("imagenet2012", "train", image_folder, skip_bad_images=True)
    _, labels = as_lists(dataset)
    assert sorted(labels) == [1, 65, 65, 999, 999, 999]
    printed = capfd.readouterr().err
    reports = [line for line in printed.splitlines() if "skipped unreadable image file" in line]
    assert len(reports) == 2  # in the training split's fixed order, whichever comes first
    assert {"b_broken.jpg", "zz_broken.JPEG"} == {n for n in ("b_broken.jpg", "zz_broken.JPEG") for r in reports if n in r}
    assert re.search(r"\b1 of 8 files skipped so far", reports[0]) and re.search(r"\b2 of 8 files skipped so far", reports[1])


# ---------------------------------------------------------------------------
# Synthetic data


def test_synthetic_defaults():
    info = data.dataset_info("synthetic")
    assert info.split_sizes == {"train": 1281, "test": 128}
    assert info.num_classes == 1000 and len(info.class_names) == 1000
    dataset = data.load_split("synthetic", "train")
    assert dataset.element_spec == (tf.TensorSpec([256, 256, 3], tf.uint8), tf.TensorSpec([], tf.int64))
    assert int(dataset.cardinality()) == 1281


def test_synthetic_examples_vary_and_are_reproducible():
    options = dict(image_size=17, num_classes=5, num_examples=40)
    images, labels = as_lists(data.load_split("synthetic", "train", seed=3, **options))
    again, labels_again = as_lists(data.load_split("synthetic", "train", seed=3, **options))
    other_seed, _ = as_lists(data.load_split("synthetic", "train", seed=4, **options))
    test_images, _ = as_lists(data.load_split("synthetic", "test", seed=3, **options))

    assert images[0].shape == (17, 17, 3)
    assert len(images) == 40 and set(labels) == set(range(5))
    assert labels == labels_again and all(np.array_equal(a, b) for a, b in zip(images, again))
    assert len({image.tobytes() for image in images}) == 40
    assert not np.array_equal(images[0], other_seed[0])
    assert not np.array_equal(images[0], test_images[0])
    # Pixels cover the byte range (the image is not a constant or a low-bit pattern).
    pixels = np.concatenate([image.ravel() for image in images])
    assert pixels.min() < 5 and pixels.max() > 250 and abs(pixels.mean() - 127.5) < 3


@pytest.mark.parametrize(
    "option, value",
    [("image_size", 0), ("num_classes", -1), ("num_examples", 0), ("image_size", 2.5), ("seed", "x")],
)
def test_synthetic_rejects_bad_options(option, value):
    with pytest.raises(DataError, match=rf"synthetic {option}={value!r} must be"):
        data.load_split("synthetic", "train", **{option: value})


# ---------------------------------------------------------------------------
# Source objects and the chooser


def test_source_for_records_the_data_dir_the_environment_chose(shared_cifar10_dir, monkeypatch):
    monkeypatch.setenv(data.DATA_DIR_ENV, str(shared_cifar10_dir))
    src = data.source_for(TrainConfig(dataset="cifar10"))
    assert type(src) is data.Cifar10BinarySource
    assert src.name == "cifar10" and src.reads_files
    assert src.data_dir == str(shared_cifar10_dir)
    assert src.info() == data.dataset_info("cifar10", shared_cifar10_dir)
    assert src.test_split() is None  # the shared subset has no test_batch.bin
    assert int(src.load("train").cardinality()) == 5085


def test_source_for_prefers_the_data_dir_flag_to_the_environment(tmp_path, monkeypatch):
    write_cifar10_folder(tmp_path / "flag", train_counts=(2,), test_count=1)
    monkeypatch.setenv(data.DATA_DIR_ENV, str(tmp_path / "nowhere"))
    src = data.source_for(TrainConfig(dataset="cifar10", data_dir=str(tmp_path / "flag")))
    assert src.data_dir == str(tmp_path / "flag")
    assert src.info().split_sizes == {"train": 2, "test": 1}
    assert src.test_split() == "test"


def test_source_for_without_any_data_dir_reads_cifar10_through_tfds(tmp_path, cifar10_download_host):
    src = data.source_for(TrainConfig(dataset="cifar10", tfds_data_dir=str(tmp_path)))
    assert type(src) is data.TfdsSource and src.name == "cifar10"
    assert src.data_dir is None and src.reads_files
    with tfds.testing.mock_data(num_examples=3):
        assert src.info().split_sizes == {"train": 3, "test": 3}
        assert src.test_split() == "test"


def test_source_for_passes_the_tfds_data_dir_only_to_sources_that_take_it(tmp_path):
    with pytest.raises(DataError, match=r"tfds_data_dir do not apply to dataset 'cifar10_sample'"):
        data.source_for(TrainConfig(dataset="cifar10_sample", tfds_data_dir=str(tmp_path)))


def test_source_for_an_image_folder_from_the_environment(image_folder, monkeypatch):
    monkeypatch.setenv(data.DATA_DIR_ENV, str(image_folder))
    src = data.source_for(TrainConfig(dataset="imagenet2012"))
    assert type(src) is data.ImageFolderSource
    assert src.data_dir == str(image_folder) and src.reads_files
    assert src.info().split_sizes == {"train": 6, "validation": 2}


@pytest.mark.parametrize(
    "dataset, kind, test_split",
    [("cifar10_sample", data.Cifar10SampleSource, "test"), ("synthetic", data.SyntheticSource, "test")],
)
def test_sources_without_files_ignore_data_dir_and_record_none(dataset, kind, test_split, tmp_path, monkeypatch):
    monkeypatch.setenv(data.DATA_DIR_ENV, str(tmp_path / "nowhere"))
    src = data.source_for(TrainConfig(dataset=dataset, data_dir=str(tmp_path / "nowhere")))
    assert type(src) is kind and src.name == dataset
    assert not src.reads_files and src.data_dir is None
    assert src.test_split() == test_split


def test_image_folder_test_split_is_validation(image_folder):
    src = data.source("imagenet2012", image_folder)
    assert src.test_split() == "validation"
    # The alias reaches the same split.
    assert as_lists(src.load("test"))[1] == as_lists(src.load("validation"))[1] == [1, 65]


def test_image_folder_without_validation_has_no_test_split(image_folder):
    for path in sorted((image_folder / "validation").rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    (image_folder / "validation").rmdir()
    src = data.source("imagenet2012", image_folder)
    assert src.test_split() is None
    assert src.info().split_sizes == {"train": 6}


def test_source_checks_names_and_folders_when_chosen(tmp_path):
    with pytest.raises(DataError, match="dataset='mnist' is not supported"):
        data.source("mnist")
    with pytest.raises(DataError, match=r"CIFAR-10 folder .*nowhere \(from data_dir\) does not exist"):
        data.source("cifar10", tmp_path / "nowhere")
    with pytest.raises(DataError, match="ImageNet folder .* does not exist"):
        data.source("imagenet2012", tmp_path / "nowhere")


def test_source_info_is_computed_once(tmp_path):
    write_cifar10_folder(tmp_path, train_counts=(2,), test_count=1)
    src = data.source("cifar10", tmp_path)
    assert src.info() is src.info()


# ---------------------------------------------------------------------------
# Labels without decoding


def test_binary_batches_labels_are_the_label_bytes_in_load_order(tmp_path):
    contents = write_cifar10_folder(tmp_path, train_counts=(3, 2), test_count=4)
    src = data.source("cifar10", tmp_path)
    raw_splits = {
        "train": contents["data_batch_1.bin"] + contents["data_batch_2.bin"],
        "test": contents["test_batch.bin"],
    }
    for split, raw in raw_splits.items():
        labels = src.labels(split)
        assert labels.dtype == np.int64
        assert labels.tolist() == list(raw[::RECORD_BYTES]) == as_lists(src.load(split))[1]


def test_labels_of_a_missing_split_or_a_bad_name_are_errors(tmp_path):
    write_cifar10_folder(tmp_path, train_counts=(2,), test_count=0)
    src = data.source("cifar10", tmp_path)
    with pytest.raises(DataError, match=r"'test' needs test_batch.bin, which is missing"):
        src.labels("test")
    with pytest.raises(DataError, match=r"split='dev' is not a split of cifar10"):
        src.labels("dev")


def test_embedded_sample_labels_match_load():
    src = data.source("cifar10_sample")
    assert src.labels("test").tolist() == as_lists(src.load("test"))[1]
    assert len(src.labels("train")) == 1000


def test_imagenet_folder_labels_match_load(image_folder):
    src = data.source("imagenet2012", image_folder)
    for split in ("train", "validation", "test"):
        assert src.labels(split).tolist() == as_lists(src.load(split))[1]
    assert data.source("imagenet2012", image_folder, skip_bad_images=True).labels("train") is None


def test_sources_without_cheap_labels_return_none(tmp_path):
    assert data.source("synthetic", num_examples=3).labels("train") is None
    # Nothing is prepared or downloaded to answer.
    assert data.source("cifar10", tfds_data_dir=str(tmp_path), download=False).labels("train") is None


def test_imagenets_archive_as_data_dir_says_to_pass_its_folder(tmp_path):
    archive = tmp_path / "ILSVRC2012_img_train.tar"
    with tarfile.open(archive, "w") as tar:  # per-class tars inside, as the real one
        member = tmp_path / "n01440764.tar"
        member.write_bytes(b"")
        tar.add(member, arcname=member.name)
    with pytest.raises(DataError) as raised:
        data.source("imagenet2012", archive)
    message = str(raised.value)
    assert "is a file, not a folder: it is ImageNet's archive" in message
    assert f"--data_dir={tmp_path}" in message and "mkdir" not in message and "\n" not in message
