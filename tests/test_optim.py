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


def _rates_used_around_a_plateau_cut(momentum, jit_compile, steps=3):
    """Trains a tiny net compiled by `training.compile_model` (this optimizer, under a
    one-replica MirroredStrategy as `train` builds it) for 2 epochs of `steps` batches, with the
    `PlateauSchedule` of `training_callbacks` forced to cut the rate at the end of epoch 0
    (restored counters whose best cannot be beaten, patience 1, one drop).

    Returns the rates Keras logged per epoch and, per epoch, the rate each step really applied,
    read off the weights: the step is v_t = momentum * v_(t-1) - lr * (g + wd * w) with
    w_t = w_(t-1) + v_t, so lr = |v_t - momentum * v_(t-1)| / |g + wd * w|, with g the batch's
    gradient at the weights before the step."""
    import tensorflow as tf

    from alexnet_tf import callbacks as callbacks_lib
    from alexnet_tf import training
    from alexnet_tf.config import TrainConfig

    config = TrainConfig(learning_rate=0.01, momentum=momentum, jit_compile=jit_compile, lr_patience=1, lr_drops=1)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16 * steps, 8)).astype(np.float32)
    y = rng.integers(0, 4, size=16 * steps).astype(np.int32)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    class AppliedRates(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.rates, self.velocity = [[], []], None

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_begin(self, batch, logs=None):
            variables = self.model.trainable_variables
            with tf.GradientTape() as tape:
                loss = loss_fn(y[batch * 16 : (batch + 1) * 16], self.model(x[batch * 16 : (batch + 1) * 16]))
            gradients = tape.gradient(loss, variables)
            decay = self.model.optimizer.coupled_weight_decay
            self.direction = np.concatenate(
                [(g + (decay * v if len(v.shape) >= 2 else 0)).numpy().ravel() for g, v in zip(gradients, variables)]
            )
            self.before = np.concatenate([v.numpy().ravel() for v in variables])

        def on_train_batch_end(self, batch, logs=None):
            velocity = np.concatenate([v.numpy().ravel() for v in self.model.trainable_variables]) - self.before
            carried = 0.0 if self.velocity is None else momentum * self.velocity
            self.rates[self.epoch].append(np.linalg.norm(velocity - carried) / np.linalg.norm(self.direction))
            self.velocity = velocity

    with tf.distribute.MirroredStrategy(["/cpu:0"]).scope():
        model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(4)])
        training.compile_model(model, config)
    schedule = callbacks_lib.PlateauSchedule(
        monitor="loss", mode="min", factor=0.1, patience=config.lr_patience,
        min_lr=config.learning_rate * 0.1**config.lr_drops, verbose=0,
        restored={"best": -np.inf, "wait": 0, "cooldown_counter": 0},
    )  # fmt: skip
    applied = AppliedRates()
    history = model.fit(x, y, batch_size=16, epochs=2, shuffle=False, callbacks=[applied, schedule], verbose=0)
    return history.history["learning_rate"], applied.rates


@pytest.mark.parametrize("momentum", [0.0, 0.9])
@pytest.mark.parametrize("jit_compile", [False, True])
def test_plateau_cut_takes_effect_from_the_first_step_of_the_next_epoch(momentum, jit_compile):
    # Every step of epoch 1, the first included, must apply the cut rate: a rate captured as a
    # constant in the compiled step, or a cut reaching the optimizer an epoch late, applies
    # 0.01 there. The logged rate is the one each epoch trained at (Keras logs it before
    # reducing). With momentum the old velocity still carries on, decaying by `momentum` per
    # step; that is the paper's rule, not a late cut, and is taken out of the applied rate.
    logged, applied = _rates_used_around_a_plateau_cut(momentum, jit_compile)
    np.testing.assert_allclose(logged, [0.01, 0.001], rtol=1e-6)
    np.testing.assert_allclose(applied[0], 0.01, rtol=1e-3)
    np.testing.assert_allclose(applied[1], 0.001, rtol=1e-3)
