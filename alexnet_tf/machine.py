"""What a benchmark or a training run records about the machine it ran on."""

import os
import platform


def _cpu_model():
    """The CPU's model name from /proc/cpuinfo, else platform.processor() (often empty off Linux)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def describe():
    """The host, its CPU and GPUs, the library versions and TensorFlow's thread settings, as a JSON-able dict.

    Imports TensorFlow (and lists its logical devices, which initialises
    them): call it once the devices are configured.
    """
    import keras
    import numpy as np
    import tensorflow as tf

    return {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "gpus": [d.name for d in tf.config.list_logical_devices("GPU")],
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
        "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
        "TF_ENABLE_ONEDNN_OPTS": os.environ.get("TF_ENABLE_ONEDNN_OPTS"),
    }
