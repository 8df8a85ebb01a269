"""Uploaded files: type detection, bounded text extraction, safe storage.

- :mod:`.detect` decides what a file is from its bytes alone.
- :mod:`.extract` turns a document into text (pure, synchronous, bounded).
- :mod:`.ooxml` checks a DOCX/XLSX/PPTX zip before any parser opens it.
- :mod:`.pool` runs extraction in worker processes with a wall-clock limit.
- :mod:`.storage` names and writes uploads under the media directory.

The heavy document libraries are only imported inside the worker processes.
"""

from nanobot.files.detect import Detected, UnsupportedFileType, detect
from nanobot.files.extract import ExtractionError, extract_text
from nanobot.files.limits import FileLimits
from nanobot.files.pool import Extractor
from nanobot.files.storage import safe_display_name, save_upload

__all__ = [
    "Detected",
    "ExtractionError",
    "Extractor",
    "FileLimits",
    "UnsupportedFileType",
    "detect",
    "extract_text",
    "safe_display_name",
    "save_upload",
]
