"""Type detection: the bytes decide, never the name or the declared MIME."""

from __future__ import annotations

import io
import os
import time
import zipfile

import pytest
from builders import Raw, make_docx, make_pdf, make_pptx, make_xlsx, members, saved, write_zip
from PIL import Image

from nanobot.errors import UnsupportedMediaType
from nanobot.files.detect import Detected, UnsupportedFileType, detect, looks_like_text
from nanobot.files.ooxml import member_names


def _image(fmt: str) -> bytes:
    return saved(Image.new("RGB", (4, 3), (200, 30, 30)), format=fmt)


@pytest.mark.parametrize(
    ("fmt", "mime"),
    [("PNG", "image/png"), ("JPEG", "image/jpeg"), ("GIF", "image/gif"), ("WEBP", "image/webp")],
)
def test_each_supported_image_type(fmt: str, mime: str) -> None:
    assert detect(_image(fmt)) == Detected("image", mime)


def test_animated_png_is_reported_as_png() -> None:
    buf = io.BytesIO()
    frames = [Image.new("RGB", (2, 2), c) for c in ((0, 0, 0), (255, 255, 255))]
    frames[0].save(buf, format="PNG", save_all=True, append_images=frames[1:])
    assert detect(buf.getvalue()) == Detected("image", "image/png")


def test_other_images_are_unsupported() -> None:
    with pytest.raises(UnsupportedFileType) as info:
        detect(_image("BMP"))
    assert info.value.detected == "image/bmp"


def test_pdf_named_png_is_a_pdf() -> None:
    # Only bytes are passed in, so a name cannot influence the answer; this is
    # what a "photo.png" upload that really is a PDF looks like to detect().
    assert detect(make_pdf(["hello"])) == Detected("pdf", "application/pdf")


@pytest.mark.parametrize(
    ("builder", "kind"),
    [(make_docx, "docx"), (make_xlsx, "xlsx"), (make_pptx, "pptx")],
)
def test_office_documents_by_member_names(builder, kind: str) -> None:
    found = detect(builder("X"))
    assert found.kind == kind
    assert found.mime.startswith("application/vnd.openxmlformats-officedocument.")


@pytest.mark.parametrize(("builder", "kind"), [(make_docx, "docx"), (make_xlsx, "xlsx")])
def test_office_kind_survives_member_reordering(builder, kind: str) -> None:
    # filetype only peeks at the first local headers; with the main part last
    # and a neutral name first it may say "zip", and the member list decides.
    parts = members(builder("X"))
    ordered = {"aaa/readme.txt": b"hi", **dict(sorted(parts.items(), reverse=True))}
    assert detect(write_zip(ordered)).kind == kind


def test_plain_zip_is_unsupported() -> None:
    data = write_zip({"notes.txt": b"not an office file"})
    with pytest.raises(UnsupportedFileType) as info:
        detect(data)
    assert info.value.detected == "application/zip"
    assert info.value.status == 415
    assert info.value.message == "unsupported file type application/zip"


def test_random_binary_is_unsupported() -> None:
    with pytest.raises(UnsupportedMediaType) as info:
        detect(os.urandom(4096))
    assert info.value.detected == "application/octet-stream"  # type: ignore[attr-defined]
    assert "application/octet-stream" in info.value.message


@pytest.mark.parametrize(
    ("header", "mime"),
    [
        (b"\x7fELF\x02\x01\x01\x00" + b"\x00" * 56, "application/x-executable"),
        (b"MZ\x90\x00\x03\x00\x00\x00\x04\x00" + b"\x00" * 64, "application/x-msdownload"),
    ],
)
def test_executables_are_unsupported(header: bytes, mime: str) -> None:
    with pytest.raises(UnsupportedFileType) as info:
        detect(header + os.urandom(256))
    assert info.value.detected == mime
    assert info.value.message == f"unsupported file type {mime}"


@pytest.mark.parametrize(
    "data",
    [
        b"hello world\n",
        "caf\u00e9, na\u00efve, \u65e5\u672c\u8a9e\n".encode(),
        b"\xef\xbb\xbfwith a BOM\n",
        b"a,b,c\n1,2,3\n",
        b'{"json": true}',
        b"\x1b[31mred log line\x1b[0m\n\tindented\r\n",
        b"",
    ],
)
def test_utf8_text(data: bytes) -> None:
    assert detect(data) == Detected("text", "text/plain")


@pytest.mark.parametrize("data", [b"BM is short for bitmap\n", b"MZ hello world\n", b"{\\rtf1 hi}"])
def test_text_that_starts_like_a_magic_number_is_text(data: bytes) -> None:
    assert detect(data) == Detected("text", "text/plain")


@pytest.mark.parametrize(
    "data",
    [
        b"text with a NUL \x00 byte",
        "latin-1 caf\u00e9".encode("latin-1"),
        "utf-16 text".encode("utf-16"),
        b"lots\x01of\x02odd\x03control\x04bytes\x05here\x06",
    ],
)
def test_not_text(data: bytes) -> None:
    assert not looks_like_text(data)
    with pytest.raises(UnsupportedFileType):
        detect(data)


def test_member_names_agree_with_zipfile() -> None:
    data = make_pptx("X")
    expected = [n.encode() for n in zipfile.ZipFile(io.BytesIO(data)).namelist()]
    assert list(member_names(data, 10_000)) == expected
    assert list(member_names(data, 3)) == expected[:3]
    assert list(member_names(b"PK\x05\x06 broken", 10)) == []


def test_detection_of_a_huge_zip_directory_is_bounded() -> None:
    # 150k empty members: zipfile would parse every record (~1 s); detection
    # must stay cheap because it runs on the event loop.
    empty = Raw(b"", 0, 0, zipfile.ZIP_STORED)
    parts: dict[str, bytes | Raw] = {str(index): empty for index in range(150_000)}
    parts["word/document.xml"] = b"<x/>"
    data = write_zip(parts)
    assert len(zipfile.ZipFile(io.BytesIO(data)).namelist()) == 150_001
    started = time.perf_counter()
    with pytest.raises(UnsupportedFileType):
        detect(data)
    assert time.perf_counter() - started < 0.2
