"""Find a checkpoint (a folder, or a repo id in the local Hugging Face cache) and load it.

The model is built on the meta device, given real storage of the target dtype and device, and
every tensor is read from its safetensors file straight into that storage (on an accelerator
through pinned chunks, streaming.py): loading peaks at the size of the weights plus one tensor,
never twice the model. Keys are the checkpoint's own; any
missing / unexpected / misshapen ones are reported together in one error.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from pathlib import Path

import torch

from glmv_cli import kernels, memory
from glmv_cli.errors import InputError, ModelError
from glmv_cli.model.config import Glm4vConfig
from glmv_cli.model.glm4v import Glm4v
from glmv_cli.model.quant import Int8Embedding, Int8Linear, swap_quantized
from glmv_cli.model.quant_int4 import Int4Linear, scale_dtype
from glmv_cli.model.rope import inverse_frequencies
from glmv_cli.model.work import Tally
from glmv_cli.safetensors_io import TensorEntry, TensorReader, read_header
from glmv_cli.streaming import host_ring, read_parallel, stream_into

log = logging.getLogger(__name__)

DEFAULT_REPO = "zai-org/GLM-4.1V-9B-Thinking"
INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache, honouring HF_HUB_CACHE / HF_HOME / XDG_CACHE_HOME."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "huggingface" / "hub"


def cached_snapshot(repo_id: str) -> Path | None:
    """The snapshot folder of `repo_id` in the local cache (refs/main first, else the newest)."""
    repo = hf_cache_dir() / ("models--" + repo_id.replace("/", "--"))
    ref = repo / "refs" / "main"
    if ref.is_file():
        snap = repo / "snapshots" / ref.read_text().strip()
        if snap.is_dir():
            return snap
    snaps = sorted((p for p in (repo / "snapshots").glob("*") if p.is_dir()), key=lambda p: p.stat().st_mtime)
    return snaps[-1] if snaps else None


DEMO_NAME = "demo"
DEMO_FOLDER = Path(__file__).parent / "demo" / "checkpoint"


def resolve_checkpoint(name: str | os.PathLike) -> Path:
    """A local folder as given, "demo" (the small checkpoint shipped in the package, unless ./demo
    is a checkpoint folder), or a repo id ("org/name") found in the local cache; no network."""
    path = Path(name).expanduser()
    if str(name) == DEMO_NAME and not (path / "config.json").is_file():
        if not (DEMO_FOLDER / SINGLE_FILE).is_file():
            raise ModelError(f"the demo checkpoint is missing from {DEMO_FOLDER}; reinstall glmv or rebuild it "
                             f"with `python -m glmv_cli.demo.train`")
        return DEMO_FOLDER
    if path.is_dir():
        return path
    if path.exists():
        raise ModelError(f"{path} is a file; give the checkpoint folder that holds config.json")
    text = str(name)
    if text.count("/") == 1 and not text.startswith((".", "/", "~")):
        snap = cached_snapshot(text)
        if snap is not None:
            return snap
        get = "" if shutil.which("hf") else "`pip install huggingface_hub`, then "
        raise ModelError(f"model {text!r} is not in the local Hugging Face cache ({hf_cache_dir()}); "
                         f"download it with {get}`hf download {text}` or pass --model PATH")
    raise ModelError(f"no checkpoint folder {path}; pass --model PATH to a checkpoint folder or a repo id "
                     f"such as {DEFAULT_REPO}")


def weight_files(folder: Path) -> list[Path]:
    """The safetensors files of a checkpoint: the shards of its index, or model.safetensors."""
    index = folder / INDEX_FILE
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError, UnicodeDecodeError):
            raise ModelError(f"{index} is not a valid safetensors index; re-download it") from None
        files = [folder / name for name in dict.fromkeys(weight_map.values())]
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise ModelError(f"{folder}: shard(s) {', '.join(missing)} listed in {INDEX_FILE} are missing; "
                             f"finish the download")
        return files
    if (folder / SINGLE_FILE).is_file():
        return [folder / SINGLE_FILE]
    raise ModelError(f"{folder} has no {SINGLE_FILE} and no {INDEX_FILE}; is the download complete?")


def checkpoint_dtype(folder: Path) -> torch.dtype:
    """The dtype the checkpoint was saved in (config.json's dtype / torch_dtype), else bfloat16."""
    raw = json.loads((folder / "config.json").read_text())
    name = raw.get("dtype") or raw.get("torch_dtype") or raw.get("text_config", {}).get("torch_dtype")
    return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}.get(name, torch.bfloat16)


def check_device(device: str) -> None:
    """A clear InputError for a device this machine does not have."""
    if device not in ("auto", "cpu", "cuda", "mps") and not device.startswith("cuda:"):
        raise InputError(f"unknown device {device!r}; use auto, cpu, cuda or mps")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"--device {device}: no CUDA device is available to this torch "
                         f"({torch.__version__}); use --device cpu or auto")
    if device == "mps" and not torch.backends.mps.is_available():
        raise InputError("--device mps: Apple's Metal backend is not available here; use --device cpu or auto")


def pick_device(device: str | torch.device = "auto") -> torch.device:
    if str(device) != "auto":
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def pick_dtype(dtype: str | torch.dtype, folder: Path, device: torch.device) -> torch.dtype:
    """"auto": the checkpoint's dtype, except float16 on CPU (slow there) which becomes float32."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype != "auto":
        try:
            return {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
                    "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}[dtype]
        except KeyError:
            raise ModelError(f"unknown dtype {dtype!r}; use auto, bfloat16, float16 or float32") from None
    chosen = checkpoint_dtype(folder)
    return torch.float32 if device.type == "cpu" and chosen == torch.float16 else chosen


def emulated_note(device: torch.device, dtype: torch.dtype) -> str | None:
    """What to say where Triton cannot compile for the GPU in this dtype (kernels.triton_compiles):
    under compute capability 7.0 (a P100, a GTX 10xx) not at all; under 8.0 (a T4, a V100, an RTX
    20xx, a GTX 16xx) not bfloat16, which torch emulates there. float16 is not offered instead:
    GLM-4 models are known to overflow in it (vLLM's maintainers on GLM-4-32B-0414, ipex-llm on GLM-4)."""
    if device.type != "cuda" or kernels.triton_compiles(dtype, device):
        return None
    major, minor = kernels.cuda_capability(device)
    name, off = torch.cuda.get_device_name(device), "glmv's Triton kernels or --compile"
    if major < 7:
        return f"{name} (compute capability {major}.{minor}) is older than Triton supports (7.0): running without {off}"
    return (f"{name} has no bfloat16 arithmetic (compute capability {major}.{minor}; Ampere's is 8.0): torch "
            f"emulates it, without {off}. --dtype float32 avoids it (with --quantize int8 or int4 to fit); "
            f"float16 is known to overflow in GLM-4 models. Neither is measured on such a card yet")


def index_tensors(files: list[Path]) -> dict[str, tuple[Path, TensorEntry]]:
    """Every tensor name -> (file, entry), reading only the headers."""
    where = {}
    for path in files:
        for name, entry in read_header(path).items():
            where[name] = (path, entry)
    return where


def check_keys(model: torch.nn.Module, where: dict[str, tuple[Path, TensorEntry]]) -> None:
    """One error listing every missing, unexpected and misshapen key."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = sorted(set(expected) - set(where))
    unexpected = sorted(set(where) - set(expected))
    shapes = [f"{k} {list(where[k][1].shape)} in {where[k][0].name}, expected {list(s)}"
              for k, s in expected.items() if k in where and where[k][1].shape != s]
    problems = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", shapes)):
        if items:
            shown = ", ".join(items[:5]) + (f" (+{len(items) - 5} more)" if len(items) > 5 else "")
            problems.append(f"{len(items)} {label}: {shown}")
    if problems:
        raise ModelError("checkpoint keys do not match GLM-4.1V: " + "; ".join(problems))


def reset_rope_buffers(model: Glm4v) -> None:
    """Recompute the non-persistent rope frequencies (not in checkpoints), always in float32."""
    device = model.lm_head.weight.device
    text, vision = model.cfg.text, model.cfg.vision
    model.language_model.inv_freq = inverse_frequencies(text.rotary_dim, text.rope_theta).to(device)
    model.visual.inv_freq = inverse_frequencies(vision.head_dim // 2, vision.rope_theta).to(device)


QUANTIZE_CHOICES = ("int8", "int4")
STORED_FORMAT = 1  # the layout of a stored checkpoint's quantized tensors (below); a change bumps it
QUANTIZED = (Int8Linear, Int8Embedding, Int4Linear)
QUANTIZE_BLOCK_BYTES = 64 * 2**20  # float32 rows read and quantized at a time (CPU)
QUANTIZE_STREAM_BYTES = 128 * 2**20  # file bytes streamed to an accelerator and quantized there at a time
# (the float copy and the int8 rows of a block add ~2.5x that to the GPU peak while loading)


def read_quantized(reader: TensorReader, entry: TensorEntry, layer, device: torch.device,
                   ring: list[torch.Tensor] | None = None, read=None) -> None:
    """A float weight from the file into an Int8Linear, Int8Embedding or Int4Linear, ready to run
    on `device` (quantize_rows, then the layer's last step)."""
    quantize_rows(reader, entry, layer, device, ring, read)
    layer.ready()


def quantize_rows(reader: TensorReader, entry: TensorEntry, layer, device: torch.device,
                  ring: list[torch.Tensor] | None = None, read=None) -> None:
    """A float weight from the file quantized into a layer's codes and scales, in blocks of rows
    (loading, and `glmv quantize`, which stores them as they are). With a `ring` (an accelerator)
    each block streams through the pinned buffers into a device block in the file's dtype,
    quantized there: tensor by tensor through pageable memory took 24 s for GLM-4.1V-9B on an
    H200 machine, three times the bfloat16 load. `read` (optional) is told each block's bytes."""
    rows, row_bytes = entry.shape[0], entry.nbytes // max(1, entry.shape[0])
    step = max(1, (QUANTIZE_STREAM_BYTES // row_bytes) if ring is not None else
               QUANTIZE_BLOCK_BYTES // (4 * max(1, math.prod(entry.shape[1:]))))
    for start in range(0, rows, step):
        part = entry.rows(start, min(start + step, rows))
        if ring is not None:
            block = torch.empty(part.shape, dtype=part.dtype, device=device)
            stream_into(reader.path, [(part, block)], device, ring)
        else:
            block = torch.empty(part.shape, dtype=part.dtype)  # the file's dtype: converted on the device
            reader.read_into(part, block)
        layer.set_rows(start, block.to(device))
        if read is not None:
            read(part.nbytes)


STORED_KEY = "glmv_quantization"  # config.json of a checkpoint `glmv quantize` wrote: {"scheme": "int4", ...}


def stored_quantization(folder: Path) -> str | None:
    """The scheme a checkpoint's weights are stored in (`glmv quantize` wrote it), None for a float
    checkpoint."""
    raw = json.loads((folder / "config.json").read_text())
    stored = raw.get(STORED_KEY)
    if stored is None:
        return None
    scheme = stored.get("scheme") if isinstance(stored, dict) else None
    if scheme not in QUANTIZE_CHOICES or stored.get("format") != STORED_FORMAT:
        raise ModelError(f"{folder} holds weights quantized as {stored!r}, which this glmv does not read; "
                         "quantize the original checkpoint again with this version (glmv quantize)")
    return scheme


def load_model(folder: Path, device: torch.device, dtype: torch.dtype, quantize: str | None = None,
               progress=None) -> Glm4v:
    """Build on meta, allocate on the target, stream every tensor in; no second copy. With
    quantize="int8" (or "int4") the text decoder's linear weights are quantized one tensor at a time
    as they are read (model/quant.py, quant_int4.py), so memory never holds the float model. A
    checkpoint `glmv quantize` wrote is read as it is stored (its own scheme; quantize may name it).
    `progress` (optional) is called as progress(bytes read, bytes in all) as the files are read."""
    device, began = torch.device(device), time.perf_counter()
    config = Glm4vConfig.from_folder(folder)
    where = index_tensors(weight_files(folder))
    stored = stored_quantization(folder)
    if stored and quantize not in (None, stored):
        raise ModelError(f"{folder} is stored in {stored} (glmv quantize): load it without --quantize (and "
                         f"GLMV_QUANTIZE unset), or quantize the original checkpoint to {quantize}")
    quantize = stored or quantize
    model = meta_model(config, dtype, quantize, device, stored=bool(stored))
    with torch.device("meta"):
        check_keys(model if stored else Glm4v(config), where)
    quantized = set() if stored else {f"{n}.weight" for n, m in model.named_modules() if isinstance(m, QUANTIZED)}
    room = memory.device_room(device)  # free and total memory; None where not known
    memory.check_fits(memory.tensor_bytes(model), config, dtype, quantize, device, room, stored=bool(stored))
    try:
        return _fill(model, folder, where, quantized, device, began, progress)
    except Exception as e:
        if not memory.is_out_of_memory(e):
            raise
        advice = memory.what_fits(config, dtype, quantize, device, room[0] if room else None, stored=bool(stored))
        raise memory.out_of_memory(e, device, "loading the weights", advice, ModelError) from e


def meta_model(config: Glm4vConfig, dtype: torch.dtype, quantize: str | None, device: torch.device,
               stored: bool = False) -> Glm4v:
    """The model load_model fills, on the meta device: in `dtype`, with quantize="int8" its int8
    layers swapped in (the vision tower's too on an accelerator), each with its scales; with "int4"
    the text decoder's linear layers in int4 (their scales in the dtype they run in) and the vision
    tower's in int8 on every device (int4 is for fitting). `stored`: as `glmv quantize` stores it,
    the vision tower quantized on every device (the file's layout)."""
    if quantize not in (None, *QUANTIZE_CHOICES):
        raise ModelError(f"unknown quantization {quantize!r}; use {' or '.join(QUANTIZE_CHOICES)}")
    with torch.device("meta"):
        model = Glm4v(config)
    if quantize:
        swap_quantized(model, quantize, vision=stored or torch.device(device).type != "cpu" or quantize == "int4")
    model = model.to(dtype=dtype)  # int8 buffers keep their dtype
    for module in model.modules():  # .to(dtype) turned the float32 scales of embeddings too
        if isinstance(module, Int8Embedding):
            module.dtype, module.scales = dtype, module.scales.float()
        elif isinstance(module, Int4Linear):
            module.scales = module.scales.to(scale_dtype(device, dtype))
    reset_rope_buffers(model)  # float32 (their values are computed again once the model has storage)
    return model


def empty_on(module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """module.to_empty(device): storage of each parameter's and buffer's shape and dtype, not yet
    written. By torch.empty rather than to_empty's empty_like, whose meta-tensor path runs torch's
    Python reference functions: their first use sets them up, 0.4 s of every glmv process (the
    meta model's tensors are contiguous, so the layouts are the same)."""
    return module._apply(lambda t: torch.empty(t.shape, dtype=t.dtype, device=device))


def _fill(model: Glm4v, folder: Path, where: dict, quantized: set[str], device: torch.device, began: float,
          progress=None) -> Glm4v:
    """Give the meta model storage on `device` and read every tensor into it."""
    read = Tally(progress, sum(entry.nbytes for _, entry in where.values())) if progress is not None else None
    model = empty_on(model, device)
    attentions = [layer.self_attn for layer in model.language_model.layers]
    for attn in attentions:  # q/k/v read straight into the fused projection's views (int8: after;
        if not isinstance(attn.q_proj, QUANTIZED):  # int4: never, its CPU layout is not one of rows)
            attn.fuse_qkv(empty=True)
    params = model.state_dict()
    by_file: dict[Path, list[str]] = {}
    for name, (path, _) in where.items():
        by_file.setdefault(path, []).append(name)
    ring = host_ring(device) if device.type != "cpu" else None
    log.info("model allocated on %s in %.2f s", device, time.perf_counter() - began)
    for path, names in by_file.items():
        log.info("reading %s (%d tensors)", path.name, len(names))
        t0 = time.perf_counter()
        with TensorReader(path) as reader:
            for name in sorted(names, key=lambda n: where[n][1].offset):
                if name in quantized:
                    layer = model.get_submodule(name.removesuffix(".weight"))
                    read_quantized(reader, where[name][1], layer, device, ring, read)
        rest = [(where[n][1], params[n]) for n in names if n not in quantized]
        if ring is None:  # into CPU tensors: straight from the file, several threads at once
            read_parallel(path, rest, read=read)
        else:  # to an accelerator: pinned chunks, reads and copies overlapped
            stream_into(path, rest, device, ring, read)
        seconds = time.perf_counter() - t0
        log.info("read %s: %.2f GB in %.2f s (%.1f GB/s)", path.name, path.stat().st_size / 1e9, seconds,
                 path.stat().st_size / 1e9 / max(seconds, 1e-9))
    del ring
    reset_rope_buffers(model)
    for name, module in model.named_modules():  # a stored checkpoint's layers, read as stored: their last
        if isinstance(module, QUANTIZED) and f"{name}.weight" not in quantized:  # step (a CPU's layout)
            module.ready()
    for attn in attentions:
        parts = (attn.q_proj, attn.k_proj, attn.v_proj)
        if attn.qkv_proj is None and all(isinstance(p, Int8Linear) for p in parts):  # (their scales change
            # dtype once read, see Int8Linear.ready)
            attn.fuse_qkv()
    log.info("model loaded in %.2f s", time.perf_counter() - began)
    return model.eval().requires_grad_(False)
