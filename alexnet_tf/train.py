"""Train AlexNet: python -m alexnet_tf.train [--flagfile=experiments/NAME.flags] [--flags...]

    python -m alexnet_tf.train                                   # the embedded CIFAR-10 sample
    python -m alexnet_tf.train --dataset=cifar10 --data_dir=PATH # CIFAR-10 binary batches
    python -m alexnet_tf.train --flagfile=experiments/cifar10_lrn.flags
    python -m alexnet_tf.train --help                            # the flags, grouped

Defaults are the paper's recipe (alexnet_tf.config). Running the same
command again continues an interrupted run (alexnet_tf.run).
"""

import functools
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags, logging  # noqa: E402

from alexnet_tf import cli, config  # noqa: E402

config.define_flags()
# config.py defines them, so absl would not count them as this entry point's own (--help).
flags.adopt_module_key_flags(config)
flags.DEFINE_boolean("verbose", False, "Show Python tracebacks on errors.")
FLAGS = flags.FLAGS


def main(argv):
    cli.refuse_extra_arguments(argv)
    if not FLAGS.verbose:
        logging.set_verbosity(logging.WARNING)
    from alexnet_tf import training

    with cli.one_line_errors(FLAGS.verbose):
        training.train(config.config_from_flags(FLAGS), run_name=FLAGS.run)


if __name__ == "__main__":
    app.run(main, flags_parser=functools.partial(cli.parse_flags, help_groups=config.FLAG_GROUPS))
