import json

import pytest
import tensorflow as tf

from alexnet_tf import distribute


def test_default_is_mirrored_on_the_cpu_without_gpus():
    strategy = distribute.make_strategy()
    assert isinstance(strategy, tf.distribute.MirroredStrategy)
    assert strategy.num_replicas_in_sync == 1


def test_mirrored_over_two_logical_cpus():
    strategy = distribute.make_strategy("mirrored", devices=["/cpu:0", "/cpu:1"])
    assert strategy.num_replicas_in_sync == 2


def test_one_device():
    assert isinstance(distribute.make_strategy("one_device"), tf.distribute.OneDeviceStrategy)


def test_unknown_strategy_and_missing_tf_config(monkeypatch):
    with pytest.raises(ValueError, match="choose one of 'mirrored', 'one_device', 'multi_worker'"):
        distribute.make_strategy("parameter_server")
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match="TF_CONFIG"):
        distribute.make_strategy("multi_worker")


@pytest.mark.parametrize(
    "config,chief,workers",
    [
        (None, True, 1),
        ({"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 0}}, True, 2),
        ({"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 1}}, False, 2),
        ({"cluster": {"chief": ["c:0"], "worker": ["a:1"]}, "task": {"type": "worker", "index": 0}}, False, 2),
        ({"cluster": {"chief": ["c:0"], "worker": ["a:1"]}, "task": {"type": "chief", "index": 0}}, True, 2),
    ],
)
def test_chief_and_worker_count_from_tf_config(monkeypatch, config, chief, workers):
    if config is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", json.dumps(config))
    assert distribute.is_chief() is chief
    assert distribute.num_workers() == workers
