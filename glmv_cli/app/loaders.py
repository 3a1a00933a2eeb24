"""Attachments -> prompt parts, by kind: images, PDF pages (+ text layer), video frames, slides, text.

Each loader returns the parts to put in the user's turn (VisualInputs and strings) and notes for
the user (e.g. a PDF rendered at a lower DPI to fit the context). Loaders know only the checkpoint's
patch sizes (`PatchSpec`) and the user's `LoadOptions`. Slides are converted to PDF by LibreOffice
(`libreoffice --headless --convert-to pdf`) when it is installed.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from glmv_cli.app.attachments import Attachment, from_path
from glmv_cli.errors import InputError
from glmv_cli.inputs.patches import PatchSpec, with_pixel_limits
from glmv_cli.inputs.visual import VisualInput

log = logging.getLogger(__name__)

Part = str | VisualInput
LIBREOFFICE_NAMES = ("libreoffice", "soffice")
CONVERT_TIMEOUT = 180  # seconds; a large deck takes a while


@dataclass(frozen=True)
class LoadOptions:
    """How to read attachments (None: the checkpoint's / loader's default)."""

    min_pixels: int | None = None
    max_pixels: int | None = None
    # PDFs and slides
    pages: str | None = None
    dpi: int | None = None
    with_text: bool = False
    password: str | None = None
    query: str | None = None  # what long PDFs' pages are ranked against ("": none, spread evenly)
    # videos
    fps: float = 2.0
    max_frames: int | None = None
    start: float | None = None
    end: float | None = None
    video_backend: str = "auto"


@dataclass(frozen=True)
class Loaded:
    parts: tuple[Part, ...]
    notes: tuple[str, ...] = ()
    pages: tuple[dict, ...] = ()  # PDFs: how each selected page went in (page_plan.PagePlan.to_json)
    layers: tuple[str, ...] = ()  # PDFs: the text layers of pages that went in as images only (drafted from)


def describe(att: Attachment, opts: LoadOptions) -> str:
    """What loading `att` will do, for the progress line."""
    kind = att.kind
    if kind in ("pdf", "slides"):
        pages = f"pages {opts.pages} of " if opts.pages else ""
        convert = "converting and " if kind == "slides" else ""
        return f"{convert}rendering {pages}{att.label}" + (f" at {opts.dpi} DPI" if opts.dpi else "")
    if kind == "video":
        return f"decoding frames of {att.label} at {opts.fps:g} fps"
    return f"reading {att.label}"


_ONE_AT_A_TIME = threading.Lock()  # MuPDF, PyAV and decord keep process-wide state (MuPDF's warnings)


def load(att: Attachment, image_spec: PatchSpec, video_spec: PatchSpec, opts: LoadOptions, *,
         budget_tokens: int | None = None, count_tokens: Callable[[str], int] | None = None) -> Loaded:
    """The parts of one attachment; `budget_tokens` bounds what a PDF may take, its text counted by
    `count_tokens` (the checkpoint's tokenizer; None: an upper bound). One attachment at a time in
    the process: requests served together load theirs in turn."""
    with _ONE_AT_A_TIME:
        return _load(att, image_spec, video_spec, opts, budget_tokens, count_tokens)


def _load(att: Attachment, image_spec: PatchSpec, video_spec: PatchSpec, opts: LoadOptions,
          budget_tokens: int | None, count_tokens: Callable[[str], int] | None) -> Loaded:
    kind = att.kind
    if kind == "image":
        return Loaded((load_image(att, _limits(image_spec, opts)),))
    if kind == "pdf":
        return load_pdf(att, _limits(image_spec, opts), opts, budget_tokens, count_tokens)
    if kind == "slides":
        with tempfile.TemporaryDirectory(prefix="glmv-slides-") as tmp:
            pdf = convert_to_pdf(att, Path(tmp))
            return load_pdf(pdf, _limits(image_spec, opts), opts, budget_tokens, count_tokens)
    if kind == "video":
        return Loaded((load_video(att, _limits(video_spec, opts), opts),))
    return Loaded((text_part(att),))


def _limits(spec: PatchSpec, opts: LoadOptions) -> PatchSpec:
    return with_pixel_limits(spec, min_pixels=opts.min_pixels, max_pixels=opts.max_pixels)


def load_image(att: Attachment, spec: PatchSpec) -> VisualInput:
    from glmv_cli.inputs.image import load_image as load

    return load(att.read_bytes() if att.path is None else att.path, spec, name=att.label)


def load_pdf(att: Attachment, spec: PatchSpec, opts: LoadOptions, budget_tokens: int | None,
             count_tokens: Callable[[str], int] | None = None) -> Loaded:
    """The pages in document order, each labelled with its number: images (with their text layer
    under --with-text) and, for long documents, text layers; see inputs/page_plan.py."""
    from glmv_cli.inputs.page_plan import image_label, text_part
    from glmv_cli.inputs.pdf import DEFAULT_DPI
    from glmv_cli.inputs.pdf import load_pdf as load

    source = att.read_bytes() if att.path is None else att.path
    doc = load(source, spec, pages=opts.pages, dpi=opts.dpi or DEFAULT_DPI, budget_tokens=budget_tokens,
               password=opts.password, with_text=opts.with_text, name=att.label, question=opts.query,
               count_tokens=count_tokens)
    parts: list[Part] = []
    for page in doc.pages:
        if page.visual is None:
            parts.append(text_part(page.number, page.text, with_image=False))
            continue
        if len(doc.layout) > 1:  # page numbers in the prompt: "which page..." is answerable
            parts.append(image_label(page.number))
        parts.append(page.visual)
        if page.text:
            parts.append(text_part(page.number, page.text, with_image=True))
    pages = tuple({"source": att.label} | p.to_json() for p in doc.layout)
    layers = tuple(page.layer for page in doc.pages if page.layer)
    return Loaded(tuple(parts), (doc.message,) if doc.message else (), pages, layers)


def load_video(att: Attachment, spec: PatchSpec, opts: LoadOptions) -> VisualInput:
    from glmv_cli.inputs.video import load_video as load

    kwargs = dict(fps=opts.fps, max_frames=opts.max_frames, start=opts.start, end=opts.end,
                  backend=opts.video_backend)
    if att.path is not None:
        return dataclasses.replace(load(att.path, spec, **kwargs), source=att.label)
    with tempfile.TemporaryDirectory(prefix="glmv-video-") as tmp:  # the decoders want a file
        path = Path(tmp) / (Path(att.name).name or "video")
        path.write_bytes(att.data)
        return dataclasses.replace(load(path, spec, **kwargs), source=att.label)


def text_part(att: Attachment) -> str:
    """A text attachment, framed so the model tells it from the question."""
    text = att.read_text().strip("\n")
    if att.source == "-":
        return text + "\n\n"
    return f"{att.label}:\n```\n{text}\n```\n\n"


def libreoffice() -> str | None:
    return next((p for p in map(shutil.which, LIBREOFFICE_NAMES) if p), None)


def convert_to_pdf(att: Attachment, workdir: Path) -> Attachment:
    """Slides -> a PDF attachment, with `libreoffice --headless --convert-to pdf`."""
    exe = libreoffice()
    if exe is None:
        raise InputError(
            f"{att.label} is a presentation; glmv converts slides to PDF with LibreOffice, which is not "
            f"installed: install it (e.g. `apt install libreoffice-impress`, `brew install --cask "
            f"libreoffice`) or export the slides as PDF and attach that"
        )
    name = Path(att.name or "slides").name
    if att.path is not None:
        src = att.path
    else:
        src = workdir / (name if Path(name).suffix else name + ".pptx")
        src.write_bytes(att.data)
    outdir = workdir / "pdf"
    # A private profile: a running LibreOffice (or a first-run dialog) would block the conversion.
    profile = (workdir / "profile").as_uri()
    cmd = [exe, f"-env:UserInstallation={profile}", "--headless", "--convert-to", "pdf", "--outdir", str(outdir),
           str(src)]
    log.info("converting %s: %s", att.label, " ".join(cmd))
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=CONVERT_TIMEOUT,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise InputError(f"LibreOffice took more than {CONVERT_TIMEOUT} s to convert {att.label}; export "
                         f"the slides as PDF yourself and attach that") from None
    except OSError as e:
        raise InputError(f"LibreOffice ({exe}) could not be started ({e}); export the slides as PDF") from None
    pdfs = sorted(outdir.glob("*.pdf"))
    if done.returncode != 0 or not pdfs:
        detail = (done.stderr or done.stdout).strip().splitlines()
        raise InputError(f"LibreOffice could not convert {att.label}"
                         + (f" ({detail[-1]})" if detail else "") + "; export the slides as PDF and attach that")
    converted = from_path(pdfs[0], source=att.label)
    return dataclasses.replace(converted, name=pdfs[0].name)
