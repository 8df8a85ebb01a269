"""Generate the upload scenario's ~10 MB PDF once, with pypdf.

The file has a few text-bearing pages (so extraction does real work: fonts,
content streams, text assembly) plus one large uncompressed stream of random
bytes referenced from the catalog, which brings it to the target size without
making the extraction cost grow with it. The result is cached by size in a
temp directory so repeated runs do not regenerate it.
"""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path

from pypdf import PdfWriter
from pypdf.generic import (
    ArrayObject,
    DecodedStreamObject,
    DictionaryObject,
    NameObject,
    NumberObject,
)

DEFAULT_BYTES = 10 * 1024 * 1024 - 64 * 1024  # ~10 MB, under the 10 MiB limit
DEFAULT_PAGES = 40
_LINES_PER_PAGE = 40


def _font() -> DictionaryObject:
    return DictionaryObject(
        {
            NameObject("/Type"): NameObject("/Font"),
            NameObject("/Subtype"): NameObject("/Type1"),
            NameObject("/BaseFont"): NameObject("/Helvetica"),
        }
    )


def _page_text(number: int) -> bytes:
    """A content stream drawing `_LINES_PER_PAGE` lines of words."""
    rng = random.Random(number)
    words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india"]
    ops = [b"BT /F1 10 Tf 12 TL 50 760 Td"]
    for line in range(_LINES_PER_PAGE):
        text = f"Page {number} line {line}: " + " ".join(rng.choice(words) for _ in range(10))
        ops.append(b"(" + text.encode("ascii") + b") Tj T*")
    ops.append(b"ET")
    return b"\n".join(ops)


def build_pdf(path: Path, size: int = DEFAULT_BYTES, pages: int = DEFAULT_PAGES) -> Path:
    """Write a PDF of about `size` bytes (never above it by more than ~2 KB)."""
    writer = PdfWriter()
    font_ref = writer._add_object(_font())
    for number in range(1, pages + 1):
        page = writer.add_blank_page(width=612, height=792)
        content = DecodedStreamObject()
        content.set_data(_page_text(number))
        page[NameObject("/Contents")] = writer._add_object(content)
        page[NameObject("/Resources")] = DictionaryObject(
            {NameObject("/Font"): DictionaryObject({NameObject("/F1"): font_ref})}
        )
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as fh:
        writer.write(fh)
    base = tmp.stat().st_size
    pad = DecodedStreamObject()
    pad.set_data(random.Random(7).randbytes(max(0, size - base - 512)))
    writer._root_object[NameObject("/BenchPadding")] = ArrayObject([writer._add_object(pad), NumberObject(0)])
    with open(tmp, "wb") as fh:
        writer.write(fh)
    os.replace(tmp, path)
    return path


def cached_pdf(size: int = DEFAULT_BYTES, pages: int = DEFAULT_PAGES) -> Path:
    """The bench PDF of this size and page count, generated on first use."""
    path = Path(tempfile.gettempdir()) / f"nanobot-bench-{size}-{pages}.pdf"
    if not path.exists():
        build_pdf(path, size, pages)
    return path


if __name__ == "__main__":
    out = cached_pdf()
    print(out, out.stat().st_size)
