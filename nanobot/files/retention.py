"""Uploads older than ``api.files.retentionDays`` are removed, a bounded batch at a time.

A background task sweeps ``<stateDir>/media/api/`` at start-up and then
hourly, in a worker thread (a directory scan and unlinks must not stall the
event loop). One pass removes at most ``BATCH`` files; a pass cut short by
it is followed by the next one a second later, so a large backlog drains
without any single pass holding a thread for long.
"""

from __future__ import annotations

import asyncio
import logging

from nanobot.files.storage import remove_expired
from nanobot.storage.safedir import SafeDir

log = logging.getLogger("nanobot.files")

DAY = 86400.0


class UploadCleaner:
    INTERVAL = 3600.0  # seconds between passes
    BATCH = 1000  # files removed per pass at most
    BACKLOG_PAUSE = 1.0  # seconds before the next pass when one was cut short

    def __init__(self, media_dir: SafeDir, retention_days: float) -> None:
        self._media_dir = media_dir
        self._max_age = retention_days * DAY
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._max_age > 0 and self._task is None:  # 0: uploads are kept
            self._task = asyncio.create_task(self._run(), name="nanobot-upload-cleaner")

    async def _run(self) -> None:
        while True:
            more = False
            try:
                removed, more = await asyncio.to_thread(remove_expired, self._media_dir, self._max_age, self.BATCH)
                if removed:
                    log.info("removed %d upload(s) older than %g days", removed, self._max_age / DAY)
            except OSError as exc:  # unreadable, or not a real directory (refused): next time
                log.warning("upload cleanup failed, nothing removed: %s", exc.strerror or exc)
            await asyncio.sleep(self.BACKLOG_PAUSE if more else self.INTERVAL)

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
