"""robaug.recipes.evaluate: the evaluation helpers of a training run."""

from __future__ import annotations

import torch

from robaug.recipes.evaluate import SubsetBenchmark


def test_subset_benchmark_truncates():
    from robaug.eval.datasets import InMemoryCorruptionBenchmark

    data = {"fog": torch.randint(0, 256, (2, 10, 1, 4, 4), dtype=torch.uint8)}
    bench = InMemoryCorruptionBenchmark(data, torch.arange(10), severities=[1, 2])
    sub = SubsetBenchmark(bench, 7)
    got = list(sub.batches("fog", 2, batch_size=3))
    assert [len(y) for _, y in got] == [3, 3, 1]
    torch.testing.assert_close(torch.cat([x for x, _ in got]), data["fog"][1, :7].float() / 255)
    assert len(sub.dataset("fog", 1)) == 7
