"""Training flags and the `TrainConfig` they produce.

The defaults are the paper's recipe: SGD with momentum 0.9, weight decay
5e-4 through the momentum, batch 128, learning rate 0.01 divided by 10
whenever the validation error has not improved for `--lr_patience` epochs,
at most three times, 90 epochs; LRN, one tower, ReLU, the paper's
initialisation, 224x224 crops, dropout 0.5, PCA lighting with std 0.1.
"""

import dataclasses

from absl import flags

from alexnet_tf import choices
from alexnet_tf.choices import PRECISIONS  # noqa: F401  (re-exported)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    dataset: str = "cifar10_sample"
    data_dir: str | None = None
    tfds_data_dir: str | None = None
    experiment: str = "default"
    experiments_dir: str = "experiments"
    epochs: int = 90
    steps_per_epoch: int | None = None
    batch_size: int = 128
    learning_rate: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    label_smoothing: float = 0.0
    lr_patience: int = 5
    lr_drops: int = 3
    lr_schedule: str = "plateau"
    warmup_epochs: float = 0.0
    model: str = "alexnet"
    norm: str = "lrn"
    towers: int = 1
    width: str = "full"
    pooling: str = "overlapping"
    activation: str = "relu"
    init: str = "paper"
    dropout: float = 0.5
    image_size: int = 224
    augment: bool = True
    crop_padding: int = 0
    pca_std: float = 0.1
    mean: str = "channel"
    stats_images: int = 2000
    seed: int = 0
    validation_fraction: float = 0.1
    mixed_precision: str = "float32"
    strategy: str = "mirrored"
    cpu_replicas: int = 1
    deterministic: bool = False
    jit_compile: bool = False
    data_service: str | None = None

    def hparams(self):
        """The settings that tell runs apart, for TensorBoard's HParams dashboard."""
        return {
            "model": self.model,
            "norm": self.norm,
            "towers": self.towers,
            "width": self.width,
            "pooling": self.pooling,
            "activation": self.activation,
            "init": self.init,
            "dropout": self.dropout,
            "learning_rate": self.learning_rate,
            "lr_schedule": self.lr_schedule,
            "batch_size": self.batch_size,
            "image_size": self.image_size,
            "mixed_precision": self.mixed_precision,
            "augment": self.augment,
            "crop_padding": self.crop_padding,
            "pca_std": self.pca_std,
            "label_smoothing": self.label_smoothing,
            "seed": self.seed,
        }


# The headings `python -m alexnet_tf.train --help` lists the flags under (alexnet_tf.cli.help_text).
FLAG_GROUPS = (
    ("data", ("dataset", "data_dir", "tfds_data_dir", "validation_fraction")),
    ("model", ("model", "norm", "towers", "width", "pooling", "activation", "init", "dropout")),
    ("optimisation and schedule", (
        "epochs", "steps_per_epoch", "batch_size", "learning_rate", "momentum", "weight_decay", "label_smoothing",
        "lr_schedule", "lr_patience", "lr_drops", "warmup_epochs",
    )),
    ("preprocessing and augmentation", ("image_size", "augment", "crop_padding", "pca_std", "mean", "stats_images")),
    ("run", ("experiment", "experiments_dir", "run", "seed", "deterministic")),
    ("precision and distribution", ("mixed_precision", "jit_compile", "strategy", "cpu_replicas", "data_service")),
)  # fmt: skip

# Fields that say where the work runs, not what the run is: a run continues under another
# value (alexnet_tf.run.config_differences), e.g. after its data service went away.
PLACEMENT_FIELDS = ("data_service",)


def define_flags(flag_values=flags.FLAGS):
    """Defines the training flags on `flag_values` (the global FLAGS by default)."""
    d = TrainConfig()
    fv = dict(flag_values=flag_values)
    flags.DEFINE_enum(
        "dataset", d.dataset, choices.DATASETS,
        "Dataset to train on; image_folder: your own images in --data_dir, train/<class>/<image> "
        "(and test/<class>/<image>), classes = train/'s sorted folder names, any size, JPEG/PNG/GIF/BMP.", **fv)
    flags.DEFINE_string(
        "data_dir", d.data_dir,
        f"Folder of the dataset's files: for cifar10, binary batches or an image-folder tree "
        f"train/<class>/<image> (and test/<class>/<image>) with CIFAR-10 class names; for imagenet2012, "
        f"train/<class>/<image> and validation/<class>/<image>; for image_folder (required), "
        f"train/<class>/<image> and test/<class>/<image>. Default: ${choices.DATA_DIR_ENV}, else tfds.", **fv)
    flags.DEFINE_string("tfds_data_dir", d.tfds_data_dir, "tensorflow_datasets' data/cache folder.", **fv)
    flags.DEFINE_string("experiment", d.experiment, "Experiment name: runs go to <experiments_dir>/<experiment>/.", **fv)
    flags.DEFINE_string("experiments_dir", d.experiments_dir, "Folder holding all experiments.", **fv)
    flags.DEFINE_string(
        "run", None,
        "Run name inside the experiment. Default: resume the newest unfinished run with the same "
        "settings, else start run<N+1>.", **fv)
    flags.DEFINE_integer("epochs", d.epochs, "Training epochs (the paper: about 90).", lower_bound=1, **fv)
    flags.DEFINE_integer(
        "steps_per_epoch", d.steps_per_epoch, "Cap on steps per epoch (default: one pass over the data).",
        lower_bound=1, **fv)
    flags.DEFINE_integer("batch_size", d.batch_size, "Global batch size, split across replicas.", lower_bound=1, **fv)
    flags.DEFINE_float("learning_rate", d.learning_rate, "Initial learning rate.", lower_bound=0.0, **fv)
    flags.DEFINE_float("momentum", d.momentum, "SGD momentum.", lower_bound=0.0, upper_bound=1.0, **fv)
    flags.DEFINE_float(
        "weight_decay", d.weight_decay, "Weight decay, applied through the momentum (the paper's rule).",
        lower_bound=0.0, **fv)
    flags.DEFINE_float(
        "label_smoothing", d.label_smoothing,
        "Label smoothing of the cross-entropy's targets (0, the paper: none; 0.1 puts 0.1 of each "
        "target's probability evenly on all classes).", lower_bound=0.0, upper_bound=0.99, **fv)
    flags.DEFINE_integer(
        "lr_patience", d.lr_patience,
        "Epochs without a better validation top-1 error before the learning rate is divided by 10.",
        lower_bound=1, **fv)
    flags.DEFINE_integer(
        "lr_drops", d.lr_drops, "Most times the learning rate is divided by 10 (the paper: 3).", lower_bound=0, **fv)
    flags.DEFINE_enum(
        "lr_schedule", d.lr_schedule, choices.LR_SCHEDULES,
        "plateau: the paper's rule (divide by 10 when the validation error stops improving, "
        "--lr_patience, --lr_drops); cosine: from --learning_rate down to 0 over the run's --epochs "
        "along a half cosine, after --warmup_epochs of linear warm-up (for a fixed time budget).", **fv)
    flags.DEFINE_float(
        "warmup_epochs", d.warmup_epochs,
        "Epochs of linear learning-rate warm-up from 0 (--lr_schedule=cosine only; at most the whole run).",
        lower_bound=0.0, **fv)
    flags.DEFINE_enum(
        "model", d.model, choices.MODELS,
        "alexnet, or four_layer: the small CIFAR-10 net of the paper's Figure 1 (ReLU vs tanh; give it "
        "--image_size=32; it uses --activation and ignores --norm, --towers, --init and --dropout), or "
        "cuda_convnet_11pct: cuda-convnet's CIFAR-10 net with locally connected layers behind section 3.3's "
        "13%/11% errors (give it --image_size=24; --norm=lrn is its cross-map normalisation, none the net "
        "without it; it uses --activation and ignores --init and --dropout).", **fv)
    flags.DEFINE_enum("norm", d.norm, choices.NORMS, "Normalisation after conv1 and conv2.", **fv)
    flags.DEFINE_enum("towers", str(d.towers), [str(t) for t in choices.TOWERS], "1, or 2 for the paper's two-GPU net.", **fv)
    flags.DEFINE_enum(
        "width", d.width, choices.WIDTHS,
        "AlexNet's kernel counts: full (the paper's), or half: the paper's one-GPU comparison net, half the "
        "kernels in conv1-conv4 (48, 128, 192, 192), conv5's 256 and fc6/fc7's 4096 kept; needs --towers=1.", **fv)
    flags.DEFINE_enum(
        "pooling", d.pooling, choices.POOLINGS,
        "AlexNet's max-pooling: overlapping (the paper's 3x3 stride 2) or non_overlapping (2x2 stride 2, "
        "the scheme it was compared with; the same output sizes at 224).", **fv)
    flags.DEFINE_enum("activation", d.activation, choices.ACTIVATIONS, "Nonlinearity.", **fv)
    flags.DEFINE_enum("init", d.init, choices.INITS, "Weight initialisation (see build_alexnet).", **fv)
    flags.DEFINE_float("dropout", d.dropout, "Dropout rate before fc6 and fc7.", lower_bound=0.0, upper_bound=0.99, **fv)
    flags.DEFINE_integer(
        "image_size", d.image_size,
        f"Crop size; images are first rescaled to round(size*256/224). AlexNet needs at least "
        f"{choices.ALEXNET_MIN_IMAGE_SIZE}.", lower_bound=8, **fv)
    flags.DEFINE_boolean(
        "augment", d.augment,
        "Random crops, flips and PCA lighting on training images; --noaugment trains on the centre "
        "crop, as evaluation sees it.", **fv)
    flags.DEFINE_integer(
        "crop_padding", d.crop_padding,
        "0: the paper's views, crops of the image rescaled to round(size*256/224). P > 0: the CIFAR "
        "convention, crops of the image rescaled to --image_size and mirrored out by P pixels on each "
        "side: random crops move it by up to P pixels, the centre crop is the whole image.",
        lower_bound=0, **fv)
    flags.DEFINE_float("pca_std", d.pca_std, "Std of the PCA lighting coefficients (0 disables).", lower_bound=0.0, **fv)
    flags.DEFINE_enum("mean", d.mean, choices.MEAN_MODES, "Subtract the per-channel mean or the paper's mean image.", **fv)
    flags.DEFINE_integer(
        "stats_images", d.stats_images, "Training images used for the mean and the PCA eigen-pairs.",
        lower_bound=1, **fv)
    flags.DEFINE_integer("seed", d.seed, "Seed for initialisation, shuffling and augmentation.", **fv)
    flags.DEFINE_float(
        "validation_fraction", d.validation_fraction,
        "Fraction of the training split held out for validation (its last records in file order).",
        lower_bound=0.0, upper_bound=0.9, **fv)
    flags.DEFINE_enum("mixed_precision", d.mixed_precision, PRECISIONS, "Keras dtype policy.", **fv)
    flags.DEFINE_enum("strategy", d.strategy, choices.STRATEGIES, "tf.distribute strategy.", **fv)
    flags.DEFINE_integer(
        "cpu_replicas", d.cpu_replicas,
        "Without GPUs, split the CPU into this many MirroredStrategy replicas (to try data parallelism).",
        lower_bound=1, **fv)
    flags.DEFINE_boolean("deterministic", d.deterministic, "Enable TensorFlow op determinism.", **fv)
    flags.DEFINE_boolean("jit_compile", d.jit_compile, "Compile the training step with XLA.", **fv)
    flags.DEFINE_string(
        "data_service", d.data_service,
        "grpc://HOST:PORT of a tf.data service dispatcher (python -m alexnet_tf.data_service): the training "
        "pipeline's preprocessing and batching run on its workers. Default: in this process.", **fv)
    flags.register_multi_flags_validator(
        ["model", "image_size"],
        lambda values: values["model"] != "alexnet" or values["image_size"] >= choices.ALEXNET_MIN_IMAGE_SIZE,
        message=f"--image_size must be at least {choices.ALEXNET_MIN_IMAGE_SIZE} for --model=alexnet "
        f"(conv1's stride 4 and three pools need it)",
        flag_values=flag_values,
    )
    flags.register_multi_flags_validator(
        ["image_size", "crop_padding"],
        lambda values: values["crop_padding"] < values["image_size"],
        message="--crop_padding must be less than --image_size (it mirrors that many pixels out on each side)",
        flag_values=flag_values,
    )
    flags.register_multi_flags_validator(
        ["model", "towers", "width", "pooling"], _check_model_switches, flag_values=flag_values
    )
    flags.register_multi_flags_validator(
        ["lr_schedule", "warmup_epochs"],
        lambda values: values["warmup_epochs"] == 0 or values["lr_schedule"] == "cosine",
        message="--warmup_epochs needs --lr_schedule=cosine",
        flag_values=flag_values,
    )


def _check_model_switches(values):
    conflict = choices.model_switch_conflict(values["model"], int(values["towers"]), values["width"], values["pooling"])
    if conflict:
        raise flags.ValidationError(conflict)
    return True


def config_from_flags(flag_values=flags.FLAGS):
    """The `TrainConfig` described by parsed flags."""
    values = {field.name: flag_values[field.name].value for field in dataclasses.fields(TrainConfig)}
    values["towers"] = int(values["towers"])
    return TrainConfig(**values)


def to_flagfile(config):
    """The text of an absl flagfile that reproduces `config`."""
    lines = []
    for field in dataclasses.fields(TrainConfig):
        value = getattr(config, field.name)
        if value is None:
            continue
        if isinstance(value, bool):
            lines.append(f"--{field.name}" if value else f"--no{field.name}")
        else:
            lines.append(f"--{field.name}={value}")
    return "\n".join(lines) + "\n"


def config_from_flagfile(path):
    """Reads a flagfile written by `to_flagfile` back into a `TrainConfig` (a flag it lacks
    takes its default)."""
    flag_values = flags.FlagValues()
    define_flags(flag_values)
    flag_values(["prog", f"--flagfile={path}"])
    return config_from_flags(flag_values)
