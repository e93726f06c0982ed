"""Entry points refuse bad input with one line, the right exit status and no traceback,
never touch an existing run when they refuse, and reproduce runs exactly."""

import concurrent.futures
import hashlib
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import tarfile
import time

import h5py
import numpy as np
import pytest
import tensorflow as tf
from absl import flags

from alexnet_tf import callbacks, config, data
from alexnet_tf.run import Run

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
USAGE, DATA = 2, 1
TINY = ["--batch_size=8", "--image_size=64", "--steps_per_epoch=2", "--stats_images=16", "--epochs=1"]


def run_module(module, *args, cwd=REPO_ROOT):
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    environment.pop("ALEXNET_TF_DATA_DIR", None)
    return subprocess.run(
        [sys.executable, "-m", f"alexnet_tf.{module}", *map(str, args)],
        cwd=cwd, env=environment, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def error_lines(stderr):
    return [line for line in stderr.splitlines() if line.startswith(("error:", "stopped:"))]


@pytest.fixture(scope="module")
def bad_data(tmp_path_factory):
    """Folders of broken data, one per case."""
    root = tmp_path_factory.mktemp("bad_data")
    sample = data.SAMPLE_CIFAR10_DIR
    (root / "empty").mkdir()
    (root / "layout").mkdir()
    (root / "layout" / "images.txt").write_text("not CIFAR\n")
    truncated = root / "truncated"
    truncated.mkdir()
    (truncated / "data_batch_1.bin").write_bytes((sample / "data_batch_1.bin").read_bytes()[: 3073 * 10 + 100])
    corrupt = root / "corrupt"
    corrupt.mkdir()
    records = bytearray((sample / "data_batch_1.bin").read_bytes()[: 3073 * 40])
    for index in range(40):
        records[index * 3073] = 200  # label byte: not one of the 10 classes
    (corrupt / "data_batch_1.bin").write_bytes(bytes(records))
    shutil.copy(sample / "batches.meta.txt", corrupt)
    images = root / "imagenet"
    for split in ("train", "validation"):
        for label in ("n01440764", "n01443537"):  # ILSVRC-2012 classes 0 and 1
            folder = images / split / label
            folder.mkdir(parents=True)
            for index in range(6):
                pixels = np.random.default_rng(index).integers(0, 255, (40, 40, 3), np.uint8)
                (folder / f"{index}.JPEG").write_bytes(tf.io.encode_jpeg(pixels).numpy())
    for path in sorted(images.glob("train/*/*.JPEG")):
        path.write_bytes(b"not a jpeg")  # every training image undecodable
    (root / "a_file").write_text("an experiments dir cannot live here\n")
    return root


TRAIN_CASES = {
    "unknown dataset": (["--dataset=mnist"], USAGE, "dataset"),
    "unknown norm": (["--norm=layernorm"], USAGE, "norm"),
    "unknown towers": (["--towers=3"], USAGE, "towers"),
    "unknown activation": (["--activation=gelu"], USAGE, "activation"),
    "zero epochs": (["--epochs=0"], USAGE, "epochs"),
    "image too small for alexnet": (["--image_size=32"], USAGE, "--image_size must be at least 63 for --model=alexnet"),
    "negative batch": (["--batch_size=-4"], USAGE, "batch_size"),
    "stray argument": (["extra"], USAGE, "unexpected arguments"),
    "batch not divisible by replicas": (["--batch_size=9", "--cpu_replicas=2"], USAGE, "does not divide by the 2 replicas"),
    "missing data dir": (["--dataset=cifar10", "--data_dir={bad}/missing"], DATA, "does not exist"),
    "empty data dir": (["--dataset=cifar10", "--data_dir={bad}/empty"], DATA, "no CIFAR-10 binary batches"),
    "wrong layout": (["--dataset=cifar10", "--data_dir={bad}/layout"], DATA, "found images.txt"),
    "truncated records": (["--dataset=cifar10", "--data_dir={bad}/truncated"], DATA, "not a whole number of 3073-byte"),
    "corrupt labels": (["--dataset=cifar10", "--data_dir={bad}/corrupt", "--validation_fraction=0"], DATA, "label"),
    "undecodable images": (["--dataset=imagenet2012", "--data_dir={bad}/imagenet"], DATA, "JPEG"),
    "experiments dir not writable": (["--experiments_dir={bad}/a_file"], DATA, "choose a writable --experiments_dir"),
}


@pytest.fixture(scope="module")
def train_refusals(bad_data, tmp_path_factory):
    """Every TRAIN_CASES command, run as its own process, three at a time (most wait on start-up)."""

    def attempt(case):
        args = [a.format(bad=bad_data) for a in TRAIN_CASES[case][0]]
        if not any(a.startswith("--experiments_dir") for a in args):
            args.append(f"--experiments_dir={tmp_path_factory.mktemp('experiments')}")
        return case, run_module("train", *TINY, *args)

    with concurrent.futures.ThreadPoolExecutor(max_workers=3) as pool:
        return dict(pool.map(attempt, sorted(TRAIN_CASES)))


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(TRAIN_CASES))
def test_train_refuses_bad_input_in_one_line(case, train_refusals):
    _, code, message = TRAIN_CASES[case]
    result = train_refusals[case]
    assert result.returncode == code, result.stderr[-2000:]
    lines = error_lines(result.stderr)
    assert len(lines) == 1 and message in lines[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr


def test_verbose_shows_the_traceback(tmp_path):
    result = run_module("train", "--dataset=cifar10", f"--data_dir={tmp_path}/missing", "--verbose")
    assert result.returncode != 0 and "Traceback" in result.stderr


def file_fingerprints(directory):
    return {
        str(path.relative_to(directory)): (path.stat().st_mtime_ns, hashlib.sha256(path.read_bytes()).hexdigest())
        for path in sorted(pathlib.Path(directory).rglob("*"))
        if path.is_file()
    }


@pytest.mark.slow
def test_refused_commands_leave_an_existing_run_untouched(run_dir, tmp_path):
    experiments = tmp_path / "experiments"
    shutil.copytree(run_dir.parent.parent, experiments)
    before = file_fingerprints(experiments)
    finished = run_module("train", f"--experiments_dir={experiments}", "--experiment=t", "--run=run1", *TINY)
    assert finished.returncode == USAGE and "already finished" in error_lines(finished.stderr)[0]
    bad_flag = run_module("train", f"--experiments_dir={experiments}", "--experiment=t", "--norm=bad")
    assert bad_flag.returncode == USAGE
    evaluate = run_module("evaluate", f"--checkpoint={experiments}/t/run1", "--dataset=imagenet2012")
    assert evaluate.returncode in (USAGE, DATA) and len(error_lines(evaluate.stderr)) == 1
    assert file_fingerprints(experiments) == before


@pytest.mark.parametrize(
    "args,code,message",
    [
        (["--checkpoint={tmp}/nowhere"], DATA, "does not exist"),
        (["--checkpoint={run}/flags.txt"], USAGE, "is not a checkpoint"),
        (["--checkpoint={run}", "--dataset=synthetic"], USAGE, "1000 classes"),
        (["--checkpoint={run}", "--batch_size=0"], USAGE, "batch_size"),
    ],
)
def test_evaluate_refuses_bad_input_in_one_line(args, code, message, run_dir, tmp_path):
    result = run_module("evaluate", *[a.format(tmp=tmp_path, run=run_dir) for a in args])
    assert result.returncode == code, result.stderr[-2000:]
    lines = error_lines(result.stderr)
    assert len(lines) == 1 and message in lines[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "args,code,message",
    [
        (["--batch_size=0"], USAGE, "--batch_size must be a positive integer"),
        (["--norms=lrn,foo"], USAGE, "--norms must list distinct values"),
        (["--dataset=cifar10", "--data_dir={tmp}/missing"], DATA, "does not exist"),
    ],
)
def test_bench_refuses_bad_input_in_one_line(args, code, message, tmp_path):
    result = run_module("bench", *[a.format(tmp=tmp_path) for a in args])
    assert result.returncode == code, result.stderr[-2000:]
    lines = error_lines(result.stderr)
    assert len(lines) == 1 and message in lines[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr


def test_predict_refuses_a_missing_image_in_one_line(run_dir, tmp_path):
    result = run_module("predict", f"--checkpoint={run_dir}", tmp_path / "no.jpg")
    assert result.returncode == DATA and "no.jpg" in error_lines(result.stderr)[0]
    assert "Traceback" not in result.stderr


def weights_of(path):
    values = []
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, item: values.append((name, item[()])) if isinstance(item, h5py.Dataset) else None)
    return values


@pytest.mark.slow
def test_deterministic_runs_and_their_recorded_flags_reproduce_bit_for_bit(tmp_path):
    args = [f"--experiments_dir={tmp_path}", "--experiment=det", "--seed=3", "--deterministic", *TINY]
    first = run_module("train", *args)
    assert first.returncode == 0, first.stderr[-2000:]
    run1 = tmp_path / "det" / "run1"
    # A second process from the run's own flagfile (a new run, run2): the same weights to the bit
    # shows both that the run is deterministic and that its recorded flags are complete.
    second = run_module("train", f"--flagfile={run1 / 'flags.txt'}")
    assert second.returncode == 0, second.stderr[-2000:]
    reference = weights_of(run1 / "checkpoints" / "latest.weights.h5")
    assert len(reference) > 10
    repeated = weights_of(tmp_path / "det" / "run2" / "checkpoints" / "latest.weights.h5")
    assert [name for name, _ in repeated] == [name for name, _ in reference]
    for (name, a), (_, b) in zip(reference, repeated):
        np.testing.assert_array_equal(a, b, err_msg=name)


@pytest.mark.slow
def test_a_non_finite_loss_stops_the_run_with_a_clear_message(tmp_path):
    result = run_module("train", f"--experiments_dir={tmp_path}", "--learning_rate=1e30", *TINY)
    assert result.returncode == DATA, result.stderr[-2000:]
    line = error_lines(result.stderr)[0]
    assert "the loss became" in line and "Lower --learning_rate" in line
    assert not (tmp_path / "default" / "run1" / "results.json").exists()


def test_non_finite_loss_message_names_the_state_that_is_kept(tmp_path):
    run = Run(tmp_path)
    (run.resume_dir / "epoch-0003").mkdir(parents=True)
    (run.resume_dir / "epoch-0003" / "meta.json").write_text('{"epoch": 3}')
    stopper = callbacks.StopOnNonFiniteLoss(run)
    stopper.on_epoch_begin(3)
    stopper.on_train_batch_end(0, {"loss": 2.3})  # finite: nothing happens
    with pytest.raises(FloatingPointError, match=r"at epoch 4, step 6; .*last good state \(epoch 3\)"):
        stopper.on_train_batch_end(5, {"loss": float("nan")})


@pytest.mark.parametrize(
    "variables, expected",
    [
        ([], "--flagfile=experiments/sample.flags"),
        (["EPOCHS=1"], "--flagfile=experiments/sample.flags"),
        (["DATASET=cifar10", "DATA_DIR=x"], "--flagfile=experiments/cifar10_best.flags --experiment=cifar10"),
        (["DATASET=cifar10", "FLAGS=--flagfile=experiments/cifar10_paper.flags"], "--flagfile=experiments/cifar10_paper.flags"),
    ],
)
def test_make_train_picks_a_recipe_that_learns(variables, expected):
    shutil.which("make") or pytest.skip("make is not installed")
    # Under `make test` this runs inside make: drop the outer make's variables and directory lines.
    environment = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}
    printed = subprocess.run(
        ["make", "--no-print-directory", "-n", "train", *variables],
        cwd=REPO_ROOT, env=environment, capture_output=True, text=True, check=True,
    )  # fmt: skip
    (command,) = [line for line in printed.stdout.splitlines() if "-m alexnet_tf.train" in line]
    assert expected in command
    if "FLAGS=" in " ".join(variables):
        assert "cifar10_best" not in command
    # The user's settings come after the flagfile, so that they override it (absl: the last one wins).
    for variable in variables:
        name, value = variable.split("=", 1)
        if name in ("EPOCHS", "DATA_DIR"):
            setting = f"--{'epochs' if name == 'EPOCHS' else 'data_dir'}={value}"
            assert command.index(expected) < command.index(setting)


# ---------------------------------------------------------------------------
# --help

HELP_FLAGS = {
    "train": ["--dataset", "--data_dir", "--norm", "--learning_rate", "--pca_std", "--experiment", "--strategy"],
    "evaluate": ["--checkpoint", "--dataset", "--data_dir", "--split", "--[no]ten_crop", "--batch_size"],
    "predict": ["--checkpoint", "--[no]ten_crop", "--export"],
    "bench": ["--dataset", "--norms", "--precisions", "--rounds", "--[no]quick"],
    "report": ["--experiments_dir", "--output"],
    "data_service": ["--role", "--port", "--work_dir", "--dispatcher", "--worker_address"],
}


def help_sections(text):
    """{heading: [flag names]} of a --help text, from its first flag heading on."""
    sections, heading = {}, None
    for line in text.splitlines():
        if line and not line[0].isspace() and line.endswith(":"):
            heading = line[:-1]
            sections[heading] = []
        elif heading is not None and line.startswith("  --"):
            sections[heading].append(line.split(":")[0].strip().replace("[no]", "").lstrip("-"))
    return sections


@pytest.mark.parametrize("module", sorted(HELP_FLAGS))
def test_help_lists_the_entry_points_own_flags_and_exits_0(module):
    result = run_module(module, "--help")
    assert result.returncode == 0, result.stderr[-2000:]
    for flag in HELP_FLAGS[module]:
        assert f"\n  {flag}: " in result.stdout, flag
    assert "logtostderr" not in result.stdout  # absl's own flags are for --helpfull
    assert result.stdout.rstrip().endswith("--helpfull lists every flag, absl's own included.")


def test_train_help_lists_every_training_flag_under_its_group():
    result = run_module("train", "--help")
    assert result.returncode == 0, result.stderr[-2000:]
    sections = help_sections(result.stdout)
    assert sections == {**{heading: list(names) for heading, names in config.FLAG_GROUPS}, "other": ["verbose"]}
    defined = flags.FlagValues()
    config.define_flags(defined)
    assert sorted(name for _, names in config.FLAG_GROUPS for name in names) == sorted(defined)


def test_helpfull_still_lists_every_flag():
    result = run_module("train", "--helpfull")
    assert result.returncode == 0, result.stderr[-2000:]
    for flag in ("--norm", "--learning_rate", "--[no]verbose", "--[no]logtostderr", "--flagfile"):
        assert f"  {flag}: " in result.stdout, flag


# ---------------------------------------------------------------------------
# Data that tensorflow-datasets would have to download or prepare


def run_train_with_cifar10_host(address, *args):
    """`python -m alexnet_tf.train ARGS`, with tfds's CIFAR-10 download host replaced by `address`."""
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    environment.pop("ALEXNET_TF_DATA_DIR", None)
    code = (
        "import runpy; from alexnet_tf import data; "
        f"data.CIFAR10_DOWNLOAD_ADDRESS = {tuple(address)!r}; "
        "runpy.run_module('alexnet_tf.train', run_name='__main__', alter_sys=True)"
    )
    return subprocess.run(
        [sys.executable, "-c", code, *map(str, args)],
        cwd=REPO_ROOT, env=environment, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_cifar10_download_without_network_fails_at_once_and_leaves_nothing(tmp_path):
    tfds_dir = tmp_path / "tfds"
    tfds_dir.mkdir()
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))  # bound, never listening: a connection is refused, as offline
        host, port = closed.getsockname()
        start = time.monotonic()
        result = run_train_with_cifar10_host(
            (host, port), "--dataset=cifar10", f"--tfds_data_dir={tfds_dir}",
            f"--experiments_dir={tmp_path / 'experiments'}", *TINY,
        )  # fmt: skip
        elapsed = time.monotonic() - start
    assert result.returncode == DATA, result.stderr[-2000:]
    lines = error_lines(result.stderr)
    assert len(lines) == 1 and f"cannot reach {host}:{port} to download it" in lines[0], result.stderr[-2000:]
    assert "point --data_dir or $ALEXNET_TF_DATA_DIR at a folder of CIFAR-10 binary batches" in lines[0]
    assert "Traceback" not in result.stderr
    assert list(tfds_dir.iterdir()) == [] and not (tmp_path / "experiments").exists()
    # Start-up (TensorFlow's import, slower beside the suite's other worker) included; tfds's
    # retries took about 3.5 minutes.
    assert elapsed < 60, elapsed


def test_imagenet_folder_without_train_or_tar_files_fails_at_once_and_leaves_nothing(tmp_path):
    images = tmp_path / "imagenet"
    images.mkdir()
    (images / "README.txt").write_text("not ImageNet\n")
    tfds_dir = tmp_path / "tfds"
    result = run_module(
        "train", "--dataset=imagenet2012", f"--data_dir={images}", f"--tfds_data_dir={tfds_dir}",
        f"--experiments_dir={tmp_path / 'experiments'}", *TINY,
    )  # fmt: skip
    assert result.returncode == DATA, result.stderr[-2000:]
    lines = error_lines(result.stderr)
    assert len(lines) == 1 and f"the manual dir {images} lacks ILSVRC2012_img_train.tar" in lines[0]
    assert "Downloading and preparing" not in result.stderr and "Traceback" not in result.stderr
    assert not tfds_dir.exists() and not (tmp_path / "experiments").exists()


def test_cifar10_archive_as_data_dir_says_how_to_unpack_it(tmp_path):
    archive = tmp_path / "cifar-10-binary.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(data.SAMPLE_CIFAR10_DIR / "test_batch.bin", arcname=f"{data.CIFAR10_TAR_FOLDER}/test_batch.bin")
    result = run_module("train", "--dataset=cifar10", f"--data_dir={archive}", f"--experiments_dir={tmp_path}", *TINY)
    assert result.returncode == DATA, result.stderr[-2000:]
    assert error_lines(result.stderr) == [
        f"error: CIFAR-10 folder {archive} (from data_dir) is a file, not a folder: it is a tar archive; "
        f"unpack it (tar xf {archive} -C {tmp_path}) and pass the folder it makes, {tmp_path / 'cifar-10-batches-bin'}."
    ]
