"""Log-probabilities of the answer's tokens, in OpenAI's shape (`logprobs.content` of a chat completion,
`--logprobs` in `--json`).

generate.Generation scores every drawn token under the model's own distribution (the raw logits,
before penalties, masks and temperature) with its N likeliest alternatives. Which tokens are the
answer's is read from the stream parser's state after each token: the thinking, the tags
(`<answer>`, box markers) and the whitespace the answer is trimmed of are left out, so the tokens'
text joined is the answer's text.
"""

from __future__ import annotations

from glmv_cli.stream import TAGS


def answer_logprobs(ids: list[int], trace: list, scores: list, tokenizer) -> list[dict]:
    """The answer's tokens (see the module) with their log-probabilities and alternatives."""
    out = []
    for token, (state, started), scored in zip(ids, trace, scores, strict=False):
        if scored is None or state not in ("answer", "done"):
            continue
        text = tokenizer.decode([token])
        if text in TAGS or (not started and not text.strip()):
            continue
        chosen, top = scored
        out.append({**_token(tokenizer, token, chosen),
                    "top_logprobs": [_token(tokenizer, t, lp) for t, lp in top]})
    while out and not bytes(out[-1]["bytes"]).decode("utf-8", "replace").strip():
        out.pop()  # (the answer's trailing whitespace is not in its text)
    return out


def _token(tokenizer, token: int, logprob: float) -> dict:
    raw = tokenizer.token_bytes(token)
    return {"token": raw.decode("utf-8", "replace"), "logprob": logprob, "bytes": list(raw)}
