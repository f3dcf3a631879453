"""One `make run` per state folder: a second one would rotate the proxy secret under the first stack's nginx
and, when it stopped, remove the first stack's gunicorn sockets (the first then answered nginx's 502)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from scripts.stack import REPO, StackError, hold_run_lock


def test_a_second_make_run_in_the_same_folder_is_refused_naming_the_first(tmp_path: Path) -> None:
    var_dir = tmp_path / "var"
    first = hold_run_lock(var_dir)
    try:
        assert (var_dir / "make-run.lock").read_text().strip() == str(os.getpid())
        with pytest.raises(StackError, match=rf"already running \(pid {os.getpid()}\)"):
            hold_run_lock(var_dir)
        # What `make run` itself does, in another process, while the first holds the folder.
        second = subprocess.run(
            [sys.executable, "-m", "scripts.stack", "run", "--var-dir", str(var_dir), "--port", "1"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert second.returncode == 1
        assert "already running" in second.stderr, second.stderr
        assert (var_dir / "make-run.lock").stat().st_mode & 0o077 == 0
    finally:
        os.close(first)
    # The lock dies with its holder: the next run gets it.
    os.close(hold_run_lock(var_dir))


def test_another_folder_is_another_stack(tmp_path: Path) -> None:
    first = hold_run_lock(tmp_path / "one")
    try:
        os.close(hold_run_lock(tmp_path / "two"))
    finally:
        os.close(first)
