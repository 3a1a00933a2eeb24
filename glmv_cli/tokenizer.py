"""Text <-> token ids over the checkpoint's tokenizer.json, with the `tokenizers` library only.

Importing transformers costs seconds of start-up, so the CLI reads tokenizer.json directly. `encode`
gives what transformers' fast tokenizer gives with add_special_tokens=False (the chat template
writes every special token itself): special tokens written in the text become their single ids.
`StreamDecoder` turns ids into text deltas as they are generated, holding back incomplete UTF-8
sequences, so that the deltas joined equal `decode(all ids)`.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer as _HFTokenizer

from glmv_cli.errors import ModelError
from glmv_cli.text import well_formed

TOKENIZER_FILE = "tokenizer.json"
_REPLACEMENT = "\ufffd"  # what a decoder writes for bytes that are not (yet) valid UTF-8


class Tokenizer:
    """A checkpoint's tokenizer: encode, decode, special-token lookups, streaming decode."""

    def __init__(self, backend: _HFTokenizer):
        self._tok = backend

    @classmethod
    def from_folder(cls, folder: str | Path) -> Tokenizer:
        """Load `folder`/tokenizer.json; a ModelError says what is missing or broken."""
        path = Path(folder) / TOKENIZER_FILE
        if not path.is_file():
            raise ModelError(
                f"{Path(folder)} has no {TOKENIZER_FILE}; glmv needs the fast-tokenizer file that "
                f"GLM-4.1V checkpoints ship: download the complete checkpoint folder"
            )
        try:
            return cls(_HFTokenizer.from_file(str(path)))
        except Exception as e:  # tokenizers raises plain Exception subclasses for bad JSON
            raise ModelError(f"{path} could not be loaded ({e}); re-download it") from None

    @property
    def vocab_size(self) -> int:
        """Number of ids the tokenizer knows, added/special tokens included (transformers' len())."""
        return self._tok.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`; special tokens in it become their ids; no BOS/EOS is added."""
        return self._tok.encode(well_formed(text), add_special_tokens=False).ids

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
        """Text of `ids` (special tokens written out unless skip_special_tokens)."""
        return self._tok.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def token_id(self, token: str) -> int | None:
        """The id of one token string (e.g. "<|image|>"), or None if the vocabulary lacks it."""
        return self._tok.token_to_id(token)

    @functools.cached_property
    def added(self) -> frozenset[str]:
        """The added tokens' texts (special or not): each is always one id, never split."""
        return frozenset(t.content for t in self._tok.get_added_tokens_decoder().values())

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes one id stands for (a byte-level BPE token may hold part of a UTF-8 character,
        which decode() would write as U+FFFD): what OpenAI's logprobs give as `bytes`."""
        token = self._tok.id_to_token(token_id)
        if token is None:
            return b""
        if token not in self.added and type(self._tok.decoder).__name__ == "ByteLevel":
            table = _byte_values()
            if all(c in table for c in token):
                return bytes(table[c] for c in token)
        return self.decode([token_id]).encode("utf-8")

    def id_to_token(self, token_id: int) -> str | None:
        """The token string of one id, or None if out of range."""
        return self._tok.id_to_token(token_id)

    def backend_json(self) -> str:
        """The tokenizer as tokenizer.json's text (what other engines build their own view from)."""
        return self._tok.to_str()

    def stream(self, skip_special_tokens: bool = False) -> StreamDecoder:
        """A fresh incremental decoder over this tokenizer."""
        return StreamDecoder(self, skip_special_tokens=skip_special_tokens)


class StreamDecoder:
    """Ids in one at a time, text deltas out.

    Decodes a short window of recent ids twice (with and without the newest ones) and emits the
    difference, as vLLM and transformers' streamers do; a window whose text ends in U+FFFD is an
    unfinished multi-byte character and waits for the next id. `flush()` emits whatever is held
    back at the end, so that ''.join(deltas) == tokenizer.decode(all ids).
    """

    def __init__(self, tokenizer: Tokenizer, *, skip_special_tokens: bool = False):
        self._tokenizer = tokenizer
        self._skip = skip_special_tokens
        self._ids: list[int] = []
        self._prefix = 0  # start of the window whose text was already emitted up to _read
        self._read = 0  # ids before this index are fully emitted

    def _decode(self, start: int, end: int) -> str:
        return self._tokenizer.decode(self._ids[start:end], skip_special_tokens=self._skip)

    def feed(self, token_id: int) -> str:
        """Add one id; return the new text it completes ("" while a character is unfinished)."""
        self._ids.append(int(token_id))
        emitted = self._decode(self._prefix, self._read)
        text = self._decode(self._prefix, len(self._ids))
        if len(text) <= len(emitted) or text.endswith(_REPLACEMENT):
            return ""
        self._prefix, self._read = self._read, len(self._ids)
        return text[len(emitted):]

    def flush(self) -> str:
        """Whatever is still held back (a trailing incomplete character decodes as U+FFFD)."""
        emitted = self._decode(self._prefix, self._read)
        text = self._decode(self._prefix, len(self._ids))
        self._prefix = self._read = len(self._ids)
        return text[len(emitted):]

    @property
    def ids(self) -> list[int]:
        """All ids fed so far."""
        return list(self._ids)


@functools.cache
def _byte_values() -> dict[str, int]:
    """Byte-level BPE's alphabet (GPT-2's): the character each byte is written as -> the byte.
    Printable Latin-1 bytes stand for themselves; the other 68 are shifted to U+0100 and up."""
    kept = [*range(ord("!"), ord("~") + 1), *range(ord("\u00a1"), ord("\u00ac") + 1),
            *range(ord("\u00ae"), ord("\u00ff") + 1)]
    shifted = [b for b in range(256) if b not in kept]
    table = {chr(b): b for b in kept}
    table.update({chr(256 + k): b for k, b in enumerate(shifted)})
    return table

