"""Tests for robaug.models: parameter counts against published figures, shapes on Fashion-MNIST and CIFAR sizes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from robaug.models import Normalized, ViT, WideResNet, create_model, list_models


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _meta(name: str, num_classes: int, **kw) -> nn.Module:
    with torch.device("meta"):  # shapes only: no memory, no init cost
        return create_model(name, num_classes, **kw)


def test_registry_lists_the_recipe_models():
    names = list_models()
    for n in ("preact_resnet18", "wrn_40_4", "wrn_28_10", "wrn_16_2", "vit_tiny", "resnet50", "vit_b_16", "small_cnn"):
        assert n in names
    with pytest.raises(ValueError, match="unknown model"):
        create_model("resnet1000", 10)
    with pytest.raises(ValueError, match="num_classes"):
        create_model("small_cnn", 0)


@pytest.mark.parametrize(
    "name,num_classes,expected,tol",
    [
        # Zagoruyko & Komodakis 2016: WRN-28-10 36.5M; the exact count of the reference implementation
        ("wrn_28_10", 10, 36_479_194, 0),
        ("wrn_40_4", 10, 8.9e6, 0.05e6),  # 8.9M (WRN paper / IPMix table)
        ("wrn_40_2", 10, 2.2e6, 0.05e6),  # 2.2M (AugMix)
        ("wrn_16_2", 10, 0.69e6, 0.01e6),
        # He et al. 2016 pre-activation ResNet-18 for CIFAR: 11.2M
        ("preact_resnet18", 10, 11.2e6, 0.05e6),
        # torchvision's documented counts for 1000 classes
        ("resnet50", 1000, 25_557_032, 0),
        ("vit_b_16", 1000, 86_567_656, 0),
        ("vit_tiny", 10, 5.36e6, 0.05e6),  # DeiT-Tiny widths (5.7M at 224 with 1000 classes)
    ],
)
def test_parameter_counts(name, num_classes, expected, tol):
    n = _count(_meta(name, num_classes))
    assert abs(n - expected) <= tol, f"{name}: {n:,} parameters"


def test_wrn_structure():
    with torch.device("meta"):
        m = WideResNet(28, 10)
    convs = [mod for mod in m.modules() if isinstance(mod, nn.Conv2d) and mod.kernel_size == (3, 3)]
    assert len(convs) == 1 + 2 * 12  # stem + 2 per block, (28 - 4) / 6 = 4 blocks in each of 3 stages
    assert m.fc.in_features == 640
    with pytest.raises(ValueError, match="6n \\+ 4"):
        WideResNet(27, 10)
    silu = WideResNet(16, 2, activation="silu")
    assert any(isinstance(mod, nn.SiLU) for mod in silu.modules())
    assert not any(isinstance(mod, nn.ReLU) for mod in silu.modules())
    with pytest.raises(ValueError, match="activation"):
        WideResNet(16, 2, activation="tanh")


FAST = ["small_cnn", "cnn_mlp", "wrn_16_2", "preact_resnet18", "vit_tiny", "resnet50"]


@pytest.mark.parametrize("name", FAST)
@pytest.mark.parametrize("channels,size", [(1, 28), (3, 32)])
def test_forward_shapes_on_fashion_mnist_and_cifar(name, channels, size):
    torch.manual_seed(0)
    kw = {"img_size": size}  # every model accepts img_size; conv nets ignore it
    m = create_model(name, 10, in_channels=channels, **kw).eval()
    with torch.no_grad():
        out = m(torch.rand(2, channels, size, size))
    assert out.shape == (2, 10) and torch.isfinite(out).all()


@pytest.mark.parametrize("channels,size", [(1, 28), (3, 32)])
def test_vit_b_16_takes_small_images(channels, size):
    # built at 32 (28 rounded up to a multiple of 16); 28x28 inputs are resized inside
    m = create_model("vit_b_16", 10, in_channels=channels, img_size=size, num_layers=1).eval()
    assert m.image_size == 32
    with torch.no_grad():
        out = m(torch.rand(2, channels, size, size))
    assert out.shape == (2, 10)


def test_wide_resnet_28_10_forward_slow_but_correct():
    m = create_model("wrn_28_10", 10, in_channels=1).eval()
    with torch.no_grad():
        assert m(torch.rand(1, 1, 28, 28)).shape == (1, 10)


def test_resnet50_cifar_stem_and_channels():
    m = create_model("resnet50", 10, in_channels=1, cifar_stem=True)
    assert m.conv1.kernel_size == (3, 3) and m.conv1.in_channels == 1 and isinstance(m.maxpool, nn.Identity)
    # a torchvision state_dict layout is kept (so torchvision checkpoints of the same shapes load)
    assert "conv1.weight" in m.state_dict() and "fc.weight" in m.state_dict()


def test_vit_patch_size_and_position_interpolation():
    v = ViT(img_size=28, patch_size=7, in_channels=1, num_classes=3, embed_dim=32, depth=2, num_heads=2)
    assert v.pos_embed.shape == (1, 1 + 16, 32)
    assert v(torch.rand(2, 1, 28, 28)).shape == (2, 3)
    assert v(torch.rand(2, 1, 14, 14)).shape == (2, 3)  # 2x2 grid: interpolated position embeddings
    with pytest.raises(ValueError, match="multiple of the patch size"):
        v(torch.rand(1, 1, 30, 30))
    with pytest.raises(ValueError, match="multiple of patch_size"):
        ViT(img_size=30, patch_size=4)


def test_models_train_one_step():
    # gradients reach every parameter
    for name in ("small_cnn", "cnn_mlp", "wrn_16_2", "vit_tiny"):
        torch.manual_seed(0)
        m = create_model(name, 10, in_channels=1, img_size=28, **({"depth": 2} if name == "vit_tiny" else {}))
        loss = nn.functional.cross_entropy(m(torch.rand(4, 1, 28, 28)), torch.tensor([0, 1, 2, 3]))
        loss.backward()
        missing = [n for n, p in m.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
        assert not missing, f"{name}: no gradient for {missing}"


def test_cnn_mlp_layout_and_features():
    # width 16: conv 1->16, conv 16->32, 32*7*7 -> 128 -> 10 = 206,970 parameters for one input channel
    m = create_model("cnn_mlp", 10, in_channels=1, width=16).eval()
    assert sum(p.numel() for p in m.parameters()) == 16 * 9 + 2 * 16 + 32 * 16 * 9 + 2 * 32 + 1568 * 128 + 128 + 1290
    x = torch.rand(3, 1, 28, 28)
    with torch.no_grad():
        feats = m.forward_features(x)
        assert feats.shape == (3, m.num_features) == (3, 128) and bool((feats >= 0).all())  # after the ReLU
        assert torch.equal(m.fc(feats), m(x))
        # 32x32 inputs reach the same head through the adaptive 7x7 pool
        assert m(torch.rand(2, 1, 32, 32)).shape == (2, 10)
    with pytest.raises(ValueError, match="width and hidden"):
        create_model("cnn_mlp", 10, width=0)


def test_normalized_wrapper():
    class Echo(nn.Module):
        def forward(self, x):
            return x

    m = Normalized(Echo(), mean=[0.5], std=[0.25])
    x = torch.rand(2, 1, 4, 4)
    torch.testing.assert_close(m(x), (x - 0.5) / 0.25)
    assert set(m.state_dict()) == {"mean", "std"}
    with pytest.raises(ValueError, match="positive"):
        Normalized(Echo(), [0.0], [0.0])
