"""Fixed-seed outputs of the public entry points, recorded before the layout refactor (issue 10) so that moving code
around can be checked to be bit-exact: IPMix (single and JSD views), DiffAug with the shipped model, every corruption,
the three solvers with CFG, contrastive guidance, and 20-step training runs of three recipes.

``python tests/golden_outputs.py`` records ``tests/fixtures/golden.safetensors`` (only when behaviour is meant to
change, with the reason in the commit); ``tests/test_golden.py`` recomputes and compares.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
GOLDEN = HERE / "fixtures" / "golden.safetensors"
sys.path.insert(0, str(HERE))


def _images(b: int, c: int, s: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (b, c, s, s), generator=g, dtype=torch.uint8)


def transforms() -> dict[str, torch.Tensor]:
    import robaug

    out = {}
    x = _images(6, 3, 32, 1)
    out["ipmix_rgb32"] = robaug.IPMix(generator=torch.Generator().manual_seed(3))(x)
    out["ipmix_gray28_float"] = robaug.IPMix(generator=torch.Generator().manual_seed(4))(
        _images(4, 1, 28, 2).float() / 255)
    out["ipmix_jsd"] = robaug.IPMix(num_views=2, generator=torch.Generator().manual_seed(5))(x)
    out["ipmix_imagenet96"] = robaug.IPMix(preset="imagenet", generator=torch.Generator().manual_seed(6))(
        _images(2, 3, 96, 7))
    da = robaug.DiffAug("fmnist-ddpm", generator=torch.Generator().manual_seed(8))
    out["diffaug"] = da(_images(4, 1, 28, 9))
    out["diffaug_fixed_t"] = robaug.DiffAug("fmnist-ddpm", t=300, generator=torch.Generator().manual_seed(10))(
        _images(2, 1, 28, 11).float() / 255)
    return out


def corruptions() -> dict[str, torch.Tensor]:
    from robaug.eval import available_corruptions, corrupt

    x = _images(3, 3, 32, 12)
    out = {}
    for i, name in enumerate(available_corruptions()):
        for sev in (1, 5):
            out[f"corrupt_{name}_{sev}"] = corrupt(x, name, sev, generator=torch.Generator().manual_seed(100 + i))
    return out


def samplers() -> dict[str, torch.Tensor]:
    from _generate_models import make_classifier, make_denoiser

    import robaug

    out = {}
    den = robaug.load_denoiser("fmnist-ddpm")
    for solver, steps in (("heun", 4), ("euler", 5), ("ddim", 5)):
        s = robaug.GuidedDiffusion(den, num_steps=steps, solver=solver, cfg_scale=2.0)
        out[f"sample_{solver}"] = s.sample([1, 7], seeds=[3, 4])
    s = robaug.GuidedDiffusion(den, num_steps=4, solver="heun", s_churn=10.0)
    out["sample_heun_churn"] = s.sample([2, 5], generator=torch.Generator().manual_seed(13))
    tiny = make_denoiser()
    enc = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    torch.manual_seed(14)
    for p in enc.parameters():
        torch.nn.init.normal_(p, std=0.3)
    torch.manual_seed(15)
    cs = robaug.ContrastiveGuidedSampler(tiny, enc, num_steps=4, contrastive_scale=30.0, embed_dim=8, hidden_dim=8)
    out["sample_contrastive"] = cs.sample([0, 1, 2, 0], seeds=[1, 2, 3, 4])
    g = robaug.GuidedDiffusion(tiny, num_steps=4, classifier=make_classifier(), classifier_scale=1.0)
    out["sample_classifier"] = g.sample([0, 2], seeds=[5, 6])
    return out


def training() -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    from robaug.recipes import TrainConfig, train

    out = {}
    small = dict(train_subset=256, test_subset=64, batch_size=32, model="small_cnn", model_kwargs={"width": 8},
                 eval_corruptions=False, progress=False, log_every=4, ckpt_every=0, lr=0.05, steps=20, device="cpu")
    for recipe in ("baseline", "ipmix_jsd", "diffaug"):
        with tempfile.TemporaryDirectory() as d:
            train(TrainConfig(**small, recipe=recipe, out_dir=d))
            w = load_file(str(Path(d) / "model.safetensors"))
        for k in sorted(w):
            if w[k].is_floating_point():
                out[f"train_{recipe}_{k}"] = w[k]
    return out


GROUPS = {"transforms": transforms, "corruptions": corruptions, "samplers": samplers, "training": training}


def compute(groups=tuple(GROUPS)) -> dict[str, torch.Tensor]:
    torch.set_num_threads(1)
    out = {}
    for name in groups:
        out.update(GROUPS[name]())
    return {k: v.detach().cpu().contiguous() for k, v in out.items()}


if __name__ == "__main__":
    from safetensors.torch import save_file

    res = compute()
    save_file(res, str(GOLDEN), metadata={"torch": torch.__version__})
    print(f"recorded {len(res)} tensors to {GOLDEN}")
