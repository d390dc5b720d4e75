"""ssd_torch.labels: categories (background first) and object classes, and the one rule a categories list obeys."""
from __future__ import annotations

import pytest

from ssd_torch.labels import categories_of, check_categories, object_classes_of


def test_the_two_lists_convert_both_ways() -> None:
    assert categories_of(("cat", "dog")) == ("background", "cat", "dog")
    assert object_classes_of(["background", "cat", "dog"]) == ("cat", "dog")
    assert object_classes_of(categories_of(())) == ()


@pytest.mark.parametrize("names, count, fragment", [
    (["cat", "background"], None, "must start with 'background'"),
    ([], None, "must start with 'background'"),
    ("background", None, "must be a list of str"),
    (["background", 3], None, "must be a list of str"),
    (["background", "cat"], 3, "2 class names but num_classes = 3"),
])
def test_a_bad_categories_list_is_named(names, count, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment) as info:
        check_categories(names, "checkpoint x.pt", count)
    assert str(info.value).startswith("checkpoint x.pt: ")


def test_repeated_names_are_allowed() -> None:
    """torchvision's COCO outputs repeat "N/A" at COCO's unused ids."""
    assert check_categories(["background", "N/A", "N/A"], "x", 3) == ("background", "N/A", "N/A")


def test_one_dict_reader_for_the_config_classes() -> None:
    """ssd_torch.plain.dataclass_fields: the key check of ModelConfig, PriorSpec, Preprocess, PostprocessConfig and
    the training config's sections (unknown and missing keys named; a non-dict refused)."""
    from ssd_torch.data.preprocess import Preprocess
    from ssd_torch.errors import ConfigError
    from ssd_torch.modeling.model_config import ModelConfig
    from ssd_torch.modeling.postprocess_config import PostprocessConfig
    from ssd_torch.training.train_config import TrainConfig

    with pytest.raises(ValueError, match=r"unknown keys \['x'\]"):
        ModelConfig.from_dict({"name": "m", "num_classes": 3, "x": 1})
    with pytest.raises(ValueError, match=r"missing required keys \['num_classes'\]"):
        ModelConfig.from_dict({"name": "m"})
    with pytest.raises(ValueError, match=r"Preprocess: unknown keys \['y'\]"):
        Preprocess.from_dict({"y": 0})
    with pytest.raises(ConfigError, match=r"postprocess: unknown keys \['nms'\]"):
        PostprocessConfig.from_dict({"nms": 0.3})
    with pytest.raises(ConfigError, match=r"config.optim: unknown keys \['lr'\]"):
        TrainConfig.from_dict({"optim": {"lr": 1.0}})
    with pytest.raises(TypeError, match="must be a dict"):
        ModelConfig.from_dict([1])
