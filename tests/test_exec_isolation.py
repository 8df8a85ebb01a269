"""The ``exec`` sandbox's walls and limits, attacked from inside through the real tool (issue 30)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import tempfile
import uuid
from pathlib import Path

import pytest
from common import unframed
from test_tools_exec import alive, wait_gone

from nanobot.agent.tools import TurnScope
from nanobot.config import ExecToolConfig
from nanobot.tools.exec import MAX_PROCESSES, ExecTool
from nanobot.tools.paths import Workspace

pytestmark = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed")
needs_python = pytest.mark.skipif(not os.path.exists("/usr/bin/python3"), reason="no system python3")


def scope(key: str = "api:t") -> TurnScope:
    return TurnScope("api", "t", session_key=key)


def run(ws: Workspace, command: str, key: str = "api:t", **cfg: object) -> str:
    tool = ExecTool(ws, ExecToolConfig(enabled=True, **cfg), 16000)  # type: ignore[arg-type]
    return asyncio.run(tool.run({"command": command}, scope(key)))


def py(code: str) -> str:
    return f"/usr/bin/python3 -c '{code}'"


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    (tmp_path / "ws").mkdir()
    return Workspace(tmp_path / "ws")


def test_the_host_is_not_there(ws: Workspace, tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    config.write_text('{"providers": {"openai": {"apiKey": "sk-PROVIDER-KEY"}}}')
    result = run(
        ws,
        f"cat {config}; cat /etc/shadow; ls /root /home /run /var/run 2>&1 | grep -vc 'No such'; "
        "ls /etc/ssl/private 2>&1; ls /usr/bin/bash /bin/sh >/dev/null && echo SYSTEM-OK",
    )
    assert "sk-PROVIDER-KEY" not in result
    assert "No such file" in result and "SYSTEM-OK" in result
    lines = result.splitlines()
    assert lines[lines.index("SYSTEM-OK") - 2] == "0"  # none of the host's homes or /run
    assert "root:" not in result  # /etc/shadow (readable by the root server) is not in the sandbox


def test_session_b_cannot_read_session_a_or_the_database(tmp_path: Path) -> None:
    base = tmp_path / "ws"
    base.mkdir()
    (base / "nanobot.db").write_bytes(b"SECRET-HISTORY")
    ws = Workspace(base, scope="session")
    assert run(ws, "echo A-PRIVATE > notes.txt; pwd", key="api:a").startswith("Exit code: 0\n")
    a_folder = ws.root_path("api:a")
    assert Path(a_folder, "notes.txt").read_text() == "A-PRIVATE\n"
    result = run(ws, f"cat {a_folder}/notes.txt ../*/notes.txt {base}/nanobot.db; ls {base}", key="api:b")
    assert "A-PRIVATE" not in result and "SECRET-HISTORY" not in result
    assert "No such file" in result


@needs_python
def test_host_unix_sockets_are_unreachable(ws: Workspace) -> None:
    folders = [tempfile.mkdtemp(dir="/tmp")]
    try:
        os.makedirs("/run", exist_ok=True)
        folders.append(tempfile.mkdtemp(dir="/run"))
    except OSError:
        pass
    listeners = []
    try:
        for folder in folders:
            path = os.path.join(folder, "app.sock")
            sock = socket.socket(socket.AF_UNIX)
            sock.bind(path)
            sock.listen(8)
            listeners.append(sock)
            probe = py(f'import socket; s = socket.socket(socket.AF_UNIX); s.connect("{path}"); print("CONNECTED")')
            result = run(ws, probe)
            assert "CONNECTED" not in result and "No such file" in result, result
            # The same probe from the host connects: the socket is live.
            with socket.socket(socket.AF_UNIX) as c:
                c.connect(path)
    finally:
        for sock in listeners:
            sock.close()
        for folder in folders:
            shutil.rmtree(folder, ignore_errors=True)


@needs_python
def test_memory_processes_tmp_and_file_size_are_bounded(ws: Workspace) -> None:
    result = run(ws, py('b = bytearray(600 * 1024 * 1024); print("ALLOCATED")'))
    assert "ALLOCATED" not in result and "MemoryError" in result
    bomb = py(
        "import os, time\nn = 0\nfor i in range(300):\n try:\n  pid = os.fork()\n except OSError:\n  break\n"
        ' if pid == 0:\n  time.sleep(30)\n  os._exit(0)\n n += 1\nprint("FORKED", n)'
    )
    forked = run(ws, bomb, max_processes=40)
    count = int(forked.split("FORKED ")[1].split()[0])
    assert count < 40, forked
    tmp = run(ws, "head -c 100000000 /dev/zero > /tmp/big; echo rc=$?; df -k /tmp | tail -1", tmp_size_mb=8)
    assert "No space left on device" in tmp and "rc=1" in tmp
    big = run(ws, "head -c 3000000 /dev/zero > big.bin; echo rc=$?; stat -c %s big.bin", max_file_mb=1)
    assert "rc=" in big and "rc=0" not in big and big.strip().endswith(str(1024 * 1024))


def test_exec_over_the_quota_says_so(tmp_path: Path) -> None:
    (tmp_path / "ws").mkdir()
    ws = Workspace(tmp_path / "ws", quota_bytes=1024 * 1024)
    ok = run(ws, "head -c 1000 /dev/zero > small.bin")
    assert ok == "Exit code: 0\n(no output)"
    over = run(ws, "head -c 2000000 /dev/zero > big.bin")
    assert over.startswith("Exit code: 0\n") and "[Error: the workspace quota is exceeded" in over


def test_without_bwrap_on_the_path_exec_fails_closed(ws: Workspace, tmp_path: Path, monkeypatch) -> None:
    bin_dir = tmp_path / "bin"  # bash and nice, but no bwrap
    bin_dir.mkdir()
    for name in ("bash", "nice"):
        found = shutil.which(name)
        assert found is not None
        (bin_dir / name).symlink_to(found)
    monkeypatch.setenv("PATH", str(bin_dir))
    result = run(ws, "echo RAN > ran.txt")
    assert result.startswith("Error: ") and "bwrap is not installed" in result
    assert not Path(ws.base, "ran.txt").exists()


def test_sandbox_none_kills_setsid_descendants(ws: Workspace) -> None:
    marker = f"{uuid.uuid4().int % 10**6 + 10**6}.35"
    result = run(
        ws, f"setsid sleep {marker} & (setsid sleep {marker} &); echo started; wait", sandbox="none", timeout=1
    )
    assert result.startswith("Error: the command took longer than 1 s") and "started" in result
    assert wait_gone(marker) == []
    # A command that ends normally takes the daemons it left with it.
    marker2 = f"{uuid.uuid4().int % 10**6 + 10**6}.45"
    done = run(ws, f"(setsid sleep {marker2} > /dev/null 2>&1 &); echo left", sandbox="none")
    assert done == "Exit code: 0\nleft\n"
    assert wait_gone(marker2) == []


def test_one_session_cannot_take_every_exec_slot(ws: Workspace) -> None:
    marker = f"{uuid.uuid4().int % 10**6 + 10**6}.55"
    tool = ExecTool(ws, ExecToolConfig(enabled=True, timeout=120), 16000)

    async def main() -> str:
        hogs = [
            asyncio.create_task(tool.run({"command": f"sleep {marker}"}, scope("api:attacker")))
            for _ in range(MAX_PROCESSES + 2)
        ]
        while len(alive(marker)) < 4:  # the attacker's share is running
            await asyncio.sleep(0.05)
        victim = await tool.run({"command": "echo victim-ok"}, scope("api:victim"))
        assert not any(h.done() for h in hogs)  # the victim did not wait for the attacker's commands
        for h in hogs:
            h.cancel()
        await asyncio.gather(*hogs, return_exceptions=True)
        return victim

    assert asyncio.run(main()) == "Exit code: 0\nvictim-ok\n"
    assert wait_gone(marker) == []


def test_through_the_api_a_session_sees_neither_another_nor_the_server(make_server, upstream) -> None:
    from common import ask
    from servers import merge
    from test_tools_exec import exec_config

    # Not under /tmp: the sandbox's private /tmp would hide it without any other wall.
    workspace = Path(tempfile.mkdtemp(dir="/var/tmp", prefix="nanobot-ws-"))
    try:
        server = make_server(
            merge(exec_config(upstream), {"tools": {"workspaceScope": "session"}}), workspace=workspace
        )
        _steal(server, ask)
    finally:
        shutil.rmtree(workspace, ignore_errors=True)


def _steal(server, ask) -> None:

    def exec_in(sid: str, command: str) -> str:
        content = ask(server, "#tool:exec " + json.dumps({"command": command}), sid).json()
        return unframed(content["choices"][0]["message"]["content"])

    assert exec_in("alice", "echo ALICE-PRIVATE > notes.txt; cat notes.txt").endswith("ALICE-PRIVATE\n")
    ws = server.workspace
    stolen = exec_in("mallory", f"cat {ws}/sessions/*/notes.txt {ws}/nanobot.db {server.config_path} | base64 -w0")
    assert stolen.startswith("tool result: Exit code: 0\n") and "ALICE-PRIVATE" not in stolen
    assert stolen.count("No such file or directory") == 3, stolen
