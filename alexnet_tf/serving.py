"""Serving a trained run: a `Predictor` (the model with its preprocessing, as TensorFlow
functions), its SavedModel export, and classifying image files.

Each image (JPEG, PNG, GIF or BMP, any size) is prepared as evaluation
prepares the test images (`input_pipeline.eval_dataset`): the central square
(straight from the file for a JPEG, as for ImageNet's), rescaled to the run's
resize size, the run's mean (RGB or mean image) subtracted, then the central
crop, or the ten crops whose softmax is averaged.

The SavedModel's signature `serving_default` takes encoded image files
(tf.string [N]), `serve_images` takes uint8 images [N, H, W, 3] (one size per
call); both return `probabilities` [N, classes], `top5_classes` (int32
[N, 5]), `top5_probabilities` [N, 5] and `top5_class_names` (string [N, 5]).
"""

import pathlib

import numpy as np
import tensorflow as tf

from alexnet_tf import data, evaluation, input_pipeline, preprocessing
from alexnet_tf.cli import tf_error_summary
from alexnet_tf.layers import LocalResponseNormalization

TOP_K = 5
TEN_CROPS = 10


class Predictor(tf.Module):
    """A trained AlexNet with its preprocessing, as TensorFlow functions (and a SavedModel).

    On CPU the model's LRN layers are switched to their XLA form, so that an
    export holds only TensorFlow's own ops (`native_lrn`).

    `serve_images(uint8 [N, H, W, 3])` and `serve_bytes(string [N])` return a
    dict of `probabilities` [N, C] (the softmax, averaged over the ten views
    with `ten_crop`), `top5_classes`, `top5_probabilities` and
    `top5_class_names` (the k = min(5, C) most probable classes, best first).
    """

    def __init__(self, model, stats, *, image_size, mean, class_names, ten_crop=False, checkpoint=None, crop_padding=0):
        super().__init__(name="alexnet_predictor")
        self.checkpoint = checkpoint  # where the weights came from, for reports
        if len(class_names) != model.output_shape[-1]:
            raise ValueError(f"{len(class_names)} class names for a model with {model.output_shape[-1]} outputs.")
        self.model = model
        on_gpu = bool(tf.config.list_logical_devices("GPU"))
        for layer in model.layers:
            # The predictor's graphs may be exported (a SavedModel loaded where this project's
            # LRN kernel is not): on CPU its LRN layers use the XLA form, TensorFlow's own ops.
            if isinstance(layer, LocalResponseNormalization) and (
                layer.implementation == "native" or (layer.implementation == "auto" and not on_gpu)
            ):
                layer.implementation = "xla"
        self.image_size = int(image_size)
        preprocessing.check_crop_padding(self.image_size, crop_padding)
        self.crop_padding = int(crop_padding)
        self.ten_crop = bool(ten_crop)
        self.crops = TEN_CROPS if ten_crop else 1
        if mean == "image":
            if stats.mean_image is None:
                raise ValueError("the run subtracts a mean image, but its statistics have none.")
            mean_value = preprocessing.canvas(stats.mean_image, self.image_size, self.crop_padding)
        else:
            mean_value = stats.mean_rgb
        # Constants, not variables: the SavedModel holds them in its graphs.
        self._mean = tf.constant(np.asarray(mean_value, np.float32))
        self._class_names = tf.constant(list(class_names))
        self.class_names = tuple(class_names)
        # Readable names for ImageNet's WordNet ids ("tench, Tinca tinca"), None for other classes.
        self.class_descriptions = data.class_descriptions(self.class_names)
        self._k = min(TOP_K, len(class_names))
        view_shape = [self.image_size, self.image_size, 3]
        self._views_spec = tf.TensorSpec([TEN_CROPS, *view_shape] if ten_crop else view_shape, tf.float32)

    def preprocess(self, image):
        """One image [H, W, 3] -> its view [S, S, 3] or views [10, S, S, 3], as eval_dataset makes them."""
        image = preprocessing.canvas(image, self.image_size, self.crop_padding)
        image = preprocessing.subtract_mean(image, self._mean)
        if self.ten_crop:
            return preprocessing.ten_crop(image, self.image_size)
        return preprocessing.center_crop(image, self.image_size)

    def _classify(self, views):
        size = self.image_size
        logits = self.model(tf.reshape(views, [-1, size, size, 3]), training=False)
        probabilities = tf.nn.softmax(tf.cast(logits, tf.float32))
        probabilities = tf.reduce_mean(tf.reshape(probabilities, [-1, self.crops, len(self.class_names)]), axis=1)
        top = tf.math.top_k(probabilities, k=self._k)
        return {
            "probabilities": probabilities,
            "top5_classes": top.indices,
            "top5_probabilities": top.values,
            "top5_class_names": tf.gather(self._class_names, top.indices),
        }

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")])
    def serve_images(self, images):
        views = tf.map_fn(self.preprocess, images, fn_output_signature=self._views_spec)
        return self._classify(views)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
    def serve_bytes(self, image_bytes):
        def views(encoded):
            # As eval_dataset(encoded=True) does: the central square straight from the file.
            image = input_pipeline.decode_center_square(encoded)
            image.set_shape([None, None, 3])
            return self.preprocess(image)

        return self._classify(tf.map_fn(views, image_bytes, fn_output_signature=self._views_spec))

    def predict_image(self, image):
        """Outputs for one uint8 [H, W, 3] image, as numpy arrays without the batch axis."""
        outputs = self.serve_images(tf.convert_to_tensor(image, tf.uint8)[None])
        return {key: value.numpy()[0] for key, value in outputs.items()}

    def predict_encoded(self, encoded):
        """Outputs for one encoded image file's bytes, as numpy arrays without the batch axis."""
        outputs = self.serve_bytes(tf.constant([encoded]))
        return {key: value.numpy()[0] for key, value in outputs.items()}

    def export(self, directory):
        """Writes a SavedModel into `directory`, which must be new or empty."""
        directory = check_export_dir(directory)
        tf.saved_model.save(
            self,
            str(directory),
            signatures={"serving_default": self.serve_bytes, "serve_images": self.serve_images},
        )
        return directory


def check_export_dir(directory):
    """`directory` as a Path; `FileExistsError` unless it is new or an empty folder."""
    directory = pathlib.Path(directory).expanduser()
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise FileExistsError(
            f"--export {directory} already exists and is not an empty folder; "
            "choose a new folder (a SavedModel is never written over other files)."
        )
    return directory


def load_predictor(checkpoint, ten_crop=False):
    """A `Predictor` for a run directory or a checkpoint file in a run's checkpoints/ folder,
    with the class names the run recorded."""
    trained = evaluation.load_trained(checkpoint)
    class_names = trained.run_class_names()
    return Predictor(
        trained.build_model(len(class_names)),
        trained.stats(),
        image_size=trained.config.image_size,
        mean=trained.config.mean,
        class_names=class_names,
        ten_crop=ten_crop,
        checkpoint=str(trained.checkpoint),
        crop_padding=trained.config.crop_padding,
    )


def _decode(path, encoded):
    try:
        return tf.io.decode_image(encoded, channels=3, expand_animations=False)
    except tf.errors.InvalidArgumentError as error:
        raise data.DataError(f"{path} is not an image that can be decoded: {tf_error_summary(error)}") from error


def check_images(paths):
    """Fails early, before the model is built, on a missing path."""
    for path in paths:
        path = pathlib.Path(path)
        if not path.exists():
            raise FileNotFoundError(f"image {path} does not exist.")
        if not path.is_file():
            raise IsADirectoryError(f"image {path} is not a file.")


def predict_files(predictor, paths, on_bad_file=None):
    """[{"image", "probabilities", "top5": [{"class", "index", "probability", "description"}]}] for
    image files (``description``: the readable name of an ImageNet class, e.g. "tench, Tinca
    tinca" for n01440764; None for other classes).

    A missing path fails first (`check_images`). A file that cannot be read
    or is not an image raises `data.DataError` or `OSError` naming it; with
    `on_bad_file`, `on_bad_file(path, error)` is called instead, and the
    other files are still classified (the list leaves the bad ones out).
    """
    check_images(paths)
    predictions = []
    for path in paths:
        try:
            predictions.append(_predict_file(predictor, path))
        except (data.DataError, OSError) as error:
            if on_bad_file is None:
                raise
            on_bad_file(path, error)
        except tf.errors.InvalidArgumentError as error:  # decodable, but not by the serving graph
            if on_bad_file is None:
                raise
            on_bad_file(path, data.DataError(f"{path} cannot be classified: {tf_error_summary(error)}"))
    return predictions


def _predict_file(predictor, path):
    encoded = pathlib.Path(path).read_bytes()
    _decode(path, encoded)  # a clear error for a file that is not an image
    outputs = predictor.predict_encoded(encoded)  # the path of the SavedModel's serving_default
    top5 = [
        {
            "class": predictor.class_names[int(index)],
            "index": int(index),
            "probability": float(probability),
            "description": predictor.class_descriptions[int(index)],
        }
        for index, probability in zip(outputs["top5_classes"], outputs["top5_probabilities"])
    ]
    return {"image": str(path), "probabilities": outputs["probabilities"], "top5": top5}
