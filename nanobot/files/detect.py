"""Decide what an uploaded file is from its bytes alone.

The filename and the client's declared MIME type are never consulted: a PDF
named ``photo.png`` is a PDF. This runs on the event loop, so every step is
bounded: ``filetype`` looks at the first 8 KiB, the zip probe reads at most
``max_zip_members`` directory records, and the text probe is one C-speed
decode of the data.
"""

from __future__ import annotations

from dataclasses import dataclass

from nanobot.errors import UnsupportedMediaType
from nanobot.files.limits import FileLimits
from nanobot.files.ooxml import member_names

DOCX_MIME = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
XLSX_MIME = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
PPTX_MIME = "application/vnd.openxmlformats-officedocument.presentationml.presentation"

# What filetype reports -> the MIME we hand on. An APNG is a valid PNG, and
# providers only know image/png.
_IMAGE_MIMES = {
    "image/png": "image/png",
    "image/apng": "image/png",
    "image/jpeg": "image/jpeg",
    "image/gif": "image/gif",
    "image/webp": "image/webp",
}
_OOXML_BY_MIME = {DOCX_MIME: "docx", XLSX_MIME: "xlsx", PPTX_MIME: "pptx"}
# The main part each kind must carry; the member list decides, not filetype's
# peek at the first local headers.
_OOXML_MARKERS = {
    b"word/document.xml": ("docx", DOCX_MIME),
    b"xl/workbook.xml": ("xlsx", XLSX_MIME),
    b"ppt/presentation.xml": ("pptx", PPTX_MIME),
}

_UTF8_BOM = b"\xef\xbb\xbf"
# C0 controls that do not occur in ordinary text. Tab, LF, VT, FF, CR and ESC
# (ANSI colours in logs) are text; NUL is refused separately.
_ODD_CONTROLS = bytes([*range(0x01, 0x09), *range(0x0E, 0x1B), *range(0x1C, 0x20), 0x7F])


@dataclass(frozen=True)
class Detected:
    """A supported file: ``kind`` picks the handling, ``mime`` is what it is."""

    kind: str  # "image", "pdf", "docx", "xlsx", "pptx" or "text"
    mime: str


class UnsupportedFileType(UnsupportedMediaType):
    """415 for bytes we do not handle; ``detected`` is what they look like."""

    def __init__(self, detected: str) -> None:
        super().__init__(f"unsupported file type {detected}", code="unsupported_file_type")
        self.detected = detected


def detect(data: bytes, *, max_zip_members: int = FileLimits.max_zip_members) -> Detected:
    """Classify ``data`` or raise :class:`UnsupportedFileType` (a 415)."""
    import filetype  # on first use: a server that is sent no file never loads it

    guess = filetype.guess(data) if data else None
    mime = guess.mime if guess is not None else None

    if mime in _IMAGE_MIMES:
        return Detected("image", _IMAGE_MIMES[mime])
    if mime == "application/pdf":
        return Detected("pdf", mime)
    if mime == "application/zip" or mime in _OOXML_BY_MIME:
        found = _ooxml_kind(data, max_zip_members)
        if found is not None:
            return found
        if mime in _OOXML_BY_MIME:
            # The local headers say Office but the directory is unreadable: a
            # broken document, which extraction reports as a 422 naming it.
            return Detected(_OOXML_BY_MIME[mime], mime)
        raise UnsupportedFileType(mime)
    # Some magic numbers are short printable strings ("BM", "MZ", "ID3",
    # "{\rtf"); bytes that are clean UTF-8 text are text whatever they start with.
    if looks_like_text(data):
        return Detected("text", "text/plain")
    raise UnsupportedFileType(mime or "application/octet-stream")


def looks_like_text(data: bytes) -> bool:
    """UTF-8 (optionally with a BOM), no NUL, and at most ~1% odd control bytes."""
    body = data[len(_UTF8_BOM) :] if data.startswith(_UTF8_BOM) else data
    if b"\x00" in body:
        return False
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return False
    odd = len(body) - len(body.translate(None, _ODD_CONTROLS))
    return odd <= 2 + len(body) // 100


def _ooxml_kind(data: bytes, max_members: int) -> Detected | None:
    """The OOXML kind named by the zip's member list, inflating nothing."""
    for name in member_names(data, max_members):
        hit = _OOXML_MARKERS.get(name)
        if hit is not None:
            return Detected(*hit)
    return None
