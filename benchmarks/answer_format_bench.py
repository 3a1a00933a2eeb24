"""What holding an answer to a format costs per token at GLM-4.1V's vocabulary size.

GLM's tokenizer cannot be downloaded here, so a byte-level BPE of the same size (151,343 ids) is
trained on the Python sources of this environment (about 40 s on 2 cores, once; kept in --folder)
and stands in for it. For a JSON schema, a choice, a regex and a reply held to tool calls
(tool_choice "required", GLM-4.6V's <tool_call> format, untagged) it prints the one-off costs
(llguidance's view of the tokenizer, compiling the format) and the time of each token's mask
(AnswerSteering.mask: llguidance's bitmask, unpacked to a bool tensor over the model's 151,552 ids).

    python benchmarks/answer_format_bench.py [--folder /tmp/glmv-bigtok]
"""

from __future__ import annotations

import argparse
import glob
import json
import statistics
import sys
import sysconfig
import time
from pathlib import Path

SCHEMA = {"type": "object", "required": ["issuer", "date", "total", "items"], "properties": {
    "issuer": {"type": "string"}, "date": {"type": "string", "format": "date"}, "total": {"type": "number"},
    "items": {"type": "array", "items": {"type": "object", "required": ["name", "price"],
                                         "properties": {"name": {"type": "string"}, "price": {"type": "number"}}}}}}
ANSWER = {"issuer": "Acme Hardware GmbH", "date": "2026-11-27", "total": 41.5,
          "items": [{"name": "hammer", "price": 19.5}, {"name": "nails (box of 200)", "price": 22.0}]}
SPECIAL = ["<|endoftext|>", "<|user|>", "<|assistant|>", "<think>", "</think>", "<answer>", "</answer>",
           "<tool_call>", "</tool_call>", "<arg_key>", "</arg_key>", "<arg_value>", "</arg_value>"]
TOOL = {"type": "function", "function": {"name": "file_invoice", "parameters": {
    "type": "object", "properties": {"issuer": {"type": "string"}, "total": {"type": "number"},
                                     "items": SCHEMA["properties"]["items"]}, "required": ["issuer", "total"]}}}
CALL = ("<tool_call>file_invoice\n<arg_key>issuer</arg_key>\n<arg_value>Acme Hardware GmbH</arg_value>\n"
        "<arg_key>total</arg_key>\n<arg_value>41.5</arg_value>\n<arg_key>items</arg_key>\n<arg_value>"
        + json.dumps(ANSWER["items"]) + "</arg_value>\n</tool_call>")
VOCAB, MODEL_VOCAB = 151343, 151552  # GLM-4.1V's tokenizer and embedding sizes


def stand_in(folder: Path) -> Path:
    if (folder / "tokenizer.json").is_file():
        return folder
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    files = sorted(glob.glob(str(Path(sysconfig.get_paths()["purelib"]) / "**" / "*.py"), recursive=True))[:40000]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=SPECIAL, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    began = time.perf_counter()
    tok.train(files, trainer)
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    print(f"trained a {tok.get_vocab_size():,}-id stand-in on {len(files):,} files in "
          f"{time.perf_counter() - began:.0f} s", file=sys.stderr)
    return folder


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--folder", type=Path, default=Path("/tmp/glmv-bigtok"))
    args = ap.parse_args()

    import torch  # noqa: F401  (loaded before any timing, as it is in a generation)

    from glmv_cli.app.answer_format import AnswerFormat, AnswerSteering, _ll_tokenizer
    from glmv_cli.app.tools import MARKERS, ToolUse
    from glmv_cli.tokenizer import Tokenizer

    tok = Tokenizer.from_folder(stand_in(args.folder))
    began = time.perf_counter()
    _ll_tokenizer(tok)
    report = {"vocab": tok.vocab_size, "llguidance_tokenizer_s": round(time.perf_counter() - began, 3)}
    print(f"vocabulary {tok.vocab_size:,} ids; llguidance's view of it built in {report['llguidance_tokenizer_s']} s "
          f"(once per process)")
    stop = (tok.token_id("<|endoftext|>"),)
    tools = ToolUse.from_openai([TOOL], "required")
    cases = {"json_schema": (AnswerFormat.json_schema(SCHEMA), json.dumps(ANSWER), True),
             "choice": (AnswerFormat.choice(["W-2", "1099", "other"]), "1099", True),
             "regex": (AnswerFormat.regex(r"[0-9]+(\.[0-9]+)? (ms|s)"), "12.5 ms", True),
             "tool_calls": (lambda: AnswerFormat.grammar(tools.grammar(tok.added & set(MARKERS))), CALL, False)}
    for name, (fmt, text, tagged) in cases.items():
        began = time.perf_counter()
        steer = AnswerSteering(fmt() if callable(fmt) else fmt, tok, stop, MODEL_VOCAB, answer_tags=tagged)
        compile_ms = (time.perf_counter() - began) * 1e3
        if tagged:
            steer.feed(tok.token_id("<answer>"))
        times = []
        for t in [*tok.encode(text), tok.token_id("</answer>") if tagged else stop[0]]:
            began = time.perf_counter()
            mask = steer.mask("cpu")
            times.append((time.perf_counter() - began) * 1e3)
            assert bool(mask[0, t]), f"{name}: {tok.decode([t])!r} was not allowed"
            steer.feed(t)
        assert steer.step == "done" if tagged else steer.complete
        report[name] = {"compile_ms": round(compile_ms, 2), "tokens": len(times),
                        "mask_ms_median": round(statistics.median(times), 3), "mask_ms_max": round(max(times), 3)}
        print(f"{name:12s} compiled in {compile_ms:5.1f} ms; {len(times):3d} tokens, mask per token: median "
              f"{statistics.median(times):.3f} ms, max {max(times):.3f} ms")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
