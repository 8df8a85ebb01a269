"""A fetched body as readable text; runs in a worker process of the extractor pool.

HTML goes through trafilatura (main content as Markdown: headings, lists,
tables and code kept; navigation, footers, scripts and styles dropped), with
trafilatura's whole-page text as the fallback when it finds no main content.
Chosen by measuring on the pages of ``nanobot/testing/html_pages.py`` (see docs/tools.md):
it kept every must-have line and none of the page chrome, where html2text
and BeautifulSoup kept all the chrome and readability lost content.

The caller (:mod:`nanobot.tools.web_fetch`) runs :func:`convert` through
:class:`nanobot.files.pool.Extractor`, so a hostile page (huge, deeply
nested, badly encoded) costs a worker process bounded in wall-clock time and
memory, never the event loop.
"""

from __future__ import annotations

import codecs
import re

from nanobot.files.extract import ExtractionError
from nanobot.files.limits import FileLimits

# Past this size trafilatura's fallback extractors cost more than they find.
_FAST_FROM_BYTES = 512 * 1024
_META_CHARSET = re.compile(rb"""<meta[^>]+charset=["']?([A-Za-z0-9_.:-]+)""", re.IGNORECASE)


def kind_for(media_type: str, charset: str | None) -> str:
    """The job kind handed to :func:`convert`: ``html`` or ``text``, with the charset."""
    base = "html" if media_type in ("text/html", "application/xhtml+xml") else "text"
    return f"{base};{charset or ''}"


def convert(kind: str, data: bytes, limits: FileLimits) -> str:
    """Readable text of ``data`` (a ``kind_for`` kind), at most ``limits.max_chars`` plus a note."""
    base, _, charset = kind.partition(";")
    if base not in ("html", "text"):
        raise ExtractionError(f"unsupported page kind {base!r}")
    if not charset and base == "html":
        found = _META_CHARSET.search(data[:4096])
        charset = found.group(1).decode("ascii") if found else ""
    text = decode(data, charset)
    if base == "html":
        try:
            text = html_to_text(text, fast=len(data) > _FAST_FROM_BYTES)
        except RecursionError:
            raise ExtractionError("the page is nested too deeply") from None
        except MemoryError:
            raise ExtractionError("the page needs too much memory to read") from None
    if len(text) > limits.max_chars:
        left = len(text) - limits.max_chars
        text = text[: limits.max_chars] + f"\n[... {left} more characters of page text left out]"
    return text


def decode(data: bytes, charset: str) -> str:
    """Bytes as text: the declared charset when Python knows it, else UTF-8; bad bytes replaced."""
    try:
        codec = codecs.lookup(charset).name if charset else "utf-8"
    except LookupError:
        codec = "utf-8"
    if codec == "utf-8" and data.startswith(codecs.BOM_UTF8):
        codec = "utf-8-sig"
    return data.decode(codec, errors="replace")


def html_to_text(html: str, *, fast: bool = False) -> str:
    # Imported here, in the extraction worker: the server process never pays
    # for trafilatura and lxml (about 0.2 s and 30 MB each time a worker starts).
    import trafilatura

    text = trafilatura.extract(
        html,
        output_format="markdown",
        include_tables=True,
        include_comments=False,
        favor_recall=not fast,
        fast=fast,
    )
    if not text:  # no main content found: all the page's text, scripts and styles dropped
        text = trafilatura.html2txt(html) or trafilatura.html2txt(f"<html><body>{html}</body></html>")
    return text.strip()
