"""Training and evaluation recipes: ``train(TrainConfig(...))`` (behind ``robaug train``), the augmentation recipes
of the papers (baseline, AugMix, IPMix(+JSD), DiffAug, DiffAug + IPMix + JSD, TRADES), and :func:`quick_compare`, a
minutes-long CPU comparison on Fashion-MNIST (``robaug demo``).

Layout: :mod:`.config` (TrainConfig, presets, value parsing), :mod:`.spec` (the recipe table and its loss),
:mod:`.plan` (where each augmentation step runs), :mod:`.augment` (the worker and device augmentations),
:mod:`.train` (the loop), :mod:`.optim`, :mod:`.run_files`, :mod:`.results`, :mod:`.evaluate`, :mod:`.compare`.
"""

from robaug.data.datasets import DatasetInfo, load_dataset
from robaug.losses.jsd import js_divergence

from .compare import quick_compare
from .config import PRESETS, TrainConfig
from .evaluate import final_evaluation
from .plan import AugmentPlan
from .spec import RECIPES, RecipeSpec, get_recipe, recipe_loss
from .train import train

__all__ = [
    "TrainConfig", "train", "quick_compare", "RECIPES", "RecipeSpec", "get_recipe", "recipe_loss",
    "js_divergence", "DatasetInfo", "load_dataset", "final_evaluation", "PRESETS", "AugmentPlan",
]
