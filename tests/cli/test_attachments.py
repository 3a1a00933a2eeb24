"""Attachments: types from magic bytes, sha256, the CLI's argument rule, stdin, and slides through
LibreOffice (missing -> a clear message; present -> converted; faked here by a script on PATH)."""

from __future__ import annotations

import hashlib
import io
import os
import stat
import sys
import zipfile

import pytest

from glmv_cli.app import attachments as att
from glmv_cli.app.loaders import LoadOptions, load
from glmv_cli.commands import default_question, split_args
from glmv_cli.errors import InputError
from glmv_cli.inputs.patches import PatchSpec
from tests.cli.conftest import glmv_env, run_glmv
from tests.cli.crafted import ANSWER


class FakeStdin(io.BytesIO):
    def __init__(self, data: bytes, tty: bool = False):
        super().__init__(data)
        self.tty = tty

    def isatty(self):
        return self.tty


def pptx_bytes() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("[Content_Types].xml", "<Types/>")
        z.writestr("ppt/presentation.xml", "<p:presentation/>")
    return buf.getvalue()


def test_types_from_content_not_names(media, tmp_path):
    renamed = tmp_path / "photo.pdf"
    renamed.write_bytes(media["png"].read_bytes())
    cases = {media["png"]: "image/png", media["jpg"]: "image/jpeg", media["pdf"]: "application/pdf",
             media["mp4"]: "video/mp4", media["txt"]: "text/plain", renamed: "image/png"}
    for path, mime in cases.items():
        a = att.from_path(path)
        assert a.mime == mime, path
        assert a.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert att.from_bytes(pptx_bytes(), name="deck.pptx").kind == "slides"
    assert att.from_bytes(pptx_bytes()).kind == "slides"  # no name: the zip's member names tell
    assert att.sniff(b"GIF89a....") == "image/gif"
    assert att.sniff(b"\x1a\x45\xdf\xa3....webm") == "video/webm"
    assert att.sniff("héllo wörld".encode()) == "text/plain"
    with pytest.raises(InputError, match="cannot read; it reads images, PDFs"):
        _ = att.from_bytes(bytes(range(256))).kind


def test_text_under_a_media_name_is_an_error_not_a_text_attachment(tmp_path):
    """A 404 page saved as photo.jpg (curl -o without -f) must not be read as text and answered."""
    page = tmp_path / "photo.jpg"
    page.write_text("<!DOCTYPE html>\n<html><body>404 Not Found</body></html>")
    with pytest.raises(InputError, match=r"photo.jpg is named as image/jpeg but holds an HTML page .*again"):
        att.from_path(page)
    with pytest.raises(InputError, match="clip.mp4 is named as video/mp4 but holds text"):
        att.from_bytes(b"Access denied", source="https://example.com/clip.mp4", name="clip.mp4")
    with pytest.raises(InputError, match=r"https://example.com/a came as image/png but holds an HTML page"):
        att.from_bytes(b"<html>login</html>", source="https://example.com/a", mime="image/png")  # a data: URI too
    with pytest.raises(InputError, match="logo.svg is named as image/svg.xml but holds text"):
        att.from_bytes(b"hello", name="logo.svg")
    for name in ("notes.md", "data.json", "README"):  # text types stay text attachments
        (tmp_path / name).write_text("hello")
        assert att.from_path(tmp_path / name).kind == "text", name


def test_argument_rule(media, tmp_path):
    stdin = FakeStdin(b"", tty=True)
    items, q = split_args([str(media["png"]), "what", "is", "this?"], stdin)
    assert items == [str(media["png"])] and q == "what is this?"
    items, q = split_args(["https://example.com/x.png", str(media["pdf"]), "Compare"], stdin)
    assert items == ["https://example.com/x.png", str(media["pdf"])] and q == "Compare"
    assert split_args(["a question with a / slash"], stdin) == ([], "a question with a / slash")
    assert split_args([str(media["png"]), ""], stdin) == ([str(media["png"])], None)  # ("$Q" unset: no question)
    with pytest.raises(InputError, match="an attachment's path is empty"):
        att.resolve("")
    for words in ("Pros/cons?", "TCP/IP", "and/or", "config.json?"):  # one word, not a missing file
        assert split_args([str(media["png"]), words], stdin) == ([str(media["png"])], words)
    for typo in ("photos/cat.jpg", "/no/such/dir", "./shots", "~/nowhere/x"):
        with pytest.raises(InputError, match="no such file"):
            split_args([typo, "what?"], stdin)
    with pytest.raises(InputError, match="missing.png: no such file"):
        split_args(["missing.png", "what?"], stdin)
    with pytest.raises(InputError, match="only once"):
        split_args(["-", "-", "q"], FakeStdin(b"x"))


def test_stdin_kinds(media):
    png = media["png"].read_bytes()
    items, q = split_args(["-", "what?"], FakeStdin(png))
    assert q == "what?" and items[0].mime == "image/png" and items[0].source == "-"
    items, q = split_args(["review"], FakeStdin(b"diff --git a b\n"))
    assert q == "review" and items[0].kind == "text" and items[0].read_text() == "diff --git a b\n"
    assert split_args([], FakeStdin(b"  What is 2+2?\n")) == ([], "What is 2+2?")
    assert split_args(["q"], FakeStdin(b"")) == ([], "q")
    assert split_args(["q"], FakeStdin(b"ignored", tty=True)) == ([], "q")
    with pytest.raises(InputError, match="stdin is empty"):
        split_args(["-", "q"], FakeStdin(b""))


def test_stdin_unread_with_no_stdin_and_context_in_the_question_for_each(media, capsys):
    piped = FakeStdin(b"the rest of a list\n")
    assert split_args([str(media["png"]), "q"], piped, read_stdin=False) == ([str(media["png"])], "q")
    assert piped.tell() == 0  # (--no-stdin: a `while read` loop keeps its lines)
    items, q = split_args([str(media["png"]), str(media["jpg"]), "q"], FakeStdin(b"notes\n"),
                          context_in_question=True)
    assert items == [str(media["png"]), str(media["jpg"])] and q == "notes\n\nq"
    assert "note:" not in capsys.readouterr().err
    items, q = split_args([str(media["png"]), "q"], FakeStdin(b"a.png\nb.png\n"))
    assert q == "q" and items[1].read_text() == "a.png\nb.png\n"
    assert "the text on stdin (2 lines) goes before the question; --no-stdin" in capsys.readouterr().err


def test_default_questions(media):
    assert default_question([str(media["png"])]) == "Describe this image."
    assert default_question([str(media["png"]), str(media["jpg"])]) == "Describe these images."
    assert default_question([str(media["pdf"])]) == "Summarize this document."
    assert default_question([str(media["mp4"])]) == "Describe this video."
    with pytest.raises(InputError, match="nothing to ask"):
        default_question([])


def test_loaders_by_kind(media):
    spec = PatchSpec()
    image = load(att.from_path(media["png"]), spec, spec, LoadOptions()).parts
    assert len(image) == 1 and image[0].kind == "image" and image[0].original_size == (120, 80)
    pages = load(att.from_path(media["pdf"]), spec, spec, LoadOptions(pages="2-3", dpi=72, with_text=True)).parts
    assert [type(p).__name__ for p in pages] == ["str", "VisualInput", "str", "str", "VisualInput", "str"]
    assert pages[0] == "Page 2:" and pages[3] == "Page 3:"  # the document's own page numbers
    assert pages[2].startswith("Text of page 2:\npage 2")
    single = load(att.from_path(media["pdf"]), spec, spec, LoadOptions(pages="2", dpi=72)).parts
    assert [type(p).__name__ for p in single] == ["VisualInput"]  # one page: nothing to number
    video = load(att.from_bytes(media["mp4"].read_bytes()), spec, spec, LoadOptions(fps=2.0)).parts
    assert video[0].kind == "video" and video[0].source == "stdin" and video[0].grid_thw[0] == 2
    text = load(att.from_path(media["txt"]), spec, spec, LoadOptions()).parts
    assert text == (f"{media['txt']}:\n```\nThe meeting is on Tuesday.\n```\n\n",)


def test_slides_without_libreoffice_say_what_to_do(scripted, tmp_path):
    deck = tmp_path / "deck.pptx"
    deck.write_bytes(pptx_bytes())
    bare = tmp_path / "bin"
    bare.mkdir()
    run = run_glmv("pdf", deck, "--model", scripted, env=glmv_env(PATH=str(bare)))
    assert run.code == 2
    assert "LibreOffice, which is not installed" in run.err and "export the slides as PDF" in run.err


def test_slides_are_converted_by_libreoffice(scripted, media, tmp_path):
    """A stand-in `libreoffice` on PATH that 'converts' by copying a real PDF, and logs its arguments."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = tmp_path / "args.txt"
    fake = bindir / "libreoffice"
    fake.write_text(f"""#!{sys.executable}
import shutil, sys
from pathlib import Path
args = sys.argv[1:]
Path({str(log)!r}).write_text("\\n".join(args))
out = Path(args[args.index("--outdir") + 1]); out.mkdir(parents=True, exist_ok=True)
shutil.copy({str(media['pdf'])!r}, out / (Path(args[-1]).stem + ".pdf"))
""")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    deck = tmp_path / "deck.pptx"
    deck.write_bytes(pptx_bytes())
    env = glmv_env(PATH=f"{bindir}{os.pathsep}{os.environ['PATH']}")
    run = run_glmv("pdf", deck, "--pages", "1-2", "--dpi", "72", "--model", scripted, "--json", env=env)
    assert run.code == 0, run.err
    assert run.json["answer"] == ANSWER and run.json["usage"]["image_tokens"] > 0
    assert [p["image"] for p in run.json["boxes"][0]["pixels"]] == [f"{deck} page 1", f"{deck} page 2"]
    args = log.read_text().splitlines()
    assert args[1:5] == ["--headless", "--convert-to", "pdf", "--outdir"] and args[-1] == str(deck)
