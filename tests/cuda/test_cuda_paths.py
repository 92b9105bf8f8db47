"""The CUDA-only paths, checked against the CPU results they must equal (run by scripts/gpu_check.sh; skipped
without a GPU). Each test compares the GPU path with an independent CPU computation of the same thing."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

import robaug

pytestmark = pytest.mark.cuda
CUDA = torch.device("cuda")


def _u8(b: int, c: int, s: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (b, c, s, s), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


@pytest.mark.parametrize("size", [32, 224])
def test_ipmix_single_chunk_gpu_path_equals_cpu(size):
    """Drawing on a CPU generator makes the plan identical; the GPU kernels must then give the CPU's images."""
    x = _u8(8, 3, size)
    cpu = robaug.IPMix(generator=torch.Generator().manual_seed(1))(x)
    gpu = robaug.IPMix(generator=torch.Generator().manual_seed(1))(x.to(CUDA))
    assert gpu.device.type == "cuda" and gpu.dtype == torch.uint8
    # uint8 rounding of float results may differ by one level where a value sits on .5
    assert (gpu.cpu().int() - cpu.int()).abs().max() <= 1
    assert (gpu.cpu() != cpu).float().mean() < 0.01


def test_ipmix_cuda_generator_is_reproducible():
    x = _u8(16, 3, 32).to(CUDA)
    a = robaug.IPMix(generator=torch.Generator(CUDA).manual_seed(3))(x)
    b = robaug.IPMix(generator=torch.Generator(CUDA).manual_seed(3))(x)
    assert torch.equal(a, b)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_diffaug_autocast_close_to_fp32(dtype):
    den = robaug.load_denoiser("fmnist-ddpm").to(CUDA)
    x = _u8(16, 1, 28).to(CUDA).float() / 255
    ref = robaug.DiffAug(den, t=200, generator=torch.Generator(CUDA).manual_seed(0))(x)
    low = robaug.DiffAug(den, t=200, generator=torch.Generator(CUDA).manual_seed(0), autocast_dtype=dtype)(x)
    assert torch.isfinite(low).all() and low.dtype == torch.float32
    assert (low - ref).abs().mean() < 0.02


def test_compiled_denoiser_matches_eager():
    den = robaug.load_denoiser("fmnist-ddpm").to(CUDA)
    x = torch.randn(8, 1, 28, 28, device=CUDA)
    sigma = torch.full((8,), 0.7, device=CUDA)
    labels = torch.arange(8, device=CUDA)
    with torch.no_grad():
        eager = den(x, sigma, labels)
        compiled = torch.compile(den)(x, sigma, labels)
    torch.testing.assert_close(compiled, eager, rtol=1e-3, atol=1e-3)


def test_sampler_on_cuda_equals_cpu_given_the_same_noise():
    den_cpu = robaug.load_denoiser("fmnist-ddpm")
    den_gpu = robaug.load_denoiser("fmnist-ddpm").to(CUDA)
    noise = torch.randn(4, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    labels = [0, 3, 5, 9]
    cpu = robaug.GuidedDiffusion(den_cpu, num_steps=6, cfg_scale=2.0).sample(labels, noise=noise)
    gpu = robaug.GuidedDiffusion(den_gpu, num_steps=6, cfg_scale=2.0).sample(labels, noise=noise.to(CUDA))
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-3, atol=2e-3)


def test_trades_fp16_autocast_attack_moves_pixels():
    """Under fp16 autocast the KL input gradient is loss-scaled: the attack must still move the images."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(28 * 28, 64), torch.nn.ReLU(),
                                torch.nn.Linear(64, 10)).to(CUDA)
    x = torch.rand(32, 1, 28, 28, device=CUDA)
    y = torch.randint(0, 10, (32,), device=CUDA)
    with torch.autocast("cuda", dtype=torch.float16):
        out = robaug.trades_loss(model, x, y, eps=0.1, step_size=0.02, steps=5, return_outputs=True)
    assert torch.isfinite(out.loss)
    moved = (out.x_adv - x).abs().flatten(1).amax(1)
    assert (moved > 0.05).float().mean() > 0.9


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_training_step_amp_channels_last(tmp_path, amp):
    from robaug.recipes import TrainConfig, train

    res = train(TrainConfig(train_subset=256, test_subset=64, batch_size=64, model="small_cnn", steps=8, amp=amp,
                            channels_last=True, eval_corruptions=False, progress=False, ckpt_every=0, device="cuda",
                            out_dir=str(tmp_path / amp)))
    import json

    assert 0.0 <= res["clean_accuracy"] <= 1.0
    losses = [json.loads(line)["loss"] for line in (tmp_path / amp / "metrics.jsonl").read_text().splitlines()
              if "loss" in json.loads(line)]
    assert losses and all(torch.isfinite(torch.tensor(v)) for v in losses)


def test_ddp_nccl_one_process(tmp_path):
    """The torchrun + NCCL set-up path (one GPU: world size 1 through torchrun)."""
    from _paths import subprocess_env

    env = subprocess_env()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1", "-m", "robaug",
           "train", "--steps", "4", "--batch-size", "32", "--train-subset", "128", "--test-subset", "64",
           "--device", "cuda", "--no-eval-corruptions", "--out-dir", str(tmp_path / "ddp")]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (tmp_path / "ddp" / "results.json").is_file()
