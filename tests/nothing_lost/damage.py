"""Disks that lie: what the damaged-file scenarios do to an agent's files.

- :func:`garble_leaf` overwrites the cells of one leaf page of a table, keeping the page
  header and its cell pointers: the database opens and counts its rows as before, and the
  first query that reads those cells fails ("database disk image is malformed"), as
  after a failing SD card sector.
- :func:`cut_wal` cuts the write-ahead log inside a frame, as a disk that dropped the
  last writes it had acknowledged: SQLite discards the torn tail and the commits in it.
  When a checkpoint had already copied those frames into the database (the outbox
  checkpoints every few commits), the disk kept the later writes and lost the earlier
  ones: SQLite then reads pages of two commits side by side, rows out of key order and
  above the last sequence among them, and no ordinary query says so. The outbox checks
  the file's structure at a start after a crash for that reason.
- :func:`take_image` / :func:`restore_image` copy a whole state directory and put it back
  later, as an installer restoring a cabinet from an older SD card image.
"""

from __future__ import annotations

import random
import shutil
import sqlite3
import struct
from pathlib import Path

_WAL_HEADER = 32
_FRAME_HEADER = 24
_TABLE_LEAF = 0x0D


def leaf_pages(db: Path, table: str) -> list[int]:
    """The leaf pages of ``table``, in key order (dbstat, read-only, nothing changed)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = conn.execute(
            "SELECT pageno FROM dbstat WHERE name = ? AND pagetype = 'leaf' ORDER BY path",
            (table,),
        ).fetchall()
    finally:
        conn.close()
    return [int(r[0]) for r in rows]


def page_size(db: Path) -> int:
    size = struct.unpack(">H", db.read_bytes()[16:18])[0]
    return 65536 if size == 1 else size


def garble_leaf(db: Path, table: str, index: int = 0, seed: int = 1) -> int:
    """Garble the cells of ``table``'s ``index``-th leaf page (header and cell pointers
    kept); returns the page number. The database must be closed, its log folded in."""
    pages = leaf_pages(db, table)
    pageno = pages[index]
    size = page_size(db)
    offset = (pageno - 1) * size
    data = bytearray(db.read_bytes())
    page = data[offset : offset + size]
    assert page[0] == _TABLE_LEAF, f"page {pageno} is not a table leaf"
    cells = struct.unpack(">H", page[3:5])[0]
    keep = 8 + 2 * cells  # the header and the cell pointer array
    rng = random.Random(seed)
    for i in range(keep, size):
        page[i] = rng.randrange(256)
    data[offset : offset + size] = page
    db.write_bytes(bytes(data))
    return pageno


def wal_frames(wal: Path, db_page_size: int) -> int:
    return max(0, (wal.stat().st_size - _WAL_HEADER) // (_FRAME_HEADER + db_page_size))


def cut_wal(wal: Path, db_page_size: int, frames: int) -> int:
    """Cut the last ``frames`` frames of the log, and half of the one before: the torn
    tail SQLite discards on open. Returns the bytes cut."""
    total = wal_frames(wal, db_page_size)
    keep = max(0, total - frames)
    frame = _FRAME_HEADER + db_page_size
    size = _WAL_HEADER + keep * frame - frame // 2 if keep else _WAL_HEADER
    before = wal.stat().st_size
    with wal.open("r+b") as f:
        f.truncate(max(_WAL_HEADER, size))
    return before - wal.stat().st_size


def take_image(state_dir: Path, image: Path) -> None:
    """Copy ``state_dir`` as it is (files as the running agent left them)."""
    shutil.copytree(state_dir, image, symlinks=True)


def restore_image(image: Path, state_dir: Path) -> None:
    """Put an earlier image back in place of ``state_dir``."""
    shutil.rmtree(state_dir)
    shutil.copytree(image, state_dir, symlinks=True)
