"""OpenAI chat messages <-> glmv turns, shared by `glmv serve` and the `--backend openai` client.

Server side: `parse_messages` turns an OpenAI `messages` list into `Message`s whose parts are text
(`TextPart`) and `Attachment`s or URLs, in order: `text`, `image_url` (data: URIs, http(s) URLs,
file:// below an allowed folder), vLLM's `video_url`, and `file` parts (a base64 PDF, as OpenAI's
API sends it). Assistant messages may carry `tool_calls`, and `tool` messages a call's result (text,
images). `history_turns` loads the earlier messages into prompt `Turn`s (assistant turns keep
their answer only, as `glmv chat` does).

Client side: `content_parts` turns the parts a local run would show the model into OpenAI content
parts: images as data: URIs, PDF pages rendered to PNG images with their "Page N:" labels, videos
as `video_url` data: URIs, text files as text.
"""

from __future__ import annotations

import base64
import binascii
import io
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

from glmv_cli.app import attachments as att
from glmv_cli.app.attachments import Attachment
from glmv_cli.app.tools import ToolCall
from glmv_cli.errors import InputError

ROLES = ("system", "user", "assistant", "tool")


@dataclass(frozen=True)
class TextPart:
    """Text between attachments of a user message, kept in its place in the prompt."""

    text: str


Item = TextPart | Attachment | str  # str: an http(s) URL, fetched when the turn is loaded


@dataclass
class Message:
    role: str
    items: list[Item] = field(default_factory=list)
    tool_calls: list[ToolCall] = field(default_factory=list)  # an assistant's calls
    tool_call_id: str | None = None  # a tool message: the call it answers

    @property
    def text(self) -> str:
        return "".join(i.text for i in self.items if isinstance(i, TextPart))


# -- OpenAI content -> items (the server) -----------------------------------------------------------

def parse_messages(messages: list, *, local_root: Path | None = None) -> list[Message]:
    """OpenAI `messages` (dicts) -> Messages; InputError naming the message for anything malformed."""
    if not messages:
        raise InputError("messages is empty; send at least one user message")
    out = []
    for k, m in enumerate(messages):
        if not isinstance(m, dict):
            raise InputError(f"messages[{k}] must be an object with a role and content")
        role = m.get("role")
        if role == "developer":  # OpenAI's newer name for system
            role = "system"
        if role not in ROLES:
            raise InputError(f"messages[{k}].role is {role!r}; use system, user, assistant or tool")
        items = content_items(m.get("content"), f"messages[{k}]", local_root)
        if role in ("system", "assistant") and any(not isinstance(i, TextPart) for i in items):
            raise InputError(f"messages[{k}]: a {role} message cannot hold images, videos or files")
        calls = _tool_calls(m.get("tool_calls"), f"messages[{k}]") if role == "assistant" else []
        call_id = m.get("tool_call_id") if role == "tool" else None
        out.append(Message(role, items, calls, call_id if isinstance(call_id, str) else None))
    if out[-1].role not in ("user", "tool"):
        raise InputError("the last message must be the user's (the question to answer) or a tool's result")
    return out


def _tool_calls(calls, where: str) -> list[ToolCall]:
    """An assistant message's `tool_calls` (arguments as a JSON string, as OpenAI sends them)."""
    import json

    if calls is None:
        return []
    if not isinstance(calls, list):
        raise InputError(f"{where}.tool_calls must be a list")
    out = []
    for j, call in enumerate(calls):
        fn = call.get("function") if isinstance(call, dict) else None
        name = fn.get("name") if isinstance(fn, dict) else None
        if not isinstance(name, str) or not name:
            raise InputError(f"{where}.tool_calls[{j}] needs function.name")
        args = fn.get("arguments") or {}
        if isinstance(args, str):
            try:
                args = json.loads(args) if args.strip() else {}
            except ValueError:
                raise InputError(f"{where}.tool_calls[{j}].function.arguments is not valid JSON") from None
        if not isinstance(args, dict):
            raise InputError(f"{where}.tool_calls[{j}].function.arguments must be a JSON object")
        call_id = call.get("id")
        out.append(ToolCall(name, args, call_id) if isinstance(call_id, str) and call_id else ToolCall(name, args))
    return out


def content_items(content, where: str, local_root: Path | None) -> list[Item]:
    if content is None:
        return []
    if isinstance(content, str):
        return [TextPart(content)]
    if not isinstance(content, list):
        raise InputError(f"{where}.content must be a string or a list of content parts")
    return [_item(part, f"{where}.content[{k}]", local_root) for k, part in enumerate(content)]


def _item(part, where: str, local_root: Path | None) -> Item:
    kind = part.get("type") if isinstance(part, dict) else None
    if kind == "text":
        return TextPart(str(part.get("text") or ""))
    if kind in ("image_url", "video_url"):
        value = part.get(kind)
        url = value.get("url") if isinstance(value, dict) else value
        if not isinstance(url, str) or not url:
            raise InputError(f"{where}: {kind} needs a url")
        item = media_item(url, where, local_root)
        return att.as_video(item) if kind == "video_url" and isinstance(item, Attachment) else item
    if kind == "file":
        f = part.get("file") or {}
        data = f.get("file_data") if isinstance(f, dict) else None
        if not isinstance(data, str):
            raise InputError(f"{where}: a file part needs file.file_data (a base64 data: URI); file_id is not "
                             f"supported")
        return _from_data(data, where, name=str(f.get("filename") or ""))
    raise InputError(f"{where}: unsupported content part type {kind!r}; use text, image_url, video_url or file")


def media_item(url: str, where: str, local_root: Path | None) -> Item:
    """A data: URI (decoded now), an http(s) URL (fetched later, under the CLI's fetch rules), or a
    file:// URL below `local_root`."""
    if url.startswith("data:"):
        return _from_data(url, where)
    if att.is_url(url):
        return url
    if url.startswith("file:"):
        return _local_file(url, where, local_root)
    raise InputError(f"{where}: {url[:60]!r} is not a data:, http(s) or file:// URL")


def _from_data(uri: str, where: str, name: str = "") -> Attachment:
    """`data:<mime>;base64,<bytes>` (or bare base64) -> an Attachment typed by its bytes."""
    header, sep, payload = uri.partition(",")
    if not sep:
        header, payload = "", uri
    if header and not header.startswith("data:"):
        raise InputError(f"{where}: not a data: URI")
    try:
        data = base64.b64decode(payload, validate=True) if ";base64" in header or not header else \
            urllib.parse.unquote_to_bytes(payload)
    except (binascii.Error, ValueError):
        raise InputError(f"{where}: the data: URI is not valid base64") from None
    mime = header[5:].split(";")[0] or None
    return att.from_bytes(data, source=name or f"{where} ({mime or 'data'})", name=name, mime=mime)


def _local_file(url: str, where: str, local_root: Path | None) -> Attachment:
    if local_root is None:
        raise InputError(f"{where}: file:// URLs are refused; start the server with --allowed-local-media-path "
                         f"DIR to allow files below DIR")
    path = Path(urllib.parse.unquote(urllib.parse.urlparse(url).path)).resolve()
    if not path.is_relative_to(local_root.resolve()):
        raise InputError(f"{where}: {path} is outside the allowed folder {local_root}")
    return att.from_path(path, source=str(path))


# -- messages -> prompt turns ---------------------------------------------------------------------

def history_turns(messages: list[Message], session, load) -> list:
    """Every message but the last as prompt Turns, attachments loaded with the session's patch sizes."""
    from glmv_cli.app import loaders
    from glmv_cli.prompt import Turn

    turns = []
    for m in messages[:-1]:
        if m.role == "system":
            turns.append(Turn.system(m.text))
        elif m.role == "assistant":
            turns.append(Turn.assistant(m.text, tuple(m.tool_calls)))
        else:  # user, tool: text and attachments
            parts = []
            for item in m.items:
                if isinstance(item, TextPart):
                    parts.append(item.text)
                else:
                    loaded = loaders.load(att.resolve(item), session.image_spec, session.video_spec, load)
                    parts += loaded.parts
            turns.append(Turn(m.role, tuple(parts), tool_call_id=m.tool_call_id))
    return turns


def split_question(message: Message) -> tuple[list[Item], str]:
    """The last user message -> (items shown before the question, the question): the text after the
    last attachment is the question, as `glmv ask FILES... QUESTION` puts it."""
    items = list(message.items)
    tail = []
    while items and isinstance(items[-1], TextPart):
        tail.insert(0, items.pop().text)
    return items, "".join(tail)


# -- attachments -> OpenAI content (the client) -----------------------------------------------------

# Sent as they are to a remote server (vLLM and SGLang decode images with a plain Pillow); any other
# image is sent as a PNG of what a local run would see.
SERVER_IMAGE_TYPES = ("image/png", "image/jpeg", "image/webp", "image/gif", "image/bmp")


def data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def content_parts(attachment: Attachment, load) -> list[dict]:
    """What a local run would show the model for one attachment, as OpenAI content parts."""
    from glmv_cli.app import loaders

    kind = attachment.kind
    if kind == "image" and attachment.mime not in SERVER_IMAGE_TYPES:  # as the upright image a local run sees
        from glmv_cli.inputs.image import open_image

        return [_png_part(open_image(attachment.read_bytes(), name=attachment.label))]
    if kind == "image":
        return [_image_part(data_uri(attachment.read_bytes(), attachment.mime))]
    if kind == "video":
        return [{"type": "video_url", "video_url": {"url": data_uri(attachment.read_bytes(), attachment.mime)}}]
    if kind in ("pdf", "slides"):
        return _pdf_parts(attachment, load)
    return [{"type": "text", "text": loaders.text_part(attachment)}]


def _png_part(image) -> dict:
    """A PIL image as an image_url part holding a PNG."""
    png = io.BytesIO()
    image.save(png, format="PNG")
    return _image_part(data_uri(png.getvalue(), "image/png"))


def _image_part(url: str) -> dict:
    return {"type": "image_url", "image_url": {"url": url}}


def _pdf_parts(attachment: Attachment, load) -> list[dict]:
    """Pages rendered here at --dpi (as `glmv pdf` does), each a PNG, labelled as loaders.load_pdf does."""
    import tempfile

    from glmv_cli.app import loaders
    from glmv_cli.inputs.pages import parse_pages
    from glmv_cli.inputs.pdf import DEFAULT_DPI, open_pdf, render_page

    with tempfile.TemporaryDirectory(prefix="glmv-slides-") as tmp:
        if attachment.kind == "slides":
            attachment = loaders.convert_to_pdf(attachment, Path(tmp))
        source = attachment.read_bytes()
        parts = []
        with open_pdf(source, password=load.password, name=attachment.label) as doc:
            numbers = parse_pages(load.pages, doc.page_count, source=attachment.label)
            for n in numbers:
                if len(numbers) > 1:
                    parts.append({"type": "text", "text": f"Page {n}:"})
                parts.append(_png_part(render_page(doc, n, load.dpi or DEFAULT_DPI, name=attachment.label)))
                text = doc[n - 1].get_text() if load.with_text else None
                if text and text.strip():
                    parts.append({"type": "text", "text": f"Text of page {n}:\n{text.strip()}\n"})
        return parts
