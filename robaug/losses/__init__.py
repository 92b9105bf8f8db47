"""Training losses: JSD consistency (AugMix/IPMix) and the DiffAug objective CE(clean) + CE(DiffAug)."""

from .diffaug import diffaug_cross_entropy, diffaug_loss
from .jsd import JSDLoss, js_divergence, jsd_loss

__all__ = ["JSDLoss", "js_divergence", "jsd_loss", "diffaug_loss", "diffaug_cross_entropy"]
