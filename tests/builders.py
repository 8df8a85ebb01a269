"""Document and archive builders shared by the ``test_files_*`` tests.

Every document is made in the test run with the real libraries (or, for PDF
and hostile zips, by hand with a few lines of format syntax), so no binary
fixtures are checked in. The module-level ``hook_target`` is what the pool
tests run in worker processes: spawned workers import it by name.
"""

from __future__ import annotations

import io
import os
import signal
import struct
import time
import zipfile
import zlib
from collections.abc import Mapping
from typing import Any

import docx
import openpyxl
import pptx
from common import MIB
from pptx.util import Inches

from nanobot.files.extract import ExtractionError, extract_text
from nanobot.files.limits import FileLimits

W_NS = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"
DOC_HEAD = f'<?xml version="1.0" encoding="UTF-8"?><w:document xmlns:w="{W_NS}"><w:body>'.encode()
DOC_TAIL = b"</w:body></w:document>"


# --------------------------------------------------------------- documents


def make_pdf(page_texts: list[str]) -> bytes:
    """A valid PDF, one page per text, each drawn with a built-in font."""
    objects: dict[int, bytes] = {
        1: b"<< /Type /Catalog /Pages 2 0 R >>",
        3: b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    }
    kids = []
    for index, text in enumerate(page_texts):
        page, content = 4 + 2 * index, 5 + 2 * index
        kids.append(f"{page} 0 R")
        objects[page] = (
            "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792]"
            f" /Resources << /Font << /F1 3 0 R >> >> /Contents {content} 0 R >>"
        ).encode()
        stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
        objects[content] = b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream)
    objects[2] = f"<< /Type /Pages /Kids [{' '.join(kids)}] /Count {len(kids)} >>".encode()

    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = {}
    for number in sorted(objects):
        offsets[number] = len(out)
        out += b"%d 0 obj\n%s\nendobj\n" % (number, objects[number])
    xref = len(out)
    size = max(objects) + 1
    out += b"xref\n0 %d\n0000000000 65535 f \n" % size
    out += b"".join(b"%010d 00000 n \n" % offsets[n] for n in range(1, size))
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (size, xref)
    return bytes(out)


def saved(document: Any, *args: Any, **kwargs: Any) -> bytes:
    """The bytes of a python-docx/openpyxl/python-pptx/PIL object's ``save``."""
    buf = io.BytesIO()
    document.save(buf, *args, **kwargs)
    return buf.getvalue()


def make_docx(marker: str) -> bytes:
    """Paragraph, table, paragraph: the marker is spread over all three."""

    document = docx.Document()
    document.add_heading(f"Title {marker}-HEAD", level=1)
    document.add_paragraph(f"Before the table {marker}-P1")
    table = document.add_table(rows=2, cols=2)
    table.cell(0, 0).text = "name"
    table.cell(0, 1).text = "value"
    table.cell(1, 0).text = f"{marker}-CELL"
    table.cell(1, 1).text = "42"
    document.add_paragraph(f"After the table {marker}-P2")
    return saved(document)


def make_xlsx(marker: str) -> bytes:
    """Two sheets with a marker in each."""

    book = openpyxl.Workbook()
    first = book.active
    assert first is not None  # a new workbook has one sheet
    first.title = "Sales"
    first.append(["region", "amount"])
    first.append([f"{marker}-S1", 12.5])
    first.append(["north", 3])
    second = book.create_sheet("Costs")
    second.append(["item", f"{marker}-S2"])
    return saved(book)


def make_pptx(marker: str) -> bytes:
    """One slide with a text box, a table and speaker notes."""

    deck = pptx.Presentation()
    slide = deck.slides.add_slide(deck.slide_layouts[6])  # blank
    box = slide.shapes.add_textbox(Inches(1), Inches(1), Inches(4), Inches(1))
    box.text_frame.text = f"Hello {marker}-BOX"
    table = slide.shapes.add_table(2, 2, Inches(1), Inches(3), Inches(4), Inches(1)).table
    table.cell(0, 0).text = "k"
    table.cell(1, 1).text = f"{marker}-TABLE"
    slide.notes_slide.notes_text_frame.text = f"Speaker {marker}-NOTES"
    deck.slides.add_slide(deck.slide_layouts[6])
    return saved(deck)


# ----------------------------------------------------------- raw zip kit


class Raw:
    """A member given as an already-compressed payload with chosen headers."""

    def __init__(self, payload: bytes, crc: int, size: int, method: int = zipfile.ZIP_DEFLATED):
        self.payload, self.crc, self.size, self.method = payload, crc, size, method


def deflate(data: bytes) -> Raw:
    c = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    return Raw(c.compress(data) + c.flush(), zlib.crc32(data), len(data))


def padded_xml(prefix: bytes, suffix: bytes, mib: int) -> Raw:
    """``prefix + mib MiB of spaces + suffix``, deflated without deflating it all.

    Each 1 MiB block is compressed once, ends on a full flush (byte aligned,
    no back-references) and is repeated, so a 300 MiB part costs ~300 KB and
    a fraction of a second to build.
    """

    def block(data: bytes, final: bool) -> bytes:
        c = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
        return c.compress(data) + (c.flush() if final else c.flush(zlib.Z_FULL_FLUSH))

    spaces = b" " * MIB
    stream = block(prefix, False) + block(spaces, False) * mib + block(suffix, True)
    crc = zlib.crc32(prefix)
    for _ in range(mib):
        crc = zlib.crc32(spaces, crc)
    crc = zlib.crc32(suffix, crc)
    return Raw(stream, crc, len(prefix) + mib * MIB + len(suffix))


def members(zip_bytes: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(zip_bytes)) as archive:
        return {info.filename: archive.read(info) for info in archive.infolist()}


def write_zip(parts: Mapping[str, bytes | Raw]) -> bytes:
    """A zip with exactly the given headers (no data descriptors, no zip64)."""
    out = bytearray()
    central = bytearray()
    for name, part in parts.items():
        raw = part if isinstance(part, Raw) else deflate(part)
        encoded = name.encode()
        offset = len(out)
        # Both headers carry: flags, method, mod time/date, crc, sizes, name length, extra length.
        shared = (0, raw.method, 0, 0x21, raw.crc, len(raw.payload), raw.size, len(encoded), 0)
        out += struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, *shared)  # local: version needed
        out += encoded + raw.payload
        # central: version made by and needed, then comment, disk, attributes, the local header's offset
        central += struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 20, 20, *shared, 0, 0, 0, 0, offset)
        central += encoded
    start = len(out)
    out += central
    count = len(parts) & 0xFFFF  # wraps past 65535 without zip64; readers go by the size
    out += struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, count, count, len(central), start, 0)
    return bytes(out)


def replace_part(zip_bytes: bytes, name: str, part: bytes | Raw) -> bytes:
    parts: dict[str, bytes | Raw] = dict(members(zip_bytes))
    parts[name] = part
    return write_zip(parts)


def lie_about_size(raw: Raw, declared: int) -> Raw:
    """The same compressed bytes, with headers claiming a small size."""
    return Raw(raw.payload, raw.crc, declared, raw.method)


# ------------------------------------------------------- worker test hook


def hook_target(kind: str, data: bytes, limits: FileLimits) -> str:
    """Runs in pool workers: test-only kinds, else the real extractor."""
    if kind == "sleep":
        time.sleep(float(data))
        return "slept"
    if kind == "spin":
        deadline = time.monotonic() + float(data)
        while time.monotonic() < deadline:
            pass
        return "spun"
    if kind == "pid":
        return str(os.getpid())
    if kind == "crash":
        os.kill(os.getpid(), signal.SIGKILL)
    if kind == "memory":
        # Fails under the worker's address-space cap without touching the pages.
        return f"allocated {len(bytearray(int(data)))} bytes"
    if kind.startswith("rss:"):
        # Extract, then report the worker's peak RSS so a test can bound it.
        # VmHWM, not ru_maxrss: the latter keeps the forked parent's
        # footprint from before the worker exec'd the interpreter.
        try:
            result = extract_text(kind[4:], data, limits)
        except ExtractionError as err:
            result = f"refused: {err.reason}"
        with open("/proc/self/status") as status:
            peak_kib = next(line.split()[1] for line in status if line.startswith("VmHWM:"))
        return f"{peak_kib}|{result}"
    return extract_text(kind, data, limits)
