"""`glmv quantize`: a checkpoint stored in int8 or int4, so every later load reads a third (int4)
or half (int8) of the bytes and quantizes nothing.

`--quantize int4` quantizes GLM-4.1V-9B's 20.6 GB of bfloat16 weights as they are read, in every
process: every `glmv ask` on a laptop reads the 20.6 GB (more than a 16 GB laptop's page cache
keeps) and spends tens of seconds on the arithmetic. A stored checkpoint holds the codes and scales
`load_model` would have made, under the original key names plus `.scales`, with `config.json`
marking the scheme (loading.STORED_KEY); loading reads them straight into the model.

The layout is the device-independent one: int4 codes two a byte with bfloat16 scales and zero
points per group (model/quant_int4.py), int8 codes with a scale per row, and the vision tower's
linear layers in int8 (on a CPU too: what fits is the point). A CPU repacks int4 codes for its
kernel once they are read.
"""

from __future__ import annotations

import json
import logging
import shutil
from contextlib import ExitStack
from pathlib import Path

import torch

from glmv_cli.errors import InputError, ModelError
from glmv_cli.loading import (
    INDEX_FILE,
    QUANTIZED,
    STORED_FORMAT,
    STORED_KEY,
    check_keys,
    checkpoint_dtype,
    index_tensors,
    meta_model,
    quantize_rows,
    stored_quantization,
    weight_files,
)
from glmv_cli.model.config import Glm4vConfig
from glmv_cli.model.glm4v import Glm4v
from glmv_cli.model.quant_int4 import GROUPS
from glmv_cli.safetensors_io import DTYPE_NAMES, TensorReader, write_safetensors
from glmv_cli.tokenizer import Tokenizer

log = logging.getLogger(__name__)


def save_quantized(src: Path, dst: Path, quantize: str, progress=None, shard_bytes: int = 5 * 2**30) -> list[Path]:
    """Write `src` (a float checkpoint folder) to the new folder `dst` with its weights in
    `quantize` ("int8" or "int4"); its tokenizer, templates and processor configs are copied.
    `progress(index, total)` is called as each tensor is written. The weight files written."""
    src, dst = Path(src), Path(dst)
    if stored_quantization(src):
        raise ModelError(f"{src} is already stored in {stored_quantization(src)}; quantize the original checkpoint")
    if dst.exists() and not dst.is_dir():
        raise InputError(f"{dst} is a file; name a new folder for the stored checkpoint")
    if dst.exists() and any(dst.iterdir()):
        raise InputError(f"{dst} exists and is not empty; name a new folder")
    config = Glm4vConfig.from_folder(src)
    Tokenizer.from_folder(src)  # (a folder that could not answer is refused now, not once stored)
    dtype = checkpoint_dtype(src)
    where = index_tensors(weight_files(src))
    with torch.device("meta"):
        check_keys(Glm4v(config), where)
    model = meta_model(config, dtype, quantize, torch.device("cpu"), stored=True)
    specs = {name: (tuple(t.shape), t.dtype) for name, t in model.state_dict().items()}
    order = {name: i for i, name in enumerate(specs)}
    try:
        dst.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"{dst} cannot be made ({e.strerror or e}); name a folder where you can write") from None
    made: dict[str, dict[str, torch.Tensor]] = {}  # the last quantized layer's tensors, by leaf name
    with ExitStack() as stack:
        readers = {path: stack.enter_context(TensorReader(path)) for path in {p for p, _ in where.values()}}

        def source(name: str) -> torch.Tensor:
            path, entry = where[name]
            tensor = torch.empty(entry.shape, dtype=entry.dtype)
            readers[path].read_into(entry, tensor)
            return tensor

        def fill(name: str) -> torch.Tensor:
            owner, _, leaf = name.rpartition(".")
            layer = model.get_submodule(owner)
            if progress:
                progress(order[name], len(order))
            if isinstance(layer, QUANTIZED) and leaf in ("weight", "scales"):
                if owner not in made:  # quantized as loading does, on the CPU, without its last step
                    made.clear()
                    path, entry = where[f"{owner}.weight"]
                    layer.to_empty(device="cpu")
                    quantize_rows(readers[path], entry, layer, torch.device("cpu"))
                    made[owner] = {"weight": layer.weight, "scales": layer.scales}
                    layer.to_empty(device="meta")  # (one layer's codes in memory at a time)
                return made[owner][leaf]
            return source(name)

        paths = write_safetensors(dst, specs, fill, shard_bytes=shard_bytes)
    raw = json.loads((src / "config.json").read_text())
    raw[STORED_KEY] = {"scheme": quantize, "format": STORED_FORMAT, "group": GROUPS[0],
                       "dtype": DTYPE_NAMES[dtype]}
    (dst / "config.json").write_text(json.dumps(raw, indent=2) + "\n")
    weights = {p.name for p in weight_files(src)} | {INDEX_FILE, "config.json"}
    for path in src.iterdir():
        if path.is_file() and path.name not in weights:
            shutil.copy2(path, dst / path.name)
    return paths

