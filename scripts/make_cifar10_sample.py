"""Builds the embedded CIFAR-10 sample (`alexnet_tf/sample_data/cifar10/`).

    python scripts/make_cifar10_sample.py --source ../shared/data/cifar10-subset \\
        --out alexnet_tf/sample_data/cifar10

Copies whole 3073-byte records, unchanged, from a folder of CIFAR-10 binary
batches: the first 1000 records of ``data_batch_1.bin`` become the sample's
``data_batch_1.bin`` (train) and the first 200 records of
``data_batch_2.bin`` its ``test_batch.bin`` (test). Taking the two from
different official batches keeps them disjoint. Also copies
``batches.meta.txt`` and writes a README.md with the provenance and the
SHA-256 of each file, so a regenerated sample can be compared with the
committed one.
"""

import argparse
import hashlib
import pathlib
import sys

RECORD_BYTES = 3073  # 1 label byte + 32 * 32 * 3 pixel bytes
TRAIN_SOURCE, TRAIN_OUT = "data_batch_1.bin", "data_batch_1.bin"
TEST_SOURCE, TEST_OUT = "data_batch_2.bin", "test_batch.bin"
META_FILE = "batches.meta.txt"
# The sample is committed to git and shipped in the package; keep it small.
MAX_TOTAL_BYTES = 4_000_000


def copy_records(source, out, count):
    """Writes the first ``count`` records of ``source`` to ``out``; returns their label counts."""
    size = source.stat().st_size
    if size % RECORD_BYTES:
        sys.exit(f"{source} is {size} bytes, not a whole number of {RECORD_BYTES}-byte records.")
    if size < count * RECORD_BYTES:
        sys.exit(f"{source} has {size // RECORD_BYTES} records; {count} are needed.")
    with open(source, "rb") as f:
        data = f.read(count * RECORD_BYTES)
    out.write_bytes(data)
    labels = data[::RECORD_BYTES]
    return [labels.count(label) for label in range(10)]


def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


README = """\
# Embedded CIFAR-10 sample

Real CIFAR-10 images (Krizhevsky, 2009, <https://www.cs.toronto.edu/~kriz/cifar.html>),
small enough to ship with the package, so that training, evaluation and
the tests run on a fresh clone without a download. Read it with
`alexnet_tf.data.load_split("cifar10_sample", "train" | "test")`.

Layout: the official binary format of `cifar-10-binary.tar.gz` (records of
{record_bytes} bytes: one label byte 0-9, then the 1024 red, 1024 green and
1024 blue pixel values, each plane row-major 32x32).

| file | records | taken from | class counts (labels 0-9) | SHA-256 |
|---|---|---|---|---|
| `{train_out}` (train) | {train_count} | the first {train_count} records of the official `{train_source}` | {train_classes} | `{train_sha}` |
| `{test_out}` (test) | {test_count} | the first {test_count} records of the official `{test_source}` | {test_classes} | `{test_sha}` |
| `{meta}` | | copied | | `{meta_sha}` |

The two splits come from different official training batches, so no image
is in both. The test split is *not* drawn from the official test batch
(the shared subset this was cut from has none); use it for smoke tests and
plumbing, not for numbers to compare with published CIFAR-10 results.

Regenerate (byte-identical, the checksums above must match) from a folder of
CIFAR-10 binary batches, for example the shared subset:

    python scripts/make_cifar10_sample.py --source ../shared/data/cifar10-subset \\
        --out alexnet_tf/sample_data/cifar10
"""


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", required=True, type=pathlib.Path,
                        help="folder with CIFAR-10 binary batches (data_batch_1.bin, data_batch_2.bin, batches.meta.txt)")
    parser.add_argument("--out", required=True, type=pathlib.Path, help="folder to write the sample to")
    parser.add_argument("--train_records", type=int, default=1000)
    parser.add_argument("--test_records", type=int, default=200)
    args = parser.parse_args(argv)

    for name in (TRAIN_SOURCE, TEST_SOURCE, META_FILE):
        if not (args.source / name).is_file():
            sys.exit(f"{args.source / name} is missing; --source must be a folder of CIFAR-10 binary batches.")
    args.out.mkdir(parents=True, exist_ok=True)
    train_classes = copy_records(args.source / TRAIN_SOURCE, args.out / TRAIN_OUT, args.train_records)
    test_classes = copy_records(args.source / TEST_SOURCE, args.out / TEST_OUT, args.test_records)
    (args.out / META_FILE).write_bytes((args.source / META_FILE).read_bytes())

    total = sum((args.out / name).stat().st_size for name in (TRAIN_OUT, TEST_OUT, META_FILE))
    if total > MAX_TOTAL_BYTES:
        sys.exit(f"the sample is {total} bytes, over the {MAX_TOTAL_BYTES}-byte budget; ask for fewer records.")
    (args.out / "README.md").write_text(
        README.format(
            record_bytes=RECORD_BYTES,
            train_out=TRAIN_OUT,
            train_source=TRAIN_SOURCE,
            train_count=args.train_records,
            train_classes=" ".join(map(str, train_classes)),
            train_sha=sha256(args.out / TRAIN_OUT),
            test_out=TEST_OUT,
            test_source=TEST_SOURCE,
            test_count=args.test_records,
            test_classes=" ".join(map(str, test_classes)),
            test_sha=sha256(args.out / TEST_OUT),
            meta=META_FILE,
            meta_sha=sha256(args.out / META_FILE),
        )
    )
    print(f"wrote {args.train_records} train and {args.test_records} test records ({total} bytes) to {args.out}")


if __name__ == "__main__":
    main()
