"""Held-out answer accuracy while training: greedy answers to prepared samples, per task.

Loss alone says little here (most target tokens are the answer format, learnt in minutes); what
matters is whether the answer is right. The monitor's samples come from their own split, so the
evaluation's examples stay unseen.
"""

from __future__ import annotations

import collections
from collections.abc import Sequence

import torch

from glmv_cli.demo import data
from glmv_cli.generate import Generation
from glmv_cli.model.glm4v import Glm4v
from glmv_cli.stream import parse
from glmv_cli.tokenizer import Tokenizer


def answer_of(text: str) -> str:
    """The answer as `glmv ask --json` reports it (the CLI's own parser), so that the monitor and
    the evaluation count the same answers right."""
    return parse(text)[1].strip()


def expected_answer(sample: data.Sample, tokenizer: Tokenizer, end_id: int) -> str:
    """The answer in a sample's target, read like a generated one: the target without the end
    token, which generation stops at and does not return."""
    target = sample.ids[sample.prompt_len:].tolist()
    return answer_of(tokenizer.decode(target[:-1] if target[-1] == end_id else target))


@torch.no_grad()
def accuracy(model: Glm4v, samples: Sequence[data.Sample], tokenizer: Tokenizer, spec, pad_id: int,
             end_id: int, max_new_tokens: int = 96) -> dict[str, float]:
    """Share of samples per task whose greedy answer equals the target's answer."""
    was_training = model.training
    model.eval()
    right: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0])
    try:
        for sample in samples:
            inputs = data.collate([sample], pad_id, spec).inputs
            inputs.pop("attention_mask")
            inputs["input_ids"] = inputs["input_ids"][:, :sample.prompt_len]
            ids = list(Generation(model, inputs, max_new_tokens=max_new_tokens, stop_ids=(end_id,)))
            expected = expected_answer(sample, tokenizer, end_id)
            right[sample.task][0] += answer_of(tokenizer.decode(ids)) == expected
            right[sample.task][1] += 1
    finally:
        model.language_model.drop_cache()
        model.train(was_training)
    return {task: ok / n for task, (ok, n) in sorted(right.items())}
