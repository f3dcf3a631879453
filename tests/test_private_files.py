"""Secrets on disk: everything `make run` writes that is secret (the SQLite database with the admin sessions,
the secret key, the admin password, every private key) is private from its first byte in 0700 folders, and
``certauth devpki --out DIR`` never writes through a link planted in DIR nor into a folder another user owns
or can write to.  Real files in real directories; "as nobody" with ``runuser``."""

from __future__ import annotations

import io
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from certauth import devpki, privatefiles

ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="needs root (chown to nobody, runuser)")


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def nobody_can_read(path: Path) -> bool:
    """Whether the unprivileged user ``nobody`` can read ``path`` (``runuser -u nobody -- cat``)."""
    result = subprocess.run(["runuser", "-u", "nobody", "--", "cat", str(path)], capture_output=True, check=False)
    return result.returncode == 0


@pytest.fixture
def open_parent() -> Iterator[Path]:
    """A folder everyone may enter (0755, like a checkout in a home directory): only the modes of what is
    written inside decide whether another local user can read it.  (pytest's tmp_path is 0700.)"""
    parent = Path(tempfile.mkdtemp(prefix="certauth-files-"))
    parent.chmod(0o755)
    yield parent
    shutil.rmtree(parent, ignore_errors=True)


class CreationLog:
    """Every file opened for creation and every chmod, seen through CPython's audit hooks (sys.audit), so a
    test can tell that a file was created with its final mode rather than chmod'ed afterwards."""

    active: CreationLog | None = None

    def __init__(self) -> None:
        self.created: list[tuple[str, int]] = []
        self.chmods: list[Any] = []

    @staticmethod
    def hook(event: str, args: tuple[Any, ...]) -> None:
        log = CreationLog.active
        if log is None:
            return
        if event == "open" and isinstance(args[0], str | bytes | os.PathLike) and args[2] & os.O_CREAT:
            log.created.append((os.fsdecode(args[0]), args[2]))
        elif event == "os.chmod":
            log.chmods.append(args[0])


sys.addaudithook(CreationLog.hook)  # hooks cannot be removed; it records only while a test sets ``active``


@pytest.fixture
def creation_log() -> Iterator[CreationLog]:
    log = CreationLog()
    previous = os.umask(0)  # a permissive umask: only the mode given at creation can keep a file private
    CreationLog.active = log
    try:
        yield log
    finally:
        CreationLog.active = None
        os.umask(previous)


def assert_created_private(log: CreationLog, folder: Path) -> None:
    created_here = [(path, flags) for path, flags in log.created if Path(path).parent == folder]
    assert created_here
    for path, flags in created_here:
        assert flags & os.O_EXCL and flags & os.O_NOFOLLOW, f"{path} was not created O_EXCL|O_NOFOLLOW"
    assert log.chmods == [], "a file was chmod'ed after creation: it was readable before"


# --- the dev PKI --------------------------------------------------------------------------------------------


SECRET_SUFFIXES = (".key", ".p12", "-bundle.pem")


def is_secret(name: str) -> bool:
    return (name.endswith(SECRET_SUFFIXES) and name != "ca-bundle.pem") or name == devpki.MANIFEST


def test_every_private_key_is_created_private_from_the_first_byte(tmp_path, creation_log) -> None:
    out = tmp_path / "pki"
    devpki.create_dev_pki(out)
    assert_created_private(creation_log, out)
    assert mode(out) == 0o700
    names = sorted(p.name for p in out.iterdir())
    secrets = [name for name in names if is_secret(name)]
    assert "ca.key" in secrets and "server.key" in secrets and "client.p12" in secrets
    for name in names:
        assert mode(out / name) == (0o600 if is_secret(name) else 0o644), name
    assert not [name for name in names if name.startswith(".")]  # no temporary file left behind


def test_a_link_planted_in_the_folder_is_replaced_never_followed(tmp_path) -> None:
    out = tmp_path / "pki"
    out.mkdir(mode=0o700)
    victim = tmp_path / "root-owned-file"
    victim.write_text("precious\n")
    victim.chmod(0o600)
    elsewhere = tmp_path / "someone-elses-file"
    elsewhere.write_text("")
    elsewhere.chmod(0o666)
    (out / "server.pem").symlink_to(victim)  # overwritten and made 0644 on the old code
    (out / "ca.key").symlink_to(elsewhere)  # received the CA private key on the old code
    devpki.create_dev_pki(out)
    assert victim.read_text() == "precious\n" and mode(victim) == 0o600
    assert elsewhere.read_text() == ""
    for name in ("server.pem", "ca.key"):
        assert not (out / name).is_symlink()
    assert mode(out / "ca.key") == 0o600 and b"PRIVATE KEY" in (out / "ca.key").read_bytes()


@pytest.mark.parametrize("folder_mode", [0o777, 0o770, 0o1777])
def test_a_folder_others_can_write_to_is_refused(tmp_path, folder_mode) -> None:
    out = tmp_path / "pki"
    out.mkdir()
    out.chmod(folder_mode)
    with pytest.raises(CommandError, match=r"can be written by its group or by others.*chmod 700"):
        call_command("certauth", "devpki", "--out", str(out), stdout=io.StringIO())
    assert list(out.iterdir()) == []
    assert mode(out) == folder_mode


def test_an_existing_pki_in_a_folder_others_can_write_to_is_not_reused(tmp_path) -> None:
    out = tmp_path / "pki"
    devpki.create_dev_pki(out)
    out.chmod(0o777)  # someone could have swapped ca.pem or server.key meanwhile
    with pytest.raises(devpki.UnsafeDirectory):
        devpki.create_dev_pki(out)


@needs_root
def test_a_folder_another_user_owns_is_refused(tmp_path) -> None:
    out = tmp_path / "pki"
    out.mkdir(mode=0o700)
    shutil.chown(out, user="nobody")
    with pytest.raises(CommandError, match=r"belongs to another user \(nobody"):
        call_command("certauth", "devpki", "--out", str(out), stdout=io.StringIO())
    assert list(out.iterdir()) == []


def test_a_folder_that_is_a_link_is_refused(tmp_path) -> None:
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    (tmp_path / "pki").symlink_to(real)
    with pytest.raises(CommandError, match="is a symbolic link"):
        call_command("certauth", "devpki", "--out", str(tmp_path / "pki"), stdout=io.StringIO())
    assert list(real.iterdir()) == []


# --- the building blocks ------------------------------------------------------------------------------------


@needs_root
def test_devpki_out_cannot_be_swapped_for_an_attacker_pki_after_the_check(tmp_path: Path, monkeypatch) -> None:
    """Attack review 2: ``create_dev_pki`` checked its folder once, by name, and never its parent.  Another
    user who can write to the parent renames the checked folder away and puts a link to a complete PKI of
    theirs in its place; it was "reused" (`make run` trusting a root CA whose key they hold).  The attacker's
    timing is played deterministically: right after the check, as ``nobody``.  Now a folder inside a parent
    others can write to (not sticky) is refused before anything is written."""
    attacker_pki = devpki.create_dev_pki(tmp_path / "attacker")
    parent = Path(tempfile.mkdtemp(prefix="certauth-attack2-parent-"))
    try:
        parent.chmod(0o777)  # others may write to the parent (not sticky), not to the folder we check
        elsewhere = parent / "elsewhere"
        shutil.copytree(attacker_pki.out_dir, elsewhere)
        subprocess.run(["chown", "-R", "nobody", str(elsewhere)], check=True)
        real_check = privatefiles.ensure_private_directory

        def check_then_swap(directory: Path | str) -> Path:
            checked = real_check(directory)
            swap = f"mv {checked.name} {checked.name}.old && ln -s elsewhere {checked.name}"
            subprocess.run(["runuser", "-u", "nobody", "--", "sh", "-c", swap], cwd=parent, check=True)
            return checked

        monkeypatch.setattr(devpki, "ensure_private_directory", check_then_swap)
        try:
            pki = devpki.create_dev_pki(parent / "pki")
        except privatefiles.UnsafeDirectory as refused:
            assert str(parent) in str(refused) and "chmod go-w" in str(refused)
            assert not (parent / "pki").exists() or not any((parent / "pki").iterdir())
            return  # refused: a folder whose parent others can write to is no private folder
        assert pki.thumbprint("ca") != attacker_pki.thumbprint("ca"), "the attacker's root CA was adopted"
        assert not (elsewhere / "ca.key").exists() or (elsewhere / "ca.key").stat().st_uid != 0
    finally:
        shutil.rmtree(parent, ignore_errors=True)


@pytest.mark.parametrize(
    ("parent_mode", "owner", "refused"),
    [
        (0o777, "us", True),
        (0o770, "us", True),
        (0o1777, "us", False),  # sticky, like /tmp: nobody may rename what is not theirs
        (0o755, "nobody", True),  # its owner can chmod it and rename our folder
        (0o1777, "nobody", True),  # sticky, but the folder's owner may still rename anything in it
        (0o755, "us", False),
    ],
    ids=["0777", "0770", "1777", "0755-nobody", "1777-nobody", "0755"],
)
def test_a_folder_inside_a_parent_others_can_change_is_refused(parent_mode: int, owner: str, refused: bool) -> None:
    """The whole path is checked (OpenSSH's StrictModes), the grandparent too, and through links."""
    if owner == "nobody" and not ROOT:
        pytest.skip("needs root (chown to nobody)")
    top = Path(tempfile.mkdtemp(prefix="certauth-strict-"))
    try:
        top.chmod(0o755)
        parent = top / "parent"
        parent.mkdir()
        parent.chmod(parent_mode)
        if owner == "nobody":
            import pwd

            os.chown(parent, pwd.getpwnam("nobody").pw_uid, -1)
        (top / "safe").mkdir(mode=0o755)
        (top / "safe" / "link").symlink_to(parent / "below", target_is_directory=True)
        for target in (parent / "pki", parent / "below" / "pki", top / "safe" / "link" / "pki"):
            if refused:
                with pytest.raises(privatefiles.UnsafeDirectory, match=str(parent)):
                    devpki.create_dev_pki(target)
            else:
                assert devpki.create_dev_pki(target).thumbprint("ca")
    finally:
        shutil.rmtree(top, ignore_errors=True)


def test_create_file_never_replaces_nor_follows_what_is_there(tmp_path, creation_log) -> None:
    folder = privatefiles.ensure_private_directory(tmp_path / "var")
    assert privatefiles.create_file(folder / "secret", b"first")
    assert not privatefiles.create_file(folder / "secret", b"second")  # another process got there first
    assert (folder / "secret").read_bytes() == b"first" and mode(folder / "secret") == 0o600
    target = tmp_path / "target"
    (folder / "dangling").symlink_to(target)
    assert not privatefiles.create_file(folder / "dangling", b"key")
    assert not target.exists()
    assert_created_private(creation_log, folder)


def test_an_existing_readable_folder_of_ours_is_tightened(tmp_path) -> None:
    folder = tmp_path / "var"
    folder.mkdir()
    folder.chmod(0o755)  # what an older `make run` left
    privatefiles.ensure_private_directory(folder)
    assert mode(folder) == 0o700


# --- project settings: the secret key -----------------------------------------------------------------------


def _settings_in_subprocess(var_dir: Path, umask: int = 0) -> subprocess.CompletedProcess[str]:
    """Import project.settings in a fresh interpreter (as gunicorn and manage.py do) with a given umask."""
    env = {k: v for k, v in os.environ.items() if k not in {"SECRET_KEY", "DATABASE_URL"}}
    env.update(CERTAUTH_VAR_DIR=str(var_dir), PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    code = "import project.settings as s; print(s.SECRET_KEY)"
    return subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        preexec_fn=lambda: os.umask(umask),  # only the umask, before exec
    )


def test_the_secret_key_and_database_are_private_from_the_first_byte(open_parent) -> None:
    var_dir = open_parent / "var"
    key = _settings_in_subprocess(var_dir, umask=0).stdout.strip()  # permissive umask: no help from it
    assert len(key) >= 50
    assert mode(var_dir) == 0o700
    assert mode(var_dir / "secret_key") == 0o600 and mode(var_dir / "certauth.sqlite3") == 0o600
    assert _settings_in_subprocess(var_dir).stdout.strip() == key  # kept
    if ROOT:
        assert not nobody_can_read(var_dir / "secret_key")


def _plant(var_dir: Path, *, owner_nobody: bool) -> str:
    """What an attacker does before the service first starts: a var/ of their own (or one anybody may write
    to) holding a secret key they know and an empty database file they can read and write."""
    planted = "attacker-knows-this-secret-key-" + "x" * 30
    var_dir.mkdir(mode=0o777)
    var_dir.chmod(0o777)
    (var_dir / "secret_key").write_text(planted)
    (var_dir / "certauth.sqlite3").write_bytes(b"")
    (var_dir / "certauth.sqlite3").chmod(0o666)
    if owner_nobody:
        import pwd

        nobody = pwd.getpwnam("nobody")
        for path in (var_dir, var_dir / "secret_key", var_dir / "certauth.sqlite3"):
            os.chown(path, nobody.pw_uid, nobody.pw_gid)
    return planted


def _import_settings(var_dir: Path, code: str, **env_vars: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in {"SECRET_KEY", "DATABASE_URL"}}
    env.update(CERTAUTH_VAR_DIR=str(var_dir), PYTHONPATH=str(Path(__file__).resolve().parent.parent), **env_vars)
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False)


@pytest.mark.parametrize("owner_nobody", [False, True], ids=["world-writable-var", "var-owned-by-nobody"])
def test_settings_never_adopt_a_secret_key_from_a_folder_others_control(open_parent: Path, owner_nobody: bool) -> None:
    """Attack review 2: ``_secret_key`` checked the folder only when it had to create the key, so a local user
    who created ``CERTAUTH_VAR_DIR`` first chose the service's SECRET_KEY.  Now refused, saying how to fix it."""
    if owner_nobody and not ROOT:
        pytest.skip("needs root (chown to nobody)")
    open_parent.chmod(0o1777)
    var_dir = open_parent / "var"
    planted = _plant(var_dir, owner_nobody=owner_nobody)
    result = _import_settings(var_dir, "import project.settings as s; print(s.SECRET_KEY)")
    adopted = result.returncode == 0 and result.stdout.strip() == planted
    assert not adopted, "the service started with a SECRET_KEY another user wrote"
    assert "ImproperlyConfigured" in result.stderr and str(var_dir) in result.stderr


@pytest.mark.parametrize("owner_nobody", [False, True], ids=["world-writable-var", "var-owned-by-nobody"])
def test_settings_never_use_a_database_file_others_can_read(open_parent: Path, owner_nobody: bool) -> None:
    """The same for the SQLite file (it holds admin sessions), with SECRET_KEY from the environment as in
    production: no key file to create, and yet the folder and the database are checked."""
    if owner_nobody and not ROOT:
        pytest.skip("needs root (chown to nobody)")
    open_parent.chmod(0o1777)
    var_dir = open_parent / "var"
    _plant(var_dir, owner_nobody=owner_nobody)
    (var_dir / "secret_key").unlink()  # only the database planted this time
    code = "import project.settings as s; print(s.DATABASES['default']['NAME'])"
    result = _import_settings(var_dir, code, SECRET_KEY="k" * 50)
    database = var_dir / "certauth.sqlite3"
    used = result.returncode == 0 and result.stdout.strip() == str(database)
    readable_by_others = bool(os.stat(database).st_mode & 0o044) or os.stat(database).st_uid != os.geteuid()
    assert not (used and readable_by_others), "settings accepted a database file another user can read or owns"


@pytest.mark.parametrize("name", ["secret_key", "certauth.sqlite3", "certauth.sqlite3-wal"])
@pytest.mark.parametrize("exposure", ["readable-by-others", "group-writable", "link"])
def test_an_exposed_key_or_database_in_a_private_folder_is_refused(tmp_path: Path, name: str, exposure: str) -> None:
    """In our own 0700 var/, an existing secret file that others can read or write (an older run's umask, a
    copy) or that is a link is refused too, with the fix in the message; a private one is used."""
    var_dir = tmp_path / "var"
    var_dir.mkdir(mode=0o700)
    code = "import project.settings as s; print(s.SECRET_KEY)"
    assert _import_settings(var_dir, code).returncode == 0  # creates a private key and database
    target = var_dir / name
    if exposure == "link":
        elsewhere = tmp_path / "elsewhere"
        elsewhere.write_bytes(b"")
        elsewhere.chmod(0o600)
        target.unlink(missing_ok=True)
        target.symlink_to(elsewhere)
    else:
        if not target.exists():
            target.write_bytes(b"")
        target.chmod(0o644 if exposure == "readable-by-others" else 0o620)
    result = _import_settings(var_dir, code)
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr and str(target) in result.stderr
    assert "chmod 600" in result.stderr or "symbolic link" in result.stderr


def test_the_secret_key_is_written_without_a_readable_window(tmp_path, creation_log, monkeypatch) -> None:
    import importlib

    monkeypatch.delenv("SECRET_KEY", raising=False)
    monkeypatch.setenv("CERTAUTH_VAR_DIR", str(tmp_path / "var"))
    import project.settings

    try:
        reloaded = importlib.reload(project.settings)  # the real module, against a fresh var/
        assert (tmp_path / "var" / "secret_key").read_text() == reloaded.SECRET_KEY
        assert_created_private(creation_log, tmp_path / "var")
    finally:
        monkeypatch.undo()
        importlib.reload(project.settings)


# --- `make run`'s preparation -------------------------------------------------------------------------------


@needs_root
def test_make_run_leaves_no_secret_readable_by_another_local_user(open_parent, monkeypatch) -> None:
    from scripts import stack

    var_dir = open_parent / "var"
    var_dir.mkdir(mode=0o755)  # as an older `make run` created it
    for name in ("DATABASE_URL", "SECRET_KEY", "CERTAUTH_ADMIN_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    stack.prepare(var_dir)

    assert mode(var_dir) == 0o700 and mode(var_dir / "pki") == 0o700
    secrets = [var_dir / "certauth.sqlite3", var_dir / "secret_key", var_dir / "admin-password"]
    secrets += sorted((var_dir / "pki").glob("*.key")) + sorted((var_dir / "pki").glob("*.p12"))
    for path in secrets:
        assert mode(path) == 0o600, path
    for name in ("certauth.sqlite3-wal", "certauth.sqlite3-shm"):
        if (var_dir / name).exists():
            assert mode(var_dir / name) == 0o600, name
    var_dir.chmod(0o755)  # even if someone opened the folder again, the files stay private
    for path in secrets:
        assert not nobody_can_read(path), f"nobody could read {path}"
