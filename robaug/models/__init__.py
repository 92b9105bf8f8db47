"""Classifier architectures used by the recipes: PreAct-ResNet-18, WideResNets, a small ViT, torchvision's
ResNet-50 / ViT-B/16, a tiny CNN and a two-block CNN with an MLP head for CPU runs. Build them by name with
:func:`create_model`."""

from .cnn_mlp import CNNMLP
from .preact_resnet import PreActResNet, preact_resnet18
from .registry import Normalized, create_model, list_models, register_model
from .small_cnn import SmallCNN
from .vit import ViT, vit_small, vit_tiny
from .wide_resnet import WideResNet, wide_resnet

__all__ = [
    "create_model", "list_models", "register_model", "Normalized",
    "PreActResNet", "preact_resnet18", "WideResNet", "wide_resnet", "ViT", "vit_tiny", "vit_small", "SmallCNN",
    "CNNMLP",
]
