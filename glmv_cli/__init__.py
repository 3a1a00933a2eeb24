"""glmv: ask GLM-4.1V vision-language models about images, PDFs and videos, locally.

Two Python entry points, both cheap to import (torch is imported on first use):

* `glmv_cli.Session(model)`: what the CLI itself uses. Load once, ask many times, get a stream of
  typed events (Progress, Note, Thinking, Answer, Done) or a collected Result; `session.conversation()`
  keeps a multi-turn history. See glmv_cli/app/session.py.
* `glmv_cli.load(path_or_repo_id, device=..., dtype=..., quantize=None|"int8"|"int4")`: the bare model and
  token generation on processor-style tensors (see api.py).
"""

from __future__ import annotations

__version__ = "0.1.0"

_LAZY = {
    "Session": "glmv_cli.app.session", "Conversation": "glmv_cli.app.session", "Result": "glmv_cli.app.events",
    "GenerationOptions": "glmv_cli.app.events", "Progress": "glmv_cli.app.events", "Note": "glmv_cli.app.events",
    "Done": "glmv_cli.app.events", "LoadOptions": "glmv_cli.app.loaders", "Thinking": "glmv_cli.stream",
    "Answer": "glmv_cli.stream", "GlmvError": "glmv_cli.errors", "AnswerFormat": "glmv_cli.app.answer_format",
    "ToolUse": "glmv_cli.app.tools", "ToolCall": "glmv_cli.app.tools", "ToolCalled": "glmv_cli.app.tools",
}
__all__ = ["load", "__version__", *_LAZY]


def load(path_or_repo_id="zai-org/GLM-4.1V-9B-Thinking", *, device="auto", dtype="auto", quantize=None,
         progress=None):
    """Load a checkpoint folder or a repo id from the local Hugging Face cache; returns a `Glmv`.
    `progress` (optional): called as progress(bytes read, bytes in all) as the weights are read."""
    from glmv_cli.api import load as _load

    return _load(path_or_repo_id, device=device, dtype=dtype, quantize=quantize, progress=progress)


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'glmv_cli' has no attribute {name!r}")
