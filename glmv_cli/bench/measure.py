"""Time one implementation end to end on one prompt: load, preprocess, vision, prefill, decode.

`measure_ours` and `measure_reference` return the same `Timings`, so the two can sit side by side.
Peak resident memory is the process's high-water mark reset before each load (Linux), so running
ours then the reference in one process still gives each its own peak.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from PIL import Image


@dataclass
class Timings:
    load_s: float
    peak_rss_gb: float
    preprocess_s: float
    vision_s: float
    prefill_s: float
    ttft_s: float
    decode_tok_s: float
    prompt_tokens: int
    compile_s: float = 0.0  # --compile: the first generation's extra time (compiling the step), not in decode_tok_s
    peak_gpu_gb: float = 0.0  # CUDA: the most memory torch allocated on the GPU, from load to the last token

    def as_dict(self) -> dict:
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in asdict(self).items()}


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def reset_peaks(device) -> None:
    """Reset the host's and (CUDA) the GPU's memory high-water marks."""
    reset_peak_rss()
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_gpu_gb(device) -> float:
    return torch.cuda.max_memory_allocated() / 1e9 if torch.device(device).type == "cuda" else 0.0


def reset_peak_rss() -> None:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def peak_rss_gb() -> float:
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024 / 1e9
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9


BEST_OF = 3  # every phase is timed this many times on both sides, the shortest kept


class Clock:
    def __init__(self, device):
        self.device = device

    def __call__(self, fn):
        _sync(self.device)
        start = time.perf_counter()
        out = fn()
        _sync(self.device)
        return out, time.perf_counter() - start

    def best(self, fn, repeats: int = BEST_OF) -> float:
        """The shortest of `repeats` timings of fn(): one run's noise can exceed a short phase (the
        decode of a few tokens, measured as a difference of two generations, came out negative)."""
        return min(self(fn)[1] for _ in range(repeats))


def prompt_text(words: int) -> str:
    """A question of about `words` tokens."""
    base = "Describe the shapes and colors you see in this image and how they are arranged"
    return " ".join((base.split() * (words // 14 + 1))[:words])


def our_preprocessor(folder: Path, image: Image.Image | None, text: str):
    """A function that preprocesses the prompt (image + text) into our model's inputs, as glmv does."""
    from glmv_cli.inputs.image import preprocess_image
    from glmv_cli.inputs.patches import load_patch_specs
    from glmv_cli.prompt import PromptConfig, Turn, build_inputs
    from glmv_cli.tokenizer import Tokenizer

    tokenizer, config = Tokenizer.from_folder(folder), PromptConfig.from_folder(folder)
    spec = load_patch_specs(folder)[0]

    def preprocess() -> dict:
        parts = [text] if image is None else [preprocess_image(image, spec, source="bench"), text]
        return build_inputs([Turn.user(*parts)], tokenizer, config).as_dict()

    return preprocess


def measure_ours(folder: Path, image: Image.Image, text: str, *, device, dtype, new_tokens: int,
                 quantize: str | None = None, compile: bool = False, graph: bool | None = None) -> Timings:
    """graph: None = the default decode step for the device (a CUDA graph on CUDA), False = eager."""
    import glmv_cli

    clock = Clock(device)
    reset_peaks(device)
    glm, load_s = clock(lambda: glmv_cli.load(folder, device=device, dtype=dtype, quantize=quantize))
    preprocess = our_preprocessor(folder, image, text)
    inputs = preprocess()  # (also the warm-up)
    preprocess_s = clock.best(preprocess)  # best of 3 like every other phase (one timing varied 2-4x)
    model = glm.model
    pixels = inputs["pixel_values"].to(glm.device)  # (PatchCodes: their expansion is timed with the tower)
    vision_s = clock.best(lambda: model.visual(pixels, inputs["image_grid_thw"]))
    n = inputs["input_ids"].shape[1]
    model.language_model.setup_cache(1, n + new_tokens)
    prefill_total = clock.best(lambda: model.prefill(**inputs))  # (the first also compiles Triton's kernels)
    model.language_model.drop_cache()

    def run() -> tuple[float, float]:  # (time to the first token, time for the rest)
        stream = iter(glm.generate(inputs, max_new_tokens=new_tokens, ignore_stop=True, compile=compile,
                                   graph=graph, draft=0))  # the step itself: random weights repeat
        # themselves, and drafts looked up in that (lookup.py) would count steps not run
        _, first = clock(lambda: next(stream))
        _, rest = clock(lambda: sum(1 for _ in stream))
        return first, rest

    # the first run compiles the step (--compile) and captures the graph (CUDA): not in the timings
    cold_first, cold_rest = run()
    runs = [run() for _ in range(BEST_OF)]
    ttft_gen, rest = min(r[0] for r in runs), min(r[1] for r in runs)
    compile_s = max(cold_first + cold_rest - ttft_gen - rest, 0.0) if compile else 0.0
    return Timings(load_s=load_s, peak_rss_gb=peak_rss_gb(), preprocess_s=preprocess_s, vision_s=vision_s,
                   prefill_s=max(prefill_total - vision_s, 0.0), ttft_s=preprocess_s + ttft_gen,
                   decode_tok_s=(new_tokens - 1) / rest, prompt_tokens=n, compile_s=compile_s,
                   peak_gpu_gb=peak_gpu_gb(device))


def measure_reference(folder: Path, image: Image.Image, text: str, *, device, dtype, new_tokens: int) -> Timings:
    from glmv_cli.reference import reference_model, reference_processor

    clock = Clock(device)
    reset_peaks(device)
    model, load_s = clock(lambda: reference_model(folder, dtype=dtype, device=device).to(device))
    processor = reference_processor(folder)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]
    prompt = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def preprocess():
        return processor(text=[prompt], images=[image], return_tensors="pt").to(device)

    inputs = preprocess()  # (also the warm-up)
    preprocess_s = clock.best(preprocess)  # best of 3 like every other phase (one timing varied 2-4x)
    with torch.no_grad():
        vision_s = clock.best(lambda: model.model.get_image_features(inputs["pixel_values"], inputs["image_grid_thw"]))
        forward_s = clock.best(lambda: model(**inputs, use_cache=True, logits_to_keep=1))  # as generate() does
        gen = dict(do_sample=False, pad_token_id=model.generation_config.pad_token_id)
        ttft_gen = clock.best(lambda: model.generate(**inputs, max_new_tokens=1, **gen))
        total = clock.best(lambda: model.generate(**inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                                                  **gen))
    return Timings(load_s=load_s, peak_rss_gb=peak_rss_gb(), preprocess_s=preprocess_s, vision_s=vision_s,
                   prefill_s=max(forward_s - vision_s, 0.0), ttft_s=preprocess_s + ttft_gen,
                   decode_tok_s=(new_tokens - 1) / max(total - ttft_gen, 1e-9),
                   prompt_tokens=int(inputs["input_ids"].shape[1]), peak_gpu_gb=peak_gpu_gb(device))
