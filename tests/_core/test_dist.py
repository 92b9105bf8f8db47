"""robaug._core.dist: this rank's device and the process group, on a CPU machine."""

import os
import socket
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.distributed as dist
from _paths import subprocess_env

from robaug._core.dist import DistInfo, setup_distributed, teardown_distributed

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the behaviour without CUDA")


@pytest.fixture
def single_process(monkeypatch):
    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)


@pytest.mark.parametrize("device", ["cpu", torch.device("cpu")])
def test_cpu_without_world_size_is_one_process_and_no_group(single_process, device):
    info = setup_distributed(device)
    assert info == DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"), initialised_here=False)
    assert info.main
    assert not dist.is_initialized()
    teardown_distributed(info)  # a no-op: nothing was created here
    assert not dist.is_initialized()


@no_cuda
@pytest.mark.parametrize("device", ["auto", None])
def test_auto_falls_back_to_cpu_without_cuda(single_process, device):
    info = setup_distributed(device)
    assert info.device == torch.device("cpu") and info.world_size == 1 and not info.initialised_here


@no_cuda
@pytest.mark.parametrize("device", ["cuda", torch.device("cuda"), "cuda:0", "cuda:1", torch.device("cuda", 0)])
def test_cuda_without_cuda_is_a_clear_error(single_process, device):
    with pytest.raises(RuntimeError, match=r"CUDA is not available; use --device cpu"):
        setup_distributed(device)


def test_bad_device_string_is_an_error(single_process):
    with pytest.raises(RuntimeError, match="gpu"):
        setup_distributed("gpu")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_cpu_ranks_join_a_gloo_group_and_leave_it(tmp_path):
    script = textwrap.dedent("""
        import torch, torch.distributed as dist
        from robaug._core.dist import setup_distributed, teardown_distributed
        info = setup_distributed("cpu")
        t = torch.tensor([float(info.rank + 1)])
        dist.all_reduce(t)
        print(info.rank, info.world_size, info.local_rank, info.device, info.initialised_here,
              dist.get_backend(), float(t))
        teardown_distributed(info)
        print(dist.is_initialized())
    """)
    port = _free_port()
    procs = []
    for rank in range(2):
        env = {**os.environ, "WORLD_SIZE": "2", "RANK": str(rank), "LOCAL_RANK": str(rank),
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1",
               "PYTHONPATH": subprocess_env()["PYTHONPATH"]}
        procs.append(subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        outs.append(out.split("\n"))
    for rank, lines in enumerate(outs):
        assert lines[0] == f"{rank} 2 {rank} cpu True gloo 3.0"  # 1 + 2 summed over the two ranks
        assert lines[1] == "False"
