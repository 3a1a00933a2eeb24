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
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from glmv_cli.batching import DecodeBatcher
from glmv_cli.generate import Generation, Sampling, StaticStep, compiled_step
from glmv_cli.kernels import triton_compiles
from glmv_cli.loading import (
    DEFAULT_REPO,
    check_device,
    emulated_note,
    load_model,
    pick_device,
    pick_dtype,
    resolve_checkpoint,
)
from glmv_cli.lookup import RecentAnswers
from glmv_cli.model.config import Glm4vConfig
from glmv_cli.model.glm4v import Glm4v
from glmv_cli.prompt_cache import PromptCache
from glmv_cli.prompt_cache import enabled as prompt_cache_enabled

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
    _steps: dict = field(default_factory=dict, repr=False)
    _batcher: DecodeBatcher | None = field(default=None, repr=False)
    _making: threading.Lock = field(default_factory=threading.Lock, repr=False)
    prompt_cache: PromptCache = field(default_factory=PromptCache, repr=False)  # the last request's KV cache
    answers: RecentAnswers = field(default_factory=RecentAnswers, repr=False)  # the last answers: drafted from

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

    def decode_step(self, compile: bool = False, graph: bool | None = None) -> StaticStep | None:
        """The decode step generation runs, made once per loaded model and kind:

        - on CUDA (graph None or True): the one-token step captured as a CUDA graph (cuda_graph.py),
          with the step compiled by torch.compile inside it when `compile`; this is the default;
        - elsewhere, or graph=False: the compiled static step when `compile`, else None (eager
          decoding, which on a CPU is as fast as a static step).
        """
        from glmv_cli.cuda_graph import CudaGraphStep, graphs_enabled

        use_graph = graphs_enabled(self.device) if graph is None else bool(graph)
        if compile and self.device.type == "cuda" and not triton_compiles(self.dtype, self.device):
            compile = False  # (torch.compile writes Triton kernels)
            log.warning("note: --compile is off: torch.compile writes Triton kernels, which Triton cannot compile "
                        "for this GPU in %s (see the note above)", str(self.dtype).removeprefix("torch."))
        key = (bool(compile), use_graph)
        if key not in self._steps:
            fn = compiled_step(self.model) if compile else self.model.decode_step
            if use_graph:
                self._steps[key] = CudaGraphStep(self.model, fn)
            else:
                self._steps[key] = StaticStep(self.model, fn) if compile else None
        return self._steps[key]

    def batcher(self, rows: int) -> DecodeBatcher:
        """What generations on several threads share to decode together (batching.py), made once;
        at most `rows` sequences per step."""
        with self._making:  # (the first questions of several threads ask for it at once: one for all)
            return self._make_batcher(rows)

    def _make_batcher(self, rows: int) -> DecodeBatcher:
        if self._batcher is None:
            from glmv_cli.cuda_graph import graphs_enabled

            graphs = None
            if graphs_enabled(self.device):
                from glmv_cli.batch_graphs import RowGraphs

                graphs = RowGraphs(self.model)
            self._batcher = DecodeBatcher(self.model, rows, graphs=graphs)
        self._batcher.rows = max(1, rows)
        return self._batcher

    def batch_stats(self) -> dict | None:
        """The batcher's counts (None before any): steps run, rows in them, the most rows at once."""
        b = self._batcher
        if b is None:
            return None
        out = {"steps": b.steps, "rows": b.row_steps, "widest": b.widest}
        if b.graphs is not None:
            out |= {"graph_captures": b.graphs.captures, "capture_s": round(b.graphs.capture_seconds, 3)}
        return out

    def generate(self, inputs: dict, *, max_new_tokens: int | None = None, ignore_stop: bool = False,
                 compile: bool = False, graph: bool | None = None, reuse: bool = False, draft: int | None = None,
                 **sampling) -> Generation:
        """An iterator of new token ids for the processor-style `inputs` (batch of one, on any
        device); compile=True decodes with the compiled step; graph=False turns CUDA graphs off;
        reuse=True skips the prompt's first tokens that the last reusing request left in the KV
        cache (a conversation's next turn: prompt_cache.py; the Session does this); draft: ids looked
        up in the text so far and checked with each token (lookup.py; None: the device's default,
        0: off)."""
        limit = max_new_tokens or int(self.defaults.get("max_new_tokens") or 1024)
        cache = self.reusable_cache() if reuse else None
        if cache is None:
            self.prompt_cache.clear()  # nothing is kept for a later request: its memory goes back
        return Generation(self.model, inputs, max_new_tokens=limit, sampling=self.sampling(**sampling),
                          stop_ids=() if ignore_stop else self.stop_ids, step=self.decode_step(compile, graph),
                          prompt_cache=cache, draft=draft)

    def reusable_cache(self) -> PromptCache | None:
        """The prompt cache, unless GLMV_PROMPT_CACHE=0 turns reuse off (then what it held is let go)."""
        if prompt_cache_enabled():
            return self.prompt_cache
        self.prompt_cache.clear()
        return None


def generation_defaults(folder: Path) -> dict:
    path = folder / "generation_config.json"
    if not path.is_file():
        return {}
    try:
        defaults = json.loads(path.read_text())
        if isinstance(defaults, dict):
            return defaults
        raise ValueError("not an object")
    except (ValueError, UnicodeDecodeError):  # (json.JSONDecodeError is a ValueError)
        if path not in _WARNED:  # (the session and the loaded model both read it: said once)
            _WARNED.add(path)
            log.warning("ignoring unreadable %s", path)
        return {}


_WARNED: set[Path] = set()


def _ids(value) -> tuple[int, ...]:
    if value is None:
        return ()
    return tuple(int(v) for v in (value if isinstance(value, (list, tuple)) else [value]))


def load(path_or_repo_id: str | Path = DEFAULT_REPO, *, device: str | torch.device = "auto",
         dtype: str | torch.dtype = "auto", quantize: str | None = None, progress=None) -> Glmv:
    """Load a GLM-4.1V-architecture checkpoint from a folder or the local Hugging Face cache;
    quantize="int8" stores the text decoder's weights in int8 (model/quant.py). `progress`
    (optional): called as progress(bytes read, bytes in all) as the weights are read."""
    start = time.perf_counter()
    if isinstance(device, str):
        check_device(device)  # (as the Session and the CLI say it)
    folder = resolve_checkpoint(path_or_repo_id)
    Glm4vConfig.from_folder(folder)  # (a folder without a readable config.json: a ModelError, first)
    dev = pick_device(device)
    dt = pick_dtype(dtype, folder, dev)
    if note := emulated_note(dev, dt):
        log.warning("note: %s", note)
    model = load_model(folder, dev, dt, quantize, progress)
    defaults = generation_defaults(folder)
    stop_ids = tuple(dict.fromkeys(_ids(defaults.get("eos_token_id")) + model.cfg.eos_token_ids))
    return Glmv(model=model, folder=folder, device=dev, dtype=dt, stop_ids=stop_ids, defaults=defaults,
                load_seconds=time.perf_counter() - start)
