"""ModelConfig: presets, to_dict / from_dict round trip, rejection of bad configs."""
from __future__ import annotations

import dataclasses
import io
import json

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from reference.priors import PRESETS as PRIOR_PRESETS
from reference.priors import SSD300, PriorSpec, boxes_per_cell
from ssd_torch.data.preprocess import IMAGENET
from ssd_torch.modeling.model_config import PRESETS, ModelConfig, ssd300_slim, ssd300_vgg16


def test_presets_share_the_ssd300_geometry() -> None:
    for make in PRESETS.values():
        cfg = make()
        assert cfg.prior_spec == SSD300
        assert cfg.num_priors == 8732
        assert list(cfg.head_boxes) == boxes_per_cell(cfg.prior_spec) == [4, 6, 6, 6, 4, 4]
        assert cfg.l2norm_scale == 20.0 and cfg.image_size == 300
    assert ssd300_vgg16().batch_norm is False
    assert ssd300_slim().batch_norm is True and ssd300_slim(batch_norm=False).batch_norm is False
    assert ssd300_slim(num_classes=4).num_classes == 4
    assert set(PRESETS) == {"ssd300_vgg16", "ssd300_slim"}


def _configs() -> st.SearchStrategy[ModelConfig]:
    widths = st.integers(1, 64)
    return st.builds(
        ModelConfig,
        name=st.sampled_from(["a", "ssd300_slim", "x-y"]),
        num_classes=st.integers(2, 30),
        prior_spec=st.sampled_from([*PRIOR_PRESETS.values(), dataclasses.replace(SSD300, clip=False)]),
        base_channels=st.tuples(*[st.lists(widths, min_size=1, max_size=3).map(tuple)] * 5),
        fc_channels=st.tuples(widths, widths),
        extra_channels=st.tuples(*[st.tuples(widths, widths)] * 4),
        l2norm_scale=st.floats(0.5, 40.0),
        batch_norm=st.booleans(),
        strided_stem=st.booleans(),
        head_bias_prior=st.none() | st.floats(0.01, 0.999),
        variances=st.tuples(st.floats(0.01, 2.0), st.floats(0.01, 2.0)),
    )


@given(_configs())
def test_round_trip_is_exact_through_json_and_torch_save(cfg: ModelConfig) -> None:
    d = cfg.to_dict()
    assert ModelConfig.from_dict(d) == cfg
    assert ModelConfig.from_dict(json.loads(json.dumps(d))) == cfg
    buf = io.BytesIO()
    torch.save({"model_config": d}, buf)  # what a checkpoint does; must load with weights_only=True
    buf.seek(0)
    assert ModelConfig.from_dict(torch.load(buf, weights_only=True)["model_config"]) == cfg


def test_from_dict_rejects_unknown_and_missing_keys() -> None:
    d = ssd300_slim().to_dict()
    with pytest.raises(ValueError, match="unknown keys.*'colour'"):
        ModelConfig.from_dict({**d, "colour": "red"})
    with pytest.raises(ValueError, match=r"prior_spec.*unknown keys.*'offset'"):
        ModelConfig.from_dict({**d, "prior_spec": {**d["prior_spec"], "offset": 0.5}})
    without_classes = {k: v for k, v in d.items() if k != "num_classes"}
    with pytest.raises(ValueError, match="missing required keys.*num_classes"):
        ModelConfig.from_dict(without_classes)
    with pytest.raises(TypeError):
        ModelConfig.from_dict([("name", "x")])  # type: ignore[arg-type]


@pytest.mark.parametrize("change, message", [
    ({"head_boxes": (4, 6, 6, 6, 4, 6)}, "head_boxes"),
    ({"prior_spec": PriorSpec(feature_maps=(38, 19, 10, 5, 3, 2), scales=SSD300.scales,
                              aspect_ratios=SSD300.aspect_ratios)}, "feature_maps"),
    ({"image_size": 512}, "image_size"),
    ({"num_classes": 1}, "num_classes"),
    ({"base_channels": ((8,), (8,), (8,), (8,))}, "base_channels"),
    ({"base_channels": ((8,), (0,), (8,), (8,), (8,))}, r"base_channels\[1\]"),
    ({"fc_channels": (8,)}, "fc_channels"),
    ({"extra_channels": ((8, 8), (8, 8), (8, 8), (8,))}, "extra_channels"),
    ({"head_bias_prior": 1.0}, "head_bias_prior"),
    ({"l2norm_scale": 0.0}, "l2norm_scale"),
    ({"variances": (0.1, 0.0)}, "variances"),
    ({"variances": (0.1,)}, "variances"),
    ({"variances": "0.1 0.2"}, "variances"),
])
def test_invalid_configs_raise_naming_the_field(change: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(ssd300_slim(), **change)


def test_bool_fields_must_be_bools() -> None:
    with pytest.raises(TypeError, match="batch_norm"):
        dataclasses.replace(ssd300_slim(), batch_norm=1)
    with pytest.raises(TypeError, match="prior_spec"):
        dataclasses.replace(ssd300_slim(), prior_spec={"feature_maps": [38]})


def test_config_is_frozen_and_hashable() -> None:
    cfg = ssd300_vgg16()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.num_classes = 3  # type: ignore[misc]
    assert hash(cfg) == hash(ModelConfig.from_dict(cfg.to_dict()))


def test_a_model_config_without_optional_keys_reads_as_their_defaults() -> None:
    """docs/CONTRACT.md "Encoding": no ``variances`` reads as (0.1, 0.2); likewise no ``preprocess`` is ImageNet
    RGB and no ``prior_spec.clip_centres`` clamps all four coordinates."""
    d = ssd300_vgg16().to_dict()
    assert d["variances"] == [0.1, 0.2] and d["prior_spec"]["clip_centres"] is True
    del d["prior_spec"]["clip_centres"], d["variances"], d["preprocess"]
    cfg = ModelConfig.from_dict(d)
    assert cfg == ssd300_vgg16() and cfg.variances == (0.1, 0.2) and cfg.preprocess == IMAGENET
