"""The paper's image preprocessing, as pure functions of (image, parameters, seed).

Pixel scale: images stay on the 0-255 scale throughout (float32 after
resizing), as in the paper, whose N(0, 0.01) initialisation assumes it;
the PCA eigenvalues and the mean are on that scale too.

Training (section 4.1 of the paper): rescale so the shorter side is 256,
crop the central 256x256, take a random 224x224 crop, flip it horizontally
with probability 1/2, add PCA lighting noise, subtract the mean. The crop
of a large image is rescaled alone rather than after the whole image
(`rescaled_crop`).
Evaluation: the central 224x224 crop, or ten crops (the four corners and the
centre, and their mirrors) whose softmax is averaged.

Randomness comes only from explicit `seed` arguments (shape [2] int tensors,
as the `tf.random.stateless_*` ops take), so every function gives the same
output for the same inputs, eagerly and inside `tf.data`.
"""

import dataclasses

import numpy as np
import tensorflow as tf

# The paper's sizes: a 224 crop out of a 256 image. Other crop sizes keep the ratio.
PAPER_CROP_SIZE = 224
PAPER_RESIZE_SIZE = 256
PCA_ALPHA_STD = 0.1


def resize_size_for(crop_size):
    """The side to rescale to before cropping `crop_size` (256 for 224)."""
    return int(round(crop_size * PAPER_RESIZE_SIZE / PAPER_CROP_SIZE))


def canvas_size_for(crop_size, crop_padding=0):
    """The side of the square that crops are taken from (`canvas`): the paper's rescale,
    round(crop_size x 256/224), or with ``crop_padding`` the image at crop_size plus the padding."""
    if crop_padding:
        return crop_size + 2 * crop_padding
    return resize_size_for(crop_size)


def canvas(image, crop_size, crop_padding=0):
    """The square every view of an image is cropped from: float32 [N, N, C], N = `canvas_size_for`.

    Without padding, the paper's: the central square rescaled to round(crop_size x 256/224), so a
    crop sees 224/256 of the image. With ``crop_padding`` = p, the CIFAR convention instead: the
    central square rescaled to crop_size itself and mirrored out by p pixels on each side, so the
    centre crop is the whole image and random crops move it by up to p pixels either way (the
    paper's rescale moves a 96 crop of 110 by up to 7 pixels either way, and its centre view
    leaves out 7 of every 110 pixels on each side).
    """
    if not crop_padding:
        return resize_and_center_crop(image, resize_size_for(crop_size))
    pad = [[crop_padding, crop_padding], [crop_padding, crop_padding], [0, 0]]
    return tf.pad(resize_and_center_crop(image, crop_size), pad, mode="REFLECT")


def check_crop_padding(crop_size, crop_padding):
    """Raises ValueError unless 0 <= crop_padding < crop_size (mirroring needs pixels to mirror)."""
    if not 0 <= crop_padding < crop_size:
        raise ValueError(
            f"crop_padding={crop_padding} must be at least 0 and less than the crop size {crop_size} "
            f"(it mirrors that many pixels of the image out on each side)."
        )


def resize_and_center_crop(image, size):
    """The paper's preparation: shorter side rescaled to `size`, central size x size square.

    Takes the central square of the original first and resizes that to
    size x size, which selects the same region without resizing pixels
    that are thrown away, and is exactly what the encoded-JPEG path's fused
    decode-and-crop gives. Returns float32 on the 0-255 scale. CIFAR's
    32x32 images are upsampled this way to 256x256.
    """
    shape = tf.shape(image)
    square = center_crop(image, tf.minimum(shape[-3], shape[-2]))
    # Same values either way, but TensorFlow's bilinear resize of uint8 pixels took 1.6 to 1.9
    # times as long as the cast plus the resize of float32 ones (README, "Performance").
    return tf.image.resize(tf.cast(square, tf.float32), [size, size], method="bilinear")


def center_crop(image, size):
    """The central size x size crop of [..., H, W, C] (H, W >= size)."""
    shape = tf.shape(image)
    top = (shape[-3] - size) // 2
    left = (shape[-2] - size) // 2
    return image[..., top : top + size, left : left + size, :]


def random_crop_offset(resize_size, crop_size, seed):
    """A uniformly random (top, left), int32 [2], of a crop_size square inside a resize_size one."""
    return tf.random.stateless_uniform([2], seed, minval=0, maxval=resize_size - crop_size + 1, dtype=tf.int32)


def rescaled_crop(image, resize_size, crop_size, offset):
    """The crop_size x crop_size crop at ``offset`` (top, left) of an image's central square
    rescaled to resize_size x resize_size: float32 [crop_size, crop_size, C].

    An image whose square is at least resize_size (the rescale shrinks it:
    most of ImageNet) is not rescaled whole: only the crop's window
    (`crop_window`) is, straight to crop_size: rounding the window to whole
    pixels shifts the whole crop (not only its edges) by up to about a
    source pixel, and spares rescaling the pixels the crop drops (and,
    from a JPEG, decoding most of them: README, "Performance"). A smaller image is upscaled whole and cropped, so that
    its crops keep every offset, which windows of whole source pixels would
    not.
    """
    shape = tf.shape(image)

    def windowed():
        top, left, height, width = tf.unstack(crop_window(shape[0], shape[1], resize_size, crop_size, offset))
        return resize_window(image[top : top + height, left : left + width], crop_size)

    def whole():
        rescaled = resize_and_center_crop(image, resize_size)
        return rescaled[offset[0] : offset[0] + crop_size, offset[1] : offset[1] + crop_size]

    view = tf.cond(tf.minimum(shape[0], shape[1]) >= resize_size, windowed, whole)
    view.set_shape([crop_size, crop_size, image.shape[-1]])
    return view


def crop_window(height, width, resize_size, crop_size, offset):
    """[top, left, size, size], int32: the pixels of an image [height, width] that the crop_size
    crop at ``offset`` of its central square rescaled to resize_size covers, rounded to whole
    pixels (the window `tf.image.decode_and_crop_jpeg` takes)."""
    side = tf.minimum(height, width)
    scale = tf.cast(side, tf.float32) / resize_size
    size = tf.clip_by_value(tf.cast(tf.round(crop_size * scale), tf.int32), 1, side)
    start = tf.minimum(tf.cast(tf.round(tf.cast(offset, tf.float32) * scale), tf.int32), side - size)
    origin = tf.stack([(height - side) // 2, (width - side) // 2])
    return tf.concat([origin + start, [size, size]], 0)


def resize_window(window, size):
    """A window of an image (any dtype) rescaled to size x size, float32 (see `resize_and_center_crop`)."""
    return tf.image.resize(tf.cast(window, tf.float32), [size, size], method="bilinear")


def random_flip(image, seed):
    """Mirrors one [H, W, C] image left-right with probability 1/2."""
    return tf.image.stateless_random_flip_left_right(image, seed=seed)


def pca_lighting(images, eigenvalues, eigenvectors, alpha_std, seed):
    """Adds the paper's PCA colour noise to [H, W, 3] or [B, H, W, 3] images.

    For each image, alpha ~ N(0, alpha_std) is drawn once per principal
    component, and `eigenvectors @ (alpha * eigenvalues)` is added to every
    pixel. `eigenvectors` holds one eigenvector per column (as
    `numpy.linalg.eigh` returns them) and both come from the RGB covariance
    of the training set, on the images' scale.
    """
    images = tf.convert_to_tensor(images, tf.float32)
    return add_to_pixels(images, pca_shift(tf.shape(images)[:-3], eigenvalues, eigenvectors, alpha_std, seed))


def pca_shift(batch_shape, eigenvalues, eigenvectors, alpha_std, seed):
    """The RGB shifts [*batch_shape, 3] that `pca_lighting` adds, one per image."""
    eigenvalues = tf.cast(eigenvalues, tf.float32)
    eigenvectors = tf.cast(eigenvectors, tf.float32)
    shape = tf.concat([tf.cast(batch_shape, tf.int32), [3]], 0)
    alpha = tf.random.stateless_normal(shape, seed=seed, stddev=alpha_std)
    return tf.linalg.matvec(eigenvectors, alpha * eigenvalues)


def subtract_mean(images, mean):
    """Subtracts a per-channel mean [3] or a per-pixel mean image [H, W, 3]."""
    images = tf.convert_to_tensor(images, tf.float32)
    mean = tf.cast(mean, tf.float32)
    if mean.shape.rank == 1:
        return add_to_pixels(images, -mean)
    return images - mean


def add_to_pixels(images, rgb):
    """Adds an RGB colour to every pixel: ``images`` [..., H, W, 3], ``rgb`` [3] (one for all) or
    [..., 3] (one per image).

    The same sums as ``images + rgb[..., None, None, :]``, formed as rows of W x 3 values:
    TensorFlow's broadcast of a 3-vector over the pixels took about ten times as long as the
    addition of a row (about 0.3 ms per 256x256 image on this project's CPU, a third of the
    time it takes to decode an ImageNet JPEG).
    """
    images = tf.convert_to_tensor(images, tf.float32)
    rgb = tf.cast(rgb, tf.float32)
    shape = tf.shape(images)
    width = shape[-2]
    multiples = tf.concat([tf.ones([tf.rank(rgb) - 1], tf.int32), [width]], 0)
    row = tf.expand_dims(tf.tile(rgb, multiples), -2)  # [..., 1, W * 3]: R, G, B, R, G, B, ...
    rows = tf.reshape(images, tf.concat([shape[:-2], [width * 3]], 0))
    return tf.reshape(rows + row, shape)


def ten_crop(image, size):
    """The paper's ten test views of one [H, W, C] image: [10, size, size, C].

    Order: top-left, top-right, bottom-left, bottom-right, centre, then the
    same five mirrored left-right.
    """
    shape = tf.shape(image)
    height, width = shape[0], shape[1]
    corners = [(0, 0), (0, width - size), (height - size, 0), (height - size, width - size)]
    crops = [image[top : top + size, left : left + size, :] for top, left in corners]
    crops.append(center_crop(image, size))
    crops = tf.stack(crops)
    return tf.concat([crops, tf.reverse(crops, axis=[2])], axis=0)


@dataclasses.dataclass(frozen=True)
class DatasetStats:
    """What preprocessing needs from the training set, on the 0-255 scale.

    `mean_rgb` [3]; `mean_image` [S, S, 3] or None (the paper's per-pixel
    mean of the resized S x S training images); `eigenvectors` [3, 3] (one
    per column) and `eigenvalues` [3] (largest first) of the RGB covariance;
    `num_images`: how many training images they were computed on.

    Eigenvalue scale: the eigenvalues of the covariance of pixel values on
    the 0-1 scale, multiplied by 255 for images on the 0-255 scale. That is
    the convention of the published ImageNet values (0.2175, 0.0188, 0.0045)
    used by most reproductions; the eigenvalues of the 0-255 covariance
    itself would be 255 times larger again and give colour shifts of
    hundreds of levels. With it, alpha ~ N(0, 0.1) moves an ImageNet image's
    colour by about 5 levels along the first component.
    """

    mean_rgb: np.ndarray
    eigenvalues: np.ndarray
    eigenvectors: np.ndarray
    num_images: int
    mean_image: np.ndarray | None = None

    def summary(self):
        mean = ", ".join(f"{v:.1f}" for v in self.mean_rgb)
        eig = ", ".join(f"{v:.2f}" for v in self.eigenvalues)
        return f"RGB mean ({mean}), PCA eigenvalues ({eig}) from {self.num_images} training images"


# ImageNet's published values on the 0-255 scale (the widely used ones from
# fb.resnet.torch: eigenvalues 0.2175, 0.0188, 0.0045 on the 0-1 scale).
IMAGENET_STATS = DatasetStats(
    mean_rgb=np.array([123.68, 116.78, 103.94], np.float32),
    eigenvalues=np.array([0.2175, 0.0188, 0.0045], np.float32) * 255.0,
    eigenvectors=np.array(
        [[-0.5675, 0.7192, 0.4009], [-0.5808, -0.0045, -0.8140], [-0.5836, -0.6948, 0.4203]],
        np.float32,
    ),
    num_images=1_281_167,
)


def compute_stats(images, resize_size=PAPER_RESIZE_SIZE, max_images=2000, batch_size=100):
    """Computes `DatasetStats` from a dataset of uint8 [H, W, 3] images.

    The images are prepared as for training (shorter side to `resize_size`,
    central square) and the first `max_images` are used: the mean image, the
    per-channel mean and the RGB covariance over all their pixels.
    """
    prepared = (
        images.take(max_images)
        .map(lambda image: resize_and_center_crop(image, resize_size), num_parallel_calls=tf.data.AUTOTUNE)
        .batch(batch_size)
    )
    count = 0
    pixel_sum = np.zeros((resize_size, resize_size, 3), np.float64)
    outer_sum = np.zeros((3, 3), np.float64)
    for batch in prepared:
        batch = batch.numpy().astype(np.float64)
        count += batch.shape[0]
        pixel_sum += batch.sum(axis=0)
        flat = batch.reshape(-1, 3)
        outer_sum += flat.T @ flat
    if count == 0:
        raise ValueError("cannot compute dataset statistics: the training split has no images")
    mean_image = pixel_sum / count
    mean_rgb = mean_image.mean(axis=(0, 1))
    covariance = outer_sum / (count * resize_size * resize_size) - np.outer(mean_rgb, mean_rgb)
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)
    order = np.argsort(eigenvalues)[::-1]
    return DatasetStats(
        mean_rgb=mean_rgb.astype(np.float32),
        eigenvalues=(np.maximum(eigenvalues[order], 0.0) / 255.0).astype(np.float32),
        eigenvectors=eigenvectors[:, order].astype(np.float32),
        num_images=count,
        mean_image=mean_image.astype(np.float32),
    )
