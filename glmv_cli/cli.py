"""The `glmv` command. Thin: parse options, call the library, render, map errors to exit codes."""

from __future__ import annotations

import logging
import os
import sys
from typing import Annotated

import typer

from glmv_cli.errors import GlmvError

app = typer.Typer(no_args_is_help=True, add_completion=True, pretty_exceptions_enable=False,
                  help="Ask GLM-4.1V vision-language models about images, PDFs and videos, locally.")

ModelOpt = Annotated[str | None, typer.Option("--model", "-m", help="Checkpoint folder or Hugging Face repo id "
                                              "(default: $GLMV_MODEL, else zai-org/GLM-4.1V-9B-Thinking).")]
DeviceOpt = Annotated[str, typer.Option(help="auto | cpu | cuda | mps")]
DtypeOpt = Annotated[str, typer.Option(help="auto | bfloat16 | float16 | float32")]


@app.callback()
def _root() -> None:
    """Ask GLM-4.1V vision-language models about images, PDFs and videos, locally."""


def model_name(model: str | None) -> str:
    from glmv_cli.loading import DEFAULT_REPO

    return model or os.environ.get("GLMV_MODEL") or DEFAULT_REPO


@app.command()
def info(model: ModelOpt = None, device: DeviceOpt = "auto", dtype: DtypeOpt = "auto") -> None:
    """Which checkpoint would be used and from where, its shape, and the memory it needs.

    Example: glmv info --model ~/models/GLM-4.1V-9B-Thinking
    """
    from glmv_cli.info import describe

    typer.echo(describe(model_name(model), device=device, dtype=dtype))


def main() -> None:
    """Console entry point: one line on stderr and an exit code for every known failure
    (usage errors are Typer's: a usage line and exit code 2)."""
    debug = "--debug" in sys.argv
    if debug:
        sys.argv.remove("--debug")
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, format="%(message)s")
    try:
        app()
    except GlmvError as e:
        if debug:
            raise
        print(f"glmv: error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as e:
        if debug:
            raise
        print(f"glmv: error: {type(e).__name__}: {e} (run with --debug for the traceback)", file=sys.stderr)
        sys.exit(1)
