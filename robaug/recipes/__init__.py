"""Training and evaluation recipes: ``train(TrainConfig(...))`` (behind ``examples/train_classifier.py``),
the augmentation recipes of the papers (baseline, AugMix, IPMix(+JSD), DiffAug, DiffAug + IPMix + JSD),
and :func:`quick_compare`, a minutes-long CPU comparison on Fashion-MNIST (``robaug demo``)."""

from .augment import RECIPES, RecipeSpec, get_recipe, js_divergence, recipe_loss
from .compare import quick_compare
from .datasets import DatasetInfo, load_dataset
from .evaluate import final_evaluation
from .train import TrainConfig, train

__all__ = [
    "TrainConfig", "train", "quick_compare", "RECIPES", "RecipeSpec", "get_recipe", "recipe_loss",
    "js_divergence", "DatasetInfo", "load_dataset", "final_evaluation",
]
