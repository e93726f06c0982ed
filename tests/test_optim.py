import numpy as np
import pytest
import keras

from alexnet_tf.optim import SGDCoupledWeightDecay


def test_update_follows_the_papers_rule_for_weights_and_skips_biases():
    weight = keras.Variable(np.array([[1.0, -2.0]], np.float32))
    bias = keras.Variable(np.array([0.5], np.float32))
    optimizer = SGDCoupledWeightDecay(learning_rate=0.1, momentum=0.9, coupled_weight_decay=0.01)
    gradients = [np.array([[0.2, 0.4]], np.float32), np.array([0.3], np.float32)]
    w, v = np.array([[1.0, -2.0]]), np.zeros((1, 2))
    b, vb = np.array([0.5]), np.zeros(1)
    for _ in range(3):
        optimizer.apply_gradients(zip(gradients, [weight, bias]))
        v = 0.9 * v - 0.01 * 0.1 * w - 0.1 * gradients[0]  # v <- 0.9 v - wd*eps*w - eps*g
        w = w + v
        vb = 0.9 * vb - 0.1 * gradients[1]
        b = b + vb
    np.testing.assert_allclose(weight.numpy(), w, rtol=1e-6)
    np.testing.assert_allclose(bias.numpy(), b, rtol=1e-6)


def test_differs_from_keras_decoupled_weight_decay():
    ours, theirs = keras.Variable(np.ones((2, 2), np.float32)), keras.Variable(np.ones((2, 2), np.float32))
    zero = np.zeros((2, 2), np.float32)
    coupled = SGDCoupledWeightDecay(0.1, 0.9, 0.01)
    for _ in range(3):
        coupled.apply_gradients([(zero, ours)])
    keras_sgd = keras.optimizers.SGD(0.1, momentum=0.9, weight_decay=0.01)
    for _ in range(3):
        keras_sgd.apply_gradients([(zero, theirs)])
    assert not np.allclose(ours.numpy(), theirs.numpy())


def test_config_round_trip_and_bad_decay():
    optimizer = SGDCoupledWeightDecay(learning_rate=0.02, momentum=0.8, coupled_weight_decay=1e-3)
    clone = SGDCoupledWeightDecay.from_config(optimizer.get_config())
    assert (clone.momentum, clone.coupled_weight_decay) == (0.8, 1e-3)
    with pytest.raises(ValueError, match="coupled_weight_decay"):
        SGDCoupledWeightDecay(coupled_weight_decay=-1.0)
