"""The one error type of glmv, and the exit code each kind of failure maps to.

Library code raises these with a message that names the problem and what to do about it; the CLI
prints the message as one line on stderr and exits with `exit_code` (no traceback unless --debug).
"""

from __future__ import annotations


class GlmvError(Exception):
    """Anything glmv can explain to the user. Exit code 1."""

    exit_code = 1


class InputError(GlmvError):
    """Bad usage or bad input: a missing or unreadable file, an unsupported type, a bad page range,
    a prompt over the context. Exit code 2."""

    exit_code = 2


class ContextFull(InputError):
    """The prompt (attachments, the conversation so far, room for the answer) does not fit the
    model's context. Exit code 2."""


class ModelError(GlmvError):
    """The model cannot be found or loaded: not a GLM-4.1V checkpoint, a missing shard, a truncated
    safetensors file, keys that do not match. Exit code 3."""

    exit_code = 3
