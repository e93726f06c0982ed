"""The paper's optimiser: SGD with momentum and weight decay that goes through the momentum.

The paper's update rule (section 5):

    v <- 0.9 v - 0.0005 * eps * w - eps * dL/dw
    w <- w + v

Keras's `SGD(weight_decay=...)` is decoupled instead (w <- w - eps * wd * w,
outside the momentum), which is a different optimiser for momentum SGD.
Here the decay is added to the gradient before the momentum update, which is
exactly the rule above (and equals an L2 penalty of wd/2 * ||w||^2 in the
loss, without the penalty showing in the reported loss).
"""

import keras


@keras.saving.register_keras_serializable(package="alexnet_tf")
class SGDCoupledWeightDecay(keras.optimizers.SGD):
    """SGD with momentum whose weight decay is part of the gradient.

    The decay applies to the weights (conv kernels and dense matrices, the
    variables of rank >= 2), not to biases or BatchNorm's scale and offset,
    as in the authors' cuda-convnet layer configurations and Caffe's
    bvlc_alexnet (decay_mult 0 on biases).
    """

    def __init__(self, learning_rate=0.01, momentum=0.9, coupled_weight_decay=5e-4, **kwargs):
        super().__init__(learning_rate=learning_rate, momentum=momentum, **kwargs)
        if coupled_weight_decay < 0:
            raise ValueError(f"coupled_weight_decay must be >= 0, got {coupled_weight_decay}.")
        self.coupled_weight_decay = float(coupled_weight_decay)

    def update_step(self, gradient, variable, learning_rate):
        if self.coupled_weight_decay and len(variable.shape) >= 2:
            gradient = gradient + keras.ops.cast(self.coupled_weight_decay, variable.dtype) * variable
        super().update_step(gradient, variable, learning_rate)

    def get_config(self):
        config = super().get_config()
        config["coupled_weight_decay"] = self.coupled_weight_decay
        return config
