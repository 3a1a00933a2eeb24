"""What int8 costs in accuracy: the quantized model's logits against the unquantized model's.

Both models run the same prompts (full forward, every position); reported are the share of
positions whose top-1 token agrees and the cosine similarity of the logit vectors (mean and
minimum). The two models are loaded one after the other, so memory holds one at a time.
"""

from __future__ import annotations

import gc
from pathlib import Path

import torch
import torch.nn.functional as F


def _logits(folder: Path, prompts: list[dict], device, dtype, quantize: str | None) -> list[torch.Tensor]:
    import glmv_cli

    glm = glmv_cli.load(folder, device=device, dtype=dtype, quantize=quantize)
    with torch.no_grad():
        out = [glm.model(**{k: v.to(glm.device) for k, v in p.items()})[0].float().cpu() for p in prompts]
    del glm
    gc.collect()
    return out


def quantization_accuracy(folder: Path, prompts: list[dict], *, device, dtype, quantize: str = "int8") -> dict:
    """{"top1_agreement", "logit_cosine_mean", "logit_cosine_min", "positions"} over all prompts."""
    exact = _logits(folder, prompts, device, dtype, None)
    quant = _logits(folder, prompts, device, dtype, quantize)
    a, b = torch.cat(exact), torch.cat(quant)  # (positions, V)
    cosine = F.cosine_similarity(a, b, dim=-1)
    return {"top1_agreement": round(float((a.argmax(-1) == b.argmax(-1)).float().mean()), 4),
            "logit_cosine_mean": round(float(cosine.mean()), 5), "logit_cosine_min": round(float(cosine.min()), 5),
            "positions": int(a.shape[0])}
