"""Conversation -> the exact token ids and tensors Glm4vProcessor would give the model.

A conversation is a list of `Turn`s (role + ordered text / VisualInput parts). It is rendered with
the checkpoint's chat template (jinja2, configured as transformers does), then each attachment's
single placeholder is expanded, then the text is tokenized:

    <|begin_of_image|><|image|><|end_of_image|>  ->  <|begin_of_image|><|image|> x N<|end_of_image|>
    <|begin_of_video|><|video|><|end_of_video|>  ->  <|begin_of_video|>
        <|begin_of_image|><|image|> x N<|end_of_image|>0 <|begin_of_image|>...<|end_of_image|>2 ...
        <|end_of_video|>

with N = grid_h * grid_w / merge^2 per image or per frame pair, and after each frame pair its
timestamp: "2" (GLM-4.1V: int() of the seconds) or "2.0 seconds" (GLM-4.6V's processor).
Assistant turns in the history keep the answer only: `<think>...</think>` and the `<answer>` tags
are removed, as zai-org's own demos do. For checkpoints that call tools (GLM-4.6V), the template
also gets the request's `tools`, past calls (an assistant turn's `tool_calls`) and their results
(`tool` turns, which may hold images), and its own switches (`enable_thinking`).
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from glmv_cli.errors import ContextFull, InputError, ModelError
from glmv_cli.inputs.patches import load_patch_specs
from glmv_cli.inputs.visual import VisualInput
from glmv_cli.model.patch_codes import PatchCodes
from glmv_cli.tokenizer import Tokenizer

BUILTIN_TEMPLATE = Path(__file__).with_name("chat_template.jinja")
IMAGE, VIDEO = "<|image|>", "<|video|>"
BEGIN_IMAGE, END_IMAGE = "<|begin_of_image|>", "<|end_of_image|>"
BEGIN_VIDEO, END_VIDEO = "<|begin_of_video|>", "<|end_of_video|>"
_SPECIAL_KEYS = ("bos_token", "eos_token", "unk_token", "pad_token", "sep_token", "cls_token", "mask_token")
_CONFIG_FILES = ("processor_config.json", "preprocessor_config.json", "video_preprocessor_config.json",
                 "config.json")

Role = Literal["system", "user", "assistant", "tool"]
Part = str | VisualInput


# -- messages --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Turn:
    """One message: a role and its parts in order (text strings and images/videos). An assistant
    turn may hold the tool calls it made (app.tools.ToolCall); a tool turn is a call's result
    (`tool_call_id` names the call)."""

    role: Role
    parts: tuple[Part, ...]
    tool_calls: tuple = ()
    tool_call_id: str | None = None

    @classmethod
    def system(cls, text: str) -> Turn:
        return cls("system", (text,))

    @classmethod
    def user(cls, *parts: Part) -> Turn:
        return cls("user", tuple(parts))

    @classmethod
    def assistant(cls, raw: str, tool_calls: tuple = ()) -> Turn:
        """A past answer, as the model wrote it; the prompt keeps only its answer part."""
        return cls("assistant", (raw,), tuple(tool_calls))

    @classmethod
    def tool(cls, *parts: Part, call_id: str | None = None) -> Turn:
        """A tool's result (text, images), answering the call `call_id`."""
        return cls("tool", tuple(parts), tool_call_id=call_id)

    @property
    def text(self) -> str:
        return "".join(p for p in self.parts if isinstance(p, str))

    @property
    def visuals(self) -> list[VisualInput]:
        return [p for p in self.parts if isinstance(p, VisualInput)]


_THINK = re.compile(r"<think>.*?(</think>|$)", re.DOTALL)
_ANSWER_TAGS = re.compile(r"</?answer>")


def answer_for_history(raw: str) -> str:
    """'<think>..</think><answer>A</answer>' -> 'A': what the next turn's prompt should hold.

    An unfinished thought (no </think>, the answer was cut off) is dropped too.
    """
    return _ANSWER_TAGS.sub("", _THINK.sub("", raw)).strip()


def _template_message(turn: Turn) -> dict:
    """A Turn as chat templates read a message (transformers' conventions)."""
    if turn.role not in ("system", "user", "assistant", "tool"):
        raise InputError(f"unknown message role {turn.role!r}; use system, user, assistant or tool")
    if turn.role in ("system", "assistant") and turn.visuals:
        raise InputError(f"a {turn.role} message cannot hold images or videos; attach them to a user turn")
    if turn.role == "assistant":
        message = {"role": "assistant", "content": answer_for_history(turn.text)}
        if turn.tool_calls:
            message["tool_calls"] = [call.template() for call in turn.tool_calls]
        return message
    if turn.role == "system" or (turn.role == "tool" and not turn.visuals):
        message = {"role": turn.role, "content": turn.text}
    else:
        content = [{"type": "text", "text": p} if isinstance(p, str) else {"type": p.kind} for p in turn.parts]
        message = {"role": turn.role, "content": content}
    if turn.role == "tool" and turn.tool_call_id:
        message["tool_call_id"] = turn.tool_call_id
    return message


# -- the checkpoint's prompt format ---------------------------------------------------------------

@dataclass(frozen=True)
class PromptConfig:
    """What a checkpoint fixes about prompts: its chat template, the merge size that sets tokens per
    image, and how video frame timestamps are written ("int": GLM-4.1V, "seconds": GLM-4.6V)."""

    template: str
    merge_size: int = 2
    timestamp_style: Literal["int", "seconds"] = "int"
    special_tokens: tuple[tuple[str, str], ...] = field(default=())

    @property
    def takes_tools(self) -> bool:
        """The template shows the model tools (its `tools` variable): GLM-4.6V's does, GLM-4.1V's not."""
        return "tools" in template_variables(self.template)

    @property
    def thinking_switch(self) -> bool:
        """The template turns thinking off on request (GLM-4.6V's enable_thinking; GLM-4.1V has none)."""
        return "enable_thinking" in template_variables(self.template)

    @property
    def answer_tags(self) -> bool:
        """The model wraps its answer in <answer>..</answer> (GLM-4.1V-Thinking). GLM-4.5V and 4.6V
        answer straight after </think>: their processor or template (tools, a thinking switch) says so."""
        return not (self.takes_tools or self.thinking_switch or self.timestamp_style == "seconds")

    @classmethod
    def from_folder(cls, folder: str | Path) -> PromptConfig:
        folder = Path(folder)
        image_spec, _ = load_patch_specs(folder)
        tok_cfg = _read_json(folder / "tokenizer_config.json")
        specials = []
        for key in _SPECIAL_KEYS:
            value = tok_cfg.get(key)
            value = value.get("content") if isinstance(value, dict) else value
            if isinstance(value, str):
                specials.append((key, value))
        return cls(template=load_chat_template(folder, tok_cfg), merge_size=image_spec.merge_size,
                   timestamp_style="seconds" if _is_glm46v(folder) else "int",
                   special_tokens=tuple(specials))

    def frame_timestamp(self, seconds: float) -> str:
        return f"{seconds:.1f} seconds" if self.timestamp_style == "seconds" else str(int(seconds))


def _read_json(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelError(f"{path} is not readable JSON ({e}); re-download the checkpoint") from None
    return data if isinstance(data, dict) else {}


def _is_glm46v(folder: Path) -> bool:
    """GLM-4.6V's processor (frame timestamps as "12.0 seconds"), from any processor class name."""
    names = []
    for fname in _CONFIG_FILES:
        cfg = _read_json(folder / fname)
        for section in (cfg, cfg.get("image_processor"), cfg.get("video_processor")):
            if isinstance(section, dict):
                names += [section.get(k) for k in ("processor_class", "image_processor_type",
                                                   "video_processor_type", "model_type")]
        names += cfg.get("architectures") or []
    return any(isinstance(n, str) and "glm46v" in n.lower() for n in names)


def load_chat_template(folder: Path, tokenizer_config: dict | None = None) -> str:
    """chat_template.jinja, else chat_template.json, else tokenizer_config.json's "chat_template",
    else glmv's built-in copy of the official GLM-4.1V template."""
    folder = Path(folder)
    if (folder / "chat_template.jinja").is_file():
        return (folder / "chat_template.jinja").read_text(encoding="utf-8")
    if tokenizer_config is None:
        tokenizer_config = _read_json(folder / "tokenizer_config.json")
    for source in (_read_json(folder / "chat_template.json"), tokenizer_config):
        template = source.get("chat_template")
        if isinstance(template, list):  # [{"name": "default", "template": ...}, ...]
            named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
            template = named.get("default")
        if isinstance(template, str) and template.strip():
            return template
    return BUILTIN_TEMPLATE.read_text(encoding="utf-8")


# -- rendering ------------------------------------------------------------------------------------

def _environment():
    """A jinja2 environment configured as transformers' chat templates expect."""
    import jinja2
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                          sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env


@functools.lru_cache(maxsize=8)
def _compiled(template: str):
    """Jinja compiles a template in milliseconds: once per template text is enough."""
    return _environment().from_string(template)


@functools.lru_cache(maxsize=8)
def template_variables(template: str) -> frozenset[str]:
    """The variables a chat template reads from outside (messages, tools, enable_thinking, ...)."""
    import jinja2
    import jinja2.meta

    try:
        return frozenset(jinja2.meta.find_undeclared_variables(_environment().parse(template)))
    except jinja2.TemplateError as e:
        raise ModelError(f"the checkpoint's chat template does not parse: {e}") from None


def render_prompt(turns: Sequence[Turn], config: PromptConfig, *, tools: list[dict] | None = None,
                  template_kwargs: dict | None = None) -> str:
    """The chat template's text for `turns` plus the generation prompt; one placeholder per input.
    `tools`: OpenAI's function list; `template_kwargs`: the template's own switches (e.g. GLM-4.6V's
    enable_thinking), as vLLM's chat_template_kwargs."""
    import jinja2

    messages = [_template_message(t) for t in turns]
    extra = {k: v for k, v in (template_kwargs or {}).items()
             if k not in ("messages", "tools", "add_generation_prompt")}
    try:
        template = _compiled(config.template)
        return template.render(**{**dict(config.special_tokens), **extra}, messages=messages,
                               add_generation_prompt=True, tools=tools or None, documents=None)
    except jinja2.TemplateError as e:
        raise ModelError(f"the checkpoint's chat template failed: {e}") from None


def _video_text(video: VisualInput, config: PromptConfig) -> str:
    gt = video.grid_thw[0]
    stamps = list(video.timestamps[:gt]) or [0.0]
    stamps += [stamps[-1]] * (gt - len(stamps))  # as the reference: pad with the last one
    frame = BEGIN_IMAGE + IMAGE * video.tokens_per_frame(config.merge_size) + END_IMAGE
    return "".join(frame + config.frame_timestamp(t) for t in stamps)


def expand_placeholders(text: str, visuals: Sequence[VisualInput], config: PromptConfig) -> str:
    """Replace the k-th <|image|> by the k-th image's tokens and the k-th <|video|> by the k-th
    video's frames, as ProcessorMixin.get_text_with_replacements."""
    images = [v for v in visuals if v.kind == "image"]
    videos = [v for v in visuals if v.kind == "video"]
    found = {IMAGE: text.count(IMAGE), VIDEO: text.count(VIDEO)}
    for token, items, what in ((IMAGE, images, "image"), (VIDEO, videos, "video")):
        if found[token] != len(items):
            raise InputError(
                f"the prompt holds {found[token]} {token} placeholder(s) for {len(items)} {what}(s); "
                f"{token} is reserved for attachments, so remove it from the prompt text"
            )
    queues = {IMAGE: iter(images), VIDEO: iter(videos)}

    def replace(match: re.Match) -> str:
        item = next(queues[match.group()])
        if item.kind == "image":
            return IMAGE * item.tokens_per_frame(config.merge_size)
        return _video_text(item, config)

    return re.sub(f"{re.escape(IMAGE)}|{re.escape(VIDEO)}", replace, text)


# -- model inputs ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class ModelInputs:
    """Tensors named as transformers' Glm4vProcessor names them (batch of one).

    input_ids, attention_mask, mm_token_type_ids: (1, S) int64; mm types 0 text, 1 image, 2 video.
    pixel_values: (N, 3*T*p*p) float32 image patch rows, or PatchCodes standing for them (what the
        loaders make: the model expands them on its device; patch_codes.patch_rows gives the floats);
        image_grid_thw: (n_images, 3) int64.
    pixel_values_videos / video_grid_thw: the same for videos. None where there is no such input.
    attachment_tokens: <|image|> placeholders each attachment fills, in prompt order.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    mm_token_type_ids: torch.Tensor
    pixel_values: torch.Tensor | PatchCodes | None = None
    image_grid_thw: torch.Tensor | None = None
    pixel_values_videos: torch.Tensor | PatchCodes | None = None
    video_grid_thw: torch.Tensor | None = None
    attachment_tokens: list[int] = field(default_factory=list)

    @property
    def num_prompt_tokens(self) -> int:
        return self.input_ids.shape[1]

    def as_dict(self) -> dict[str, torch.Tensor]:
        """The model's keyword arguments; absent inputs are left out, as the processor does."""
        names = ("input_ids", "attention_mask", "mm_token_type_ids", "pixel_values", "image_grid_thw",
                 "pixel_values_videos", "video_grid_thw")
        return {n: getattr(self, n) for n in names if getattr(self, n) is not None}


def mm_token_types(ids: np.ndarray, tokenizer: Tokenizer) -> np.ndarray:
    """0 text, 1 image, 2 video: <|image|> ids inside a <|begin_of_video|>..<|end_of_video|> span
    are video tokens (the frames reuse the image token)."""
    image_id = tokenizer.token_id(IMAGE)
    starts = np.cumsum(ids == tokenizer.token_id(BEGIN_VIDEO))
    ends = np.cumsum(ids == tokenizer.token_id(END_VIDEO))
    in_video = starts > ends
    types = np.zeros_like(ids)
    types[(ids == image_id) & in_video] = 2
    types[(ids == image_id) & ~in_video] = 1
    return types


def _stack(visuals: list[VisualInput]) -> tuple[torch.Tensor | PatchCodes | None, torch.Tensor | None]:
    if not visuals:
        return None, None
    grid = torch.tensor([list(v.grid_thw) for v in visuals], dtype=torch.long)
    parts = [v.pixel_values for v in visuals]
    if all(isinstance(p, PatchCodes) for p in parts):
        return (parts[0] if len(parts) == 1 else PatchCodes.cat(parts)), grid
    arrays = [v.rows() for v in visuals]
    # one attachment (the usual case) is used as it is: a copy of a large image's rows costs ~10 ms
    joined = arrays[0] if len(arrays) == 1 else np.concatenate(arrays)
    return torch.from_numpy(np.ascontiguousarray(joined, dtype=np.float32)), grid


def build_inputs(turns: Sequence[Turn], tokenizer: Tokenizer, config: PromptConfig, *,
                 tools: list[dict] | None = None, template_kwargs: dict | None = None) -> ModelInputs:
    """Render, expand and tokenize `turns` (ending with the user's turn or a tool's result) into
    model inputs; `tools` and `template_kwargs` go to the chat template (render_prompt)."""
    for token in (IMAGE, BEGIN_VIDEO, END_VIDEO):
        if tokenizer.token_id(token) is None:
            raise ModelError(f"the tokenizer has no {token} token; this is not a GLM-4.1V checkpoint")
    visuals = [v for t in turns for v in t.visuals]
    text = render_prompt(turns, config, tools=tools, template_kwargs=template_kwargs)
    if any(t.role == "tool" and t.visuals for t in turns) and text.count(IMAGE) + text.count(VIDEO) < len(visuals):
        raise InputError("this checkpoint's chat template does not show images or videos in tool results; "
                         "send them in a user message")
    text = expand_placeholders(text, visuals, config)
    ids = np.asarray(tokenizer.encode(text), dtype=np.int64)
    pixel_values, image_grid = _stack([v for v in visuals if v.kind == "image"])
    video_values, video_grid = _stack([v for v in visuals if v.kind == "video"])
    return ModelInputs(
        input_ids=torch.from_numpy(ids)[None],  # (1, S)
        attention_mask=torch.ones(1, len(ids), dtype=torch.long),
        mm_token_type_ids=torch.from_numpy(mm_token_types(ids, tokenizer))[None],  # (1, S)
        pixel_values=pixel_values, image_grid_thw=image_grid,
        pixel_values_videos=video_values, video_grid_thw=video_grid,
        attachment_tokens=[v.grid_thw[0] * v.tokens_per_frame(config.merge_size) for v in visuals],
    )


def check_context(num_prompt_tokens: int, max_new_tokens: int, max_context: int) -> None:
    """InputError when the prompt plus room for `max_new_tokens` does not fit in `max_context`."""
    if num_prompt_tokens + max_new_tokens <= max_context:
        return
    if num_prompt_tokens >= max_context:
        problem = f"the prompt alone is {num_prompt_tokens:,} tokens"
    else:
        problem = (f"the prompt is {num_prompt_tokens:,} tokens and the answer may take up to "
                   f"{max_new_tokens:,} more ({num_prompt_tokens + max_new_tokens:,} in all)")
    raise ContextFull(
        f"{problem}, over the {max_context:,}-token context; attach fewer pages or frames, lower "
        f"--max-pixels, allow fewer new tokens, or raise --max-context if the model supports it"
    )
