"""``import robaug`` is light (PEP 562): subpackages and the top-level names load on first use."""

from __future__ import annotations

import subprocess
import sys

from _paths import subprocess_env


def _run(code: str) -> str:
    env = subprocess_env()
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout


def test_import_robaug_loads_no_heavy_module():
    out = _run("import sys, robaug\nprint(sorted(m for m in ('torch', 'torchvision', 'kornia', 'diffusers', "
               "'robaug.models', 'robaug.eval') if m in sys.modules))")
    assert out.strip() == "[]"


def test_lazy_attributes_resolve():
    out = _run(
        "import sys, robaug\n"
        "assert 'robaug.models' not in sys.modules\n"
        "print(robaug.models.list_models()[0], robaug.models is sys.modules['robaug.models'])\n"
        "print(callable(robaug.eval.available_corruptions), robaug.data.RealSyntheticMix.__name__)\n"
        "print(robaug.recipes.TrainConfig().recipe, 'kornia' in sys.modules, 'diffusers' in sys.modules)\n"
        "print(robaug.IPMix.__module__, robaug.load_denoiser.__module__)\n"
        "d = dir(robaug)\n"
        "print(all(n in d for n in robaug.__all__), 'models' in d, 'recipes' in d)\n"
        "try:\n    robaug.nope\nexcept AttributeError as e:\n    print('AttributeError', e)\n"
    )
    lines = out.splitlines()
    assert lines[0] == "cnn_mlp True"  # the alphabetically first model
    assert lines[1] == "True RealSyntheticMix"
    assert lines[2].startswith("baseline ")
    ipmix_module, hub_module = lines[3].split()
    assert ipmix_module.startswith("robaug.transforms.ipmix") and hub_module == "robaug.hub"
    assert lines[4] == "True True True"
    assert lines[5].startswith("AttributeError") and "nope" in lines[5]


def test_public_names_are_the_same_objects_as_in_their_modules():
    import robaug
    import robaug.losses
    import robaug.transforms

    assert robaug.DiffAug is robaug.transforms.DiffAug and robaug.JSDLoss is robaug.losses.JSDLoss
    assert set(robaug.__all__) >= {"DiffAug", "IPMix", "GuidedDiffusion", "load_denoiser", "TRADESLoss"}
    from robaug import ContrastiveGuidedSampler  # noqa: F401  (from-imports go through __getattr__ too)
