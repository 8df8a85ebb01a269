"""An incoming file checked, typed from its bytes, and read: the API's uploads and ``nanobot agent --file``.

Images become data URLs for the turn's LLM call; documents become text.
Base64 work on big payloads, extraction and saving run off the event loop.
The file is saved under the media directory; removing it when its request
fails is the caller's part (``stages/extract_files.py``).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from nanobot.context import Attachment, IncomingFile
from nanobot.errors import ApiError, InvalidRequest, TooLarge, UnsupportedMediaType
from nanobot.files.detect import detect
from nanobot.files.storage import remove_uploads, safe_display_name, save_upload
from nanobot.storage.safedir import UnsafeDir

if TYPE_CHECKING:
    from nanobot.services import Services

T = TypeVar("T")
log = logging.getLogger("nanobot.files")

OFFLOAD_BYTES = 256 * 1024
# binascii holds the GIL for a whole call: 10 MB is ~30 ms in one piece, which
# a worker thread would spend with the event loop locked out all the same. In
# pieces of this size (a multiple of 4 characters, and of 3 bytes) the loop
# gets the GIL back between pieces.
B64_PIECE = 3 * 4 * 64 * 1024


def decode_base64(text: str, param: str) -> bytes:
    for candidate in (text, None):
        if candidate is None:
            candidate = "".join(text.split())  # some clients fold base64 into lines
        try:
            return b"".join(
                base64.b64decode(candidate[i : i + B64_PIECE], validate=True)
                for i in range(0, len(candidate), B64_PIECE)
            )
        except (binascii.Error, ValueError):
            continue
    raise InvalidRequest("Malformed base64 in data URL.", param=param, code="invalid_base64")


def _encode_base64(data: bytes) -> str:
    # bytes.join lets go of the GIL for large results; str.join would not.
    pieces = [base64.b64encode(data[i : i + B64_PIECE]) for i in range(0, len(data), B64_PIECE)]
    return b"".join(pieces).decode("ascii")


async def _off_loop_if_large(size: int, fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)``: in the CPU thread pool when ``size`` bytes make it worth the hand-off."""
    return await asyncio.to_thread(fn, *args) if size > OFFLOAD_BYTES else fn(*args)


async def read_file(services: Services, f: IncomingFile) -> Attachment:
    """Check, type and read one incoming file."""
    limit = services.config.api.max_file_bytes
    name = safe_display_name(f.filename, "image" if f.from_image_part else "file")
    data = f.data
    if f.chunks is not None:
        # bytes.join lets go of the GIL while it copies a large result.
        data = await _off_loop_if_large(sum(map(len, f.chunks)), b"".join, f.chunks)
    elif data is None:
        text = f.base64 or ""
        # 4 base64 characters carry 3 bytes: refuse before decoding anything.
        if len(text) * 3 // 4 > limit + 3:
            raise _too_large(name, limit, f.param)
        data = await _off_loop_if_large(len(text), decode_base64, text, f.param)
    if len(data) > limit:
        raise _too_large(name, limit, f.param)
    if not data:
        raise InvalidRequest(f"File '{name}' is empty.", param=f.param, code="empty_file")
    try:
        detected = detect(data)
    except UnsupportedMediaType as exc:
        found = getattr(exc, "detected", "unknown")
        raise UnsupportedMediaType(
            f"File '{name}' has an unsupported type ({found}).", param=f.param, code="unsupported_file_type"
        ) from None
    if f.from_image_part and detected.kind != "image":
        raise UnsupportedMediaType(
            f"The image_url part holds {detected.mime}, not a PNG, JPEG, GIF or WebP image.",
            param=f.param,
            code="unsupported_file_type",
        )
    try:
        path = await asyncio.to_thread(save_upload, services.media_dir, f.filename or name, data)
    except UnsafeDir as exc:  # the folder was swapped for a link or someone else's: never written through
        log.error("upload refused: %s", exc.strerror or exc)
        raise ApiError("The server cannot store uploads right now (its uploads folder is unsafe).") from None
    try:
        if detected.kind == "image":
            b64 = f.base64 if f.base64 is not None and "\n" not in f.base64 else None
            if b64 is None:
                b64 = await _off_loop_if_large(len(data), _encode_base64, data)
            data_url = f"data:{detected.mime};base64,{b64}"
            return Attachment(name, "image", detected.mime, data_url=data_url, path=str(path))
        started = time.perf_counter()
        text = await services.extractor.extract(detected.kind, data, name, saved=path)
        services.metrics.extraction.labels(detected.kind).observe(time.perf_counter() - started)
        return Attachment(name, detected.kind, detected.mime, text=text, path=str(path))
    except BaseException:  # unreadable (422), or the request ended meanwhile
        remove_uploads([path])
        raise


def _too_large(name: str, limit: int, param: str) -> TooLarge:
    return TooLarge(f"File '{name}' is larger than the limit of {limit} bytes.", param=param, code="file_too_large")
