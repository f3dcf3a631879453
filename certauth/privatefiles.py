"""Secrets on disk: private from the first byte, never through a planted link (pure module: no Django).

* ``ensure_private_directory(path)`` creates a folder 0700, or accepts an existing one only if it is a
  real directory (not a symbolic link), owned by this user, and nobody else can write to it (so nobody
  else can plant a link or a file in it); a readable one is tightened to 0700.  Every folder above it must
  be owned by root or this user and writable by nobody else unless sticky (OpenSSH's StrictModes): else
  another user could rename the checked folder away and put one of theirs (or a link) in its place after
  the check, and every later step by name would use theirs.  With the whole path safe, a check by name
  stays true, so callers may keep working with names.  Otherwise it raises ``UnsafeDirectory`` saying why
  and what to do.
* ``write_file(path, data, mode)`` writes a new file under a random name in the same folder, created
  ``O_EXCL | O_NOFOLLOW`` with ``mode`` (never readable by anyone else, not even for an instant), then
  renames it over ``path``: a link planted at ``path`` is replaced, never followed, and a reader sees the
  old file or the complete new one.
* ``create_file(path, data, mode)`` does the same but only if ``path`` does not exist yet (an atomic
  ``link``); it returns False when another process got there first.
* ``read_private_file(path)`` / ``check_private_file(path)`` accept an existing secret only if it is a regular
  file (not a link), owned by this user, that nobody else may read or write; otherwise ``UnsafeFile`` says
  why and how to fix it.  A secret someone else wrote (or can read) is no secret of ours: never adopted.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from pathlib import Path

__all__ = [
    "UnsafeDirectory",
    "UnsafeFile",
    "check_private_file",
    "create_file",
    "ensure_private_directory",
    "read_private_file",
    "shared_secret_exposure",
    "write_file",
]

PRIVATE_FILE = 0o600
PRIVATE_DIRECTORY = 0o700
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
# O_NONBLOCK: a FIFO planted under the name must not hang the reader (it is then refused as no regular file).
_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)


class UnsafeDirectory(ValueError):
    """A folder certauth will not write secrets into; the message says why and how to fix it."""


class UnsafeFile(ValueError):
    """An existing file certauth will not take a secret from; the message says why and how to fix it."""


def file_exposure(info: os.stat_result, *, owners: tuple[int, ...] | None = None) -> str:
    """Why a file with these ``fstat``/``lstat`` facts is not private to this user ('' when it is): not a regular
    file, owned by someone else (``owners`` defaults to this user only), or readable/writable by group or others."""
    if stat.S_ISLNK(info.st_mode):
        return "is a symbolic link (whoever owns it can point it elsewhere)"
    if not stat.S_ISREG(info.st_mode):
        return "is not a regular file"
    if info.st_uid not in (owners if owners is not None else (os.geteuid(),)):
        return f"belongs to another user ({_user(info.st_uid)}), who could have written it or read it"
    if info.st_mode & 0o077:
        return f"can be read or written by its group or by others (mode {stat.S_IMODE(info.st_mode):04o})"
    return ""


def shared_secret_exposure(info: os.stat_result) -> tuple[str, str]:
    """``(refuse, warn)`` for a secret file that an operator provisions for us (the proxy secret), given the
    ``fstat`` of the file as opened (links followed: a Kubernetes or systemd credential may be one).  Refused:
    not a regular file, readable or writable by every local user, writable by its group, or owned by a user
    other than us and root (who could change it).  Warned: readable by its group, or root's rather than ours
    (fine only if that group holds the workers' user alone)."""
    mode = stat.S_IMODE(info.st_mode)
    if not stat.S_ISREG(info.st_mode):
        return "is not a regular file", ""
    if mode & 0o007:
        return f"can be read or written by every local user (mode {mode:04o}): run `chmod 600` on it", ""
    if mode & 0o020:
        return f"can be written by its group (mode {mode:04o}): run `chmod 600` on it", ""
    if info.st_uid not in (os.geteuid(), 0):
        return f"belongs to another user ({_user(info.st_uid)}), who could change it: chown it to us", ""
    warnings = []
    if mode & 0o040:
        warnings.append(f"can be read by its group (gid {info.st_gid}, mode {mode:04o})")
    if info.st_uid != os.geteuid():
        warnings.append(f"belongs to {_user(info.st_uid)}, not to {_user(os.geteuid())}")
    return "", " and ".join(warnings)


def check_private_file(path: Path | str) -> None:
    """Raise ``UnsafeFile`` unless ``path`` (which must exist: ``FileNotFoundError``) is a private file of ours."""
    target = Path(path)
    problem = file_exposure(os.lstat(target))
    if problem:
        raise UnsafeFile(_file_advice(target, problem))


def read_private_file(path: Path | str) -> bytes:
    """The content of ``path`` if it is a private file of ours (see ``file_exposure``), checked on the open file
    (``fstat``, no link followed) so that what is checked is what is read; else ``UnsafeFile``."""
    target = Path(path)
    try:
        fd = os.open(target, _READ)
    except OSError as error:
        if os.path.islink(target):  # ELOOP from O_NOFOLLOW
            raise UnsafeFile(_file_advice(target, file_exposure(os.lstat(target)))) from None
        raise error
    with os.fdopen(fd, "rb") as handle:
        problem = file_exposure(os.fstat(handle.fileno()))
        if problem:
            raise UnsafeFile(_file_advice(target, problem))
        return handle.read()


def _file_advice(path: Path, problem: str) -> str:
    return (
        f"{path} {problem}: certauth does not use a secret another user may have written or can read. "
        f"If it is yours and nobody else had access, run `chown {_user_name(os.geteuid())} {path} && chmod 600 "
        f"{path}`; otherwise delete it (a new one is created) and rotate what depended on it."
    )


def ensure_private_directory(path: Path | str) -> Path:
    """``path`` as a private directory of this user (created 0700 if missing); raises ``UnsafeDirectory``."""
    directory = Path(path)
    with contextlib.suppress(FileExistsError):
        directory.mkdir(mode=PRIVATE_DIRECTORY, parents=True)
    info = os.lstat(directory)
    if stat.S_ISLNK(info.st_mode):
        raise UnsafeDirectory(
            f"{directory} is a symbolic link: give the directory it points to (whoever owns a link can "
            "switch it to another folder between our checks and our writes)."
        )
    if not stat.S_ISDIR(info.st_mode):
        raise UnsafeDirectory(f"{directory} exists and is not a directory.")
    _check_ancestors(directory)
    if info.st_uid != os.geteuid():
        raise UnsafeDirectory(
            f"{directory} belongs to another user ({_user(info.st_uid)}), not to {_user(os.geteuid())}: "
            "that user could read or replace what is written there. Choose a directory of your own."
        )
    if info.st_mode & 0o022:
        raise UnsafeDirectory(
            f"{directory} can be written by its group or by others (mode {stat.S_IMODE(info.st_mode):04o}): "
            f"they could plant links or files in it. Run `chmod 700 {directory}` or choose another directory."
        )
    if stat.S_IMODE(info.st_mode) != PRIVATE_DIRECTORY:
        os.chmod(directory, PRIVATE_DIRECTORY)  # ours and nobody else can write to it: no link to follow
    return directory


def _check_ancestors(directory: Path) -> None:
    """Every folder above ``directory``, as written and as resolved (links followed), may be changed only by
    root or us: owned by one of them, and writable by group or others only if sticky (like /tmp, where
    nobody may rename what is not theirs)."""
    trusted = (0, os.geteuid())
    seen: set[Path] = set()
    for path in (directory.absolute(), Path(os.path.realpath(directory))):
        for ancestor in path.parents:
            if ancestor in seen:
                continue
            seen.add(ancestor)
            info = os.stat(ancestor)
            if info.st_uid not in trusted:
                raise UnsafeDirectory(
                    f"{directory} is inside {ancestor}, which belongs to another user ({_user(info.st_uid)}): "
                    f"they could rename {directory} away and put a folder of theirs in its place after certauth "
                    "checked it. Choose a directory whose parents only root or you can change."
                )
            if info.st_mode & 0o022 and not info.st_mode & stat.S_ISVTX:
                raise UnsafeDirectory(
                    f"{directory} is inside {ancestor}, which its group or others can write to (mode "
                    f"{stat.S_IMODE(info.st_mode):04o}, not sticky): they could rename {directory} away and put a "
                    f"folder of theirs in its place after certauth checked it. Run `chmod go-w {ancestor}` (or "
                    "`chmod +t` it, as /tmp is) or choose another directory."
                )


def write_file(path: Path | str, data: bytes, mode: int = PRIVATE_FILE) -> None:
    """Replace ``path`` with ``data``, created with ``mode`` (umask applies); never follows a link."""
    target = Path(path)
    temporary = _write_temporary(target, data, mode)
    try:
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def create_file(path: Path | str, data: bytes, mode: int = PRIVATE_FILE) -> bool:
    """Create ``path`` with ``data`` unless it exists (anything there, a link included, wins)."""
    target = Path(path)
    temporary = _write_temporary(target, data, mode)
    try:
        os.link(temporary, target, follow_symlinks=False)
    except FileExistsError:
        return False
    finally:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
    return True


def _write_temporary(target: Path, data: bytes, mode: int) -> Path:
    temporary = target.with_name(f".{target.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(temporary, _CREATE, mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            fd = -1
            handle.write(data)
    except BaseException:
        if fd != -1:
            os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    return temporary


def _user_name(uid: int) -> str:
    try:
        import pwd

        return pwd.getpwuid(uid).pw_name
    except (ImportError, KeyError):
        return str(uid)


def _user(uid: int) -> str:
    try:
        import pwd

        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except (ImportError, KeyError):
        return f"uid {uid}"
