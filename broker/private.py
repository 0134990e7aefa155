"""Private files and directories: decrypted case content stays with its organisation."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from broker.errors import ConfigError

__all__ = [
    "DIR_MODE",
    "FILE_MODE",
    "append_private",
    "exposure",
    "open_private",
    "private_dir",
    "private_file",
    "write_private",
]

#: Mode of every private directory.
DIR_MODE = 0o700
#: Mode of every private file.
FILE_MODE = 0o600


def private_dir(path: Path, what: str = "directory") -> Path:
    """Create ``path`` and its missing parents as ``0700`` directories; ConfigError if impossible.

    Directories that already exist keep their mode (see :func:`exposure`).
    """
    path = Path(path)
    missing: list[Path] = []
    probe = path
    while not probe.exists() and probe != probe.parent:
        missing.append(probe)
        probe = probe.parent
    try:
        for directory in reversed(missing):
            try:
                os.mkdir(directory, DIR_MODE)
            except FileExistsError:
                continue  # created by someone else meanwhile
            os.chmod(directory, DIR_MODE)
    except OSError as exc:
        raise ConfigError(f"{what}: cannot create directory {path}: {exc.strerror}") from exc
    if not path.is_dir():
        raise ConfigError(f"{what}: {path} is not a directory")
    return path


def open_private(path: Path, flags: int) -> int:
    """``os.open`` of a private file (created ``0600``; never through a symlink); the fd.

    ``flags`` are the access flags (``os.O_WRONLY | os.O_APPEND | os.O_CREAT``, ...).
    The file has mode ``0600`` afterwards, whatever the umask or its mode before.
    """
    fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE)
    try:
        if stat.S_IMODE(os.fstat(fd).st_mode) != FILE_MODE:
            os.fchmod(fd, FILE_MODE)
    except OSError:
        os.close(fd)
        raise
    return fd


def private_file(path: Path) -> Path:
    """Make sure ``path`` exists as a private file (in a private directory); ``path``."""
    private_dir(Path(path).parent)
    os.close(open_private(path, os.O_RDWR | os.O_CREAT))
    return path


def write_private(path: Path, data: bytes) -> None:
    """Write ``path`` atomically as a private file: a synced temporary file, then a rename."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = open_private(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def append_private(path: Path, data: bytes) -> None:
    """Append ``data`` to the private file ``path`` (created if missing), synced."""
    fd = open_private(Path(path), os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    with os.fdopen(fd, "ab") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def exposure(path: Path) -> str | None:
    """Why other local users can reach into ``path`` (a directory), or None if they cannot."""
    try:
        mode = stat.S_IMODE(Path(path).stat().st_mode)
    except OSError:
        return None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        return (
            f"{path} is accessible by other users (mode {mode:o}); it holds decrypted case "
            f"content: chmod 700 {path}"
        )
    return None
