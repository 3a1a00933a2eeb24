"""GLM-4.1V configuration: frozen dataclasses built from a checkpoint's config.json.

Both config layouts load: the hub's (`rope_theta`, `partial_rotary_factor`, `rope_scaling` with
`mrope_section`) and transformers v5's (`rope_parameters`). Unknown keys are ignored; invariants
are checked once, here, with a message that names the field. Special token ids always come from
the checkpoint (GLM-4.6V-Flash has other ids than GLM-4.1V).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from glmv_cli.errors import ModelError

SUPPORTED_MODEL_TYPES = ("glm4v", "glm46v")
SUPPORTED_TEXT_TYPES = ("glm4v_text",)


@dataclass(frozen=True)
class TextConfig:
    vocab_size: int = 151552
    hidden_size: int = 4096
    intermediate_size: int = 13696
    num_layers: int = 40
    num_heads: int = 32
    num_kv_heads: int = 2
    max_position_embeddings: int = 65536
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    partial_rotary_factor: float = 0.5
    mrope_section: tuple[int, ...] = (8, 12, 12)

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def rotary_dim(self) -> int:
        return int(self.head_dim * self.partial_rotary_factor)

    def kv_bytes(self, positions: int, itemsize: int) -> int:
        """Bytes of the KV cache for `positions` tokens: keys and values of every layer."""
        return 2 * self.num_layers * self.num_kv_heads * self.head_dim * positions * itemsize

    def check(self) -> None:
        _require(self.hidden_size % self.num_heads == 0,
                 f"hidden_size {self.hidden_size} is not divisible by num_attention_heads {self.num_heads}")
        _require(self.num_heads % self.num_kv_heads == 0,
                 f"num_attention_heads {self.num_heads} is not a multiple of num_key_value_heads "
                 f"{self.num_kv_heads}")
        _require(len(self.mrope_section) == 3, f"mrope_section {list(self.mrope_section)} must have 3 parts (t, h, w)")
        _require(sum(self.mrope_section) * 2 == self.rotary_dim,
                 f"mrope_section {list(self.mrope_section)} sums to {sum(self.mrope_section)}, but the rotary "
                 f"dimension {self.rotary_dim} (head_dim {self.head_dim} x partial_rotary_factor "
                 f"{self.partial_rotary_factor}) needs {self.rotary_dim // 2}")


@dataclass(frozen=True)
class VisionConfig:
    depth: int = 24
    hidden_size: int = 1536
    num_heads: int = 12
    intermediate_size: int = 13696  # the patch merger's SwiGLU width only
    out_hidden_size: int = 4096  # = text hidden; also the width of each vision block's MLP
    image_size: int = 336
    patch_size: int = 14
    temporal_patch_size: int = 2
    spatial_merge_size: int = 2
    in_channels: int = 3
    rms_norm_eps: float = 1e-5
    attention_bias: bool = False
    rope_theta: float = 10000.0

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def pos_grid(self) -> int:
        """Side of the learned absolute position table (24 for 336 / 14)."""
        return self.image_size // self.patch_size

    @property
    def patch_dim(self) -> int:
        return self.in_channels * self.temporal_patch_size * self.patch_size**2

    def check(self) -> None:
        _require(self.hidden_size % self.num_heads == 0,
                 f"vision hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        _require(self.head_dim % 4 == 0, f"vision head_dim {self.head_dim} must be a multiple of 4 (2D rotary)")


@dataclass(frozen=True)
class Glm4vConfig:
    text: TextConfig
    vision: VisionConfig
    image_token_id: int
    video_token_id: int
    image_start_token_id: int
    image_end_token_id: int
    video_start_token_id: int
    video_end_token_id: int
    eos_token_ids: tuple[int, ...] = ()
    pad_token_id: int | None = None
    model_type: str = "glm4v"

    def check(self) -> None:
        self.text.check()
        self.vision.check()
        _require(self.vision.out_hidden_size == self.text.hidden_size,
                 f"vision out_hidden_size {self.vision.out_hidden_size} != text hidden_size {self.text.hidden_size}")
        for name in ("image_token_id", "video_token_id", "image_start_token_id", "image_end_token_id",
                     "video_start_token_id", "video_end_token_id"):
            value = getattr(self, name)
            _require(0 <= value < self.text.vocab_size, f"{name} {value} is outside the vocabulary "
                     f"(vocab_size {self.text.vocab_size})")

    @classmethod
    def from_dict(cls, raw: dict) -> Glm4vConfig:
        if not isinstance(raw, dict):
            raise ModelError(f"config.json holds a {type(raw).__name__}, not an object: not a checkpoint's "
                             f"config; re-download the checkpoint")
        model_type = raw.get("model_type")
        if model_type not in SUPPORTED_MODEL_TYPES:
            raise ModelError(f"model_type {model_type!r} is not a GLM-4.1V-architecture checkpoint "
                             f"(supported: {', '.join(SUPPORTED_MODEL_TYPES)} with a dense glm4v_text decoder)")
        for part in ("text_config", "vision_config"):
            if not isinstance(raw.get(part), dict):
                raise ModelError(f"config.json has no {part} (every {model_type} checkpoint has one); "
                                 f"re-download the checkpoint")
        text_raw, vision_raw = raw["text_config"], raw["vision_config"]
        text_type = text_raw.get("model_type", "glm4v_text")
        if text_type not in SUPPORTED_TEXT_TYPES:
            raise ModelError(f"text model_type {text_type!r} is not supported (only the dense glm4v_text "
                             f"decoder of GLM-4.1V / GLM-4.6V-Flash; MoE checkpoints such as GLM-4.5V are not)")
        try:
            config = cls(
                text=_text_config(text_raw),
                vision=_vision_config(vision_raw),
                image_token_id=int(raw["image_token_id"]),
                video_token_id=int(raw["video_token_id"]),
                image_start_token_id=int(raw["image_start_token_id"]),
                image_end_token_id=int(raw["image_end_token_id"]),
                video_start_token_id=int(raw["video_start_token_id"]),
                video_end_token_id=int(raw["video_end_token_id"]),
                eos_token_ids=_id_tuple(text_raw.get("eos_token_id", raw.get("eos_token_id"))),
                pad_token_id=text_raw.get("pad_token_id", raw.get("pad_token_id")),
                model_type=model_type,
            )
        except KeyError as e:
            raise ModelError(f"config.json lacks the field {e.args[0]!r} that GLM-4.1V checkpoints have") from None
        except (TypeError, ValueError) as e:  # ("hidden_size": "big", a list where a number goes)
            raise ModelError(f"config.json has a field of the wrong kind ({e}); re-download the checkpoint") from None
        config.check()
        return config

    @classmethod
    def from_folder(cls, folder: Path) -> Glm4vConfig:
        path = Path(folder) / "config.json"
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            raise ModelError(f"{folder} has no config.json: not a Hugging Face checkpoint folder") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ModelError(f"{path} is not valid JSON ({e}); re-download the checkpoint") from None
        return cls.from_dict(raw)


def _text_config(raw: dict) -> TextConfig:
    rope = dict(raw.get("rope_parameters") or {})
    legacy = raw.get("rope_scaling") or {}
    theta = rope.get("rope_theta", raw.get("rope_theta", 10000.0))
    prf = rope.get("partial_rotary_factor", raw.get("partial_rotary_factor", 1.0))
    section = rope.get("mrope_section", legacy.get("mrope_section", (8, 12, 12)))
    rope_type = rope.get("rope_type", legacy.get("rope_type", legacy.get("type", "default")))
    _require(rope_type == "default", f"rope_type {rope_type!r} is not supported (GLM-4.1V uses 'default')")
    return TextConfig(
        vocab_size=int(raw["vocab_size"]),
        hidden_size=int(raw["hidden_size"]),
        intermediate_size=int(raw["intermediate_size"]),
        num_layers=int(raw["num_hidden_layers"]),
        num_heads=int(raw["num_attention_heads"]),
        num_kv_heads=int(raw.get("num_key_value_heads") or raw["num_attention_heads"]),
        max_position_embeddings=int(raw.get("max_position_embeddings", 32768)),
        rms_norm_eps=float(raw.get("rms_norm_eps", 1e-5)),
        rope_theta=float(theta),
        partial_rotary_factor=float(prf),
        mrope_section=tuple(int(s) for s in section),
    )


def _vision_config(raw: dict) -> VisionConfig:
    rope = raw.get("rope_parameters") or {}
    return VisionConfig(
        depth=int(raw.get("depth", raw.get("num_hidden_layers", 24))),
        hidden_size=int(raw["hidden_size"]),
        num_heads=int(raw.get("num_heads", raw.get("num_attention_heads", 12))),
        intermediate_size=int(raw["intermediate_size"]),
        out_hidden_size=int(raw["out_hidden_size"]),
        image_size=int(raw.get("image_size", 336)),
        patch_size=int(raw.get("patch_size", 14)),
        temporal_patch_size=int(raw.get("temporal_patch_size", 2)),
        spatial_merge_size=int(raw.get("spatial_merge_size", 2)),
        in_channels=int(raw.get("in_channels", 3)),
        rms_norm_eps=float(raw.get("rms_norm_eps", 1e-5)),
        attention_bias=bool(raw.get("attention_bias", False)),
        rope_theta=float(rope.get("rope_theta", 10000.0)),
    )


def _id_tuple(value) -> tuple[int, ...]:
    if value is None:
        return ()
    return tuple(int(v) for v in (value if isinstance(value, (list, tuple)) else [value]))


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ModelError(f"invalid GLM-4.1V config: {message}")
