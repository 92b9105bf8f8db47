"""Writes quickstart.ipynb (cells below). Run: python examples/notebooks/make_quickstart.py [--execute]."""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent

CELLS = [
    new_markdown_cell("""# robaug quickstart: robust Fashion-MNIST classifiers with DiffAug and IPMix

This notebook trains small classifiers on Fashion-MNIST with and without robaug's augmentations and measures
them on clean and on corrupted test images (a Fashion-MNIST-C built with `robaug.eval`):

1. install and load the data,
2. look at the augmentations: **DiffAug** (one diffusion step + one-step denoise, with robaug's built-in
   Fashion-MNIST denoiser) and **IPMix** (image/patch/pixel-level mixing with procedural fractals),
3. put them into an ordinary PyTorch training loop (batched, on the training device),
4. evaluate clean accuracy, Fashion-MNIST-C accuracy and the DiffAug Ensemble.

It runs on a CPU in a few minutes (no GPU needed; a GPU is used when present). The full recipes
(ResNet/WRN/ViT, CIFAR, ImageNet, DDP, checkpoints) are in `examples/train_classifier.py`."""),
    new_code_cell("""# On Kaggle or Colab, install robaug first (torch and torchvision are already there):
# !pip install robaug
import os
import time

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F

import robaug
from robaug.data import FASHION_MNIST_CLASSES, load_fashion_mnist

# CI executes this notebook with tiny settings; the defaults below take a few minutes on a laptop CPU
SMALL = os.environ.get("ROBAUG_QUICKSTART_SMALL") == "1"
STEPS = 15 if SMALL else 300          # optimiser steps per model
BATCH = 32 if SMALL else 64
TEST_N = 300 if SMALL else 5000       # clean test images
C_IMAGES = 40 if SMALL else 500       # images per corruption and severity in Fashion-MNIST-C
DE_IMAGES = 10 if SMALL else 100      # images per set for the (costlier) DiffAug Ensemble
device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
torch.manual_seed(0)
print("robaug", robaug.__version__, "| torch", torch.__version__, "| device", device)"""),
    new_markdown_cell("""## 1. Data

`load_fashion_mnist` reads the idx files from the usual places (torchvision's `FashionMNIST/raw`, Debian's
`dataset-fashion-mnist` package, `$ROBAUG_DATA`); `download=True` fetches them with torchvision."""),
    new_code_cell("""train_x, train_y = load_fashion_mnist(train=True, download=True)  # uint8 (60000, 1, 28, 28), int64
test_x, test_y = load_fashion_mnist(train=False, download=True)
test_x, test_y = test_x[:TEST_N], test_y[:TEST_N]
print("train", tuple(train_x.shape), train_x.dtype, "| test", tuple(test_x.shape))

picks = torch.stack([torch.nonzero(test_y == c)[0, 0] for c in range(10)])   # one image per class
shown = test_x[picks]
fig, axes = plt.subplots(1, 10, figsize=(12, 1.6))
for ax, img, c in zip(axes, shown, range(10)):
    ax.imshow(img[0], cmap="gray"); ax.set_title(FASHION_MNIST_CLASSES[c], fontsize=8); ax.axis("off")
plt.show()"""),
    new_markdown_cell("""## 2. The augmentations

Both are `torchvision.transforms.v2` transforms and `nn.Module`s: they take a PIL image, a `(C, H, W)` image or a
`(B, C, H, W)` batch (uint8 or float in [0, 1]) and return the same type; randomness is per image, from the
global RNG or a `torch.Generator`.

* `DiffAug(denoiser)` draws `t ~ U{0..999}` per image, diffuses to `x_t` and returns the denoiser's one-step
  estimate of the clean image. `t=...` fixes the noise level (used by the test-time ensemble).
* `IPMix()` mixes each image with image-level ops and patch/pixel-level mixes against a procedurally generated
  fractal picture (no download)."""),
    new_code_cell("""from robaug import DiffAug, IPMix, load_denoiser

denoiser = load_denoiser("fmnist-ddpm").to(device).eval()       # ships with robaug, no download
bf16 = torch.bfloat16 if device.type == "cpu" else torch.float16   # the denoiser is cheaper in half precision
gen = torch.Generator(device).manual_seed(0)

rows = {"raw": shown.to(device)}
for t in (100, 300, 500):
    rows[f"DiffAug t={t}"] = DiffAug(denoiser, t=t, generator=gen, autocast_dtype=bf16)(rows["raw"])
rows["DiffAug, random t"] = DiffAug(denoiser, generator=gen, autocast_dtype=bf16)(rows["raw"])
rows["IPMix"] = IPMix(generator=gen)(rows["raw"])

fig, axes = plt.subplots(len(rows), 10, figsize=(12, 1.25 * len(rows)))
for r, (name, imgs) in enumerate(rows.items()):
    for c in range(10):
        axes[r, c].imshow(imgs[c, 0].cpu(), cmap="gray", vmin=0, vmax=255); axes[r, c].axis("off")
    axes[r, 0].set_title(name, fontsize=8, loc="left")
plt.tight_layout(); plt.show()"""),
    new_markdown_cell("""## 3. Training with the augmentations

An ordinary training loop. The augmentations run on the whole batch on the training device, after the batch is
formed. Three recipes, same network, same number of steps:

* **baseline**: `CE(f(x))` with random crop + flip,
* **IPMix + JSD**: `CE(f(x)) + 12 JS(f(x), f(IPMix_1(x)), f(IPMix_2(x)))` (`IPMix(num_views=2)` returns the batch
  `[x | view1 | view2]`, `robaug.JSDLoss` splits the logits the same way), as in the paper's code,
* **DiffAug**: `CE(f(x)) + CE(f(DiffAug(x)))` in one concatenated forward (`robaug.diffaug_loss`), as in the paper.

(More recipes, e.g. DiffAug + IPMix + JSD, are flags of `examples/train_classifier.py`.)"""),
    new_code_cell("""from robaug import JSDLoss, diffaug_loss
from robaug.models import Normalized, create_model
from robaug.recipes.loader import random_crop_flip


def make_model():
    torch.manual_seed(0)   # same initialisation for every recipe
    net = create_model("small_cnn", num_classes=10, in_channels=1, width=16)
    return Normalized(net, mean=[0.2860], std=[0.3530]).to(device)   # takes images in [0, 1]


def train(recipe: str):
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=STEPS, pct_start=0.15)
    g = torch.Generator(device).manual_seed(1)
    ipmix = IPMix(num_views=2, generator=g)
    jsd = JSDLoss()
    diffaug = DiffAug(denoiser, generator=g, autocast_dtype=bf16)
    order = torch.randperm(len(train_x), generator=torch.Generator().manual_seed(2))
    start = time.perf_counter()
    model.train()
    for step in range(STEPS):
        idx = order[step * BATCH:(step + 1) * BATCH]
        x = train_x[idx].to(device)
        y = train_y[idx].to(device)
        x = random_crop_flip(x, padding=2, generator=g).float() / 255     # batched crop + flip
        if recipe == "baseline":
            loss = F.cross_entropy(model(x), y)
        elif recipe == "ipmix_jsd":
            loss = jsd(model(ipmix(x)), y)                     # ipmix(x) = [x | view1 | view2]
        elif recipe == "diffaug":
            loss, _ = diffaug_loss(model, x, y, diffaug)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    print(f"{recipe:10s} trained {STEPS} steps in {time.perf_counter() - start:5.1f}s, last loss {loss.item():.3f}")
    return model.eval()


models = {recipe: train(recipe) for recipe in ("baseline", "ipmix_jsd", "diffaug")}"""),
    new_markdown_cell("""## 4. Clean and corrupted accuracy

`make_corrupted_dataset` applies robaug's batched re-implementations of the common corruptions (noise, blur,
weather, digital; 5 severities; deterministic per seed) to the test images; `evaluate_corruptions` reports
per-corruption errors and their mean. These are re-implementations: published CIFAR-10-C / ImageNet-C numbers
must be measured on the published files (`robaug.eval` reads those too).

The **DiffAug Ensemble** (DE) averages the classifier's softmax over DiffAug views at
`t in {0, 100, ..., 400}` (t = 0 is the image itself); it is most useful for DiffAug-trained classifiers."""),
    new_code_cell("""from robaug.eval import evaluate_corruptions
from robaug.eval.corruptions import make_corrupted_dataset
from robaug.recipes.evaluate import SubsetBenchmark

bench = make_corrupted_dataset(test_x[:C_IMAGES], test_y[:C_IMAGES], seed=0)   # in memory, uint8
print(bench)

results = {}
for name, model in models.items():
    r = evaluate_corruptions(model, bench, clean=(test_x, test_y), device=device)
    results[name] = (r.clean_accuracy, r.mean_corruption_accuracy)
    print(f"{name:10s} clean accuracy {100 * r.clean_accuracy:5.2f}%   "
          f"Fashion-MNIST-C accuracy {100 * r.mean_corruption_accuracy:5.2f}%")

torch.manual_seed(0)
subset = SubsetBenchmark(bench, DE_IMAGES)          # the first DE_IMAGES images of every corrupted set
clean_subset = (test_x[:C_IMAGES], test_y[:C_IMAGES])
de = evaluate_corruptions(models["diffaug"], subset, clean=clean_subset, denoiser=denoiser,
                          ensemble_timesteps=range(0, 500, 100), ensemble_kwargs={"autocast_dtype": bf16},
                          device=device)
plain = evaluate_corruptions(models["diffaug"], subset, clean=clean_subset, device=device)
print(f"DiffAug-trained + DE: clean accuracy {100 * de.clean_accuracy:5.2f}% "
      f"(plain {100 * plain.clean_accuracy:5.2f}%), "
      f"corrupted {100 * de.mean_corruption_accuracy:5.2f}% (plain {100 * plain.mean_corruption_accuracy:5.2f}%)")"""),
    new_code_cell("""names = list(results)
fig, ax = plt.subplots(figsize=(6, 3))
xs = range(len(names))
ax.bar([x - 0.2 for x in xs], [100 * results[n][0] for n in names], 0.4, label="clean")
ax.bar([x + 0.2 for x in xs], [100 * results[n][1] for n in names], 0.4, label="Fashion-MNIST-C")
ax.set_xticks(list(xs), names); ax.set_ylabel("accuracy (%)"); ax.legend(loc="lower right")
ax.set_ylim(max(0, min(min(v) for v in results.values()) * 100 - 15), 100)
plt.show()

per_corruption = {n: evaluate_corruptions(m, bench, device=device).corruption_errors for n, m in models.items()}
print(f"{'corruption':18s}" + "".join(f"{n:>10s}" for n in names))
for c in bench.corruptions:
    print(f"{c:18s}" + "".join(f"{100 * (1 - per_corruption[n][c]):9.1f}%" for n in names))"""),
    new_markdown_cell("""## What next

* A few hundred steps are a demo, not a result: with so little training the differences between recipes are
  small and noisy. `docs/results.md` has a multi-seed table on Fashion-MNIST made with
  `python examples/fmnist_results.py` (same architecture and budget for every recipe).
* The papers' full recipes, on one GPU or many (`torchrun`), with AMP, channels_last, EMA, resumable
  checkpoints and the evaluation at the end:

```bash
python examples/train_classifier.py --dataset cifar10 --data-root data --preset cifar-wrn40-4 --recipe ipmix_jsd
torchrun --nproc_per_node 8 examples/train_classifier.py --dataset imagefolder --data-root /data/imagenet \\
    --preset imagenet-resnet50 --recipe diffaug --denoiser <registry name or path> --amp fp16 --channels-last \\
    --corruption-root /data/imagenet-c --eval-de
```"""),
]


def build() -> nbformat.NotebookNode:
    nb = new_notebook(cells=CELLS)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    return nb


if __name__ == "__main__":
    nb = build()
    if "--execute" in sys.argv:
        import nbclient

        nbclient.NotebookClient(nb, timeout=3600, kernel_name="python3",
                                resources={"metadata": {"path": str(HERE)}}).execute()
    nbformat.write(nb, HERE / "quickstart.ipynb")
    print("wrote", HERE / "quickstart.ipynb")
