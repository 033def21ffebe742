"""Files written whole or not at all: every file hamgrad writes (sweep rows, checkpoints, figures, cost tables)."""

from __future__ import annotations

import os
import uuid
from pathlib import Path


def atomic_write(path: Path, write) -> None:
    """Call ``write(tmp_path)`` and move the result over ``path`` (``os.replace`` is atomic), so a reader or an
    interrupted run never sees half a file. The temporary name is unique to the writer, so two processes writing the
    same file never move each other's temporary file. An ``OSError`` names ``path`` (not the temporary name), with
    its errno kept (a full disk is ``errno.ENOSPC``)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except OSError as err:
        if err.errno is None:
            raise
        raise OSError(err.errno, err.strerror, str(path)) from err
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: Path, text: str) -> None:
    """:func:`atomic_write` of a UTF-8 text."""
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
