"""Config parsing: both rope layouts, invariants with clear messages, ids from the checkpoint."""

from __future__ import annotations

import json

import pytest

from glmv_cli.errors import ModelError
from glmv_cli.model.config import Glm4vConfig


def raw_config(folder) -> dict:
    return json.loads((folder / "config.json").read_text())


def test_hub_and_rope_parameters_layouts_give_the_same_config(tiny_folder):
    hub = raw_config(tiny_folder)
    assert "rope_scaling" in hub["text_config"] and "rope_parameters" not in hub["text_config"]
    new = json.loads(json.dumps(hub))
    text = new["text_config"]
    scaling = text.pop("rope_scaling")
    text["rope_parameters"] = {"rope_type": "default", "mrope_section": scaling["mrope_section"],
                               "rope_theta": text.pop("rope_theta"),
                               "partial_rotary_factor": text.pop("partial_rotary_factor")}
    assert Glm4vConfig.from_dict(hub) == Glm4vConfig.from_dict(new)


@pytest.mark.parametrize("variant, theta", [("base", 10000.0), ("mha_deep", 100.0), ("gqa4", 500.0)])
def test_rope_theta_is_written_and_read_in_both_layouts(checkpoints, variant, theta):
    """A checkpoint's own rope_theta (the demo's is 100), not a default: the parity tests of these
    variants then compare both implementations at that theta."""
    assert Glm4vConfig.from_dict(raw_config(checkpoints(variant))).text.rope_theta == theta


def test_real_glm41v_values(tiny_folder):
    """The hub config of GLM-4.1V-9B-Thinking (values from the reference notes)."""
    raw = raw_config(tiny_folder)
    raw["text_config"].update(vocab_size=151552, hidden_size=4096, intermediate_size=13696, num_hidden_layers=40,
                              num_attention_heads=32, num_key_value_heads=2, max_position_embeddings=65536,
                              rope_scaling={"rope_type": "default", "mrope_section": [8, 12, 12]})
    raw["vision_config"].update(depth=24, hidden_size=1536, num_heads=12, intermediate_size=13696,
                                out_hidden_size=4096, image_size=336)
    raw.update(image_token_id=151343, video_token_id=151344, image_start_token_id=151339,
               image_end_token_id=151340, video_start_token_id=151341, video_end_token_id=151342)
    cfg = Glm4vConfig.from_dict(raw)
    assert (cfg.text.head_dim, cfg.text.rotary_dim) == (128, 64)
    assert cfg.vision.head_dim == 128 and cfg.vision.pos_grid == 24
    assert cfg.image_token_id == 151343


@pytest.mark.parametrize("edit, message", [
    (lambda r: r["text_config"].update(num_key_value_heads=3), "not a multiple of num_key_value_heads"),
    (lambda r: r["text_config"].update(rope_scaling={"rope_type": "default", "mrope_section": [2, 3, 4]}),
     "mrope_section [2, 3, 4] sums to 9"),
    (lambda r: r["text_config"].pop("partial_rotary_factor"), "partial_rotary_factor 1.0"),
    (lambda r: r["vision_config"].update(out_hidden_size=64), "out_hidden_size 64 != text hidden_size"),
    (lambda r: r.update(image_token_id=10**6), "image_token_id 1000000 is outside the vocabulary"),
    (lambda r: r.update(model_type="llama"), "model_type 'llama' is not a GLM-4.1V-architecture"),
    (lambda r: r["text_config"].update(model_type="glm4v_moe_text"), "MoE checkpoints"),
    (lambda r: r.pop("video_end_token_id"), "lacks the field 'video_end_token_id'"),
])
def test_invalid_configs_name_the_problem(tiny_folder, edit, message):
    raw = raw_config(tiny_folder)
    edit(raw)
    with pytest.raises(ModelError) as info:
        Glm4vConfig.from_dict(raw)
    assert message in str(info.value)


def test_glm46v_model_type_and_other_ids_are_read_from_the_checkpoint(tiny_folder):
    raw = raw_config(tiny_folder)
    raw.update(model_type="glm46v", video_start_token_id=5, video_end_token_id=6)
    cfg = Glm4vConfig.from_dict(raw)
    assert (cfg.model_type, cfg.video_start_token_id, cfg.video_end_token_id) == ("glm46v", 5, 6)
