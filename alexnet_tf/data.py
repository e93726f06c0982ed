"""Data sources: each data set's raw splits as unbatched `tf.data.Dataset`s.

Everything above this module (pre-processing, augmentation, batching,
holding out validation data) sees one interface, a `Source`::

    src = source("cifar10", data_dir)     # checks names, options and folders now
    info = src.info()                     # classes, split sizes
    ds = src.load("train")                # (image uint8 [H, W, 3], label int64 [])
    src.labels("train")                   # its labels, without reading images (or None)
    src.test_split()                      # "test" (imagenet2012: "validation"), or None

`source_for(config)` does the same for a `TrainConfig`, and
`dataset_info(dataset, data_dir)` and `load_split(dataset, split, data_dir)`
are shorthands for one call. Splits come in a fixed order (file order;
image-folder trees: see below), unaugmented, so that a run is reproducible
from its flags and the pipeline decides all randomness.

Sources (``dataset`` names, see `DATASETS`), chosen by `source`:

- ``"cifar10"``: an image-folder tree ``data_dir/train/<class>/<image>``
  (and ``data_dir/test/<class>/<image>`` when present) whose class folders
  are named after the CIFAR-10 classes: the label is the class's index in
  the official order (`CIFAR10_CLASS_NAMES`, airplane 0 … truck 9), all ten
  classes are listed even if a folder is missing, and another folder name
  is an error (`Cifar10FolderSource`; decoded images, kept in memory after
  the first pass). Otherwise the official *binary* batches
  (``data_batch_1.bin`` … ``data_batch_5.bin``, ``test_batch.bin``,
  ``batches.meta.txt``, as in ``cifar-10-binary.tar.gz``) in ``data_dir``,
  read with tf.data directly (`Cifar10BinarySource`). Without a
  ``data_dir`` (and with `DATA_DIR_ENV` unset), tensorflow-datasets'
  ``cifar10``, which downloads on first use (`TfdsSource`; when the
  download host cannot be reached, a `DataError` at once).
- ``"cifar10_sample"``: 1000 training and 200 test records of real CIFAR-10
  shipped in ``alexnet_tf/sample_data/cifar10/`` (same binary layout), so
  that everything runs on a fresh clone without network or data
  (`Cifar10SampleSource`).
- ``"imagenet2012"``: an image-folder tree ``data_dir/train/<wnid>/<image>``
  and/or ``data_dir/validation/<wnid>/<image>`` (`ImageFolderSource`; the
  label is the wnid's standard ILSVRC-2012 index, `imagenet_wnids`, however
  few classes the tree holds, and a folder that is not one of the 1000 wnids
  is an error; ``decode=False`` yields the checked file bytes, for the
  pipeline's decode-and-crop); otherwise
  tensorflow-datasets' ``imagenet2012``, prepared from the manual-download
  tar files (`TfdsSource`; without the split's tar file, a `DataError` at
  once).
- ``"image_folder"``: a user's own images, ``data_dir/train/<class>/<image>``
  and, when present, ``data_dir/test/<class>/<image>``
  (`GenericImageFolderSource`). The classes are train/'s sorted folder
  names; images of any size in any format `tf.io.decode_image` reads (JPEG,
  PNG, GIF, BMP), grayscale and RGBA converted to RGB. Needs a ``data_dir``
  (or `DATA_DIR_ENV`).
- ``"synthetic"``: random images and labels made on the fly, for throughput
  benchmarks without data (`SyntheticSource`).

The three image-folder sources share one reader (`FolderTreeSource`): each
split is listed once, class by class in label order and by file name
within a class, and the training split is then put in a fixed
pseudo-random order (seed 0), so that its last records, the held-out
validation part, hold every class. A file that cannot be decoded stops
iteration naming it, or is skipped with ``skip_bad_images`` (files kept
encoded are checked without a full decode: see `_read_image_files`). Only
imagenet2012 keeps its images encoded (`DatasetInfo.encoded`); cifar10 and
image_folder trees yield decoded ``uint8 [H, W, 3]`` images, from which the
trainer computes the training set's mean and PCA, as for the binary
batches.

Every bad input that can be found without reading the data (unknown names,
missing folders or files, truncated record files) raises `DataError` when
the source is chosen or its `info`/`load` is called, with one line saying
what was found and what was expected.
"""

import dataclasses
import functools
import importlib.resources
import os
import pathlib
import random
import re
import shlex
import socket
import sys
import tarfile
import threading
import urllib.request

import numpy as np
import tensorflow as tf

__all__ = [
    "DATASETS",
    "DATA_DIR_ENV",
    "DataError",
    "DatasetInfo",
    "Source",
    "Cifar10BinarySource",
    "Cifar10SampleSource",
    "FolderTreeSource",
    "ImageFolderSource",
    "Cifar10FolderSource",
    "GenericImageFolderSource",
    "TfdsSource",
    "SyntheticSource",
    "source",
    "source_for",
    "dataset_info",
    "load_split",
]

from alexnet_tf import preprocessing  # noqa: E402
from alexnet_tf.choices import DATA_DIR_ENV, DATASETS, check_choice  # noqa: E402,F401  (re-exported)

SPLITS = {
    "cifar10": ("train", "test"),
    "cifar10_sample": ("train", "test"),
    "imagenet2012": ("train", "validation"),
    "synthetic": ("train", "test"),
    "image_folder": ("train", "test"),
}
# ImageNet's labelled held-out set is called "validation" (its test labels were
# never published); callers written for CIFAR's "test" still get the right split.
SPLIT_ALIASES = {"imagenet2012": {"test": "validation"}}

# Options each source understands. Passing another source's option with the
# value None is allowed, so that a caller can forward all of its flags to
# every source; a non-None value for an option the source does not use is an
# error rather than silently ignored.
SOURCE_OPTIONS = {
    "cifar10": ("tfds_data_dir", "tfds_manual_dir", "download", "skip_bad_images"),
    "cifar10_sample": (),
    "imagenet2012": ("tfds_data_dir", "tfds_manual_dir", "download", "skip_bad_images"),
    "synthetic": ("image_size", "num_classes", "num_examples", "seed"),
    "image_folder": ("skip_bad_images", "class_names"),
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

# ILSVRC-2012's 1000 classes are WordNet ids (wnids); a class's standard label is the wnid's
# position in their sorted list, the one tensorflow-datasets builds its own imagenet2012
# labels from (so a folder tree and tfds's prepared data label alike). The package ships that
# list with the readable names (a file in alexnet_tf/, copied once from tensorflow-datasets:
# its header says from where), rather than reading tfds's internal files at run time.
IMAGENET_CLASSES_FILE = "imagenet_classes.txt"
IMAGENET_NUM_CLASSES = 1000

# Image-folder trees: split -> the folder holding <class>/<image> (see FolderTreeSource).
IMAGENET_FOLDER_SPLITS = {"train": "train", "validation": "validation"}
CIFAR10_FOLDER_SPLITS = {"train": "train", "test": "test"}
IMAGE_FOLDER_SPLITS = {"train": "train", "test": "test"}
IMAGENET_MANUAL_FILES = ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar")
# The manual file tfds prepares each split from.
IMAGENET_MANUAL_SPLIT_FILES = dict(zip(SPLITS["imagenet2012"], IMAGENET_MANUAL_FILES))
# (host, port) tfds downloads cifar10 from (its builder's URL, www.cs.toronto.edu/~kriz/...).
# Offline, tfds retries for minutes before failing, so a TCP connection is tried first.
CIFAR10_DOWNLOAD_ADDRESS = ("www.cs.toronto.edu", 443)
DOWNLOAD_PROBE_TIMEOUT_S = 5.0
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
      encoded: True when ``load(..., decode=False)`` yields encoded
        (JPEG) bytes instead of decoded images.
    """

    name: str
    num_classes: int
    class_names: tuple[str, ...]
    split_sizes: dict[str, int]
    encoded: bool


# ---------------------------------------------------------------------------
# Choosing a source


def source(dataset, data_dir=None, **source_options):
    """Returns the `Source` that reads ``dataset`` as found in ``data_dir``.

    Names, options and folders are checked now (`DataError`); a
    tensorflow-datasets source is not prepared until its `Source.info` or
    `Source.load` is called.

    Args:
      dataset: one of `DATASETS`.
      data_dir: folder of the data; None (or "") reads the `DATA_DIR_ENV`
        environment variable, and if that is unset too, cifar10 and
        imagenet2012 come from tensorflow-datasets, and image_folder is an
        error. Ignored by cifar10_sample and synthetic.
      **source_options: per source (None values are ignored, so callers can
        forward every flag to every source; see `SOURCE_OPTIONS`):
        cifar10 and imagenet2012 through tfds: ``tfds_data_dir`` (where
        tfds keeps prepared data), ``tfds_manual_dir`` (tfds's manual
        download folder; for imagenet2012 it defaults to ``data_dir``),
        ``download`` (default True: let tfds download and prepare).
        Image-folder trees (imagenet2012, cifar10, image_folder):
        ``skip_bad_images`` (default False: a file that cannot be read or
        decoded stops iteration with a `tf.errors.InvalidArgumentError`
        naming it; True drops it and prints its path and the running count
        of skipped files to stderr; cifar10's binary batches and tfds have
        no image files and ignore it). Files that ``decode=False`` keeps
        encoded are checked without decoding a JPEG (`_check_encoded_image`:
        its header, and a file cut short); damage inside a JPEG's compressed
        data that this cannot see fails where the pipeline decodes it, with
        TensorFlow's message.
        synthetic: ``image_size`` (default 256, square images),
        ``num_classes`` (default 1000), ``num_examples`` (per split; default
        1281 for train and 128 for test), ``seed`` (default 0; same seed,
        same data).
    """
    check_choice("dataset", dataset, DATASETS, error=DataError)
    options = _check_options(dataset, source_options)
    if dataset == "synthetic":
        return SyntheticSource(**options)
    if dataset == "cifar10_sample":
        return Cifar10SampleSource()
    directory, origin = _resolve_data_dir(data_dir)
    skip_bad_images = bool(options.get("skip_bad_images"))
    if dataset == "image_folder":
        if directory is None:
            raise DataError(
                f"dataset 'image_folder' needs a data dir: pass --data_dir (data_dir=) or set "
                f"${DATA_DIR_ENV} to a folder holding train/<class>/<image> (and test/<class>/<image> "
                f"when there is a test set)."
            )
        return GenericImageFolderSource(
            directory, origin, skip_bad_images=skip_bad_images, class_names=options.get("class_names")
        )
    if dataset == "cifar10" and directory is not None:
        _check_folder(directory, "CIFAR-10", origin)
        if _is_cifar10_tree(directory):
            return Cifar10FolderSource(directory, skip_bad_images=skip_bad_images)
        return Cifar10BinarySource(directory, origin)
    if dataset == "imagenet2012" and directory is not None and _is_image_folder(directory, origin):
        return ImageFolderSource(directory, skip_bad_images=skip_bad_images)
    # skip_bad_images is accepted for cifar10 and imagenet2012 whichever way they are
    # read, and means nothing to tfds, which re-encodes the bad files when preparing.
    tfds_options = {name: value for name, value in options.items() if name != "skip_bad_images"}
    return TfdsSource(dataset, data_dir=directory, **tfds_options)


def source_for(config):
    """The `Source` a training run reads: ``config`` is a `TrainConfig` (dataset, data_dir, tfds_data_dir)."""
    # `or None`: an empty --tfds_data_dir means unset, as an empty --data_dir does.
    return source(config.dataset, config.data_dir, tfds_data_dir=config.tfds_data_dir or None)


def dataset_info(dataset, data_dir=None, **source_options):
    """``source(dataset, data_dir, **source_options).info()``: see `source` and `Source.info`."""
    return source(dataset, data_dir, **source_options).info()


def load_split(dataset, split, data_dir=None, *, decode=True, **source_options):
    """``source(dataset, data_dir, **source_options).load(split, decode)``: see `source` and `Source.load`."""
    return source(dataset, data_dir, **source_options).load(split, decode)


class Source:
    """One data set as found in one place: what `source` returns.

    Attributes:
      name: the dataset name, one of `DATASETS`.
      data_dir: the folder read, as a str, when it came from the user
        (``data_dir`` or `DATA_DIR_ENV`); None when the source reads no
        user-given folder. A run records it in its flags, so that it is
        reproducible whatever the environment.
      reads_files: False for the sources that ignore ``data_dir``
        (cifar10_sample, synthetic).

    Subclasses implement `_info` and `_load`, and `_labels` where the labels
    can be had without reading the images.
    """

    name = None
    # How the records are stored, which fixes their order, hence which ones a run holds
    # out: "binary_batches", "embedded_sample", "image_folder_tree", "tfds" or "synthetic"
    # (a run records it: `alexnet_tf.run.Run.record_data`).
    layout = None
    data_dir = None
    reads_files = True
    # Published training-set statistics to use instead of computing them (ImageNet's).
    published_stats = None
    _cached_info = None

    def info(self):
        """The `DatasetInfo` of this source.

        Computed on the first call and kept: for tfds it prepares the data,
        for an image folder it lists every file.
        """
        if self._cached_info is None:
            self._cached_info = self._info()
        return self._cached_info

    def load(self, split, decode=True):
        """Returns one split as an unbatched, unshuffled `tf.data.Dataset`.

        Elements are ``(image, label)``: ``image`` uint8 ``[H, W, 3]`` (RGB),
        ``label`` int64 ``[]``, in file order. A bad split name, or a split
        whose files are missing, raises `DataError` now; the records are read
        when the dataset is iterated.

        Args:
          split: one of ``SPLITS[name]``: "train" or "test" ("train" or
            "validation" for imagenet2012, where "test" is accepted as an
            alias of "validation", see `SPLIT_ALIASES`).
          decode: False makes JPEG-backed sources (imagenet2012, where
            `DatasetInfo.encoded` is True) yield the encoded file bytes
            (tf.string ``[]``) instead of the image, so that the pipeline
            can decode and crop in one step (`tf.io.decode_and_crop_jpeg`).
            Image-folder files are passed on as they are: check
            `tf.io.is_jpeg` before using a JPEG-only decoder (ImageNet's
            training set holds one PNG named ``.JPEG``). No effect on the
            other sources, which always yield decoded images.
        """
        return self._load(_canonical_split(self.name, split), decode)

    def labels(self, split):
        """The labels of a split, in `load` order, as an int64 numpy array; None where that is not cheap.

        Read without decoding any image: image-folder trees take them from
        their file list (None with ``skip_bad_images``, since which files
        fail is only known by decoding them), CIFAR-10 binary batches read
        each record's label byte. tensorflow-datasets and synthetic data
        return None. A bad split name, or a split whose files are missing,
        raises `DataError` as `load` does.
        """
        return self._labels(_canonical_split(self.name, split))

    def record_ids(self, split):
        """Which official CIFAR-10 record each example of a split is, in `load` order:
        (official file name, index in it) pairs; None where the source cannot tell.

        Two sources' ids compare, so that an evaluation can say when it scores
        images a run was trained on (the embedded sample and the shared subset
        are both cut from the official training batches).
        """
        return None

    def test_split(self):
        """The labelled held-out split to report a test error on, or None when it is absent here.

        "test", except for imagenet2012, whose test labels were never
        published: its "validation" split is the paper's test set.
        """
        split = _canonical_split(self.name, "test")
        return split if split in self.info().split_sizes else None

    def _info(self):
        raise NotImplementedError

    def _load(self, split, decode):
        """``split`` is already one of ``SPLITS[self.name]``."""
        raise NotImplementedError

    def _labels(self, split):
        """``split`` is already one of ``SPLITS[self.name]``; None: not available cheaply."""
        return None

    def __repr__(self):
        return f"{type(self).__name__}(name={self.name!r}, data_dir={self.data_dir!r})"


# ---------------------------------------------------------------------------
# Argument checks


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
        hint = _imagenet_archive_hint(folder) if what == "ImageNet" else _unpack_hint(folder)
        raise DataError(f"{what} folder {folder} (from {origin}) is a file, not a folder{hint}.")


def _imagenet_archive_hint(path):
    """For ImageNet's own tar given as a folder: its files are per-class tars, not a tree."""
    if path.name not in IMAGENET_MANUAL_FILES:
        return ""
    return (
        f": it is ImageNet's archive; pass the folder that holds it, --data_dir={path.parent} "
        f"(tensorflow-datasets prepares the data from the archives there), or a tree "
        f"train/<wnid>/<image> (and validation/<wnid>/<image>)"
    )


def _unpack_hint(path):
    """For a tar archive given as a folder (cifar-10-binary.tar.gz): how to unpack it and what to pass."""
    try:
        if not tarfile.is_tarfile(path):
            return ""
        with tarfile.open(path) as archive:
            first = archive.next()  # only the first member: the archive may be gigabytes
    except (OSError, tarfile.TarError):
        return ""
    name = first.name.removeprefix("./") if first is not None else ""
    if "/" in name or (first is not None and first.isdir()):
        made = path.parent / name.split("/")[0]
        how = f"tar xf {shlex.quote(str(path))} -C {shlex.quote(str(path.parent))}"
        return f": it is a tar archive; unpack it ({how}) and pass the folder it makes, {made}"
    # Its files are not inside a folder: unpacked beside it they would mix with other files.
    folder = path.parent / (path.name.split(".")[0] or "unpacked")
    how = f"mkdir {shlex.quote(str(folder))} && tar xf {shlex.quote(str(path))} -C {shlex.quote(str(folder))}"
    return f": it is a tar archive; unpack it into a new folder ({how}) and pass that folder"


# ---------------------------------------------------------------------------
# CIFAR-10 binary batches


class Cifar10BinarySource(Source):
    """CIFAR-10's binary batches in a folder, or in its ``cifar-10-batches-bin/``.

    The folder is scanned here, once: that reads only file sizes and the
    class names, and refuses a wrong folder before a run sets anything up.
    """

    layout = "binary_batches"

    name = "cifar10"

    def __init__(self, path, origin="data_dir"):
        self.data_dir = str(path)
        self._folder = _scan_cifar10_folder(pathlib.Path(path), origin)

    def _info(self):
        return DatasetInfo(
            name=self.name,
            num_classes=len(self._folder.class_names),
            class_names=self._folder.class_names,
            split_sizes=dict(self._folder.split_sizes),
            encoded=False,
        )

    def _load(self, split, decode):
        return _read_cifar10_split(self._folder, split)

    def _labels(self, split):
        # Each record's first byte, without reading the pixels into Python.
        return np.concatenate([
            np.memmap(file, np.uint8, mode="r").reshape(-1, CIFAR10_RECORD_BYTES)[:, 0].astype(np.int64)
            for file in _cifar10_split_files(self._folder, split)
        ])

    # The official file each of this folder's files holds the first records of: itself, for the
    # official download and the shared subset (each batch's first 1017 records).
    PROVENANCE = {}

    def record_ids(self, split):
        ids = []
        for file in _cifar10_split_files(self._folder, _canonical_split(self.name, split)):
            official = self.PROVENANCE.get(file.name, file.name)
            ids += [(official, index) for index in range(file.stat().st_size // CIFAR10_RECORD_BYTES)]
        return ids


class Cifar10SampleSource(Cifar10BinarySource):
    """The CIFAR-10 records shipped in `SAMPLE_CIFAR10_DIR`; ignores ``data_dir``."""

    layout = "embedded_sample"

    name = "cifar10_sample"
    reads_files = False
    # Where its records were cut from (sample_data/cifar10/README.md): its test images are
    # official *training* images, which a run on CIFAR-10's training batches may have seen.
    PROVENANCE = {"data_batch_1.bin": "data_batch_1.bin", CIFAR10_TEST_FILE: "data_batch_2.bin"}

    def __init__(self):
        super().__init__(SAMPLE_CIFAR10_DIR, "the embedded sample")
        # Part of the package, not a folder of the user's: a run has nothing to record.
        self.data_dir = None


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
        if not hint and any((path / folder_name).is_dir() for folder_name in CIFAR10_FOLDER_SPLITS.values()):
            hint = (
                " (nor an image-folder tree: train/ and test/ need one subfolder per class, "
                "train/<class>/<image>, named after the CIFAR-10 classes)"
            )
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


def _cifar10_split_files(folder, split):
    if split not in folder.split_files:
        needed = "data_batch_*.bin" if split == "train" else CIFAR10_TEST_FILE
        raise DataError(
            f"CIFAR-10 split {split!r} needs {needed}, which is missing from {folder.path}; "
            f"found {_describe_contents(folder.path)}."
        )
    return folder.split_files[split]


def _read_cifar10_split(folder, split):
    files = [str(file) for file in _cifar10_split_files(folder, split)]
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
# ImageNet's classes


@functools.cache
def _imagenet_classes():
    """(wnid, readable names) of each ILSVRC-2012 class, in standard label order, from the
    list the package ships (`IMAGENET_CLASSES_FILE`)."""
    try:
        text = importlib.resources.files(__package__).joinpath(IMAGENET_CLASSES_FILE).read_text(encoding="utf-8")
    except OSError as error:
        # A broken install, not the user's data: one line that says what to do.
        raise DataError(
            f"cannot read {IMAGENET_CLASSES_FILE}, the ImageNet class list alexnet_tf ships "
            f"({error.strerror or error}); reinstall alexnet_tf."
        ) from None
    classes = tuple(tuple(line.split("\t", 1)) for line in text.splitlines() if line and not line.startswith("#"))
    wnids = [entry[0] for entry in classes]
    if (
        len(classes) != IMAGENET_NUM_CLASSES
        or any(len(entry) != 2 or not _looks_like_wnid(entry[0]) for entry in classes)
        or wnids != sorted(set(wnids))
    ):
        raise DataError(
            f"{IMAGENET_CLASSES_FILE} should list the {IMAGENET_NUM_CLASSES} ILSVRC-2012 classes as "
            f"'wnid<TAB>names' lines in sorted wnid order, found {len(classes)} lines; reinstall alexnet_tf."
        )
    return classes


def imagenet_wnids():
    """The 1000 ILSVRC-2012 WordNet ids in standard label order: n01440764 (tench) is 0.

    Read from the list the package ships (`IMAGENET_CLASSES_FILE`), the same
    sorted order tensorflow-datasets' imagenet2012 builder labels by.
    """
    return tuple(wnid for wnid, _ in _imagenet_classes())


def _imagenet_descriptions():
    return dict(_imagenet_classes())


def class_descriptions(class_names):
    """The readable name of each class that is an ILSVRC-2012 WordNet id, e.g. "tench, Tinca
    tinca" for n01440764, and None for any other class name (CIFAR-10's are readable already)."""
    if not any(_looks_like_wnid(name) for name in class_names):
        return tuple(None for _ in class_names)  # nothing to look up: the class list stays unread
    descriptions = _imagenet_descriptions()
    return tuple(descriptions.get(name) for name in class_names)


def _looks_like_wnid(name):
    return re.fullmatch(r"n\d{8}", str(name)) is not None


# ---------------------------------------------------------------------------
# Image-folder trees: <split>/<class>/<image>, for imagenet2012, cifar10 and image_folder


class FolderTreeSource(Source):
    """An image-folder tree ``data_dir/<split folder>/<class>/<image>``: the shared reader.

    Subclasses fix the tree's layout and how it is read (class attributes)
    and pass the class list, in label order, to ``__init__``: a class's
    label is its position in that list, in every split. Each split is
    listed once (for `info`, `load` and `labels` alike): its class folders
    in label order, then the files in name order; the training split is
    then put in a fixed pseudo-random order (seed 0, the same on every
    machine), so that its last records, the held-out validation part (see
    `input_pipeline.split_holdout`), hold every class. Files are read (and
    decoded) by `_read_image_files`, which names a file that cannot be read
    or decoded, or skips it with ``skip_bad_images``.

    Class attributes:
      split_folders: split -> the folder holding it.
      kind: what the tree holds, for error messages ("ImageNet", ...).
      class_rule: how class folders must be named, for error messages.
      encoded: True: ``load(split, decode=False)`` yields the files' bytes
        (`DatasetInfo.encoded`); False: images are always decoded.
      cache_decoded: keep a split's decoded images in memory after their
        first full pass (`_cached_in_memory`); only for small images.
    """

    layout = "image_folder_tree"

    split_folders = {}
    kind = "image-folder"
    class_rule = "named as in train/"
    encoded = False
    cache_decoded = False

    def __init__(self, path, class_names, *, skip_bad_images=False):
        self.data_dir = str(path)
        self.skip_bad_images = bool(skip_bad_images)
        self._path = pathlib.Path(path)
        self._class_names = tuple(class_names)
        self._split_files = {}

    def _files(self, split):
        # ImageNet's train/ holds 1.28 million files: list each split once, for info() and load() both.
        if split not in self._split_files:
            self._split_files[split] = _image_folder_files(self, split)
        return self._split_files[split]

    def _info(self):
        split_sizes = {
            split: len(self._files(split)[0])
            for split, folder_name in self.split_folders.items()
            if (self._path / folder_name).is_dir()
        }
        return DatasetInfo(
            self.name, len(self._class_names), self._class_names, split_sizes, encoded=self.encoded
        )

    def _load(self, split, decode):
        paths, labels = self._files(split)
        dataset = _read_image_files(
            paths, labels, decode=decode or not self.encoded, skip_bad_images=self.skip_bad_images
        )
        if self.cache_decoded:
            dataset = _cached_in_memory(dataset, None if self.skip_bad_images else len(paths))
        return dataset

    def _labels(self, split):
        if self.skip_bad_images:
            return None  # which files fail to decode is only known by reading them
        return np.asarray(self._files(split)[1], np.int64)

    def _refuse_unknown_class_folders(self):
        """Raises `DataError` for a class folder not in the class list, in any split: for trees
        with a fixed class list, before a run sets anything up (this lists folders, not files)."""
        known = set(self._class_names)
        for folder_name in self.split_folders.values():
            split_dir = self._path / folder_name
            if split_dir.is_dir():
                unknown = [name for name in _class_folder_names(split_dir) if name not in known]
                if unknown:
                    raise DataError(self._unknown_classes_message(split_dir, unknown))

    def _unknown_classes_message(self, split_dir, unknown):
        """The error for class folders of ``split_dir`` that are not in the class list."""
        return (
            f"{split_dir} has class folder(s) not in train/: {_name_list(unknown)}; "
            f"labels come from train/'s {len(self._class_names)} classes."
        )


class ImageFolderSource(FolderTreeSource):
    """ImageNet as an image-folder tree: ``train/<wnid>/<image>``, ``validation/<wnid>/<image>``.

    Class folders are named by WordNet id, and a class's label is its
    standard ILSVRC-2012 index (`imagenet_wnids`: n01440764 is 0 … n15075141
    is 999) whichever folders a split holds, so a partial tree, or a
    validation/ with other classes than train/, keeps the labels of the full
    data set and `DatasetInfo` always lists all 1000 classes. A folder that
    is not an ILSVRC-2012 wnid is refused when the source is made. ``path``
    holds train/, validation/ or both (`source` checks that). The images
    stay encoded with ``decode=False`` (for the pipeline's decode-and-crop),
    checked as `_read_image_files` says, and are not cached.
    """

    name = "imagenet2012"
    split_folders = IMAGENET_FOLDER_SPLITS
    kind = "ImageNet"
    class_rule = "named by its ILSVRC-2012 WordNet id (e.g. n01440764)"
    encoded = True
    published_stats = preprocessing.IMAGENET_STATS

    def __init__(self, path, *, skip_bad_images=False):
        super().__init__(path, imagenet_wnids(), skip_bad_images=skip_bad_images)
        self._refuse_unknown_class_folders()

    def _unknown_classes_message(self, split_dir, unknown):
        return (
            f"{split_dir} has folder(s) that are not ILSVRC-2012 classes: {_name_list(unknown)}; class "
            f"folders must be named by WordNet id, one of the {IMAGENET_NUM_CLASSES} in alexnet_tf's "
            f"{IMAGENET_CLASSES_FILE} (n01440764 … n15075141; the label is the position in that list)."
        )


class Cifar10FolderSource(FolderTreeSource):
    """CIFAR-10 as an image-folder tree: ``train/<class>/<image>``, ``test/<class>/<image>``.

    Class folders are named after the CIFAR-10 classes, and a class's label
    is its index in the official order (`CIFAR10_CLASS_NAMES`: airplane 0 …
    truck 9), whichever folders are present, so a partial tree keeps the
    official labels and `DatasetInfo` always lists all ten classes. A folder
    with another name is refused when the source is made. Either split may
    be absent. Images are decoded (any size; grayscale and RGBA become RGB)
    and, being small (CIFAR-10's 50,000 32x32 images are about 150 MB), kept
    in memory after their first full pass: later epochs read no files.
    """

    name = "cifar10"
    split_folders = CIFAR10_FOLDER_SPLITS
    kind = "CIFAR-10"
    class_rule = f"named after a CIFAR-10 class ({', '.join(CIFAR10_CLASS_NAMES)})"
    cache_decoded = True

    def __init__(self, path, *, skip_bad_images=False):
        super().__init__(path, CIFAR10_CLASS_NAMES, skip_bad_images=skip_bad_images)
        self._refuse_unknown_class_folders()

    def _unknown_classes_message(self, split_dir, unknown):
        return (
            f"{split_dir} has folder(s) that are not CIFAR-10 classes: {_name_list(unknown)}; "
            f"class folders must be named {', '.join(CIFAR10_CLASS_NAMES)} (the label is the "
            f"position in that list)."
        )


class GenericImageFolderSource(FolderTreeSource):
    """A user's own images: ``train/<class>/<image>`` and, when present, ``test/<class>/<image>``.

    The classes are train/'s subfolders in sorted order, or ``class_names``
    when given (a trained run's, so that a tree holding only test/ can be
    scored with the run's labels); test/ may hold fewer of them. Images may
    have any size and any format that `tf.io.decode_image` reads (JPEG, PNG,
    GIF: its first frame, BMP); grayscale and RGBA images become RGB. With
    ``decode=False`` they stay encoded, as ImageNet's do, so that a shuffle
    buffer holds file bytes rather than full-size decoded photos; they are
    not cached. The trainer computes the training set's statistics from
    them, as for CIFAR-10.
    """

    name = "image_folder"
    split_folders = IMAGE_FOLDER_SPLITS
    kind = "image_folder"
    encoded = True

    def __init__(self, path, origin="data_dir", *, skip_bad_images=False, class_names=None):
        path = pathlib.Path(path)
        _check_folder(path, "image_folder data", origin)
        if class_names is None and not (path / "train").is_dir():
            raise DataError(
                f"{path} (from {origin}) has no train/ folder: dataset 'image_folder' reads "
                f"train/<class>/<image> (and test/<class>/<image> when present); "
                f"found {_describe_contents(path)}."
            )
        classes = _image_folder_classes(path) if class_names is None else tuple(class_names)
        super().__init__(path, classes, skip_bad_images=skip_bad_images)

    def _unknown_classes_message(self, split_dir, unknown):
        return (
            f"{split_dir} has class folder(s) that are not among the {len(self._class_names)} classes "
            f"({_name_list(list(self._class_names))}): {_name_list(unknown)}."
        )


def _is_image_folder(directory, origin):
    """True when ``directory`` is laid out as an ImageNet image-folder tree (train/, validation/
    or both: the labels do not depend on which classes a split holds).

    Raises `DataError` when ``directory`` is missing.
    """
    _check_folder(directory, "ImageNet", origin)
    return any((directory / folder_name).is_dir() for folder_name in IMAGENET_FOLDER_SPLITS.values())


def _is_cifar10_tree(directory):
    """True when ``directory`` holds train/<class>/ or test/<class>/ folders (not binary batches)."""
    return any(
        (directory / folder_name).is_dir() and _class_folder_names(directory / folder_name)
        for folder_name in CIFAR10_FOLDER_SPLITS.values()
    )


def _class_folder_names(folder):
    """The subfolders of ``folder`` (hidden ones left out), sorted."""
    return sorted(
        entry.name for entry in os.scandir(folder) if entry.is_dir() and not entry.name.startswith(".")
    )


def _name_list(names, limit=5):
    return f"{', '.join(names[:limit])}{' …' if len(names) > limit else ''}"


def _image_folder_classes(directory):
    train = directory / "train"
    classes = _class_folder_names(train)
    if not classes:
        raise DataError(
            f"{train} has no class subfolders (expected train/<class>/<image>); "
            f"found {_describe_contents(train)}."
        )
    return tuple(classes)


def _image_folder_files(tree, split):
    """File paths and labels of a split of ``tree`` (a `FolderTreeSource`).

    Test/validation: class order, then file-name order. Train: that list in a fixed
    pseudo-random order (seed 0, the same on every machine), because a
    class-sorted training split would put whole classes into the held-out
    validation part (its last records) and leave a shuffle buffer only a few
    classes to mix.
    """
    directory = tree._path
    split_dir = directory / tree.split_folders[split]
    if not split_dir.is_dir():
        raise DataError(
            f"{tree.kind} split {split!r} needs the folder {split_dir}, which is missing; "
            f"{directory} contains {_describe_contents(directory)}."
        )
    entries = list(os.scandir(split_dir))
    loose_images = [e.name for e in entries if e.is_file() and e.name.lower().endswith(IMAGE_EXTENSIONS)]
    if loose_images:
        # The official ImageNet validation tar is flat; its labels are in the devkit.
        raise DataError(
            f"{split_dir} holds images directly (e.g. {sorted(loose_images)[0]}); expected one "
            f"subfolder per class ({split_dir.name}/<class>/<image>), {tree.class_rule}."
        )
    label_of = {name: label for label, name in enumerate(tree._class_names)}
    # Label order: the class list's, whatever the folder names' sorted order.
    split_classes = sorted(_class_folder_names(split_dir), key=lambda name: label_of.get(name, -1))
    unknown = [name for name in split_classes if name not in label_of]
    if unknown:
        raise DataError(tree._unknown_classes_message(split_dir, unknown))
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


def _cached_in_memory(dataset, count):
    """``dataset`` kept in memory after one full pass, in the same order.

    A plain ``dataset.cache()`` is only kept when one iterator reads it to
    the end; `input_pipeline.split_holdout` takes the first records of a
    split (``take``), and a partly read cache is thrown away, so epochs
    would keep reading files. Here the first element is yielded only after
    a full pass has filled the cache (a filter that keeps nothing), and
    every element comes from the filled cache. The filling pass costs each
    later pass a scan of the cached labels (about 0.1 s for CIFAR-10's
    50,000; batched, as filtering each element would take ten times
    longer). ``count``: the number of elements, when it is known exactly.
    """
    cached = dataset.cache()
    filled = (
        cached.map(lambda image, label: label)
        .batch(1024)
        .filter(lambda labels: tf.constant(False))
        # Never called (nothing passes the filter): gives the elements' structure, for concatenate.
        .map(lambda labels: (tf.zeros([0, 0, 3], tf.uint8), tf.constant(0, tf.int64)))
    )
    dataset = filled.concatenate(cached)
    if count is not None:
        dataset = dataset.apply(tf.data.experimental.assert_cardinality(count))
    return dataset


def _read_image_files(paths, labels, *, decode, skip_bad_images):
    """Reads (and decodes) image files, naming any file that cannot be read.

    A failing decode op does not say which file it was given, so each element
    carries its index: failed elements are dropped with `ignore_errors`, and a
    scan over the survivors sees the gap in the indices and either fails with
    the missing file's path (the default) or prints it and counts it
    (``skip_bad_images``). A sentinel element after the last file makes a
    failure of the last file visible too.

    Files kept encoded (``decode=False``) are decoded later, in the input
    pipeline, after shuffling, where a failure could no longer be traced to
    its file; they are checked here instead (`_check_encoded_image`).
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
            image = _check_encoded_image(contents)
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


def _check_encoded_image(contents):
    """``contents`` once checked that the input pipeline can decode them, without decoding a JPEG.

    A JPEG's header is parsed (`tf.image.extract_jpeg_shape`, through the
    start of its first scan: a damaged header, or a file cut short before
    its pixels, fails there), and the file must hold an end-of-image marker
    after its first scan starts: a file cut short (the usual damage, from an
    interrupted copy) has none, since compressed data never holds those two
    bytes. Decoding it would cost as much as the pipeline's own decode, the
    slowest step of ImageNet training. Other formats (the odd PNG among
    ImageNet's JPEGs) are decoded. A failed check is an op error, which the
    caller turns into the file's name.
    """

    def jpeg_header_parses():
        return tf.reduce_all(tf.image.extract_jpeg_shape(contents) > 0)

    def slow_check():
        def other_format_decodes():
            return tf.size(tf.io.decode_image(contents, channels=3, expand_animations=False)) > 0

        def jpeg_is_complete():
            return jpeg_header_parses() & _jpeg_ends_after_first_scan(contents)

        return tf.cond(tf.io.is_jpeg(contents), jpeg_is_complete, other_format_decodes)

    # One cond on the common path (a JPEG that ends with its marker): in a tf.data function each
    # cond is a function call of its own.
    common = tf.io.is_jpeg(contents) & _has_jpeg_end_marker(_tail_bytes(contents, JPEG_TAIL_BYTES))
    decodable = tf.cond(common, jpeg_header_parses, slow_check)
    check = tf.debugging.Assert(decodable, ["JPEG file cut short (no end-of-image marker after its first scan)"])
    with tf.control_dependencies([check]):
        return tf.identity(contents)


JPEG_END_OF_IMAGE = (0xFF, 0xD9)
JPEG_START_OF_SCAN = 0xDA
# Most files end with their end-of-image marker, maybe a few padding bytes after it.
JPEG_TAIL_BYTES = 64


def _tail_bytes(contents, count):
    start = tf.maximum(tf.strings.length(contents) - count, 0)
    return tf.io.decode_raw(tf.strings.substr(contents, start, count), tf.uint8)


def _has_jpeg_end_marker(data):
    return tf.reduce_any(tf.logical_and(data[:-1] == JPEG_END_OF_IMAGE[0], data[1:] == JPEG_END_OF_IMAGE[1]))


def _jpeg_ends_after_first_scan(contents):
    """Whether a JPEG holds an end-of-image marker after its first scan starts.

    For the files that do not end with one (data appended after the image,
    or a file cut short): the marker segments are walked to the first
    start-of-scan and the marker looked for after it (an earlier one may end
    a thumbnail in the EXIF header).
    """
    data = tf.cast(tf.io.decode_raw(contents, tf.uint8), tf.int32)
    end = tf.size(data)

    def walking(position, scan_found, lost):
        return tf.logical_not(scan_found | lost) & (position + 4 <= end)

    def next_segment(position, scan_found, lost):
        marker = data[position + 1]
        fill = marker == 0xFF  # fill bytes may precede a marker
        scan_found = marker == JPEG_START_OF_SCAN
        length = data[position + 2] * 256 + data[position + 3]
        step = tf.where(fill, 1, tf.where(scan_found, 0, 2 + length))
        # Bytes between segments (libjpeg skips them with a warning): the walk cannot follow.
        return position + step, scan_found, data[position] != 0xFF

    position, scan_found, lost = tf.while_loop(
        walking, next_segment, [tf.constant(2), tf.constant(False), tf.constant(False)]
    )
    # A walk that lost its way judges nothing (libjpeg parsed the header); no scan: cut short.
    return lost | (scan_found & _has_jpeg_end_marker(tf.cast(data[position:], tf.uint8)))


# ---------------------------------------------------------------------------
# tensorflow-datasets


class TfdsSource(Source):
    """cifar10 or imagenet2012 through tensorflow-datasets.

    tfds downloads and prepares cifar10 on first use. imagenet2012 it can
    only prepare from the manual-download tar files (`IMAGENET_MANUAL_FILES`),
    which it looks for in ``tfds_manual_dir``, else in ``data_dir``; a given
    ``data_dir`` is kept as this source's `data_dir`, so that a run records
    it. Nothing is imported or prepared before `info` or `load`:
    tensorflow_datasets takes seconds to import.

    Before tfds prepares anything, what it needs is checked: for cifar10 a
    TCP connection to `CIFAR10_DOWNLOAD_ADDRESS`, for imagenet2012 the
    split's tar file (`IMAGENET_MANUAL_SPLIT_FILES`). Without it, `load`
    raises `DataError` at once, and tfds creates nothing in its data dir
    (it would otherwise retry the download for minutes, or leave the
    dataset's folder behind).
    """

    layout = "tfds"

    def __init__(self, name, *, data_dir=None, tfds_data_dir=None, tfds_manual_dir=None, download=True):
        check_choice("tensorflow-datasets dataset", name, ("cifar10", "imagenet2012"), error=DataError)
        self.name = name
        self.data_dir = str(data_dir) if data_dir is not None else None
        self.tfds_data_dir = tfds_data_dir
        self.download = download
        # tfds downloads cifar10 itself: a manual folder means nothing to it.
        self.manual_dir = (tfds_manual_dir or self.data_dir) if name == "imagenet2012" else None
        # tfds stores ImageNet as JPEG (it re-encodes the few PNG and CMYK files), CIFAR-10 as PNG.
        self._encoded = name == "imagenet2012"
        self.published_stats = preprocessing.IMAGENET_STATS if name == "imagenet2012" else None

    def _info(self):
        import tensorflow_datasets as tfds

        split_sizes = {}
        for split in SPLITS[self.name]:
            dataset = self._load(split, decode=True)
            size = int(dataset.cardinality())
            if size < 0:  # unknown to tf.data: count (tfds normally records it)
                size = int(dataset.reduce(tf.constant(0, tf.int64), lambda n, _: n + 1))
            split_sizes[split] = size
        builder = tfds.builder(self.name, data_dir=self.tfds_data_dir)
        class_names = tuple(builder.info.features["label"].names)
        return DatasetInfo(self.name, len(class_names), class_names, split_sizes, encoded=self._encoded)

    def _load(self, split, decode):
        import tensorflow_datasets as tfds

        load_kwargs = {}
        if self.manual_dir:
            load_kwargs["download_and_prepare_kwargs"] = {
                "download_config": tfds.download.DownloadConfig(manual_dir=self.manual_dir)
            }
        if not decode and self._encoded:
            load_kwargs["decoders"] = {"image": tfds.decode.SkipDecoding()}
        if self.download:
            self._check_can_prepare(tfds, split)
        try:
            return tfds.load(
                self.name,
                split=split,
                as_supervised=True,
                shuffle_files=False,
                data_dir=self.tfds_data_dir,
                download=self.download,
                **load_kwargs,
            )
        except Exception as err:  # tfds raises many types (AssertionError, OSError, ImportError, ...)
            cause = (str(err).strip().splitlines() or [""])[0][:300]
            raise DataError(self._failure_message(f"{type(err).__name__}: {cause}")) from err

    def _check_can_prepare(self, tfds, split):
        """Raises `DataError` before tfds prepares the data where it cannot (see the class)."""
        try:
            builder = tfds.builder(self.name, data_dir=self.tfds_data_dir)
            if builder.is_prepared():
                return
        except Exception:  # the load reports problems properly
            return
        if self.name == "imagenet2012":
            # tfds's own default, where it looks without a manual dir.
            manual_dir = pathlib.Path(self.manual_dir or builder.data_dir_root / "downloads" / "manual")
            needed = IMAGENET_MANUAL_SPLIT_FILES[split]
            if not (manual_dir / needed).is_file():
                missing_from = "" if self.manual_dir else f", missing from {manual_dir}"
                raise DataError(self._failure_message(f"it prepares split {split!r} from {needed}{missing_from}"))
            return
        host, port = CIFAR10_DOWNLOAD_ADDRESS
        # Behind an HTTPS proxy a direct connection may fail where tfds's download would not.
        proxied = "https" in urllib.request.getproxies()
        unreachable = None if proxied else _connection_error(CIFAR10_DOWNLOAD_ADDRESS)
        if unreachable:
            raise DataError(self._failure_message(f"cannot reach {host}:{port} to download it: {unreachable}"))
        print(
            f"Downloading and preparing {self.name} with tensorflow-datasets (or point --data_dir or "
            f"${DATA_DIR_ENV} at a folder of CIFAR-10 binary batches).",
            file=sys.stderr,
            flush=True,
        )

    def _failure_message(self, cause):
        where = self.tfds_data_dir or "its default data dir"
        said = f"tensorflow-datasets could not load {self.name} from {where} ({cause})"
        if self.name == "cifar10":
            return (
                f"{said}; without network access, point --data_dir or ${DATA_DIR_ENV} at a folder of "
                f"CIFAR-10 binary batches (data_batch_1.bin … data_batch_5.bin, {CIFAR10_TEST_FILE})."
            )
        # imagenet2012: tfds cannot download it; it prepares from the manual tar files.
        if self.manual_dir is None:
            manual = "no manual dir was given (data_dir or tfds_manual_dir)"
        else:
            present = [f for f in IMAGENET_MANUAL_FILES if (pathlib.Path(self.manual_dir) / f).is_file()]
            missing = [f for f in IMAGENET_MANUAL_FILES if f not in present]
            manual = (
                f"the manual dir {self.manual_dir} lacks {', '.join(missing)} "
                f"(found {_describe_contents(self.manual_dir)})"
                if missing
                else f"the manual dir {self.manual_dir} has {', '.join(present)}"
            )
        return (
            f"{said}; {manual}. Point --data_dir or ${DATA_DIR_ENV} at an image folder "
            f"(train/<class>/<image>, validation/<class>/<image>) or at a folder holding "
            f"{' and '.join(IMAGENET_MANUAL_FILES)}."
        )


def _connection_error(address):
    """None when a TCP connection to ``address`` (host, port) opens within
    `DOWNLOAD_PROBE_TIMEOUT_S` seconds, else why not, in words."""
    outcome = []

    def connect():
        try:
            socket.create_connection(address, timeout=DOWNLOAD_PROBE_TIMEOUT_S).close()
            outcome.append(None)
        except OSError as error:
            outcome.append(str(error) or type(error).__name__)

    # In a thread, because the host-name lookup inside create_connection ignores the timeout.
    probe = threading.Thread(target=connect, daemon=True)
    probe.start()
    probe.join(DOWNLOAD_PROBE_TIMEOUT_S)
    return outcome[0] if outcome else f"no answer within {DOWNLOAD_PROBE_TIMEOUT_S:g} s"


# ---------------------------------------------------------------------------
# Synthetic data


class SyntheticSource(Source):
    """Random images and labels made on the fly; ignores ``data_dir``.

    The same settings give the same data, whatever the pipeline's
    parallelism or order (see `source` for the settings and their defaults).
    """

    layout = "synthetic"

    name = "synthetic"
    reads_files = False

    def __init__(
        self,
        *,
        image_size=SYNTHETIC_DEFAULTS["image_size"],
        num_classes=SYNTHETIC_DEFAULTS["num_classes"],
        num_examples=None,
        seed=SYNTHETIC_DEFAULTS["seed"],
    ):
        for key, value in (("image_size", image_size), ("num_classes", num_classes)):
            if not isinstance(value, int) or value < 1:
                raise DataError(f"synthetic {key}={value!r} must be a positive integer.")
        per_split = dict(SYNTHETIC_DEFAULTS["num_examples"]) if num_examples is None else num_examples
        if isinstance(per_split, int):
            per_split = {split: per_split for split in SPLITS["synthetic"]}
        if not all(isinstance(n, int) and n >= 1 for n in per_split.values()):
            raise DataError(f"synthetic num_examples={num_examples!r} must be a positive integer.")
        if not isinstance(seed, int):
            raise DataError(f"synthetic seed={seed!r} must be an integer.")
        self.image_size = image_size
        self.num_classes = num_classes
        self.num_examples = per_split
        self.seed = seed

    def _info(self):
        return DatasetInfo(
            name=self.name,
            num_classes=self.num_classes,
            class_names=tuple(f"class_{i}" for i in range(self.num_classes)),
            split_sizes={split: self.num_examples[split] for split in SPLITS[self.name]},
            encoded=False,
        )

    def _load(self, split, decode):
        return _synthetic_split(split, self.image_size, self.num_classes, self.num_examples[split], self.seed)


def _synthetic_split(split, size, num_classes, count, seed):
    num_pixels = size * size * 3
    num_words = -(-num_pixels // 4)  # random uint32 words, four pixel bytes each
    # Different splits get different streams; each example its own seed, so
    # the data is the same whatever the pipeline's parallelism or order.
    split_seed = tf.constant([seed, SPLITS["synthetic"].index(split)], tf.int64)

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
            [], seed=label_seed, minval=0, maxval=num_classes, dtype=tf.int64
        )
        return tf.reshape(pixels, [size, size, 3]), label

    return tf.data.Dataset.range(count).map(make_example, num_parallel_calls=tf.data.AUTOTUNE)
