"""Data sources: each data set's raw splits as unbatched `tf.data.Dataset`s.

Everything above this module (pre-processing, augmentation, batching,
holding out validation data) sees one interface::

    info = dataset_info("cifar10", data_dir)           # classes, split sizes
    ds = load_split("cifar10", "train", data_dir)      # (image uint8 [H, W, 3], label int64 [])

Splits come in file order, unshuffled and unaugmented, so that a run is
reproducible from its flags and the pipeline decides all randomness.

Sources (``dataset`` names, see `DATASETS`):

- ``"cifar10"``: the official *binary* batches (``data_batch_1.bin`` …
  ``data_batch_5.bin``, ``test_batch.bin``, ``batches.meta.txt``, as in
  ``cifar-10-binary.tar.gz``) in ``data_dir``, read with tf.data directly.
  Without a ``data_dir`` (and with `DATA_DIR_ENV` unset), tensorflow-datasets'
  ``cifar10``, which downloads on first use.
- ``"cifar10_sample"``: 1000 training and 200 test records of real CIFAR-10
  shipped in ``alexnet_tf/sample_data/cifar10/`` (same binary layout), so
  that everything runs on a fresh clone without network or data.
- ``"imagenet2012"``: an image-folder tree ``data_dir/train/<class>/<image>``
  and ``data_dir/validation/<class>/<image>``; otherwise tensorflow-datasets'
  ``imagenet2012``, prepared from the manual-download tar files.
- ``"synthetic"``: random images and labels made on the fly, for throughput
  benchmarks without data.

Every bad input that can be found without reading the data (unknown names,
missing folders or files, truncated record files) raises `DataError` at call
time, with one line saying what was found and what was expected.
"""

import dataclasses
import os
import pathlib
import random
import re
import sys

import tensorflow as tf

__all__ = [
    "DATASETS",
    "DATA_DIR_ENV",
    "DataError",
    "DatasetInfo",
    "dataset_info",
    "load_split",
]

from alexnet_tf.choices import DATA_DIR_ENV, DATASETS  # noqa: E402,F401  (re-exported)

SPLITS = {
    "cifar10": ("train", "test"),
    "cifar10_sample": ("train", "test"),
    "imagenet2012": ("train", "validation"),
    "synthetic": ("train", "test"),
}
# ImageNet's labelled held-out set is called "validation" (its test labels were
# never published); callers written for CIFAR's "test" still get the right split.
SPLIT_ALIASES = {"imagenet2012": {"test": "validation"}}

# Options each source understands. Passing another source's option with the
# value None is allowed, so that a caller can forward all of its flags to
# every source; a non-None value for an option the source does not use is an
# error rather than silently ignored.
SOURCE_OPTIONS = {
    "cifar10": ("tfds_data_dir", "tfds_manual_dir", "download"),
    "cifar10_sample": (),
    "imagenet2012": ("tfds_data_dir", "tfds_manual_dir", "download", "skip_bad_images"),
    "synthetic": ("image_size", "num_classes", "num_examples", "seed"),
}

CIFAR10_CLASS_NAMES = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip
CIFAR10_IMAGE_SIZE = 32
CIFAR10_RECORD_BYTES = 1 + 3 * CIFAR10_IMAGE_SIZE * CIFAR10_IMAGE_SIZE  # label byte + R, G, B planes
CIFAR10_TRAIN_PATTERN = re.compile(r"data_batch_(\d+)\.bin")
CIFAR10_TEST_FILE = "test_batch.bin"
CIFAR10_META_FILE = "batches.meta.txt"
# The folder cifar-10-binary.tar.gz extracts to: accepted below data_dir too.
CIFAR10_TAR_FOLDER = "cifar-10-batches-bin"

SAMPLE_CIFAR10_DIR = pathlib.Path(__file__).resolve().parent / "sample_data" / "cifar10"

IMAGENET_FOLDER_SPLITS = {"train": "train", "validation": "validation"}
IMAGENET_MANUAL_FILES = ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar")
# What tf.io.decode_image reads; other files in a class folder are not images.
IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png", ".bmp", ".gif")

# A thousandth of ImageNet's 1,281,167 training images, and a tenth of that
# for test: enough steps to time a pipeline, small enough to start at once.
SYNTHETIC_DEFAULTS = {
    "image_size": 256,
    "num_classes": 1000,
    "num_examples": {"train": 1281, "test": 128},
    "seed": 0,
}


class DataError(ValueError):
    """A data source is missing, malformed or asked for something it does not have."""


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What is known about a data set before reading its examples.

    Attributes:
      name: the dataset name, one of `DATASETS`.
      num_classes: number of labels (labels are 0 … num_classes - 1).
      class_names: the label names, in label order.
      split_sizes: records actually found per split, e.g.
        ``{"train": 50000, "test": 10000}``; a split whose files are absent
        is left out.
      encoded: True when ``load_split(..., decode=False)`` yields encoded
        (JPEG) bytes instead of decoded images.
    """

    name: str
    num_classes: int
    class_names: tuple[str, ...]
    split_sizes: dict[str, int]
    encoded: bool


def dataset_info(dataset, data_dir=None, **source_options):
    """Returns the `DatasetInfo` of ``dataset`` as found in ``data_dir``.

    Arguments are as for `load_split`. For a tensorflow-datasets source this
    prepares the data set if needed (tfds downloads CIFAR-10 on first use).
    """
    _check_choice("dataset", dataset, DATASETS)
    options = _check_options(dataset, source_options)
    if dataset == "synthetic":
        settings = _synthetic_settings(options)
        return DatasetInfo(
            name=dataset,
            num_classes=settings["num_classes"],
            class_names=tuple(f"class_{i}" for i in range(settings["num_classes"])),
            split_sizes={split: settings["num_examples"][split] for split in SPLITS[dataset]},
            encoded=False,
        )
    if dataset == "cifar10_sample":
        folder = _scan_cifar10_folder(SAMPLE_CIFAR10_DIR, "the embedded sample")
        return _cifar10_info(dataset, folder)
    directory, origin = _resolve_data_dir(data_dir)
    if dataset == "cifar10":
        if directory is None:
            return _tfds_info("cifar10", SPLITS[dataset], options, manual_dir=None, encoded=False)
        return _cifar10_info(dataset, _scan_cifar10_folder(directory, origin))
    # imagenet2012
    if directory is not None and _is_image_folder(directory, origin):
        class_names = _image_folder_classes(directory)
        split_sizes = {}
        for split, folder_name in IMAGENET_FOLDER_SPLITS.items():
            if (directory / folder_name).is_dir():
                paths, _ = _image_folder_files(directory, split, class_names)
                split_sizes[split] = len(paths)
        return DatasetInfo(dataset, len(class_names), class_names, split_sizes, encoded=True)
    manual_dir = options.get("tfds_manual_dir") or (str(directory) if directory is not None else None)
    return _tfds_info("imagenet2012", SPLITS[dataset], options, manual_dir=manual_dir, encoded=True)


def load_split(dataset, split, data_dir=None, *, decode=True, **source_options):
    """Returns one split of ``dataset`` as an unbatched, unshuffled `tf.data.Dataset`.

    Elements are ``(image, label)``: ``image`` uint8 ``[H, W, 3]`` (RGB),
    ``label`` int64 ``[]``, in file order. Cheap checks (names, folders,
    file sizes) run now and raise `DataError`; the records are read when the
    dataset is iterated.

    Args:
      dataset: one of `DATASETS`.
      split: "train" or "test" ("train" or "validation" for imagenet2012,
        where "test" is accepted as an alias of "validation").
      data_dir: folder of the data; None reads the `DATA_DIR_ENV`
        environment variable, and if that is unset too, cifar10 and
        imagenet2012 come from tensorflow-datasets. Ignored by
        cifar10_sample and synthetic.
      decode: False makes JPEG-backed sources (imagenet2012) yield the
        encoded file bytes (tf.string ``[]``) instead of the image, so that
        the pipeline can decode and crop in one step
        (`tf.io.decode_and_crop_jpeg`). Image-folder files are passed on as
        they are: check `tf.io.is_jpeg` before using a JPEG-only decoder
        (ImageNet's training set holds one PNG named ``.JPEG``). No effect on
        cifar10, cifar10_sample and synthetic.
      **source_options: per source (None values are ignored, so callers can
        forward every flag to every source):
        cifar10 and imagenet2012 through tfds: ``tfds_data_dir`` (where
        tfds keeps prepared data), ``tfds_manual_dir`` (tfds's manual
        download folder; for imagenet2012 it defaults to ``data_dir``),
        ``download`` (default True: let tfds download and prepare).
        imagenet2012 image folders: ``skip_bad_images`` (default False:
        a file that cannot be read or decoded stops iteration with a
        `tf.errors.InvalidArgumentError` naming it; True drops it and prints
        its path and the running count of skipped files to stderr). With
        ``decode=False`` only unreadable files are caught here; bad image
        bytes fail where the pipeline decodes them.
        synthetic: ``image_size`` (default 256, square images),
        ``num_classes`` (default 1000), ``num_examples`` (per split; default
        1281 for train and 128 for test), ``seed`` (default 0; same seed,
        same data).
    """
    _check_choice("dataset", dataset, DATASETS)
    split = _canonical_split(dataset, split)
    options = _check_options(dataset, source_options)
    if dataset == "synthetic":
        return _synthetic_split(split, _synthetic_settings(options))
    if dataset == "cifar10_sample":
        folder = _scan_cifar10_folder(SAMPLE_CIFAR10_DIR, "the embedded sample")
        return _read_cifar10_split(folder, split)
    directory, origin = _resolve_data_dir(data_dir)
    if dataset == "cifar10":
        if directory is None:
            return _tfds_split("cifar10", split, options, decode=True, manual_dir=None)
        return _read_cifar10_split(_scan_cifar10_folder(directory, origin), split)
    # imagenet2012
    if directory is not None and _is_image_folder(directory, origin):
        class_names = _image_folder_classes(directory)
        paths, labels = _image_folder_files(directory, split, class_names)
        return _read_image_files(
            paths, labels, decode=decode, skip_bad_images=bool(options.get("skip_bad_images"))
        )
    manual_dir = options.get("tfds_manual_dir") or (str(directory) if directory is not None else None)
    return _tfds_split("imagenet2012", split, options, decode=decode, manual_dir=manual_dir)


# ---------------------------------------------------------------------------
# Argument checks


def _check_choice(name, value, allowed):
    if value not in allowed:
        raise DataError(
            f"{name}={value!r} is not supported; choose one of {', '.join(map(repr, allowed))}."
        )


def _canonical_split(dataset, split):
    aliases = SPLIT_ALIASES.get(dataset, {})
    if split in aliases:
        return aliases[split]
    if split not in SPLITS[dataset]:
        allowed = ", ".join(map(repr, SPLITS[dataset]))
        alias_note = "".join(f" (or {a!r} for {b!r})" for a, b in aliases.items())
        raise DataError(f"split={split!r} is not a split of {dataset}; choose one of {allowed}{alias_note}.")
    return split


def _check_options(dataset, source_options):
    known = {name for names in SOURCE_OPTIONS.values() for name in names}
    unknown = sorted(set(source_options) - known)
    if unknown:
        raise DataError(
            f"unknown data source option(s) {', '.join(unknown)}; the options are "
            f"{', '.join(sorted(known))}."
        )
    given = {name: value for name, value in source_options.items() if value is not None}
    foreign = sorted(set(given) - set(SOURCE_OPTIONS[dataset]))
    if foreign:
        allowed = ", ".join(SOURCE_OPTIONS[dataset]) or "none"
        raise DataError(
            f"option(s) {', '.join(foreign)} do not apply to dataset {dataset!r}; "
            f"its options are: {allowed}."
        )
    return given


def _resolve_data_dir(data_dir):
    """Returns (path or None, where the path came from) for error messages."""
    if data_dir is not None and str(data_dir) != "":
        return pathlib.Path(data_dir).expanduser(), "data_dir"
    from_env = os.environ.get(DATA_DIR_ENV, "")
    if from_env:
        return pathlib.Path(from_env).expanduser(), f"${DATA_DIR_ENV}"
    return None, None


def _describe_contents(folder, limit=8):
    """A short listing of a folder for error messages: 'a, b/, c … (12 entries)'."""
    try:
        names = sorted(entry.name + ("/" if entry.is_dir() else "") for entry in os.scandir(folder))
    except OSError as err:
        return f"unreadable ({err.strerror})"
    if not names:
        return "nothing (empty folder)"
    shown = ", ".join(names[:limit])
    return shown if len(names) <= limit else f"{shown} … ({len(names)} entries)"


def _check_folder(folder, what, origin):
    if not folder.exists():
        raise DataError(f"{what} folder {folder} (from {origin}) does not exist.")
    if not folder.is_dir():
        raise DataError(f"{what} folder {folder} (from {origin}) is a file, not a folder.")


# ---------------------------------------------------------------------------
# CIFAR-10 binary batches


@dataclasses.dataclass(frozen=True)
class _Cifar10Folder:
    path: pathlib.Path
    split_files: dict  # split -> tuple of record files, only for splits present
    split_sizes: dict  # split -> record count
    class_names: tuple


def _scan_cifar10_folder(path, origin):
    """Finds and checks the binary batches in ``path`` (or its cifar-10-batches-bin/)."""
    _check_folder(path, "CIFAR-10", origin)
    if not _cifar10_batch_files(path) and (path / CIFAR10_TAR_FOLDER).is_dir():
        path = path / CIFAR10_TAR_FOLDER
    train_files = _cifar10_batch_files(path)
    test_file = path / CIFAR10_TEST_FILE
    split_files = {}
    if train_files:
        split_files["train"] = tuple(train_files)
    if test_file.is_file():
        split_files["test"] = (test_file,)
    if not split_files:
        # The Python and MATLAB downloads use the same names without ".bin".
        other_version = " (this looks like the Python or MATLAB version; use cifar-10-binary.tar.gz)"
        hint = other_version if (path / "data_batch_1").exists() or (path / "data_batch_1.mat").exists() else ""
        raise DataError(
            f"no CIFAR-10 binary batches in {path} (from {origin}): expected data_batch_1.bin … "
            f"data_batch_5.bin and {CIFAR10_TEST_FILE}, found {_describe_contents(path)}{hint}."
        )
    split_sizes = {
        split: sum(_cifar10_record_count(file) for file in files) for split, files in split_files.items()
    }
    return _Cifar10Folder(path, split_files, split_sizes, _cifar10_class_names(path))


def _cifar10_batch_files(path):
    numbered = []
    for name in os.listdir(path):
        match = CIFAR10_TRAIN_PATTERN.fullmatch(name)
        if match and (path / name).is_file():
            numbered.append((int(match.group(1)), path / name))
    # Numeric order: data_batch_10.bin (if someone splits finer) sorts after data_batch_9.bin.
    return [file for _, file in sorted(numbered)]


def _cifar10_record_count(file):
    size = os.path.getsize(file)
    if size == 0 or size % CIFAR10_RECORD_BYTES:
        raise DataError(
            f"{file} is {size} bytes, not a whole number of {CIFAR10_RECORD_BYTES}-byte CIFAR-10 "
            f"records (1 label byte + 3072 pixel bytes): the file is truncated or not CIFAR-10 binary data."
        )
    return size // CIFAR10_RECORD_BYTES


def _cifar10_class_names(path):
    meta = path / CIFAR10_META_FILE
    if not meta.is_file():
        return CIFAR10_CLASS_NAMES
    names = tuple(line.strip() for line in meta.read_text().splitlines() if line.strip())
    if len(names) != len(CIFAR10_CLASS_NAMES):
        raise DataError(
            f"{meta} lists {len(names)} class names; CIFAR-10 has {len(CIFAR10_CLASS_NAMES)}."
        )
    return names


def _cifar10_info(dataset, folder):
    return DatasetInfo(
        name=dataset,
        num_classes=len(folder.class_names),
        class_names=folder.class_names,
        split_sizes=dict(folder.split_sizes),
        encoded=False,
    )


def _read_cifar10_split(folder, split):
    if split not in folder.split_files:
        needed = "data_batch_*.bin" if split == "train" else CIFAR10_TEST_FILE
        raise DataError(
            f"CIFAR-10 split {split!r} needs {needed}, which is missing from {folder.path}; "
            f"found {_describe_contents(folder.path)}."
        )
    files = [str(file) for file in folder.split_files[split]]
    records = tf.data.FixedLengthRecordDataset(files, CIFAR10_RECORD_BYTES)
    dataset = records.map(_decode_cifar10_record, num_parallel_calls=tf.data.AUTOTUNE)
    # The count is known from the file sizes; telling tf.data lets callers
    # split or size epochs without a pass over the data.
    return dataset.apply(tf.data.experimental.assert_cardinality(folder.split_sizes[split]))


def _decode_cifar10_record(record):
    values = tf.io.decode_raw(record, tf.uint8)
    label = tf.cast(values[0], tf.int64)
    # The pixels are stored plane by plane (all red, then green, then blue).
    planes = tf.reshape(values[1:], [3, CIFAR10_IMAGE_SIZE, CIFAR10_IMAGE_SIZE])
    return tf.transpose(planes, [1, 2, 0]), label


# ---------------------------------------------------------------------------
# Image folders (ImageNet as train/<class>/<image>, validation/<class>/<image>)


def _is_image_folder(directory, origin):
    """True when ``directory`` is laid out as an image-folder tree.

    Raises `DataError` when ``directory`` is missing, or half a tree
    (validation/ without train/).
    """
    _check_folder(directory, "ImageNet", origin)
    if (directory / "train").is_dir():
        return True
    if (directory / "validation").is_dir():
        raise DataError(
            f"{directory} has validation/ but no train/: the class list (and so the labels) "
            f"comes from train/'s subfolders."
        )
    return False


def _image_folder_classes(directory):
    train = directory / "train"
    classes = sorted(
        entry.name for entry in os.scandir(train) if entry.is_dir() and not entry.name.startswith(".")
    )
    if not classes:
        raise DataError(
            f"{train} has no class subfolders (expected train/<class>/<image>); "
            f"found {_describe_contents(train)}."
        )
    return tuple(classes)


def _image_folder_files(directory, split, class_names):
    """File paths and labels of a split.

    Validation: class order, then file-name order. Train: that list in a fixed
    pseudo-random order (seed 0, the same on every machine), because a
    class-sorted training split would put whole classes into the held-out
    validation part (its last records) and leave a shuffle buffer only a few
    classes to mix.
    """
    split_dir = directory / IMAGENET_FOLDER_SPLITS[split]
    if not split_dir.is_dir():
        raise DataError(
            f"ImageNet split {split!r} needs the folder {split_dir}, which is missing; "
            f"{directory} contains {_describe_contents(directory)}."
        )
    entries = list(os.scandir(split_dir))
    loose_images = [e.name for e in entries if e.is_file() and e.name.lower().endswith(IMAGE_EXTENSIONS)]
    if loose_images:
        # The official validation tar is flat; its labels are in the devkit.
        raise DataError(
            f"{split_dir} holds images directly (e.g. {sorted(loose_images)[0]}); expected one "
            f"subfolder per class ({split}/<class>/<image>), named as in train/."
        )
    label_of = {name: label for label, name in enumerate(class_names)}
    split_classes = sorted(e.name for e in entries if e.is_dir() and not e.name.startswith("."))
    unknown = [name for name in split_classes if name not in label_of]
    if unknown:
        raise DataError(
            f"{split_dir} has class folder(s) not in train/: {', '.join(unknown[:5])}"
            f"{' …' if len(unknown) > 5 else ''}; labels come from train/'s {len(class_names)} classes."
        )
    paths, labels = [], []
    for name in split_classes:
        class_dir = split_dir / name
        files = sorted(
            entry.name
            for entry in os.scandir(class_dir)
            if entry.is_file() and entry.name.lower().endswith(IMAGE_EXTENSIONS)
        )
        if not files and split == "train":
            raise DataError(
                f"class folder {class_dir} has no images ({', '.join(IMAGE_EXTENSIONS)}); "
                f"found {_describe_contents(class_dir)}."
            )
        paths.extend(str(class_dir / file) for file in files)
        labels.extend([label_of[name]] * len(files))
    if not paths:
        raise DataError(f"{split_dir} has no images in its class folders.")
    if split == "train":
        order = list(range(len(paths)))
        random.Random(0).shuffle(order)
        paths, labels = [paths[i] for i in order], [labels[i] for i in order]
    return paths, labels


def _read_image_files(paths, labels, *, decode, skip_bad_images):
    """Reads (and decodes) image files, naming any file that cannot be read.

    A failing decode op does not say which file it was given, so each element
    carries its index: failed elements are dropped with `ignore_errors`, and a
    scan over the survivors sees the gap in the indices and either fails with
    the missing file's path (the default) or prints it and counts it
    (``skip_bad_images``). A sentinel element after the last file makes a
    failure of the last file visible too.
    """
    count = len(paths)
    path_table = tf.constant(paths)
    label_table = tf.constant(labels, tf.int64)

    def load(index):
        contents = tf.io.read_file(path_table[index])
        if decode:
            # expand_animations=False: a GIF gives its first frame, [H, W, 3] like the rest.
            image = tf.io.decode_image(contents, channels=3, expand_animations=False)
        else:
            image = contents
        return image, label_table[index], index

    loaded = tf.data.Dataset.range(count).map(load, num_parallel_calls=tf.data.AUTOTUNE)
    # log_warning: TensorFlow logs each dropped element's own error (the reason).
    loaded = loaded.ignore_errors(log_warning=True)
    sentinel_image = tf.zeros([0, 0, 3], tf.uint8) if decode else tf.constant(b"")
    sentinel = tf.data.Dataset.from_tensors(
        (sentinel_image, tf.constant(-1, tf.int64), tf.constant(count, tf.int64))
    )

    def fail_on_gap(expected_index, element):
        image, label, index = element
        # Clamped: at the sentinel expected_index can be `count`, and Assert
        # evaluates its message whether or not it fails.
        first_missing = path_table[tf.minimum(expected_index, count - 1)]
        check = tf.debugging.Assert(
            tf.equal(index, expected_index),
            [
                "alexnet_tf.data: could not read or decode image file",
                first_missing,
                "(skip_bad_images=True drops such files)",
            ],
        )
        with tf.control_dependencies([check]):
            index = tf.identity(index)
        return index + 1, (image, label, index)

    def report_gap(state, element):
        expected_index, skipped_so_far = state
        image, label, index = element
        missing = index - expected_index
        skipped_so_far += missing

        def report():
            tf.print(
                "WARNING alexnet_tf.data: skipped unreadable image file(s)",
                path_table[expected_index:index],
                "-",
                skipped_so_far,
                f"of {count} files skipped so far",
                summarize=-1,
            )
            return tf.constant(True)

        reported = tf.cond(missing > 0, report, lambda: tf.constant(False))
        with tf.control_dependencies([reported]):
            index = tf.identity(index)
        return (index + 1, skipped_so_far), (image, label, index)

    start = tf.constant(0, tf.int64)
    with_sentinel = loaded.concatenate(sentinel)
    if skip_bad_images:
        checked = with_sentinel.scan((start, tf.constant(0, tf.int64)), report_gap)
    else:
        checked = with_sentinel.scan(start, fail_on_gap)
    dataset = checked.filter(lambda image, label, index: index < count)
    dataset = dataset.map(lambda image, label, index: (image, label))
    if not skip_bad_images:
        # Every file either arrives or stops iteration, so the count is exact.
        dataset = dataset.apply(tf.data.experimental.assert_cardinality(count))
    return dataset


# ---------------------------------------------------------------------------
# tensorflow-datasets


def _tfds_split(name, split, options, *, decode, manual_dir):
    # Imported here: tensorflow_datasets takes seconds to import and local
    # sources do not need it.
    import tensorflow_datasets as tfds

    load_kwargs = {}
    if manual_dir:
        load_kwargs["download_and_prepare_kwargs"] = {
            "download_config": tfds.download.DownloadConfig(manual_dir=manual_dir)
        }
    if not decode:
        # tfds stores ImageNet as JPEG (it re-encodes the few PNG and CMYK files).
        load_kwargs["decoders"] = {"image": tfds.decode.SkipDecoding()}
    if name == "cifar10" and options.get("download", True):
        _say_before_downloading(tfds, name, options)
    try:
        return tfds.load(
            name,
            split=split,
            as_supervised=True,
            shuffle_files=False,
            data_dir=options.get("tfds_data_dir"),
            download=options.get("download", True),
            **load_kwargs,
        )
    except Exception as err:  # tfds raises many types (AssertionError, OSError, ImportError, ...)
        raise DataError(_tfds_failure_message(name, options, manual_dir, err)) from err


def _say_before_downloading(tfds, name, options):
    """Offline, tfds retries a download for minutes before failing: say what is happening first."""
    try:
        prepared = tfds.builder(name, data_dir=options.get("tfds_data_dir")).is_prepared()
    except Exception:  # the load below reports problems properly
        return
    if not prepared:
        print(
            f"Downloading and preparing {name} with tensorflow-datasets (needs the network; offline it "
            f"fails after a few minutes of retries: point --data_dir or ${DATA_DIR_ENV} at a folder of "
            f"CIFAR-10 binary batches instead).",
            file=sys.stderr,
            flush=True,
        )


def _tfds_failure_message(name, options, manual_dir, err):
    cause = (str(err).strip().splitlines() or [""])[0][:300]
    where = options.get("tfds_data_dir") or "its default data dir"
    said = f"tensorflow-datasets could not load {name} from {where} ({type(err).__name__}: {cause})"
    if name == "cifar10":
        return (
            f"{said}; without network access, point --data_dir or ${DATA_DIR_ENV} at a folder of "
            f"CIFAR-10 binary batches (data_batch_1.bin … data_batch_5.bin, {CIFAR10_TEST_FILE})."
        )
    # imagenet2012: tfds cannot download it; it prepares from the manual tar files.
    if manual_dir is None:
        manual = "no manual dir was given (data_dir or tfds_manual_dir)"
    else:
        present = [f for f in IMAGENET_MANUAL_FILES if (pathlib.Path(manual_dir) / f).is_file()]
        missing = [f for f in IMAGENET_MANUAL_FILES if f not in present]
        manual = (
            f"the manual dir {manual_dir} lacks {', '.join(missing)} (found {_describe_contents(manual_dir)})"
            if missing
            else f"the manual dir {manual_dir} has {', '.join(present)}"
        )
    return (
        f"{said}; {manual}. Point --data_dir or ${DATA_DIR_ENV} at an image folder "
        f"(train/<class>/<image>, validation/<class>/<image>) or at a folder holding "
        f"{' and '.join(IMAGENET_MANUAL_FILES)}."
    )


def _tfds_info(name, splits, options, *, manual_dir, encoded):
    import tensorflow_datasets as tfds

    split_sizes = {}
    for split in splits:
        dataset = _tfds_split(name, split, options, decode=True, manual_dir=manual_dir)
        size = int(dataset.cardinality())
        if size < 0:  # unknown to tf.data: count (tfds normally records it)
            size = int(dataset.reduce(tf.constant(0, tf.int64), lambda n, _: n + 1))
        split_sizes[split] = size
    builder = tfds.builder(name, data_dir=options.get("tfds_data_dir"))
    class_names = tuple(builder.info.features["label"].names)
    return DatasetInfo(name, len(class_names), class_names, split_sizes, encoded=encoded)


# ---------------------------------------------------------------------------
# Synthetic data


def _synthetic_settings(options):
    settings = {key: options.get(key, default) for key, default in SYNTHETIC_DEFAULTS.items()}
    for key in ("image_size", "num_classes"):
        if not isinstance(settings[key], int) or settings[key] < 1:
            raise DataError(f"synthetic {key}={settings[key]!r} must be a positive integer.")
    num_examples = settings["num_examples"]
    if isinstance(num_examples, int):
        num_examples = {split: num_examples for split in SPLITS["synthetic"]}
    if not all(isinstance(n, int) and n >= 1 for n in num_examples.values()):
        raise DataError(f"synthetic num_examples={settings['num_examples']!r} must be a positive integer.")
    settings["num_examples"] = num_examples
    if not isinstance(settings["seed"], int):
        raise DataError(f"synthetic seed={settings['seed']!r} must be an integer.")
    return settings


def _synthetic_split(split, settings):
    size = settings["image_size"]
    num_pixels = size * size * 3
    num_words = -(-num_pixels // 4)  # random uint32 words, four pixel bytes each
    # Different splits get different streams; each example its own seed, so
    # the data is the same whatever the pipeline's parallelism or order.
    split_seed = tf.constant([settings["seed"], SPLITS["synthetic"].index(split)], tf.int64)

    def make_example(index):
        image_seed, label_seed = tf.unstack(
            tf.random.experimental.stateless_split(
                tf.random.experimental.stateless_fold_in(split_seed, index), num=2
            )
        )
        words = tf.random.stateless_uniform(
            [num_words], seed=image_seed, minval=None, maxval=None, dtype=tf.uint32
        )
        pixels = tf.reshape(tf.bitcast(words, tf.uint8), [-1])[:num_pixels]
        label = tf.random.stateless_uniform(
            [], seed=label_seed, minval=0, maxval=settings["num_classes"], dtype=tf.int64
        )
        return tf.reshape(pixels, [size, size, 3]), label

    count = settings["num_examples"][split]
    return tf.data.Dataset.range(count).map(make_example, num_parallel_calls=tf.data.AUTOTUNE)
