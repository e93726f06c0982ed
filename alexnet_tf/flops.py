"""Counting the arithmetic of a Keras model, for achieved-FLOP/s figures.

The convention (that of tf_cnn_benchmarks, the "GMAC" figures in papers and
the issue's 6.8 GFLOP per training image):

- Only convolutions and dense layers count: one multiply-accumulate (MAC)
  per kernel weight per output position, i.e. ``H_out * W_out * kh * kw *
  (C_in / groups) * C_out`` for a convolution and ``in * out`` for a dense
  layer. Biases, activations, LRN, BatchNorm, pooling, dropout and the loss
  are left out (together well under 1% of AlexNet's MACs).
- One MAC is 2 FLOPs.
- A training step is 3x the forward: the forward, the gradient with
  respect to the layer's input and the gradient with respect to its
  weights each take the same MACs (conv1's input gradient is not needed,
  but the frameworks compute or skip it inconsistently, so it counts).

For the paper's net at 224x224: one tower 1.135 GMAC forward (6.81 GFLOP
per training image); two towers 0.724 GMAC (4.35 GFLOP), the figure usually
quoted for AlexNet, since grouping halves conv2, conv4 and conv5.
"""

import math

import keras

TRAINING_STEP_FORWARD_MULTIPLE = 3


def layer_macs(layer):
    """Multiply-accumulates per example of one conv/dense layer's forward; 0 for other layers."""
    if isinstance(layer, keras.layers.Conv2D):
        # kernel: (kh, kw, in/groups, filters); output: (batch, H, W, filters).
        _, height, width, _ = layer.output.shape
        return height * width * math.prod(layer.kernel.shape)
    if isinstance(layer, keras.layers.Dense):
        return math.prod(layer.kernel.shape)
    return 0


def forward_macs(model):
    """Multiply-accumulates per example of the model's forward pass (conv and dense layers)."""
    return sum(layer_macs(layer) for layer in model.layers)


def training_flops_per_example(model):
    """FLOPs per example of one training step: 2 FLOPs per MAC, 3x the forward."""
    return 2 * TRAINING_STEP_FORWARD_MULTIPLE * forward_macs(model)
