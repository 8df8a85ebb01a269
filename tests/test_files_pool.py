"""Extractor: worker processes, timeouts, crashes, and a loop that never waits.

Workers run ``builders.hook_target``: the real extractor plus a few
test-only kinds ("sleep", "spin", "pid", "crash", "memory", "rss:<kind>").
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest
from builders import (
    DOC_HEAD,
    DOC_TAIL,
    hook_target,
    lie_about_size,
    make_docx,
    make_pdf,
    make_pptx,
    make_xlsx,
    padded_xml,
    replace_part,
)

from nanobot.errors import UnprocessableFile
from nanobot.files.limits import MIB, FileLimits
from nanobot.files.pool import INLINE_TEXT_BYTES, Extractor

T = TypeVar("T")


def run_with(limits: FileLimits, body: Callable[[Extractor], Awaitable[T]], *, hooks: bool = True) -> T:
    """Run ``body`` with a fresh Extractor on a fresh loop, always closing it."""

    async def main() -> T:
        extractor = Extractor(limits, target=hook_target if hooks else None)
        try:
            return await body(extractor)
        finally:
            await extractor.close()

    return asyncio.run(main())


async def expect_422(extractor: Extractor, kind: str, data: bytes, name: str) -> UnprocessableFile:
    with pytest.raises(UnprocessableFile) as info:
        await extractor.extract(kind, data, name)
    assert info.value.status == 422
    assert f"'{name}'" in info.value.message
    return info.value


def pid_gone(pid: int) -> bool:
    """True once the process is reaped (a zombie would still accept signal 0)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_every_kind_through_the_pool() -> None:
    async def body(ex: Extractor) -> None:
        big_text = ("TEXTMARK " * (INLINE_TEXT_BYTES // 9 + 10)).encode()
        jobs = {
            "pdf": make_pdf(["hello PDFMARK"]),
            "docx": make_docx("DOCXMARK"),
            "xlsx": make_xlsx("XLSXMARK"),
            "pptx": make_pptx("PPTXMARK"),
            "text": big_text,
        }
        texts = await asyncio.gather(*(ex.extract(k, v, f"f.{k}") for k, v in jobs.items()))
        for kind, text in zip(jobs, texts, strict=False):
            assert f"{kind.upper()}MARK" in text
        assert await ex.extract("text", b"small SMALLMARK", "s.txt") == "small SMALLMARK"

    run_with(FileLimits(), body, hooks=False)


def test_a_saved_upload_is_read_by_the_worker_from_its_path(tmp_path) -> None:
    """Given the saved file, the worker reads the bytes from disk, not from the pipe."""
    saved = tmp_path / "report.docx"
    saved.write_bytes(make_docx("SAVEDMARK"))

    async def body(ex: Extractor) -> None:
        # No bytes in memory at all: the text can only come from the file.
        assert "SAVEDMARK" in await ex.extract("docx", b"", "report.docx", saved=saved)
        saved.unlink()  # gone: a clear 422 naming the file, and the worker lives on
        with pytest.raises(UnprocessableFile, match="'report.docx'"):
            await ex.extract("docx", b"", "report.docx", saved=saved)
        assert "SAVEDMARK" in await ex.extract("docx", make_docx("SAVEDMARK"), "again.docx")

    run_with(FileLimits(), body, hooks=False)


@pytest.mark.skipif(not hasattr(os, "getpriority"), reason="POSIX priorities")
def test_workers_run_below_the_server_priority() -> None:
    """Extraction yields the CPU to the event loop: workers run at nice +10."""

    async def body(ex: Extractor) -> None:
        pid = int(await ex.extract("pid", b"", "pid"))
        ours = os.getpriority(os.PRIO_PROCESS, 0)
        assert os.getpriority(os.PRIO_PROCESS, pid) == min(ours + 10, 19)

    run_with(FileLimits(), body)


def test_corrupt_pdf_is_a_422_naming_the_file() -> None:
    async def body(ex: Extractor) -> None:
        err = await expect_422(ex, "pdf", b"%PDF-1.4\n" + os.urandom(3000), "report.pdf")
        assert err.code == "unreadable_file"
        assert err.type == "unprocessable_file"
        assert err.message == "could not read 'report.pdf': not a valid PDF file"

    run_with(FileLimits(), body, hooks=False)


@pytest.mark.alone
@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs Linux /proc")
def test_zip_bombs_are_refused_quickly_with_bounded_worker_memory() -> None:
    raw = padded_xml(DOC_HEAD, DOC_TAIL, 300)
    honest = replace_part(make_docx("B"), "word/document.xml", raw)
    lying = replace_part(make_docx("B"), "word/document.xml", lie_about_size(raw, 20_000))

    async def body(ex: Extractor) -> None:
        for name, data in (("bomb.docx", honest), ("liar.docx", lying)):
            started = time.monotonic()
            err = await expect_422(ex, "docx", data, name)
            assert time.monotonic() - started < 5
            assert "zip bomb" in err.message
            # The worker's peak RSS after refusing a 300 MiB bomb.
            report = await ex.extract("rss:docx", data, name)
            peak_kib, result = report.split("|", 1)
            assert result.startswith("refused: ")
            assert int(peak_kib) < 150 * 1024  # ~80 MiB is the libraries themselves

    run_with(FileLimits(workers=1), body)


def test_timeout_kills_the_worker_and_the_pool_recovers() -> None:
    async def body(ex: Extractor) -> None:
        old_pid = int(await ex.extract("pid", b"", "pid"))
        started = time.monotonic()
        err = await expect_422(ex, "sleep", b"60", "slow.pdf")
        assert 0.5 <= time.monotonic() - started < 3
        assert err.code == "extraction_timeout"
        assert err.message == "could not read 'slow.pdf': extraction took longer than 0.5 s"
        assert pid_gone(old_pid)  # killed and reaped: no zombie
        new_pid = int(await ex.extract("pid", b"", "pid"))
        assert new_pid != old_pid
        assert "DOCXMARK-P2" in await ex.extract("docx", make_docx("DOCXMARK"), "after.docx")

    run_with(FileLimits(workers=1, timeout_seconds=0.5), body)


def test_cpu_bound_job_is_killed_too() -> None:
    async def body(ex: Extractor) -> None:
        err = await expect_422(ex, "spin", b"60", "busy.xlsx")
        assert err.code == "extraction_timeout"
        assert await ex.extract("spin", b"0", "quick") == "spun"

    run_with(FileLimits(workers=1, timeout_seconds=0.5), body)


@pytest.mark.alone
def test_event_loop_keeps_ticking_during_slow_and_killed_jobs() -> None:
    async def body(ex: Extractor) -> None:
        await ex.extract("pid", b"", "warm-up")  # worker start-up is not the point here
        gaps: list[float] = []
        done = asyncio.Event()

        async def ticker() -> None:
            last = time.monotonic()
            while not done.is_set():
                await asyncio.sleep(0.01)
                now = time.monotonic()
                gaps.append(now - last)
                last = now

        tick = asyncio.create_task(ticker())
        assert await ex.extract("sleep", b"0.6", "slow.pdf") == "slept"
        await expect_422(ex, "spin", b"60", "spin.pdf")  # includes the kill and reap
        big = make_pdf([f"page {n}" for n in range(200)])
        assert "page 199" in await ex.extract("pdf", big, "big.pdf")
        done.set()
        await tick
        assert len(gaps) > 50
        assert max(gaps) < 0.1

    run_with(FileLimits(workers=1, timeout_seconds=3.0), body)  # room for the 200-page PDF on a loaded machine


def test_crashed_worker_is_a_422_and_is_replaced() -> None:
    async def body(ex: Extractor) -> None:
        old_pid = int(await ex.extract("pid", b"", "pid"))
        err = await expect_422(ex, "crash", b"", "boom.pptx")
        assert err.code == "unreadable_file"
        assert "stopped unexpectedly" in err.message
        assert pid_gone(old_pid)
        assert int(await ex.extract("pid", b"", "pid")) != old_pid

    run_with(FileLimits(workers=1), body)


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_AS semantics are Linux's")
def test_memory_cap_gives_a_422_and_recycles_the_worker() -> None:
    async def body(ex: Extractor) -> None:
        old_pid = int(await ex.extract("pid", b"", "pid"))
        assert await ex.extract("memory", b"%d" % (64 * MIB), "ok") == f"allocated {64 * MIB} bytes"
        err = await expect_422(ex, "memory", b"%d" % (1024 * MIB), "huge.docx")
        reason = "the document needs too much memory to read"
        assert err.message == f"could not read 'huge.docx': {reason}"
        assert pid_gone(old_pid)
        assert int(await ex.extract("pid", b"", "pid")) != old_pid

    run_with(FileLimits(workers=1, max_worker_memory_bytes=512 * MIB), body)


def test_at_most_workers_jobs_run_at_once() -> None:
    async def body(ex: Extractor) -> None:
        await asyncio.gather(*(ex.extract("pid", b"", "warm") for _ in range(2)))
        started = time.monotonic()
        results = await asyncio.gather(*(ex.extract("sleep", b"0.4", f"j{n}") for n in range(4)))
        elapsed = time.monotonic() - started
        assert results == ["slept"] * 4
        assert 0.8 <= elapsed < 2.0  # two rounds of two, not one round of four

    run_with(FileLimits(workers=2), body)


def test_a_cancelled_caller_does_not_free_a_busy_worker() -> None:
    async def body(ex: Extractor) -> None:
        await ex.extract("pid", b"", "warm")
        slow = asyncio.create_task(ex.extract("sleep", b"0.5", "slow"))
        await asyncio.sleep(0.1)
        slow.cancel()
        started = time.monotonic()
        # One worker: this must queue behind the still-running sleep.
        assert await ex.extract("sleep", b"0", "next") == "slept"
        assert time.monotonic() - started >= 0.3
        with pytest.raises(asyncio.CancelledError):
            await slow

    run_with(FileLimits(workers=1), body)


def test_close_reaps_workers_and_threads() -> None:
    async def body() -> tuple[list[int], Extractor]:
        ex = Extractor(FileLimits(workers=2), target=hook_target)
        await asyncio.gather(*(ex.extract("sleep", b"0.2", "x") for _ in range(2)))  # start both
        pids = [int(await ex.extract("pid", b"", "p")) for _ in range(4)]
        busy = asyncio.create_task(ex.extract("sleep", b"30", "busy"))
        await asyncio.sleep(0.2)
        await ex.close()
        with pytest.raises((RuntimeError, UnprocessableFile)):
            await busy
        with pytest.raises(RuntimeError):
            await ex.extract("pid", b"", "p")
        await ex.close()  # idempotent
        return pids, ex

    started = time.monotonic()
    pids, _ = asyncio.run(body())
    assert time.monotonic() - started < 25  # the busy job's 30 s were not waited for
    assert all(pid_gone(pid) for pid in set(pids))
    assert not [t for t in threading.enumerate() if t.name.startswith("nanobot-extract")]


def test_small_text_skips_the_pool() -> None:
    async def body(ex: Extractor) -> None:
        assert await ex.extract("text", b"\xef\xbb\xbfinline", "a.txt") == "inline"
        assert ex._threads is None  # nothing was started

    run_with(FileLimits(), body, hooks=False)
