"""Evidence for GuidedDiffusion / ContrastiveGuidedSampler on the built-in Fashion-MNIST denoiser.

    python benchmarks/eval_sampling_fmnist.py --per-class 20 --steps 12 --out runs/sampling-eval

1. Trains two small classifiers on real Fashion-MNIST (cached in --out): A (SmallCNN width 32, seed 0) and an
   independent B (SmallCNN width 24, seed 1, different data order). A is the "classifier trained on real data"
   that judges the samples; B supplies the feature space of the distinguishability measure and guides in the
   classifier-guidance rows (so that A's accuracy is not inflated by guiding with A itself).
2. Samples ``--per-class`` images per class with the same per-sample seeds under several settings (Heun,
   ``--steps`` steps): conditional, CFG, classifier guidance with B (through the denoiser, DiffAug form), the
   unconditional model (null label) with and without classifier guidance, and CFG + contrastive guidance
   (Contrastive-DP, encoder = A's penultimate features) at ``--contrastive-scales`` vs CFG alone.
3. Reports A's and B's accuracy w.r.t. the conditioning class, and distinguishability: mean pairwise and mean
   nearest-neighbour L2 distance among the samples of a class, in B's penultimate features and in pixels.
4. Writes PNG grids of samples per class (docs/img/fmnist_samples.png, conditional; fmnist_samples_cfg.png, CFG)
   and the CFG-vs-contrastive grid (docs/img/fmnist_contrastive.png), and prints a markdown table (also saved to
   --out/results.md).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from robaug.data import FASHION_MNIST_CLASSES, load_fashion_mnist
from robaug.diffusion.contrastive import ContrastiveGuidedSampler, PenultimateFeatures
from robaug.diffusion.samplers import GuidedDiffusion
from robaug.models import SmallCNN
from robaug.viz import save_labeled_grid

ROOT = Path(__file__).resolve().parent.parent


def train_classifier(width: int, seed: int, epochs: int, cache: Path, adv_eps: float = 0.0) -> SmallCNN:
    """SmallCNN on real Fashion-MNIST (Adam, one-cycle, flips). ``adv_eps > 0``: FGSM adversarial training with a
    random start (Wong et al. 2020, step 1.25 eps, l_inf) -- a cheap robust encoder, whose gradients are
    perceptually aligned, as Contrastive-DP's adversarially trained encoder."""
    model = SmallCNN(10, in_channels=1, width=width)
    if cache.is_file():
        model.load_state_dict(load_file(cache))
        return model.eval()
    x, y = load_fashion_mnist(train=True)
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = SmallCNN(10, in_channels=1, width=width)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    steps = epochs * (x.shape[0] // 128)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps)
    model.train()
    step = 0
    for _ in range(epochs):
        perm = torch.randperm(x.shape[0], generator=g)
        for i in range(0, x.shape[0] - 127, 128):
            idx = perm[i: i + 128]
            xb = x[idx].float() / 255
            # light augmentation: random horizontal flips
            flip = torch.rand(xb.shape[0], generator=g) < 0.5
            xb[flip] = xb[flip].flip(-1)
            if adv_eps > 0:
                delta = (torch.rand(xb.shape, generator=g) * 2 - 1) * adv_eps
                delta.requires_grad_(True)
                grad, = torch.autograd.grad(F.cross_entropy(model((xb + delta).clamp(0, 1)), y[idx]), delta)
                delta = (delta + 1.25 * adv_eps * grad.sign()).clamp(-adv_eps, adv_eps).detach()
                xb = (xb + delta).clamp(0, 1)
            loss = F.cross_entropy(model(xb), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
    model.eval()
    cache.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, cache)
    return model


@torch.no_grad()
def accuracy(model, images, labels) -> float:
    return float((model(images).argmax(1) == labels).float().mean())


@torch.no_grad()
def distinguishability(feats: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    """Mean pairwise and mean nearest-neighbour L2 distance among the samples of each class (averaged)."""
    pair, nn = [], []
    for c in labels.unique():
        f = feats[labels == c].double()
        d = torch.cdist(f, f)
        n = f.shape[0]
        pair.append(float(d.sum() / (n * (n - 1))))
        d.fill_diagonal_(float("inf"))
        nn.append(float(d.min(1).values.mean()))
    return sum(pair) / len(pair), sum(nn) / len(nn)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="fmnist-ddpm")
    ap.add_argument("--null-label", type=int, default=None, help="for local models without a robaug JSON")
    ap.add_argument("--per-class", type=int, default=20)
    ap.add_argument("--batch", type=int, default=100, help="images per sampling call (10 per class at 100)")
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--cfg-scale", type=float, default=2.0)
    ap.add_argument("--classifier-scale", type=float, default=1.0)
    ap.add_argument("--contrastive-scales", type=lambda v: [float(x) for x in v.split(",")], default=[30.0, 100.0])
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default="runs/sampling-eval")
    ap.add_argument("--only", default=None, help="comma-separated subset of the settings (for quick checks)")
    ap.add_argument("--no-figures", action="store_true")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    t0 = time.time()
    clf_a = train_classifier(32, 0, args.epochs, out / "classifier_a.safetensors")
    clf_b = train_classifier(24, 1, args.epochs, out / "classifier_b.safetensors")
    xt, yt = load_fashion_mnist(train=False)
    xt = xt.float() / 255
    acc_real = (accuracy(clf_a, xt, yt), accuracy(clf_b, xt, yt))
    print(f"classifiers trained/loaded in {time.time() - t0:.0f}s; "
          f"real test accuracy A {acc_real[0]:.4f}, B {acc_real[1]:.4f}")

    from robaug.hub import load_denoiser

    D = load_denoiser(args.model, null_label=args.null_label).eval()
    n = 10 * args.per_class
    labels = torch.arange(n) % 10
    seeds = list(range(n))
    common = dict(num_steps=args.steps, solver="heun")
    cfg = f"CFG w = {args.cfg_scale:g}"
    settings = {
        "conditional (w = 1)": GuidedDiffusion(D, **common),
        cfg: GuidedDiffusion(D, cfg_scale=args.cfg_scale, **common),
        f"conditional + classifier guidance s = {args.classifier_scale:g} (B)": GuidedDiffusion(
            D, classifier=clf_b, classifier_scale=args.classifier_scale, **common),
        "unconditional (null label)": GuidedDiffusion(D, cfg_scale=0.0, **common),
        f"unconditional + classifier guidance s = {args.classifier_scale:g} (B)": GuidedDiffusion(
            D, cfg_scale=0.0, classifier=clf_b, classifier_scale=args.classifier_scale, **common),
    }
    for scale in args.contrastive_scales:
        settings[f"{cfg} + contrastive guidance scale {scale:g} (encoder A)"] = ContrastiveGuidedSampler(
            D, clf_a, cfg_scale=args.cfg_scale, contrastive_scale=scale, **common)
    if args.only:
        keep = [s.strip() for s in args.only.split(",")]
        settings = {k: v for k, v in settings.items() if any(k.startswith(s) for s in keep)}
    feat_b = PenultimateFeatures(clf_b).eval()
    results, images = {}, {}
    for name, sampler in settings.items():
        t1 = time.time()
        imgs = torch.cat([sampler(labels[i: i + args.batch], seeds=seeds[i: i + args.batch])
                          for i in range(0, n, args.batch)])
        imgs = imgs.mul(255).round().div(255)  # what a uint8 dataset would hold
        images[name] = imgs
        with torch.no_grad():
            fb = feat_b(imgs)
        results[name] = {
            "acc_A": accuracy(clf_a, imgs, labels), "acc_B": accuracy(clf_b, imgs, labels),
            "feat_pair": distinguishability(fb, labels)[0], "feat_nn": distinguishability(fb, labels)[1],
            "pix_pair": distinguishability(imgs.flatten(1), labels)[0],
            "pix_nn": distinguishability(imgs.flatten(1), labels)[1],
            "seconds": time.time() - t1, "num_evals": sampler.num_evals,
        }
        r = results[name]
        print(f"{name}: acc A {r['acc_A']:.3f} B {r['acc_B']:.3f}"
              f" | feat pair {r['feat_pair']:.3f} nn {r['feat_nn']:.3f}"
              f" | pix pair {r['pix_pair']:.3f} nn {r['pix_nn']:.3f} | {r['seconds']:.0f}s", flush=True)

    rows = ["| setting | acc. A (real-data classifier) | acc. B | mean pairwise dist. (B features) | "
            "mean NN dist. (B features) | mean pairwise dist. (pixels) | mean NN dist. (pixels) |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, r in results.items():
        rows.append(f"| {name} | {r['acc_A']:.3f} | {r['acc_B']:.3f} | {r['feat_pair']:.3f} | {r['feat_nn']:.3f} | "
                    f"{r['pix_pair']:.3f} | {r['pix_nn']:.3f} |")
    table = "\n".join(rows)
    head = (f"{n} samples ({args.per_class} per class, seeds 0..{n - 1}, batches of {args.batch}), Heun {args.steps} "
            f"steps; classifiers on real test data: A {acc_real[0]:.4f}, B {acc_real[1]:.4f}")
    print(head)
    print(table)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.md").write_text(head + "\n\n" + table + "\n")
    (out / "results.json").write_text(
        json.dumps({"args": vars(args), "real_acc": acc_real, "results": results}, indent=1))

    if not args.no_figures:
        per_row = min(args.per_class, 10)
        for key, path in (("conditional (w = 1)", "fmnist_samples.png"), (cfg, "fmnist_samples_cfg.png")):
            if key in images:
                rows_img = [images[key][labels == c][:per_row] for c in range(10)]
                save_labeled_grid(rows_img, list(FASHION_MNIST_CLASSES), ROOT / "docs" / "img" / path,
                                  title=f"GuidedDiffusion on fmnist-ddpm: {key}, Heun {args.steps} steps")
        contr = [k for k in images if "contrastive" in k]
        if contr and cfg in images:
            rows_img, names = [], []
            for c in range(0, 10, 2):
                rows_img += [images[cfg][labels == c][:per_row], images[contr[-1]][labels == c][:per_row]]
                names += [f"{FASHION_MNIST_CLASSES[c]}", "  + contrastive"]
            save_labeled_grid(rows_img, names, ROOT / "docs" / "img" / "fmnist_contrastive.png",
                              title=f"same seeds: {cfg} vs + contrastive guidance {contr[-1].split('scale ')[-1]}")
    print(f"total {time.time() - t0:.0f}s")


if __name__ == "__main__":
    main()
