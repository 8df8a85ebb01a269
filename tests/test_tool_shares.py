"""Shared pools and the disk, per session (issue 30, items 6 and 12): the workspace quota of the
file tools, per-session shares in the registry, and file scans that stop at the tool's timeout."""

from __future__ import annotations

import asyncio
import time
from contextlib import aclosing
from pathlib import Path

from test_tools_files import file_tools, run_tool

from nanobot.agent.tools import DEADLINE, ToolRegistry, TurnScope
from nanobot.files.limits import FileLimits
from nanobot.files.pool import Extractor
from nanobot.providers.base import ToolCall
from nanobot.tools.files import FileToolLimits
from nanobot.tools.paths import Workspace

MIB = 1024 * 1024


def test_writes_over_the_quota_are_refused(tmp_path: Path) -> None:
    (tmp_path / "ws").mkdir()
    ws = Workspace(tmp_path / "ws", quota_bytes=MIB)
    assert run_tool(ws, "write_file", {"path": "a.txt", "content": "x" * 600_000}).startswith("Wrote")
    over = run_tool(ws, "write_file", {"path": "b.txt", "content": "y" * 600_000})
    assert over.startswith("Error: the workspace quota is exceeded") and "tools.workspaceQuotaMb" in over
    assert not (tmp_path / "ws" / "b.txt").exists()
    # Replacing a file counts only what it grows by; an edit that grows past the quota is refused.
    assert run_tool(ws, "write_file", {"path": "a.txt", "content": "START" + "z" * 700_000}).startswith("Wrote")
    grown = run_tool(ws, "edit_file", {"path": "a.txt", "old_text": "START", "new_text": "w" * 400_000})
    assert grown.startswith("Error: the workspace quota is exceeded")
    # With workspaceScope "session" each session's folder has its own quota.
    session_ws = Workspace(tmp_path / "ws", scope="session", quota_bytes=MIB)
    assert run_tool(session_ws, "write_file", {"path": "s.txt", "content": "s" * 900_000}, key="api:s").startswith(
        "Wrote"
    )


def test_file_scans_stop_at_the_deadline(tmp_path: Path) -> None:
    (tmp_path / "ws").mkdir()
    ws = Workspace(tmp_path / "ws")
    with open(tmp_path / "ws" / "big.txt", "wb") as f:
        f.write(b"line\n" * (8 * MIB))
    folder = tmp_path / "ws" / "many"
    folder.mkdir()
    for i in range(5000):
        (folder / f"f{i}").touch()

    async def main() -> list[str]:
        extractor = Extractor(FileLimits())
        tools = file_tools(ws, FileToolLimits(), extractor)
        scope = TurnScope("api", "t", session_key="api:t")
        DEADLINE.set(time.monotonic() - 1)  # as if the call's time were up
        try:
            return [
                await tools["read_file"].run({"path": "big.txt", "offset": 10 * MIB}, scope),
                await tools["list_dir"].run({"path": "many"}, scope),
            ]
        finally:
            await extractor.close()

    read, listed = asyncio.run(main())
    assert read == "Error: scanning 'big.txt' took longer than the tool timeout and was stopped."
    assert listed == "Error: listing 'many' took longer than the tool timeout and was stopped."


class HoldTool:
    """Waits for ``release``; a tool in the 'pool' share of two per session."""

    name = "hold"
    schema = {"type": "function", "function": {"name": "hold", "parameters": {"type": "object"}}}
    session_share = ("pool", 2)

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.running: dict[str, int] = {}

    async def run(self, args, scope) -> str:
        if args.get("quick"):
            return "quick"
        self.running[scope.session_key] = self.running.get(scope.session_key, 0) + 1
        await self.release.wait()
        return "held"


def test_one_session_holds_at_most_its_share_of_a_pool() -> None:
    async def main() -> tuple[dict[str, int], str]:
        tool = HoldTool()
        registry = ToolRegistry([tool])
        a = TurnScope("api", "a", session_key="api:a")
        calls = [ToolCall(id=f"c{i}", name="hold", arguments="{}") for i in range(5)]

        async def hog() -> list[tuple[int, str]]:
            async with aclosing(registry.run_batch(calls, a)) as results:
                return [r async for r in results]

        hogging = asyncio.create_task(hog())
        while tool.running.get("api:a", 0) < 2:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)  # room for a third call to start if the share did not hold it
        seen = dict(tool.running)
        b = TurnScope("api", "b", session_key="api:b")
        quick = await registry.run(ToolCall(id="q", name="hold", arguments='{"quick": true}'), b)
        tool.release.set()
        await hogging
        return seen, quick

    seen, quick = asyncio.run(main())
    assert seen == {"api:a": 2} and quick == "quick"


def test_the_servers_own_files_do_not_count_against_the_quota(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    (root / "media" / "api").mkdir(parents=True)
    (root / "nanobot.db").write_bytes(b"d" * 2 * MIB)
    (root / "media" / "api" / "upload.bin").write_bytes(b"u" * 2 * MIB)
    ws = Workspace(root, quota_bytes=MIB)
    assert run_tool(ws, "write_file", {"path": "a.txt", "content": "fits"}).startswith("Wrote")
