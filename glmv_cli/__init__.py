"""glmv: ask GLM-4.1V vision-language models about images, PDFs and videos, locally.

`glmv_cli.load(path_or_repo_id, device=..., dtype=...)` is the Python entry point (see api.py).
Importing the package is cheap; torch is imported on first use.
"""

from __future__ import annotations

__version__ = "0.1.0"


def load(path_or_repo_id="zai-org/GLM-4.1V-9B-Thinking", *, device="auto", dtype="auto"):
    """Load a checkpoint folder or a repo id from the local Hugging Face cache; returns a `Glmv`."""
    from glmv_cli.api import load as _load

    return _load(path_or_repo_id, device=device, dtype=dtype)
