"""``robaug generate``: write a class-balanced synthetic dataset in resumable shards (the library is
:func:`robaug.recipes.generation.generate_dataset`).

Contract of a ``robaug`` command module: :func:`add_arguments` fills a parser, :func:`run` executes parsed
arguments and returns the exit code, :func:`main` parses ``argv`` and runs. Importing this module loads no torch.
"""

from __future__ import annotations

import argparse
import math
import os
from typing import TYPE_CHECKING, Any, Sequence

if TYPE_CHECKING:  # torch loads when the command runs, not when `robaug` builds its parsers
    import torch
    from torch import nn

__all__ = ["add_arguments", "check_arguments", "run", "main", "run_generate", "load_classifier"]

DESCRIPTION = "Write class-balanced synthetic datasets with a robaug sampler: sharded, resumable, multi-process."
EXAMPLES = """examples:
  robaug generate --model fmnist-ddpm --out data/fmnist-syn --num-samples 100000 --steps 18 --cfg-scale 1.5
  torchrun --nproc_per_node 8 -m robaug.generate --model fmnist-ddpm --out data/fmnist-20m \\
      --num-samples 20000000 --device cuda
  rerun the same command to resume a killed run; see docs/generate.md for the dataset format"""


def _load_object(spec: str, flag: str = "--model"):
    """``package.module:attr`` -> the object, called when it is a factory (a callable that is not a module)."""
    import importlib

    mod_name, _, attr = spec.partition(":")
    obj = importlib.import_module(mod_name)
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"{flag} {spec}: {type(obj).__name__} {getattr(obj, '__name__', '')!s} has no attribute "
                             f"{part!r}; use package.module:factory")
        obj = getattr(obj, part)
    from torch import nn

    if callable(obj) and not isinstance(obj, nn.Module):
        try:
            obj = obj()
        except TypeError as err:
            raise ValueError(f"{flag} {spec}: calling it without arguments failed ({err}); the factory must take no "
                             "arguments") from err
    return obj


def _load_denoiser(spec: str, progress: bool):
    """``--model``: a registry name, Hub id or local path (robaug.hub), or ``package.module:factory``."""
    from ..diffusion.denoiser import Denoiser

    if not _looks_like_import(spec):
        from ..hub import load_denoiser

        return load_denoiser(spec, progress=progress)
    obj = _load_object(spec, "--model")
    if not isinstance(obj, Denoiser):
        raise ValueError(
            f"--model {spec} gave a {type(obj).__name__}, not a robaug Denoiser: the factory must return a "
            "robaug.diffusion.Denoiser (wrap a network with CallableDenoiser, DiffusersDenoiser or EDMDenoiser)")
    return obj


def _looks_like_import(spec: str) -> bool:
    mod, sep, attr = spec.partition(":")
    return (bool(sep) and bool(attr) and "/" not in mod and not os.path.exists(spec)
            and not attr.endswith(".safetensors"))


def load_classifier(spec: str, num_classes: int | None, in_channels: int, device: torch.device) -> nn.Module:
    """``ARCH:WEIGHTS.safetensors`` (a ``robaug.models`` architecture taking ``[0, 1]`` images), a ``robaug train``
    run folder or checkpoint, a ``robaug convert`` folder of a noisy ADM classifier, or ``package.module:factory``
    (an ``nn.Module`` or a zero-argument callable returning one)."""
    import json
    from pathlib import Path

    from torch import nn

    path = Path(spec)
    if path.is_dir() and (path / "config.json").is_file() and \
            json.loads((path / "config.json").read_text()).get("family") == "adm-classifier":
        from ..hub import load_classifier as load_converted_classifier

        model = load_converted_classifier(path)  # noise-aware: guides in x_t (its guidance_space)
    elif path.exists() and (path.is_dir() or path.suffix in (".pt", ".safetensors")) and ":" not in spec:
        from ..recipes.trained import load_trained_model

        model = load_trained_model(path, "cpu")[0]
    elif _looks_like_import(spec):
        model = _load_object(spec, "classifier")
    else:
        arch, sep, weights = spec.partition(":")
        if not sep or not weights.endswith(".safetensors"):
            raise ValueError(f"classifier spec {spec!r}: use ARCH:WEIGHTS.safetensors or package.module:factory")
        if num_classes is None:
            raise ValueError("loading a classifier by architecture needs --num-classes")
        from safetensors.torch import load_file

        from ..models import create_model

        model = create_model(arch, num_classes, in_channels=in_channels)
        model.load_state_dict(load_file(weights))
    if not isinstance(model, nn.Module):
        raise ValueError(f"classifier {spec!r} gave a {type(model).__name__}, not an nn.Module; the factory must "
                         "return a classifier module")
    return model.to(device).eval()


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``robaug generate`` (grouped: run, sampler, guidance, contrastive guidance, filtering)."""
    from ..data.shards.format import LAYOUTS
    from ..diffusion.sampling import SOLVERS
    from ..diffusion.schedule import TIMESTEP_SPACINGS
    g = p.add_argument_group("run")
    g.add_argument("--model", required=True, help="registered name (robaug list), Hub id, local diffusers folder / "
                   ".safetensors, or package.module:factory returning a robaug Denoiser")
    g.add_argument("--out", required=True, help="output folder (shards + manifest.json)")
    g.add_argument("--num-samples", type=int, required=True,
                   help="images to generate (class j %% num_classes for sample j)")
    g.add_argument("--shard-size", type=int, default=10_000, help="images per shard file")
    g.add_argument("--batch-size", type=int, default=256, help="images per sampler call")
    g.add_argument("--seed", type=int, default=0, help="base seed; sample j uses seed * 2**32 + j")
    g.add_argument("--num-classes", type=int, default=None, help="default: the model's")
    g.add_argument("--unconditional", action="store_true",
                   help="sample without class labels (a label-dropout model's null label); each image is labelled "
                        "with --filter-classifier's prediction (--keep-fraction 1 keeps them all)")
    g.add_argument("--image-size", type=int, default=None, help="for models without a native sample size")
    g.add_argument("--layout", choices=LAYOUTS, default="NHWC", help="image layout inside the shards")
    g.add_argument("--device", default=None, help="default: cuda:LOCAL_RANK when CUDA is available, else cpu")
    g.add_argument("--model-dtype", choices=["float32", "float16", "bfloat16"], default="float32",
                   help="precision of the denoiser's weights")
    g.add_argument("--overwrite", action="store_true", help="delete a different run found in --out")
    g.add_argument("--verify", action=argparse.BooleanOptionalAction, default=True,
                   help="on resume, check the sha256 of the shards already written (--no-verify: only their size); "
                        "damaged shards are generated again")
    g.add_argument("--lock-timeout", type=float, default=0.0,
                   help="seconds to wait when another run is writing to --out (negative: wait until it ends)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    try:
        g.add_argument("--quiet", action="store_true", help="no progress bars (sets ROBAUG_QUIET=1); results still go "
                       "to stdout, errors to stderr")
    except argparse.ArgumentError:  # the shared robaug parser already has --quiet
        pass
    s = p.add_argument_group("sampler")
    s.add_argument("--solver", choices=SOLVERS, default="heun", help="ODE/SDE solver")
    s.add_argument("--steps", type=int, default=18, help="steps of the noise grid (Heun: 2N - 1 network calls)")
    s.add_argument("--sigma-min", type=float, default=None, help="smallest sigma of the grid (default: the model's)")
    s.add_argument("--sigma-max", type=float, default=None, help="largest sigma of the grid (default: the model's)")
    s.add_argument("--rho", type=float, default=7.0, help="Karras grid exponent")
    s.add_argument("--s-churn", type=float, default=0.0, help="EDM churn (0 = deterministic)")
    s.add_argument("--s-tmin", type=float, default=0.0, help="churn only for sigma >= this")
    s.add_argument("--s-tmax", type=float, default=math.inf, help="churn only for sigma <= this")
    s.add_argument("--s-noise", type=float, default=1.0, help="scale of the churn noise")
    s.add_argument("--eta", type=float, default=0.0, help="DDIM stochasticity")
    s.add_argument("--discretization", choices=["karras", "timesteps"], default=None,
                   help="noise grid (default: timesteps for DDIM on a discrete-time model, else karras)")
    s.add_argument("--timestep-spacing", choices=TIMESTEP_SPACINGS, default="leading",
                   help="which model timesteps the timesteps grid takes")
    s.add_argument("--no-round-sigmas", action="store_true",
                   help="do not round the Karras grid to the model's timesteps")
    s.add_argument("--clip-denoised", action="store_true", help="clip x0 estimates to [-1, 1] at every step")
    s.add_argument("--state-dtype", choices=["float64", "float32"], default="float64",
                   help="precision of the sampler state")
    gd = p.add_argument_group("guidance")
    gd.add_argument("--cfg-scale", type=float, default=1.0, help="classifier-free guidance weight (1 = none)")
    gd.add_argument("--classifier", default=None,
                    help="classifier guidance: ARCH:WEIGHTS.safetensors, a robaug train run folder, a robaug convert "
                         "folder of an ADM noisy classifier, or module:factory")
    gd.add_argument("--classifier-scale", type=float, default=1.0, help="classifier guidance scale")
    gd.add_argument("--classifier-mode", choices=["x0", "xt"], default=None,
                    help="x0: classifier on the denoised estimate; xt: a noise-aware classifier (default: the "
                         "classifier's own guidance_space, else x0)")
    gd.add_argument("--classifier-weighting", choices=["constant", "score", "eps"], default=None,
                    help="default: constant in x0 mode, score in xt mode")
    c = p.add_argument_group("contrastive guidance (Contrastive-DP)")
    c.add_argument("--contrastive-encoder", default=None,
                   help="enables contrastive guidance: a classifier (its penultimate features) "
                        "as ARCH:WEIGHTS or module:factory")
    c.add_argument("--contrastive-scale", type=float, default=100.0, help="contrastive guidance scale")
    c.add_argument("--contrastive-loss", choices=["hard", "infonce"], default="hard",
                   help="hard-negative loss (the paper's) or InfoNCE")
    c.add_argument("--contrastive-weighting", choices=["constant", "score", "eps"], default=None,
                   help="weighting of the contrastive gradient (default: constant in x0 space)")
    c.add_argument("--tau", type=float, default=None,
                   help="temperature (default: the loss's own, 10 hard / 0.1 infonce)")
    c.add_argument("--tau-plus", type=float, default=0.1, help="hard-negative loss: class prior tau+")
    c.add_argument("--beta", type=float, default=1.0, help="hard-negative loss: concentration beta")
    c.add_argument("--contrastive-sigma-min", type=float, default=0.0, help="guide only for sigma >= this")
    c.add_argument("--contrastive-sigma-max", type=float, default=math.inf, help="guide only for sigma <= this")
    c.add_argument("--head-lr", type=float, default=1e-2, help="Adam learning rate of the embedding head")
    c.add_argument("--head-seed", type=int, default=0, help="seed of the embedding head's initialisation")
    f = p.add_argument_group("confidence filtering (DM-Improves-AT's top-20%% selection)")
    f.add_argument("--filter-classifier", default=None, help="ARCH:WEIGHTS.safetensors or module:factory")
    f.add_argument("--keep-fraction", type=float, default=None, help="fraction of each class to keep, in (0, 1]")


def run_generate(args: argparse.Namespace) -> dict:
    """Build the denoiser, sampler and classifiers ``args`` describe, generate, and return the manifest. Under
    ``torchrun`` every process joins the process group (:func:`robaug._core.dist.setup_distributed`)."""
    import torch

    from .._core.dist import setup_distributed, teardown_distributed
    from ..diffusion.contrastive import ContrastiveGuidedSampler
    from ..diffusion.samplers import GuidedDiffusion
    from ..recipes.generation import generate_dataset

    check_arguments(args)
    quiet = bool(getattr(args, "quiet", False))  # robaug.cli's run_main sets ROBAUG_QUIET while the command runs
    info = setup_distributed(args.device)
    device = info.device
    try:

        dtype = getattr(torch, args.model_dtype)
        denoiser = _load_denoiser(args.model, progress=info.main and not quiet)
        denoiser = denoiser.to(device=device, dtype=dtype) if dtype != torch.float32 else denoiser.to(device)
        denoiser.eval()
        model_nc = getattr(denoiser, "num_classes", None)
        if args.num_classes is not None and model_nc is not None and args.num_classes > model_nc:
            raise ValueError(f"--num-classes {args.num_classes}: the model {args.model} has {model_nc} classes; use "
                             f"--num-classes <= {model_nc} or leave it out")
        nc = args.num_classes if args.num_classes is not None else model_nc
        in_ch = int(denoiser.in_channels)
        kw: dict[str, Any] = dict(
            num_steps=args.steps, solver=args.solver, sigma_min=args.sigma_min, sigma_max=args.sigma_max, rho=args.rho,
            cfg_scale=args.cfg_scale, s_churn=args.s_churn, s_tmin=args.s_tmin, s_tmax=args.s_tmax,
            s_noise=args.s_noise, eta=args.eta, discretization=args.discretization,
            timestep_spacing=args.timestep_spacing, round_sigmas=not args.no_round_sigmas,
            clip_denoised=args.clip_denoised, state_dtype=getattr(torch, args.state_dtype),
            image_size=args.image_size,
        )
        if args.classifier:
            kw.update(classifier=load_classifier(args.classifier, nc, in_ch, device),
                      classifier_scale=args.classifier_scale, classifier_mode=args.classifier_mode,
                      classifier_weighting=args.classifier_weighting)
        if args.contrastive_encoder:
            sampler = ContrastiveGuidedSampler(
                denoiser, load_classifier(args.contrastive_encoder, nc, in_ch, device),
                contrastive_scale=args.contrastive_scale, contrastive_loss=args.contrastive_loss,
                contrastive_weighting=args.contrastive_weighting, tau=args.tau,
                tau_plus=args.tau_plus, beta=args.beta, head_lr=args.head_lr, head_seed=args.head_seed,
                contrastive_sigma_range=(args.contrastive_sigma_min, args.contrastive_sigma_max), **kw)
        else:
            sampler = GuidedDiffusion(denoiser, **kw)
        filt = load_classifier(args.filter_classifier, nc, in_ch, device) if args.filter_classifier else None
        classes = None
        manifest = generate_dataset(
            args.out, sampler, args.num_samples, shard_size=args.shard_size, batch_size=args.batch_size,
            seed=args.seed, num_classes=None if args.unconditional else nc, unconditional=args.unconditional,
            classes=classes, layout=args.layout, filter_classifier=filt,
            keep_fraction=args.keep_fraction, model_name=args.model, overwrite=args.overwrite, verify=args.verify,
            progress=not (args.no_progress or quiet), lock_timeout=args.lock_timeout,
        )
        if info.main:
            sel = manifest.get("selection")
            extra = f", {sel['count']} selected" if sel else ""
            print(f"{args.out}: {manifest['num_samples']} images in {manifest['num_shards']} shards{extra}")
        return manifest
    finally:
        teardown_distributed(info)


#: float flags that may be infinite ("no limit"); every other float flag must be finite
_INF_OK = {"s_tmax", "contrastive_sigma_max", "lock_timeout"}


def check_arguments(args: argparse.Namespace) -> None:
    """Refuse bad numbers before any model is loaded (``ValueError`` naming the flag): NaN/inf settings (they
    would make every image NaN), counts below 1, ``--keep-fraction`` outside ``(0, 1]``, an ``--out`` that is a
    file. The sampler constructors check the remaining ranges."""
    for dest, value in sorted(vars(args).items()):
        flag = "--" + dest.replace("_", "-")
        if isinstance(value, float) and not math.isfinite(value) and not (dest in _INF_OK and value == math.inf):
            raise ValueError(f"{flag} must be a finite number, got {value}")
    for dest in ("num_samples", "shard_size", "batch_size", "steps", "image_size", "num_classes"):
        value = getattr(args, dest, None)
        if value is not None and value < 1:
            raise ValueError(f"--{dest.replace('_', '-')} must be >= 1, got {value}")
    if args.keep_fraction is not None and not 0.0 < args.keep_fraction <= 1.0:
        raise ValueError(f"--keep-fraction must lie in (0, 1], got {args.keep_fraction}")
    if args.unconditional and args.filter_classifier is None:
        raise ValueError("--unconditional needs --filter-classifier (and --keep-fraction): the classifier's "
                         "prediction is each image's label")
    if args.unconditional and args.classifier:
        raise ValueError("--unconditional with --classifier: classifier guidance needs the classes to guide towards")
    if (args.keep_fraction is None) != (args.filter_classifier is None):
        raise ValueError("confidence filtering needs both --filter-classifier and --keep-fraction")
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise ValueError(f"--out {args.out} is a file, not a folder: choose another output folder")


def run(args: argparse.Namespace) -> int:
    """Execute parsed ``robaug generate`` arguments; returns the exit code."""
    run_generate(args)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``robaug generate`` (shared ``robaug`` conventions: defaults shown, ``--debug``)."""
    from ._common import make_parser

    p = make_parser("generate", DESCRIPTION, EXAMPLES)
    add_arguments(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """``robaug generate ARGV``: a user error prints one line and returns 2 (``--debug``: the traceback)."""
    from ._common import run_main

    return run_main("generate", build_parser(), run, argv)


def main_generate(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` as ``robaug generate`` does and generate, letting errors propagate as exceptions (for callers
    that handle them; ``main`` reports them in one line)."""
    run_generate(build_parser().parse_args(None if argv is None else list(argv)))
    return 0


if __name__ == "__main__":  # `python -m robaug.cli.generate` (torchrun -m robaug generate does the same)
    raise SystemExit(main())
