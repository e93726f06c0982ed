import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from alexnet_tf import cli, data, input_pipeline, serving
from alexnet_tf import run as run_lib
from alexnet_tf.run import Run

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def predictor(run_dir):
    return serving.load_predictor(run_dir)


@pytest.fixture(scope="module")
def ten_crop_predictor(run_dir, predictor):
    return serving.Predictor(
        predictor.model, Run(run_dir).load_stats(), image_size=64, mean="channel", class_names=predictor.class_names, ten_crop=True
    )


@pytest.fixture(scope="module")
def test_images():
    """The sample's first three test images (uint8 [3, 32, 32, 3]) and labels."""
    images, labels = zip(*data.load_split("cifar10_sample", "test").take(3).as_numpy_iterator())
    return np.stack(images), np.array(labels)


def write_images(folder, images, extension):
    encode = tf.io.encode_png if extension == "png" else lambda image: tf.io.encode_jpeg(image, quality=95)
    paths = []
    for index, image in enumerate(images):
        path = folder / f"image{index}.{extension}"
        path.write_bytes(encode(image).numpy())
        paths.append(path)
    return paths


def eval_views(run_dir, images, ten_crop, mean="channel"):
    """The views evaluation makes of `images` (alexnet_tf.input_pipeline.eval_dataset)."""
    source = tf.data.Dataset.from_tensor_slices((images, np.zeros(len(images), np.int64)))
    batches = input_pipeline.eval_dataset(
        source, batch_size=len(images), stats=Run(run_dir).load_stats(), image_size=64, ten_crop=ten_crop, mean=mean
    )
    return next(iter(batches))[0].numpy()


@pytest.mark.parametrize("mean", ["channel", "image"])
@pytest.mark.parametrize("ten_crop", [False, True])
def test_preprocessing_is_evaluations(run_dir, predictor, test_images, ten_crop, mean):
    images, _ = test_images
    stats = Run(run_dir).load_stats()
    chosen = serving.Predictor(
        predictor.model, stats, image_size=64, mean=mean, class_names=predictor.class_names, ten_crop=ten_crop
    )
    views = np.concatenate([np.reshape(chosen.preprocess(image), [-1, 64, 64, 3]) for image in images])
    np.testing.assert_allclose(views, eval_views(run_dir, images, ten_crop, mean), atol=1e-4)


@pytest.mark.parametrize("ten_crop", [False, True])
def test_predict_files_gives_the_models_softmax_averaged_over_the_views(
    run_dir, predictor, ten_crop_predictor, test_images, tmp_path, ten_crop
):
    images, _ = test_images
    chosen = ten_crop_predictor if ten_crop else predictor
    paths = write_images(tmp_path, images, "png")  # lossless: the same pixels as the records

    predictions = serving.predict_files(chosen, paths)

    crops = 10 if ten_crop else 1
    softmax = tf.nn.softmax(predictor.model(eval_views(run_dir, images, ten_crop), training=False)).numpy()
    expected = softmax.reshape(len(images), crops, 10).mean(axis=1)
    for prediction, path, probabilities in zip(predictions, paths, expected):
        assert prediction["image"] == str(path)
        # (Batches of 1 and of 3 differ by float rounding in the convolutions.)
        np.testing.assert_allclose(prediction["probabilities"], probabilities, rtol=1e-4, atol=1e-6)
        assert prediction["probabilities"].sum() == pytest.approx(1.0, abs=1e-5)
        top5 = prediction["top5"]
        assert [entry["index"] for entry in top5] == list(np.argsort(-probabilities)[:5])
        assert [entry["class"] for entry in top5] == [data.CIFAR10_CLASS_NAMES[entry["index"]] for entry in top5]
        np.testing.assert_allclose(
            [entry["probability"] for entry in top5], np.sort(probabilities)[::-1][:5], rtol=1e-4, atol=1e-6
        )


def test_exported_saved_model_gives_the_same_probabilities(predictor, test_images, tmp_path):
    images, _ = test_images
    jpeg, png = write_images(tmp_path, images[:1], "jpg")[0], write_images(tmp_path, images[1:2], "png")[0]
    expected = [serving.predict_files(predictor, [path])[0]["probabilities"] for path in (jpeg, png)]

    export_dir = predictor.export(tmp_path / "saved_model")
    # Only TensorFlow's own ops: a server without this project's LRN kernel can load it.
    assert b"AlexnetLrn" not in (export_dir / "saved_model.pb").read_bytes()
    loaded = tf.saved_model.load(str(export_dir))

    assert set(loaded.signatures) == {"serving_default", "serve_images"}
    from_bytes = loaded.signatures["serving_default"](image_bytes=tf.constant([jpeg.read_bytes(), png.read_bytes()]))
    decoded_jpeg = tf.io.decode_jpeg(jpeg.read_bytes(), channels=3)
    from_images = loaded.signatures["serve_images"](images=decoded_jpeg[None])
    for outputs, wanted in ((from_bytes, expected), (from_images, expected[:1])):
        assert set(outputs) == {"probabilities", "top5_classes", "top5_probabilities", "top5_class_names"}
        probabilities = outputs["probabilities"].numpy()
        np.testing.assert_allclose(probabilities, np.stack(wanted), atol=1e-4)
        np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
        top5 = outputs["top5_classes"].numpy()
        np.testing.assert_array_equal(top5, np.argsort(-probabilities, axis=1)[:, :5])
        names = np.vectorize(bytes.decode)(outputs["top5_class_names"].numpy())
        np.testing.assert_array_equal(names, np.array(data.CIFAR10_CLASS_NAMES)[top5])
        np.testing.assert_allclose(
            outputs["top5_probabilities"].numpy(), np.take_along_axis(probabilities, top5, axis=1), atol=1e-6
        )


def one_line_error(capsys, function, *args, **kwargs):
    """(exit status, stderr) of a failure as the command reports it."""
    with pytest.raises(SystemExit) as exit_info, cli.one_line_errors():
        function(*args, **kwargs)
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return exit_info.value.code, err


def test_bad_inputs_are_one_line_errors(run_dir, predictor, tmp_path, capsys):
    code, err = one_line_error(capsys, serving.predict_files, predictor, [tmp_path / "missing.jpg"])
    assert code == cli.EXIT_DATA and "missing.jpg does not exist" in err

    not_an_image = tmp_path / "notes.jpg"
    not_an_image.write_text("not an image")
    code, err = one_line_error(capsys, serving.predict_files, predictor, [not_an_image])
    assert code == cli.EXIT_DATA and "notes.jpg is not an image that can be decoded" in err

    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "keep.txt").write_text("mine")
    code, err = one_line_error(capsys, predictor.export, tmp_path / "used")
    assert code == cli.EXIT_DATA and "already exists and is not an empty folder" in err
    assert (tmp_path / "used" / "keep.txt").read_text() == "mine"

    code, err = one_line_error(capsys, serving.load_predictor, tmp_path / "no_run")
    assert code == cli.EXIT_DATA and "does not exist" in err

    code, err = one_line_error(capsys, serving.load_predictor, run_dir / run_lib.FLAGS_FILE)
    assert code == cli.EXIT_USAGE and "is not a checkpoint" in err


def predict_command(*args):
    return subprocess.run(
        [sys.executable, "-m", "alexnet_tf.predict", *map(str, args)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_command_prints_the_top5_of_each_image_and_a_json_last_line(run_dir, predictor, test_images, tmp_path):
    images, _ = test_images
    paths = write_images(tmp_path, images[:2], "png")

    done = predict_command(f"--checkpoint={run_dir}", *paths)

    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    summary = json.loads(lines[-1])
    assert summary["checkpoint"] == str((run_dir / "checkpoints" / run_lib.BEST_WEIGHTS).resolve())
    assert summary["crops"] == 1 and summary["export"] is None
    expected = serving.predict_files(predictor, paths)
    assert [p["image"] for p in summary["predictions"]] == [str(path) for path in paths]
    for printed, wanted in zip(summary["predictions"], expected):
        assert [entry["class"] for entry in printed["top5"]] == [entry["class"] for entry in wanted["top5"]]
        np.testing.assert_allclose(
            [entry["probability"] for entry in printed["top5"]],
            [entry["probability"] for entry in wanted["top5"]],
            atol=1e-5,
        )
    first = summary["predictions"][0]["top5"][0]
    assert lines[0] == str(paths[0])
    assert lines[1].startswith("  1. ") and lines[1].split() == ["1.", first["class"], f"{first['probability']:.4f}"]
    assert len(lines) == 2 * (1 + 5) + 1  # per image its path and five classes, then the JSON


def test_command_reports_a_file_that_is_not_an_image_in_one_line_and_classifies_the_others(
    run_dir, predictor, test_images, tmp_path
):
    images, _ = test_images
    first, last = write_images(tmp_path, images[:2], "png")
    not_an_image = tmp_path / "notes.txt"
    not_an_image.write_text("not an image")

    done = predict_command(f"--checkpoint={run_dir}", first, not_an_image, last)

    assert done.returncode == cli.EXIT_DATA
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, done.stderr
    # TensorFlow's reason, without its op decorations ({{function_node ...}}, [Op:DecodeImage]).
    assert errors[0].startswith(f"error: {not_an_image} is not an image that can be decoded: Unknown image file format")
    assert errors[0].endswith("required."), errors[0]
    assert "Traceback" not in done.stderr and "function_node" not in done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    expected = serving.predict_files(predictor, [first, last])
    assert [p["image"] for p in summary["predictions"]] == [str(first), str(last)]
    assert [p["top5"][0]["class"] for p in summary["predictions"]] == [p["top5"][0]["class"] for p in expected]
    assert summary["errors"] == [{"image": str(not_an_image), "error": errors[0].removeprefix("error: ")}]
