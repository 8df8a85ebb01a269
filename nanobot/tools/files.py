"""The file tools: ``read_file``, ``write_file``, ``edit_file``, ``list_dir``.

Names and arguments are nanobot's. Paths go through :class:`Workspace`
(confinement, the protected database, no symlink races); all file I/O runs in
a thread so a large file never holds the event loop. PDF/DOCX/XLSX/PPTX are
read through the same bounded extraction pool as uploads.
"""

from __future__ import annotations

import asyncio
import os
import stat
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from nanobot.agent.tools import Tool, TurnScope, fail, function_schema, past_deadline
from nanobot.errors import ApiError
from nanobot.files.detect import UnsupportedFileType, detect
from nanobot.files.pool import Extractor
from nanobot.tools.base import BuiltinTool, ToolDeps
from nanobot.tools.paths import PathError, Workspace, open_file, os_error, write_atomic

if TYPE_CHECKING:
    from nanobot.config import Config

_DOCUMENT_MAGIC = (b"%PDF-", b"PK\x03\x04")
_HEAD_BYTES = 8192
# A line window may scan this much of a file; a larger offset is refused.
MAX_SCAN_BYTES = 1024 * 1024 * 1024
MAX_LIST_ENTRIES = 1000
_CHUNK_BYTES = 1024 * 1024


@dataclass(frozen=True)
class FileToolLimits:
    max_chars: int = 16000  # of one read_file result (a window that fits, then a note)
    max_document_bytes: int = 10 * 1024 * 1024  # PDF/Office files handed to the extractor
    max_edit_bytes: int = 16 * 1024 * 1024  # files edit_file loads whole
    max_write_chars: int = 16 * 1024 * 1024

    @classmethod
    def of(cls, config: Config) -> FileToolLimits:
        return cls(max_chars=config.tools.max_result_chars, max_document_bytes=config.api.max_file_bytes)


_PATH = {"type": "string", "description": "File path, relative to the workspace."}


class FileTool(BuiltinTool):
    """A file tool: on with ``tools.file.enabled``; each is built over the same workspace and limits."""

    session_share = ("file-io", 2)  # of the 4 shared I/O threads, one session uses at most 2

    def __init__(self, ws: Workspace, limits: FileToolLimits, extractor: Extractor) -> None:
        self.ws = ws
        self.limits = limits
        self.extractor = extractor  # read_file's documents; the others ignore it

    @classmethod
    def enabled(cls, config: Config) -> bool:
        return config.tools.file.enabled

    @classmethod
    def build(cls, deps: ToolDeps) -> Tool:
        return cls(deps.workspace, FileToolLimits.of(deps.config), deps.extractor)

    async def run(self, args: dict[str, Any], scope: TurnScope) -> str:
        try:
            return await self.call(args, scope)
        except PathError as exc:
            return fail(f"Error: {exc}")

    async def call(self, args: dict[str, Any], scope: TurnScope) -> str:
        raise NotImplementedError


class ReadFileTool(FileTool):
    name = "read_file"
    schema = function_schema(
        name,
        "Read a file's text. PDF, DOCX, XLSX and PPTX files are converted to text. "
        "Use offset and limit to read a window of lines of a long file.",
        {
            "path": _PATH,
            "offset": {"type": "integer", "description": "First line to read, 1-based (default 1)."},
            "limit": {"type": "integer", "description": "How many lines to read (default: as many as fit)."},
        },
        ["path"],
    )

    async def call(self, args: dict[str, Any], scope: TurnScope) -> str:
        offset = _positive(args.get("offset"), "offset", 1) or 1
        limit = _positive(args.get("limit"), "limit", None)
        raw = args.get("path")
        found = await asyncio.to_thread(self._read, raw, scope.session_key, offset, limit)
        if isinstance(found, str):
            return found
        kind, data = found
        try:
            return await self.extractor.extract(kind, data, os.path.basename(str(raw)))
        except ApiError as exc:
            return fail(f"Error: {exc.message}")

    def _read(self, raw: object, key: str, offset: int, limit: int | None) -> str | tuple[str, bytes]:
        """The text, or ``(kind, bytes)`` of a document for the extractor."""
        real = self.ws.resolve(raw, key)
        fd = open_file(self.ws, real, str(raw))
        with os.fdopen(fd, "rb") as f:
            head = f.read(_HEAD_BYTES)
            if head.startswith(_DOCUMENT_MAGIC):  # PDF, or a zip that may be DOCX/XLSX/PPTX
                return self._document(f, head, str(raw))
            if not _text_head(head):
                import filetype  # on first use, like files/detect.py

                guess = filetype.guess(head)
                what = f" ({guess.mime})" if guess is not None else ""
                return fail(
                    f"Error: '{raw}' is a binary file{what}; read_file reads text and PDF/DOCX/XLSX/PPTX documents."
                )
            f.seek(0)
            return self._lines(f, str(raw), offset, limit)

    def _document(self, f: Any, head: bytes, shown: str) -> str | tuple[str, bytes]:
        size = os.fstat(f.fileno()).st_size
        if size > self.limits.max_document_bytes:
            return fail(
                f"Error: '{shown}' is a {size}-byte document; at most {self.limits.max_document_bytes} bytes are read."
            )
        data = head + f.read(self.limits.max_document_bytes + 1 - len(head))
        try:
            found = detect(data)
        except UnsupportedFileType as exc:
            return fail(f"Error: '{shown}' is a binary file ({exc.detected}); read_file reads text and documents.")
        if found.kind in ("image", "text"):
            return fail(f"Error: '{shown}' is a binary file ({found.mime}); read_file reads text and documents.")
        return found.kind, data

    def _lines(self, f: Any, shown: str, offset: int, limit: int | None) -> str:
        """Lines ``offset``.. of the file, as many as ``limit`` and the size cap allow.

        Read a block at a time (newlines counted in C, not line by line in
        Python), keeping at most what the window needs in memory.
        """
        budget = self.limits.max_chars
        line, scanned, rest, last = 1, 0, b"", b""
        while line < offset:  # skip to line ``offset``
            block = f.read(_CHUNK_BYTES)
            if not block:
                count = line - 1 + (bool(last) and not last.endswith(b"\n"))
                return fail(f"Error: offset {offset} is past the end of '{shown}' ({count} lines).")
            scanned += len(block)
            if past_deadline():
                return fail(f"Error: scanning '{shown}' took longer than the tool timeout and was stopped.")
            if scanned > MAX_SCAN_BYTES:
                return fail(f"Error: '{shown}' is too large to scan to line {offset}; read an earlier window.")
            newlines = block.count(b"\n")
            if line + newlines < offset:
                line, last = line + newlines, block
                continue
            pos = -1
            for _ in range(offset - line):
                pos = block.index(b"\n", pos + 1)
            rest, line = block[pos + 1 :], offset
        chunks, size, newlines, eof = [rest], len(rest), rest.count(b"\n"), False
        want = budget * 4 + 4  # bytes enough for ``budget`` characters
        while size < want and (limit is None or newlines < limit):
            block = f.read(min(_CHUNK_BYTES, want - size))
            if not block:
                eof = True
                break
            chunks.append(block)
            size += len(block)
            newlines += block.count(b"\n")
        raw = b"".join(chunks)
        if not raw:
            return (
                "(empty file)"
                if offset == 1
                else fail(f"Error: offset {offset} is past the end of '{shown}' ({offset - 1} lines).")
            )
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            # A character cut by the window's end is fine; anything else is not text.
            if eof or exc.start < len(raw) - 3 or exc.reason != "unexpected end of data":
                return fail(
                    f"Error: '{shown}' is not UTF-8 text; read_file reads text and PDF/DOCX/XLSX/PPTX documents."
                )
            text = raw[: exc.start].decode("utf-8")
        if "\x00" in text:
            return fail(f"Error: '{shown}' is a binary file (it holds NUL bytes).")
        more = not eof
        if limit is not None:
            parts = text.split("\n", limit)
            if len(parts) > limit:
                text = "\n".join(parts[:limit]) + "\n"
                more = True
        if len(text) > budget:
            cut = text.rfind("\n", 0, budget)
            text = text[: cut + 1] if cut >= 0 else text[:budget]  # one line longer than it all: its head
            more = True
        if not more:
            return text
        last_line = offset + max(1, text.count("\n") + (not text.endswith("\n"))) - 1
        return (
            text + f"\n[... showing lines {offset}-{last_line}; the file goes on: "
            f"read_file with offset={last_line + 1} for more]"
        )


class WriteFileTool(FileTool):
    name = "write_file"
    schema = function_schema(
        name,
        "Write text to a file, replacing it if it exists. Parent folders are created.",
        {"path": _PATH, "content": {"type": "string", "description": "The whole new content."}},
        ["path", "content"],
    )

    async def call(self, args: dict[str, Any], scope: TurnScope) -> str:
        content = args.get("content")
        if not isinstance(content, str):
            return fail("Error: 'content' must be a string.")
        if len(content) > self.limits.max_write_chars:
            return fail(f"Error: 'content' is longer than {self.limits.max_write_chars} characters.")
        raw = args.get("path")
        await asyncio.to_thread(self._write, raw, scope.session_key, content)
        return f"Wrote {len(content)} characters to {raw}."

    def _write(self, raw: object, key: str, content: str) -> None:
        real = self.ws.resolve(raw, key, write=True)
        write_atomic(self.ws, real, str(raw), _encode(content))


class EditFileTool(FileTool):
    name = "edit_file"
    schema = function_schema(
        name,
        "Replace old_text with new_text in a file. old_text must occur exactly once: "
        "include enough surrounding lines to make it unique.",
        {
            "path": _PATH,
            "old_text": {"type": "string", "description": "The exact text to replace."},
            "new_text": {"type": "string", "description": "The replacement text."},
        },
        ["path", "old_text", "new_text"],
    )

    async def call(self, args: dict[str, Any], scope: TurnScope) -> str:
        old, new = args.get("old_text"), args.get("new_text")
        if not isinstance(old, str) or not old:
            return fail("Error: 'old_text' must be a non-empty string.")
        if not isinstance(new, str):
            return fail("Error: 'new_text' must be a string.")
        if len(new) > self.limits.max_write_chars:
            return fail(f"Error: 'new_text' is longer than {self.limits.max_write_chars} characters.")
        raw = args.get("path")
        return await asyncio.to_thread(self._edit, raw, scope.session_key, old, new)

    def _edit(self, raw: object, key: str, old: str, new: str) -> str:
        real = self.ws.resolve(raw, key, write=True)
        fd = open_file(self.ws, real, str(raw))
        with os.fdopen(fd, "rb") as f:
            data = f.read(self.limits.max_edit_bytes + 1)
        if len(data) > self.limits.max_edit_bytes:
            return fail(
                f"Error: '{raw}' is larger than {self.limits.max_edit_bytes} bytes; edit_file loads files whole."
            )
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            return fail(f"Error: '{raw}' is not UTF-8 text; edit_file edits text files.")
        count = text.count(old)
        if count == 0:
            return fail(f"Error: old_text was not found in {raw}.")
        if count > 1:
            return fail(
                f"Error: old_text was found {count} times in {raw}; include more context so it occurs exactly once."
            )
        write_atomic(self.ws, real, str(raw), _encode(text.replace(old, new, 1)))
        return f"Edited {raw}."


class ListDirTool(FileTool):
    name = "list_dir"
    schema = function_schema(
        name,
        "List a folder: one entry per line, folders end with '/'.",
        {"path": {"type": "string", "description": "Folder path, relative to the workspace (default '.')."}},
        [],
    )

    async def call(self, args: dict[str, Any], scope: TurnScope) -> str:
        raw = args.get("path")
        if raw is None or raw == "":
            raw = "."
        return await asyncio.to_thread(self._list, raw, scope.session_key)

    def _list(self, raw: object, key: str) -> str:
        real = self.ws.resolve(raw, key)
        entries: list[str] = []
        total = 0
        with self.ws.open_dir(real) as dfd:
            try:
                with os.scandir(dfd) as it:
                    for entry in it:
                        total += 1
                        if total % 4096 == 0 and past_deadline():
                            return fail(f"Error: listing '{raw}' took longer than the tool timeout and was stopped.")
                        if len(entries) < MAX_LIST_ENTRIES:
                            is_dir = stat.S_ISDIR(entry.stat(follow_symlinks=False).st_mode)
                            entries.append(entry.name + ("/" if is_dir else ""))
            except OSError as exc:
                raise os_error(exc, str(raw)) from None
        if not entries:
            return f"{raw} is empty."
        entries.sort()
        text = "\n".join(entries)
        if total > len(entries):
            text += f"\n[... {total - len(entries)} more entries not shown]"
        return text


def _positive(value: object, name: str, default: int | None) -> int | None:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise PathError(f"'{name}' must be a positive integer.")
    return value


def _text_head(head: bytes) -> bool:
    """No NUL, and UTF-8 (a character cut at the end of the sample is fine)."""
    if b"\x00" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.start >= len(head) - 3 and exc.reason == "unexpected end of data"
    return True


def _encode(text: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise PathError("the text contains characters that are not valid Unicode (lone surrogates).") from None
