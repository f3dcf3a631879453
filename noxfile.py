"""The supported Django and Python matrix (`make matrix`): the unit and API tests (everything not marked e2e or
browser) on SQLite, once per combination, with every Django deprecation warning the project's code causes
raised as an error (tests/conftest.py, tests/test_compat.py).  `make test` runs the whole suite, e2e and
browser included, on the newest combination only.

    .venv/bin/nox                                  # the matrix (make matrix)
    .venv/bin/nox -s "tests(django='6.1')"         # one session
    .venv/bin/nox -s "tests(django='5.2')" -- -k whoami -x   # arguments after -- go to pytest

Interpreters: python3.X on PATH, and pyenv's versions (found through `pyenv root` or ~/.pyenv, put first on
PATH: pyenv's python3.X shims answer only when PYENV_VERSION names them).  An interpreter the machine lacks
is skipped with one line ("Skipping ...: Python interpreter 3.X not found"), never downloaded.  Each session's
virtualenv (.nox/) is kept and reinstalled only when pyproject.toml or the session's Django changes."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from pathlib import Path

import nox

ROOT = Path(__file__).resolve().parent

#: (Python, Django): Django 5.2 LTS is the only supported release for Python 3.11; 6.0 and 6.1 need 3.12+.
MATRIX = [("3.11", "5.2"), ("3.12", "6.0"), ("3.13", "6.1")]

nox.options.sessions = ["tests"]
nox.options.reuse_venv = "yes"
nox.options.download_python = "never"
# nox turns a missing interpreter into an error when CI is set; here it is a skip, as the docstring says.
nox.options.error_on_missing_interpreters = False


def _pyenv_bin_dirs() -> list[str]:
    """The bin directories of pyenv's newest 3.11/3.12/3.13 patch releases, if pyenv is installed."""
    root = None
    if shutil.which("pyenv"):
        done = subprocess.run(["pyenv", "root"], capture_output=True, text=True, check=False)
        root = done.stdout.strip() if done.returncode == 0 else None
    versions = Path(root or os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv") / "versions"
    found: list[str] = []
    for python, _ in MATRIX:
        candidates = [p for p in versions.glob(f"{python}.*") if re.fullmatch(rf"{re.escape(python)}\.\d+", p.name)]
        candidates.sort(key=lambda p: int(p.name.rsplit(".", 1)[1]), reverse=True)
        found += [str(p / "bin") for p in candidates[:1] if (p / "bin" / f"python{python}").exists()]
    return found


os.environ["PATH"] = os.pathsep.join([*_pyenv_bin_dirs(), os.environ.get("PATH", "")])


@nox.session
@nox.parametrize(("python", "django"), [nox.param(py, dj, id=f"django='{dj}'") for py, dj in MATRIX])
def tests(session: nox.Session, django: str) -> None:
    requirements = ["-e", ".[test]", f"Django=={django}.*"]
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + repr(requirements).encode()).hexdigest()
    stamp = Path(session.virtualenv.location) / ".certauth-installed"
    if not stamp.exists() or stamp.read_text() != digest:
        session.install("--quiet", "--disable-pip-version-check", *requirements)
        stamp.write_text(digest)
    session.run(
        "python",
        "-c",
        "import sys, django, rest_framework; "
        "print(f'== Python {sys.version.split()[0]}, Django {django.__version__}, DRF {rest_framework.VERSION}')",
        silent=False,
    )
    session.run(
        "python", "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not e2e and not browser",
        # make test installs the built wheel into a fresh project (newest Python and Django); here it would
        # only repeat a minute of pip per session.
        "--ignore=tests/test_wheel_install.py",
        "--ignore=tests/browser",  # browser tests need playwright (make test runs them)
        *session.posargs,
        env={"DATABASE_URL": None},  # SQLite; a PostgreSQL run is make test's
    )
