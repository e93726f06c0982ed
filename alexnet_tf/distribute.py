"""The one place that creates a tf.distribute strategy.

    "mirrored"      MirroredStrategy over all local GPUs, or the CPU when there are none (default)
    "one_device"    OneDeviceStrategy on the first GPU, or the CPU
    "multi_worker"  MultiWorkerMirroredStrategy; the cluster and this worker's role come from
                    the TF_CONFIG environment variable (see README, "Several machines")

Build the model, optimizer and metrics inside `strategy.scope()`. The batch
size given to the input pipeline is the global batch; Keras splits it
across the replicas.
"""

import json
import os

import tensorflow as tf

STRATEGIES = ("mirrored", "one_device", "multi_worker")


def make_strategy(name="mirrored", devices=None):
    """Returns the tf.distribute strategy called `name`.

    `devices` (mirrored only) overrides the device list, e.g.
    ["/cpu:0", "/cpu:1"] for two logical CPU devices in tests.
    """
    if name not in STRATEGIES:
        raise ValueError(f"strategy={name!r} is not supported; choose one of {', '.join(map(repr, STRATEGIES))}.")
    if name == "mirrored":
        if devices is None and not tf.config.list_logical_devices("GPU"):
            devices = ["/cpu:0"]
        return tf.distribute.MirroredStrategy(devices=devices)
    if name == "one_device":
        device = "/gpu:0" if tf.config.list_logical_devices("GPU") else "/cpu:0"
        return tf.distribute.OneDeviceStrategy(device)
    if "TF_CONFIG" not in os.environ:
        raise ValueError(
            "strategy='multi_worker' needs the TF_CONFIG environment variable "
            '(e.g. {"cluster": {"worker": ["host1:port", "host2:port"]}, "task": {"type": "worker", "index": 0}}).'
        )
    return tf.distribute.MultiWorkerMirroredStrategy()


def is_chief(strategy=None):
    """Whether this process writes the run's files (worker 0, or a single process)."""
    config = json.loads(os.environ.get("TF_CONFIG", "{}"))
    task = config.get("task", {})
    if not task or not config.get("cluster"):
        return True
    return task.get("type") == "chief" or (
        task.get("type") == "worker" and task.get("index", 0) == 0 and "chief" not in config["cluster"]
    )


def num_workers():
    config = json.loads(os.environ.get("TF_CONFIG", "{}"))
    cluster = config.get("cluster", {})
    return max(1, len(cluster.get("worker", [])) + len(cluster.get("chief", [])))
