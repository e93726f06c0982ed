import json
import os

from alexnet_tf import machine


def test_describe_has_every_key_and_is_json_able():
    description = machine.describe()
    assert set(description) == {
        "hostname", "platform", "cpu", "cpu_count", "gpus", "python", "tensorflow", "keras", "numpy",
        "intra_op_threads", "inter_op_threads", "TF_ENABLE_ONEDNN_OPTS",
    }  # fmt: skip
    assert description["cpu_count"] == os.cpu_count()
    assert description["tensorflow"] and description["keras"] and isinstance(description["gpus"], list)
    json.dumps(description)
