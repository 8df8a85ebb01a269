"""Zip safety checks for OOXML documents (DOCX, XLSX, PPTX).

python-docx, python-pptx and openpyxl open the zip and parse its XML parts
themselves, so everything they would touch is vetted here first: the member
listing (count, names, declared sizes and ratios) before anything is inflated,
then every member is inflated once, in bounded chunks, with the output
*counted* rather than trusted from the headers, and each part is scanned for a
DTD. A zip whose headers lie about sizes is therefore stopped as soon as its
real output passes the bounds, and no parser ever sees a ``<!DOCTYPE``.
"""

from __future__ import annotations

import codecs
import io
import re
import struct
import zipfile
import zlib
from collections.abc import Iterator

from nanobot.files.limits import MIB, FileLimits

CHUNK = 64 * 1024  # inflate granularity: bounds the memory held per step

_EOCD_SIG = b"PK\x05\x06"
_EOCD64_SIG = b"PK\x06\x06"
_CD_SIG = b"PK\x01\x02"
_LOCAL_SIG = b"PK\x03\x04"
_EOCD_SIZE = 22
_EOCD64_LOCATOR_SIZE = 20
_EOCD64_SIZE = 56
_CD_ENTRY_SIZE = 46
_LOCAL_HEADER_SIZE = 30

# Declared encodings we accept: for 8-bit parts those in which "<!DOCTYPE" is
# plain ASCII bytes, for UTF-16 parts (decoded before scanning) UTF-16 only.
# Anything else (UTF-7, EBCDIC, a label contradicting the bytes, ...) could
# hide a DTD from the scan while libxml2 still decodes it, so it is refused.
_ASCII_ENCODINGS = frozenset(
    {"utf-8", "utf8", "us-ascii", "ascii", "iso-8859-1", "latin-1", "latin1"} | {"windows-1252", "cp1252"}
)
_UTF16_ENCODINGS = frozenset({"utf-16", "utf16", "utf-16le", "utf-16be"})
_FORBIDDEN = ("<!doctype", "<!entity")
_DECLARED_ENCODING = re.compile(r"""^\s*<\?xml[^>]*?\bencoding\s*=\s*["']([^"']*)["']""")
_SNIFF_BYTES = 512
# How "<?xml" begins in UTF-32 (with or without a BOM) and in EBCDIC.
_UTF32_STARTS = (b"\x00\x00\xfe\xff", b"\xff\xfe\x00\x00", b"\x00\x00\x00<", b"<\x00\x00\x00")
_EBCDIC_START = b"\x4c\x6f\xa7\x94"


class ZipRejected(Exception):
    """The archive is unsafe or broken; ``reason`` is fit to show the client."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def member_names(data: bytes, max_entries: int) -> Iterator[bytes]:
    """Yield raw member names from the central directory, at most ``max_entries``.

    Reads only the directory records and stops quietly on anything malformed.
    Used by type detection on the event loop, where ``zipfile.ZipFile`` would
    parse every record up front (about a second for a 10 MB zip of empty
    members); this walk costs at most ``max_entries`` small reads.
    """
    eocd = data.rfind(_EOCD_SIG, max(0, len(data) - _EOCD_SIZE - 0xFFFF))
    if eocd < 0 or len(data) - eocd < _EOCD_SIZE:
        return
    entries, cd_size, cd_offset = struct.unpack_from("<HLL", data, eocd + 10)
    end = eocd
    if 0xFFFF == entries or 0xFFFFFFFF in (cd_size, cd_offset):
        record = eocd - _EOCD64_LOCATOR_SIZE - _EOCD64_SIZE
        if record < 0 or data[record : record + 4] != _EOCD64_SIG:
            return
        (cd_size,) = struct.unpack_from("<Q", data, record + 40)
        end = record
    # Measured back from the end record, so data prepended to the zip is fine.
    pos = end - cd_size
    if pos < 0:
        return
    for _ in range(max_entries):
        if pos + _CD_ENTRY_SIZE > end or data[pos : pos + 4] != _CD_SIG:
            return
        name_len, extra_len, comment_len = struct.unpack_from("<3H", data, pos + 28)
        yield data[pos + _CD_ENTRY_SIZE : pos + _CD_ENTRY_SIZE + name_len]
        pos += _CD_ENTRY_SIZE + name_len + extra_len + comment_len


def check_ooxml(data: bytes, limits: FileLimits) -> None:
    """Raise :class:`ZipRejected` unless ``data`` is a zip safe to hand to a parser."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            infos = archive.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError, EOFError):
        raise ZipRejected("not a valid zip archive") from None
    _check_listing(infos, limits)
    view = memoryview(data)
    budget = limits.max_uncompressed_bytes
    for info in infos:
        scanner = _PartScanner(info.filename)
        produced = 0
        crc = 0
        for chunk, consumed in _inflate(view, info):
            produced += len(chunk)
            budget -= len(chunk)
            if produced > info.file_size:
                raise ZipRejected(f"part {_show(info.filename)} inflates past its declared size (possible zip bomb)")
            if budget < 0:
                raise ZipRejected(_too_large(limits))
            if produced > limits.ratio_floor_bytes and produced > limits.max_compression_ratio * max(consumed, 1):
                raise ZipRejected(_ratio_too_high(info.filename))
            crc = zlib.crc32(chunk, crc)
            scanner.feed(chunk)
        scanner.close()
        if produced != info.file_size or crc != info.CRC:
            raise ZipRejected(f"part {_show(info.filename)} is corrupt")


def _check_listing(infos: list[zipfile.ZipInfo], limits: FileLimits) -> None:
    """Judge the archive from its central directory alone, before inflating."""
    if len(infos) > limits.max_zip_members:
        raise ZipRejected(f"the archive has {len(infos)} parts (at most {limits.max_zip_members} allowed)")
    seen: set[str] = set()
    declared = compressed = 0
    for info in infos:
        name = info.filename
        if _unsafe_name(name):
            raise ZipRejected(f"unsafe part name {_show(name)} in the archive")
        # OPC part names compare case-insensitively; two spellings of one name
        # would let the check and the parser look at different bytes.
        key = name.casefold()
        if key in seen:
            raise ZipRejected(f"duplicate part name {_show(name)} in the archive")
        seen.add(key)
        if info.flag_bits & 0x1:
            raise ZipRejected("encrypted archive parts are not supported")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise ZipRejected(f"part {_show(name)} uses an unsupported compression method")
        if info.file_size > limits.ratio_floor_bytes and info.file_size > (
            limits.max_compression_ratio * max(info.compress_size, 1)
        ):
            raise ZipRejected(_ratio_too_high(name))
        declared += info.file_size
        compressed += info.compress_size
    if declared > limits.max_uncompressed_bytes:
        raise ZipRejected(_too_large(limits))
    if declared > limits.ratio_floor_bytes and declared > (limits.max_compression_ratio * max(compressed, 1)):
        raise ZipRejected("the archive's overall compression ratio is too high (possible zip bomb)")


def _inflate(view: memoryview, info: zipfile.ZipInfo) -> Iterator[tuple[bytes, int]]:
    """Yield ``(chunk, compressed bytes consumed so far)`` for one member.

    Output is capped at :data:`CHUNK` bytes per step whatever the input, so
    the caller's counters see a bomb grow a chunk at a time.
    """
    payload = _payload(view, info)
    if info.compress_type == zipfile.ZIP_STORED:
        for start in range(0, len(payload), CHUNK):
            chunk = bytes(payload[start : start + CHUNK])
            yield chunk, start + len(chunk)
        return
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    pos = 0
    try:
        while not inflater.eof:
            if inflater.unconsumed_tail:
                data = inflater.unconsumed_tail
            else:
                data = bytes(payload[pos : pos + CHUNK])
                pos += len(data)
            out = inflater.decompress(data, CHUNK)
            if not out and not data:
                break  # input exhausted before the end of the stream
            if out:
                yield out, pos - len(inflater.unconsumed_tail)
    except zlib.error:
        raise ZipRejected(f"part {_show(info.filename)} is corrupt") from None
    if not inflater.eof:
        raise ZipRejected(f"part {_show(info.filename)} is truncated")


def _payload(view: memoryview, info: zipfile.ZipInfo) -> memoryview:
    """The compressed bytes of a member, located the way ``zipfile`` does."""
    offset = info.header_offset
    header = bytes(view[offset : offset + _LOCAL_HEADER_SIZE])
    if len(header) < _LOCAL_HEADER_SIZE or header[:4] != _LOCAL_SIG:
        raise ZipRejected(f"part {_show(info.filename)} is corrupt")
    name_len, extra_len = struct.unpack_from("<HH", header, 26)
    start = offset + _LOCAL_HEADER_SIZE + name_len + extra_len
    payload = view[start : start + info.compress_size]
    if len(payload) != info.compress_size:
        raise ZipRejected(f"part {_show(info.filename)} is truncated")
    return payload


class _PartScanner:
    """Refuses a DTD in one part, fed the part's bytes as they are inflated.

    The parsers pick parts by content type, not by name, so the content
    decides: any part an XML parser would accept (optional BOM and whitespace,
    then ``<``) is scanned, whatever it is called. Binary parts (images,
    printer settings, which may embed a plist with a DOCTYPE) are skipped.
    UTF-16 parts are decoded before scanning; encodings in which ASCII is not
    itself are refused outright.
    """

    def __init__(self, name: str) -> None:
        self._name = name
        self._head = b""
        self._started = False
        self._decoder: codecs.IncrementalDecoder | None = None
        self._tail = ""
        self._skip = False

    def feed(self, chunk: bytes) -> None:
        if self._skip:
            return
        if self._started:
            self._scan(chunk)
            return
        self._head += chunk
        if len(self._head) >= _SNIFF_BYTES:
            self._start()

    def close(self) -> None:
        if not self._started:
            self._start()
        if self._decoder is not None and not self._skip:
            self._check(self._decoder.decode(b"", final=True))

    def _start(self) -> None:
        self._started = True
        head, self._head = self._head, b""
        if head[:4] in _UTF32_STARTS:
            self._refuse_encoding("UTF-32")
        if head[:4] == _EBCDIC_START:
            self._refuse_encoding("EBCDIC")
        codec = None
        if head[:2] in (b"\xff\xfe", b"\xfe\xff"):
            codec = "utf-16"
        elif head[:4] == b"<\x00?\x00":
            codec = "utf-16-le"
        elif head[:4] == b"\x00<\x00?":
            codec = "utf-16-be"
        if codec is not None:
            self._decoder = codecs.getincrementaldecoder(codec)("replace")
            prefix = self._decoder.decode(head).removeprefix("\ufeff")
        else:
            prefix = head.removeprefix(codecs.BOM_UTF8).decode("latin-1")
        start = prefix.lstrip(" \t\r\n")
        if start and not start.startswith("<"):
            self._skip = True  # no XML parser would read this part
            return
        allowed = _ASCII_ENCODINGS if codec is None else _UTF16_ENCODINGS
        match = _DECLARED_ENCODING.match(prefix)
        if match and match.group(1).strip().lower() not in allowed:
            self._refuse_encoding(match.group(1)[:40])
        self._check(prefix)

    def _scan(self, chunk: bytes) -> None:
        if self._decoder is not None:
            self._check(self._decoder.decode(chunk))
        else:
            # latin-1 maps bytes 1:1, so this is a byte scan that also keeps
            # the carried-over tail in one type.
            self._check(chunk.decode("latin-1"))

    def _check(self, text: str) -> None:
        # The tail carried between chunks catches a marker split across two.
        window = self._tail + text.lower()
        if any(marker in window for marker in _FORBIDDEN):
            raise ZipRejected(
                f"part {_show(self._name)} contains a DOCTYPE or ENTITY declaration, which is not allowed"
            )
        self._tail = window[-16:]

    def _refuse_encoding(self, encoding: str) -> None:
        raise ZipRejected(f"part {_show(self._name)} uses an unsupported XML encoding ({encoding!r})")


def _unsafe_name(name: str) -> bool:
    parts = re.split(r"[/\\]", name)
    return name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name) is not None or ".." in parts


def _show(name: str) -> str:
    """A member name safe to put in a client-visible message."""
    return repr(name[:80])


def _too_large(limits: FileLimits) -> str:
    return f"the archive inflates to more than {limits.max_uncompressed_bytes // MIB} MiB (possible zip bomb)"


def _ratio_too_high(name: str) -> str:
    return f"the compression ratio of part {_show(name)} is too high (possible zip bomb)"
