"""tf.data pipelines for training and evaluation, built on `alexnet_tf.data` sources.

Training: shuffle, then per image (in parallel) a random 224 crop of the
central square rescaled to 256 (for a JPEG whose square is at least 256,
only the crop's window is decoded and rescaled: `decode_rescaled_crop`),
the paper's per-pixel mean image's crop at the same place when it is used,
a random flip, and PCA lighting and per-channel mean subtraction as one
addition of an RGB colour, made while the crop is still in the processor's
cache (a pass over a whole batch reads it back from memory).

Evaluation: the central crop, or the ten crops of `preprocessing.ten_crop`.

Validation for learning-rate decisions is a held-out part of the training
split (`split_holdout`), never the test split.
"""

import math

import tensorflow as tf

from alexnet_tf import preprocessing

AUTOTUNE = tf.data.AUTOTUNE
from alexnet_tf.choices import MEAN_MODES, check_choice  # noqa: E402  (MEAN_MODES re-exported)


def split_holdout(dataset, num_examples, validation_fraction):
    """Splits a training split into (train_part, validation_part).

    The rule: the validation part is the last ceil(fraction x N) records of
    the split in the source's order (file order for CIFAR-10; a fixed
    permutation for image folders, see `data`); the training part is the rest. It is the same
    on every run and every machine, and needs no shuffling of the source.
    For the shared CIFAR-10 subset (5 files of 1017 records) and the default
    10%, that is the last 509 records of data_batch_5.bin.
    """
    if not 0.0 <= validation_fraction < 1.0:
        raise ValueError(f"validation_fraction={validation_fraction} must be in [0, 1).")
    num_validation = math.ceil(validation_fraction * num_examples)
    if validation_fraction > 0 and num_validation >= num_examples:
        raise ValueError(
            f"validation_fraction={validation_fraction} of {num_examples} examples leaves none to train on."
        )
    num_train = num_examples - num_validation
    return dataset.take(num_train), dataset.skip(num_train)


def decode_center_square(encoded):
    """Decodes an encoded image, keeping only its central square.

    JPEGs go through the fused decode-and-crop op, which skips the pixels
    outside the square; other formats are decoded whole and cropped.
    """

    def decode_jpeg():
        shape = tf.image.extract_jpeg_shape(encoded)
        side = tf.minimum(shape[0], shape[1])
        window = tf.stack([(shape[0] - side) // 2, (shape[1] - side) // 2, side, side])
        return tf.image.decode_and_crop_jpeg(encoded, window, channels=3)

    def decode_other():
        image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
        shape = tf.shape(image)
        return preprocessing.center_crop(image, tf.minimum(shape[0], shape[1]))

    return tf.cond(tf.io.is_jpeg(encoded), decode_jpeg, decode_other)


def decode_rescaled_crop(encoded, resize_size, crop_size, offset):
    """`preprocessing.rescaled_crop` of an encoded image.

    A JPEG whose central square is at least resize_size is decoded only in
    the crop's window (`preprocessing.crop_window`): libjpeg skips the rows
    below it and most of the work on the columns beside it. Other images
    are decoded as `decode_center_square` does.
    """

    def jpeg_shape():
        return tf.image.extract_jpeg_shape(encoded)[:2]

    shape = tf.cond(tf.io.is_jpeg(encoded), jpeg_shape, lambda: tf.zeros([2], tf.int32))

    def window():
        crop_window = preprocessing.crop_window(shape[0], shape[1], resize_size, crop_size, offset)
        return preprocessing.resize_window(tf.image.decode_and_crop_jpeg(encoded, crop_window, channels=3), crop_size)

    def square():
        return preprocessing.rescaled_crop(decode_center_square(encoded), resize_size, crop_size, offset)

    view = tf.cond(tf.reduce_min(shape) >= resize_size, window, square)
    view.set_shape([crop_size, crop_size, 3])
    return view


def _shard_by_data(dataset):
    """Lets several workers share a pipeline whose source may be a single file.

    tf.distribute's default shards by file, which fails for one-file sources
    (the CIFAR sample, a tfds split of one shard). Sharding by data gives each
    worker its part of every global batch; every worker runs the whole
    pipeline to get it, which is fine on a few machines.
    """
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def _seeds(seed):
    """An endless dataset of [2] int64 seeds for stateless ops, new each epoch."""
    return tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)


def _check_mean_mode(mean, stats):
    check_choice("mean", mean, MEAN_MODES)
    if mean == "image" and stats.mean_image is None:
        raise ValueError("mean='image' needs statistics with a mean image; these have only the RGB mean.")


def train_dataset(
    source,
    *,
    batch_size,
    stats,
    image_size=preprocessing.PAPER_CROP_SIZE,
    seed=0,
    pca_std=preprocessing.PCA_ALPHA_STD,
    mean="channel",
    shuffle_buffer=10_000,
    encoded=False,
    drop_remainder=True,
    augment=True,
    element_seeds=False,
    crop_padding=0,
):
    """Augmented training batches: (float32 [B, S, S, 3], int64 [B]).

    Args:
      source: unbatched (uint8 image, label) dataset, or (encoded bytes,
        label) with `encoded=True`.
      batch_size: images per batch (the global batch under a strategy).
      stats: `preprocessing.DatasetStats` of the training set.
      image_size: crop side S; images are first rescaled to round(S x 256/224), or with
        ``crop_padding`` to S and mirrored out by that many pixels (`preprocessing.canvas`).
      seed: shuffling and augmentation seed; each epoch differs, every run
        with the same seed repeats the same sequence.
      pca_std: std of the PCA lighting coefficients (0 disables it).
      mean: "channel" (per-channel mean) or "image" (the paper's per-pixel mean image).
      augment: False trains on the centre crop with no flips or lighting noise (the views
        `eval_dataset` gives), still shuffled.
      crop_padding: see `preprocessing.canvas` (0: the paper's rescale).
      element_seeds: the source's elements are (example, [2] int64 seed) pairs that carry their
        own augmentation seeds (`data_service.passes`: seeds drawn here would repeat on every
        tf.data service worker); otherwise they are drawn from `seed`.
    """
    _check_mean_mode(mean, stats)
    preprocessing.check_crop_padding(image_size, crop_padding)
    resize_size = preprocessing.canvas_size_for(image_size, crop_padding)
    mean_image = None
    if mean == "image":
        mean_image = preprocessing.canvas(stats.mean_image, image_size, crop_padding)

    def augment_image(example, seed):
        image, label = example
        crop_seed, flip_seed, lighting_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
        if augment:
            top_left = preprocessing.random_crop_offset(resize_size, image_size, crop_seed)
            if crop_padding:
                whole = decode_center_square(image) if encoded else image
                view = preprocessing.canvas(whole, image_size, crop_padding)
                view = view[top_left[0] : top_left[0] + image_size, top_left[1] : top_left[1] + image_size]
            elif encoded:
                view = decode_rescaled_crop(image, resize_size, image_size, top_left)
            else:
                view = preprocessing.rescaled_crop(image, resize_size, image_size, top_left)
        else:  # exactly the centre view evaluation takes
            top_left = tf.fill([2], (resize_size - image_size) // 2)
            whole = decode_center_square(image) if encoded else image
            view = preprocessing.center_crop(preprocessing.canvas(whole, image_size, crop_padding), image_size)
        colour = tf.zeros([3])  # RGB, added to every pixel of the view
        if mean_image is not None:
            view -= mean_image[top_left[0] : top_left[0] + image_size, top_left[1] : top_left[1] + image_size]
        else:
            colour -= stats.mean_rgb
        if augment:
            view = preprocessing.random_flip(view, flip_seed)
            if pca_std > 0:
                colour += preprocessing.pca_shift([], stats.eigenvalues, stats.eigenvectors, pca_std, lighting_seed)
        return preprocessing.add_to_pixels(view, colour), label

    dataset = source.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    if not element_seeds:
        dataset = tf.data.Dataset.zip(dataset, _seeds(seed))
    dataset = dataset.map(augment_image, num_parallel_calls=AUTOTUNE, deterministic=True)
    dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    return _shard_by_data(dataset.prefetch(AUTOTUNE))


def eval_dataset(
    source,
    *,
    batch_size,
    stats,
    image_size=preprocessing.PAPER_CROP_SIZE,
    ten_crop=False,
    mean="channel",
    encoded=False,
    crop_padding=0,
):
    """Evaluation batches: (float32 [B, S, S, 3], int64 [B]), in source order.

    With `ten_crop=True` the images are [10 x B, S, S, 3]: each image's ten
    views in a row (`preprocessing.ten_crop` order). Reshape the model's
    output to [B, 10, classes] and average the softmax over axis 1.
    """
    _check_mean_mode(mean, stats)
    preprocessing.check_crop_padding(image_size, crop_padding)
    mean_value = stats.mean_rgb
    if mean == "image":
        mean_value = preprocessing.canvas(stats.mean_image, image_size, crop_padding)

    def prepare(image, label):
        if encoded:
            image = decode_center_square(image)
        image = preprocessing.canvas(image, image_size, crop_padding)
        image = preprocessing.subtract_mean(image, mean_value)
        if ten_crop:
            return preprocessing.ten_crop(image, image_size), label
        return preprocessing.center_crop(image, image_size), label

    dataset = source.map(prepare, num_parallel_calls=AUTOTUNE, deterministic=True)
    dataset = dataset.batch(batch_size)
    if ten_crop:
        dataset = dataset.map(
            lambda views, labels: (tf.reshape(views, [-1, image_size, image_size, 3]), labels),
            num_parallel_calls=AUTOTUNE,
        )
    return _shard_by_data(dataset.prefetch(AUTOTUNE))
