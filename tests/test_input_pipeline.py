import numpy as np
import pytest
import tensorflow as tf
from numpy.lib.stride_tricks import sliding_window_view

from alexnet_tf import data
from alexnet_tf import input_pipeline as ip
from alexnet_tf import preprocessing as pp

CROP = 224


def locate(view, resized, patch=8, tolerance=1e-3):
    """Finds where a training view came from: (flipped, (top, left)), or None."""
    span = resized.shape[0] - view.shape[0] + 1
    windows = sliding_window_view(resized, (patch, patch, 3))[:span, :span, 0]
    for flipped in (False, True):
        candidate = view[:, ::-1] if flipped else view
        error = np.abs(windows - candidate[:patch, :patch]).max(axis=(2, 3, 4))
        for top, left in zip(*np.nonzero(error < tolerance)):
            window = resized[top : top + view.shape[0], left : left + view.shape[1]]
            if np.abs(window - candidate).max() < tolerance:
                return flipped, (int(top), int(left))
    return None


@pytest.fixture(scope="module")
def shared_images(shared_cifar10_dir):
    source = data.load_split("cifar10", "train", data_dir=shared_cifar10_dir).take(64).cache()
    stats = pp.compute_stats(source.map(lambda image, label: image))
    return source, stats


def one_epoch(dataset):
    images, labels = zip(*[(x.numpy(), y.numpy()) for x, y in dataset])
    return np.concatenate(images), np.concatenate(labels)


def test_split_holdout_takes_the_last_records_in_file_order():
    source = tf.data.Dataset.range(100)
    train, validation = ip.split_holdout(source, 100, 0.1)
    assert list(train.as_numpy_iterator()) == list(range(90))
    assert list(validation.as_numpy_iterator()) == list(range(90, 100))
    train, validation = ip.split_holdout(source, 100, 0.0)
    assert len(list(train)) == 100 and not list(validation)
    assert len(list(ip.split_holdout(source, 100, 0.015)[1])) == 2  # ceil
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError, match="validation_fraction"):
            ip.split_holdout(source, 100, bad)


def test_training_batches_from_real_images(shared_images):
    source, stats = shared_images
    dataset = ip.train_dataset(source, batch_size=32, stats=stats, seed=0, pca_std=0.0, shuffle_buffer=1)
    first, labels = one_epoch(dataset)
    second, _ = one_epoch(dataset)
    assert first.shape == (64, CROP, CROP, 3) and first.dtype == np.float32
    assert labels.dtype == np.int64
    # Roughly zero-mean per channel (pixel std is ~60 on this scale).
    assert np.all(np.abs(first.mean(axis=(0, 1, 2))) < 12), first.mean(axis=(0, 1, 2))

    originals = [
        pp.resize_and_center_crop(image, 256).numpy() for image, _ in source.as_numpy_iterator()
    ]
    found_first = [locate(view + stats.mean_rgb, original) for view, original in zip(first, originals)]
    found_second = [locate(view + stats.mean_rgb, original) for view, original in zip(second, originals)]
    assert None not in found_first and None not in found_second
    flipped = sum(flip for flip, _ in found_first)
    assert 16 <= flipped <= 48, flipped  # about half of 64
    positions = {position for _, position in found_first}
    assert len(positions) > 40  # crops spread over the 33x33 possible positions
    changed = sum(a != b for a, b in zip(found_first, found_second))
    assert changed > 56, changed  # each epoch draws new crops and flips


def test_pca_lighting_in_the_pipeline_shifts_each_image_by_its_own_colour(shared_images):
    source, stats = shared_images
    plain = ip.train_dataset(source, batch_size=16, stats=stats, seed=3, pca_std=0.0, shuffle_buffer=1)
    lit = ip.train_dataset(source, batch_size=16, stats=stats, seed=3, pca_std=0.1, shuffle_buffer=1)
    plain_images, _ = next(iter(plain))
    lit_images, _ = next(iter(lit))
    shift = (lit_images - plain_images).numpy()  # same seed: same crops and flips
    per_image = shift.reshape(16, -1, 3)
    np.testing.assert_allclose(per_image, np.broadcast_to(per_image[:, :1], per_image.shape), atol=1e-3)
    colours = per_image[:, 0]
    assert np.unique(colours[:, 0].round(3)).size == 16
    assert 0.2 < np.abs(colours @ stats.eigenvectors[:, 0]).mean() < 3 * 0.1 * stats.eigenvalues[0]


def test_same_seed_same_batches_other_seed_other_batches(shared_images):
    source, stats = shared_images
    make = lambda seed: ip.train_dataset(source.take(8), batch_size=8, stats=stats, seed=seed)  # noqa: E731
    a, b, c = (next(iter(make(seed)))[0].numpy() for seed in (5, 5, 6))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_training_with_the_papers_mean_image(shared_images):
    source, stats = shared_images
    batch, _ = next(iter(ip.train_dataset(source, batch_size=16, stats=stats, mean="image", image_size=56)))
    assert batch.shape == (16, 56, 56, 3)
    assert np.all(np.abs(batch.numpy().mean(axis=(0, 1, 2))) < 20)


def test_eval_center_crop(shared_images):
    source, stats = shared_images
    images, labels = one_epoch(ip.eval_dataset(source.take(5), batch_size=2, stats=stats))
    assert images.shape == (5, CROP, CROP, 3)
    for view, (image, label), got_label in zip(images, source.take(5).as_numpy_iterator(), labels):
        want = pp.center_crop(pp.resize_and_center_crop(image, 256), CROP).numpy() - stats.mean_rgb
        np.testing.assert_allclose(view, want, atol=1e-3)
        assert got_label == label


def test_training_without_augmentation_sees_the_eval_views(shared_images):
    source, stats = shared_images
    train = ip.train_dataset(source, batch_size=16, stats=stats, image_size=48, seed=2, augment=False)
    evaluation = ip.eval_dataset(source, batch_size=16, stats=stats, image_size=48)
    train_images, train_labels = one_epoch(train)
    eval_images, eval_labels = one_epoch(evaluation)
    # The same views (no crop offsets, flips or lighting noise), shuffled.
    assert not np.array_equal(train_labels, eval_labels)
    order = {}
    for index, image in enumerate(eval_images):
        order.setdefault(image.tobytes(), index)
    assert all(image.tobytes() in order for image in train_images)
    np.testing.assert_array_equal(np.sort(train_labels), np.sort(eval_labels))


def test_eval_ten_crop_gives_ten_views_per_image(shared_images):
    source, stats = shared_images
    batch, labels = next(iter(ip.eval_dataset(source.take(3), batch_size=3, stats=stats, ten_crop=True)))
    assert batch.shape == (30, CROP, CROP, 3) and labels.shape == (3,)
    for i, (image, _) in enumerate(source.take(3).as_numpy_iterator()):
        prepared = pp.resize_and_center_crop(image, 256).numpy() - stats.mean_rgb
        np.testing.assert_allclose(batch[10 * i : 10 * i + 10], pp.ten_crop(prepared, CROP), atol=1e-3)
        np.testing.assert_allclose(batch[10 * i + 4], pp.center_crop(prepared, CROP), atol=1e-3)
        np.testing.assert_allclose(batch[10 * i + 9], pp.center_crop(prepared, CROP)[:, ::-1], atol=1e-3)


def assert_same_pixels(from_bytes, from_pixels, lossless):
    if lossless:
        np.testing.assert_allclose(from_bytes, from_pixels, atol=1e-3)
    else:
        # libjpeg's fused decode-and-crop upsamples chroma differently at the
        # crop's edge; everywhere else the pixels are those of decode-then-crop.
        assert np.mean(np.abs(from_bytes - from_pixels) < 1e-3) > 0.95


@pytest.mark.parametrize("encode", [tf.io.encode_jpeg, tf.io.encode_png])
def test_encoded_images_match_decoded_ones(encode):
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (40, 60, 3), np.uint8), rng.integers(0, 255, (70, 50, 3), np.uint8)]
    encoded = [encode(image).numpy() for image in images]
    decoded = [tf.io.decode_image(e, channels=3).numpy() for e in encoded]  # JPEG is lossy: compare to this
    labels = [3, 7]
    stats = pp.IMAGENET_STATS
    encoded_source = tf.data.Dataset.from_tensor_slices((encoded, labels))
    decoded_source = tf.data.Dataset.from_generator(
        lambda: zip(decoded, labels),
        output_signature=(tf.TensorSpec([None, None, 3], tf.uint8), tf.TensorSpec([], tf.int32)),
    )
    for kwargs in (dict(ten_crop=False), dict(ten_crop=True)):
        from_bytes = one_epoch(ip.eval_dataset(encoded_source, batch_size=1, stats=stats, image_size=28, encoded=True, **kwargs))
        from_pixels = one_epoch(ip.eval_dataset(decoded_source, batch_size=1, stats=stats, image_size=28, **kwargs))
        assert_same_pixels(from_bytes[0], from_pixels[0], lossless=encode is tf.io.encode_png)
    train_bytes, _ = one_epoch(
        ip.train_dataset(encoded_source, batch_size=2, stats=stats, image_size=28, encoded=True, seed=1)
    )
    train_pixels, _ = one_epoch(ip.train_dataset(decoded_source, batch_size=2, stats=stats, image_size=28, seed=1))
    assert_same_pixels(train_bytes, train_pixels, lossless=encode is tf.io.encode_png)


def test_bad_mean_settings_are_refused():
    stats_without_image = pp.IMAGENET_STATS
    source = tf.data.Dataset.from_tensors((tf.zeros([8, 8, 3], tf.uint8), tf.constant(0, tf.int64)))
    with pytest.raises(ValueError, match="choose one of 'channel', 'image'"):
        ip.train_dataset(source, batch_size=1, stats=stats_without_image, mean="median")
    with pytest.raises(ValueError, match="mean image"):
        ip.eval_dataset(source, batch_size=1, stats=stats_without_image, mean="image")
