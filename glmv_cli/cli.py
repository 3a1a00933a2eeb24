"""The `glmv` command. Thin: parse options, call glmv_cli.commands, map errors to exit codes.

Options are defined once in options.py. Nothing heavy is imported at module level, so `--help`
and shell completion (`glmv --install-completion`) answer at once.
"""

from __future__ import annotations

import functools
import logging
import sys
from pathlib import Path
from typing import Annotated, Literal

import typer

from glmv_cli import options as o
from glmv_cli.errors import GlmvError
from glmv_cli.text import well_formed

app = typer.Typer(no_args_is_help=True, add_completion=True, pretty_exceptions_enable=False,
                  rich_markup_mode="markdown", context_settings={"help_option_names": ["-h", "--help"]},
                  help="Ask GLM-4.1V vision-language models about images, PDFs and videos, locally.")

Args = Annotated[list[str] | None, typer.Argument(
    metavar="INPUTS", show_default=False,
    help="Files, http(s) URLs or - (stdin) to attach, then the question.")]
File = Annotated[str, typer.Argument(metavar="FILE", help="The file (a path, an http(s) URL or - for stdin).")]
Question = Annotated[str | None, typer.Argument(metavar="[QUESTION]", show_default=False,
                                                help="What to ask about it.")]
Attachments = Annotated[list[str] | None, typer.Argument(
    metavar="ATTACHMENTS", show_default=False, help="Files or URLs to attach to your first message.")]


def _examples(*lines: str) -> str:
    return "**Examples**\n\n```\n" + "\n".join(lines) + "\n```"


@app.callback()
def _root() -> None:
    """Ask GLM-4.1V vision-language models about images, PDFs and videos, locally.

    The answer goes to stdout, the model's reasoning and progress to stderr.
    """


@app.command(epilog=_examples(
    'glmv ask photo.jpg "What is in this picture?"',
    'glmv ask a.png b.png c.jpg "Compare these"',
    'glmv ask "Explain M-RoPE in two sentences"',
    'glmv ask - "What is this?" < photo.jpg',
    'git diff | glmv ask "Review this change"',
    'glmv ask https://example.com/chart.png "Summarize the trend" --json',
    'glmv ask screenshot.png "Write the HTML for this page" -x > page.html',
    'glmv ask street.jpg "Where is the bus? Give its box" --draw-boxes boxes.png',
    'glmv ask receipt.jpg "Shop and total?" --schema receipt.schema.json   (the answer: JSON of that schema)',
    'glmv ask -c "And the one on the left?"   (continues the last glmv ask, with its attachments)',
    'glmv ask photos/*.jpg "Write a one-line caption" --each --json > captions.jsonl',
    'glmv ask photos/*.jpg "Write a one-line caption" --each --parallel 4'))
def ask(
    args: Args = None, model: o.Model = None, device: o.Device = "auto", dtype: o.Dtype = "auto",
    quantize: o.Quantize = None, compile: o.Compile = False,
    backend: o.Backend = "local", base_url: o.BaseUrl = None, api_key: o.ApiKey = None,
    remote_model: o.RemoteModel = None,
    max_new_tokens: o.MaxNewTokens = None, temperature: o.Temperature = None, top_p: o.TopP = None,
    top_k: o.TopK = None, repetition_penalty: o.RepetitionPenalty = None, seed: o.Seed = None,
    system: o.System = None, think_budget: o.ThinkBudget = None, no_think: o.NoThink = False,
    max_context: o.MaxContext = None,
    schema: o.Schema = None, choices: o.Choice = None, regex: o.Regex = None, grammar: o.Grammar = None,
    logprobs: o.Logprobs = None,
    json: o.Json = False, jsonl: o.Jsonl = False, hide_reasoning: o.HideReasoning = False,
    extract: o.Extract = False, draw_boxes: o.DrawBoxes = None, each: o.Each = False,
    parallel: o.EachParallel = 1, resume: o.Continue = False, verbose: o.Verbose = False,
    no_stdin: o.NoStdin = False,
    max_pixels: o.MaxPixels = None, min_pixels: o.MinPixels = None,
    pages: o.Pages = None, dpi: o.Dpi = None, with_text: o.WithText = False, password: o.Password = None,
    fps: o.Fps = 2.0, max_frames: o.MaxFrames = None, start: o.Start = None, end: o.End = None,
    video_backend: o.VideoBackend = "auto",
) -> None:
    """Ask about images, PDFs, videos, slides, URLs, piped text, or nothing at all.

    Every argument that is an existing file, an http(s) URL or - (stdin) is attached; the rest is
    the question. Text piped into stdin is added before the question. --each asks about every
    attachment on its own.
    """
    from glmv_cli import commands as c

    out = c.output_options(json, jsonl, hide_reasoning, extract, draw_boxes, verbose, system)
    items, question = c.split_args(args or [], read_stdin=not no_stdin, context_in_question=each)
    if not each:  # (with --each, run_each refuses --draw-boxes)
        c.check_draw_boxes(items, draw_boxes)
    choice = c.ModelChoice(model, device, dtype, quantize, compile, backend, base_url, api_key, remote_model)
    run = functools.partial(c.run_ask, resume=resume)
    if parallel > 1 and not each:
        raise c.InputError("--parallel answers several attachments at once; it goes with --each")
    if each:
        if resume:
            raise c.InputError("--each asks about each file on its own; leave out -c")
        from glmv_cli.each import run_each

        run = functools.partial(run_each, parallel=parallel)
    load = c.load_options(max_pixels, min_pixels, pages, dpi, with_text, password, fps, max_frames, start, end,
                          video_backend)
    if not resume:  # (with -c, earlier attachments are read again with them)
        c.note_unused_options(items, load)
    run(items, question or c.default_question(items[:1] if each else items), choice, load,
        c.generation_options(max_new_tokens, temperature, top_p, top_k, repetition_penalty, seed,
                             think_budget, max_context, c.answer_format(schema, choices, regex, grammar),
                             no_think=no_think, logprobs=c.logprobs(logprobs, json or jsonl)), out)


@app.command(epilog=_examples(
    "glmv pdf report.pdf",
    'glmv pdf report.pdf "What was the revenue in 2023?" --pages 2-5 --dpi 150',
    'glmv pdf scan.pdf "Transcribe page 1" --pages 1 --with-text',
    'glmv pdf locked.pdf --password hunter2 -R',
    'glmv pdf contract.pdf "List every deadline" --map-reduce [--parallel 4]',
    'glmv pdf slides.pptx "List the action items"   (needs LibreOffice)'))
def pdf(
    file: File, question: Question = None, model: o.Model = None, device: o.Device = "auto",
    dtype: o.Dtype = "auto", quantize: o.Quantize = None, compile: o.Compile = False,
    backend: o.Backend = "local", base_url: o.BaseUrl = None, api_key: o.ApiKey = None,
    remote_model: o.RemoteModel = None,
    max_new_tokens: o.MaxNewTokens = None, temperature: o.Temperature = None,
    top_p: o.TopP = None, top_k: o.TopK = None, repetition_penalty: o.RepetitionPenalty = None, seed: o.Seed = None,
    system: o.System = None, think_budget: o.ThinkBudget = None, no_think: o.NoThink = False,
    max_context: o.MaxContext = None,
    schema: o.Schema = None, choices: o.Choice = None, regex: o.Regex = None, grammar: o.Grammar = None,
    logprobs: o.Logprobs = None,
    json: o.Json = False, jsonl: o.Jsonl = False, hide_reasoning: o.HideReasoning = False,
    extract: o.Extract = False, verbose: o.Verbose = False,
    max_pixels: o.MaxPixels = None, min_pixels: o.MinPixels = None,
    pages: o.Pages = None, dpi: o.Dpi = None, with_text: o.WithText = False, password: o.Password = None,
    map_reduce: o.MapReduce = False, parallel: o.MapParallel = 1,
) -> None:
    """Ask about a PDF (or PowerPoint slides): each selected page is shown to the model as an image.

    Without a question: summarize the document. Pages are rendered at --dpi, lowered when they
    would not fit the context; past 120 DPI the pages that best match the question go in as images,
    the next as their text, the rest not at all (a note says how many). --map-reduce reads them all.
    """
    from glmv_cli import commands as c

    out = c.output_options(json, jsonl, hide_reasoning, extract, None, verbose, system)
    items, _ = c.split_args([file], read_stdin=False)
    c.check_file_kind(items[0] if items else file, ("pdf", "slides"), "PDF")
    choice = c.ModelChoice(model, device, dtype, quantize, compile, backend, base_url, api_key, remote_model)
    c.run_ask(items, well_formed(question) if question else c.DEFAULT_QUESTIONS["pdf"], choice,
              c.load_options(max_pixels, min_pixels, pages, dpi, with_text, password),
              c.generation_options(max_new_tokens, temperature, top_p, top_k, repetition_penalty, seed,
                                   think_budget, max_context, c.answer_format(schema, choices, regex, grammar),
                                   no_think=no_think, logprobs=c.logprobs(logprobs, json or jsonl)),
              out, map_reduce=map_reduce, parallel=parallel)


@app.command(epilog=_examples(
    "glmv video clip.mp4",
    'glmv video clip.mp4 "When does the door open?" --fps 1',
    'glmv video talk.mkv "Summarize minutes 2 to 4" --start 120 --end 240 --max-frames 64'))
def video(
    file: File, question: Question = None, model: o.Model = None, device: o.Device = "auto",
    dtype: o.Dtype = "auto", quantize: o.Quantize = None, compile: o.Compile = False,
    backend: o.Backend = "local", base_url: o.BaseUrl = None, api_key: o.ApiKey = None,
    remote_model: o.RemoteModel = None,
    max_new_tokens: o.MaxNewTokens = None, temperature: o.Temperature = None,
    top_p: o.TopP = None, top_k: o.TopK = None, repetition_penalty: o.RepetitionPenalty = None, seed: o.Seed = None,
    system: o.System = None, think_budget: o.ThinkBudget = None, no_think: o.NoThink = False,
    max_context: o.MaxContext = None,
    schema: o.Schema = None, choices: o.Choice = None, regex: o.Regex = None, grammar: o.Grammar = None,
    logprobs: o.Logprobs = None,
    json: o.Json = False, jsonl: o.Jsonl = False, hide_reasoning: o.HideReasoning = False,
    extract: o.Extract = False, verbose: o.Verbose = False,
    max_pixels: o.MaxPixels = None, min_pixels: o.MinPixels = None,
    fps: o.Fps = 2.0, max_frames: o.MaxFrames = None, start: o.Start = None, end: o.End = None,
    video_backend: o.VideoBackend = "auto",
) -> None:
    """Ask about a video: frames are sampled at --fps (within --start/--end) and shown with their times.

    Without a question: describe the video.
    """
    from glmv_cli import commands as c

    out = c.output_options(json, jsonl, hide_reasoning, extract, None, verbose, system)
    items = c.split_args([file], read_stdin=False)[0]
    c.check_file_kind(items[0] if items else file, ("video",), "video", also=("image/gif",))
    items = c.gifs_as_videos(items)
    choice = c.ModelChoice(model, device, dtype, quantize, compile, backend, base_url, api_key, remote_model)
    c.run_ask(items, well_formed(question) if question else c.DEFAULT_QUESTIONS["video"], choice,
              c.load_options(max_pixels, min_pixels, fps=fps, max_frames=max_frames, start=start, end=end,
                             video_backend=video_backend),
              c.generation_options(max_new_tokens, temperature, top_p, top_k, repetition_penalty, seed,
                                   think_budget, max_context, c.answer_format(schema, choices, regex, grammar),
                                   no_think=no_think, logprobs=c.logprobs(logprobs, json or jsonl)), out)


@app.command(epilog=_examples(
    "glmv chat",
    "glmv chat photo.jpg --system 'Answer in French'",
    "glmv chat < questions.txt > answers.txt"))
def chat(
    attachments: Attachments = None, model: o.Model = None, device: o.Device = "auto", dtype: o.Dtype = "auto",
    quantize: o.Quantize = None, compile: o.Compile = False,
    backend: o.Backend = "local", base_url: o.BaseUrl = None, api_key: o.ApiKey = None,
    remote_model: o.RemoteModel = None,
    max_new_tokens: o.MaxNewTokens = None, temperature: o.Temperature = None, top_p: o.TopP = None,
    top_k: o.TopK = None, repetition_penalty: o.RepetitionPenalty = None, seed: o.Seed = None,
    system: o.System = None, think_budget: o.ThinkBudget = None, no_think: o.NoThink = False,
    max_context: o.MaxContext = None,
    jsonl: o.Jsonl = False, hide_reasoning: o.HideReasoning = False, extract: o.Extract = False,
    resume: o.Continue = False,
    verbose: o.Verbose = False, max_pixels: o.MaxPixels = None, min_pixels: o.MinPixels = None,
    pages: o.Pages = None, dpi: o.Dpi = None, with_text: o.WithText = False, password: o.Password = None,
    fps: o.Fps = 2.0, max_frames: o.MaxFrames = None, start: o.Start = None, end: o.End = None,
    video_backend: o.VideoBackend = "auto",
) -> None:
    """Chat with the model, several turns; attachments given here go with your first message.

    In the chat: /attach PATH|URL, /reset, /save FILE.md, /help, /exit. Ctrl-C stops an answer,
    Ctrl-D leaves. The history keeps the answers, not the reasoning. Reads one message per line,
    from a pipe too (no prompt is shown then). -c goes on with the last conversation (of
    glmv ask or chat); `glmv ask -c` goes on with this one.
    """
    from glmv_cli import commands as c

    out = c.output_options(False, jsonl, hide_reasoning, extract, None, verbose, system)
    choice = c.ModelChoice(model, device, dtype, quantize, compile, backend, base_url, api_key, remote_model)
    c.run_chat(list(attachments or []), choice,
               c.load_options(max_pixels, min_pixels, pages, dpi, with_text, password, fps, max_frames, start, end,
                              video_backend),
               c.generation_options(max_new_tokens, temperature, top_p, top_k, repetition_penalty, seed,
                                    think_budget, max_context, no_think=no_think), out, resume=resume)


@app.command(epilog=_examples(
    "glmv serve --model zai-org/GLM-4.1V-9B-Thinking",
    "glmv serve --port 8001 --api-key $(openssl rand -hex 16) --max-queue 8",
    "glmv serve --host 0.0.0.0 --api-key KEY --allowed-local-media-path ~/shared",
    "glmv serve --parallel 8   (eight requests decoded together)"))
def serve(
    model: o.Model = None, host: o.Host = "127.0.0.1", port: o.Port = 8000, api_key: o.ServerKey = None,
    device: o.Device = "auto", dtype: o.Dtype = "auto", quantize: o.Quantize = None, compile: o.Compile = False,
    max_queue: o.MaxQueue = 16, allowed_local_media_path: o.AllowedLocalMediaPath = None,
    cors_origin: o.CorsOrigin = None, max_body_mb: o.MaxBodyMb = 128, served_model_name: o.ServedModelName = None,
    parallel: o.Parallel = None, request_log: o.RequestLog = True, max_context: o.ServeMaxContext = None,
) -> None:
    """Serve the model over an OpenAI-compatible HTTP API (/v1/chat/completions, /v1/responses,
    /v1/models, /health).

    The weights are loaded once; up to --parallel requests are answered at once (their tokens
    decoded together), more wait in a bounded queue. Editors, chat UIs, the `openai` client and
    `glmv ask --backend openai` can then use it.
    """
    from glmv_cli.serve.run import ServeOptions
    from glmv_cli.serve.run import serve as run_server

    run_server(model, ServeOptions(host, port, api_key, max_queue, allowed_local_media_path, tuple(cors_origin or ()),
                                   max_body_mb, tuple(served_model_name or ()), parallel, request_log,
                                   max_context),
               device=device, dtype=dtype, quantize=quantize, compile=compile)


@app.command(epilog=_examples("glmv info", "glmv info --model ~/models/GLM-4.6V-Flash --device cpu"))
def info(model: o.Model = None, device: o.Device = "auto", dtype: o.Dtype = "auto") -> None:
    """Which checkpoint would be used and from where, its shape, and the memory it needs."""
    from glmv_cli.info import describe

    typer.echo(describe(model_name(model), device=device, dtype=dtype))


@app.command(epilog=_examples(
    "glmv quantize ~/models/glm41v-int4 --quantize int4 && glmv ask photo.jpg \"...\" --model ~/models/glm41v-int4",
    "glmv quantize ~/models/flash-int8 --model ~/models/GLM-4.6V-Flash --quantize int8"))
def quantize(
    out: Annotated[Path, typer.Argument(help="A new folder for the stored checkpoint.", show_default=False)],
    model: o.Model = None,
    quantize: Annotated[Literal["int8", "int4"], typer.Option(help="The scheme to store (see glmv ask --help).")]
    = "int4",
) -> None:
    """Store a checkpoint in int8 or int4: every later load reads a third (int4) or half (int8) of
    the bytes and quantizes nothing. Load it with --model OUT (no --quantize needed)."""
    from glmv_cli.commands import store_quantized

    store_quantized(model_name(model), out, quantize)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
             add_help_option=False, epilog=_examples(
                 "glmv bench --shape small --dtype float32 --threads 2",
                 "glmv bench --shape 9b --dtype bfloat16 --device cuda --image 1120"))
def bench(ctx: typer.Context) -> None:
    """Ours against transformers on the same random weights: load, TTFT (preprocess / vision /
    prefill), decode tokens/s, bandwidth. A table on stderr, one JSON line last on stdout.
    `glmv bench --help` lists its options."""
    from glmv_cli.bench.__main__ import main as bench_main

    bench_main(ctx.args)


def model_name(model: str | None) -> str:
    import os

    from glmv_cli.loading import DEFAULT_REPO

    return model or os.environ.get("GLMV_MODEL") or DEFAULT_REPO


# click's UsageError, whether Typer ships its own click (0.2x) or uses the package
UsageError = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")


def main() -> None:
    """Console entry point: one line on stderr and an exit code for every known failure (a usage
    error too: an option's bad value, an unknown option, exit code 2; Ctrl-C: 130). --debug
    anywhere shows the traceback and debug logs."""
    debug = "--debug" in sys.argv
    if debug:
        sys.argv.remove("--debug")
    from glmv_cli.render import LogHandler

    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, handlers=[LogHandler()],
                        format="%(message)s")
    try:
        code = app(prog_name="glmv", standalone_mode=False)  # (usage errors reach us: one line, not a box)
        if isinstance(code, int) and code:
            sys.exit(code)
    except UsageError as e:
        if e.format_message():  # (no arguments at all: the help is shown, nothing to add)
            command = e.ctx.command_path if e.ctx is not None else "glmv"
            _error(f"{e.format_message()} ({command} -h lists the options)")
        sys.exit(e.exit_code)
    except typer.Abort:  # (Ctrl-C or Ctrl-D at a prompt of click's own)
        sys.exit(130)
    except GlmvError as e:
        if debug:
            raise
        _error(str(e))
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    except BrokenPipeError:  # `glmv ask ... | head -1`
        sys.stderr.close()
        sys.exit(1)
    except Exception as e:
        if debug:
            raise
        _error(f"{type(e).__name__}: {e} (run with --debug for the traceback)")
        sys.exit(1)


def _error(message: str) -> None:
    from glmv_cli.render import error

    error(message)

