"""``robaug convert``: ADM ``.pt`` -> safetensors folder -> load_denoiser / DiffAug / load_classifier, checked
against guided-diffusion's own modules (PyPI ``guided-diffusion-sdk``); pickles that run code are refused."""

from __future__ import annotations

import json
import os
import stat
import warnings
from pathlib import Path

import pytest
import torch

import robaug
import robaug.hub as hub
from robaug.cli.convert import main as main_convert
from robaug.diffusion import ADMDenoiser, NoisyClassifier
from robaug.diffusion.nets.adm import UNetModel
from robaug.hub import ConversionRequiredError, UnsafeWeightsError, load_classifier
from robaug.hub._adm_config import ADM_PRESETS
from robaug.hub._converted import converted_cache_dir
from robaug.hub.convert import convert

with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)
    ref_unet = pytest.importorskip("guided_diffusion.unet")

UNET = dict(image_size=16, in_channels=3, model_channels=32, out_channels=6, num_res_blocks=1,
            attention_resolutions=(2, 4), channel_mult=(1, 2, 2), num_classes=None, num_head_channels=16,
            use_scale_shift_norm=True, resblock_updown=True)
CLF = dict(image_size=16, in_channels=3, model_channels=32, out_channels=10, num_res_blocks=2,
           attention_resolutions=(2, 4), channel_mult=(1, 2, 2), num_head_channels=16,
           use_scale_shift_norm=True, resblock_updown=True, pool="attention")
HEADS = {"num_head_channels": 16}


def _random(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.15)
    return module.eval()


@pytest.fixture
def adm_pt(tmp_path):
    ref = _random(ref_unet.UNetModel(**UNET), 0)
    path = tmp_path / "tiny_adm.pt"
    torch.save(ref.state_dict(), path)
    return ref, path


def test_convert_infers_the_architecture_and_round_trips(adm_pt, tmp_path):
    ref, src = adm_pt
    old = os.umask(0o027)
    try:
        dst = convert(src, tmp_path / "out", config={**HEADS, "image_size": 16})
    finally:
        os.umask(old)
    cfg = json.loads((dst / "config.json").read_text())
    assert cfg["format"] == "robaug-converted" and cfg["family"] == "adm"
    kw = cfg["kwargs"]
    for key in ("model_channels", "out_channels", "num_res_blocks", "num_classes", "use_scale_shift_norm",
                "resblock_updown", "in_channels"):
        assert kw[key] == UNET[key], key
    assert kw["channel_mult"] == list(UNET["channel_mult"])
    assert sorted(kw["attention_resolutions"]) == sorted(UNET["attention_resolutions"])
    assert cfg["schedule"]["beta_schedule"] == "linear" and cfg["schedule"]["betas_dtype"] == "float64"
    for name in ("model.safetensors", "config.json"):  # the user's umask, not mkstemp's 0600
        assert stat.S_IMODE((dst / name).stat().st_mode) == 0o640, name
    assert not [p for p in dst.iterdir() if p.name.startswith(".")]  # no temporary files left

    D = hub.load_denoiser(dst)
    assert isinstance(D, ADMDenoiser) and D.sample_size == 16 and D.num_classes is None
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    t = torch.tensor([10, 600])
    sigma = D.timestep_sigmas[t].float()
    with torch.no_grad():
        x_ve = x * (1 + sigma.view(-1, 1, 1, 1) ** 2).sqrt()
        eps = ref(x, t.float())[:, :3]
        want = x_ve - sigma.view(-1, 1, 1, 1) * eps  # x0_hat = x - sigma * eps(x / sqrt(1 + sigma^2), t)
        got = D(x_ve, sigma)
    assert (got - want).abs().max().item() <= 1e-5 * max(1.0, want.abs().max().item())

    # DiffAug(DST) is DiffAug over the same network: same draws, same output
    net = UNetModel(**UNET).eval()
    net.load_state_dict(ref.state_dict())
    imgs = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(4))
    a = robaug.DiffAug(dst, generator=torch.Generator().manual_seed(5))(imgs)
    b = robaug.DiffAug(ADMDenoiser(net), generator=torch.Generator().manual_seed(5))(imgs)
    assert a.shape == imgs.shape and torch.allclose(a, b, atol=1e-6)


def test_arch_preset_that_does_not_fit_is_refused(adm_pt, tmp_path):
    _, src = adm_pt
    with pytest.raises(ValueError, match="the weights say model_channels=32"):
        convert(src, tmp_path / "o", arch="256x256_diffusion_uncond")
    with pytest.raises(ValueError, match="classifier preset"):
        convert(src, tmp_path / "o", arch="64x64_classifier")
    with pytest.raises(ValueError, match="the weights say num_classes=None"):
        convert(src, tmp_path / "o", config={**HEADS, "image_size": 16, "num_classes": 10})
    with pytest.raises(ValueError, match="attention head layout"):
        convert(src, tmp_path / "o", config={"image_size": 16})
    with pytest.raises(ValueError, match="num_head_channels=24"):  # a head width that does not divide 64
        convert(src, tmp_path / "o", config={"image_size": 16, "num_head_channels": 24})
    assert not (tmp_path / "o" / "model.safetensors").exists()


def test_presets_are_the_official_architectures():
    """The presets (guided-diffusion README flags) give the published sizes: 553M parameters (2.2 GB of
    float32, the size of 256x256_diffusion_uncond.pt) for the 256x256 unconditional model, 296M for 64x64."""
    from robaug.diffusion.nets.adm import EncoderUNetModel, UNetModel

    counts = {}
    for name in ("256x256_diffusion_uncond", "64x64_diffusion", "64x64_classifier"):
        family, kw, _ = ADM_PRESETS[name]
        with torch.device("meta"):
            net = (UNetModel if family == "adm" else EncoderUNetModel)(**kw)
        counts[name] = sum(p.numel() for p in net.parameters()) / 1e6
    assert round(counts["256x256_diffusion_uncond"]) == 553
    assert round(counts["64x64_diffusion"]) == 296
    assert ADM_PRESETS["64x64_diffusion"][2] == "cosine" and ADM_PRESETS["256x256_diffusion_uncond"][2] == "linear"


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("how", ["torch.save", "pickle"])
def test_malicious_pt_is_refused_and_nothing_runs(tmp_path, how):
    import pickle

    marker = tmp_path / "pwned"
    src = tmp_path / "evil.pt"
    payload = {"time_embed.0.weight": torch.zeros(2, 2), "x": _Evil(marker)}
    if how == "torch.save":
        torch.save(payload, src)
    else:
        src.write_bytes(pickle.dumps(payload))
    with pytest.raises(UnsafeWeightsError, match="weights_only"):
        convert(src, tmp_path / "out")
    assert not marker.exists()
    assert main_convert([str(src), str(tmp_path / "out2")]) == 2  # a user error: one line, exit 2
    assert not marker.exists() and not (tmp_path / "out2" / "model.safetensors").exists()


def test_other_formats_are_refused(tmp_path):
    for name in ("model.ckpt", "model.bin", "weights.npz"):
        p = tmp_path / name
        p.write_bytes(b"\x80\x04K\x01.")
        with pytest.raises(UnsafeWeightsError, match="refused"):
            convert(p, tmp_path / "out")


def test_classifier_converts_and_guides_like_the_reference(tmp_path):
    ref = _random(ref_unet.EncoderUNetModel(**CLF), 1)
    src = tmp_path / "clf.pt"
    torch.save(ref.state_dict(), src)
    assert main_convert([str(src), str(tmp_path / "clf"), "--config", json.dumps(HEADS)]) == 0
    cfg = json.loads((tmp_path / "clf" / "config.json").read_text())
    assert cfg["family"] == "adm-classifier" and cfg["kwargs"]["image_size"] == 16  # from the attention pool
    assert cfg["kwargs"]["pool"] == "attention" and cfg["kwargs"]["num_res_blocks"] == 2
    clf = load_classifier(tmp_path / "clf")
    assert isinstance(clf, NoisyClassifier) and clf.guidance_space == "xt"
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    t = torch.tensor([3, 900])
    with torch.no_grad():
        assert (clf(x, clf.timestep_sigmas[t]) - ref(x, t.float())).abs().max().item() <= 1e-5
    with pytest.raises(ValueError, match="noisy classifier"):
        hub.load_denoiser(tmp_path / "clf")
    # `robaug generate --classifier FOLDER` takes the converted folder and guides in x_t by default
    from robaug.cli.generate import load_classifier as generate_classifier

    via_cli = generate_classifier(str(tmp_path / "clf"), None, 3, torch.device("cpu"))
    assert isinstance(via_cli, NoisyClassifier) and via_cli.guidance_space == "xt"
    with torch.no_grad():
        assert torch.equal(via_cli(x, clf.timestep_sigmas[t]), clf(x, clf.timestep_sigmas[t]))


def test_registry_entries_name_the_convert_command(tmp_path, adm_pt):
    for name, arch in (("adm-imagenet-256-uncond", "256x256_diffusion_uncond"),
                       ("adm-imagenet-64-cond", "64x64_diffusion")):
        e = hub.get_entry(name)
        assert e.source == "convert" and e.license.startswith("MIT") and e.official_url.endswith(f"/{arch}.pt")
        with pytest.raises(ConversionRequiredError) as err:
            hub.load_denoiser(name, cache_dir=tmp_path)
        msg = str(err.value)
        assert f"robaug convert {arch}.pt {converted_cache_dir(name, tmp_path)} --arch {arch}" in msg
        assert e.official_url in msg
        with pytest.raises(ConversionRequiredError):
            hub.download_weights(name, cache_dir=tmp_path)
    with pytest.raises(ConversionRequiredError, match="--arch 64x64_classifier"):
        load_classifier("adm-imagenet-64-classifier", cache_dir=tmp_path)
    edm = hub.get_entry("edm-cifar10-32-cond-vp")
    assert "CC BY-NC-SA 4.0" in edm.license and edm.official_url.endswith("edm-cifar10-32x32-cond-vp.pkl")
    with pytest.raises(ConversionRequiredError, match=r"robaug convert edm-cifar10-32x32-cond-vp\.pkl \S+\n"):
        hub.load_denoiser("edm-cifar10-32-cond-vp", cache_dir=tmp_path)
    # once converted into the folder the message names, the registry name loads it
    _, src = adm_pt
    convert(src, converted_cache_dir("adm-imagenet-256-uncond", tmp_path), config={**HEADS, "image_size": 16})
    assert isinstance(hub.load_denoiser("adm-imagenet-256-uncond", cache_dir=tmp_path), ADMDenoiser)


EDM_FIXTURES = Path("/work/shared/fixtures/edm")


@pytest.mark.skipif(not (EDM_FIXTURES / "vp-ddpmpp-cond.pkl").is_file(), reason="EDM fixtures not available")
def test_edm_pickle_goes_through_the_restricted_converter(tmp_path):
    pytest.importorskip("robaug.hub.convert_edm")
    from safetensors.torch import load_file

    dst = convert(EDM_FIXTURES / "vp-ddpmpp-cond.pkl", tmp_path / "edm")
    assert json.loads((dst / "config.json").read_text())["family"] == "edm"
    D = hub.load_denoiser(dst)
    case = load_file(str(EDM_FIXTURES / "vp-ddpmpp-cond.safetensors"))
    with torch.no_grad():
        got = D(case["x"], case["sigma"], case["labels"])
    err = ((got - case["out"]).abs().amax(dim=(1, 2, 3)) / case["sigma"].clamp(min=1)).max().item()
    assert err <= 1e-5


def test_cli_convert_then_generate_with_the_folder(tmp_path):
    """`robaug convert` through the top-level CLI, then `robaug generate --model DST` gives the same images as
    GuidedDiffusion over load_denoiser(DST) with the same seeds (the CLI really samples from the converted net)."""
    from robaug.cli import main as cli_main
    from robaug.data.shards import load_shards
    from robaug.recipes.generation import generate_dataset

    kw = {**UNET, "num_classes": 3, "out_channels": 3}
    ref = _random(ref_unet.UNetModel(**kw), 11)
    torch.save(ref.state_dict(), tmp_path / "cond.pt")
    dst = tmp_path / "cond"
    assert cli_main(["convert", str(tmp_path / "cond.pt"), str(dst), "--config",
                     json.dumps({**HEADS, "image_size": 16})]) == 0
    args = ["--model", str(dst), "--num-samples", "3", "--batch-size", "3", "--shard-size", "3", "--steps", "2",
            "--no-progress", "--device", "cpu", "--out", str(tmp_path / "gen")]
    assert cli_main(["generate", *args]) == 0
    images, labels = load_shards(tmp_path / "gen")
    generate_dataset(tmp_path / "py", robaug.GuidedDiffusion(hub.load_denoiser(dst), num_steps=2), 3,
                     batch_size=3, shard_size=3, progress=False)
    images_py, labels_py = load_shards(tmp_path / "py")
    assert labels.tolist() == [0, 1, 2] and torch.equal(labels, labels_py)
    assert torch.equal(images, images_py) and images.float().std() > 1  # not a constant image


_LAYOUTS = {
    "updown_learned_sigma": UNET,
    "conv_resample_cond": dict(image_size=16, in_channels=3, model_channels=32, out_channels=3, num_res_blocks=2,
                               attention_resolutions=(1, 2), channel_mult=(1, 2), num_classes=7, num_heads=2),
    "pool_resample": dict(image_size=16, in_channels=1, model_channels=32, out_channels=2, num_res_blocks=1,
                          attention_resolutions=(4,), channel_mult=(1, 1, 2), conv_resample=False, num_heads=1),
    "half_width_first_level": dict(image_size=16, in_channels=3, model_channels=64, out_channels=6, num_res_blocks=1,
                                   attention_resolutions=(2, 4), channel_mult=(0.5, 1, 1), num_head_channels=16,
                                   resblock_updown=True, use_scale_shift_norm=True),
    "classifier_attention": CLF,
    "classifier_spatial": dict(image_size=8, in_channels=3, model_channels=32, out_channels=4, num_res_blocks=1,
                               attention_resolutions=(), channel_mult=(1, 1), pool="spatial"),
    **{name: kw for name, (_, kw, _) in ADM_PRESETS.items()},
}
_DEFAULTS = dict(conv_resample=True, resblock_updown=False, use_scale_shift_norm=False, num_classes=None)


@pytest.mark.parametrize("name", sorted(_LAYOUTS))
def test_shapes_give_back_the_architecture(name):
    """Every value infer_adm_config reads from the shapes is the one the network was built with (meta tensors,
    so the published 2 GB configurations cost nothing)."""
    from robaug.diffusion.nets.adm import EncoderUNetModel
    from robaug.hub._adm_config import infer_adm_config

    kw = _LAYOUTS[name]
    classifier = "pool" in kw
    with torch.device("meta"):
        net = (EncoderUNetModel if classifier else UNetModel)(**kw)
    family, inferred, alternatives = infer_adm_config(net.state_dict())
    assert family == ("adm-classifier" if classifier else "adm") and alternatives == []
    assert {"model_channels", "channel_mult", "num_res_blocks", "attention_resolutions",
            "out_channels"} <= set(inferred)
    for key, value in inferred.items():
        if key == "conv_resample" and kw.get("resblock_updown"):
            continue  # unused (and unknowable) with residual resampling
        want = kw.get(key, _DEFAULTS.get(key))
        if isinstance(value, list):
            assert sorted(value) == sorted(want), key
        else:
            assert value == want, key
