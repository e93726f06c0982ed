"""--crop_padding (crops of the mirrored-out image, the CIFAR convention) and --label_smoothing."""

import dataclasses
import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from absl import flags

from alexnet_tf import config as config_lib
from alexnet_tf import input_pipeline, preprocessing, serving, training
from alexnet_tf.run import Run

SIZE, PADDING = 16, 3


def ramp_image(size=8, seed=0):
    """A uint8 image with distinct pixel values, so that a view shows where it came from."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)


def stats_with(mean_rgb=(0.0, 0.0, 0.0)):
    return preprocessing.DatasetStats(
        mean_rgb=np.array(mean_rgb, np.float32),
        eigenvalues=np.ones(3, np.float32),
        eigenvectors=np.eye(3, dtype=np.float32),
        num_images=1,
        mean_image=np.full((18, 18, 3), 10.0, np.float32),
    )


def test_canvas_without_padding_is_the_papers_rescale():
    image = ramp_image(32)
    np.testing.assert_array_equal(
        preprocessing.canvas(image, 28).numpy(), preprocessing.resize_and_center_crop(image, 32).numpy()
    )
    assert preprocessing.canvas_size_for(224) == 256
    assert preprocessing.canvas_size_for(96, 12) == 120


def test_canvas_mirrors_the_image_at_crop_size():
    image = ramp_image(8)
    canvas = preprocessing.canvas(image, SIZE, PADDING).numpy()
    rescaled = preprocessing.resize_and_center_crop(image, SIZE).numpy()
    assert canvas.shape == (SIZE + 2 * PADDING, SIZE + 2 * PADDING, 3)
    np.testing.assert_array_equal(canvas[PADDING:-PADDING, PADDING:-PADDING], rescaled)
    # Mirrored without repeating the edge: the row above the image is its second row.
    np.testing.assert_array_equal(canvas[PADDING - 1, PADDING:-PADDING], rescaled[1])
    np.testing.assert_array_equal(canvas[PADDING:-PADDING, 0], rescaled[:, PADDING])
    traced = tf.function(lambda x: preprocessing.canvas(x, SIZE, PADDING))(tf.constant(image))
    np.testing.assert_array_equal(traced.numpy(), canvas)


@pytest.mark.parametrize("padding", [-1, SIZE])
def test_padding_out_of_range_is_refused(padding):
    with pytest.raises(ValueError, match="crop_padding"):
        preprocessing.check_crop_padding(SIZE, padding)


def train_views(images, padding, encoded=False, steps=4):
    labels = np.arange(len(images), dtype=np.int64)
    if encoded:
        images = [tf.io.encode_png(image).numpy() for image in images]
    source = tf.data.Dataset.from_tensor_slices((images, labels))
    batches = input_pipeline.train_dataset(
        source.repeat(), batch_size=len(labels), stats=stats_with(), image_size=SIZE, seed=1,
        pca_std=0.0, crop_padding=padding, shuffle_buffer=1, encoded=encoded,
    )  # fmt: skip
    return [(views.numpy(), batch_labels.numpy()) for views, batch_labels in batches.take(steps)]


@pytest.mark.parametrize("encoded", [False, True])
def test_training_views_are_crops_of_the_canvas_at_every_offset(encoded):
    image = ramp_image(8)
    canvas = preprocessing.canvas(image, SIZE, PADDING).numpy()
    candidates = {}
    for top in range(2 * PADDING + 1):
        for left in range(2 * PADDING + 1):
            crop = canvas[top : top + SIZE, left : left + SIZE]
            candidates[(top, left, False)] = crop
            candidates[(top, left, True)] = crop[:, ::-1]
    seen = set()
    for views, _ in train_views(np.stack([image] * 16), PADDING, encoded=encoded):
        for view in views:
            matches = [key for key, crop in candidates.items() if np.allclose(view, crop, atol=1e-4)]
            assert matches, "a training view is not a crop of the mirrored-out image"
            seen.update(matches)
    assert len({(top, left) for top, left, _ in seen}) > 20  # of 49 offsets, from 64 draws
    assert {flipped for _, _, flipped in seen} == {False, True}


def test_training_views_subtract_the_mean_images_crop_at_the_same_place():
    image = ramp_image(8)
    stats = dataclasses.replace(stats_with(), mean_image=np.random.default_rng(1).uniform(0, 50, (18, 18, 3)).astype(np.float32))
    canvas = preprocessing.canvas(image, SIZE, PADDING).numpy() - preprocessing.canvas(stats.mean_image, SIZE, PADDING).numpy()
    candidates = [
        crop
        for top in range(2 * PADDING + 1)
        for left in range(2 * PADDING + 1)
        for crop in (canvas[top : top + SIZE, left : left + SIZE], canvas[top : top + SIZE, left : left + SIZE][:, ::-1])
    ]
    source = tf.data.Dataset.from_tensor_slices((np.stack([image] * 8), np.zeros(8, np.int64)))
    batches = input_pipeline.train_dataset(
        source.repeat(), batch_size=8, stats=stats, image_size=SIZE, seed=3, pca_std=0.0, crop_padding=PADDING,
        mean="image", shuffle_buffer=1,
    )  # fmt: skip
    views = next(iter(batches))[0].numpy()
    for view in views:
        assert any(np.allclose(view, crop, atol=1e-3) for crop in candidates), "the mean image's crop is not the view's"


@pytest.mark.parametrize("ten_crop", [False, True])
def test_evaluation_sees_the_whole_image_or_the_canvas_corners(ten_crop):
    image = ramp_image(8)
    source = tf.data.Dataset.from_tensor_slices((image[None], np.zeros(1, np.int64)))
    stats = stats_with(mean_rgb=(1.0, 2.0, 3.0))
    views = next(iter(input_pipeline.eval_dataset(
        source, batch_size=1, stats=stats, image_size=SIZE, crop_padding=PADDING, ten_crop=ten_crop,
    )))[0].numpy()  # fmt: skip
    canvas = preprocessing.canvas(image, SIZE, PADDING).numpy() - stats.mean_rgb
    if ten_crop:
        np.testing.assert_allclose(views, preprocessing.ten_crop(canvas, SIZE).numpy(), atol=1e-4)
        np.testing.assert_allclose(views[0], canvas[:SIZE, :SIZE], atol=1e-4)
    else:
        whole = preprocessing.resize_and_center_crop(image, SIZE).numpy() - stats.mean_rgb
        np.testing.assert_allclose(views[0], whole, atol=1e-4)


def test_the_untouched_training_view_is_evaluations():
    image = ramp_image(8)
    source = tf.data.Dataset.from_tensor_slices((image[None], np.zeros(1, np.int64)))
    common = dict(batch_size=1, stats=stats_with(), image_size=SIZE, crop_padding=PADDING, mean="image")
    trained = next(iter(input_pipeline.train_dataset(source.repeat(), augment=False, **common)))[0]
    evaluated = next(iter(input_pipeline.eval_dataset(source, **common)))[0]
    np.testing.assert_allclose(trained.numpy(), evaluated.numpy(), atol=1e-4)


def test_predictor_prepares_images_as_evaluation_does():
    image = ramp_image(8)
    stats = stats_with(mean_rgb=(5.0, 6.0, 7.0))
    inputs = keras.Input((SIZE, SIZE, 3))
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(inputs)))
    for ten_crop in (False, True):
        predictor = serving.Predictor(
            model, stats, image_size=SIZE, mean="channel", class_names=("a", "b"), ten_crop=ten_crop,
            crop_padding=PADDING,
        )  # fmt: skip
        source = tf.data.Dataset.from_tensor_slices((image[None], np.zeros(1, np.int64)))
        expected = next(iter(input_pipeline.eval_dataset(
            source, batch_size=1, stats=stats, image_size=SIZE, crop_padding=PADDING, ten_crop=ten_crop,
        )))[0].numpy()  # fmt: skip
        views = predictor.preprocess(tf.constant(image)).numpy()
        np.testing.assert_allclose(views.reshape(expected.shape), expected, atol=1e-4)


def test_flags_refuse_padding_as_large_as_the_crop():
    flag_values = flags.FlagValues()
    config_lib.define_flags(flag_values)
    with pytest.raises(flags.IllegalFlagValueError, match="--crop_padding must be less than --image_size"):
        flag_values(["prog", "--image_size=64", "--crop_padding=64"])


def test_label_smoothing_spreads_the_target():
    logits = tf.constant([[2.0, 0.5, -1.0], [0.0, 1.0, 3.0]])
    labels = tf.constant([0, 2])
    log_probabilities = tf.nn.log_softmax(logits).numpy()
    smoothing = 0.1
    targets = np.full((2, 3), smoothing / 3)
    targets[[0, 1], [0, 2]] += 1 - smoothing
    expected = -(targets * log_probabilities).sum(axis=1).mean()
    smoothed = training.classification_loss(smoothing)
    np.testing.assert_allclose(float(keras.ops.mean(smoothed(labels, logits))), expected, rtol=1e-6)
    plain = training.classification_loss(0.0)
    np.testing.assert_allclose(float(plain(labels, logits)), -log_probabilities[[0, 1], [0, 2]].mean(), rtol=1e-6)
    # Keras hands the loss labels of shape [batch, 1] as well as [batch].
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(smoothed(tf.reshape(labels, [-1, 1]), logits)),
        keras.ops.convert_to_numpy(smoothed(labels, logits)),
    )


def test_a_run_with_both_trains_records_them_and_evaluates_alike(tmp_path):
    config = config_lib.TrainConfig(
        dataset="cifar10_sample", experiments_dir=str(tmp_path), experiment="views", epochs=1, batch_size=16,
        image_size=64, steps_per_epoch=2, stats_images=32, crop_padding=8, label_smoothing=0.1,
        lr_schedule="cosine",
    )  # fmt: skip
    results = training.train(config, verbose=0)
    run = tmp_path / "views" / "run1"
    assert results["hparams"]["crop_padding"] == 8
    assert results["hparams"]["label_smoothing"] == 0.1
    saved = config_lib.config_from_flagfile(run / "flags.txt")
    assert (saved.crop_padding, saved.label_smoothing) == (8, 0.1)
    assert np.isfinite(json.loads((run / "results.json").read_text())["curves"]["loss"]).all()
    assert Run(run).load_stats().mean_rgb.shape == (3,)
