"""What the user attached: one `Attachment` per file, URL or stdin, with its MIME type and sha256.

The type comes from the first bytes (magic numbers), not from the name, so `glmv ask - < photo`
and a URL serving `application/octet-stream` work; the name's suffix only decides between formats
that share a container (a .pptx is a zip). `kind` says which loader takes it: image, pdf, video,
slides (PowerPoint / OpenDocument presentations, converted to PDF) or text (added to the prompt).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import mimetypes
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from glmv_cli.errors import InputError
from glmv_cli.inputs.brands import image_kind
from glmv_cli.inputs.svg import is_svg

Kind = Literal["image", "pdf", "video", "slides", "text"]
STDIN = "-"
SNIFF_BYTES = 4096
_URL = re.compile(r"^https?://", re.IGNORECASE)

PPTX = "application/vnd.openxmlformats-officedocument.presentationml.presentation"
SLIDE_TYPES = {
    ".pptx": PPTX, ".ppsx": "application/vnd.openxmlformats-officedocument.presentationml.slideshow",
    ".ppt": "application/vnd.ms-powerpoint", ".pps": "application/vnd.ms-powerpoint",
    ".odp": "application/vnd.oasis.opendocument.presentation",
}
TEXT_TYPES = ("application/json", "application/xml", "application/x-sh", "application/javascript",
              "application/toml", "application/x-yaml", "application/yaml")
SUPPORTED = "images, PDFs, videos, PowerPoint slides and text files"


@dataclass(frozen=True)
class Attachment:
    """One input as given: where it came from, what it is, and its bytes (stdin, URLs) or path.

    source: what the user typed (a path, a URL, "-"); name: a file name for messages and suffixes.
    """

    source: str
    mime: str
    sha256: str
    path: Path | None = None
    data: bytes | None = field(default=None, repr=False)
    name: str = ""

    @property
    def kind(self) -> Kind:
        return kind_of(self.mime, self.source)

    @property
    def label(self) -> str:
        return "stdin" if self.source == STDIN else self.source

    def read_bytes(self) -> bytes:
        if self.data is not None:
            return self.data
        try:
            return self.path.read_bytes()
        except OSError as e:
            raise InputError(f"{self.label} cannot be read ({e.strerror or e}); check its permissions") from None

    def read_text(self) -> str:
        try:
            return self.read_bytes().decode("utf-8")
        except UnicodeDecodeError:
            raise InputError(f"{self.label} is not UTF-8 text; convert it (e.g. with iconv)") from None


def kind_of(mime: str, label: str = "") -> Kind:
    """Which loader reads `mime`; InputError for anything else."""
    if mime.startswith("image/"):
        return "image"
    if mime == "application/pdf":
        return "pdf"
    if mime.startswith("video/"):
        return "video"
    if mime in SLIDE_TYPES.values():
        return "slides"
    if _is_text_type(mime):
        return "text"
    raise InputError(f"{label or 'the input'} is {mime}, which glmv cannot read; it reads {SUPPORTED}")


def sniff(head: bytes, name: str = "") -> str:
    """The MIME type of a file from its first bytes (and, for zip/OLE containers, its name)."""
    suffix = Path(name).suffix.lower()
    magic = _magic(head)
    if magic:
        return magic
    if head.startswith(b"PK\x03\x04"):
        return SLIDE_TYPES.get(suffix) or _zip_type(head) or "application/zip"
    if head.startswith(b"\xd0\xcf\x11\xe0"):  # OLE2: old Office files
        return SLIDE_TYPES.get(suffix) or "application/x-ole-storage"
    if is_svg(head):
        return "image/svg+xml"
    if _is_text(head):
        guessed = mimetypes.guess_type(name)[0] if name else None
        if guessed and _is_media(guessed):
            raise InputError(_text_in_media(name, f"is named as {guessed}", head))
        return guessed if guessed and _is_text_type(guessed) else "text/plain"
    return (mimetypes.guess_type(name)[0] if name else None) or "application/octet-stream"


def _magic(head: bytes) -> str | None:
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "video/x-msvideo"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "image/tiff"
    if head[:2] == b"BM" and len(head) >= 26 and head[6:10] == b"\x00\x00\x00\x00":
        return "image/bmp"
    if b"%PDF-" in head[:1024]:
        return "application/pdf"
    if head[4:8] == b"ftyp":
        still = image_kind(head)
        if still:
            return f"image/{still}"
        return "video/quicktime" if head[8:12] == b"qt  " else "video/mp4"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "video/webm" if b"webm" in head[:64] else "video/x-matroska"
    if head[:3] == b"FLV":
        return "video/x-flv"
    if head[:4] in (b"\x00\x00\x01\xba", b"\x00\x00\x01\xb3"):
        return "video/mpeg"
    if head[:4] == b"OggS":
        return "video/ogg"
    return None


def _zip_type(head: bytes) -> str | None:
    """A zip whose first member names a presentation (the name is in the local header)."""
    if b"ppt/" in head:
        return PPTX
    if b"application/vnd.oasis.opendocument.presentation" in head:
        return SLIDE_TYPES[".odp"]
    return None


def _is_text_type(mime: str) -> bool:
    return mime.startswith("text/") or mime in TEXT_TYPES


def as_video(attachment: Attachment) -> Attachment:
    """An animated GIF to be read as a video (its frames at their own delays, decoded by PyAV)
    rather than as an image (its first frame); anything else as it is."""
    return dataclasses.replace(attachment, mime="video/gif") if attachment.mime == "image/gif" else attachment


def _is_media(mime: str) -> bool:
    """A type whose files are not plain text (an SVG is, but one is found by is_svg before this)."""
    return mime.startswith(("image/", "video/", "audio/")) or mime in ("application/pdf", *SLIDE_TYPES.values())


def _text_in_media(label: str, claim: str, head: bytes) -> str:
    """Text where a name or a declared type promises an image, PDF or video: most often an HTML
    error or login page saved or sent in its place. Named, so it is not silently read as text."""
    text = head[:200].decode("utf-8", "replace")
    start = " ".join(text[:60].split())
    what = "an HTML page" if re.match(r"\s*<(!doctype html|html)", text, re.I) else "text"
    return (f"{label} {claim + ' but ' if claim else ''}holds {what} (it starts {start!r}), not the file itself; "
            "if it was downloaded, the server may have sent an error page: download it again")


def _is_text(head: bytes) -> bool:
    if b"\x00" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as e:
        return e.start >= len(head) - 3  # a multi-byte character cut by the sniff window
    return True


# -- making attachments ---------------------------------------------------------------------------

def is_url(text: str) -> bool:
    return bool(_URL.match(text))


def looks_like_attachment(arg: str) -> bool:
    """CLI rule: "-", an http(s) URL or an existing path is an attachment; anything else is text."""
    if arg == STDIN or is_url(arg):
        return True
    if not arg.strip():  # ("": an empty question, not the current folder)
        return False
    try:
        return Path(arg).expanduser().exists()
    except (OSError, ValueError):  # a long question is not a valid path on every system
        return False


def is_stream(path: str | Path) -> bool:
    """Whether a path that exists is a pipe or device rather than a file (bash's `<(cmd)`,
    /dev/stdin): it can be read once only, so it is read whole as it is attached (from_stream)."""
    p = Path(path).expanduser()
    try:
        return p.exists() and not p.is_file() and not p.is_dir()
    except (OSError, ValueError):
        return False


def from_stream(path: str | Path) -> Attachment:
    """A pipe or device given as a path, read whole now (peeking at it would consume its head)."""
    p = Path(path).expanduser()
    try:
        data = p.read_bytes()
    except OSError as e:
        raise InputError(f"{path} cannot be read ({e.strerror or e}); check it") from None
    if not data:
        raise InputError(f"{path} is empty: the pipe sent nothing")
    return from_bytes(data, source=str(path), name=p.name)


def peek(path: str | Path) -> str:
    """The MIME type of a file from its first bytes, without hashing it all (from_path does)."""
    p = Path(path).expanduser()
    try:
        with p.open("rb") as f:
            return sniff(f.read(SNIFF_BYTES), p.name)
    except IsADirectoryError:
        raise InputError(f"{path} is a directory; attach the files inside it") from None
    except OSError as e:
        raise InputError(f"{path}: {e.strerror or e}; check the path") from None


def from_path(path: str | Path, source: str | None = None) -> Attachment:
    """A local file: checked to be a readable, non-empty file; hashed; its type sniffed."""
    p = Path(path).expanduser()
    label = source or str(path)
    if not str(path).strip():
        raise InputError("an attachment's path is empty; give a file, a URL or bytes")
    if p.is_dir():
        raise InputError(f"{label} is a directory; attach the files inside it")
    if not p.exists():
        raise InputError(f"{label}: no such file; check the path")
    digest = hashlib.sha256()
    try:
        with p.open("rb") as f:
            head = f.read(SNIFF_BYTES)
            digest.update(head)
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    except OSError as e:
        raise InputError(f"{label} cannot be read ({e.strerror or e}); check its permissions") from None
    if not head:
        raise InputError(f"{label} is empty")
    return Attachment(source=label, mime=sniff(head, p.name), sha256=digest.hexdigest(), path=p, name=p.name)


BYTES = "bytes"  # what messages call an attachment given as bytes in the Python API


def from_bytes(data: bytes, source: str = STDIN, name: str = "", mime: str | None = None) -> Attachment:
    """Bytes from stdin or a download; `mime` (a server's Content-Type, a data: URI's type) is used
    when sniffing finds nothing better than application/octet-stream, and text declared an image,
    PDF or video is an error."""
    label = "stdin" if source == STDIN else source
    if not data:
        raise InputError(f"{label} is empty" + ("; pipe a file in: glmv ask - 'question' < photo.jpg"
                                                 if source == STDIN else ""))
    found = sniff(data[:SNIFF_BYTES], name)
    if found == "application/octet-stream" and mime:
        found = mime
    elif _is_text_type(found) and mime and _is_media(mime):  # said image, sent text
        claim = "" if label.endswith(f"({mime})") else f"came as {mime}"  # a data: URI's label names its type
        raise InputError(_text_in_media(label, claim, data[:SNIFF_BYTES]))
    return Attachment(source=source, mime=found, sha256=hashlib.sha256(data).hexdigest(), data=data,
                      name=name or ("stdin" if source == STDIN else ""))


def from_text(text: str, source: str = STDIN) -> Attachment:
    """Text given directly (piped into `glmv ask`): it becomes context in the prompt."""
    data = text.encode("utf-8")
    return Attachment(source=source, mime="text/plain", sha256=hashlib.sha256(data).hexdigest(), data=data,
                      name="stdin")


def is_one(item) -> bool:
    """Whether `item` is one attachment as resolve() takes it (not a list of them)."""
    return isinstance(item, (str, Path, bytes, bytearray, memoryview, Attachment)) or hasattr(item, "read") \
        or _is_pil(item)


def _is_pil(item) -> bool:
    return type(item).__module__.startswith("PIL.") and hasattr(item, "save")


def resolve(item: str | Path | bytes | Attachment, *, stdin: io.BufferedIOBase | None = None) -> Attachment:
    """Anything the Python API accepts as an attachment -> an Attachment (URLs are fetched)."""
    if isinstance(item, Attachment):
        return item
    if isinstance(item, (bytes, bytearray, memoryview)):
        return from_bytes(bytes(item), source=BYTES)
    if hasattr(item, "read"):  # an open file, io.BytesIO
        data = item.read()
        return from_bytes(data if isinstance(data, bytes) else str(data).encode("utf-8"), source=BYTES,
                          name=Path(str(getattr(item, "name", ""))).name)
    if _is_pil(item):  # a PIL image, as PNG
        out = io.BytesIO()
        (item.convert("RGB") if item.mode in ("CMYK", "YCbCr", "LAB", "HSV") else item).save(out, format="PNG")
        return from_bytes(out.getvalue(), source="a PIL image", name="image.png")
    if not isinstance(item, (str, Path)):
        raise InputError(f"an attachment is a path, a URL, bytes, a file or a PIL image, not a {type(item).__name__}")
    text = str(item)
    if text == STDIN:
        if stdin is None:
            import sys

            stdin = sys.stdin.buffer
        return from_bytes(stdin.read())
    if is_url(text):
        from glmv_cli.app.fetch import fetch

        got = fetch(text)
        return from_bytes(got.data, source=text, name=got.name, mime=got.content_type)
    return from_path(text)

