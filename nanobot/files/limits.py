"""Resource bounds for turning an uploaded document into text.

One frozen value is shared by the detector, the zip checker, the extractors
and the worker pool, so every bound a hostile file can push against is named
and tunable in one place.
"""

from __future__ import annotations

from dataclasses import dataclass

MIB = 1024 * 1024


@dataclass(frozen=True)
class FileLimits:
    """Per-file bounds on the work and memory one document may cost.

    ``max_pages`` caps PDF pages, PPTX slides and XLSX sheets alike (the unit
    a reader walks one at a time). ``max_xlsx_cells`` caps the cells read from
    a workbook and, by the same token, the table cells of a DOCX or PPTX.
    Compression ratios are only judged for members larger than
    ``ratio_floor_bytes``: a tiny, very repetitive XML part is harmless and
    common, while the total size bound still holds for every member.
    """

    max_chars: int = 200_000
    max_pages: int = 500
    max_zip_members: int = 5000
    max_uncompressed_bytes: int = 200 * MIB
    max_compression_ratio: float = 200.0
    timeout_seconds: float = 15.0
    workers: int = 2
    max_xlsx_cells: int = 1_000_000
    # Beyond the brief: the smallest member whose compression ratio is judged,
    # and an address-space cap for each worker process (0 disables it), so a
    # parser that balloons fails with MemoryError instead of swapping the host.
    ratio_floor_bytes: int = 1 * MIB
    max_worker_memory_bytes: int = 2048 * MIB

    def __post_init__(self) -> None:
        for name in (
            "max_chars",
            "max_pages",
            "max_zip_members",
            "max_uncompressed_bytes",
            "workers",
            "max_xlsx_cells",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"FileLimits.{name} must be at least 1")
        if self.max_compression_ratio <= 1.0:
            raise ValueError("FileLimits.max_compression_ratio must be above 1")
        if self.timeout_seconds <= 0:
            raise ValueError("FileLimits.timeout_seconds must be positive")
        if self.ratio_floor_bytes < 0 or self.max_worker_memory_bytes < 0:
            raise ValueError("FileLimits byte sizes must not be negative")
