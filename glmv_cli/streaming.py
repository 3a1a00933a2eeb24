"""Safetensors files to an accelerator at the speed of the disk: large pinned chunks, read ahead by
a few threads while the chunks before them are being copied to the device.

Reading tensor by tensor through pageable memory serialises three things per tensor (read, a
staging copy the driver makes, the transfer) and made loading GLM-4.1V-9B take 22 s on an H200
machine, three times transformers. Here a file's tensors are treated as one byte range, cut into
CHUNK_BYTES pieces. READERS threads fill a ring of pinned host buffers (`os.preadv` releases the
GIL, so reads run in parallel); the main thread issues one asynchronous host-to-device copy per
(tensor, chunk) overlap straight into the tensor's bytes, and records an event so a buffer is
refilled only once its copies are done. Host memory holds the ring, never a tensor.

A tensor whose destination dtype differs from the file's (a bfloat16 checkpoint loaded as
float16) is copied into a device staging tensor of the file's dtype and converted on the device.
On the CPU the same code runs with ordinary buffers (the tests use it that way); the loader itself
reads straight into CPU tensors instead, from several threads too (read_parallel): there one thread
is held back by the first touch of each fresh page of the tensors (0.64 GB/s on the 2-core machine,
1.4-1.6 GB/s with 2-4 threads).
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch

from glmv_cli.errors import ModelError
from glmv_cli.safetensors_io import TensorEntry

CHUNK_BYTES = 64 * 2**20
READERS = 4
CPU_READERS = max(2, min(8, os.cpu_count() or 1))  # read_parallel's threads


@dataclass
class _Target:
    entry: TensorEntry
    out: torch.Tensor
    staging: torch.Tensor | None  # on the device, in the file's dtype, when `out` cannot take bytes directly
    bytes: torch.Tensor  # (nbytes,) uint8 view of the tensor the file's bytes go to

    @property
    def end(self) -> int:
        return self.entry.offset + self.entry.nbytes


def _check_shape(entry: TensorEntry, out: torch.Tensor) -> None:
    if tuple(out.shape) != tuple(entry.shape):
        raise ModelError(f"{entry.name}: shape {list(entry.shape)} in the file, {list(out.shape)} in the model")


def _target(entry: TensorEntry, out: torch.Tensor) -> _Target:
    _check_shape(entry, out)
    direct = out.dtype == entry.dtype and out.is_contiguous()
    staging = None if direct else torch.empty(entry.shape, dtype=entry.dtype, device=out.device)
    dest = out if direct else staging
    return _Target(entry, out, staging, dest.reshape(-1).view(torch.uint8))


class _File:
    """Positioned reads into buffers, from several threads at once."""

    def __init__(self, path: Path):
        self.path = path
        self.file = open(path, "rb", buffering=0)
        self.lock = threading.Lock()  # only where os.preadv is missing (Windows)

    def read(self, buf: torch.Tensor, start: int, stop: int) -> None:
        view = memoryview(buf.numpy())[: stop - start]
        done = 0
        while done < len(view):
            if hasattr(os, "preadv"):
                got = os.preadv(self.file.fileno(), [view[done:]], start + done)
            else:
                with self.lock:
                    self.file.seek(start + done)
                    got = self.file.readinto(view[done:])
            if not got:
                raise ModelError(f"{self.path} ended at byte {start + done}; re-download it")
            done += got

    def close(self) -> None:
        self.file.close()


def host_ring(device: torch.device, *, chunk_bytes: int = CHUNK_BYTES, readers: int = READERS) -> list[torch.Tensor]:
    """The host buffers for streaming to `device` (pinned for CUDA): allocate once per load."""
    pinned = device.type == "cuda"
    return [torch.empty(chunk_bytes, dtype=torch.uint8, pin_memory=pinned) for _ in range(readers + 1)]


def stream_into(path: Path, items: list[tuple[TensorEntry, torch.Tensor]], device: torch.device,
                ring: list[torch.Tensor] | None = None, read=None) -> None:
    """Fill each destination tensor (on `device`) with its entry's bytes from the file at `path`,
    through `ring` (host_ring: its buffers' size is the chunk size, their number minus one the
    number of reading threads). `read` (optional) is told the bytes of each chunk as it is copied."""
    targets = sorted((_target(e, out) for e, out in items if e.nbytes), key=lambda t: t.entry.offset)
    if not targets:
        return
    ring = ring or host_ring(device)
    chunk_bytes, readers = ring[0].numel(), max(1, len(ring) - 1)
    first, last = targets[0].entry.offset, max(t.end for t in targets)
    chunks = [(a, min(a + chunk_bytes, last)) for a in range(first, last, chunk_bytes)]
    pinned = device.type == "cuda"
    copied: list = [None] * len(ring)  # per buffer: an event recorded after its last copies
    file = _File(path)
    pending, next_target = {}, 0
    try:
        with ThreadPoolExecutor(max_workers=readers) as pool:
            def submit(k: int) -> None:
                slot = k % len(ring)
                if copied[slot] is not None:
                    copied[slot].synchronize()  # the buffer's previous chunk has reached the device
                pending[k] = pool.submit(file.read, ring[slot], *chunks[k])

            for k in range(min(len(ring), len(chunks))):
                submit(k)
            for k, (a, b) in enumerate(chunks):
                pending.pop(k).result()
                next_target, copied_bytes = _copy_chunk(ring[k % len(ring)], a, b, targets, next_target, pinned)
                if read is not None:
                    read(copied_bytes)
                if pinned:
                    copied[k % len(ring)] = torch.cuda.Event()
                    copied[k % len(ring)].record()
                if k + len(ring) < len(chunks):
                    submit(k + len(ring))
        if pinned:
            torch.cuda.synchronize(device)
    finally:
        file.close()


def _copy_chunk(buf: torch.Tensor, a: int, b: int, targets: list[_Target], t: int, asynchronous: bool
                ) -> tuple[int, int]:
    """Copy the chunk [a, b) of the file (in `buf`) into every tensor it overlaps, starting at
    targets[t]; returns the index of the first tensor not yet complete and the bytes copied.
    Asynchronous copies only from pinned buffers (the caller waits on an event before refilling one)."""
    copied = 0
    for target in targets[t:]:
        start = target.entry.offset
        if start >= b:
            break
        lo, hi = max(a, start), min(b, target.end)
        if lo < hi:
            target.bytes[lo - start:hi - start].copy_(buf[lo - a:hi - a], non_blocking=asynchronous)
            copied += hi - lo
        if target.end <= b:
            if target.staging is not None:
                target.out.copy_(target.staging, non_blocking=asynchronous)
                target.staging = None
            t += 1
    return t, copied


def read_parallel(path: Path, items: list[tuple[TensorEntry, torch.Tensor]], readers: int = CPU_READERS,
                  read=None) -> None:
    """Fill each CPU tensor with its entry's bytes from the file at `path`, CHUNK_BYTES at a time
    from `readers` threads, straight into the tensor. One of another dtype than the file's is read
    a block of rows at a time into a staging tensor and converted, so at most `readers` blocks of
    staging exist at once. `read` (optional) is told the bytes of each block as it is done, in
    order, on the calling thread."""
    file = _File(path)

    def direct(entry: TensorEntry, out: torch.Tensor, start: int, stop: int) -> None:
        file.read(out.reshape(-1).view(torch.uint8)[start:stop], entry.offset + start, entry.offset + stop)

    def converted(entry: TensorEntry, out: torch.Tensor) -> None:
        staging = torch.empty(entry.shape, dtype=entry.dtype)
        file.read(staging.reshape(-1).view(torch.uint8), entry.offset, entry.offset + entry.nbytes)
        out.copy_(staging)

    jobs = []  # (bytes, job)
    for entry, out in items:
        _check_shape(entry, out)
        if out.dtype == entry.dtype and out.is_contiguous():
            for a in range(0, entry.nbytes, CHUNK_BYTES):
                b = min(a + CHUNK_BYTES, entry.nbytes)
                jobs.append((b - a, partial(direct, entry, out, a, b)))
        elif out.dim() == 0 or not entry.nbytes:
            jobs += [(entry.nbytes, partial(converted, entry, out))] if entry.nbytes else []
        else:
            n = entry.shape[0]
            step = max(1, CHUNK_BYTES // (entry.nbytes // n))
            for a in range(0, n, step):
                part = entry.rows(a, min(a + step, n))
                jobs.append((part.nbytes, partial(converted, part, out[a:a + step])))
    try:
        with ThreadPoolExecutor(max(1, readers)) as pool:
            for nbytes, done in [(nbytes, pool.submit(job)) for nbytes, job in jobs]:
                done.result()  # (the first failure is raised, a truncated file's ModelError included)
                if read is not None:
                    read(nbytes)
    finally:
        file.close()
