"""extract_text and the OOXML zip checks, called directly (no worker pool)."""

from __future__ import annotations

import io
import os
import random
import time
import tracemalloc
import zipfile

import openpyxl
import pptx
import pytest
from builders import (
    DOC_HEAD,
    DOC_TAIL,
    W_NS,
    Raw,
    deflate,
    lie_about_size,
    make_docx,
    make_pdf,
    make_pptx,
    make_xlsx,
    members,
    padded_xml,
    replace_part,
    saved,
    write_zip,
)
from pypdf import PdfWriter

from nanobot.files.extract import ExtractionError, extract_text, openpyxl_uses_defusedxml
from nanobot.files.limits import MIB, FileLimits
from nanobot.files.ooxml import ZipRejected, check_ooxml

LIMITS = FileLimits()


def _refusal(kind: str, data: bytes, limits: FileLimits = LIMITS) -> str:
    with pytest.raises(ExtractionError) as info:
        extract_text(kind, data, limits)
    return info.value.reason


# ------------------------------------------------------------ happy paths


def test_pdf_pages_in_order() -> None:
    text = extract_text("pdf", make_pdf(["first PDFMARK-1", "second PDFMARK-2"]), LIMITS)
    assert "PDFMARK-1" in text and "PDFMARK-2" in text
    assert text.index("## Page 1") < text.index("PDFMARK-1") < text.index("## Page 2")


def test_docx_paragraphs_and_tables_in_document_order() -> None:
    text = extract_text("docx", make_docx("DOCXMARK"), LIMITS)
    order = [text.index(f"DOCXMARK-{part}") for part in ("HEAD", "P1", "CELL", "P2")]
    assert order == sorted(order)
    assert "DOCXMARK-CELL\t42" in text  # cells of a row are tab-separated


def test_docx_text_box_is_read_once() -> None:
    mc = "http://schemas.openxmlformats.org/markup-compatibility/2006"
    box = "<w:txbxContent><w:p><w:r><w:t>BOXMARK</w:t></w:r></w:p></w:txbxContent>"
    paragraph = (
        f'<w:p><w:r><w:t xml:space="preserve">before </w:t></w:r><w:r>'
        f'<mc:AlternateContent xmlns:mc="{mc}"><mc:Choice Requires="wps">{box}</mc:Choice>'
        f"<mc:Fallback>{box}</mc:Fallback></mc:AlternateContent></w:r>"
        f"<w:r><w:tab/><w:t>after</w:t></w:r></w:p>"
    )
    xml = DOC_HEAD + paragraph.encode() + DOC_TAIL
    text = extract_text("docx", replace_part(make_docx("B"), "word/document.xml", xml), LIMITS)
    assert text == "before BOXMARK\tafter"


def test_xlsx_sheets_with_headers() -> None:
    text = extract_text("xlsx", make_xlsx("XLSXMARK"), LIMITS)
    assert text.splitlines()[:3] == ["## Sheet: Sales", "region\tamount", "XLSXMARK-S1\t12.5"]
    assert "north\t3" in text  # integral floats print as integers
    assert "## Sheet: Costs\nitem\tXLSXMARK-S2" in text


def test_openpyxl_parses_with_defusedxml() -> None:
    assert openpyxl_uses_defusedxml()


def test_pptx_text_box_table_and_notes() -> None:
    text = extract_text("pptx", make_pptx("PPTXMARK"), LIMITS)
    assert text.startswith("## Slide 1\n")
    for part in ("BOX", "TABLE", "NOTES"):
        assert f"PPTXMARK-{part}" in text
    assert "Notes: Speaker PPTXMARK-NOTES" in text
    assert "## Slide 2" in text


def test_text_strips_the_bom() -> None:
    assert extract_text("text", b"\xef\xbb\xbfhello TXTMARK", LIMITS) == "hello TXTMARK"


def test_text_is_truncated_with_a_marker() -> None:
    text = extract_text("text", b"x" * 1500, FileLimits(max_chars=1000))
    assert text == "x" * 1000 + "\n[... truncated: 500 more characters]"


def test_long_documents_stop_early_and_say_so() -> None:
    data = make_pdf([f"page {n} " + "y" * 80 for n in range(1, 41)])
    text = extract_text("pdf", data, FileLimits(max_chars=500))
    body, marker = text.rsplit("\n", 1)
    assert len(body) == 500
    assert marker.startswith("[... truncated: at least ") and marker.endswith(" more characters]")


def test_unknown_kind() -> None:
    assert "unsupported document kind" in _refusal("exe", b"MZ")


# ------------------------------------------------------------ broken input


@pytest.mark.parametrize(
    ("kind", "data"),
    [
        ("pdf", b"%PDF-1.7\n" + random.Random(1).randbytes(2000)),
        ("pdf", make_pdf(["cut short"])[:60]),
        ("docx", b"PK\x03\x04" + random.Random(2).randbytes(500)),
        ("xlsx", write_zip({"xl/workbook.xml": b"<not really/>"})),
        ("pptx", write_zip({"[Content_Types].xml": b"<Types/>"})),
    ],
    # Named, not by their bytes: every test process must collect the same ids (pytest-xdist).
    ids=["pdf-noise", "pdf-cut", "docx-noise", "xlsx-empty", "pptx-empty"],
)
def test_corrupt_documents_raise_extraction_error(kind: str, data: bytes) -> None:
    reason = _refusal(kind, data)
    assert reason  # a short reason for the client, never a traceback


def test_pdf_page_cap_on_a_3000_page_pdf() -> None:
    data = make_pdf([f"PAGEMARK-{n}-END" for n in range(1, 3001)])
    started = time.perf_counter()
    text = extract_text("pdf", data, FileLimits(max_pages=500))
    assert time.perf_counter() - started < 10
    assert "PAGEMARK-500-END" in text and "PAGEMARK-501-END" not in text
    assert text.endswith("[... only the first 500 of 3000 pages were read]")


def test_blank_page_pdf_from_pypdf_writer() -> None:

    writer = PdfWriter()
    for _ in range(3000):
        writer.add_blank_page(width=72, height=72)
    buf = io.BytesIO()
    writer.write(buf)
    started = time.perf_counter()
    text = extract_text("pdf", buf.getvalue(), LIMITS)
    assert time.perf_counter() - started < 10
    assert text == "[... only the first 500 of 3000 pages were read]"


def test_pptx_slide_cap() -> None:

    deck = pptx.Presentation()
    for n in range(1, 8):
        slide = deck.slides.add_slide(deck.slide_layouts[5])  # title only
        slide.shapes.title.text = f"SLIDEMARK-{n}-END"
    text = extract_text("pptx", saved(deck), FileLimits(max_pages=3))
    assert "SLIDEMARK-3-END" in text and "SLIDEMARK-4-END" not in text
    assert text.endswith("[... only the first 3 of 7 slides were read]")


def test_xlsx_cell_cap_ignores_the_declared_dimension() -> None:

    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    sheet["A1"] = "CELLMARK-FIRST"
    sheet.cell(row=1_048_576, column=16_384, value="CELLMARK-LAST")  # dimension A1:XFD1048576
    data = saved(book)
    started = time.perf_counter()
    text = extract_text("xlsx", data, FileLimits(max_xlsx_cells=10_000))
    assert time.perf_counter() - started < 5
    assert "CELLMARK-FIRST" in text and "CELLMARK-LAST" not in text
    assert text.endswith("[... cell limit reached; the rest of the workbook was not read]")


def test_xlsx_sheet_cap() -> None:

    book = openpyxl.Workbook()
    for n in range(1, 5):
        sheet = book.active if n == 1 else book.create_sheet()
        assert sheet is not None
        sheet.title = f"S{n}"
        sheet["A1"] = f"SHEETMARK-{n}-END"
    text = extract_text("xlsx", saved(book), FileLimits(max_pages=2))
    assert "SHEETMARK-2-END" in text and "SHEETMARK-3-END" not in text
    assert text.endswith("[... only the first 2 of 4 sheets were read]")


# --------------------------------------------------------------- zip bombs


def test_rebuilt_zip_is_still_accepted() -> None:
    # The hostile cases below are built with the same zip writer; this shows
    # the refusals come from the checks, not from the writer.
    data = write_zip(members(make_docx("REBUILT")))
    assert "REBUILT-CELL" in extract_text("docx", data, LIMITS)


def test_zip_bomb_refused_from_headers_with_bounded_memory() -> None:
    bomb = replace_part(make_docx("B"), "word/document.xml", padded_xml(DOC_HEAD, DOC_TAIL, 300))
    assert len(bomb) < 1 * MIB  # ~300 MiB of XML in a few hundred KB
    tracemalloc.start()
    try:
        started = time.perf_counter()
        reason = _refusal("docx", bomb)
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "zip bomb" in reason
    assert elapsed < 1
    assert peak < 20 * MIB


def test_total_size_refused_even_when_the_ratio_is_allowed() -> None:
    bomb = replace_part(make_docx("B"), "word/document.xml", padded_xml(DOC_HEAD, DOC_TAIL, 300))
    reason = _refusal("docx", bomb, FileLimits(max_compression_ratio=10_000.0))
    assert reason == "the archive inflates to more than 200 MiB (possible zip bomb)"


def test_lying_size_header_is_caught_while_inflating() -> None:
    raw = padded_xml(DOC_HEAD, DOC_TAIL, 300)
    bomb = replace_part(make_docx("B"), "word/document.xml", lie_about_size(raw, 20_000))
    assert zipfile.ZipFile(io.BytesIO(bomb)).getinfo("word/document.xml").file_size == 20_000
    tracemalloc.start()
    try:
        started = time.perf_counter()
        reason = _refusal("docx", bomb)
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert reason == "part 'word/document.xml' inflates past its declared size (possible zip bomb)"
    assert elapsed < 1
    assert peak < 20 * MIB


def test_ratio_enforced_on_real_input_while_inflating() -> None:
    # The headers claim 10 MiB from ~1 MiB (ratio ~10), but the deflate stream
    # is ~10 KB followed by filler: the real ratio shows only while inflating.
    raw = padded_xml(DOC_HEAD, DOC_TAIL, 10)
    filler = os.urandom(MIB)
    padded = Raw(raw.payload + filler, raw.crc, raw.size)
    bomb = replace_part(make_docx("B"), "word/document.xml", padded)
    with pytest.raises(ZipRejected, match="compression ratio"):
        check_ooxml(bomb, LIMITS)


def test_xlsx_bomb_is_refused() -> None:
    namespace = b"http://schemas.openxmlformats.org/spreadsheetml/2006/main"
    head = b'<?xml version="1.0"?><worksheet xmlns="%s"><sheetData>' % namespace
    raw = padded_xml(head, b"</sheetData></worksheet>", 300)
    book = make_xlsx("B")
    assert "zip bomb" in _refusal("xlsx", replace_part(book, "xl/worksheets/sheet1.xml", raw))
    lying = replace_part(book, "xl/worksheets/sheet1.xml", lie_about_size(raw, 5_000))
    assert "inflates past its declared size" in _refusal("xlsx", lying)


def test_too_many_members() -> None:
    parts: dict[str, bytes | Raw] = dict(members(make_docx("B")))
    parts.update({f"customXml/item{n}.bin": b"" for n in range(5001)})
    assert "parts (at most 5000 allowed)" in _refusal("docx", write_zip(parts))


@pytest.mark.parametrize("name", ["../evil.xml", "word/../../evil.xml", "/etc/evil.xml", "C:/evil.xml", "\\evil.xml"])
def test_unsafe_member_names(name: str) -> None:
    data = write_zip({**members(make_docx("B")), name: b"<x/>"})
    assert "unsafe part name" in _refusal("docx", data)


def test_duplicate_member_names() -> None:
    data = write_zip({**members(make_docx("B")), "WORD/document.xml": b"<x/>"})
    assert "duplicate part name" in _refusal("docx", data)


def test_corrupt_member_crc() -> None:
    part = deflate(DOC_HEAD + b"<w:p/>" + DOC_TAIL)
    broken = Raw(part.payload, part.crc ^ 1, part.size)
    data = replace_part(make_docx("B"), "word/document.xml", broken)
    assert "is corrupt" in _refusal("docx", data)


# ---------------------------------------------------------- DTD / entities

BILLION_LAUGHS = (
    b'<?xml version="1.0"?>\n<!DOCTYPE lolz [\n <!ENTITY lol "lol">\n'
    b' <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">\n'
    b' <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">\n]>\n'
)


def _doc_with_dtd(encoding: str = "utf-8") -> bytes:
    paragraph = "<w:p><w:r><w:t>&lol3;</w:t></w:r></w:p>"
    body = f'<w:document xmlns:w="{W_NS}"><w:body>{paragraph}</w:body></w:document>'
    xml = BILLION_LAUGHS.decode() + body
    if encoding != "utf-8":
        xml = xml.replace('version="1.0"', f'version="1.0" encoding="{encoding}"')
    return xml.encode(encoding)


def test_billion_laughs_docx_is_refused() -> None:
    data = replace_part(make_docx("B"), "word/document.xml", _doc_with_dtd())
    assert "DOCTYPE" in _refusal("docx", data)


def test_utf16_dtd_is_refused() -> None:
    data = replace_part(make_docx("B"), "word/document.xml", _doc_with_dtd("utf-16"))
    assert "DOCTYPE" in _refusal("docx", data)


@pytest.mark.parametrize(
    "xml",
    [
        b'<?xml version="1.0" encoding="UTF-7"?>+ADw-!DOCTYPE x+AD4-<x/>',
        # An 8-bit part labelled UTF-16 could be read as UTF-16 after the label.
        b'<?xml version="1.0" encoding="UTF-16"?><\x00!\x00D\x00O\x00C\x00',
        '<?xml version="1.0" encoding="utf-8"?><x/>'.encode("utf-16"),
        '<?xml version="1.0"?><x/>'.encode("utf-32"),
    ],
)
def test_exotic_or_contradictory_xml_encoding_is_refused(xml: bytes) -> None:
    data = replace_part(make_docx("B"), "word/document.xml", xml)
    assert "unsupported XML encoding" in _refusal("docx", data)


def test_utf16_document_without_dtd_passes_the_check() -> None:
    xml = (DOC_HEAD + b"<w:p><w:r><w:t>UTF16MARK</w:t></w:r></w:p>" + DOC_TAIL).decode()
    utf16 = xml.replace('encoding="UTF-8"', 'encoding="UTF-16"').encode("utf-16")
    check_ooxml(replace_part(make_docx("B"), "word/document.xml", utf16), LIMITS)


def test_dtd_in_a_part_not_named_xml_is_refused() -> None:
    # Parsers pick parts by content type, so the name must not matter.
    data = write_zip({**members(make_docx("B")), "customXml/item1.bin": BILLION_LAUGHS + b"<x/>"})
    assert "DOCTYPE" in _refusal("docx", data)


def test_dtd_split_across_inflate_chunks_is_found() -> None:
    xml = b'<?xml version="1.0"?>' + b" " * (64 * 1024 - 25) + b"<!DOCTYPE x>" + b"<x/>"
    data = replace_part(make_docx("B"), "word/document.xml", xml)
    assert "DOCTYPE" in _refusal("docx", data)


def test_xlsx_and_pptx_dtds_are_refused() -> None:
    sheet = BILLION_LAUGHS + b"<worksheet/>"
    book = replace_part(make_xlsx("B"), "xl/worksheets/sheet1.xml", sheet)
    assert "DOCTYPE" in _refusal("xlsx", book)
    deck = replace_part(make_pptx("B"), "ppt/presentation.xml", BILLION_LAUGHS + b"<p/>")
    assert "DOCTYPE" in _refusal("pptx", deck)


def test_binary_part_with_an_embedded_plist_dtd_is_fine() -> None:
    # python-pptx's own template ships printer settings holding an Apple plist
    # with a DOCTYPE after a binary header; no XML parser reads that part.
    assert "PPTXMARK-BOX" in extract_text("pptx", make_pptx("PPTXMARK"), LIMITS)
