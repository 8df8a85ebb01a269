"""Uploads through the server: JSON data URLs and multipart, to the upstream."""

from __future__ import annotations

import concurrent.futures
import os
import time
import uuid

import pytest
import requests
from builders import DOC_HEAD, DOC_TAIL, MIB, make_docx, make_pdf, make_pptx, make_xlsx, padded_xml, replace_part, saved
from common import CHAT, data_url
from PIL import Image
from servers import ServerProcess, merge, upstream_config

from nanobot.multipart import MultipartReader


def image_bytes(fmt: str) -> bytes:
    return saved(Image.new("RGB", (4, 4), (200, 10, 10)), format=fmt)


def post_json(server, parts, sid=None, **extra):
    body = {"messages": [{"role": "user", "content": parts}], "session_id": sid or uuid.uuid4().hex, **extra}
    return requests.post(server.url + CHAT, json=body, timeout=60)


def file_part(name, data, mime="application/octet-stream"):
    return {"type": "file", "file": {"filename": name, "file_data": data_url(data, mime)}}


def user_text_sent(upstream):
    content = upstream.requests()[-1]["body"]["messages"][-1]["content"]
    if isinstance(content, str):
        return content
    return "\n".join(p.get("text", "") for p in content if p["type"] == "text")


@pytest.fixture(scope="module")
def files_server(upstream):

    server = ServerProcess(merge(upstream_config(upstream.url), {"api": {"maxFileBytes": 10 * MIB}}))
    yield server
    server.stop()


@pytest.mark.parametrize(
    "name, build, markers",
    [
        ("report.pdf", lambda m: make_pdf([f"first {m}-PDF1", f"second {m}-PDF2"]), ["-PDF1", "-PDF2"]),
        ("memo.docx", make_docx, ["-HEAD", "-P1", "-CELL", "-P2"]),
        ("book.xlsx", make_xlsx, ["-S1", "-S2"]),
        ("deck.pptx", make_pptx, ["-BOX", "-TABLE", "-NOTES"]),
        ("notes.md", lambda m: f"# Notes\n\n{m}-MD ünïcødé\n".encode(), ["-MD ünïcødé"]),
    ],
)
def test_documents_reach_the_model(files_server, upstream, name, build, markers):
    marker = "MK" + uuid.uuid4().hex[:8]
    r = post_json(files_server, [{"type": "text", "text": "summarize"}, file_part(name, build(marker))])
    assert r.status_code == 200, r.text
    sent = user_text_sent(upstream)
    assert sent.startswith("summarize\n\n[file: " + name + "]\n")
    assert sent.endswith("\n[/file]")
    for m in markers:
        assert marker + m in sent


@pytest.mark.parametrize(
    "fmt, mime", [("PNG", "image/png"), ("JPEG", "image/jpeg"), ("GIF", "image/gif"), ("WEBP", "image/webp")]
)
def test_images_go_as_image_url_and_history_keeps_placeholder(files_server, upstream, fmt, mime):
    sid = uuid.uuid4().hex
    data = image_bytes(fmt)
    # The declared MIME is wrong on purpose: the bytes decide.
    parts = [
        {"type": "text", "text": "what is this"},
        {"type": "image_url", "image_url": {"url": data_url(data, "application/octet-stream")}},
    ]
    assert post_json(files_server, parts, sid).status_code == 200
    content = upstream.requests()[-1]["body"]["messages"][-1]["content"]
    urls = [p["image_url"]["url"] for p in content if p["type"] == "image_url"]
    assert urls == [data_url(data, mime)]
    assert {"type": "text", "text": "[image: image]"} in content
    post_json(files_server, "and now?", sid)
    history = upstream.requests()[-1]["body"]["messages"]
    assert history[1]["content"] == "what is this\n\n[image: image]"
    assert "base64" not in str(history[1:])


def test_mislabelled_and_default_prompt_multipart(files_server, upstream):
    marker = "MK" + uuid.uuid4().hex[:8]
    pdf = make_pdf([f"{marker}-REAL-PDF"])
    png = image_bytes("PNG")
    files = [
        ("files", ("photo.png", pdf, "image/png")),
        ("files", ("pic.bin", png, "text/plain")),
        ("files", ("memo.docx", make_docx(marker), "application/pdf")),
    ]
    r = requests.post(files_server.url + CHAT, files=files, data={"session_id": uuid.uuid4().hex}, timeout=60)
    assert r.status_code == 200, r.text
    content = upstream.requests()[-1]["body"]["messages"][-1]["content"]
    text = content[0]["text"]
    assert text.startswith("Please analyze the uploaded file(s).\n\n[file: photo.png]\n")
    assert f"{marker}-REAL-PDF" in text and f"{marker}-CELL" in text
    assert {"type": "text", "text": "[image: pic.bin]"} in content
    assert any(p["type"] == "image_url" and p["image_url"]["url"].startswith("data:image/png;base64,") for p in content)


def test_big_multipart_image_arrives_byte_exact(files_server, upstream):
    # Several MB arrive in many network chunks, kept in pieces by the reader
    # and joined off the loop: the model must still see every byte in order.
    png = saved(Image.frombytes("RGB", (1024, 1024), os.urandom(3 * 1024 * 1024)), format="PNG", compress_level=0)
    assert len(png) > 3 * MIB
    r = requests.post(
        files_server.url + CHAT,
        files={"files": ("noise.png", png, "image/png")},
        data={"message": "look", "session_id": uuid.uuid4().hex},
        timeout=60,
    )
    assert r.status_code == 200, r.text
    content = upstream.requests()[-1]["body"]["messages"][-1]["content"]
    assert [p["image_url"]["url"] for p in content if p["type"] == "image_url"] == [data_url(png, "image/png")]


def test_multipart_reader_keeps_a_file_in_its_pieces():

    body = (
        b'--B\r\nContent-Disposition: form-data; name="files"; filename="a.bin"\r\n\r\n'
        + bytes(range(256)) * 1024
        + b"\r\n--B--\r\n"
    )
    reader = MultipartReader("multipart/form-data; boundary=B", max_file_bytes=MIB)
    for i in range(0, len(body), 4096):
        reader.feed(body[i : i + 4096])
    _, (f,) = reader.result()
    assert f.data is None and len(f.chunks) > 1
    assert b"".join(f.chunks) == bytes(range(256)) * 1024


def test_multipart_fields_and_stream(files_server, upstream):
    sid = uuid.uuid4().hex
    r = requests.post(
        files_server.url + CHAT,
        timeout=60,
        files={"files": ("a.txt", b"plain text body", "text/plain")},
        data={"message": "read it", "session_id": sid, "model": "scripted", "stream": "true"},
    )
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/event-stream")
    assert r.text.endswith("data: [DONE]\n\n")
    assert user_text_sent(upstream) == "read it\n\n[file: a.txt]\nplain text body\n[/file]"
    r = requests.post(
        files_server.url + CHAT, files={"files": ("a.txt", b"x", "text/plain")}, data={"model": "other"}, timeout=60
    )
    assert r.status_code == 400 and r.json()["error"]["code"] == "model_not_found"
    r = requests.post(files_server.url + CHAT, files={"other": ("a.txt", b"x", "text/plain")}, timeout=60)
    assert r.status_code == 400


def test_multipart_needs_message_or_files(files_server):
    r = requests.post(files_server.url + CHAT, files={"session_id": (None, "x")}, timeout=30)
    assert r.status_code == 400 and r.json()["error"]["param"] == "message"


def test_echo_names_files(echo_server):
    r = requests.post(
        echo_server.url + CHAT,
        timeout=60,
        data={"message": "hello"},
        files=[("files", ("one.txt", b"first", "text/plain")), ("files", ("two.png", image_bytes("PNG"), "image/png"))],
    )
    assert r.json()["choices"][0]["message"]["content"] == "hello\n[received file: one.txt]\n[received image: two.png]"


def test_size_limits(files_server):
    big = b"a" * (10 * MIB + 1)
    r = requests.post(files_server.url + CHAT, files={"files": ("big.txt", big, "text/plain")}, timeout=60)
    assert r.status_code == 413 and r.json()["error"]["code"] == "file_too_large"
    assert "big.txt" in r.json()["error"]["message"]
    r = post_json(files_server, [{"type": "text", "text": "x"}, file_part("big.txt", big)])
    assert r.status_code == 413 and r.json()["error"]["param"] == "messages[0].content[1].file.file_data"
    exact = b"a" * (10 * MIB)
    r = requests.post(files_server.url + CHAT, files={"files": ("exact.txt", exact, "text/plain")}, timeout=60)
    assert r.status_code == 200


def test_unsupported_types(files_server):
    elf = b"\x7fELF\x02\x01\x01" + bytes(200)
    r = requests.post(files_server.url + CHAT, files={"files": ("tool", elf)}, timeout=30)
    err = r.json()["error"]
    assert r.status_code == 415 and "tool" in err["message"] and "application/x-executable" in err["message"]
    r = post_json(
        files_server,
        [
            {"type": "text", "text": "x"},
            {"type": "image_url", "image_url": {"url": data_url(make_pdf(["x"]), "image/png")}},
        ],
    )
    assert r.status_code == 415 and "application/pdf" in r.json()["error"]["message"]
    r = post_json(files_server, [{"type": "text", "text": "x"}, file_part("noise.bin", bytes(range(256)) * 40)])
    assert r.status_code == 415


def test_unreadable_documents_422(files_server, upstream):
    sid = uuid.uuid4().hex
    post_json(files_server, "before", sid)
    corrupt = make_pdf(["x"])[:60] + b"garbage" * 50
    r = post_json(files_server, [{"type": "text", "text": "x"}, file_part("broken.pdf", corrupt)], sid)
    assert r.status_code == 422 and "broken.pdf" in r.json()["error"]["message"]
    broken_zip = make_docx("m")[:-200]
    r = post_json(files_server, [{"type": "text", "text": "x"}, file_part("cut.docx", broken_zip)], sid)
    assert r.status_code == 422 and "cut.docx" in r.json()["error"]["message"]
    bomb = replace_part(make_docx("b"), "word/document.xml", padded_xml(DOC_HEAD, DOC_TAIL, 300))
    t0 = time.monotonic()
    r = post_json(files_server, [{"type": "text", "text": "x"}, file_part("bomb.docx", bomb)], sid)
    assert r.status_code == 422 and "bomb.docx" in r.json()["error"]["message"]
    assert time.monotonic() - t0 < 10
    xbomb = replace_part(
        make_xlsx("b"),
        "xl/worksheets/sheet1.xml",
        padded_xml(b'<?xml version="1.0"?><worksheet>', b"</worksheet>", 300),
    )
    r = post_json(files_server, [{"type": "text", "text": "x"}, file_part("bomb.xlsx", xbomb)], sid)
    assert r.status_code == 422
    # None of the failed requests touched the session.
    post_json(files_server, "after", sid)
    assert [m["content"] for m in upstream.requests()[-1]["body"]["messages"][1:]] == [
        "before",
        "You said: before",
        "after",
    ]


def test_traversal_names_are_stored_safely(files_server, upstream):
    name = "../../etc/passwd\x00.txt"
    r = requests.post(
        files_server.url + CHAT,
        timeout=30,
        data={"message": "m"},
        files={"files": ("../../etc/passwd.txt", b"root:x:0:0", "text/plain")},
    )
    assert r.status_code == 200
    assert "[file: ../../etc/passwd.txt]" in user_text_sent(upstream)
    r = post_json(files_server, [{"type": "text", "text": "m"}, file_part(name, b"secret")])
    assert r.status_code == 200
    assert "[file: ../../etc/passwd_.txt]" in user_text_sent(upstream)
    media = files_server.state_dir / "media" / "api"
    stored = sorted(p.name for p in media.iterdir())
    assert all("/" not in n and ".." not in n and "\x00" not in n for n in stored)
    assert sum(1 for n in stored if n.endswith("etc_passwd.txt") or "passwd" in n) >= 2
    assert all(p.resolve().parent == media.resolve() for p in media.iterdir())


def heavy_pdf(pages: int, ops: int) -> bytes:
    body = " ".join(f"(w{j}) Tj 2 0 Td" for j in range(ops))
    return make_pdf([f") Tj {body} (" for _ in range(pages)])


def test_loop_stays_responsive_during_slow_extraction(make_server, upstream):
    server = make_server(
        merge(
            upstream_config(upstream.url), {"api": {"files": {"timeout": 3, "maxChars": 50_000_000, "maxPages": 5000}}}
        )
    )
    slow = heavy_pdf(1200, 300)  # about 5 s of parsing, 6 MB
    requests.get(server.url + "/health")

    def upload():
        return post_json(server, [{"type": "text", "text": "x"}, file_part("slow.pdf", slow)])

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(upload) for _ in range(2)]
        latencies = []
        while not all(f.done() for f in futures):
            t0 = time.monotonic()
            assert requests.get(server.url + "/health", timeout=5).status_code == 200
            latencies.append(time.monotonic() - t0)
            time.sleep(0.02)
        results = [f.result() for f in futures]
    for r in results:
        assert r.status_code == 422 and r.json()["error"]["code"] == "extraction_timeout", r.text
    assert len(latencies) > 20
    assert max(latencies) < 0.5, max(latencies)  # never blocked for the seconds parsing takes
    # Workers were replaced: the next document is read normally.
    assert (
        post_json(server, [{"type": "text", "text": "x"}, file_part("ok.pdf", make_pdf(["fine"]))]).status_code == 200
    )
