"""Uploads live only as long as they should.

A request that fails keeps none of the files it saved, whichever stage or
file failed; uploads older than ``api.files.retentionDays`` are removed by
a background sweep while newer ones stay.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import requests
from builders import make_docx, saved
from common import CHAT
from PIL import Image
from servers import ServerProcess, upstream_config

from nanobot.files.storage import remove_expired
from nanobot.testing.process import UpstreamProcess

PNG = saved(Image.new("RGB", (4, 4), (200, 10, 10)), format="PNG")
DAY = 86400


def media(server: ServerProcess) -> list[str]:
    folder = server.state_dir / "media" / "api"
    return sorted(os.listdir(folder)) if folder.is_dir() else []


def upload(server: ServerProcess, files: list[tuple[str, bytes]], message: str = "look", stream: bool = False):
    return requests.post(
        server.url + CHAT,
        data={"message": message, "session_id": uuid.uuid4().hex, "stream": "true" if stream else "false"},
        files=[("files", item) for item in files],
        timeout=60,
    )


def test_a_failed_request_keeps_none_of_its_uploads(
    upstream: UpstreamProcess, make_server: Callable[..., ServerProcess]
) -> None:
    server = make_server(upstream_config(upstream.url))
    # The second file is refused (415) after the first was saved.
    r = upload(server, [("a.png", PNG), ("b.bin", b"\x00\x01\x02\x03 not a known type " * 8)])
    assert r.status_code == 415
    # A document that cannot be read (422) after an image was saved.
    r = upload(server, [("a.png", PNG), ("cut.docx", make_docx("x")[:-200])])
    assert r.status_code == 422
    # Every file fine, then the provider fails: 502, and an SSE error frame.
    r = upload(server, [("a.png", PNG), ("d.docx", make_docx("doc"))], message="#status:500")
    assert r.status_code == 502
    r = upload(server, [("a.png", PNG)], message="#status:500", stream=True)
    assert r.status_code == 200 and "upstream_error" in r.text and "[DONE]" not in r.text
    assert media(server) == []
    # A request that succeeds keeps its files.
    r = upload(server, [("a.png", PNG), ("d.docx", make_docx("doc"))])
    assert r.status_code == 200, r.text
    assert len(media(server)) == 2


def test_uploads_past_the_retention_are_removed_at_start(
    make_server: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    folder = tmp_path / "workspace.state" / "media" / "api"
    folder.mkdir(parents=True)
    old, new = folder / "old-upload.png", folder / "new-upload.png"
    for path in (old, new):
        path.write_bytes(PNG)
    past = time.time() - 3 * DAY
    os.utime(old, (past, past))
    make_server({"api": {"files": {"retentionDays": 2}}}, workspace=tmp_path / "workspace")
    deadline = time.monotonic() + 15
    while old.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not old.exists() and new.exists()


def test_a_sweep_removes_a_bounded_batch(tmp_path: Path) -> None:
    past = time.time() - 10 * DAY
    for i in range(25):
        path = tmp_path / f"f{i}"
        path.write_bytes(b"x")
        os.utime(path, (past, past))
    (tmp_path / "fresh").write_bytes(b"x")
    assert remove_expired(tmp_path, DAY, limit=10) == (10, True)
    assert remove_expired(tmp_path, DAY, limit=10) == (10, True)
    assert remove_expired(tmp_path, DAY, limit=10) == (5, False)
    assert os.listdir(tmp_path) == ["fresh"]
    assert remove_expired(tmp_path / "missing", DAY, limit=10) == (0, False)
