"""Classify images with a trained checkpoint: python -m alexnet_tf.predict --checkpoint PATH IMAGE...

    python -m alexnet_tf.predict --checkpoint=experiments/cifar10_lrn/run1 cat.jpg dog.png
    python -m alexnet_tf.predict --checkpoint=RUN --ten_crop cat.jpg     # the paper's ten views
    python -m alexnet_tf.predict --checkpoint=RUN --export=serving/alexnet/1

`--checkpoint` is as for `alexnet_tf.evaluate`: a run directory (its best
checkpoint) or a weights file in a run's checkpoints/ folder. Each image
(JPEG, PNG, GIF or BMP, any size) is prepared as evaluation prepares the
test images (see `alexnet_tf.serving`). The class names are those the run
recorded; an ImageNet class (a WordNet id) is printed with its readable
names, e.g. "n01440764 tench, Tinca tinca".

Output: for each image its path and top-5 classes with probabilities, then,
as the last line of stdout, one JSON object: {"checkpoint", "crops",
"predictions": [{"image", "top5": [{"class", "index", "probability",
"description"}]}], "errors": [{"image", "error"}], "export"}
("description": an ImageNet class's readable names, else null).

`--export DIR` writes a TensorFlow SavedModel with the preprocessing inside:
signature `serving_default` takes encoded image files (tf.string [N]),
`serve_images` takes uint8 images [N, H, W, 3] (one size per call); both
return `probabilities` [N, classes], `top5_classes` (int32 [N, 5]),
`top5_probabilities` [N, 5] and `top5_class_names` (string [N, 5]).

Errors are one line on stderr; exit status 1 for a missing, unreadable or
undecodable file, 2 for a usage error. A missing image stops the command
before the model is loaded; a file that cannot be read or is not an image
gets its error line when it is met, the other images are still classified
(and exported with --export), and the exit status is 1 at the end.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import json  # noqa: E402
import sys  # noqa: E402
import traceback  # noqa: E402

from absl import app, flags, logging  # noqa: E402

from alexnet_tf import cli, run  # noqa: E402


def format_predictions(predictions):
    lines = []
    for prediction in predictions:
        lines.append(prediction["image"])
        # An ImageNet class reads "n01440764 tench, Tinca tinca": its WordNet id and names.
        labels = [" ".join(filter(None, (entry["class"], entry.get("description")))) for entry in prediction["top5"]]
        width = max(map(len, labels))
        for rank, (label, entry) in enumerate(zip(labels, prediction["top5"]), 1):
            lines.append(f"  {rank}. {label:<{width}}  {entry['probability']:.4f}")
    return "\n".join(lines)


def define_flags(flag_values=flags.FLAGS):
    fv = dict(flag_values=flag_values)
    flags.DEFINE_string(
        "checkpoint", None, f"A run directory (uses its {run.CHECKPOINTS_DIR}/{run.BEST_WEIGHTS}) or a "
        f"*{run.WEIGHTS_SUFFIX} file in a run's {run.CHECKPOINTS_DIR}/ folder.", required=True, **fv)  # fmt: skip
    flags.DEFINE_boolean("ten_crop", False, "Average the softmax over the paper's ten views of each image.", **fv)
    flags.DEFINE_string("export", None, "Also write a SavedModel (preprocessing included) to this new folder.", **fv)
    flags.DEFINE_boolean("verbose", False, "Show Python tracebacks on errors.", **fv)


def main(argv):
    FLAGS = flags.FLAGS
    images = argv[1:]
    if not FLAGS.verbose:
        logging.set_verbosity(logging.WARNING)
    bad_files = []

    def report_bad_file(path, error):
        if FLAGS.verbose:
            traceback.print_exception(error)
        print(f"error: {cli.first_line(error)}", file=sys.stderr, flush=True)
        bad_files.append({"image": str(path), "error": cli.first_line(error)})

    with cli.one_line_errors(FLAGS.verbose):
        from alexnet_tf import serving

        if not images and not FLAGS.export:
            raise ValueError("nothing to do: give image files to classify, or --export DIR.")
        # Refuse a missing image or a used export folder before building the model.
        serving.check_images(images)
        export_dir = serving.check_export_dir(FLAGS.export) if FLAGS.export else None
        predictor = serving.load_predictor(FLAGS.checkpoint, ten_crop=FLAGS.ten_crop)
        predictions = serving.predict_files(predictor, images, on_bad_file=report_bad_file)
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
        "errors": bad_files,
        "export": str(export_dir) if export_dir is not None else None,
    }
    print(json.dumps(summary), flush=True)
    if bad_files:
        sys.exit(cli.EXIT_DATA)


if __name__ == "__main__":
    define_flags()
    app.run(main, flags_parser=cli.parse_flags)
