#!/usr/bin/env python
"""Train a classifier with a robustness recipe (baseline, AugMix, IPMix(+JSD), DiffAug, DiffAug + IPMix + JSD,
TRADES adversarial training), optionally on real + generated data, and evaluate it on clean, corrupted and
adversarial test data.

    python examples/train_classifier.py --help
    python examples/train_classifier.py --preset fmnist-cpu --recipe diffaug --epochs 1 --out-dir runs/fmnist-diffaug
    torchrun --nproc_per_node 4 examples/train_classifier.py --dataset cifar10 --data-root data \\
        --preset cifar-wrn40-4 --recipe ipmix_jsd --amp bf16 --channels-last --out-dir runs/c10-ipmix
    # DM-Improves-AT: TRADES on 70% generated + 30% real data, AutoAttack at the end (docs/adversarial.md)
    torchrun --nproc_per_node 8 examples/train_classifier.py --data-root data --preset cifar10-trades-wrn28-10 \\
        --synthetic-data data/cifar10-1m --steps 39200 --out-dir runs/c10-trades-1m   # the paper's 400 epochs

The logic lives in robaug.recipes (train.py: the loop; augment.py: the recipes; cli.py: these flags).
"""

import sys

from robaug.cli.train import main

if __name__ == "__main__":
    sys.exit(main())
