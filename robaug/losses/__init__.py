"""Training losses: JSD consistency (AugMix/IPMix) and the DiffAug objective."""
