"""The weights registry: a name -> where its safetensors live, their sha256, the architecture, licence, dataset.

An entry describes one diffusers ``UNet2DModel`` checkpoint plus the DDPM noise schedule it was trained
with. Weights come from one of three places:

* ``source="hub"``: a Hugging Face Hub repo at a pinned ``revision`` (a commit hash where known);
* ``source="url"``: plain https URLs (one per file);
* ``source="package"``: files shipped inside ``robaug/weights/``;
* ``source="convert"``: a paper's model that robaug cannot fetch as safetensors (no copy with a clear licence
  could be verified): the entry names the official file (``official_url``) and the ``robaug convert`` preset
  (``convert_arch``); ``load_denoiser(name)`` loads ``<cache>/converted/<name>/`` or says what to run.

The architecture is either given inline (``unet_config`` / ``scheduler_config``) or read from a robaug
JSON file among ``files`` that holds ``{"unet": {...}, "scheduler": {...}, "null_label": ..., ...}``.
Only ``.safetensors`` and ``.json`` files can be listed: nothing a registry entry fetches is ever unpickled.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal, Mapping

from robaug._core.registry import Registry

from ..diffusion._ddpm import ddpm_scheduler_config

__all__ = [
    "WeightFile",
    "WeightsEntry",
    "register_weights",
    "get_entry",
    "list_pretrained",
    "FMNIST_DDPM_SHA256",
]

Source = Literal["hub", "url", "package", "convert"]
_ALLOWED_SUFFIXES = (".safetensors", ".json")


@dataclass(frozen=True)
class WeightFile:
    """One file of an entry: its name (path inside the Hub repo / package, or the cache name for a URL),
    its sha256 when known, and for ``source="url"`` the https URL it is fetched from."""

    filename: str
    sha256: str | None = None
    url: str | None = None

    def __post_init__(self) -> None:
        if not self.filename.endswith(_ALLOWED_SUFFIXES):
            raise ValueError(
                f"registry file {self.filename!r}: only .safetensors and .json files may be listed "
                "(robaug never unpickles downloaded files, so .bin/.pt/.ckpt are not allowed)"
            )
        if self.sha256 is not None and (len(self.sha256) != 64
                                        or any(c not in "0123456789abcdef" for c in self.sha256.lower())):
            raise ValueError(f"registry file {self.filename!r}: sha256 must be 64 hex digits, got {self.sha256!r}")


def _freeze(cfg: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    return None if cfg is None else MappingProxyType(dict(cfg))


@dataclass(frozen=True)
class WeightsEntry:
    """A pretrained denoiser robaug knows how to fetch and build (cf. timm's ``pretrained_cfg``).

    Attributes:
        name: registry key, e.g. ``"google/ddpm-cifar10-32"`` or ``"fmnist-ddpm"``.
        source: ``"hub"``, ``"url"`` or ``"package"``.
        files: the files to fetch; the first ``.safetensors`` file holds the UNet weights.
        repo_id, revision: Hub repo and the revision to pin (a 40-hex commit where known, else a branch).
        unet_config: diffusers ``UNet2DModel`` config (``None`` -> read ``"unet"`` from the entry's JSON file).
        scheduler_config: diffusers ``DDPMScheduler`` config (``None`` -> JSON file's ``"scheduler"``).
        null_label: class index meaning "no class" for class-conditional models trained with label dropout.
        num_classes, resolution, in_channels, dataset, license, description, notes: metadata.
        official_url, convert_arch: ``source="convert"`` only: the official file and its ``--arch`` preset.
    """

    name: str
    source: Source
    files: tuple[WeightFile, ...]
    repo_id: str | None = None
    revision: str | None = None
    unet_config: Mapping[str, Any] | None = None
    scheduler_config: Mapping[str, Any] | None = None
    null_label: int | None = None
    num_classes: int | None = None
    resolution: int | None = None
    in_channels: int | None = None
    dataset: str = ""
    license: str = ""
    description: str = ""
    notes: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)
    official_url: str | None = None
    convert_arch: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "files", tuple(self.files))
        object.__setattr__(self, "unet_config", _freeze(self.unet_config))
        object.__setattr__(self, "scheduler_config", _freeze(self.scheduler_config))
        object.__setattr__(self, "extra", MappingProxyType(dict(self.extra)))
        if self.source not in ("hub", "url", "package", "convert"):
            raise ValueError(
                f"entry {self.name!r}: source must be 'hub', 'url', 'package' or 'convert', got {self.source!r}")
        if self.source == "convert":
            if self.files or not (self.official_url and self.official_url.startswith("https://")):
                raise ValueError(f"entry {self.name!r}: source='convert' takes official_url (https) and no files")
            return
        if not any(f.filename.endswith(".safetensors") for f in self.files):
            raise ValueError(f"entry {self.name!r}: needs one .safetensors file in `files`")
        if self.source == "hub" and not (self.repo_id and self.revision):
            raise ValueError(f"entry {self.name!r}: source='hub' needs repo_id and revision")
        if self.source == "url":
            for f in self.files:
                if not (f.url and f.url.startswith(("https://", "http://"))):
                    raise ValueError(f"entry {self.name!r}: file {f.filename!r} needs an https url")
        if self.unet_config is None and self.config_file is None:
            raise ValueError(
                f"entry {self.name!r}: give unet_config/scheduler_config inline or list a .json file "
                'holding {"unet": ..., "scheduler": ...}'
            )

    @property
    def weights_file(self) -> WeightFile:
        """The safetensors file holding the UNet state dict."""
        if self.source == "convert":
            raise ValueError(f"entry {self.name!r} has no downloadable weights; "
                             f"it is converted from {self.official_url}")
        return next(f for f in self.files if f.filename.endswith(".safetensors"))

    @property
    def config_file(self) -> WeightFile | None:
        """The robaug JSON config file, if the architecture is not given inline."""
        return next((f for f in self.files if f.filename.endswith(".json")), None)

    @property
    def pinned(self) -> bool:
        """True when the source is immutable: a Hub commit hash, or every file has a sha256."""
        if self.source == "hub" and self.revision and len(self.revision) == 40:
            return True
        if self.source == "convert":
            return False
        return all(f.sha256 for f in self.files if f.filename.endswith(".safetensors"))

    def with_revision(self, revision: str) -> "WeightsEntry":
        """The same Hub entry at another revision; sha256 values no longer apply and are dropped."""
        if self.source != "hub":
            raise ValueError(f"entry {self.name!r} is not on the Hub (source={self.source!r}); "
                             "revision= does not apply")
        if revision == self.revision:
            return self
        files = tuple(dataclasses.replace(f, sha256=None) for f in self.files)
        return dataclasses.replace(self, revision=revision, files=files)


_REGISTRY: Registry[WeightsEntry] = Registry("pretrained weights")


def register_weights(entry: WeightsEntry, *, overwrite: bool = False) -> WeightsEntry:
    """Add ``entry`` to the registry so ``load_denoiser(entry.name)`` finds it. Returns the entry."""
    if not isinstance(entry, WeightsEntry):
        raise TypeError(f"register_weights expects a WeightsEntry, got {type(entry).__name__}")
    return _REGISTRY.register(entry.name, entry, overwrite=overwrite)


def get_entry(name: str) -> WeightsEntry:
    """The registry entry called ``name`` (KeyError listing the known names otherwise)."""
    return _REGISTRY[name]


def list_pretrained() -> list[str]:
    """Names of all registered pretrained denoisers, sorted."""
    return sorted(_REGISTRY.names())


# --------------------------------------------------------------------------------------------------------
# Built-in entries
# --------------------------------------------------------------------------------------------------------

#: sha256 of robaug/weights/fmnist-ddpm.safetensors. ``None`` falls back to the ``"sha256"`` recorded in
#: fmnist-ddpm.json next to it (same package, so that only catches corruption, not tampering).
FMNIST_DDPM_SHA256: str | None = "9b394dee54d88528ffff2870d90a66b0e86405431ed80ff6d5e1391499451562"

register_weights(WeightsEntry(
    name="fmnist-ddpm",
    source="package",
    files=(WeightFile("fmnist-ddpm.safetensors", sha256=FMNIST_DDPM_SHA256), WeightFile("fmnist-ddpm.json")),
    null_label=10,
    num_classes=10,
    resolution=28,
    in_channels=1,
    dataset="Fashion-MNIST (train split)",
    license="Apache-2.0",
    description="robaug's built-in class-conditional DDPM (label dropout -> also unconditional), "
                "trained by examples/train_denoiser.py; shipped with the package, no download.",
))

# The DDPM checkpoints of Ho et al. (2020) as converted to diffusers by Google / Hugging Face.
# All share the DDPM training schedule: linear betas 1e-4..0.02, T = 1000, epsilon prediction.
_DDPM_SCHEDULER = ddpm_scheduler_config(variance_type="fixed_small", clip_sample=True)
_DDPM_COMMON = {
    "_class_name": "UNet2DModel",
    "in_channels": 3,
    "out_channels": 3,
    "layers_per_block": 2,
    "act_fn": "silu",
    "attention_head_dim": None,
    "center_input_sample": False,
    "downsample_padding": 0,
    "flip_sin_to_cos": False,
    "freq_shift": 1,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-06,
    "norm_num_groups": 32,
    "time_embedding_type": "positional",
}
_DDPM_CIFAR10_UNET = {
    **_DDPM_COMMON,
    "sample_size": 32,
    "block_out_channels": [128, 256, 256, 256],
    "down_block_types": ["DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"],
}
_DDPM_256_UNET = {
    **_DDPM_COMMON,
    "sample_size": 256,
    "block_out_channels": [128, 128, 256, 256, 512, 512],
    "down_block_types": ["DownBlock2D", "DownBlock2D", "DownBlock2D", "DownBlock2D", "AttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "AttnUpBlock2D", "UpBlock2D", "UpBlock2D", "UpBlock2D", "UpBlock2D"],
}
_SAFETENSORS = "diffusion_pytorch_model.safetensors"
_NO_SAFETENSORS_NOTE = (
    "No diffusion_pytorch_model.safetensors was found in this repo when the registry was written (only the "
    "pickled diffusion_pytorch_model.bin, which robaug refuses to load), so neither a commit nor a sha256 "
    "could be pinned: revision 'main' is used and the download fails with a clear error until the repo "
    "publishes safetensors. See docs/weights.md for converting the .bin yourself."
)


def _google_ddpm(repo: str, revision: str, sha256: str | None, unet: dict, resolution: int, dataset: str,
                 notes: str = "") -> WeightsEntry:
    return WeightsEntry(
        name=repo,
        source="hub",
        repo_id=repo,
        revision=revision,
        files=(WeightFile(_SAFETENSORS, sha256=sha256),),
        unet_config=unet,
        scheduler_config=_DDPM_SCHEDULER,
        resolution=resolution,
        in_channels=3,
        dataset=dataset,
        license="Apache-2.0",
        description=f"DDPM (Ho et al. 2020), unconditional, {dataset} {resolution}x{resolution}.",
        notes=notes,
    )


register_weights(_google_ddpm(
    "google/ddpm-cifar10-32",
    revision="267b167dc01f0e4e61923ea244e8b988f84deb80",  # "Adding `safetensors` variant of this model (#14)"
    sha256="1558dbe3fb093b0857d473e376b711eeda1b186c557be5e85b3a56300cd49f0f",  # 143 MB
    unet=_DDPM_CIFAR10_UNET, resolution=32, dataset="CIFAR-10",
))
register_weights(_google_ddpm(
    "google/ddpm-cat-256",
    revision="82ca0d5db4a5ec6ff0e9be8d86852490bc18a3d9",  # "Adding `safetensors` variant of this model (#3)"
    sha256="0806be43de621861d03d96670492ea2e65943c96155b5d1c81bcc813668946a9",  # 455 MB
    unet=_DDPM_256_UNET, resolution=256, dataset="LSUN Cat",
))
register_weights(_google_ddpm(
    "google/ddpm-celebahq-256", revision="main", sha256=None,
    unet=_DDPM_256_UNET, resolution=256, dataset="CelebA-HQ", notes=_NO_SAFETENSORS_NOTE,
))
register_weights(_google_ddpm(
    "google/ddpm-church-256", revision="main", sha256=None,
    unet=_DDPM_256_UNET, resolution=256, dataset="LSUN Church", notes=_NO_SAFETENSORS_NOTE,
))
register_weights(_google_ddpm(
    "google/ddpm-bedroom-256", revision="main", sha256=None,
    unet=_DDPM_256_UNET, resolution=256, dataset="LSUN Bedroom", notes=_NO_SAFETENSORS_NOTE,
))


# The papers' own models (issue 12). Their official files are pickles (.pt state dicts, EDM .pkl); no
# safetensors copy with a clear licence could be verified from here, so robaug converts them locally.
_GD_URL = "https://openaipublic.blob.core.windows.net/diffusion/jul-2021/"
_GD_NOTE = ("the official file is a torch .pt state dict; `robaug convert` reads it with "
            "torch.load(weights_only=True)")


def _adm(name: str, file: str, arch: str, *, classes: int | None, resolution: int, size: str,
         description: str) -> WeightsEntry:
    return WeightsEntry(
        name=name, source="convert", files=(), official_url=_GD_URL + file, convert_arch=arch,
        num_classes=classes, resolution=resolution, in_channels=3, dataset="ImageNet (ILSVRC-2012)",
        license="MIT (openai/guided-diffusion)", description=description, notes=_GD_NOTE, extra={"size": size},
    )


register_weights(_adm(
    "adm-imagenet-256-uncond", "256x256_diffusion_uncond.pt", "256x256_diffusion_uncond", classes=None,
    resolution=256, size="2.2 GB",
    description="ADM (Dhariwal & Nichol 2021), unconditional ImageNet 256x256, learned variance, linear "
                "schedule: the DiffAug paper's (Sastry et al. 2024) denoiser for ImageNet.",
))
register_weights(_adm(
    "adm-imagenet-64-cond", "64x64_diffusion.pt", "64x64_diffusion", classes=1000, resolution=64, size="1.2 GB",
    description="ADM, class-conditional ImageNet 64x64 (no null class: no CFG), cosine schedule; guide it "
                "with adm-imagenet-64-classifier.",
))
register_weights(_adm(
    "adm-imagenet-64-classifier", "64x64_classifier.pt", "64x64_classifier", classes=1000, resolution=64,
    size="0.26 GB",
    description="ADM's noisy ImageNet 64x64 classifier for classifier guidance (load_classifier, not "
                "load_denoiser).",
))
register_weights(_adm(
    "adm-imagenet-256-classifier", "256x256_classifier.pt", "256x256_classifier", classes=1000, resolution=256,
    size="0.22 GB",
    description="ADM's noisy ImageNet 256x256 classifier for classifier guidance (load_classifier).",
))
register_weights(WeightsEntry(
    name="edm-cifar10-32-cond-vp", source="convert", files=(),
    official_url="https://nvlabs-fi-cdn.nvidia.com/edm/pretrained/edm-cifar10-32x32-cond-vp.pkl",
    num_classes=10, resolution=32, in_channels=3, dataset="CIFAR-10",
    license="CC BY-NC-SA 4.0 (NVlabs/edm; non-commercial, robaug does not redistribute it)",
    description="EDM (Karras et al. 2022) DDPM++ class-conditional CIFAR-10, VP: the generator of DM-Improves-AT "
                "(Wang et al. 2023).",
    notes="the official file is a pickle that carries its own source code; `robaug convert` reads it with a "
          "restricted unpickler that never imports or runs that code",
    extra={"size": "about 56M parameters, 0.22 GB of float32"},
))
