"""What each `glmv` command does, between Typer (cli.py) and the session (app/): split the
arguments into attachments and a question, read stdin, run the session's events through a
renderer, draw boxes, and the chat loop. All terminal output goes through glmv_cli.render."""

from __future__ import annotations

import dataclasses
import glob
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from glmv_cli import render
from glmv_cli.app import attachments as att
from glmv_cli.app.answer_format import AnswerFormat
from glmv_cli.app.loaders import LoadOptions
from glmv_cli.app.session import Conversation, Done, GenerationOptions, Session, save_transcript
from glmv_cli.errors import ContextFull, GlmvError, InputError, ModelError
from glmv_cli.text import well_formed

# Suffixes that make a non-existing argument "a missing file" rather than words of the question.
FILE_SUFFIXES = {
    ".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp", ".tif", ".tiff", ".heic", ".avif", ".svg", ".pdf", ".mp4",
    ".mov", ".mkv", ".webm", ".avi", ".m4v", ".mpg", ".mpeg", ".ppt", ".pptx", ".odp", ".txt", ".md", ".csv",
    ".json",
}
DEFAULT_QUESTIONS = {
    "image": "Describe this image.", "images": "Describe these images.", "pdf": "Summarize this document.",
    "video": "Describe this video.", "mixed": "Describe these attachments.",
}


@dataclass(frozen=True)
class ModelChoice:
    model: str | None = None
    device: str = "auto"
    dtype: str = "auto"
    quantize: str | None = None
    compile: bool = False
    backend: str = "local"  # "openai": an OpenAI-compatible server at base_url runs the model
    base_url: str | None = None
    api_key: str | None = None
    remote_model: str | None = None


@dataclass(frozen=True)
class OutputOptions:
    json: bool = False
    jsonl: bool = False
    hide_reasoning: bool = False
    extract: bool = False
    draw_boxes: Path | None = None
    verbose: bool = False
    system: str | None = None


# -- arguments ------------------------------------------------------------------------------------

def looks_like_path(arg: str) -> bool:
    """Whether an argument that is no file was meant as one (a typo: an error), not as words of the
    question: a file's suffix, or a path's start. "Pros/cons?", "TCP/IP" and "config.json?" are words."""
    if any(c.isspace() for c in arg) or arg.endswith(("?", "!", ",", ";", ":")):
        return False
    return Path(arg).suffix.lower() in FILE_SUFFIXES or arg.startswith(("/", "./", "../", "~"))


def split_args(args: Sequence[str], stdin=None, *, read_stdin: bool = True,
               context_in_question: bool = False) -> tuple[list, str | None]:
    """(attachments, question) from `glmv ask` arguments.

    Every "-", http(s) URL and existing path is an attachment; the other arguments are the
    question (joined with spaces, so unquoted words work). "-" reads stdin's bytes as a file;
    without "-" (and unless `read_stdin` is off: --no-stdin), text piped into stdin becomes context
    before the question (or the question itself when none is given) and a piped image / PDF / video
    becomes an attachment. `context_in_question` (--each): piped text goes into the question, so
    that it is context for every attachment, not one more attachment to answer about.
    """
    stdin = stdin if stdin is not None else sys.stdin
    items: list = []
    words: list[str] = []
    for arg in args:
        if att.looks_like_attachment(arg):
            items.append(att.from_stream(arg) if att.is_stream(arg) else arg)  # (a pipe: read once, now)
        elif looks_like_path(arg):
            hint = " (quote questions that contain a path)" if len(args) > 1 else ""
            raise InputError(f"{arg}: no such file; check the path{hint}")
        else:
            if arg.strip():  # ("": an unset shell variable)
                words.append(well_formed(arg))  # (a byte the locale cannot decode: U+FFFD, not a crash)
    if items.count(att.STDIN) > 1:
        raise InputError("'-' (stdin) can be attached only once")
    if att.STDIN in items:
        items[items.index(att.STDIN)] = att.from_bytes(_read(stdin, asked_for=True))
    elif read_stdin and not _isatty(stdin):
        data = _read(stdin)
        if data.strip():
            piped = att.from_bytes(data)
            if piped.kind != "text":
                items.append(piped)
            elif not words:
                words = [piped.read_text().strip()]
            elif context_in_question:
                words = [piped.read_text().rstrip() + "\n\n" + " ".join(words)]
            else:
                text = piped.read_text()
                if items:  # (a file, a question and text on stdin: as in a `while read` loop, which it empties)
                    lines = max(1, text.count("\n"))
                    render.note(f"the text on stdin ({lines:,} line{'s' if lines > 1 else ''}) goes before the "
                                f"question; --no-stdin leaves stdin unread")
                items.append(att.from_text(text))
    return items, " ".join(words) if words else None


SILENT_STDIN_S = 2.0  # a pipe that sends nothing for this long gets a line saying why glmv waits


def _read(stdin, asked_for: bool = False) -> bytes:
    """All of stdin; when it was not `asked_for` ("-") and a pipe sends nothing for a while (a slow
    command before glmv, or a program that spawned glmv and left stdin open), a note says what glmv
    waits for and how not to."""
    stream = getattr(stdin, "buffer", stdin)
    if not asked_for and not _sends_within(stream, SILENT_STDIN_S):
        render.note("waiting for the text piped into stdin, which goes before the question (nothing yet); "
                    "if none is coming, end it with Ctrl-D or give -n/--no-stdin")
    data = stream.read()
    return data.encode("utf-8") if isinstance(data, str) else data


def _sends_within(stream, seconds: float) -> bool:
    """Whether a pipe or socket on stdin has something to read (or its end) within `seconds`; True
    for files, terminals and anything select() cannot watch (Windows)."""
    import os
    import select
    import stat

    try:
        fd = stream.fileno()
        if not (stat.S_ISFIFO(os.fstat(fd).st_mode) or stat.S_ISSOCK(os.fstat(fd).st_mode)):
            return True
        return bool(select.select([fd], [], [], seconds)[0])
    except (OSError, ValueError, AttributeError, TypeError):  # (io.UnsupportedOperation is an OSError)
        return True


def _isatty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return True  # no usable stdin: do not read it


def kind_of_item(item) -> str:
    """What an attachment of the command line is (image, pdf, video, ...), from its first bytes
    without reading it all; "url" for a URL, which is known once fetched."""
    if isinstance(item, att.Attachment):
        return item.kind
    return "url" if att.is_url(item) else att.kind_of(att.peek(item), item)


def default_question(items: list) -> str:
    kinds = [kind_of_item(item) for item in items]
    if not kinds:
        raise InputError("nothing to ask: give a question, e.g. glmv ask photo.jpg \"what is this?\"")
    if all(k == "image" for k in kinds):
        return DEFAULT_QUESTIONS["image" if len(kinds) == 1 else "images"]
    if len(kinds) == 1 and kinds[0] in ("pdf", "slides"):
        return DEFAULT_QUESTIONS["pdf"]
    if len(kinds) == 1 and kinds[0] == "video":
        return DEFAULT_QUESTIONS["video"]
    return DEFAULT_QUESTIONS["mixed"]


def check_draw_boxes(items: list, path: Path | None) -> None:
    """--draw-boxes OUT: a file Pillow can write, in a folder that exists, and an image to draw on,
    all said before the model loads (not after the answer, minutes later for a 9B model)."""
    if path is None:
        return
    from PIL import Image

    if path.suffix.lower() not in Image.registered_extensions():
        raise InputError(f"--draw-boxes {path}: not an image file name Pillow can write; end it in .png or .jpg")
    if not path.expanduser().parent.is_dir():
        raise InputError(f"--draw-boxes {path}: the folder {path.expanduser().parent} does not exist; create it "
                         f"or name another")
    if any(kind_of_item(item) in ("image", "url") for item in items):
        return
    raise InputError("--draw-boxes draws on the (first) image attached to the question; attach one")


def note_unused_options(items: list, load: LoadOptions) -> None:
    """A note for PDF options with no PDF attached, video options with no video (a user who thinks
    --pages picks an image, or --start cuts a GIF shown as an image)."""
    try:
        kinds = {kind_of_item(item) for item in items}
    except InputError:  # (an empty or unreadable file: its own error comes when it is read)
        return
    if "url" in kinds:  # (what it is is known once fetched)
        return
    pdf = [o for o, v in (("--pages", load.pages), ("--dpi", load.dpi), ("--with-text", load.with_text),
                          ("--password", load.password)) if v]
    video = [o for o, v in (("--fps", load.fps != 2.0), ("--max-frames", load.max_frames),
                            ("--start", load.start is not None), ("--end", load.end is not None)) if v]
    for given, wanted, what in ((pdf, {"pdf", "slides"}, "a PDF or slides"), (video, {"video"}, "a video")):
        if given and not kinds & wanted:
            render.note(f"{' and '.join(given)} {'apply' if len(given) > 1 else 'applies'} to {what}, and none "
                        f"is attached; {'they are' if len(given) > 1 else 'it is'} not used")


def check_file_kind(item, kinds: tuple[str, ...], what: str, also: tuple[str, ...] = ()) -> None:
    """`glmv pdf` takes a PDF (or slides), `glmv video` a video (or an animated GIF, `also`): say so
    before loading anything. `item`: a path, a URL, or an Attachment already read (stdin, a pipe)."""
    if isinstance(item, att.Attachment):
        if item.source == att.STDIN:
            return
        path, mime = item.label, item.mime
    elif att.is_url(item) or item == att.STDIN:
        return
    else:
        path, mime = item, att.peek(item)
    if mime not in also and att.kind_of(mime, path) not in kinds:
        raise InputError(f"{path} is {mime}, not a {what}; ask about it with `glmv ask {path} ...`")


def gifs_as_videos(items: list) -> list:
    """`glmv video anim.gif`: the GIF's frames, at their own times, as a video (PyAV decodes GIF);
    `glmv ask` shows a GIF's first frame, like any image."""
    out = []
    for item in items:
        if isinstance(item, str) and not att.is_url(item) and att.peek(item) == "image/gif":
            item = att.from_path(item)
        out.append(att.as_video(item) if isinstance(item, att.Attachment) else item)
    return out


# -- one question ---------------------------------------------------------------------------------

def run_ask(items: list, question: str, model: ModelChoice, load: LoadOptions, gen: GenerationOptions,
            out: OutputOptions, *, map_reduce: bool = False, resume: bool = False, parallel: int = 1) -> None:
    """One question (`resume`: in the last conversation, `glmv ask -c`), kept as the last
    conversation for the next -c (app/history.py). `parallel`: --map-reduce's chunks at once."""
    from glmv_cli.app import history

    term = render.Terminal(verbose=out.verbose)
    renderer = render.make_renderer(term, json_=out.json, jsonl=out.jsonl, hide_reasoning=out.hide_reasoning,
                                    extract=out.extract)
    load = query_for(question, load)
    record, model, system = _begin(resume, model, out.system)
    term.status(f"opening {model.model or 'the model'}")
    try:
        session = open_session(model)
        conversation = session.conversation(system)
        history.restore_into(conversation, record, load, gen)
        keep_cache(session)
        result = None
        if parallel > 1 and not map_reduce:
            raise InputError("--parallel reads several chunks at once; it goes with --map-reduce")
        if map_reduce:
            from glmv_cli.app.map_reduce import map_reduce as read_all

            session.parallel = parallel
            if note := getattr(session, "parallel_note", lambda: None)():
                render.note(note, term)

            events = read_all(session, question, items[0], system=out.system, load=load, generation=gen)
        else:
            events = conversation.ask(question, items, load=load, generation=gen)
        for event in events:
            renderer.handle(event)
            if isinstance(event, Done):
                result = event.result
    except KeyboardInterrupt:
        renderer.interrupted()
        raise
    except ContextFull as e:
        if not record.turns:
            raise
        n = len(record.turns)
        raise ContextFull(f"{e}; or start a new conversation: ask without -c (the one -c continues has {n} "
                          f"turn{'s' if n > 1 else ''})") from None
    finally:
        term.clear_status()
    if result is not None and map_reduce:
        history.not_kept("--map-reduce")
    elif result is not None:
        history.answered(record, _local_name(session, model), question, conversation.attachments[-1], result, load,
                         gen)
        save_cache(session)
    if out.draw_boxes and result is not None:
        draw(conversation, result, out.draw_boxes, term)


def _begin(resume: bool, model: ModelChoice, system: str | None):
    """(record, model choice, system prompt) for a kept conversation; -c takes its model (a local
    checkpoint) and system prompt where none is given."""
    from glmv_cli.app import history

    local = model.backend == "local"
    record, name, system = history.begin(resume, model.model if local else None, system)
    return record, dataclasses.replace(model, model=name) if local else model, system


def keep_cache(session) -> None:
    """A local session starts from the cache kept with the last conversation (app/kept_cache.py),
    once its weights are loaded: for `-c`, or a new question about the same image; and drafts from
    the last answers (app/kept_answers.py)."""
    if isinstance(session, Session):
        from glmv_cli.app import kept_answers, kept_cache

        session.after_load += [kept_cache.restore, kept_answers.restore]


def save_cache(session) -> None:
    if isinstance(session, Session):
        from glmv_cli.app import kept_answers, kept_cache

        kept_cache.save(session)
        kept_answers.save(session)


def _local_name(session, model: ModelChoice) -> str | None:
    return session.name if model.backend == "local" else None


def query_for(question: str, load: LoadOptions) -> LoadOptions:
    """No question of the user's (a default one): long PDFs spread their pages evenly."""
    if question in DEFAULT_QUESTIONS.values() and load.query is None:
        return dataclasses.replace(load, query="")
    return load


def open_session(model: ModelChoice):
    """The local Session, or with --backend openai a RemoteSession that yields the same events."""
    if model.backend == "openai":
        from glmv_cli.app.remote import RemoteSession

        return RemoteSession(model.base_url, api_key=model.api_key, model=model.remote_model)
    return Session(model.model, device=model.device, dtype=model.dtype, quantize=model.quantize,
                   compile=model.compile)


def draw(conversation: Conversation, result, path: Path, term: render.Terminal) -> None:
    from glmv_cli.app.boxes import draw_boxes
    from glmv_cli.inputs.image import open_image

    images = [a for a in (conversation.attachments[-1] if conversation.attachments else []) if a.kind == "image"]
    if not images:
        raise InputError("--draw-boxes needs an image attachment to draw on")
    first = images[0]
    image = open_image(first.read_bytes() if first.path is None else first.path, name=first.label)
    try:
        draw_boxes(image, result.boxes).save(path)
    except (OSError, ValueError) as e:
        raise InputError(f"cannot write {path} ({e}); give a .png or .jpg path in a writable folder") from None
    if not result.boxes:
        render.note(f"the answer holds no boxes; {path} is {first.label} unchanged", term)


# -- chat -----------------------------------------------------------------------------------------

CHAT_HELP = '''commands:
  /attach PATH|URL   attach a file (or URL, or every file of a glob: shots/*.png) to your next message
  /reset             forget the conversation (and pending attachments)
  /save FILE.md      write the conversation so far as Markdown
  """ ... """        a message of several lines, typed (a paste of several lines is one message)
  /help              this help
  /exit              leave (or Ctrl-D); Ctrl-C stops an answer'''


def run_chat(items: list, model: ModelChoice, load: LoadOptions, gen: GenerationOptions,
             out: OutputOptions, resume: bool = False) -> None:
    """The chat loop; each answered turn is kept as the last conversation (`resume`: go on with
    it), so `glmv ask -c` continues a chat and `glmv chat -c` a question."""
    from glmv_cli.app import history

    term = render.Terminal(verbose=out.verbose)
    screen = render.ChatScreen(term, history=history.state_dir() / "chat_history" if history.enabled() else None)
    record, model, system = _begin(resume, model, out.system)
    session = open_session(model)
    conversation = session.conversation(system)
    history.restore_into(conversation, record, load, gen)
    keep_cache(session)
    try:
        pending = [_check_attachment(i) for i in items]
        screen.welcome(session.name, [_label(i) for i in pending])
        if record.turns:
            n = len(record.turns)
            screen.info(f"continuing the last conversation ({n} turn{'s' if n > 1 else ''})")
        while True:
            try:
                line = screen.read().strip()
            except EOFError:
                screen.blank()
                return
            except KeyboardInterrupt:
                screen.blank()
                continue
            if not line:
                continue
            if line.startswith("/") and not screen.block:  # (a \"\"\" block is a message, whatever it starts with)
                if chat_command(line, conversation, pending, screen) == "exit":
                    return
                if line.split()[0] == "/reset":
                    record = history.Record(system=system)
                continue
            with screen.busy():
                result = ask_in_chat(conversation, line, pending, load, gen, out, term)
            if result is not None:
                history.answered(record, _local_name(session, model), line, conversation.attachments[-1], result,
                                 load, gen)
            pending.clear()
    finally:
        screen.close()
        save_cache(session)  # for the next -c


def ask_in_chat(conversation, line, pending, load, gen, out, term):
    """One message of the chat; its Result, or None when it failed or was stopped."""
    renderer = render.make_renderer(term, json_=False, jsonl=out.jsonl, hide_reasoning=out.hide_reasoning,
                                    extract=out.extract)
    events = conversation.ask(line, list(pending), load=load, generation=gen)
    result = None
    try:
        for event in events:
            renderer.handle(event)
            if isinstance(event, Done):
                result = event.result
    except KeyboardInterrupt:
        events.close()
        renderer.interrupted()
    except ModelError:
        raise
    except GlmvError as e:
        events.close()
        term.clear_status()
        earlier = isinstance(e, ContextFull) and len(conversation.attachments) > 0  # turns before this one
        render.error(f"{e}; or /reset to start a new conversation" if earlier else str(e), term)
    finally:
        term.clear_status()
    if term.err_tty:
        term.write_err("\n")
    return result


def chat_command(line: str, conversation: Conversation, pending: list, screen: render.ChatScreen) -> str | None:
    name, _, arg = line.partition(" ")
    arg = arg.strip()
    if name in ("/exit", "/quit"):
        return "exit"
    if name == "/help":
        screen.info(CHAT_HELP)
    elif name == "/reset":
        conversation.reset()
        pending.clear()
        screen.info("conversation cleared")
    elif name == "/attach":
        if not arg:
            screen.info("attached: " + (", ".join(_label(p) for p in pending) or "nothing") + "; /attach PATH|URL")
            return None
        try:
            names = _typed_paths(arg)
            pending.extend(_check_attachment(n) for n in names)
            screen.info(f"attached {', '.join(names)} to your next message")
        except GlmvError as e:
            render.error(str(e), screen.term)
    elif name == "/save":
        if not arg:
            screen.info("/save FILE.md: give a file name")
            return None
        try:
            screen.info(f"saved to {save_transcript(conversation, arg)}")
        except GlmvError as e:
            render.error(str(e), screen.term)
    else:
        screen.info(f"unknown command {name}; /help lists them")
    return None


def _typed_paths(arg: str) -> list[str]:
    """What `/attach ARG` names: a URL or path as typed, or as a terminal pastes a dropped file
    ('/my photos/a.png' in quotes, or /my\\ photos/a.png), or every file a glob matches (shots/*.png)."""
    if att.is_url(arg) or Path(arg).expanduser().exists():
        return [arg]
    unquoted = arg[1:-1] if len(arg) > 1 and arg[0] == arg[-1] and arg[0] in "'\"" else arg.replace("\\ ", " ")
    if Path(unquoted).expanduser().exists():
        return [unquoted]
    matches = sorted(p for p in glob.glob(str(Path(unquoted).expanduser())) if Path(p).is_file())
    return matches or [arg]  # nothing matched: the missing path's own error


def _check_attachment(item: str):
    """A path must exist now (URLs are fetched when the message is sent)."""
    if isinstance(item, str) and not att.is_url(item):
        return att.from_path(item)
    return item


def _label(item) -> str:
    return item.label if isinstance(item, att.Attachment) else str(item)


# -- option values -> dataclasses ------------------------------------------------------------------

def generation_options(max_new_tokens=None, temperature=None, top_p=None, top_k=None, repetition_penalty=None,
                       seed=None, think_budget=None, max_context=None, format=None, *,
                       no_think: bool = False, logprobs: int | None = None) -> GenerationOptions:
    if repetition_penalty is not None and repetition_penalty <= 0:
        raise InputError("--repetition-penalty divides the logits of repeated tokens: give more than 0 (1 is off)")
    if no_think and think_budget:
        raise InputError("--no-think answers without thinking and --think-budget lets it think that long; "
                         "give one of them")
    return GenerationOptions(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, top_k=top_k,
                             repetition_penalty=repetition_penalty, seed=seed, think_budget=think_budget,
                             max_context=max_context, format=format,
                             template_kwargs={"enable_thinking": False} if no_think else {}, logprobs=logprobs)


def logprobs(n: int | None, as_json: bool) -> int | None:
    """--logprobs N: shown in --json / --jsonl only (an answer's text has no room for them)."""
    if n is not None and not as_json:
        raise InputError("--logprobs shows in --json or --jsonl output; add one of them")
    return n


def answer_format(schema: str | None = None, choice: list[str] | None = None,
                  regex: str | None = None, grammar: str | None = None) -> AnswerFormat | None:
    """--schema (a file or the JSON itself), --choice (repeated), --regex or --grammar (a file), as
    an AnswerFormat."""
    given = [name for name, v in (("--schema", schema), ("--choice", choice), ("--regex", regex),
                                  ("--grammar", grammar)) if v]
    if len(given) > 1:
        raise InputError(f"{' and '.join(given)} each set the answer's format; give one of them")
    for name, value in (("--schema", schema), ("--regex", regex), ("--grammar", grammar)):
        if value is not None and not value.strip():
            raise InputError(f"{name} is empty (an unset shell variable?); give one, or leave {name} out")
    if choice:
        return AnswerFormat.choice(choice)
    if regex:
        return AnswerFormat.regex(regex)
    if grammar:
        return AnswerFormat.grammar(_read_text(grammar, "--grammar"))
    if not schema:
        return None
    text = schema
    if not schema.lstrip().startswith(("{", "[", "true")):  # not JSON: a file
        text = _read_text(schema, "--schema", "and not a JSON schema either")
    return AnswerFormat.json_schema(text)


def _read_text(name: str, option: str, missing: str = "") -> str:
    path = Path(name).expanduser()
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{option} {name}: no such file{', ' + missing if missing else ''}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{option} {name}: cannot read it ({getattr(e, 'strerror', None) or e})") from None


def load_options(max_pixels=None, min_pixels=None, pages=None, dpi=None, with_text=False, password=None,
                 fps=2.0, max_frames=None, start=None, end=None, video_backend="auto") -> LoadOptions:
    return LoadOptions(min_pixels=min_pixels, max_pixels=max_pixels, pages=pages, dpi=dpi, with_text=with_text,
                       password=password, fps=fps, max_frames=max_frames, start=start, end=end,
                       video_backend=video_backend)


def output_options(json=False, jsonl=False, hide_reasoning=False, extract=False, draw_boxes=None, verbose=False,
                   system=None) -> OutputOptions:
    if json and jsonl:
        raise InputError("choose one of --json and --jsonl")
    if extract and (json or jsonl):
        raise InputError("--extract prints the answer's code block as plain text; with --json or --jsonl take "
                         "it from the answer field instead")
    return OutputOptions(json=json, jsonl=jsonl, hide_reasoning=hide_reasoning, extract=extract,
                         draw_boxes=draw_boxes, verbose=verbose, system=system and well_formed(system))


def store_quantized(model: str, out: Path, quantize: str) -> None:
    """`glmv quantize`: write the stored checkpoint, a status line per tensor; the folder and its
    size on stdout at the end (what a script passes to --model next)."""
    from glmv_cli.loading import resolve_checkpoint, weight_files
    from glmv_cli.memory import size
    from glmv_cli.quantized import save_quantized

    term = render.Terminal()
    folder = resolve_checkpoint(model)

    def progress(i: int, n: int) -> None:
        term.status(f"quantizing {model} to {quantize}: tensor {i + 1} of {n}")

    paths = save_quantized(folder, Path(out), quantize, progress=progress)
    term.clear_status()
    total = sum(p.stat().st_size for p in paths)
    source = sum(p.stat().st_size for p in weight_files(folder))
    term.line("", f"stored {model} in {quantize}: {size(total)} of weights instead of {size(source)}; "
                  f"load it with --model {out}")
    term.write_out(f"{out}\n")
