"""Every `glmv` option, defined once as an Annotated type and shared by the commands that take it.

Grouped into help panels. Importing this (and cli.py) stays cheap: no torch, so `--help` and shell
completion answer at once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

MODEL, GEN, OUT, IMG, PDF, VID = "Model", "Generation", "Output", "Images", "PDFs and slides", "Videos"

# -- model --
Model = Annotated[str | None, typer.Option(
    "--model", "-m", rich_help_panel=MODEL, show_default=False,
    help="Checkpoint folder, or repo id in the local Hugging Face cache \\[default: $GLMV_MODEL, else "
         "zai-org/GLM-4.1V-9B-Thinking ].")]
# (the model settings a machine keeps, e.g. GLMV_QUANTIZE=int8 on a 16 GB laptop, can live in its environment)
Device = Annotated[Literal["auto", "cpu", "cuda", "mps"], typer.Option(
    rich_help_panel=MODEL, envvar="GLMV_DEVICE", help="auto picks cuda, then mps, then cpu.")]
Dtype = Annotated[Literal["auto", "bfloat16", "float16", "float32"], typer.Option(
    rich_help_panel=MODEL, envvar="GLMV_DTYPE",
    help="auto: the checkpoint's dtype (float16 becomes float32 on CPU).")]
Quantize = Annotated[Literal["int8", "int4"] | None, typer.Option(
    rich_help_panel=MODEL, show_default=False, envvar="GLMV_QUANTIZE",
    help="Weight-only int8 for the text decoder: half of bfloat16's bytes per token, faster decoding on "
         "memory-bound machines, a small accuracy cost. int4 (its linear layers in 4 bits, per group of "
         "128): a quarter, so GLM-4.1V-9B fits 8 GB; a larger accuracy cost.")]
Compile = Annotated[bool, typer.Option(
    "--compile", rich_help_panel=MODEL,
    help="torch.compile the one-token decode step: faster decoding after a one-off compile (tens of "
         "seconds; again for a much longer prompt).")]

# -- generation --
MaxNewTokens = Annotated[int | None, typer.Option(
    min=1, rich_help_panel=GEN, show_default=False,
    help="Most tokens to generate, thinking included \\[default: generation_config.json, else what the context "
         "leaves, at most 8192].")]
Temperature = Annotated[float | None, typer.Option(
    "--temperature", "-t", min=0.0, rich_help_panel=GEN, show_default=False,
    help="0 = greedy \\[default: generation_config.json].")]
TopP = Annotated[float | None, typer.Option(min=0.0, max=1.0, rich_help_panel=GEN, show_default=False,
                                            help="Nucleus sampling \\[default: generation_config.json].")]
TopK = Annotated[int | None, typer.Option(min=0, rich_help_panel=GEN, show_default=False,
                                          help="0 = off \\[default: generation_config.json].")]
RepetitionPenalty = Annotated[float | None, typer.Option(
    min=0.0, rich_help_panel=GEN, show_default=False, help="\\[default: generation_config.json]")]
Seed = Annotated[int | None, typer.Option(rich_help_panel=GEN, show_default=False,
                                          help="Seed for sampling, for repeatable answers.")]
System = Annotated[str | None, typer.Option("--system", "-s", rich_help_panel=GEN, show_default=False,
                                            help="System prompt.")]
ThinkBudget = Annotated[int | None, typer.Option(
    min=0, rich_help_panel=GEN, show_default=False,
    help="After N thinking tokens, close the thinking (insert `</think><answer>`) and make the model answer.")]
Logprobs = Annotated[int | None, typer.Option(
    "--logprobs", min=0, max=20, rich_help_panel=GEN, show_default=False,
    help="With --json/--jsonl: each answer token's log-probability and its N likeliest alternatives "
         "(e.g. how sure a --choice answer is).")]
NoThink = Annotated[bool, typer.Option(
    "--no-think", rich_help_panel=GEN,
    help="Answer without thinking: the chat template's switch where it has one (GLM-4.6V), else the "
         "thinking is closed at once (--think-budget 0).")]
MaxContext = Annotated[int | None, typer.Option(
    min=1, rich_help_panel=GEN, show_default=False,
    help="Token budget for prompt + answer; PDFs are rendered at a lower DPI to fit "
         "\\[default: the model's context].")]
Schema = Annotated[str | None, typer.Option(
    rich_help_panel=GEN, show_default=False, metavar="FILE|JSON",
    help="The answer is JSON matching this JSON schema (a .json file, or the schema itself; '{}' allows any "
         "JSON). The model thinks freely, then each token of its answer keeps to the schema.")]
Choice = Annotated[list[str] | None, typer.Option(
    "--choice", rich_help_panel=GEN, show_default=False, metavar="TEXT",
    help="The answer is exactly one of these (repeat it: --choice yes --choice no).")]
Regex = Annotated[str | None, typer.Option(rich_help_panel=GEN, show_default=False, metavar="REGEX",
                                           help="The answer matches this regular expression (whole).")]
Grammar = Annotated[str | None, typer.Option(
    rich_help_panel=GEN, show_default=False, metavar="FILE",
    help="The answer follows this grammar: a file in llama.cpp's GBNF (root ::= ...) or Lark (start: ...).")]

# -- output --
Json = Annotated[bool, typer.Option("--json", rich_help_panel=OUT,
                                    help="One JSON object on stdout when done (answer, thinking, usage, ...).")]
Jsonl = Annotated[bool, typer.Option("--jsonl", rich_help_panel=OUT,
                                     help="One JSON event per line as they happen.")]
HideReasoning = Annotated[bool, typer.Option("--hide-reasoning", "-R", rich_help_panel=OUT,
                                             help="Do not show the model's reasoning on stderr.")]
Extract = Annotated[bool, typer.Option("--extract", "-x", rich_help_panel=OUT,
                                       help="Print only the first fenced code block of the answer.")]
DrawBoxes = Annotated[Path | None, typer.Option(
    rich_help_panel=OUT, show_default=False, dir_okay=False, metavar="OUT.png",
    help="Save the (first) input image with the answer's grounding boxes drawn.")]
EachParallel = Annotated[int, typer.Option(
    "--parallel", min=1, rich_help_panel=OUT,
    help="With --each: answer this many attachments at once, their tokens decoded together (the weights "
         "read once per step for all; with --backend openai, that many requests at once). The answers "
         "are the same and print in order.")]
Each = Annotated[bool, typer.Option(
    "--each", rich_help_panel=OUT,
    help="Ask the question about each attachment on its own, the model loaded once: a ==> FILE <== line "
         "before each answer (with --json: one object per line, with its source).")]
NoStdin = Annotated[bool, typer.Option(
    "--no-stdin", "-n", rich_help_panel=OUT,
    help="Leave stdin unread (as ssh -n does): for glmv inside a `while read` loop, or run by a program "
         "that leaves stdin open.")]
Continue = Annotated[bool, typer.Option(
    "--continue", "-c", rich_help_panel=OUT,
    help="Continue the last conversation (of glmv ask, pdf, video or chat): its questions, answers and "
         "attachments come first (kept in ~/.local/state/glmv; GLMV_NO_HISTORY=1 keeps nothing).")]
Verbose = Annotated[bool, typer.Option("--verbose", "-v", rich_help_panel=OUT,
                                       help="Progress lines on stderr even when it is not a terminal.")]

# -- images --
MaxPixels = Annotated[int | None, typer.Option(rich_help_panel=IMG, show_default=False,
                                               help="Pixel budget per image (frames x height x width for videos).")]
MinPixels = Annotated[int | None, typer.Option(rich_help_panel=IMG, show_default=False,
                                               help="Smallest pixel budget; small images are upscaled to it.")]

# -- pdf --
Pages = Annotated[str | None, typer.Option(rich_help_panel=PDF, show_default=False,
                                           help="Pages to show, e.g. 1-3,7 or 5- \\[default: all].")]
Dpi = Annotated[int | None, typer.Option(min=1, rich_help_panel=PDF, show_default=False,
                                         help="Render resolution \\[default: 180, lowered to fit the context down "
                                              "to 120; past that, the pages that best match the question go in at "
                                              "this DPI].")]
WithText = Annotated[bool, typer.Option("--with-text", rich_help_panel=PDF,
                                        help="Add each page's text layer to the prompt.")]
Password = Annotated[str | None, typer.Option(rich_help_panel=PDF, show_default=False,
                                              help="Password of an encrypted PDF.")]
MapParallel = Annotated[int, typer.Option(
    "--parallel", min=1, rich_help_panel=PDF,
    help="With --map-reduce: read this many chunks at once, their notes decoded together (the weights read "
         "once per step for all; each chunk holds its own KV cache, so this many times the memory).")]
MapReduce = Annotated[bool, typer.Option(
    "--map-reduce", rich_help_panel=PDF,
    help="Read every page, for whole-document questions: one pass per chunk of pages that fits the context "
         "writes notes, a last pass answers from the notes.")]

# -- video --
Fps = Annotated[float, typer.Option(rich_help_panel=VID, help="Frames sampled per second.")]
MaxFrames = Annotated[int | None, typer.Option(rich_help_panel=VID, show_default=False,
                                               help="At most this many frames, spread evenly.")]
Start = Annotated[float | None, typer.Option(rich_help_panel=VID, show_default=False,
                                             help="Start of the window, in seconds.")]
End = Annotated[float | None, typer.Option(rich_help_panel=VID, show_default=False,
                                           help="End of the window, in seconds.")]
VideoBackend = Annotated[Literal["auto", "decord", "pyav"], typer.Option(rich_help_panel=VID,
                                                                         help="Video decoder.")]


# -- remote backend (ask, pdf, video, chat) --
REMOTE, SERVER = "Remote server", "Server"
Backend = Annotated[Literal["local", "openai"], typer.Option(
    rich_help_panel=REMOTE, envvar="GLMV_BACKEND",
    help="local: run the model here; openai: send the question to an OpenAI-compatible server "
         "(glmv serve, vLLM, SGLang) at --base-url.")]
BaseUrl = Annotated[str | None, typer.Option(
    rich_help_panel=REMOTE, envvar="GLMV_BASE_URL", show_default=False,
    help="The server's API root, e.g. http://127.0.0.1:8000/v1 \\[env: GLMV_BASE_URL].")]
ApiKey = Annotated[str | None, typer.Option(
    rich_help_panel=REMOTE, envvar="GLMV_API_KEY", show_default=False,
    help="API key (sent as Authorization: Bearer KEY) \\[env: GLMV_API_KEY].")]
RemoteModel = Annotated[str | None, typer.Option(
    rich_help_panel=REMOTE, show_default=False,
    help="The model name on the server \\[default: the first of its GET /v1/models].")]

# -- glmv serve --
Host = Annotated[str, typer.Option(rich_help_panel=SERVER,
                                   help="Address to listen on; 0.0.0.0 exposes the server to your network.")]
Port = Annotated[int, typer.Option(min=0, max=65535, rich_help_panel=SERVER, help="Port to listen on.")]
ServerKey = Annotated[str | None, typer.Option(
    "--api-key", rich_help_panel=SERVER, envvar="GLMV_API_KEY", show_default=False,
    help="Require Authorization: Bearer KEY on /v1 routes \\[env: GLMV_API_KEY; default: no key].")]
MaxQueue = Annotated[int, typer.Option(min=1, rich_help_panel=SERVER,
                                       help="Requests waiting for the model; more get 503 with Retry-After.")]
ServeMaxContext = Annotated[int | None, typer.Option(
    "--max-context", min=64, rich_help_panel=SERVER, show_default=False,
    help="Tokens each request may hold, prompt and answer (vLLM's --max-model-len): bounds every request's "
         "KV cache, so that --parallel of them fit \\[default: the model's context].")]
RequestLog = Annotated[bool, typer.Option(
    "--request-log/--no-request-log", rich_help_panel=SERVER,
    help="A line on stderr per answered request: status, route, prompt tokens (cached), tokens generated, "
         "time to the first token, tokens/s; or the error it got.")]
Parallel = Annotated[int | None, typer.Option(
    min=1, rich_help_panel=SERVER, show_default=False,
    help="Requests answered at once, their tokens decoded together in one step (the weights read once "
         "for all) \\[default: 4 on a CPU or Mac; 1 on CUDA and with --compile, where the one-request "
         "CUDA graph or compiled step is faster].")]
ServedModelName = Annotated[list[str] | None, typer.Option(
    "--served-model-name", rich_help_panel=SERVER, show_default=False,
    help="The model's name in /v1/models, the one clients send (repeat it for aliases) "
         "\\[default: the checkpoint's name or folder].")]
AllowedLocalMediaPath = Annotated[Path | None, typer.Option(
    rich_help_panel=SERVER, show_default=False, file_okay=False,
    help="Allow file:// media URLs below this folder (refused by default).")]
CorsOrigin = Annotated[list[str] | None, typer.Option(
    rich_help_panel=SERVER, show_default=False,
    help="Allow browser pages from this origin (repeatable; '*' for any). CORS is off by default.")]
MaxBodyMb = Annotated[int, typer.Option(min=1, rich_help_panel=SERVER,
                                        help="Largest request body, in MiB (media travel inside it).")]
