"""Train the demo checkpoint from scratch on CPU: `python -m glmv_cli.demo.train OUT_DIR`.

1. write the checkpoint's tokenizer, template and configs (spec.py) to OUT_DIR;
2. draw `--examples` training examples (seeded) and prepare them in worker processes through the
   same loaders and prompt builder as `glmv ask` (data.py), plus `--easy` warm-up examples (large
   shapes and digits: tasks.warm_up_example). The first `--easy-first` steps train on them alone
   (the vision tower learns form there: on the real tasks from the start it never did), then they
   are mixed into the next `--easy-steps` steps at a falling share, so the picture keeps mattering
   while the decoder learns the real tasks (without them it learns to answer from the text alone,
   and the vision tower collapses to a constant output);
3. train our own Glm4v (the inference code, in training mode) with AdamW on the assistant's tokens
   only, batches of similar length up to `--batch-tokens` tokens, linear warm-up then cosine decay;
   plus, weighted by `--ink-loss`, a linear head on the vision tower's output that names each
   number image token's digit and side, and each shape's centre token (kind and colour) apart from
   its body (ink.py): the tower learns to keep two digits, and two objects, apart;
4. write model.safetensors (float32) into OUT_DIR, loadable by `glmv --model OUT_DIR` and by
   transformers, with training.log (the command, losses per task, held-out answer accuracy).

Every `--save-every` steps the weights are written, and beside them training_state.pt (the step,
the optimizer's state, the settings); `--resume` goes on from there, on the same batches in the same
order, so a run that outlives its terminal (a CPU run takes about 80 minutes) is not lost. The final save
removes training_state.pt.

Everything is seeded (`--seed`): examples, initialisation and batch order. The defaults finish in
about 80 minutes on a 2-core CPU. Progress goes to stderr, one line per `--log-every` steps.
"""

from __future__ import annotations

import argparse
import collections
import math
import random
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from glmv_cli.demo import data, ink, monitor, spec, tasks
from glmv_cli.inputs.patches import load_patch_specs
from glmv_cli.model.config import Glm4vConfig
from glmv_cli.model.glm4v import Glm4v
from glmv_cli.safetensors_io import write_safetensors
from glmv_cli.tokenizer import Tokenizer

DEFAULT_OUT = Path(__file__).with_name("checkpoint")


def init_weights(model: Glm4v, seed: int, std: float = 0.02) -> None:
    """Transformers' initialisation (matrices N(0, std), biases 0, norms 1), changed where GLM's
    sandwich norms would otherwise drown the inputs: every attention and MLP output is normalised
    to RMS 1 before its residual add, while token embeddings start at RMS `std` - so after the first
    layer a token barely knows what it is, and it takes ~1000 steps of Adam to grow the embeddings.
    Here token embeddings start at RMS 1 and the post-attention / post-MLP norm gains at
    1/sqrt(2 * layers), so the residual stream starts as the inputs plus small updates (the usual
    scaled-residual initialisation). `match_image_scale` does the same for image embeddings."""
    gen = torch.Generator().manual_seed(seed)
    text = model.language_model
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1:
                p.fill_(1.0 if "norm" in name and name.endswith("weight") else 0.0)
            else:
                p.copy_(torch.randn(p.shape, generator=gen) * std)
        text.embed_tokens.weight.div_(std)
        gain = 1 / math.sqrt(2 * len(text.layers))
        for layer in text.layers:
            layer.post_self_attn_layernorm.weight.fill_(gain)
            layer.post_mlp_layernorm.weight.fill_(gain)


@torch.no_grad()
def match_image_scale(model: Glm4v, batch: data.Batch) -> float:
    """Scale the projector's last layer so that image embeddings enter the decoder at RMS 1, like
    the token embeddings (at the default init they are ~30x smaller). Returns the factor used."""
    inputs = batch.inputs
    rows, grid = inputs.get("pixel_values"), inputs.get("image_grid_thw")
    if rows is None:
        rows, grid = inputs["pixel_values_videos"], inputs["video_grid_thw"]
    rms = float(model.visual(rows, grid).pow(2).mean().sqrt())
    model.visual.merger.down_proj.weight.div_(rms)
    return 1 / rms


def param_groups(model: Glm4v, weight_decay: float, vision_lr: float = 1.0) -> list[dict]:
    """Weight decay on matrices only (not on norms, biases); the vision tower's learning rate is
    `vision_lr` times the rest's (key "scale", applied by the schedule)."""
    vision = {id(p) for p in model.visual.parameters()}
    groups = []
    for scale, part in ((1.0, [p for p in model.parameters() if id(p) not in vision]),
                        (vision_lr, list(model.visual.parameters()))):
        groups.append({"params": [p for p in part if p.ndim >= 2], "weight_decay": weight_decay, "scale": scale})
        groups.append({"params": [p for p in part if p.ndim < 2], "weight_decay": 0.0, "scale": scale})
    return groups


@torch.no_grad()
def image_spread(model: Glm4v, batch: data.Batch) -> float:
    """How much the image embeddings of one picture differ: the largest distance of a token from the
    first (a background corner), relative to that token's norm. About 1 at init; near 0 when the
    vision tower has collapsed to a constant output and the decoder cannot see the picture."""
    was = model.training
    model.eval()
    y = model.visual(batch.inputs["pixel_values"], batch.inputs["image_grid_thw"])
    model.train(was)
    return float((y - y[0]).norm(dim=-1).max() / y[0].norm())


def lr_at(step: int, total: int, peak: float, warmup: int, floor: float = 0.05) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))


def loss_of(model: Glm4v, batch: data.Batch, ink_head: nn.Module | None = None, ink_weight: float = 0.0,
            shape_weight: float = 1.0) -> tuple[torch.Tensor, dict[str, tuple[float, int]]]:
    """Mean cross-entropy over target tokens, plus `ink_weight` times ink_loss (shape tokens weighed
    `shape_weight`) where the batch has ink labels; and (sum, count) per task for the log (the ink
    loss under "ink")."""
    tap = VisionTap(model) if ink_head is not None and ink_weight and batch.ink_labels is not None else None
    try:
        logits = model(**batch.inputs)  # (B, S, V)
    finally:
        if tap:
            tap.remove()
    per_token = F.cross_entropy(logits.transpose(1, 2), batch.labels, ignore_index=-100, reduction="none")  # (B, S)
    counted = batch.labels != -100
    by_task: dict[str, tuple[float, int]] = {}
    for b, task in enumerate(batch.tasks):
        s, n = by_task.get(task, (0.0, 0))
        by_task[task] = (s + float(per_token[b][counted[b]].detach().sum()), n + int(counted[b].sum()))
    loss = per_token[counted].mean()
    if tap:
        extra = ink_loss(ink_head(tap.images), batch.ink_labels, shape_weight)
        by_task["ink"] = (float(extra.detach()), 1)
        loss = loss + ink_weight * extra
    return loss, by_task


class VisionTap:
    """The vision tower's output for a forward's images (its first call: Glm4v.embed encodes the
    images before the videos), caught by a forward hook until `remove`."""

    def __init__(self, model: Glm4v):
        self.images: torch.Tensor | None = None
        self._hook = model.visual.register_forward_hook(self._catch)

    def _catch(self, module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        if self.images is None:
            self.images = output

    def remove(self) -> None:
        self._hook.remove()


def ink_loss(logits: torch.Tensor, labels: torch.Tensor, shape_weight: float = 1.0) -> torch.Tensor:
    """Cross-entropy of the ink head's (tokens, classes) logits: the sum of its means over the
    background, digit, shape-body and shape-centre tokens present, the last two times
    `shape_weight` (ink is a few tokens of an image and a shape has one centre: unweighted, naming
    everything background, or every shape token body, is nearly optimal); tokens labelled -100 do
    not count."""
    per_token = F.cross_entropy(logits, labels.clamp(min=0), reduction="none")
    groups = ((labels == ink.BACKGROUND, 1.0), ((labels > ink.BACKGROUND) & (labels < ink.BODY), 1.0),
              (labels == ink.BODY, shape_weight), (labels >= ink.CENTRES, shape_weight))
    parts = [w * per_token[m].mean() for m, w in groups if m.any()]
    return sum(parts) if parts else logits.sum() * 0


def save(model: Glm4v, folder: Path) -> None:
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    write_safetensors(folder, {k: (tuple(v.shape), v.dtype) for k, v in state.items()}, lambda k: state[k])


STATE = "training_state.pt"
RESUME_KEYS = ("examples", "epochs", "easy", "easy_first", "easy_steps", "batch_tokens", "lr", "warmup",
               "weight_decay", "vision_lr", "ink_loss", "shape_ink", "thinking",
               "seed")  # what the batches and the schedule follow


def save_state(model: Glm4v, head: nn.Module, opt: torch.optim.Optimizer, step: int, seconds: float,
               args: argparse.Namespace) -> None:
    """The weights, then the step, ink head, optimizer state and seconds spent so far (written last:
    a state file always has its weights beside it)."""
    save(model, args.out)
    settings = {k: getattr(args, k) for k in RESUME_KEYS}
    tmp = args.out / (STATE + ".tmp")
    torch.save({"step": step, "seconds": seconds, "ink_head": head.state_dict(), "optimizer": opt.state_dict(),
                "settings": settings}, tmp)
    tmp.replace(args.out / STATE)


def saved_state(args: argparse.Namespace) -> dict:
    """The last save_state of args.out, checked against this run's settings (before any work)."""
    path = args.out / STATE
    if not path.is_file():
        raise SystemExit(f"--resume: {path} does not exist (it is written every --save-every steps)")
    state = torch.load(path, map_location="cpu", weights_only=True)
    differ = {k: (v, getattr(args, k)) for k, v in state["settings"].items() if getattr(args, k) != v}
    if differ:
        raise SystemExit(f"--resume: settings differ from the saved run's (saved, now): {differ}")
    return state


def restore(model: Glm4v, head: nn.Module, opt: torch.optim.Optimizer, state: dict, folder: Path) -> None:
    """The saved weights (model.safetensors beside the state), ink head and optimizer state."""
    from safetensors.torch import load_file

    device = next(model.parameters()).device
    model.load_state_dict({k: v.to(device) for k, v in load_file(folder / "model.safetensors").items()})
    head.load_state_dict(state["ink_head"])
    opt.load_state_dict(state["optimizer"])


def train(args: argparse.Namespace) -> Path:
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    started = time.perf_counter()
    out = args.out
    saved = saved_state(args) if args.resume else None
    config = spec.write_spec(out, seed=args.seed, thinking=args.thinking)
    if not args.resume:
        (out / "training.log").write_text(f"python -m glmv_cli.demo.train {' '.join(sys.argv[1:])}\n")
    _log_file[:] = [out / "training.log"]
    log(f"spec written to {out} ({time.perf_counter() - started:.0f} s)")

    samples = []
    for i, sample in enumerate(data.build_samples(out, "train", args.seed, args.examples, workers=args.workers,
                                                  thinking=args.thinking)):
        samples.append(sample)
        if (i + 1) % 2000 == 0:
            log(f"prepared {i + 1}/{args.examples} examples ({time.perf_counter() - started:.0f} s)")
    first_easy = len(samples)
    samples += data.build_samples(out, "train", args.seed, args.easy, workers=args.workers, task="warm_up",
                                  thinking=args.thinking)
    counts = collections.Counter(s.task for s in samples)
    log(f"data ready: {dict(counts)}, {sum(len(s) for s in samples):,} tokens "
        f"({time.perf_counter() - started:.0f} s)")

    watch = list(data.build_samples(out, "monitor", args.seed, args.monitor, workers=args.workers,
                                    thinking=args.thinking))
    tokenizer = Tokenizer.from_folder(out)
    end_id = tokenizer.token_id(data.END_TOKEN)

    model = Glm4v(Glm4vConfig.from_dict(config))
    init_weights(model, args.seed)  # on the CPU: the same weights whatever --device
    device = torch.device(args.device)
    model.to(device)
    model.train()
    n_params = sum(p.numel() for p in model.parameters())
    classes = ink.CLASSES if args.shape_ink else ink.DIGIT_CLASSES
    head = nn.Linear(config["vision_config"]["out_hidden_size"], classes).to(device)  # training only
    groups = param_groups(model, args.weight_decay, args.vision_lr)
    groups.append({"params": list(head.parameters()), "weight_decay": 0.0, "scale": 1.0})
    opt = torch.optim.AdamW(groups, lr=args.lr, betas=(0.9, 0.95), eps=1e-8)
    rng = random.Random(f"batches-{args.seed}")
    tasks_, easy = samples[:first_easy], samples[first_easy:]
    plan = [b for _ in range(args.epochs) for b in data.batches(tasks_, args.batch_tokens, rng)]

    def easy_plan() -> list[list[int]]:  # a fresh shuffle of the warm-up examples' batches
        return [[first_easy + i for i in b] for b in data.batches(easy, args.batch_tokens, rng)]

    plan = data.staged(plan, easy_plan, args.easy_first, args.easy_steps, rng)
    total = len(plan)
    pad_id = config["text_config"]["pad_token_id"]
    spec_ = load_patch_specs(out)[0]
    factor = match_image_scale(model, data.collate([samples[i] for i in plan[0]], pad_id, spec_).to(device))
    probe = data.collate([next(s for s in watch + samples if s.image_codes is not None)], pad_id, spec_).to(device)
    log(f"training {n_params / 1e6:.2f} M parameters: {total} steps, {args.epochs} epochs "
        f"(image embeddings scaled by {factor:.1f} at init)")
    window: dict[str, list[float]] = collections.defaultdict(lambda: [0.0, 0])
    first = before = 0
    if saved:
        restore(model, head, opt, saved, out)
        first, before = saved["step"], saved["seconds"]
        log(f"resumed at step {first} from {out / STATE} ({before:.0f} s in all before; from here the times "
            "add this run's to them)")
        started -= before
    train_start = time.perf_counter()
    for step, indices in enumerate(plan):
        if step < first:
            continue
        for group in opt.param_groups:
            group["lr"] = lr_at(step, total, args.lr, args.warmup) * group["scale"]
        batch = data.collate([samples[i] for i in indices], pad_id, spec_, shapes_ink=args.shape_ink > 0).to(device)
        loss, by_task = loss_of(model, batch, head, args.ink_loss, args.shape_ink)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_([*model.parameters(), *head.parameters()], 1.0)
        opt.step()
        for task, (s, n) in by_task.items():
            window[task][0] += s
            window[task][1] += n
        if (step + 1) % args.log_every == 0 or step + 1 == total:
            per_task = " ".join(f"{t}={s / max(n, 1):.3f}" for t, (s, n) in sorted(window.items()))
            elapsed = time.perf_counter() - train_start
            log(f"step {step + 1}/{total} loss {per_task} lr {opt.param_groups[0]['lr']:.2e} "
                f"image spread {image_spread(model, probe):.3f} "
                f"{elapsed / (step + 1 - first):.2f} s/step, {time.perf_counter() - started:.0f} s in all")
            window.clear()
        if watch and ((step + 1) % args.monitor_every == 0 or step + 1 == total):
            right = monitor.accuracy(model, watch, tokenizer, spec_, pad_id, end_id)
            log(f"step {step + 1} held-out answers right: " + " ".join(f"{t}={a:.0%}" for t, a in right.items()))
        if (step + 1) % args.save_every == 0:
            # a usable checkpoint at any time, and a point to resume from
            save_state(model, head, opt, step + 1, time.perf_counter() - started, args)
    model.eval()
    save(model, out)
    (out / STATE).unlink(missing_ok=True)
    log(f"wrote {out / 'model.safetensors'} ({time.perf_counter() - started:.0f} s in all)")
    return out


_log_file: list[Path] = []


def log(message: str) -> None:
    """stderr, and the checkpoint's training.log (how the shipped weights came about)."""
    print(message, file=sys.stderr, flush=True)
    for path in _log_file:
        with path.open("a") as f:
            f.write(message + "\n")


def arguments() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path, nargs="?", default=DEFAULT_OUT,
                    help="checkpoint folder to write (default: the packaged demo checkpoint)")
    ap.add_argument("--examples", type=int, default=39000,
                    help="training examples (each seen --epochs times); 39000 since the eighth checkpoint "
                         "(26000 from the fourth, 20000 before: the model underfits, and more steps on fresh "
                         "examples helped every task)")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--easy", type=int, default=5000,
                    help="warm-up examples (large shapes and digits) mixed into the first steps")
    ap.add_argument("--easy-first", type=int, default=400, help="first steps, on warm-up examples alone")
    ap.add_argument("--easy-steps", type=int, default=1200,
                    help="steps after --easy-first over which the warm-up examples are mixed in again")
    ap.add_argument("--batch-tokens", type=int, default=1536, help="padded tokens per batch")
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--warmup", type=int, default=300)
    ap.add_argument("--weight-decay", type=float, default=0.05)
    ap.add_argument("--vision-lr", type=float, default=0.6, help="the vision tower's learning rate, times --lr")
    ap.add_argument("--ink-loss", type=float, default=0.3,
                    help="weight of the auxiliary loss that asks the vision tower which digit, left or right, "
                         "each number image token shows (ink.py; 0: off, as up to the fourth checkpoint)")
    ap.add_argument("--shape-ink", type=float, default=0.5,
                    help="weight, relative to the digits', of the same loss on shape images: each shape's centre "
                         "token named with its kind and colour, its other tokens as its body (ink.py; 0: off)")
    ap.add_argument("--thinking", choices=tasks.THINKING, default="concluding",
                    help="the thinking's style: concluding (it ends by stating the answer in words; tasks.py) "
                         "or listing (what the first checkpoint learnt)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu",
                    help="where to train (cuda: the same examples, initialisation and batch order; not "
                         "bit-identical to a CPU run)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2, help="processes preparing examples")
    ap.add_argument("--log-every", type=int, default=50)
    ap.add_argument("--monitor", type=int, default=72, help="held-out samples answered every --monitor-every steps")
    ap.add_argument("--monitor-every", type=int, default=500)
    ap.add_argument("--save-every", type=int, default=1000, help="steps between checkpoints written to OUT_DIR")
    ap.add_argument("--resume", action="store_true",
                    help="go on from OUT_DIR's last save (same settings; the examples are prepared again)")
    return ap


def main(argv: list[str] | None = None) -> None:
    train(arguments().parse_args(argv))


if __name__ == "__main__":
    main()
