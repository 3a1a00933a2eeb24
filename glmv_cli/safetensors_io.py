"""Reading safetensors files tensor by tensor, straight into preallocated tensors.

The format is an 8-byte little-endian header length, a JSON header
`{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}` and the raw data.
Reading each tensor into its destination (converting dtype / device on the way) keeps the peak
memory of loading at the size of the model plus one tensor, and lets a truncated or corrupt file
be named before anything is read.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch

from glmv_cli.errors import ModelError

DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
}
MAX_HEADER = 100 * 1024 * 1024


@dataclass(frozen=True)
class TensorEntry:
    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]
    offset: int  # absolute byte offset in the file
    nbytes: int

    def rows(self, start: int, stop: int) -> TensorEntry:
        """The entry of rows [start, stop) along the first dimension (contiguous in the file)."""
        row_bytes = self.nbytes // self.shape[0]
        return TensorEntry(self.name, self.dtype, (stop - start, *self.shape[1:]), self.offset + start * row_bytes,
                           (stop - start) * row_bytes)


def read_header(path: Path) -> dict[str, TensorEntry]:
    """Parse and validate a file's header; a truncated or corrupt file raises ModelError naming it."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        n = int.from_bytes(head, "little") if len(head) == 8 else -1
        if n < 2 or n > MAX_HEADER or 8 + n > size:
            raise ModelError(f"{path} is not a readable safetensors file (truncated or corrupt header); "
                             f"re-download it")
        try:
            header = json.loads(f.read(n))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ModelError(f"{path} has a corrupt safetensors header; re-download it") from None
    entries = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype = DTYPES[info["dtype"]]
            shape = tuple(int(d) for d in info["shape"])
            begin, end = (int(v) for v in info["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise ModelError(f"{path}: tensor {name!r} has an unreadable header entry; re-download it") from None
        nbytes = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
        if end - begin != nbytes:
            raise ModelError(f"{path}: tensor {name!r} claims {end - begin} bytes for shape {list(shape)}; "
                             f"the file is corrupt, re-download it")
        if 8 + n + end > size:
            raise ModelError(f"{path} is truncated: it has {size} bytes but tensor {name!r} ends at byte "
                             f"{8 + n + end}; re-download it")
        entries[name] = TensorEntry(name, dtype, shape, 8 + n + begin, nbytes)
    return entries


class TensorReader:
    """Reads entries of one open file into destination tensors of any dtype and device."""

    def __init__(self, path: Path):
        self.path = path
        self.file = open(path, "rb", buffering=0)

    def __enter__(self) -> TensorReader:
        return self

    def __exit__(self, *exc) -> None:
        self.file.close()

    def read_into(self, entry: TensorEntry, out: torch.Tensor) -> None:
        """Fill `out` (same shape) with the entry's data, converted to out's dtype and device."""
        direct = out.device.type == "cpu" and out.dtype == entry.dtype and out.is_contiguous()
        target = out if direct else torch.empty(entry.shape, dtype=entry.dtype)
        self.file.seek(entry.offset)
        view = memoryview(target.view(-1).view(torch.uint8).numpy()) if target.numel() else memoryview(b"")
        done = 0
        while done < entry.nbytes:  # a single read() returns at most ~2 GB on Linux
            got = self.file.readinto(view[done:])
            if not got:
                raise ModelError(f"{self.path} ended while reading {entry.name!r}; re-download it")
            done += got
        if not direct:
            out.copy_(target)


DTYPE_NAMES = {v: k for k, v in DTYPES.items()}


def _write_file(path: Path, specs: dict[str, tuple[tuple[int, ...], torch.dtype]], fill) -> int:
    """One safetensors file, header first, then each tensor as `fill(name)` produces it."""
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for name, (shape, dtype) in specs.items():
        nbytes = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
        header[name] = {"dtype": DTYPE_NAMES[dtype], "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)  # data starts 8-byte aligned
    with open(path, "wb") as f:
        f.write(len(blob).to_bytes(8, "little") + blob)
        for name, (shape, dtype) in specs.items():
            tensor = fill(name).to(dtype).contiguous()
            assert tuple(tensor.shape) == tuple(shape), name
            f.write(tensor.view(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return offset


def write_safetensors(folder: Path, specs: dict[str, tuple[tuple[int, ...], torch.dtype]], fill,
                      shard_bytes: int = 5 * 2**30) -> list[Path]:
    """model.safetensors, or model-0000i-of-0000n.safetensors + index when over `shard_bytes`.

    Tensors are produced one at a time by `fill(name)`, so memory stays at one tensor.
    """
    shards: list[dict] = [{}]
    size = 0
    for name, (shape, dtype) in specs.items():
        nbytes = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
        if shards[-1] and size + nbytes > shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = (shape, dtype)
        size += nbytes
    if len(shards) == 1:
        path = Path(folder) / "model.safetensors"
        _write_file(path, shards[0], fill)
        return [path]
    paths, weight_map, total = [], {}, 0
    for i, part in enumerate(shards):
        path = Path(folder) / f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        total += _write_file(path, part, fill)
        weight_map.update({name: path.name for name in part})
        paths.append(path)
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (Path(folder) / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    return paths
