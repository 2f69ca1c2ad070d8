"""Durability helpers for the files the extractor writes (landing parts, spool segments, resume state)."""

from __future__ import annotations

import os
from pathlib import Path


def fsync_dir(path: str | Path) -> None:
    """Flush ``path``'s directory entries to disk, so a file created, renamed or removed in it
    survives a crash (fsyncing the file itself does not make its name durable). POSIX only."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
