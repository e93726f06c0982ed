"""Tests of the decoded image-folder sources: cifar10 as a tree, and image_folder.

``cifar10`` reads ``train/<class>/<image>`` (and ``test/``) with the official
class indices; ``image_folder`` reads a user's own tree, classes from train/'s
sorted folder names. Both yield decoded uint8 [H, W, 3] images of any size,
which the input pipeline and `preprocessing.compute_stats` must take mixed.
The trees are written here; a few real CIFAR-10 JPEGs are copied from the
shared folder when it is there.
"""

import io
import pathlib
import shutil

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from alexnet_tf import data
from alexnet_tf import input_pipeline as ip
from alexnet_tf import preprocessing as pp
from alexnet_tf.config import TrainConfig
from alexnet_tf.data import CIFAR10_CLASS_NAMES, DataError

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _no_data_dir_from_environment(monkeypatch):
    # A developer's ALEXNET_TF_DATA_DIR must not change what these tests read.
    monkeypatch.delenv(data.DATA_DIR_ENV, raising=False)


# ---------------------------------------------------------------------------
# Helpers


def coded_image(value, height=6, width=8):
    """An RGB image whose top-left pixel is ``value`` (so a lossless file names itself), different channels."""
    base = np.arange(height * width, dtype=np.int32).reshape(height, width, 1)
    return ((base + np.array([value, value + 80, value + 160])) % 256).astype(np.uint8)


def write_file(path, image, mode=None):
    """Writes ``image`` (uint8 [H, W, C] or [H, W]) in the format of ``path``'s suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    if suffix == ".png" and image.ndim == 3:
        path.write_bytes(tf.io.encode_png(image).numpy())
    elif suffix in (".jpg", ".jpeg"):
        path.write_bytes(tf.io.encode_jpeg(image, quality=95).numpy())
    else:  # GIF, BMP, grayscale PNG: through Pillow
        buffer = io.BytesIO()
        Image.fromarray(image, mode).save(buffer, format={".gif": "GIF", ".bmp": "BMP", ".png": "PNG"}[suffix])
        path.write_bytes(buffer.getvalue())
    return path


def as_lists(dataset):
    images, labels = [], []
    for image, label in dataset.as_numpy_iterator():
        images.append(image)
        labels.append(int(label))
    return images, labels


def cifar10_tree(root, counts, split="train"):
    """PNG files root/<split>/<class>/<i>.png; each image's top-left red value is its class's official index."""
    for class_name, count in counts.items():
        for i in range(count):
            label = CIFAR10_CLASS_NAMES.index(class_name)
            write_file(root / split / class_name / f"{i:04d}.png", coded_image(label, 32, 32))
    return root


def one_line_error(call):
    with pytest.raises(DataError) as raised:
        call()
    message = str(raised.value)
    assert "\n" not in message, message
    return message


# ---------------------------------------------------------------------------
# cifar10 as an image-folder tree


def test_cifar10_tree_labels_are_the_official_indices(tmp_path):
    cifar10_tree(tmp_path, {"truck": 3, "cat": 2})
    src = data.source("cifar10", tmp_path)
    assert type(src) is data.Cifar10FolderSource and src.name == "cifar10"
    assert src.data_dir == str(tmp_path) and src.reads_files
    assert src.info() == data.DatasetInfo(
        name="cifar10", num_classes=10, class_names=CIFAR10_CLASS_NAMES, split_sizes={"train": 5}, encoded=False
    )
    dataset = src.load("train")
    assert dataset.element_spec == (tf.TensorSpec([None, None, 3], tf.uint8), tf.TensorSpec([], tf.int64))
    assert int(dataset.cardinality()) == 5
    images, labels = as_lists(dataset)
    assert sorted(labels) == [3, 3, 9, 9, 9]
    assert [int(image[0, 0, 0]) for image in images] == labels  # each image with its own class's label
    assert all(image.shape == (32, 32, 3) and image.dtype == np.uint8 for image in images)
    assert src.test_split() is None
    assert list(src.labels("train")) == labels


def test_cifar10_tree_test_split_in_class_then_file_order(tmp_path):
    cifar10_tree(tmp_path, {"dog": 2, "airplane": 1})
    cifar10_tree(tmp_path, {"ship": 2, "bird": 1}, split="test")
    (tmp_path / "test" / "ship" / "notes.txt").write_text("not an image")
    src = data.source("cifar10", tmp_path)
    assert src.info().split_sizes == {"train": 3, "test": 3}
    assert src.test_split() == "test"
    images, labels = as_lists(src.load("test"))
    assert labels == [2, 8, 8]  # bird, then ship's 0000 and 0001
    assert [int(image[0, 0, 0]) for image in images] == labels
    assert list(src.labels("test")) == labels


def test_cifar10_tree_with_only_a_test_split(tmp_path):
    cifar10_tree(tmp_path, {"frog": 2}, split="test")
    src = data.source("cifar10", tmp_path)
    assert type(src) is data.Cifar10FolderSource
    assert src.info().split_sizes == {"test": 2} and src.test_split() == "test"
    assert as_lists(src.load("test"))[1] == [6, 6]
    message = one_line_error(lambda: src.load("train"))
    assert "CIFAR-10 split 'train' needs the folder" in message and "missing" in message


@pytest.mark.parametrize("split", ["train", "test"])
def test_a_folder_that_is_not_a_cifar10_class_is_an_error_naming_it(tmp_path, split):
    cifar10_tree(tmp_path, {"cat": 1})
    write_file(tmp_path / split / "kitten" / "0000.png", coded_image(1))
    message = one_line_error(lambda: data.source("cifar10", tmp_path))
    assert f"{tmp_path / split} has folder(s) that are not CIFAR-10 classes: kitten" in message
    assert "airplane, automobile, bird, cat, deer, dog, frog, horse, ship, truck" in message


def test_cifar10_tree_names_are_case_sensitive(tmp_path):
    cifar10_tree(tmp_path, {"cat": 1})
    write_file(tmp_path / "train" / "Truck" / "0000.png", coded_image(1))
    assert "not CIFAR-10 classes: Truck" in one_line_error(lambda: data.source("cifar10", tmp_path))


def test_cifar10_tree_empty_class_folder_is_an_error(tmp_path):
    cifar10_tree(tmp_path, {"cat": 1})
    (tmp_path / "train" / "dog").mkdir()
    (tmp_path / "train" / "dog" / "README").write_text("")
    message = one_line_error(lambda: data.source("cifar10", tmp_path).info())
    assert f"class folder {tmp_path / 'train' / 'dog'} has no images" in message and "README" in message


def test_cifar10_folder_without_class_folders_is_still_read_as_binary_batches(tmp_path):
    (tmp_path / "train").mkdir()  # no class subfolders: not a tree
    message = one_line_error(lambda: data.source("cifar10", tmp_path))
    assert "no CIFAR-10 binary batches" in message and "found train/" in message
    assert "nor an image-folder tree" in message
    # Without train/ or test/ the message is the binary batches' own.
    (tmp_path / "train").rmdir()
    assert "image-folder" not in one_line_error(lambda: data.source("cifar10", tmp_path))


def test_cifar10_tree_training_order_mixes_the_classes(tmp_path):
    counts = {name: 6 for name in CIFAR10_CLASS_NAMES[:5]}
    src = data.source("cifar10", cifar10_tree(tmp_path, counts))
    labels = list(src.labels("train"))
    assert sorted(labels) == sorted(label for label in range(5) for _ in range(6))
    assert labels != sorted(labels)
    assert len(set(labels[-6:])) >= 3  # the last 20% (a held-out part) holds several classes
    assert as_lists(src.load("train"))[1] == labels
    assert list(data.source("cifar10", tmp_path).labels("train")) == labels  # a fixed order


def test_cifar10_tree_is_kept_in_memory_after_the_first_pass(tmp_path):
    cifar10_tree(tmp_path, {"cat": 3, "ship": 4})
    dataset = data.source("cifar10", tmp_path).load("train")
    first_images, first_labels = as_lists(dataset)
    shutil.rmtree(tmp_path / "train")
    second_images, second_labels = as_lists(dataset)
    assert second_labels == first_labels
    assert all(np.array_equal(a, b) for a, b in zip(first_images, second_images))
    assert int(dataset.cardinality()) == 7


def test_cifar10_tree_cache_survives_the_holdout_split_and_repeated_epochs(tmp_path):
    # The trainer takes the first records for training: a plain .cache() read partly is dropped.
    cifar10_tree(tmp_path, {"cat": 5, "ship": 5})
    src = data.source("cifar10", tmp_path)
    train_part, validation_part = ip.split_holdout(src.load("train"), 10, 0.2)
    batches = iter(
        ip.train_dataset(train_part.repeat(), batch_size=4, stats=pp.IMAGENET_STATS, image_size=16, shuffle_buffer=8)
    )
    next(batches)  # the first pass, through the training part only
    shutil.rmtree(tmp_path / "train")
    assert sum(int(labels.shape[0]) for _, labels in (next(batches) for _ in range(10))) == 40  # five epochs
    assert as_lists(validation_part)[1] == list(src.labels("train"))[8:]
    assert len(as_lists(train_part)[1]) == 8


def test_image_folder_sources_other_than_cifar10_are_not_cached(tmp_path):
    write_file(tmp_path / "train" / "a" / "x.png", coded_image(1))
    dataset = data.source("image_folder", tmp_path).load("train")
    assert len(as_lists(dataset)[1]) == 1
    (tmp_path / "train" / "a" / "x.png").unlink()
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"could not read or decode image file.*x\.png"):
        as_lists(dataset)


def test_real_cifar10_jpegs_decode_with_official_labels(shared_cifar10_jpeg_dir, tmp_path):
    for class_name in ("airplane", "frog", "truck"):
        for name in ("0000.jpg", "0001.jpg"):
            (tmp_path / "train" / class_name).mkdir(parents=True, exist_ok=True)
            shutil.copy(shared_cifar10_jpeg_dir / "train" / class_name / name, tmp_path / "train" / class_name / name)
    src = data.source("cifar10", tmp_path)
    images, labels = as_lists(src.load("train"))
    assert sorted(labels) == [0, 0, 6, 6, 9, 9] and list(src.labels("train")) == labels
    files = [pathlib.Path(path) for path in src._files("train")[0]]
    for image, label, file in zip(images, labels, files):
        assert image.shape == (32, 32, 3) and image.dtype == np.uint8
        assert CIFAR10_CLASS_NAMES[label] == file.parent.name
        np.testing.assert_array_equal(image, tf.io.decode_jpeg(file.read_bytes(), channels=3).numpy())
    assert 20 < np.mean(images) < 235 and np.std(images) > 20  # real photos, not blanks


def test_the_shared_tree_lists_fifty_thousand_images_and_holds_out_every_class(shared_cifar10_jpeg_dir):
    src = data.source("cifar10", shared_cifar10_jpeg_dir)  # lists file names only: nothing is decoded
    assert type(src) is data.Cifar10FolderSource
    assert src.info().split_sizes["train"] == 50_000 and src.info().num_classes == 10
    labels = src.labels("train")
    assert labels.dtype == np.int64 and np.bincount(labels).tolist() == [5000] * 10
    held_out = labels[-5000:]
    assert np.bincount(held_out, minlength=10).min() > 400  # about 500 of each class


# ---------------------------------------------------------------------------
# image_folder: a user's own images


@pytest.fixture
def user_folder(tmp_path):
    """Three classes created out of sorted order; every file has its own size; five formats.

    Returns (root, {relative path: (label, the RGB pixels the source must yield)}).
    """
    root = tmp_path / "mine"
    gray = (np.arange(9 * 7).reshape(9, 7) * 4).astype(np.uint8)
    rgba = np.concatenate([coded_image(40, 11, 5), np.full((11, 5, 1), 7, np.uint8)], axis=2)
    palette_image = np.zeros((13, 17, 3), np.uint8)
    palette_image[:, :8] = (255, 0, 0)
    palette_image[:, 8:] = (0, 0, 255)
    files = {
        "zebra/a.jpg": (2, coded_image(10, 20, 30), None),
        "zebra/b.BMP": (2, coded_image(20, 14, 9), None),
        "zebra/c.gif": (2, palette_image, None),
        "ant/only.png": (0, coded_image(30, 25, 12), None),  # a class with a single image
        "moose/gray.png": (1, gray, "L"),
        "moose/rgba.png": (1, rgba, "RGBA"),
    }
    expected = {}
    for relative, (label, pixels, mode) in files.items():
        path = write_file(root / "train" / relative, pixels, mode)
        if mode == "L":
            rgb = np.repeat(pixels[:, :, None], 3, axis=2)
        elif path.suffix == ".jpg":  # lossy: what the JPEG decoder gives
            rgb = tf.io.decode_jpeg(path.read_bytes(), channels=3).numpy()
            assert rgb.shape == pixels.shape
        else:  # lossless; RGBA loses its alpha
            rgb = pixels[:, :, :3]
        expected[relative] = (label, rgb)
    (root / "train" / "zebra" / "notes.txt").write_text("not an image")
    (root / "train" / ".hidden").mkdir()
    return root, expected


def test_image_folder_decodes_every_format_to_rgb(user_folder):
    root, expected = user_folder
    src = data.source("image_folder", root)
    assert type(src) is data.GenericImageFolderSource and src.name == "image_folder"
    assert src.info() == data.DatasetInfo(
        name="image_folder",
        num_classes=3,
        class_names=("ant", "moose", "zebra"),
        split_sizes={"train": 6},
        encoded=True,
    )
    dataset = src.load("train")
    assert dataset.element_spec == (tf.TensorSpec([None, None, 3], tf.uint8), tf.TensorSpec([], tf.int64))
    assert int(dataset.cardinality()) == 6
    images, labels = as_lists(dataset)
    files = [str(pathlib.Path(path).relative_to(root / "train")) for path in src._files("train")[0]]
    assert sorted(files) == sorted(expected)
    for image, label, relative in zip(images, labels, files):
        expected_label, pixels = expected[relative]
        assert label == expected_label, relative
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3, relative
        np.testing.assert_array_equal(image, pixels, err_msg=relative)
    assert list(src.labels("train")) == labels
    assert src.test_split() is None
    # decode=False gives the files' bytes (the pipeline decodes them after shuffling).
    encoded = as_lists(src.load("train", decode=False))[0]
    assert [tf.io.decode_image(e, channels=3, expand_animations=False).shape for e in encoded] == [
        image.shape for image in images
    ]


def test_image_folder_test_split_uses_the_training_classes(user_folder):
    root, _ = user_folder
    write_file(root / "test" / "zebra" / "t1.png", coded_image(3))
    write_file(root / "test" / "ant" / "t2.png", coded_image(4))
    src = data.source("image_folder", root)
    assert src.info().split_sizes == {"train": 6, "test": 2} and src.test_split() == "test"
    assert as_lists(src.load("test"))[1] == [0, 2] == list(src.labels("test"))
    write_file(root / "test" / "yak" / "t3.png", coded_image(5))
    message = one_line_error(lambda: data.source("image_folder", root).load("test"))
    assert "class folder(s) that are not among the 3 classes (ant, moose, zebra): yak" in message


def test_image_folder_training_order_mixes_the_classes(tmp_path):
    for class_index in range(5):
        for i in range(8):
            write_file(tmp_path / "train" / f"class{class_index}" / f"{i}.png", coded_image(class_index))
    src = data.source("image_folder", tmp_path)
    labels = as_lists(src.load("train"))[1]
    assert labels != sorted(labels) and len(set(labels[-8:])) >= 3  # the last 20% holds several classes
    assert list(src.labels("train")) == labels


def test_image_folder_from_the_environment_and_through_source_for(user_folder, monkeypatch):
    root, _ = user_folder
    monkeypatch.setenv(data.DATA_DIR_ENV, str(root))
    src = data.source_for(TrainConfig(dataset="image_folder"))
    assert type(src) is data.GenericImageFolderSource and src.data_dir == str(root)
    assert "image_folder" in data.DATASETS and data.SPLITS["image_folder"] == ("train", "test")


def test_image_folder_needs_a_data_dir():
    message = one_line_error(lambda: data.source("image_folder"))
    assert "dataset 'image_folder' needs a data dir" in message
    assert "--data_dir" in message and f"${data.DATA_DIR_ENV}" in message


def test_image_folder_bad_trees(tmp_path):
    message = one_line_error(lambda: data.source("image_folder", tmp_path / "nowhere"))
    assert "nowhere (from data_dir) does not exist" in message
    write_file(tmp_path / "test" / "a" / "x.png", coded_image(1))
    message = one_line_error(lambda: data.source("image_folder", tmp_path))
    assert "has no train/ folder" in message and "found test/" in message
    write_file(tmp_path / "train" / "loose.png", coded_image(1))
    assert "has no class subfolders" in one_line_error(lambda: data.source("image_folder", tmp_path))
    write_file(tmp_path / "train" / "a" / "x.png", coded_image(1))
    (tmp_path / "train" / "empty").mkdir()
    (tmp_path / "train" / "loose.png").unlink()
    message = one_line_error(lambda: data.source("image_folder", tmp_path).load("train"))
    assert f"class folder {tmp_path / 'train' / 'empty'} has no images" in message
    assert "split='validation' is not a split of image_folder" in one_line_error(
        lambda: data.source("image_folder", tmp_path).load("validation")
    )
    assert "tfds_data_dir do not apply to dataset 'image_folder'" in one_line_error(
        lambda: data.source("image_folder", tmp_path, tfds_data_dir="/tmp")
    )


def test_image_folder_bad_file_is_named_or_skipped(user_folder, capfd):
    root, _ = user_folder
    (root / "train" / "moose" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"moose/broken\.png"):
        as_lists(data.source("image_folder", root).load("train"))
    src = data.source("image_folder", root, skip_bad_images=True)
    assert len(as_lists(src.load("train"))[1]) == 6
    assert "broken.png" in capfd.readouterr().err
    assert src.labels("train") is None  # which files fail is only known by decoding them


def test_cifar10_tree_takes_skip_bad_images(tmp_path):
    cifar10_tree(tmp_path, {"cat": 2})
    (tmp_path / "train" / "cat" / "zz.jpg").write_bytes(b"garbage")
    assert as_lists(data.source("cifar10", tmp_path, skip_bad_images=True).load("train"))[1] == [3, 3]
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"cat/zz\.jpg"):
        as_lists(data.source("cifar10", tmp_path).load("train"))


# ---------------------------------------------------------------------------
# Mixed sizes through the input pipeline and the statistics


def test_mixed_sizes_through_the_pipeline_and_the_statistics(user_folder):
    root, _ = user_folder
    src = data.source("image_folder", root)
    info = src.info()
    size = 24
    resize = pp.resize_size_for(size)
    images = src.load("train", decode=not info.encoded)  # file bytes: the pipeline decodes them
    stats = pp.compute_stats(src.load("train").map(lambda image, label: image), resize, batch_size=4)
    assert stats.num_images == 6 and stats.mean_image.shape == (resize, resize, 3)
    assert np.all(np.isfinite(stats.eigenvalues)) and np.all((stats.mean_rgb > 0) & (stats.mean_rgb < 255))
    for mean in ("channel", "image"):
        for augment in (True, False):
            batches = ip.train_dataset(
                images, batch_size=4, stats=stats, image_size=size, mean=mean, augment=augment, encoded=info.encoded,
                shuffle_buffer=6, drop_remainder=False,
            )  # fmt: skip
            shapes = [(tuple(x.shape), tuple(y.shape)) for x, y in batches]
            assert shapes == [((4, size, size, 3), (4,)), ((2, size, size, 3), (2,))], (mean, augment)
        for ten_crop in (False, True):
            batches = list(
                ip.eval_dataset(
                    images, batch_size=4, stats=stats, image_size=size, ten_crop=ten_crop, mean=mean, encoded=True
                )
            )
            views = 10 if ten_crop else 1
            assert [tuple(x.shape) for x, _ in batches] == [(4 * views, size, size, 3), (2 * views, size, size, 3)]
            assert np.concatenate([y for _, y in batches]).tolist() == list(src.labels("train"))
            assert all(np.all(np.isfinite(x)) for x, _ in batches)


# ---------------------------------------------------------------------------
# Whole runs on trees: train, evaluate, predict, export


def tiny_run(tmp_path, **settings):
    from alexnet_tf import training

    config = TrainConfig(
        experiments_dir=str(tmp_path / "experiments"), experiment="tree", model="four_layer", image_size=32,
        epochs=1, stats_images=64, **settings,
    )  # fmt: skip
    return training.train(config, verbose=0), tmp_path / "experiments" / "tree" / "run1"


@pytest.mark.slow
def test_a_cifar10_tree_trains_and_its_test_folder_is_evaluated(tmp_path):
    import json
    import subprocess
    import sys

    from alexnet_tf import evaluation

    root = cifar10_tree(tmp_path / "tree", {name: 4 for name in CIFAR10_CLASS_NAMES})
    cifar10_tree(root, {"cat": 2, "truck": 3}, split="test")
    results, run_dir = tiny_run(tmp_path, dataset="cifar10", data_dir=str(root), batch_size=8, validation_fraction=0.2)
    assert results["epochs"] == 1 and results["test_top1_error"] is not None

    done = subprocess.run(
        [sys.executable, "-m", "alexnet_tf.evaluate", f"--checkpoint={run_dir}", "--dataset=cifar10",
         f"--data_dir={root}", "--split=test"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert (result["dataset"], result["split"], result["examples"]) == ("cifar10", "test", 5)
    assert result["top1_error"] == pytest.approx(results["test_top1_error"], abs=1e-6)
    # The held-out part of the tree's shuffled training order: the run's own validation figure.
    held_out = evaluation.evaluate_checkpoint(run_dir, split="validation", batch_size=8)
    assert (held_out["split"], held_out["examples"]) == ("holdout", 8)
    assert held_out["top1_error"] == pytest.approx(results["best_validation_top1_error"], abs=1e-6)


@pytest.mark.slow
def test_an_image_folder_run_evaluates_predicts_and_exports_with_its_own_class_names(user_folder, tmp_path):
    from alexnet_tf import evaluation, serving
    from alexnet_tf.run import Run

    root, _ = user_folder
    write_file(root / "test" / "ant" / "t1.png", coded_image(31, 20, 20))
    write_file(root / "test" / "zebra" / "t2.jpg", coded_image(11, 40, 30))
    results, run_dir = tiny_run(tmp_path, dataset="image_folder", data_dir=str(root), batch_size=2, validation_fraction=0.34)
    assert Run(run_dir).class_names() == ("ant", "moose", "zebra")
    assert results["test_top1_error"] is not None

    # A tree with only test/ is scored with the run's labels; a class the run lacks is refused.
    other = tmp_path / "other"
    write_file(other / "test" / "zebra" / "z.png", coded_image(5, 33, 21))
    scored = evaluation.evaluate_checkpoint(run_dir, dataset="image_folder", data_dir=str(other), batch_size=4)
    assert (scored["examples"], scored["split"]) == (1, "test")
    write_file(other / "test" / "yak" / "y.png", coded_image(6, 9, 9))
    with pytest.raises(DataError, match="not among the 3 classes"):
        evaluation.evaluate_checkpoint(run_dir, dataset="image_folder", data_dir=str(other))

    predictor = serving.load_predictor(run_dir)
    assert predictor.class_names == ("ant", "moose", "zebra")
    (prediction,) = serving.predict_files(predictor, [root / "test" / "ant" / "t1.png"])
    assert {entry["class"] for entry in prediction["top5"]} == {"ant", "moose", "zebra"}
    loaded = tf.saved_model.load(str(predictor.export(tmp_path / "saved")))
    outputs = loaded.signatures["serving_default"](image_bytes=tf.constant([(root / "test" / "zebra" / "t2.jpg").read_bytes()]))
    assert outputs["top5_class_names"].shape == (1, 3)
    assert sorted(outputs["top5_class_names"].numpy()[0].tolist()) == [b"ant", b"moose", b"zebra"]
