"""Turn a document's bytes into bounded plain text (pure and synchronous).

Meant to run inside a worker process (see :mod:`nanobot.files.pool`): the
libraries are imported lazily so the server process never loads them, and
every reader stops at the caps in :class:`FileLimits` instead of reading a
hostile document to its end. OOXML zips pass :func:`check_ooxml` before any
library opens them.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from typing import Any

from nanobot.files.limits import FileLimits
from nanobot.files.ooxml import ZipRejected, check_ooxml

_LABELS = {"pdf": "PDF", "docx": "DOCX", "xlsx": "XLSX", "pptx": "PPTX", "text": "text"}
_W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"
_MC_FALLBACK = "{http://schemas.openxmlformats.org/markup-compatibility/2006}Fallback"


class ExtractionError(Exception):
    """The document cannot be read; ``reason`` is fit to show the client."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def preload() -> None:
    """Import the document libraries now, so a job's clock never pays for it."""
    import docx  # noqa: F401
    import openpyxl  # noqa: F401
    import pptx  # noqa: F401
    import pypdf  # noqa: F401


def openpyxl_uses_defusedxml() -> bool:
    """True when openpyxl parses worksheets with defusedxml (it must, here)."""
    # loaded in the extraction workers only, never in the server process
    import openpyxl.xml
    import openpyxl.xml.functions as functions

    return bool(openpyxl.xml.DEFUSEDXML) and functions.iterparse.__module__.startswith("defusedxml")


def extract_text(kind: str, data: bytes, limits: FileLimits) -> str:
    """The text of a ``kind`` document, at most ``limits.max_chars`` plus a marker.

    Raises :class:`ExtractionError` for anything that stops the read: an
    unsafe zip, a broken file, a password, or a library failure.
    """
    reader = _READERS.get(kind)
    if reader is None:
        raise ExtractionError(f"unsupported document kind {kind!r}")
    if kind in ("docx", "xlsx", "pptx"):
        try:
            check_ooxml(data, limits)
        except ZipRejected as err:
            raise ExtractionError(err.reason) from None
    out = _Text(limits.max_chars)
    try:
        reader(data, limits, out)
    except ExtractionError:
        raise
    except MemoryError:
        raise ExtractionError("the document needs too much memory to read") from None
    except RecursionError:
        raise ExtractionError("the document is nested too deeply") from None
    except Exception as err:
        # Library errors on hostile input are many and unstable; the client
        # gets a stable reason, the details stay in the chained exception.
        raise ExtractionError(f"not a valid {_LABELS[kind]} file") from err
    return out.result()


class _Text:
    """Collects blocks of text until ``max_chars``; readers stop once it is full."""

    def __init__(self, max_chars: int) -> None:
        self._max = max_chars
        self._blocks: list[str] = []
        self._size = 0
        self._notes: list[str] = []
        self.stopped_early = False

    @property
    def full(self) -> bool:
        return self._size > self._max

    def add(self, block: str) -> None:
        if block:
            self._size += len(block) + (1 if self._blocks else 0)
            self._blocks.append(block)

    def note(self, line: str) -> None:
        """A line kept after the text whatever its length (e.g. a page cap)."""
        self._notes.append(line)

    def result(self) -> str:
        text = "\n".join(self._blocks)
        if len(text) > self._max:
            more = len(text) - self._max
            # A reader that stopped early only knows a lower bound.
            count = f"at least {more}" if self.stopped_early else str(more)
            text = f"{text[: self._max]}\n[... truncated: {count} more characters]"
        return "\n".join(filter(None, [text, *self._notes]))


def _read_text(data: bytes, limits: FileLimits, out: _Text) -> None:
    out.add(data.decode("utf-8-sig", errors="replace"))


def _read_pdf(data: bytes, limits: FileLimits, out: _Text) -> None:
    # loaded in the extraction workers only, never in the server process
    import pypdf

    reader = pypdf.PdfReader(io.BytesIO(data), strict=False)
    if reader.is_encrypted:
        try:
            opened = bool(reader.decrypt(""))
        except Exception:
            opened = False
        if not opened:
            raise ExtractionError("the PDF is password-protected")
    total = len(reader.pages)
    wanted = min(total, limits.max_pages)
    failed = 0
    for number in range(1, wanted + 1):
        if out.full:
            out.stopped_early = True
            break
        try:
            text = reader.pages[number - 1].extract_text() or ""
        except (MemoryError, RecursionError):
            raise
        except Exception:
            # One odd page should not cost the rest of the document.
            failed += 1
            out.add(f"## Page {number}\n[this page could not be read]")
            continue
        if text.strip():
            out.add(f"## Page {number}\n{text.strip()}")
    if wanted and failed == wanted:
        raise ExtractionError("no page of the PDF could be read")
    if total > wanted:
        out.note(f"[... only the first {wanted} of {total} pages were read]")


def _read_docx(data: bytes, limits: FileLimits, out: _Text) -> None:
    # loaded in the extraction workers only, never in the server process
    import docx

    body = docx.Document(io.BytesIO(data)).element.body
    cells = _Budget(limits.max_xlsx_cells)
    # Walking the body's children keeps paragraphs and tables in document order.
    for child in body.iterchildren():
        if out.full:
            out.stopped_early = True
            break
        if cells.spent:
            out.stopped_early = True
            out.note("[... table cell limit reached; the rest of the document was not read]")
            break
        if child.tag == f"{_W}tbl":
            out.add(_docx_table(child, cells))
        elif child.tag == f"{_W}p":
            out.add(_docx_paragraph(child))
        else:  # content controls and the like wrap ordinary paragraphs
            out.add("\n".join(filter(None, map(_docx_paragraph, child.iter(f"{_W}p")))))


def _docx_paragraph(p: Any) -> str:
    """Runs, tabs and breaks, text boxes included once.

    Word stores a text box twice (a DrawingML choice and a VML fallback);
    text under ``mc:Fallback`` is skipped so it is not read twice.
    """
    has_fallback = p.find(f".//{_MC_FALLBACK}") is not None
    parts = []
    for el in p.iter(f"{_W}t", f"{_W}tab", f"{_W}br", f"{_W}cr"):
        if has_fallback and any(a.tag == _MC_FALLBACK for a in el.iterancestors()):
            continue
        if el.tag == f"{_W}t":
            parts.append(el.text or "")
        else:
            parts.append("\t" if el.tag == f"{_W}tab" else "\n")
    return "".join(parts)


def _docx_table(tbl: Any, cells: _Budget) -> str:
    """Rows as tab-separated cells; python-docx's cell grid is quadratic on merges."""
    rows: list[str] = []
    for tr in tbl.iterchildren(f"{_W}tr"):
        row = []
        for tc in tr.iterchildren(f"{_W}tc"):
            if not cells.take(1):
                return "\n".join(rows)
            parts = [
                _docx_table(el, cells) if el.tag == f"{_W}tbl" else _docx_paragraph(el)
                for el in tc.iterchildren(f"{_W}p", f"{_W}tbl")
            ]
            row.append(" ".join(p for p in parts if p).replace("\n", " "))
        if any(row):
            rows.append("\t".join(row))
    return "\n".join(rows)


def _read_xlsx(data: bytes, limits: FileLimits, out: _Text) -> None:
    # loaded in the extraction workers only, never in the server process
    import openpyxl

    if not openpyxl_uses_defusedxml():
        raise ExtractionError("spreadsheets are disabled: defusedxml is not active for openpyxl")
    book = openpyxl.load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    try:
        sheets = book.worksheets
        cells = _Budget(limits.max_xlsx_cells)
        for sheet in sheets[: limits.max_pages]:
            if out.full or cells.spent:
                out.stopped_early = True
                break
            # The declared dimension is attacker-chosen; without it rows are
            # as wide as their real cells.
            sheet.reset_dimensions()
            out.add(f"## Sheet: {sheet.title}")
            for row in sheet.iter_rows(values_only=True):
                if out.full:
                    out.stopped_early = True
                    return
                # Empty rows cost a step too, so a gap of a million rows is capped.
                if not cells.take(max(len(row), 1)):
                    out.stopped_early = True
                    out.note("[... cell limit reached; the rest of the workbook was not read]")
                    return
                values = [_cell(v) for v in row]
                while values and not values[-1]:
                    values.pop()
                if values:
                    out.add("\t".join(values))
        if len(sheets) > limits.max_pages:
            out.note(f"[... only the first {limits.max_pages} of {len(sheets)} sheets were read]")
    finally:
        book.close()


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).replace("\t", " ").replace("\n", " ")


def _read_pptx(data: bytes, limits: FileLimits, out: _Text) -> None:
    # loaded in the extraction workers only, never in the server process
    import pptx
    from pptx.shapes.group import GroupShape

    slides = pptx.Presentation(io.BytesIO(data)).slides
    total = len(slides)
    cells = _Budget(limits.max_xlsx_cells)
    for number, slide in enumerate(slides, start=1):
        if number > limits.max_pages:
            out.note(f"[... only the first {limits.max_pages} of {total} slides were read]")
            break
        if out.full or cells.spent:
            out.stopped_early = True
            break
        out.add(f"## Slide {number}")
        for text in _slide_texts(slide.shapes, cells, GroupShape):
            out.add(text)
        if slide.has_notes_slide:
            frame = slide.notes_slide.notes_text_frame
            if frame is not None and frame.text.strip():
                out.add(f"Notes: {frame.text.strip()}")


def _slide_texts(shapes: Any, cells: _Budget, group_type: type[Any]) -> Iterator[str]:
    """Text of shapes in slide order, descending into groups without recursion."""
    stack: list[Iterator[Any]] = [iter(shapes)]
    while stack:
        shape = next(stack[-1], None)
        if shape is None:
            stack.pop()
            continue
        if isinstance(shape, group_type):
            stack.append(iter(shape.shapes))
        elif getattr(shape, "has_table", False):
            rows = []
            for row in shape.table.rows:
                if not cells.take(len(row.cells)):
                    break
                rows.append("\t".join(c.text.replace("\n", " ") for c in row.cells))
            yield "\n".join(rows)
        elif getattr(shape, "has_text_frame", False) and shape.text_frame.text.strip():
            yield shape.text_frame.text.strip()


class _Budget:
    """A countdown shared by all tables/sheets of one document."""

    def __init__(self, amount: int) -> None:
        self._left = amount

    @property
    def spent(self) -> bool:
        return self._left <= 0

    def take(self, amount: int) -> bool:
        self._left -= amount
        return self._left >= 0


_READERS: dict[str, Callable[[bytes, FileLimits, _Text], None]] = {
    "text": _read_text,
    "pdf": _read_pdf,
    "docx": _read_docx,
    "xlsx": _read_xlsx,
    "pptx": _read_pptx,
}
