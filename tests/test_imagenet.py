"""ImageNet's real files: the standard labels of a partial tree, the odd images of the
training set (grayscale, CMYK, a PNG named .JPEG, small ones), damaged files named in one
line, readable class names, and a short run on the shared sample of real ILSVRC-2012 JPEGs.

The odd files are made here; the real ones come from the shared sample
(`shared_imagenet_dir`, tests/conftest.py).
"""

import io
import json
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from alexnet_tf import cli, data, evaluation, input_pipeline, predict, preprocessing, serving
from alexnet_tf.config import TrainConfig

TENCH, GOLDFISH, SEA_SNAKE = "n01440764", "n01443537", "n01751748"  # labels 0, 1, 65


@pytest.fixture(autouse=True)
def _no_data_dir_from_environment(monkeypatch):
    monkeypatch.delenv(data.DATA_DIR_ENV, raising=False)


def photo(height, width, seed=0):
    """A smooth RGB image (JPEG keeps it within a few levels), different in each channel."""
    y, x = np.mgrid[0:height, 0:width]
    rng = np.random.default_rng(seed)
    channels = [np.sin(y / rng.uniform(5, 15) + c) + np.cos(x / rng.uniform(5, 15) - c) for c in range(3)]
    return (np.stack(channels, -1) * 60 + 128).clip(0, 255).astype(np.uint8)


def jpeg_bytes(image, mode=None, **save):
    buffer = io.BytesIO()
    Image.fromarray(image).convert(mode or "RGB").save(buffer, "JPEG", quality=95, **save)
    return buffer.getvalue()


def with_exif_thumbnail(image):
    """A JPEG whose EXIF header (an APP1 segment, which decoders skip) carries a thumbnail, as
    cameras write them: a whole JPEG, end-of-image marker included, before the image's own data."""
    thumbnail = io.BytesIO()
    Image.fromarray(image[::8, ::8]).save(thumbnail, "JPEG")
    exif = Image.Exif()
    exif[0x0112] = 1  # orientation: as stored
    contents = jpeg_bytes(image, exif=exif.tobytes() + thumbnail.getvalue())
    assert contents.count(b"\xff\xd9") == 2
    return contents


def odd_files():
    """{name: (file bytes, the RGB pixels they were made from)}: the kinds of file ImageNet's
    training set holds (grayscale and CMYK JPEGs, a PNG named .JPEG, images far under 256
    pixels, EXIF headers with thumbnails)."""
    rgb = photo(90, 120)
    gray = rgb[..., 1]
    return {
        "gray.JPEG": (tf.io.encode_jpeg(gray[..., None], quality=95).numpy(), np.repeat(gray[..., None], 3, -1)),
        "cmyk.JPEG": (jpeg_bytes(rgb, "CMYK"), rgb),
        "png_named.JPEG": (tf.io.encode_png(rgb).numpy(), rgb),
        "small_56.JPEG": (jpeg_bytes(photo(56, 75, seed=1)), photo(56, 75, seed=1)),
        "tiny_12x20.JPEG": (jpeg_bytes(photo(12, 20, seed=2)), photo(12, 20, seed=2)),
        "exif_thumbnail.JPEG": (with_exif_thumbnail(rgb), rgb),
    }


def tree_of(root, files, split="train"):
    """root/<split>/<wnid>/<name>: one class per file, wnids from the standard list."""
    wnids = data.imagenet_wnids()
    for index, (name, contents) in enumerate(files.items()):
        path = root / split / wnids[index] / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(contents)
    return root


def centre_square(image):
    side = min(image.shape[:2])
    top, left = (image.shape[0] - side) // 2, (image.shape[1] - side) // 2
    return image[top : top + side, left : left + side]


# ---------------------------------------------------------------------------
# Odd files made here


def test_every_kind_of_imagenet_file_decodes_to_rgb(tmp_path):
    files = odd_files()
    root = tree_of(tmp_path, {name: contents for name, (contents, _) in files.items()})
    src = data.source("imagenet2012", root)
    wnids = data.imagenet_wnids()
    expected_label = {name: index for index, name in enumerate(files)}
    seen = set()
    for contents, label in src.load("train", decode=False).as_numpy_iterator():
        name = next(name for name, (raw, _) in files.items() if raw == contents)
        seen.add(name)
        assert label == expected_label[name] and src.info().class_names[label] == wnids[label]
        square = input_pipeline.decode_center_square(tf.constant(contents)).numpy()
        want = centre_square(files[name][1])
        assert square.shape == want.shape and square.dtype == np.uint8
        difference = np.abs(square.astype(int) - want)
        if name == "png_named.JPEG":
            assert difference.max() == 0  # lossless
        else:  # JPEG (and CMYK's colour conversion) moves pixels by a few levels
            assert difference.mean() < 3 and difference.max() < 40, (name, difference.mean(), difference.max())
    assert seen == set(files)


def test_small_and_odd_images_go_through_the_training_and_evaluation_pipelines(tmp_path):
    files = odd_files()
    root = tree_of(tmp_path, {name: contents for name, (contents, _) in files.items()})
    encoded = data.source("imagenet2012", root).load("train", decode=False)
    stats, count = preprocessing.IMAGENET_STATS, len(files)
    batch, labels = next(iter(input_pipeline.train_dataset(
        encoded, batch_size=count, stats=stats, image_size=64, encoded=True,
    )))  # fmt: skip
    assert batch.shape == (count, 64, 64, 3) and np.isfinite(batch.numpy()).all()
    assert sorted(labels.numpy()) == list(range(count))
    # Evaluation's views: each square, the 12-pixel one too, rescaled (upscaled) to 73 and cropped to 64.
    views, _ = next(iter(input_pipeline.eval_dataset(encoded, batch_size=count, stats=stats, image_size=64, encoded=True)))
    for view, (contents, _) in zip(views.numpy(), encoded.as_numpy_iterator()):
        square = input_pipeline.decode_center_square(tf.constant(contents))
        rescaled = preprocessing.resize_and_center_crop(square, 73)
        np.testing.assert_allclose(view, preprocessing.center_crop(rescaled, 64) - stats.mean_rgb, atol=1e-3)
    ten_views, _ = next(iter(input_pipeline.eval_dataset(
        encoded, batch_size=count, stats=stats, image_size=64, ten_crop=True, encoded=True,
    )))  # fmt: skip
    assert ten_views.shape == (10 * count, 64, 64, 3)


def test_a_large_jpegs_windowed_decode_is_the_exact_crop_within_a_source_pixel():
    # A 400x300 JPEG: its central square (300) is over 256, so decode_rescaled_crop decodes and
    # rescales only the crop's window, rounded to whole source pixels (262 of them for 262.5).
    # The exact path decodes it all, rescales the central square to 256 and crops 224 at the
    # same offset. Channels 0 and 1 rise by SLOPE levels per source pixel to the right and
    # downwards, which bilinear rescaling keeps linear: where the two crops' ramp values
    # differ by d, the windowed crop shows the image d / SLOPE source pixels further along.
    height, width, slope = 300, 400, 0.8
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    smooth = 128 + 40 * np.sin(x / 40) * np.cos(y / 50)  # channel 2: a smooth, non-linear image
    image = np.stack([10 + slope * (x - 50), 10 + slope * y, smooth], -1).round().astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "JPEG", quality=100, subsampling=0)  # 4:4:4: channels stay apart
    encoded = tf.constant(buffer.getvalue())
    rescaled = preprocessing.resize_and_center_crop(centre_square(tf.io.decode_jpeg(encoded).numpy()), 256).numpy()
    for top, left in [(0, 0), (32, 32), (17, 5), (5, 31), (31, 17)]:
        view = input_pipeline.decode_rescaled_crop(encoded, 256, 224, tf.constant([top, left])).numpy()
        exact = rescaled[top : top + 224, left : left + 224]
        # Shift in source pixels, per crop column (x) and row (y), averaged over the other axis
        # to smooth out JPEG's error. The window's rounding moves the whole crop, not only its
        # edges, so both ends and the middle are checked.
        shift_x = ((view - exact)[..., 0] / slope).mean(0)
        shift_y = ((view - exact)[..., 1] / slope).mean(1)
        for shift in (shift_x, shift_y):
            ends = (shift[:8].mean(), shift[108:116].mean(), shift[-8:].mean())
            assert max(abs(end) for end in ends) <= 1.0, ((top, left), ends)
        difference = np.abs(view - exact)[..., 2].mean()
        assert difference < 1.0, ((top, left), difference)  # levels, on the smooth channel


def test_a_jpeg_cut_short_is_named_in_one_line(tmp_path):
    good = jpeg_bytes(photo(90, 120))
    for cut_from in (good, with_exif_thumbnail(photo(90, 120, seed=3))):
        root = tmp_path / f"tree{len(cut_from)}"
        # An apostrophe, as in four of the sample's names: the path must read as it is.
        tree_of(root, {"a_good.JPEG": good, "b_good.JPEG": good, "it's cut.JPEG": cut_from[: len(cut_from) * 2 // 3]})
        src = data.source("imagenet2012", root)
        pipeline = input_pipeline.train_dataset(
            src.load("train", decode=False), batch_size=1, stats=preprocessing.IMAGENET_STATS, image_size=64, encoded=True
        )
        with pytest.raises(tf.errors.InvalidArgumentError) as raised:
            list(pipeline)
        # What `python -m alexnet_tf.train` prints after "error: ": one line naming the file.
        path = root / "train" / data.imagenet_wnids()[2] / "it's cut.JPEG"
        assert cli.tf_error_summary(raised.value) == (
            f"alexnet_tf.data: could not read or decode image file {path} (skip_bad_images=True drops such files)"
        )


def test_skip_bad_images_drops_a_jpeg_cut_short_and_keeps_the_rest(tmp_path, capfd):
    good = jpeg_bytes(photo(40, 50))
    root = tree_of(tmp_path, {"a.JPEG": good, "cut.JPEG": good[:-300], "empty.JPEG": b"", "c.JPEG": good})
    kept = list(data.source("imagenet2012", root, skip_bad_images=True).load("train", decode=False))
    assert sorted(int(label) for _, label in kept) == [0, 3]
    reported = capfd.readouterr().err
    assert "cut.JPEG" in reported and "empty.JPEG" in reported


def test_a_jpeg_with_data_after_its_end_is_accepted(tmp_path):
    # Some cameras append data after the end-of-image marker; libjpeg ignores it, so must the check.
    image = photo(60, 80)
    contents = with_exif_thumbnail(image) + b"\xff\xda appended: not image data \x00" * 40
    root = tree_of(tmp_path, {"appended.JPEG": contents})
    [(read, label)] = data.source("imagenet2012", root).load("train", decode=False).as_numpy_iterator()
    assert read == contents and label == 0
    assert input_pipeline.decode_center_square(tf.constant(read)).shape == (60, 60, 3)


def test_class_descriptions_name_imagenet_classes_only():
    assert data.class_descriptions((TENCH, SEA_SNAKE, "cat", "n99999999")) == (
        "tench, Tinca tinca", "sea snake", None, None,
    )  # fmt: skip
    assert data.class_descriptions(data.CIFAR10_CLASS_NAMES) == (None,) * 10
    lines = predict.format_predictions([{
        "image": "x.JPEG",
        "top5": [{"class": TENCH, "index": 0, "probability": 0.75, "description": "tench, Tinca tinca"},
                 {"class": GOLDFISH, "index": 1, "probability": 0.25, "description": "goldfish, Carassius auratus"}],
    }]).splitlines()  # fmt: skip
    assert lines[1].split() == ["1.", TENCH, "tench,", "Tinca", "tinca", "0.7500"]
    assert lines[2].startswith(f"  2. {GOLDFISH} goldfish, Carassius auratus") and lines[2].endswith("0.2500")


def test_the_shipped_class_list_is_tensorflow_datasets_imagenet2012_list():
    # alexnet_tf/imagenet_classes.txt was copied once from tensorflow-datasets: a later
    # tensorflow-datasets that relabelled imagenet2012 would make its prepared data and a
    # folder tree disagree, so the copy is checked against the installed one.
    tfds = pytest.importorskip("tensorflow_datasets")
    path = tfds.core.tfds_path("datasets/imagenet2012/labels.txt")
    assert tuple(path.read_text().split()) == data.imagenet_wnids()


def test_the_class_list_is_read_without_tensorflow_datasets():
    # The list and names come from the package's own file, not from tfds's internal modules
    # (which take seconds to import and may move): reading them leaves tfds unimported.
    code = (
        "import sys; from alexnet_tf import data; "
        "print(data.class_descriptions(('n01440764', 'n15075141')), len(data.imagenet_wnids()), "
        "'tensorflow_datasets' in sys.modules)"
    )
    repo = pathlib.Path(data.__file__).parents[1]
    result = subprocess.run([sys.executable, "-c", code], cwd=repo, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "('tench, Tinca tinca', 'toilet tissue, toilet paper, bathroom tissue') 1000 False"


@pytest.fixture
def fresh_class_list():
    """The class list read anew (it is cached), and anew again afterwards for the other tests."""
    data._imagenet_classes.cache_clear()
    yield
    data._imagenet_classes.cache_clear()


def test_a_missing_or_damaged_class_list_is_one_data_error(tmp_path, monkeypatch, fresh_class_list):
    monkeypatch.setattr(data, "IMAGENET_CLASSES_FILE", "no_such_classes.txt")
    with pytest.raises(data.DataError, match=r"cannot read no_such_classes\.txt, the ImageNet class list .*reinstall"):
        data.imagenet_wnids()
    # A list cut short: read from a copy of the package holding it (importlib.resources reads
    # the package's own folder, so the copy stands in for a damaged install).
    monkeypatch.setattr(data, "IMAGENET_CLASSES_FILE", "imagenet_classes.txt")
    package = tmp_path / "alexnet_tf"
    package.mkdir()
    lines = (pathlib.Path(data.__file__).parent / "imagenet_classes.txt").read_text().splitlines(keepends=True)
    (package / "imagenet_classes.txt").write_text("".join(lines[:-1]))
    monkeypatch.setattr(data.importlib.resources, "files", lambda _: package)
    data._imagenet_classes.cache_clear()
    with pytest.raises(data.DataError, match=r"should list the 1000 ILSVRC-2012 classes .* found 999 lines"):
        data.imagenet_wnids()


# ---------------------------------------------------------------------------
# The shared sample of real ILSVRC-2012 files


def test_the_real_sample_keeps_the_standard_labels_and_every_file_decodes(shared_imagenet_dir):
    src = data.source("imagenet2012", shared_imagenet_dir)
    info = src.info()
    assert info.num_classes == 1000 and info.split_sizes == {"train": 400, "validation": 10}
    wnids = data.imagenet_wnids()
    # Validation image 1 is a sea snake, class 65 (the official ground truth, in the sample's README).
    validation = list(src.load("validation", decode=False).as_numpy_iterator())
    first = (shared_imagenet_dir / "validation" / SEA_SNAKE / "ILSVRC2012_val_00000001.JPEG").read_bytes()
    assert [int(label) for contents, label in validation if contents == first] == [65]
    # Every training file's label is its folder's standard index, and it decodes to RGB.
    paths = {path.read_bytes(): path for path in (shared_imagenet_dir / "train").glob("*/*")}
    modes, short_sides = set(), []
    for contents, label in src.load("train", decode=False).as_numpy_iterator():
        path = paths[contents]
        assert wnids[label] == path.parent.name
        square = input_pipeline.decode_center_square(tf.constant(contents))
        assert square.shape[0] == square.shape[1] and square.shape[2] == 3
        short_sides.append(int(square.shape[0]))
        modes.add(Image.open(path).mode)
    assert len(short_sides) == 400 and modes == {"RGB", "L"}  # the grayscale ones came out RGB
    assert min(short_sides) < 100 < 256 < max(short_sides)  # small ones are upscaled: see the run below


def test_readable_names_agree_with_the_samples_synset_list(shared_imagenet_dir):
    lines = (shared_imagenet_dir / "synset_words.txt").read_text().splitlines()
    listed = dict(line.split(" ", 1) for line in lines)
    assert tuple(listed) == data.imagenet_wnids()
    descriptions = dict(zip(data.imagenet_wnids(), data.class_descriptions(data.imagenet_wnids())))
    differ = {wnid: (descriptions[wnid], listed[wnid]) for wnid in listed if descriptions[wnid] != listed[wnid]}
    # tensorflow-datasets tells ImageNet's two "crane" classes apart; the synset list does not.
    assert differ == {"n02012849": ("crane (bird)", "crane"), "n03126707": ("crane (machine)", "crane")}


@pytest.mark.slow
def test_a_short_run_on_real_files_evaluates_and_predicts_with_imagenet_names(shared_imagenet_dir, tmp_path, capsys):
    from alexnet_tf import training

    # 24 real training images (24 classes, the smallest of the sample among them) and the 10 validation images.
    tree = tmp_path / "imagenet"
    folders = sorted((shared_imagenet_dir / "train").iterdir())
    smallest = min(folders, key=lambda folder: min(Image.open(next(folder.iterdir())).size))
    for folder in sorted(set(folders[:23]) | {smallest}):
        shutil.copytree(folder, tree / "train" / folder.name)
    shutil.copytree(shared_imagenet_dir / "validation", tree / "validation")
    results = training.train(
        TrainConfig(
            dataset="imagenet2012", data_dir=str(tree), experiments_dir=str(tmp_path / "experiments"),
            experiment="real", epochs=1, batch_size=8, image_size=64, steps_per_epoch=2,
        ),  # fmt: skip
        verbose=0,
    )
    printed = capsys.readouterr().out
    assert "Validation images per class: 0 to 1 over the 24 classes of the training split" in printed
    run_dir = tmp_path / "experiments" / "real" / "run1"
    assert json.loads((run_dir / "classes.json").read_text())["num_classes"] == 1000
    assert 0.0 <= results["test_top1_error"] <= 1.0  # the trainer scores validation/, ImageNet's test set

    # On the shared sample's validation/ (the same ten files the run's tree holds).
    centre, ten_crop = (
        evaluation.evaluate_checkpoint(run_dir, data_dir=str(shared_imagenet_dir), ten_crop=ten, batch_size=4)
        for ten in (False, True)
    )
    assert (centre["examples"], centre["crops"], ten_crop["examples"], ten_crop["crops"]) == (10, 1, 10, 10)
    assert centre["top1_error"] == pytest.approx(results["test_top1_error"], abs=1e-6)
    assert 0.0 <= ten_crop["top5_error"] <= ten_crop["top1_error"] <= 1.0

    predictor = serving.load_predictor(run_dir)
    image = shared_imagenet_dir / "validation" / SEA_SNAKE / "ILSVRC2012_val_00000001.JPEG"
    [prediction] = serving.predict_files(predictor, [image])
    descriptions = dict(zip(data.imagenet_wnids(), data.class_descriptions(data.imagenet_wnids())))
    assert [entry["description"] for entry in prediction["top5"]] == [descriptions[e["class"]] for e in prediction["top5"]]
    first = prediction["top5"][0]
    assert predict.format_predictions([prediction]).splitlines()[1].startswith(f"  1. {first['class']} {first['description']}")
