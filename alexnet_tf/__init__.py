"""alexnet_tf: a faithful TensorFlow/Keras reproduction of AlexNet (Krizhevsky et al., 2012)."""

__version__ = "0.1.0"
