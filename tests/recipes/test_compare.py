"""robaug.recipes.compare (quick_compare, behind robaug demo) and the quickstart notebook that uses it."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_quickstart_notebook_runs(tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    if not (ROOT / "robaug" / "weights" / "fmnist-ddpm.safetensors").is_file():
        pytest.skip("the built-in fmnist-ddpm weights are not in robaug/weights yet")
    nb = nbformat.read(ROOT / "examples" / "notebooks" / "quickstart.ipynb", as_version=4)
    env_cell = nbformat.v4.new_code_cell(  # tiny settings, and one thread like the rest of the test suite
        "import os\nos.environ['ROBAUG_QUICKSTART_SMALL'] = '1'\n"
        f"os.environ['ROBAUG_CACHE'] = {str(tmp_path / 'cache')!r}\n"
        "import torch\ntorch.set_num_threads(1)\n"
    )
    nb.cells.insert(0, env_cell)
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    outputs = "".join(
        o.get("text", "") for c in nb.cells if c.cell_type == "code"
        for o in c.get("outputs", []) if o.get("output_type") == "stream"
    )
    assert "clean accuracy" in outputs
    assert not [o for c in nb.cells if c.cell_type == "code"
                for o in c.get("outputs", []) if o.get("output_type") == "error"]


def test_quick_compare_small(tmp_path, tiny_denoiser_path):
    from robaug.eval.corruptions import DEFAULT_CORRUPTIONS
    from robaug.recipes import quick_compare

    r = quick_compare(("baseline", "diffaug"), steps=3, batch_size=16, train_subset=256, test_subset=64,
                      corruption_images=8, denoiser=str(tiny_denoiser_path), out_dir=tmp_path / "runs",
                      cache_dir=tmp_path / "c",
                      progress=False, verbose=False, plot=tmp_path / "cmp.png")
    assert [row["recipe"] for row in r["rows"]] == ["baseline", "diffaug"]
    for row in r["rows"]:
        assert 0 <= row["clean_accuracy"] <= 1 and 0 <= row["corruption_accuracy"] <= 1
        assert len(row["per_corruption_accuracy"]) == len(DEFAULT_CORRUPTIONS)
    assert r["table"].count("\n") == 3 and "CE(f(x)) + CE(f(DiffAug(x)))" in r["table"]
    assert Path(r["figure"]).stat().st_size > 1000
