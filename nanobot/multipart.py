"""multipart/form-data parsed while the body arrives (``python-multipart``).

Each network chunk is parsed as it comes in, so no step ever holds the whole
body: a 10 MB upload costs many small steps on the loop instead of one long
one, and the per-file limit and the part count are enforced before the rest
of the body is even read.
"""

from __future__ import annotations

import re

from python_multipart import MultipartParser
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import parse_options_header

from nanobot.context import IncomingFile
from nanobot.errors import InvalidRequest, TooLarge

_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
MAX_PARTS = 100
MAX_FIELD_BYTES = 1024 * 1024  # a form field (message, session_id ...) is text
FILE_FIELDS = ("files", "file", "files[]")


def media_type(content_type: str) -> str:
    """``Content-Type``'s media type, lowercase, without parameters ("" when absent)."""
    return content_type.split(";", 1)[0].strip().lower()


class MultipartReader:
    """Feeds body chunks to the parser; ``result()`` gives the fields and files."""

    def __init__(self, content_type: str, max_file_bytes: int) -> None:
        _, params = parse_options_header(content_type)
        boundary = params.get(b"boundary")
        if not boundary:
            raise InvalidRequest("multipart/form-data needs a boundary.", code="invalid_multipart")
        self._max_file_bytes = max_file_bytes
        self.fields: dict[str, list[str]] = {}
        self.files: list[IncomingFile] = []
        self._parts = 0
        self._ended = False
        self._header_field = b""
        self._header_value = b""
        self._headers: dict[bytes, bytes] = {}
        self._chunks: list[bytes] = []
        self._size = 0
        self._name = ""
        self._filename: str | None = None
        self._parser = MultipartParser(
            boundary,
            {
                "on_part_begin": self._part_begin,
                "on_header_field": self._on_header_field,
                "on_header_value": self._on_header_value,
                "on_header_end": self._header_end,
                "on_headers_finished": self._headers_finished,
                "on_part_data": self._part_data,
                "on_part_end": self._part_end,
                "on_end": self._end,
            },
        )

    def feed(self, chunk: bytes) -> None:
        try:
            self._parser.write(chunk)
        except MultipartParseError as exc:
            raise InvalidRequest(f"Malformed multipart body: {exc}", code="invalid_multipart") from None

    def result(self) -> tuple[dict[str, list[str]], list[IncomingFile]]:
        if not self._ended:
            raise InvalidRequest("Malformed multipart body: no final boundary.", code="invalid_multipart")
        return self.fields, self.files

    # --- parser callbacks ---------------------------------------------------

    def _part_begin(self) -> None:
        self._parts += 1
        if self._parts > MAX_PARTS:
            raise InvalidRequest(f"Too many multipart parts (at most {MAX_PARTS}).", code="too_many_parts")
        self._headers = {}
        self._chunks = []
        self._size = 0

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _header_end(self) -> None:
        self._headers[self._header_field.strip().lower()] = self._header_value.strip()
        self._header_field = self._header_value = b""

    def _headers_finished(self) -> None:
        disposition = self._headers.get(b"content-disposition")
        if disposition is None:
            raise InvalidRequest("A multipart part has no Content-Disposition.", code="invalid_multipart")
        kind, params = parse_options_header(disposition)
        if kind != b"form-data" or b"name" not in params:
            raise InvalidRequest("A multipart part is not a named form-data field.", code="invalid_multipart")
        self._name = params[b"name"].decode("utf-8", "replace")
        if not self._name or _CONTROL.search(self._name):
            raise InvalidRequest("A form field name is empty or holds control characters.", code="invalid_multipart")
        raw = params.get(b"filename")
        self._filename = None if raw is None else raw.decode("utf-8", "replace")
        if self._filename is not None and self._name not in FILE_FIELDS:
            raise InvalidRequest(f"Unexpected file field '{self._name}' (use 'files').", param=self._name)
        if self._filename is None and self._name in FILE_FIELDS:
            # A file sent without a filename would otherwise be read as a
            # text field and silently dropped from the turn.
            raise InvalidRequest("A 'files' part needs a filename.", param="files", code="invalid_multipart")

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        self._size += end - start
        if self._filename is not None:
            if self._size > self._max_file_bytes:
                raise TooLarge(
                    f"File '{self._filename}' is larger than the limit of {self._max_file_bytes} bytes.",
                    param=f"files[{len(self.files)}]",
                    code="file_too_large",
                )
        elif self._size > MAX_FIELD_BYTES:
            raise TooLarge(f"Form field '{self._name}' is too large.", param=self._name, code="field_too_large")
        self._chunks.append(data[start:end])

    def _part_end(self) -> None:
        chunks, self._chunks = self._chunks, []
        if self._filename is not None:
            index = len(self.files)
            self.files.append(IncomingFile(param=f"files[{index}]", filename=self._filename, chunks=chunks))
            return
        data = b"".join(chunks)  # a form field: at most MAX_FIELD_BYTES
        try:
            value = data.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidRequest(f"Form field '{self._name}' is not UTF-8 text.", param=self._name) from None
        self.fields.setdefault(self._name, []).append(value)

    def _end(self) -> None:
        self._ended = True
