"""Text from outside (a command line, a pipe, a JSON body) as well-formed Unicode, so that no
undecodable byte reaches the tokenizer or a file we write as a crash."""

from __future__ import annotations


def well_formed(text: str) -> str:
    """`text` as Unicode the tokenizer takes: a lone UTF-16 surrogate (an undecodable byte of a
    command line, Python's surrogateescape; half of an emoji a JavaScript client cut) becomes
    U+FFFD, and a surrogate pair sent as two escapes becomes its one character."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
