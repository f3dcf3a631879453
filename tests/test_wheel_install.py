"""The README's "Use it in your project" cannot rot: this test builds the wheel, installs it into a fresh
virtualenv next to a fresh ``django-admin startproject``, applies that section's code blocks literally and in
order (the install line that works today, settings.py, views.py, urls.py, the console steps), and then
authenticates requests the way nginx forwards them, against ``manage.py runserver``.

Editing the README changes what this test does.  It needs the package index this machine reaches (the
wheel's dependencies and the build backend), nothing else."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
SECTION = "## Use it in your project"
# What a wheel is built from: pyproject.toml's inputs (a copy, so no stale build/ folder of the checkout
# leaks into the wheel and the checkout is not written to).
SOURCES = ("pyproject.toml", "MANIFEST.in", "README.md", "LICENSE", "CHANGELOG.md", "certauth")
CAP = 900  # seconds any one step may take on a loaded machine before the test gives up on it


def readme_blocks() -> list[tuple[str, str]]:
    """(language, text) of each fenced block in the README's integration section, in order."""
    text = README.read_text()
    section = text.split(f"\n{SECTION}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^```(\w+)\n(.*?)^```$", section, flags=re.MULTILINE | re.DOTALL)


def console_commands(block: str) -> list[tuple[str, str]]:
    """(command, comment) of each ``$ `` line of a console block."""
    commands = []
    for line in block.splitlines():
        if line.startswith("$ "):
            command, _, comment = line[2:].partition("  # ")
            commands.append((command.strip(), comment.strip()))
    return commands


def run(command: list[str] | str, *, cwd: Path, env: dict[str, str]) -> str:
    shell = isinstance(command, str)  # a README line, run as a shell would (the wheel's name is a glob)
    result = subprocess.run(
        command,
        cwd=cwd,
        env=env,
        shell=shell,
        executable="/bin/bash" if shell else None,
        capture_output=True,
        text=True,
        timeout=CAP,
        check=False,
    )
    assert result.returncode == 0, f"{command!r} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
    return result.stdout


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get(url: str, headers: dict[str, str]) -> tuple[int, dict]:
    """Status and JSON body (a body that is not JSON comes back as ``{"not json": text}``)."""
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, raw = error.code, error.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, {"not json": raw.decode(errors="replace")[:300]}


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("wheel-install")


@pytest.fixture(scope="module")
def venv_env(work: Path) -> dict[str, str]:
    """A fresh virtualenv of the interpreter running the tests, first on PATH (``pip``, ``python``,
    ``django-admin`` are its own); nothing of the checkout on the import path."""
    subprocess.run([sys.executable, "-m", "venv", str(work / "venv")], check=True, timeout=CAP)
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "DJANGO_SETTINGS_MODULE", "VIRTUAL_ENV"}}
    env["PATH"] = f"{work / 'venv' / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(work / "venv")
    return env


@pytest.fixture(scope="module")
def project(work: Path, venv_env: dict[str, str]) -> Iterator[Path]:
    """A startproject with the README's steps applied; yields its folder (the one with manage.py)."""
    blocks = readme_blocks()
    assert [language for language, _ in blocks] == ["console", "python", "python", "python", "console"], (
        "the README's integration section changed shape: update this test's reading of it"
    )
    install, settings_block, views_block, urls_block, steps = (text for _, text in blocks)

    # The wheel, built from a copy of the checkout into dist/ (where the README's install line finds it).
    source = work / "source"
    source.mkdir()
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(REPO / name, source / name)
    run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", str(work / "dist"), str(source)],
        cwd=work,
        env=venv_env,
    )

    # The install line: the one that works today runs; the PyPI one names the distribution pyproject builds.
    commands = dict((comment.split(":")[0], command) for command, comment in console_commands(install))
    assert commands["once it is published on PyPI (it is not yet)"] == "pip install django-certauth"
    run(commands["today"], cwd=work, env=venv_env)

    run(["django-admin", "startproject", "mysite"], cwd=work, env=venv_env)
    site = work / "mysite"
    package = site / "mysite"
    for block, target, mode in (
        (settings_block, "settings.py", "a"),
        (views_block, "views.py", "w"),
        (urls_block, "urls.py", "a"),
    ):
        assert block.startswith(f"# {target}"), f"the README block for {target} must say so on its first line"
        with (package / target).open(mode) as file:
            file.write("\n" + block)

    # The files the README's steps name: ca.pem (the CA to trust) and billing.pem (a client's certificate),
    # from certauth's own development PKI.
    run(["python", "manage.py", "certauth", "devpki", "--out", "pki"], cwd=site, env=venv_env)
    shutil.copy2(site / "pki" / "ca.pem", site / "ca.pem")
    shutil.copy2(site / "pki" / "client.pem", site / "billing.pem")
    for command, _ in console_commands(steps):
        assert command.startswith("python manage.py "), command
        run(command, cwd=site, env=venv_env)
    yield site


@pytest.fixture(scope="module")
def server(project: Path, venv_env: dict[str, str]) -> Iterator[str]:
    """``manage.py runserver`` of that project; yields its base URL once it answers."""
    port = free_port()
    log = (project / "runserver.log").open("w")
    process = subprocess.Popen(
        ["python", "manage.py", "runserver", "--noreload", f"127.0.0.1:{port}"],
        cwd=project,
        env=venv_env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + CAP
        while True:
            assert process.poll() is None, f"runserver exited:\n{(project / 'runserver.log').read_text()}"
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=5):
                    break
            except OSError:
                assert time.monotonic() < deadline, "runserver did not start listening"
                time.sleep(0.2)
        yield base
    finally:
        process.terminate()
        process.wait(timeout=60)
        log.close()


def forwarded(pem_path: Path) -> dict[str, str]:
    """The headers nginx sends (nginx/README.md): the URL-escaped PEM and its verdict."""
    return {"X-SSL-Client-Cert": quote(pem_path.read_text(), safe=""), "X-SSL-Client-Verify": "SUCCESS"}


def thumbprint(pem_path: Path) -> str:
    return x509.load_pem_x509_certificate(pem_path.read_bytes()).fingerprint(hashes.SHA256()).hex()


def test_the_registered_certificate_is_the_identity(project: Path, server: str) -> None:
    status, body = get(f"{server}/api/orders/", forwarded(project / "billing.pem"))
    assert status == 200, body
    assert body == {"identity": "billing", "thumbprint": thumbprint(project / "billing.pem")}


def test_an_unregistered_certificate_is_a_401_with_its_reason(project: Path, server: str) -> None:
    status, body = get(f"{server}/api/orders/", forwarded(project / "pki" / "unregistered.pem"))
    assert (status, body.get("reason")) == (401, "unknown_certificate"), body
    assert body["detail"]


def test_nginx_refusals_reach_certauth(server: str) -> None:
    # include("certauth.urls"): where nginx sends what it refused, a JSON 401 and not Django's HTML 404.
    status, body = get(f"{server}/-/certauth/refused", {})
    assert (status, body.get("reason")) == (401, "missing_certificate"), body
