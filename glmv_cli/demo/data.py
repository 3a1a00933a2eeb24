"""Demo examples -> training samples, through the loaders and prompt builder of `glmv ask`.

Each example's file (a PNG, PDF or MP4 written to disk) is attached exactly as a user would attach
it: `Conversation.prompt` sniffs it, loads it with the checkpoint's preprocessor settings (PDF pages
numbered and rendered by PyMuPDF, video frames sampled and timestamped) and renders the chat
template. The target is the assistant's text plus `<|user|>`, the end token generation stops at;
the loss covers only those tokens.

Examples are drawn from `random.Random(f"{split}-{seed}-{index}")`, so a dataset is the same
whatever the number of worker processes, and evaluation seeds never meet training ones.
"""

from __future__ import annotations

import math
import multiprocessing
import random
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from glmv_cli.demo import ink, tasks
from glmv_cli.inputs.patches import image_tokens, level_table
from glmv_cli.model.patch_codes import PatchCodes

END_TOKEN = "<|user|>"
MIX = {"shapes_count": 0.15, "shapes_color": 0.14, "shapes_shape": 0.14, "numbers": 0.23, "pdf": 0.14,
       "video": 0.20}  # share of training examples


@dataclass(frozen=True)
class Sample:
    """One tokenized example: prompt + target ids, and its pixels as the model receives them."""

    task: str
    ids: np.ndarray  # (S,) int64: prompt then target
    prompt_len: int
    image_codes: np.ndarray | None  # (N, C, p*p) uint8 pixel levels of image patch rows (T copies are equal)
    image_grids: tuple[tuple[int, int, int], ...]
    video_codes: np.ndarray | None  # (N, C, T, p*p) uint8 pixel levels of video patch rows
    video_grids: tuple[tuple[int, int, int], ...]
    ink_labels: np.ndarray | None = None  # (merged image tokens,) int64 ink.CLASSES (numbers, shapes)

    def __len__(self) -> int:
        return len(self.ids)


def example_rng(split: str, seed: int, index: int) -> random.Random:
    return random.Random(f"{split}-{seed}-{index}")


def draw_example(split: str, seed: int, index: int, folder: Path, task: str | None = None,
                 thinking: str = "listing") -> tasks.Example:
    """The index-th example of a split (of `task`, or drawn by MIX), its thinking in a
    tasks.THINKING style; images are written to `folder` as PNG files like any other attachment
    (the example's attachment is then that path)."""
    rng = example_rng(split if task is None else f"{split}-{task}", seed, index)
    task = task or rng.choices(list(MIX), weights=list(MIX.values()))[0]
    return tasks.as_file(tasks.make_example(task, rng, folder, index, thinking), folder, index)


class Preparer:
    """Turns examples into samples with a checkpoint folder's tokenizer, template and preprocessor."""

    def __init__(self, folder: Path):
        from glmv_cli.app.session import Session

        self.session = Session(folder, device="cpu")
        self.end_id = self.session.tokenizer.token_id(END_TOKEN)

    def sample(self, example: tasks.Example) -> Sample:
        inputs = self.session.conversation().prompt(example.question, [str(example.attachment)])
        prompt = inputs.input_ids[0].numpy()
        target = np.asarray(self.session.tokenizer.encode(example.target) + [self.end_id], dtype=np.int64)
        # the loaders hand pixels over as their uint8 levels (PatchCodes): kept as they are
        images = None if inputs.pixel_values is None else inputs.pixel_values.codes[:, :, 0].numpy()
        videos = None if inputs.pixel_values_videos is None else inputs.pixel_values_videos.codes.numpy()
        grids, spec = _grids(inputs.image_grid_thw), self.session.image_spec
        labels = None if example.ink is None else ink.token_labels(example.ink, grids[0], spec.merge_size,
                                                                   spec.patch_size)
        return Sample(
            task=example.task, ids=np.concatenate([prompt, target]), prompt_len=len(prompt),
            image_codes=images, image_grids=grids,
            video_codes=videos, video_grids=_grids(inputs.video_grid_thw), ink_labels=labels,
        )


def decode_rows(codes: np.ndarray, spec) -> torch.Tensor:
    """uint8 levels (N, C, 1 or T, p*p) -> float32 patch rows (N, C*T*p*p), normalised as the image
    loader does (the model's own expansion, on the host)."""
    table = torch.from_numpy(level_table(spec))
    return PatchCodes(torch.from_numpy(codes), table, spec.temporal_patch_size).rows()


def _grids(grid: torch.Tensor | None) -> tuple[tuple[int, int, int], ...]:
    return () if grid is None else tuple(tuple(int(v) for v in row) for row in grid.tolist())


# -- building a dataset in worker processes -------------------------------------------------------

_worker: dict = {}


def _init_worker(folder: str, split: str, seed: int, task: str | None, thinking: str) -> None:
    torch.set_num_threads(1)
    _worker["prep"] = Preparer(Path(folder))
    _worker["tmp"] = tempfile.TemporaryDirectory(prefix="glmv-demo-data-")
    _worker["split"], _worker["seed"], _worker["task"], _worker["thinking"] = split, seed, task, thinking


def _make(index: int) -> Sample:
    folder = Path(_worker["tmp"].name)
    example = draw_example(_worker["split"], _worker["seed"], index, folder, _worker["task"], _worker["thinking"])
    try:
        return _worker["prep"].sample(example)
    finally:
        Path(example.attachment).unlink(missing_ok=True)


def build_samples(folder: Path, split: str, seed: int, count: int, workers: int = 2,
                  task: str | None = None, thinking: str = "listing") -> Iterator[Sample]:
    """`count` samples of a split (all of `task`, or drawn by MIX), in index order, their thinking
    in a tasks.THINKING style, prepared by `workers` processes."""
    ctx = multiprocessing.get_context("spawn")  # no forked torch thread pools
    with ctx.Pool(workers, initializer=_init_worker, initargs=(str(folder), split, seed, task, thinking)) as pool:
        yield from pool.imap(_make, range(count), chunksize=16)


# -- batches --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Batch:
    inputs: dict[str, torch.Tensor]  # Glm4v.forward's keyword arguments
    labels: torch.Tensor  # (B, S) next-token targets, -100 where there is no loss
    tasks: tuple[str, ...]
    ink_labels: torch.Tensor | None = None  # (image tokens,) ink.CLASSES, -100 for images without; None: none has

    def to(self, device: torch.device) -> Batch:
        """The batch with its tensors on `device` (training on an accelerator)."""
        def move(t: torch.Tensor) -> torch.Tensor:
            return t.to(device, non_blocking=True)

        return Batch({k: move(v) for k, v in self.inputs.items()}, move(self.labels), self.tasks,
                     None if self.ink_labels is None else move(self.ink_labels))


def collate(samples: Sequence[Sample], pad_id: int, spec, shapes_ink: bool = True) -> Batch:
    """Right-padded batch; labels[b, t] is the token after position t, on target tokens only.
    `shapes_ink` False: shape images' ink labels are left out, as for images without any."""
    B, S = len(samples), max(len(s) for s in samples)
    ids = torch.full((B, S), pad_id, dtype=torch.long)
    mask = torch.zeros(B, S, dtype=torch.long)
    labels = torch.full((B, S), -100, dtype=torch.long)
    for b, s in enumerate(samples):
        n = len(s)
        ids[b, :n] = torch.from_numpy(s.ids)
        mask[b, :n] = 1
        labels[b, s.prompt_len - 1:n - 1] = torch.from_numpy(s.ids[s.prompt_len:])
    inputs = {"input_ids": ids, "attention_mask": mask}
    images = [s.image_codes[:, :, None] for s in samples if s.image_codes is not None]
    if images:
        inputs["pixel_values"] = decode_rows(np.concatenate(images), spec)
        inputs["image_grid_thw"] = torch.tensor([g for s in samples for g in s.image_grids], dtype=torch.long)
    ink_labels = _ink_labels(samples, spec.merge_size, shapes_ink)
    videos = [s.video_codes for s in samples if s.video_codes is not None]
    if videos:
        inputs["pixel_values_videos"] = decode_rows(np.concatenate(videos), spec)
        inputs["video_grid_thw"] = torch.tensor([g for s in samples for g in s.video_grids], dtype=torch.long)
    return Batch(inputs, labels, tuple(s.task for s in samples), ink_labels)


def _ink_labels(samples: Sequence[Sample], merge: int, shapes: bool = True) -> torch.Tensor | None:
    """The image tokens' ink classes in the order the vision tower returns them (-100 for the
    tokens of images without, or of shape images unless `shapes`), or None when no sample has any."""
    kept = [s.ink_labels if s.ink_labels is not None and (shapes or s.ink_labels.max() < ink.DIGIT_CLASSES)
            else None for s in samples]
    if all(labels is None for labels in kept):
        return None
    parts = []
    for s, labels in zip(samples, kept, strict=True):
        if labels is not None:
            parts.append(labels)
        elif s.image_codes is not None:
            parts.append(np.full(sum(image_tokens(g, merge) for g in s.image_grids), -100, dtype=np.int64))
    return torch.from_numpy(np.concatenate(parts))


def batches(samples: Sequence[Sample], max_tokens: int, rng: random.Random) -> list[list[int]]:
    """Index batches of similar-length samples, each at most `max_tokens` once padded, shuffled."""
    order = sorted(range(len(samples)), key=lambda i: (len(samples[i]), rng.random()))
    out, current, longest = [], [], 0
    for i in order:
        longest_if = max(longest, len(samples[i]))
        if current and longest_if * (len(current) + 1) > max_tokens:
            out.append(current)
            current, longest_if = [], len(samples[i])
        current.append(i)
        longest = longest_if
    if current:
        out.append(current)
    rng.shuffle(out)
    return out


def front_loaded(plan: list, extra: list, span: int, rng: random.Random) -> list:
    """`plan` with the `extra` items inserted among its first `span` items at a linearly falling
    density (about twice the average at the start, none after `span`)."""
    at = sorted(span * (1 - math.sqrt(1 - rng.random())) for _ in extra)
    out, j = [], 0
    for i, item in enumerate(plan):
        while j < len(at) and at[j] <= i:
            out.append(extra[j])
            j += 1
        out.append(item)
    return out + extra[j:]


def staged(plan: list, easy: Callable[[], list], first: int, span: int, rng: random.Random) -> list:
    """`first` items of easy batches alone (`easy()` gives a fresh shuffle of them, called again as
    often as needed), then `plan` with one more shuffle of them front-loaded into its first `span`."""
    head: list = []
    while len(head) < first:
        head += easy()
    return head[:first] + front_loaded(plan, easy(), span, rng)
