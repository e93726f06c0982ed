"""Classify images with a trained checkpoint: python -m alexnet_tf.predict --checkpoint PATH IMAGE...

    python -m alexnet_tf.predict --checkpoint=experiments/cifar10_lrn/run1 cat.jpg dog.png
    python -m alexnet_tf.predict --checkpoint=RUN --ten_crop cat.jpg     # the paper's ten views
    python -m alexnet_tf.predict --checkpoint=RUN --export=serving/alexnet/1

`--checkpoint` is as for `alexnet_tf.evaluate`: a run directory (its best
checkpoint) or a weights file in a run's checkpoints/ folder. Each image
(JPEG, PNG, GIF or BMP, any size) is prepared as evaluation prepares the
test images (`input_pipeline.eval_dataset`): the central square (straight
from the file for a JPEG, as for ImageNet's), rescaled to the run's resize
size, the run's mean (RGB or mean image) subtracted, then the central crop,
or the ten crops whose softmax is averaged. The class names are those of the
run's dataset.

Output: for each image its path and top-5 classes with probabilities, then,
as the last line of stdout, one JSON object: {"checkpoint", "crops",
"predictions": [{"image", "top5": [{"class", "index", "probability"}]}],
"export"}.

`--export DIR` writes a TensorFlow SavedModel with the preprocessing inside:
signature `serving_default` takes encoded image files (tf.string [N]),
`serve_images` takes uint8 images [N, H, W, 3] (one size per call); both
return `probabilities` [N, classes], `top5_classes` (int32 [N, 5]),
`top5_probabilities` [N, 5] and `top5_class_names` (string [N, 5]).

Errors are one line on stderr; exit status 1 for a missing, unreadable or
undecodable file, 2 for a usage error.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import json  # noqa: E402
import pathlib  # noqa: E402

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags, logging  # noqa: E402

from alexnet_tf import cli, data, evaluate, input_pipeline, preprocessing  # noqa: E402

TOP_K = 5
TEN_CROPS = 10


class Predictor(tf.Module):
    """A trained AlexNet with its preprocessing, as TensorFlow functions (and a SavedModel).

    `serve_images(uint8 [N, H, W, 3])` and `serve_bytes(string [N])` return a
    dict of `probabilities` [N, C] (the softmax, averaged over the ten views
    with `ten_crop`), `top5_classes`, `top5_probabilities` and
    `top5_class_names` (the k = min(5, C) most probable classes, best first).
    """

    def __init__(self, model, stats, *, image_size, mean, class_names, ten_crop=False, checkpoint=None):
        super().__init__(name="alexnet_predictor")
        self.checkpoint = checkpoint  # where the weights came from, for reports
        if len(class_names) != model.output_shape[-1]:
            raise ValueError(f"{len(class_names)} class names for a model with {model.output_shape[-1]} outputs.")
        self.model = model
        self.image_size = int(image_size)
        self.resize_size = preprocessing.resize_size_for(self.image_size)
        self.ten_crop = bool(ten_crop)
        self.crops = TEN_CROPS if ten_crop else 1
        if mean == "image":
            if stats.mean_image is None:
                raise ValueError("the run subtracts a mean image, but its statistics have none.")
            mean_value = tf.image.resize(stats.mean_image, [self.resize_size, self.resize_size])
        else:
            mean_value = stats.mean_rgb
        # Constants, not variables: the SavedModel holds them in its graphs.
        self._mean = tf.constant(np.asarray(mean_value, np.float32))
        self._class_names = tf.constant(list(class_names))
        self.class_names = tuple(class_names)
        self._k = min(TOP_K, len(class_names))
        view_shape = [self.image_size, self.image_size, 3]
        self._views_spec = tf.TensorSpec([TEN_CROPS, *view_shape] if ten_crop else view_shape, tf.float32)

    def preprocess(self, image):
        """One image [H, W, 3] -> its view [S, S, 3] or views [10, S, S, 3], as eval_dataset makes them."""
        image = preprocessing.resize_and_center_crop(image, self.resize_size)
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
    """A `Predictor` for a run directory or a checkpoint file in a run's checkpoints/ folder."""
    run = evaluate.find_run(checkpoint)
    config = run.config
    info = data.dataset_info(config.dataset, config.data_dir, **run.source_options(config.dataset))
    if info.num_classes != run.num_classes:
        raise ValueError(
            f"the run's dataset {config.dataset!r} now has {info.num_classes} classes but the checkpoint's "
            f"model has {run.num_classes} outputs; the class names would not match."
        )
    return Predictor(
        run.build_model(),
        run.stats(),
        image_size=config.image_size,
        mean=config.mean,
        class_names=info.class_names,
        ten_crop=ten_crop,
        checkpoint=str(run.checkpoint),
    )


def read_image(path):
    """Decodes an image file to uint8 [H, W, 3] (RGB); `DataError` if it is not a decodable image."""
    return _decode(pathlib.Path(path), pathlib.Path(path).read_bytes()).numpy()


def _decode(path, encoded):
    try:
        return tf.io.decode_image(encoded, channels=3, expand_animations=False)
    except tf.errors.InvalidArgumentError as error:
        raise data.DataError(
            f"{path} is not an image that can be decoded (JPEG, PNG, GIF or BMP): {evaluate._first_line(error)}"
        ) from error


def check_images(paths):
    """Fails early, before the model is built, on a missing path."""
    for path in paths:
        path = pathlib.Path(path)
        if not path.exists():
            raise FileNotFoundError(f"image {path} does not exist.")
        if not path.is_file():
            raise IsADirectoryError(f"image {path} is not a file.")


def predict_files(predictor, paths):
    """[{"image", "probabilities", "top5": [{"class", "index", "probability"}]}] for image files."""
    check_images(paths)
    predictions = []
    for path in paths:
        encoded = pathlib.Path(path).read_bytes()
        _decode(path, encoded)  # a clear error for a file that is not an image
        outputs = predictor.predict_encoded(encoded)  # the path of the SavedModel's serving_default
        top5 = [
            {"class": predictor.class_names[int(index)], "index": int(index), "probability": float(probability)}
            for index, probability in zip(outputs["top5_classes"], outputs["top5_probabilities"])
        ]
        predictions.append({"image": str(path), "probabilities": outputs["probabilities"], "top5": top5})
    return predictions


def format_predictions(predictions):
    lines = []
    for prediction in predictions:
        lines.append(prediction["image"])
        width = max(len(entry["class"]) for entry in prediction["top5"])
        for rank, entry in enumerate(prediction["top5"], 1):
            lines.append(f"  {rank}. {entry['class']:<{width}}  {entry['probability']:.4f}")
    return "\n".join(lines)


def define_flags(flag_values=flags.FLAGS):
    fv = dict(flag_values=flag_values)
    flags.DEFINE_string(
        "checkpoint", None, "A run directory (uses its checkpoints/best.weights.h5) or a *.weights.h5 file in a "
        "run's checkpoints/ folder.", required=True, **fv)  # fmt: skip
    flags.DEFINE_boolean("ten_crop", False, "Average the softmax over the paper's ten views of each image.", **fv)
    flags.DEFINE_string("export", None, "Also write a SavedModel (preprocessing included) to this new folder.", **fv)
    flags.DEFINE_boolean("verbose", False, "Show Python tracebacks on errors.", **fv)


def main(argv):
    FLAGS = flags.FLAGS
    images = argv[1:]
    if not FLAGS.verbose:
        logging.set_verbosity(logging.WARNING)
    with cli.one_line_errors(FLAGS.verbose):
        if not images and not FLAGS.export:
            raise ValueError("nothing to do: give image files to classify, or --export DIR.")
        # Refuse a missing image or a used export folder before building the model.
        check_images(images)
        export_dir = check_export_dir(FLAGS.export) if FLAGS.export else None
        predictor = load_predictor(FLAGS.checkpoint, ten_crop=FLAGS.ten_crop)
        predictions = predict_files(predictor, images)
        if export_dir is not None:
            predictor.export(export_dir)
    if predictions:
        print(format_predictions(predictions))
    if export_dir is not None:
        print(f"SavedModel: {export_dir} (signatures serving_default: encoded images, serve_images: uint8 images)")
    summary = {
        "checkpoint": predictor.checkpoint,
        "crops": predictor.crops,
        "predictions": [{"image": p["image"], "top5": p["top5"]} for p in predictions],
        "export": str(export_dir) if export_dir is not None else None,
    }
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    define_flags()
    app.run(main, flags_parser=cli.parse_flags)
