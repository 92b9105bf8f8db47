"""Datasets used by robaug's recipes and demos."""

from .fashion_mnist import FASHION_MNIST_CLASSES, find_fashion_mnist, load_fashion_mnist

__all__ = ["FASHION_MNIST_CLASSES", "find_fashion_mnist", "load_fashion_mnist"]
