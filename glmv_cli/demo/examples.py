"""Write the README's demo files: `python -m glmv_cli.demo.examples examples/`.

One held-out example per kind of input, from the "examples" split (never trained on): a shapes
image, a number, a PDF and a video. Prints the question to ask each with `--model demo` and the
answer a correct model gives.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from glmv_cli.demo import tasks
from glmv_cli.demo.data import example_rng

FILES = {"shapes_color": "shapes.png", "numbers": "number.png", "pdf": "cards.pdf", "video": "clip.mp4"}


def write_examples(folder: Path, seed: int = 0) -> list[tuple[Path, tasks.Example]]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for task, name in FILES.items():
            index = 0
            while True:  # a busy picture for the README: the first shapes image in 3+ colours
                example = tasks.make_example(task, example_rng("examples", seed, index), Path(tmp), index)
                if task != "shapes_color" or len(colours_in(example.attachment)) >= 3:
                    break
                index += 1
            path = folder / name
            if isinstance(example.attachment, Path):
                shutil.copyfile(example.attachment, path)
            else:
                example.attachment.save(path)
            out.append((path, example))
    return out


def colours_in(image) -> set[str]:
    """The task colours present in an image (shapes are drawn without anti-aliasing)."""
    present = {rgb for _, rgb in image.getcolors(maxcolors=1 << 16)}
    return {name for name, rgb in tasks.COLORS.items() if rgb in present}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    for path, example in write_examples(args.folder, args.seed):
        print(f'glmv ask {path} "{example.question}" --model demo    # {example.answer}')


if __name__ == "__main__":
    main()
