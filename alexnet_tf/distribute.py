"""The one place that creates a tf.distribute strategy.

    "mirrored"      MirroredStrategy over all local GPUs, or the CPU when there are none (default)
    "one_device"    OneDeviceStrategy on the first GPU, or the CPU
    "multi_worker"  MultiWorkerMirroredStrategy; the cluster and this worker's role come from
                    the TF_CONFIG environment variable (see README, "Several machines")

Build the model, optimizer and metrics inside `strategy.scope()`. The batch
size given to the input pipeline is the global batch; Keras splits it
across the replicas.
"""

import os

import tensorflow as tf

from alexnet_tf.choices import STRATEGIES, check_choice


def make_strategy(name="mirrored", devices=None, cpu_replicas=1):
    """Returns the tf.distribute strategy called `name`.

    `devices` (mirrored only) overrides the device list, e.g.
    ["/cpu:0", "/cpu:1"]. `cpu_replicas` > 1 (mirrored, on a machine without
    GPUs) splits the CPU into that many logical devices, one replica each:
    a way to try data parallelism without GPUs. It must be called before
    TensorFlow has initialised its devices, or with that many already there.
    """
    check_choice("strategy", name, STRATEGIES)
    if name == "mirrored":
        if devices is None and not tf.config.list_physical_devices("GPU"):
            devices = _cpu_devices(cpu_replicas)
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


def _cpu_devices(count):
    if count > 1:
        try:
            tf.config.set_logical_device_configuration(
                tf.config.list_physical_devices("CPU")[0], [tf.config.LogicalDeviceConfiguration()] * count
            )
        except RuntimeError:  # devices already initialised: use them if there are enough
            pass
    logical = tf.config.list_logical_devices("CPU")
    if len(logical) < count:
        raise ValueError(
            f"--cpu_replicas={count} needs {count} logical CPU devices, but TensorFlow already runs with "
            f"{len(logical)}; set it in a fresh process."
        )
    return [device.name for device in logical[:count]]


def prepare_model_for(strategy_name, model):
    """Adapts a Keras model to the strategy; call it before `fit`.

    Keras 3.15's `fit` builds metrics and optimizer state from a first batch
    that it averages across replicas with an eager `strategy.reduce`, which
    MultiWorkerMirroredStrategy cannot run outside a tf.function (keras-team/
    keras#20585: Keras 3's multi-worker `fit` fails with "Attempt to convert a
    value (PerReplica...)"). The build only needs the batch's structure and
    shapes, so under multi_worker this model uses the first local replica's
    batch instead.

    Keras then averages each step's outputs across workers with
    `strategy.reduce("MEAN", value, axis=0)`, which fails on the scalar loss
    and metric results ("Invalid reduction dimension 0 for input with 0
    dimensions"). The steps here return them with shape [1]; the reduction
    averages them back to scalars (metric results are already synchronised
    across replicas, so their mean is exact). Other strategies are left as
    they are.
    """
    if strategy_name != "multi_worker":
        return model
    from keras import tree

    def symbolic_build_from_local_batch(iterator=None, data_batch=None):
        if iterator is not None:
            for _, _, batches in iterator:
                data_batch = tree.map_structure(
                    lambda value: model.distribute_strategy.experimental_local_results(value)[0]
                    if isinstance(value, tf.distribute.DistributedValues)
                    else value,
                    next(batches),
                )
                break
        with model.distribute_strategy.scope():
            model._symbolic_build(data_batch=data_batch)

    def as_vectors(step):
        def step_returning_vectors(data):
            return tree.map_structure(lambda value: tf.reshape(value, [1]), step(data))

        return step_returning_vectors

    model._maybe_symbolic_build = symbolic_build_from_local_batch
    model.train_step = as_vectors(model.train_step)
    model.test_step = as_vectors(model.test_step)
    return model


def _cluster():
    """This process's place in the cluster, from TF_CONFIG (TensorFlow's own parser)."""
    return tf.distribute.cluster_resolver.TFConfigClusterResolver()


def is_chief():
    """Whether this process writes the run's files (the chief, worker 0 of a cluster without
    one, or a single process)."""
    resolver = _cluster()
    jobs = resolver.cluster_spec().jobs
    if not jobs or resolver.task_type is None:
        return True
    return resolver.task_type == "chief" or (
        resolver.task_type == "worker" and (resolver.task_id or 0) == 0 and "chief" not in jobs
    )


def worker_index():
    return _cluster().task_id or 0


def num_workers():
    spec = _cluster().cluster_spec()
    return max(1, sum(spec.num_tasks(job) for job in ("worker", "chief") if job in spec.jobs))
