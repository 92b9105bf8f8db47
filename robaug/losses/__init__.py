"""Training losses: JSD consistency (AugMix/IPMix), the DiffAug objective CE(clean) + CE(DiffAug), and TRADES."""

from .diffaug import diffaug_cross_entropy, diffaug_loss
from .jsd import JSDLoss, js_divergence, jsd_loss
from .trades import TRADESLoss, TRADESOutput, frozen_bn_stats, trades_attack, trades_kl, trades_loss, trades_objective

__all__ = [
    "JSDLoss", "js_divergence", "jsd_loss", "diffaug_loss", "diffaug_cross_entropy",
    "TRADESLoss", "TRADESOutput", "trades_loss", "trades_attack", "trades_objective", "trades_kl", "frozen_bn_stats",
]
