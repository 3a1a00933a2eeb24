"""The last conversation's KV cache, kept on disk beside it, so that `glmv ask -c` in a new process
does not read the conversation so far (its images, its pages) through the model again, nor does a
new `glmv ask` about the same image (a script asking several questions about one screenshot).

After `glmv ask` answers (and when `glmv chat` ends), the keys and values of the last prompt go to
`last.kv.safetensors` in the state folder (app/history.py), with its ids and media digests
(prompt_cache.py) and a fingerprint of what computed them: the checkpoint's folder, its weight
files' sizes and times, the dtype, int8 or not, and the device type. The next `glmv ask`, `pdf`,
`video` or `chat` loads them back as a snapshot of the prompt cache when the fingerprint is the
same; the prompt cache's own match then decides how much of the new prompt they hold. A file that
is missing, unreadable or from another setting is passed over: nothing is refused because of it.

Where it pays: on a CPU or a Mac, where reading a prompt through GLM-4.1V-9B takes seconds to
minutes and reading its cache from disk a fraction of a second. On a CUDA GPU the prompt goes
through in a fraction of a second too, about what writing its cache after every question would
add, so nothing is kept there unless GLMV_PROMPT_CACHE_DISK_MB says how much may be. Elsewhere
prompts whose cache takes more than GLMV_PROMPT_CACHE_DISK_MB (default 256; GLM-4.1V-9B in
bfloat16: 40 KiB a token, so 6,500 tokens) are not kept. GLMV_NO_HISTORY=1 and GLMV_PROMPT_CACHE=0
keep nothing.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import torch

from glmv_cli.app import history
from glmv_cli.prompt_cache import Media, PromptCache, Snapshot
from glmv_cli.prompt_cache import enabled as reuse_enabled

log = logging.getLogger(__name__)

FILE = "last.kv.safetensors"


def path() -> Path:
    return history.state_dir() / FILE


def limit(device: torch.device) -> int:
    """Bytes of cache that may be kept on disk for a model on `device`."""
    default = 0 if device.type == "cuda" else 256
    return int(float(os.environ.get("GLMV_PROMPT_CACHE_DISK_MB", default)) * 2**20)


def fingerprint(session) -> str:
    """What computed the keys and values: the same text means the same numbers."""
    glmv = session.glmv
    files = sorted(p for p in Path(session.folder).iterdir() if p.suffix in (".safetensors", ".json"))
    stats = [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in files]
    return json.dumps({"folder": str(Path(session.folder).resolve()), "files": stats, "dtype": str(glmv.dtype),
                       "quantize": session.quantize, "device": glmv.device.type, "torch": torch.__version__})


def save(session) -> None:
    """The last prompt's keys and values to disk (or the old file removed when there is nothing to
    keep). A warning, never a failure, where it cannot be written."""
    if not (history.enabled() and reuse_enabled()) or not session.loaded:
        return
    target = path()
    pc: PromptCache = session.glmv.prompt_cache
    n = pc.prompt_len
    try:
        if not pc.has_working() or n < PromptCache.MIN_TOKENS or n * pc.bytes_per_token() > limit(session.glmv.device):
            if target.is_file():
                target.unlink()
            return
        from safetensors.torch import save_file

        tensors = {"ids": torch.tensor(pc.ids[:n], dtype=torch.int64)}
        for i, c in enumerate(pc.caches):
            tensors[f"k.{i}"] = c.k[:, :, :n].contiguous().cpu()
            tensors[f"v.{i}"] = c.v[:, :, :n].contiguous().cpu()
        media = [[m.kind, m.start, m.end, list(m.grid), m.digest.hex()] for m in pc.media]
        if not target.parent.is_dir():
            return  # (history.save has said why the folder cannot be written)
        tmp = target.with_name(f"{FILE}.{os.getpid()}")
        save_file(tensors, str(tmp), metadata={"fingerprint": fingerprint(session), "media": json.dumps(media)})
        tmp.replace(target)
    except (OSError, RuntimeError) as e:
        log.warning("could not keep this conversation's cache for -c (%s)", e)


def restore(session) -> bool:
    """The kept keys and values into the loaded session's prompt cache, as a snapshot, when they
    were computed as this session computes; whether they were."""
    target = path()
    if not (history.enabled() and reuse_enabled() and target.is_file()):
        return False
    glmv = session.glmv
    try:
        from safetensors import safe_open

        with safe_open(str(target), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            if meta.get("fingerprint") != fingerprint(session):
                return False
            ids = f.get_tensor("ids").tolist()
            kv = [(f.get_tensor(f"k.{i}").to(glmv.device), f.get_tensor(f"v.{i}").to(glmv.device))
                  for i in range(glmv.config.text.num_layers)]
            media = [Media(kind, start, end, tuple(grid), bytes.fromhex(digest))
                     for kind, start, end, grid, digest in json.loads(meta["media"])]
    except Exception as e:  # a truncated or foreign file: only slower
        log.debug("passing over the kept cache %s: %s", target, e)
        return False
    text = glmv.config.text
    shape = (1, text.num_kv_heads, len(ids), text.head_dim)
    dtype = glmv.model.language_model.norm.weight.dtype  # the cache's (the embedding may be int8)
    if len(kv) != text.num_layers or any(t.shape != shape or t.dtype != dtype for pair in kv for t in pair):
        return False
    glmv.prompt_cache.snapshots.insert(0, Snapshot(ids, media, kv))
    return True

