"""Prompt building: token ids, types and tensors equal to transformers' Glm4vProcessor on the same
conversation (template rendered by transformers, placeholders expanded, tokenized)."""

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from glmv_cli.errors import InputError, ModelError
from glmv_cli.inputs.image import preprocess_image
from glmv_cli.inputs.patches import load_patch_specs
from glmv_cli.inputs.visual import VisualInput
from glmv_cli.model.patch_codes import patch_rows
from glmv_cli.prompt import (
    BUILTIN_TEMPLATE,
    ModelInputs,
    PromptConfig,
    Turn,
    answer_for_history,
    build_inputs,
    check_context,
    load_chat_template,
    render_prompt,
)
from glmv_cli.tokenizer import Tokenizer
from tests.reference import reference_processor, write_checkpoint

SMALL_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja",
               "preprocessor_config.json", "video_preprocessor_config.json")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_checkpoint(tmp_path_factory.mktemp("ckpt"))


@pytest.fixture(scope="module")
def glm46v_folder(folder, tmp_path_factory):
    """The same checkpoint with GLM-4.6V's processor named in its processor configs."""
    new = tmp_path_factory.mktemp("glm46v")
    for name in SMALL_FILES:
        shutil.copy(folder / name, new / name)
    edits = (("preprocessor_config.json", "processor_class", "Glm46VProcessor"),
             ("video_preprocessor_config.json", "video_processor_type", "Glm46VVideoProcessor"))
    for name, key, value in edits:
        cfg = json.loads((new / name).read_text())
        cfg[key] = value
        (new / name).write_text(json.dumps(cfg))
    return new


@pytest.fixture(scope="module")
def ours(folder):
    return Tokenizer.from_folder(folder), PromptConfig.from_folder(folder), load_patch_specs(folder)[0]


@pytest.fixture(scope="module")
def ref(folder):
    return reference_processor(folder)


def image(h, w, seed=0):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def video_input(ref, frames=8, fps=4.0, h=84, w=112):
    """A random clip through the reference video processor, and the same clip as our VisualInput."""
    from transformers.video_utils import VideoMetadata

    clip = np.random.default_rng(frames).integers(0, 256, (frames, h, w, 3), dtype=np.uint8)
    meta = VideoMetadata(total_num_frames=frames, fps=fps, duration=frames / fps)
    out = ref.video_processor(videos=[clip], video_metadata=[meta], return_metadata=True, return_tensors="np")
    grid = tuple(int(x) for x in out["video_grid_thw"][0])
    stamps = tuple(float(t) for t in out["video_metadata"][0].timestamps[::2][: grid[0]])
    ours = VisualInput("video", out["pixel_values_videos"], grid, timestamps=stamps, source="clip.mp4")
    return ours, clip, VideoMetadata(total_num_frames=frames, fps=fps, duration=frames / fps)


def hf_messages(turns):
    """The same conversation as transformers' chat messages."""
    out = []
    for t in turns:
        if t.role == "user":
            content = [{"type": "text", "text": p} if isinstance(p, str) else {"type": p.kind}
                       for p in t.parts]
        else:
            content = answer_for_history(t.text) if t.role == "assistant" else t.text
        out.append({"role": t.role, "content": content})
    return out


def assert_same(ours, ref, turns, images=(), videos=(), metadata=(), processor=None):
    tok, config, _ = ours
    processor = processor or ref
    got = build_inputs(turns, tok, config)
    text = processor.apply_chat_template(hf_messages(turns), tokenize=False, add_generation_prompt=True)
    kwargs = {}
    if images:
        kwargs["images"] = list(images)
    if videos:
        kwargs.update(videos=list(videos), video_metadata=list(metadata))
    want = processor(text=[text], return_tensors="pt", **kwargs)
    assert set(got.as_dict()) == set(want.keys()) - {"video_metadata"}
    for name, value in got.as_dict().items():
        value = patch_rows(value)  # image pixels come as the levels the rows are looked up from
        assert value.dtype == want[name].dtype, name
        assert value.shape == want[name].shape, name
        assert torch.allclose(value, want[name], atol=1e-6, rtol=0), name
    assert got.num_prompt_tokens == want["input_ids"].shape[1]
    return got


def test_text_only(ours, ref):
    got = assert_same(ours, ref, [Turn.user("What color is the circle?")])
    assert got.pixel_values is None and got.attachment_tokens == [] and got.mm_token_type_ids.sum() == 0


def test_one_image(ours, ref):
    pil = image(112, 168)
    turns = [Turn.user(preprocess_image(pil, ours[2]), "Describe this image.")]
    got = assert_same(ours, ref, turns, images=[pil])
    assert got.attachment_tokens == [24] and int((got.mm_token_type_ids == 1).sum()) == 24


def test_several_images_of_different_sizes(ours, ref):
    pils = [image(112, 168, 1), image(37, 300, 2), image(400, 90, 3)]
    turns = [Turn.user("Compare", preprocess_image(pils[0], ours[2]), "with",
                       preprocess_image(pils[1], ours[2]), preprocess_image(pils[2], ours[2]), "please.")]
    got = assert_same(ours, ref, turns, images=pils)
    assert len(got.attachment_tokens) == 3 and got.image_grid_thw.shape == (3, 3)


def test_video(ours, ref):
    video, clip, meta = video_input(ref)
    got = assert_same(ours, ref, [Turn.user(video, "What happens?")], videos=[clip], metadata=[meta])
    assert video.timestamps == (0.0, 1.0) and got.attachment_tokens == [24]
    assert int((got.mm_token_type_ids == 2).sum()) == 24 and int((got.mm_token_type_ids == 1).sum()) == 0


def test_long_video_timestamps(ours, ref):
    video, clip, meta = video_input(ref, frames=30, fps=5.0, h=56, w=56)
    assert_same(ours, ref, [Turn.user(video, "When does it move?")], videos=[clip], metadata=[meta])


def test_image_and_video(ours, ref):
    pil = image(84, 84, 4)
    video, clip, meta = video_input(ref)
    turns = [Turn.user(preprocess_image(pil, ours[2]), video, "Is the image in the video?")]
    got = assert_same(ours, ref, turns, images=[pil], videos=[clip], metadata=[meta])
    assert got.attachment_tokens == [9, 24]


def test_system_prompt(ours, ref):
    pil = image(56, 56, 5)
    turns = [Turn.system("You are terse."), Turn.user(preprocess_image(pil, ours[2]), "Shapes?")]
    assert_same(ours, ref, turns, images=[pil])
    assert render_prompt(turns[1:], ours[1]).startswith("[gMASK]<sop><|user|>\n")  # no default system prompt


def test_multi_turn_history_drops_thinking(ours, ref):
    pils = [image(56, 84, 6), image(84, 56, 7)]
    raw = ("<think>Hmm, it is round and red.</think>"
           "<answer>A red <|begin_of_box|>circle<|end_of_box|>.</answer>")
    turns = [
        Turn.user(preprocess_image(pils[0], ours[2]), "What is it?"),
        Turn.assistant(raw),
        Turn.user(preprocess_image(pils[1], ours[2]), "And this one?"),
    ]
    got = assert_same(ours, ref, turns, images=pils)
    tok = ours[0]
    text = tok.decode(got.input_ids[0].tolist())
    assert "<|assistant|>\nA red <|begin_of_box|>circle<|end_of_box|>.<|user|>" in text
    assert tok.token_id("<think>") not in got.input_ids and "round" not in text


def test_glm46v_timestamps(glm46v_folder, ref):
    from transformers import Glm46VProcessor

    config = PromptConfig.from_folder(glm46v_folder)
    assert config.timestamp_style == "seconds" and config.frame_timestamp(2.96) == "3.0 seconds"
    processor = Glm46VProcessor(image_processor=ref.image_processor, tokenizer=ref.tokenizer,
                                video_processor=ref.video_processor, chat_template=ref.chat_template)
    video, clip, meta = video_input(ref, frames=12, fps=4.0)
    ours = (Tokenizer.from_folder(glm46v_folder), config, None)
    got = assert_same(ours, ref, [Turn.user(video, "Describe.")], videos=[clip], metadata=[meta],
                      processor=processor)
    assert "<|end_of_image|>1.0 seconds<|begin_of_image|>" in ours[0].decode(got.input_ids[0].tolist())


def test_glm41v_checkpoint_writes_int_timestamps(ours):
    assert ours[1].timestamp_style == "int" and ours[1].frame_timestamp(2.9) == "2"


def test_answer_for_history():
    assert answer_for_history("<think>x\ny</think><answer>\nA\n</answer>") == "A"
    assert answer_for_history("<think>cut off mid-thought") == ""
    assert answer_for_history("plain answer ") == "plain answer"


def test_placeholder_in_user_text_is_refused(ours):
    tok, config, _ = ours
    with pytest.raises(InputError, match=r"the prompt holds 1 <\|image\|> placeholder\(s\) for 0 image\(s\)"):
        build_inputs([Turn.user("what does <|image|> mean?")], tok, config)


def test_attachment_outside_a_user_turn_is_refused(ours):
    tok, config, spec = ours
    with pytest.raises(InputError, match="a system message cannot hold images or videos"):
        build_inputs([Turn("system", (preprocess_image(image(28, 28), spec),)), Turn.user("hi")], tok, config)


def test_template_sources(folder, tmp_path):
    for name in SMALL_FILES:
        shutil.copy(folder / name, tmp_path / name)
    assert load_chat_template(tmp_path) == (folder / "chat_template.jinja").read_text()
    (tmp_path / "chat_template.jinja").unlink()
    assert load_chat_template(tmp_path) == BUILTIN_TEMPLATE.read_text()
    cfg = json.loads((tmp_path / "tokenizer_config.json").read_text())
    cfg["chat_template"] = "{{ raise_exception('no ' + messages[0].role) }}"
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(cfg))
    config = PromptConfig.from_folder(tmp_path)
    assert config.template == cfg["chat_template"]
    with pytest.raises(ModelError, match="the checkpoint's chat template failed: no user"):
        render_prompt([Turn.user("hi")], config)


def test_template_renders_like_transformers(ours):
    template = ("{% for m in messages %}{{ m | tojson }}{% if loop.last %}{% break %}{% endif %}"
                "{% endfor %}{{ eos_token }}")
    config = PromptConfig(template=template, special_tokens=(("eos_token", "</s>"),))
    want = '{"role": "user", "content": [{"type": "text", "text": "é"}]}</s>'
    assert render_prompt([Turn.user("é")], config) == want
    assert ours[1].special_tokens == (("eos_token", "<|endoftext|>"), ("pad_token", "<|endoftext|>"))


def test_model_inputs_dict_and_counts(ours):
    tok, config, spec = ours
    got = build_inputs([Turn.user(preprocess_image(image(112, 112), spec), "hi")], tok, config)
    assert isinstance(got, ModelInputs) and got.attachment_tokens == [16]
    assert list(got.as_dict()) == ["input_ids", "attention_mask", "mm_token_type_ids", "pixel_values",
                                   "image_grid_thw"]
    assert got.pixel_values.shape == (64, 1176) and got.image_grid_thw.tolist() == [[1, 8, 8]]


def test_check_context():
    check_context(1000, 500, 1500)
    with pytest.raises(InputError, match=r"the prompt is 60,000 tokens and the answer may take up to "
                                         r"8,192 more \(68,192 in all\), over the 65,536-token context; "
                                         r"attach fewer pages or frames, lower --max-pixels"):
        check_context(60_000, 8192, 65_536)
    with pytest.raises(InputError, match=r"the prompt alone is 66,000 tokens, over the 65,536-token context"):
        check_context(66_000, 1, 65_536)
