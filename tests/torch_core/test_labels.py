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
