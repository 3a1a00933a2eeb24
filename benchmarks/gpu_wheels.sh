#!/usr/bin/env bash
# Here, before a device call: the Python packages glmv needs that the GPU image lacks, as wheels in
# .whl/ (ignored by git; carried with `carry: [".whl"]`). The image has torch, triton, typer, rich,
# pillow, safetensors, tokenizers, jinja2 and transformers 5.17; we add PyMuPDF (PDFs), bm25s and
# PyStemmer (long PDFs), llguidance (answer formats), the transformers our tests pin (the reference) and the demo's font. PyAV is left out to stay under the 64 MiB a call may
# carry (the repository itself is ~20 MiB): the one video command test skips without it.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_31_x86_64 --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .whl "pymupdf>=1.24,<2" "transformers==5.23.0" "bm25s>=0.3.16" "PyStemmer>=2.2" "llguidance>=1.0"
# the demo's number images need DejaVu Sans, which the GPU image lacks (its training step failed there)
cp /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf .whl/
# a call carries at most 64 MiB (the tracked files and .whl together): past 62, the device's own
# transformers (5.17) serves as the reference instead of the pinned one
total=$(( $(git ls-files -z | xargs -0 du -cb | tail -1 | cut -f1) + $(du -cb .whl | tail -1 | cut -f1) ))
if [ "$total" -gt $((62 * 2**20)) ]; then
  rm -f .whl/transformers-*.whl
  echo "left transformers out: the call would carry $((total / 2**20)) MiB"
fi
du -sh .whl
