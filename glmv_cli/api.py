"""The Python entry point: `load()` a checkpoint once, then run the model or generate from it.

    import glmv_cli
    glm = glmv_cli.load("zai-org/GLM-4.1V-9B-Thinking", device="auto", dtype="auto")
    logits = glm.model(**processor_outputs)          # same tensor names as Glm4vProcessor's
    for token_id in glm.generate(processor_outputs, max_new_tokens=64):
        ...
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from glmv_cli.generate import Generation, Sampling, compiled_step
from glmv_cli.loading import DEFAULT_REPO, load_model, pick_device, pick_dtype, resolve_checkpoint
from glmv_cli.model.config import Glm4vConfig
from glmv_cli.model.glm4v import Glm4v

log = logging.getLogger(__name__)


@dataclass
class Glmv:
    """A loaded checkpoint: the model, its config, where it came from and its generation defaults."""

    model: Glm4v
    folder: Path
    device: torch.device
    dtype: torch.dtype
    stop_ids: tuple[int, ...]
    defaults: dict = field(default_factory=dict)
    load_seconds: float = 0.0
    _step: object = field(default=None, repr=False)

    @property
    def config(self) -> Glm4vConfig:
        return self.model.cfg

    def sampling(self, **overrides) -> Sampling:
        """Sampling settings: explicit overrides (None = unset), else generation_config.json."""
        d = self.defaults
        greedy_default = 0.0 if not d.get("do_sample", False) else d.get("temperature", 1.0)
        values = {
            "temperature": greedy_default, "top_p": d.get("top_p", 1.0), "top_k": d.get("top_k", 0) or 0,
            "repetition_penalty": d.get("repetition_penalty", 1.0), "seed": None,
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return Sampling(**values)

    def compiled_step(self):
        """The torch.compile'd one-token decode step, made once per loaded model (generate.py)."""
        if self._step is None:
            self._step = compiled_step(self.model)
        return self._step

    def generate(self, inputs: dict, *, max_new_tokens: int | None = None, ignore_stop: bool = False,
                 compile: bool = False, **sampling) -> Generation:
        """An iterator of new token ids for the processor-style `inputs` (batch of one); compile=True
        decodes with the compiled step."""
        limit = max_new_tokens or int(self.defaults.get("max_new_tokens") or 1024)
        return Generation(self.model, inputs, max_new_tokens=limit, sampling=self.sampling(**sampling),
                          stop_ids=() if ignore_stop else self.stop_ids,
                          step=self.compiled_step() if compile else None)


def generation_defaults(folder: Path) -> dict:
    path = folder / "generation_config.json"
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        log.warning("ignoring unreadable %s", path)
        return {}


def _ids(value) -> tuple[int, ...]:
    if value is None:
        return ()
    return tuple(int(v) for v in (value if isinstance(value, (list, tuple)) else [value]))


def load(path_or_repo_id: str | Path = DEFAULT_REPO, *, device: str | torch.device = "auto",
         dtype: str | torch.dtype = "auto", quantize: str | None = None) -> Glmv:
    """Load a GLM-4.1V-architecture checkpoint from a folder or the local Hugging Face cache;
    quantize="int8" stores the text decoder's weights in int8 (model/quant.py)."""
    start = time.perf_counter()
    folder = resolve_checkpoint(path_or_repo_id)
    dev = pick_device(device)
    dt = pick_dtype(dtype, folder, dev)
    model = load_model(folder, dev, dt, quantize)
    defaults = generation_defaults(folder)
    stop_ids = tuple(dict.fromkeys(_ids(defaults.get("eos_token_id")) + model.cfg.eos_token_ids))
    return Glmv(model=model, folder=folder, device=dev, dtype=dt, stop_ids=stop_ids, defaults=defaults,
                load_seconds=time.perf_counter() - start)
