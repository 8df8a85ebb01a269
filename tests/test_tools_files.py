"""The file tools on real files: confinement, the protected database, bad input.

Most tests call the tools directly on a real temporary workspace; the last
ones run real turns of a ``nanobot serve`` process whose scripted model asks
for the calls.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from pathlib import Path

import common
import pytest
from builders import make_docx, make_pdf
from common import unframed
from servers import ServerProcess, upstream_config

from nanobot.agent.tools import Tool, TurnScope
from nanobot.files.limits import FileLimits
from nanobot.files.pool import Extractor
from nanobot.protocol import parse_frames
from nanobot.tools import BUILTIN_TOOLS
from nanobot.tools.files import FileTool, FileToolLimits
from nanobot.tools.paths import Workspace, safe_name


def file_tools(ws: Workspace, limits: FileToolLimits, extractor: Extractor) -> dict[str, Tool]:
    """The registry's file tools over ``ws``, with limits of the test's choosing."""
    return {cls.name: cls(ws, limits, extractor) for cls in BUILTIN_TOOLS if issubclass(cls, FileTool)}


def run_tool(ws: Workspace, name: str, args: dict, key: str = "api:t", limits: FileToolLimits | None = None) -> str:
    async def main() -> str:
        extractor = Extractor(FileLimits())
        try:
            tools = file_tools(ws, limits or FileToolLimits(), extractor)
            return await tools[name].run(args, TurnScope("api", "t", session_key=key))
        finally:
            await extractor.close()

    return asyncio.run(main())


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    root = tmp_path / "workspace"
    root.mkdir()
    return Workspace(root)


def test_write_read_edit_list(ws: Workspace) -> None:
    assert run_tool(ws, "write_file", {"path": "notes/a.txt", "content": "one\ntwo\nthree\n"}).startswith("Wrote 14")
    assert (Path(ws.base) / "notes/a.txt").read_text() == "one\ntwo\nthree\n"
    assert run_tool(ws, "read_file", {"path": "notes/a.txt"}) == "one\ntwo\nthree\n"
    assert run_tool(ws, "read_file", {"path": "notes/a.txt", "offset": 2, "limit": 1}).startswith(
        "two\n\n[... showing lines 2-2"
    )
    assert run_tool(ws, "read_file", {"path": "notes/a.txt", "offset": 9}).startswith("Error: offset 9 is past the end")
    assert (
        run_tool(ws, "edit_file", {"path": "notes/a.txt", "old_text": "two", "new_text": "2"}) == "Edited notes/a.txt."
    )
    assert (Path(ws.base) / "notes/a.txt").read_text() == "one\n2\nthree\n"
    assert run_tool(ws, "edit_file", {"path": "notes/a.txt", "old_text": "zzz", "new_text": ""}) == (
        "Error: old_text was not found in notes/a.txt."
    )
    run_tool(ws, "write_file", {"path": "notes/b.txt", "content": "x x x"})
    assert "found 3 times" in run_tool(ws, "edit_file", {"path": "notes/b.txt", "old_text": "x", "new_text": "y"})
    assert run_tool(ws, "list_dir", {}) == "notes/"
    assert run_tool(ws, "list_dir", {"path": "notes"}) == "a.txt\nb.txt"
    # Atomic writes leave no temp files behind.
    assert sorted(os.listdir(Path(ws.base) / "notes")) == ["a.txt", "b.txt"]


def test_long_files_come_in_windows(ws: Workspace) -> None:
    lines = "".join(f"line {i}\n" for i in range(1, 5001))
    (Path(ws.base) / "big.txt").write_text(lines)
    limits = FileToolLimits(max_chars=100)
    first = run_tool(ws, "read_file", {"path": "big.txt"}, limits=limits)
    assert first.startswith("line 1\nline 2\n") and "read_file with offset=" in first
    nxt = int(first.rsplit("offset=", 1)[1].split()[0])
    assert run_tool(ws, "read_file", {"path": "big.txt", "offset": nxt, "limit": 1}, limits=limits).startswith(
        f"line {nxt}\n"
    )
    # One line longer than the budget: its head, not an error.
    (Path(ws.base) / "wide.txt").write_text("w" * 5000)
    assert run_tool(ws, "read_file", {"path": "wide.txt"}, limits=limits).startswith("w" * 100 + "\n[...")
    # Windows deep in a file of several read blocks, and at its very end.
    many = "".join(f"row {i} é\n" for i in range(1, 300_001))
    (Path(ws.base) / "many.txt").write_text(many)
    assert run_tool(ws, "read_file", {"path": "many.txt", "offset": 250_000, "limit": 2}, limits=limits) == (
        "row 250000 é\nrow 250001 é\n\n[... showing lines 250000-250001; the file goes on: "
        "read_file with offset=250002 for more]"
    )
    assert run_tool(ws, "read_file", {"path": "many.txt", "offset": 300_000}) == "row 300000 é\n"
    assert run_tool(ws, "read_file", {"path": "many.txt", "offset": 300_001}).startswith(
        "Error: offset 300001 is past the end of 'many.txt' (300000 lines)"
    )
    # A window that ends inside a multi-byte character is cut before it.
    (Path(ws.base) / "wide-utf8.txt").write_text("é" * 500)
    assert run_tool(ws, "read_file", {"path": "wide-utf8.txt"}, limits=limits).startswith("é" * 100 + "\n[...")
    (Path(ws.base) / "empty.txt").write_text("")
    assert run_tool(ws, "read_file", {"path": "empty.txt"}) == "(empty file)"


@pytest.mark.parametrize("path", ["../outside.txt", "/etc/passwd", "a/../../outside.txt", "link/x.txt", "filelink"])
def test_paths_outside_are_refused(ws: Workspace, path: str) -> None:
    outside = Path(ws.base).parent
    (outside / "outside.txt").write_text("secret")
    (Path(ws.base) / "link").symlink_to(outside)
    (Path(ws.base) / "filelink").symlink_to(outside / "outside.txt")
    for name, args in [
        ("read_file", {}),
        ("write_file", {"content": "x"}),
        ("edit_file", {"old_text": "secret", "new_text": "x"}),
        ("list_dir", {}),
    ]:
        result = run_tool(ws, name, {"path": path, **args})
        assert result.startswith("Error: ") and "outside the workspace" in result, (name, result)
    assert (outside / "outside.txt").read_text() == "secret"
    assert not (outside / "x.txt").exists()


def test_symlink_inside_is_followed(ws: Workspace) -> None:
    (Path(ws.base) / "real.txt").write_text("inside")
    (Path(ws.base) / "alias.txt").symlink_to("real.txt")
    assert run_tool(ws, "read_file", {"path": "alias.txt"}) == "inside"


def test_unrestricted_reaches_outside(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    root.mkdir()
    (tmp_path / "o.txt").write_text("out")
    assert run_tool(Workspace(root, restrict=False), "read_file", {"path": str(tmp_path / "o.txt")}) == "out"


def test_database_is_never_touched(ws: Workspace) -> None:
    base = Path(ws.base)
    for name in ("nanobot.db", "nanobot.db-wal", "nanobot.db-shm", "sessions.lock"):
        (base / name).write_bytes(b"state")
        for tool, args in [
            ("read_file", {}),
            ("write_file", {"content": "x"}),
            ("edit_file", {"old_text": "state", "new_text": "x"}),
        ]:
            result = run_tool(ws, tool, {"path": name, **args})
            assert "server's own database" in result, (tool, result)
        assert (base / name).read_bytes() == b"state"
    # Reached through a symlink or a hard link: refused all the same.
    (base / "via").symlink_to("nanobot.db")
    os.link(base / "nanobot.db", base / "hard")
    assert "server's own database" in run_tool(ws, "read_file", {"path": "via"})
    assert "server's own database" in run_tool(ws, "read_file", {"path": "hard"})
    assert "server's own database" in run_tool(ws, "edit_file", {"path": "hard", "old_text": "s", "new_text": "x"})


def test_bad_arguments_are_error_results(ws: Workspace) -> None:
    (Path(ws.base) / "bin.dat").write_bytes(b"\x00\x01\x02binary" * 100)
    (Path(ws.base) / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 100)
    (Path(ws.base) / "latin1.txt").write_bytes(b"caf\xe9 " * 10)
    os.mkfifo(Path(ws.base) / "fifo")
    cases: list[tuple[str, dict, str]] = [
        ("read_file", {"path": "missing.txt"}, "does not exist"),
        ("read_file", {"path": "bin.dat"}, "binary file"),
        ("read_file", {"path": "image.png"}, "binary file (image/png)"),
        ("read_file", {"path": "latin1.txt"}, "binary file"),
        ("read_file", {"path": "fifo"}, "not a regular file"),
        ("read_file", {"path": "."}, "is a folder"),
        ("read_file", {"path": "a\x00b"}, "NUL byte"),
        ("read_file", {"path": 42}, "'path' must be a string"),
        ("read_file", {}, "'path' must be a string"),
        ("read_file", {"path": "x" * 5000}, "longer than 4096"),
        ("read_file", {"path": "bin.dat", "offset": "2"}, "'offset' must be a positive integer"),
        ("read_file", {"path": "bin.dat", "limit": 0}, "'limit' must be a positive integer"),
        ("write_file", {"path": "a.txt", "content": 5}, "'content' must be a string"),
        ("write_file", {"path": "a.txt", "content": "\ud800"}, "not valid Unicode"),
        ("write_file", {"path": ".", "content": "x"}, "is a folder"),
        ("edit_file", {"path": "missing.txt", "old_text": "a", "new_text": "b"}, "does not exist"),
        ("edit_file", {"path": "bin.dat", "old_text": "", "new_text": "b"}, "'old_text' must be a non-empty"),
        ("list_dir", {"path": "missing"}, "does not exist"),
        ("list_dir", {"path": ["x"]}, "'path' must be a string"),
    ]
    for name, args, expected in cases:
        result = run_tool(ws, name, args)
        assert result.startswith("Error: ") and expected in result, (name, args, result)
    huge = run_tool(
        ws, "write_file", {"path": "h.txt", "content": "x" * 100}, limits=FileToolLimits(max_write_chars=10)
    )
    assert huge.startswith("Error: 'content' is longer than 10")


def test_documents_go_through_the_extractor(ws: Workspace) -> None:
    (Path(ws.base) / "doc.pdf").write_bytes(make_pdf(["pdf marker text"]))
    (Path(ws.base) / "doc.docx").write_bytes(make_docx("docx marker"))
    assert "pdf marker text" in run_tool(ws, "read_file", {"path": "doc.pdf"})
    assert "docx marker" in run_tool(ws, "read_file", {"path": "doc.docx"})
    (Path(ws.base) / "broken.pdf").write_bytes(b"%PDF-1.4\n garbage")
    assert run_tool(ws, "read_file", {"path": "broken.pdf"}).startswith("Error: could not read 'broken.pdf'")


def test_session_scope_gets_a_folder_each(tmp_path: Path) -> None:
    ws = Workspace(tmp_path, scope="session")
    run_tool(ws, "write_file", {"path": "a.txt", "content": "mine"}, key="api:one")
    assert (tmp_path / "sessions" / safe_name("api:one") / "a.txt").read_text() == "mine"
    assert run_tool(ws, "read_file", {"path": "a.txt"}, key="api:two").startswith("Error: 'a.txt' does not exist")
    escape = run_tool(ws, "read_file", {"path": f"../{safe_name('api:one')}/a.txt"}, key="api:two")
    assert "outside the workspace" in escape
    assert safe_name("api:a/b") != safe_name("api:a_b")
    assert "/" not in safe_name("../../x") and safe_name("..").startswith("..-")


@pytest.fixture(scope="module")
def tool_server(upstream):
    with ServerProcess(upstream_config(upstream.url)) as server:
        yield server


def ask(server, text, **extra):
    return common.ask(server, text, uuid.uuid4().hex, **extra)  # a session of its own per turn


def test_turns_run_real_file_tools(tool_server, upstream) -> None:
    r = ask(tool_server, '#tool:write_file {"path":"t/hello.txt","content":"hi there"}')
    assert r.status_code == 200
    assert r.json()["choices"][0]["message"]["content"] == "tool result: Wrote 8 characters to t/hello.txt."
    assert (tool_server.workspace / "t/hello.txt").read_text() == "hi there"
    r = ask(tool_server, '#tool:read_file {"path":"t/hello.txt"}')
    reply = r.json()["choices"][0]["message"]["content"]
    assert unframed(reply) == "tool result: hi there" and reply != "tool result: hi there"
    r = ask(tool_server, '#tool:read_file {"path":"nanobot.db"}')
    assert "server's own database" in r.json()["choices"][0]["message"]["content"]


def test_calls_of_one_reply_answer_in_call_order(tool_server, upstream) -> None:
    for i in range(3):
        (tool_server.workspace / f"f{i}.txt").write_text(f"content {i}")
    upstream.clear()
    text = " ".join(f'#tool:read_file {{"path":"f{i}.txt"}}' for i in range(3)) + ' #tool:read_file {"path":"nope"}'
    assert ask(tool_server, text).status_code == 200
    messages = upstream.requests()[-1]["body"]["messages"]
    calls = messages[-5]["tool_calls"]
    results = messages[-4:]
    assert [m["tool_call_id"] for m in results] == [c["id"] for c in calls]
    assert [unframed(m["content"]) for m in results[:3]] == ["content 0", "content 1", "content 2"]
    assert unframed(results[3]["content"]).startswith("Error: 'nope' does not exist")


def test_tool_events_say_which_call_failed(tool_server) -> None:

    r = ask(
        tool_server,
        '#tool:read_file {"path":"nope"} #tool:list_dir {}',
        stream=True,
        stream_options={"include_tool_events": True},
    )
    events = [
        f["choices"][0]["delta"]["nanobot_tool"]
        for f in parse_frames(r.content)[:-1]
        if f["choices"] and "nanobot_tool" in f["choices"][0]["delta"]
    ]
    finished = {e["name"]: e for e in events if e["status"] == "finished"}
    assert finished["read_file"]["ok"] is False and finished["list_dir"]["ok"] is True
    assert {e["id"] for e in events if e["status"] == "started"} == {e["id"] for e in finished.values()}


def test_results_never_carry_a_configured_secret(tool_server, upstream) -> None:
    # The provider key of upstream_config, quoted by a file the model reads:
    # the model (and so the client) gets it masked.
    (tool_server.workspace / "leak.txt").write_text("key=test-key; Bearer test-key")
    upstream.clear()
    r = ask(tool_server, '#tool:read_file {"path":"leak.txt"}')
    assert unframed(r.json()["choices"][0]["message"]["content"]) == "tool result: key=***; Bearer ***"
    assert "test-key" not in upstream.requests()[-1]["body"]["messages"][-1]["content"]


def test_honest_output_that_begins_with_error_is_not_a_failure(tool_server, upstream) -> None:
    # The ok flag comes from the result's is_error, never from its text.
    (tool_server.workspace / "log.txt").write_text("Error: not really\nall fine\n")
    (tool_server.workspace / "errs").mkdir(exist_ok=True)
    (tool_server.workspace / "errs" / "Error: disk full.txt").touch()  # list_dir's result is not framed
    upstream.clear()
    r = ask(
        tool_server,
        '#tool:read_file {"path":"log.txt"} #tool:read_file {"path":"nope"} #tool:list_dir {"path":"errs"}',
        stream=True,
        stream_options={"include_tool_events": True},
    )
    events = [
        f["choices"][0]["delta"]["nanobot_tool"]
        for f in parse_frames(r.content)[:-1]
        if f["choices"] and "nanobot_tool" in f["choices"][0]["delta"]
    ]
    finished = {e["id"]: e["ok"] for e in events if e["status"] == "finished"}
    results = upstream.requests()[-1]["body"]["messages"][-3:]
    ok = {m["tool_call_id"]: finished[m["tool_call_id"]] for m in results}
    assert list(ok.values()) == [True, False, True]
    # the honest text stays inside the untrusted frame; the failure's prefix stays outside
    assert results[0]["content"].startswith("<<untrusted-data ")
    assert unframed(results[0]["content"]) == "Error: not really\nall fine\n"
    assert results[1]["content"].startswith("Error: <<untrusted-data ")
    assert results[2]["content"] == "Error: disk full.txt"  # plain text that starts "Error", and a success


def test_bad_arguments_are_refused_before_the_call(tool_server, upstream) -> None:
    upstream.clear()
    r = ask(tool_server, '#tool:read_file {"path": 5} #tool:write_file {"path": "x.txt"}')
    assert r.status_code == 200
    results = [m["content"] for m in upstream.requests()[-1]["body"]["messages"][-2:]]
    assert results == ["Error: argument 'path' must be a string.", "Error: argument 'content' is required."]
    assert not (tool_server.workspace / "x.txt").exists()
