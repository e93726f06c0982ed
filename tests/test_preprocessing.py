import numpy as np
import pytest
import tensorflow as tf

from alexnet_tf import preprocessing as pp


def unique_image(height, width, channels=3):
    """An image whose every value is distinct, so a crop's position can be read off it."""
    return np.arange(height * width * channels, dtype=np.float32).reshape(height, width, channels)


def in_tf_data(fn, *tensors):
    """Runs fn over a one-element tf.data pipeline (graph mode) and returns its output."""
    dataset = tf.data.Dataset.from_tensors(tuple(tensors)).map(fn)
    return next(iter(dataset))


def seed(n):
    return tf.constant([n, 7], tf.int64)


def test_resize_size_keeps_the_paper_ratio():
    assert pp.resize_size_for(224) == 256
    assert pp.resize_size_for(56) == 64


@pytest.mark.parametrize("graph", [False, True])
def test_resize_and_center_crop_upsamples_cifar_and_crops_the_centre(graph):
    small = tf.cast(tf.fill([32, 32, 3], 200), tf.uint8)
    wide = np.zeros((40, 80, 3), np.uint8)
    wide[:, 20:60] = 255  # the central 40x40 square
    run = (lambda f, *a: in_tf_data(f, *a)) if graph else (lambda f, *a: f(*a))
    out = run(lambda im: pp.resize_and_center_crop(im, 64), small)
    assert out.shape == (64, 64, 3) and out.dtype == tf.float32
    np.testing.assert_allclose(out.numpy(), 200.0)
    out = run(lambda im: pp.resize_and_center_crop(im, 20), wide).numpy()
    assert out.shape == (20, 20, 3)
    assert out.min() > 200  # only the bright central square survives


@pytest.mark.parametrize("graph", [False, True])
def test_center_crop(graph):
    image = unique_image(7, 9)
    fn = lambda im: pp.center_crop(im, 3)  # noqa: E731
    out = in_tf_data(fn, image) if graph else fn(image)
    np.testing.assert_array_equal(out, image[2:5, 3:6])


def test_random_crop_offsets_cover_every_position_and_are_seeded():
    seeds = tf.data.Dataset.range(1000).map(lambda n: tf.stack([n, 7]))
    in_graph = list(seeds.map(lambda s: pp.random_crop_offset(10, 4, s)).as_numpy_iterator())
    offsets = [tuple(offset) for offset in in_graph]
    assert set(offsets) == {(top, left) for top in range(7) for left in range(7)}  # all 49 positions
    assert max(offsets.count(position) for position in set(offsets)) < 2 * 1000 / 49  # about evenly
    assert [tuple(pp.random_crop_offset(10, 4, seed(n)).numpy()) for n in range(5)] == offsets[:5]  # eagerly too


def smooth_image(height, width):
    """Slowly varying values: bilinear sampling a fraction of a pixel apart changes them little."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    return np.stack([100 + 80 * np.sin(y / 9) * np.cos(x / 13), x / width * 255, y / height * 255], -1)


@pytest.mark.parametrize("graph", [False, True])
@pytest.mark.parametrize("shape", [(32, 32), (40, 70), (64, 64)])
def test_rescaled_crop_of_an_image_the_rescale_enlarges_is_that_crop_exactly(graph, shape):
    image = unique_image(*shape)
    rescaled = pp.resize_and_center_crop(image, 73).numpy()
    for offset in [(0, 0), (9, 9), (0, 9), (4, 2)]:
        fn = lambda im: pp.rescaled_crop(im, 73, 64, tf.constant(offset))  # noqa: E731
        view = (in_tf_data(fn, image) if graph else fn(image)).numpy()
        top, left = offset
        np.testing.assert_array_equal(view, rescaled[top : top + 64, left : left + 64])


@pytest.mark.parametrize("shape", [(256, 256), (300, 400), (700, 500)])
def test_rescaled_crop_of_an_image_the_rescale_shrinks_is_that_crop_within_a_source_pixel(shape):
    # Rescaled alone, the crop's window covers the same region shifted by under a source pixel
    # (measured in pixels on a real JPEG in tests/test_imagenet.py).
    image = smooth_image(*shape)
    rescaled = pp.resize_and_center_crop(image, 256).numpy()
    for offset in [(0, 0), (32, 32), (0, 32), (17, 5)]:
        view = pp.rescaled_crop(image, 256, 224, tf.constant(offset)).numpy()
        top, left = offset
        exact = rescaled[top : top + 224, left : left + 224]
        assert view.shape == exact.shape
        assert np.abs(view - exact).mean() < 1.0, (shape, offset, np.abs(view - exact).mean())
        if shape == (256, 256):  # no rescale at all: the very crop
            np.testing.assert_allclose(view, exact, atol=1e-3)


def test_crop_window_is_the_crops_region_in_whole_source_pixels():
    # A 300x400 image: central square 300 wide at column 50; 224/256 of it is 262.5 -> 262 pixels.
    window = lambda offset: pp.crop_window(300, 400, 256, 224, tf.constant(offset)).numpy().tolist()  # noqa: E731
    assert window([0, 0]) == [0, 50, 262, 262]
    assert window([32, 32]) == [300 - 262, 50 + 300 - 262, 262, 262]  # the far corner, inside the square
    assert window([16, 0]) == [19, 50, 262, 262]  # 16 x 300/256 = 18.75
    assert pp.crop_window(256, 256, 256, 224, tf.constant([5, 7])).numpy().tolist() == [5, 7, 224, 224]


@pytest.mark.parametrize("graph", [False, True])
def test_random_flip_mirrors_about_half(graph):
    image = unique_image(3, 4)
    run = (lambda f, *a: in_tf_data(f, *a)) if graph else (lambda f, *a: f(*a))
    flipped = 0
    for n in range(100):
        out = run(pp.random_flip, image, seed(n)).numpy()
        if np.array_equal(out, image[:, ::-1]):
            flipped += 1
        else:
            np.testing.assert_array_equal(out, image)
    assert 30 <= flipped <= 70


EIGENVECTORS = np.linalg.qr(np.random.default_rng(0).normal(size=(3, 3)))[0].astype(np.float32)


def test_pca_lighting_with_zero_std_is_the_identity():
    image = unique_image(4, 5)
    out = pp.pca_lighting(image, [30.0, 5.0, 1.0], EIGENVECTORS, 0.0, seed(1))
    np.testing.assert_array_equal(out, image)


@pytest.mark.parametrize("graph", [False, True])
def test_pca_lighting_adds_one_colour_in_the_span_of_the_eigenvectors(graph):
    image = unique_image(4, 5)
    eigenvalues = np.array([30.0, 5.0, 0.0], np.float32)  # nothing along the third vector
    fn = lambda im, s: pp.pca_lighting(im, eigenvalues, EIGENVECTORS, 0.1, s)  # noqa: E731
    out = (in_tf_data(fn, image, seed(2)) if graph else fn(image, seed(2))).numpy()
    shift = out - image
    np.testing.assert_allclose(shift, np.broadcast_to(shift[0, 0], shift.shape), atol=1e-4)
    assert np.abs(shift[0, 0]).max() > 0.01
    assert abs(shift[0, 0] @ EIGENVECTORS[:, 2]) < 1e-4


def test_pca_lighting_spread_matches_alpha_std_times_eigenvalues():
    eigenvalues = np.array([40.0, 8.0, 2.0], np.float32)
    images = np.zeros((4000, 1, 1, 3), np.float32)
    shifts = pp.pca_lighting(images, eigenvalues, EIGENVECTORS, 0.1, seed(5)).numpy().reshape(-1, 3)
    along_each_vector = shifts @ EIGENVECTORS  # the coefficients alpha_i * lambda_i
    np.testing.assert_allclose(along_each_vector.std(axis=0), 0.1 * eigenvalues, rtol=0.06)
    assert np.all(np.abs(along_each_vector.mean(axis=0)) < 0.1 * (0.1 * eigenvalues))  # ~6 standard errors
    # Per image, independent draws: the batch's shifts are not all the same.
    assert np.unique(shifts[:, 0]).size > 3900


def test_subtract_mean_per_channel_and_per_pixel():
    image = np.full((2, 2, 3), 10.0, np.float32)
    np.testing.assert_array_equal(pp.subtract_mean(image, [1.0, 2.0, 3.0])[0, 0], [9.0, 8.0, 7.0])
    mean_image = np.arange(12, dtype=np.float32).reshape(2, 2, 3)
    np.testing.assert_array_equal(pp.subtract_mean(image, mean_image), 10.0 - mean_image)
    batch = np.stack([image, image + 1])
    assert pp.subtract_mean(batch, [1.0, 2.0, 3.0]).shape == (2, 2, 2, 3)


@pytest.mark.parametrize("graph", [False, True])
def test_ten_crop_views_are_the_corners_the_centre_and_their_mirrors(graph):
    image = unique_image(8, 10)
    fn = lambda im: pp.ten_crop(im, 4)  # noqa: E731
    views = (in_tf_data(fn, image) if graph else fn(image)).numpy()
    assert views.shape == (10, 4, 4, 3)
    expected = [image[:4, :4], image[:4, 6:], image[4:, :4], image[4:, 6:], image[2:6, 3:7]]
    for i, want in enumerate(expected):
        np.testing.assert_array_equal(views[i], want)
        np.testing.assert_array_equal(views[5 + i], want[:, ::-1])


def test_compute_stats_finds_the_colour_direction_and_the_mean():
    # Images of one flat colour each, spread along a known RGB direction around a mean.
    direction = np.array([0.6, 0.64, 0.48])
    rng = np.random.default_rng(0)
    offsets = rng.normal(scale=40.0, size=64)
    colours = np.clip(np.array([120.0, 110.0, 100.0]) + offsets[:, None] * direction, 0, 255)
    images = np.broadcast_to(colours[:, None, None, :], (64, 8, 8, 3)).round().astype(np.uint8)
    stats = pp.compute_stats(tf.data.Dataset.from_tensor_slices(images), resize_size=8)
    np.testing.assert_allclose(stats.mean_rgb, images.reshape(-1, 3).mean(0), rtol=1e-4)
    assert abs(stats.eigenvectors[:, 0] @ direction) > 0.999
    covariance = np.cov(images.reshape(-1, 3).astype(np.float64).T, bias=True)
    np.testing.assert_allclose(stats.eigenvalues[0], np.linalg.eigvalsh(covariance)[-1] / 255.0, rtol=1e-3)
    assert stats.eigenvalues[0] > 100 * stats.eigenvalues[1]
    assert stats.mean_image.shape == (8, 8, 3) and stats.num_images == 64


def test_imagenet_stats_are_on_the_pixel_scale():
    stats = pp.IMAGENET_STATS
    np.testing.assert_allclose(stats.eigenvectors.T @ stats.eigenvectors, np.eye(3), atol=2e-3)
    assert 50 < stats.eigenvalues[0] < 60 and 100 < stats.mean_rgb[0] < 130
