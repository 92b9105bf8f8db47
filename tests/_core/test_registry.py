"""robaug._core.registry: one way to register, list and look up names, and one error for an unknown name."""

import pytest

from robaug._core.registry import Registry, unknown_name_message


@pytest.fixture
def models():
    reg = Registry("model")
    reg.register("resnet18", 18)
    reg.register("resnet50", 50)

    @reg.register("wrn28_10")
    def wrn():
        return "wrn"

    return reg


def test_register_lookup_and_order(models):
    assert models["resnet18"] == 18
    assert models["wrn28_10"]() == "wrn"  # the decorator returns the function itself
    assert models.names() == ["resnet18", "resnet50", "wrn28_10"]  # registration order
    assert list(models) == models.names() and len(models) == 3
    assert "resnet50" in models and "vgg" not in models
    assert models.get("vgg") is None and models.get("vgg", 0) == 0
    assert models.names(lambda name, obj: isinstance(obj, int) and obj > 20) == ["resnet50"]


def test_falsy_objects_register_directly(models):
    assert models.register("zero", 0) == 0
    assert models["zero"] == 0


def test_duplicate_names_need_overwrite(models):
    with pytest.raises(ValueError, match=r"a model named 'resnet18' is already registered; pass overwrite=True"):
        models.register("resnet18", 1)
    assert models["resnet18"] == 18
    models.register("resnet18", 1, overwrite=True)
    assert models["resnet18"] == 1
    assert models.names() == ["resnet18", "resnet50", "wrn28_10"]  # overwriting keeps the position


def test_unknown_name_lists_the_known_names_and_the_close_match(models):
    with pytest.raises(KeyError) as err:
        models["resnt18"]
    msg = err.value.args[0]
    assert msg == "unknown model 'resnt18'; did you mean 'resnet18'? Known: resnet18, resnet50, wrn28_10"


def test_unknown_name_without_a_close_match_has_no_hint(models):
    with pytest.raises(KeyError) as err:
        models["vit_b_16"]
    msg = err.value.args[0]
    assert "did you mean" not in msg
    assert msg.startswith("unknown model 'vit_b_16'") and msg.endswith("Known: resnet18, resnet50, wrn28_10")


def test_unhashable_lookup_gets_the_same_message(models):
    with pytest.raises(KeyError, match=r"unknown model \['resnet18'\]"):
        models[["resnet18"]]


def test_unknown_name_message_on_an_empty_table():
    assert unknown_name_message("solver", "heun", []) == "unknown solver 'heun'. Known: "
