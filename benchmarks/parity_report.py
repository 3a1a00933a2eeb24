"""Print the max |logits difference| between glmv and transformers for each parity prompt.

    python -m benchmarks.parity_report        (float32, one thread, tiny random checkpoints)
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

import glmv_cli
from tests.model.conftest import PROMPTS, VARIANTS, make_inputs, model_kwargs
from tests.reference import building_block_logits, reference_model, reference_processor, write_checkpoint


def main() -> None:
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        for i, (variant, (text, vision, layout)) in enumerate(VARIANTS.items()):
            folder = write_checkpoint(Path(tmp) / variant, text=text, vision=vision, layout=layout, seed=i)
            ref, proc = reference_model(folder), reference_processor(folder)
            ours = glmv_cli.load(folder, device="cpu", dtype="float32")
            diffs = []
            for name in PROMPTS:
                inputs = make_inputs(proc, name)
                got = ours.model(**model_kwargs(inputs))
                diffs.append(f"{name} {(got - building_block_logits(ref, inputs)).abs().max().item():.1e}")
            print(f"{variant:9s} " + "  ".join(diffs))


if __name__ == "__main__":
    main()
