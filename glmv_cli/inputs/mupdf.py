"""PyMuPDF, imported quiet: nothing it says may reach stdout, where glmv prints only the answer.

By default PyMuPDF prints some of MuPDF's messages to stdout (an SVG's "ignoring external image"
does, even with its warnings display off); `quiet()` sends them to this logger at debug level and
turns MuPDF's own error and warning printing off. Callers read `TOOLS.mupdf_warnings()` and log
what matters to the user themselves.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


def quiet():
    """The pymupdf module, its messages routed to logging (idempotent, cheap)."""
    import pymupdf

    pymupdf.set_messages(pylogging=True, pylogging_logger=log, pylogging_level=logging.DEBUG)
    pymupdf.TOOLS.mupdf_display_errors(False)
    pymupdf.TOOLS.mupdf_display_warnings(False)
    return pymupdf
