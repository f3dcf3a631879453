"""A real OCSP responder for tests and the benchmark: ``openssl ocsp -index ... -port ...`` run on a free
port, answering from an OpenSSL CA database (``index.txt``) written here from devpki-issued certificates.

    responder = OcspResponder(tmp_path, ca)             # the port (and so the URL) is chosen here
    leaf = devpki.issue_client(ca, "x", ocsp_url=responder.url)  # certificates name it in their AIA
    with responder.start(good=[leaf], revoked=[old]):
        ...

Development and test tooling only.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType

from cryptography import x509

from certauth import devpki

from .stack import free_port

#: How long the responder may take to start listening (a busy machine): a bound, not an expectation.
START_SECONDS = 30.0


def _openssl_time(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%y%m%d%H%M%SZ")


Certificate = devpki.Issued | x509.Certificate


def _certificate(issued: Certificate) -> x509.Certificate:
    return issued.certificate if isinstance(issued, devpki.Issued) else issued


def _serial(certificate: x509.Certificate) -> str:
    text = format(certificate.serial_number, "X")
    return text if len(text) % 2 == 0 else "0" + text  # OpenSSL's BN_bn2hex: whole bytes


def index_line(issued: Certificate, revoked_at: dt.datetime | None = None, reason: str = "") -> str:
    """One line of OpenSSL's CA database: V(alid) or R(evoked), expiry, revocation time[,reason], serial,
    file name, subject."""
    certificate = _certificate(issued)
    revocation = "" if revoked_at is None else _openssl_time(revoked_at) + (f",{reason}" if reason else "")
    subject = "/" + "/".join(
        f"{attribute.rfc4514_attribute_name}={attribute.value!s}" for attribute in certificate.subject
    )
    flag = "V" if revoked_at is None else "R"
    return "\t".join(
        [flag, _openssl_time(certificate.not_valid_after_utc), revocation, _serial(certificate), "unknown", subject]
    )


class OcspResponder:
    """``openssl ocsp`` answering for ``ca``: ``good`` certificates (``start``) are valid, ``revoked`` ones
    revoked, any other serial ``unknown``.  Responses are signed by ``signer`` (default: the CA itself);
    ``next_minutes`` sets their nextUpdate (``-nmin``; none by default)."""

    def __init__(
        self,
        directory: Path,
        ca: devpki.Issued,
        *,
        signer: devpki.Issued | None = None,
        next_minutes: int | None = None,
        name: str = "ocsp",
    ) -> None:
        self.directory = Path(directory) / name
        self.directory.mkdir(parents=True, exist_ok=True)
        self.ca, self.signer, self.next_minutes = ca, signer or ca, next_minutes
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, good: Iterable[Certificate] = (), revoked: Iterable[Certificate] = ()) -> OcspResponder:
        """Write the CA database and start ``openssl ocsp``; returns once it accepts connections."""
        revoked_at = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
        lines = [index_line(issued) for issued in good]
        lines += [index_line(issued, revoked_at, "keyCompromise") for issued in revoked]
        (self.directory / "index.txt").write_text("".join(line + "\n" for line in lines))
        (self.directory / "index.txt.attr").write_text("unique_subject = no\n")
        (self.directory / "ca.pem").write_bytes(self.ca.cert_pem())
        (self.directory / "signer.pem").write_bytes(self.signer.cert_pem())
        key = self.directory / "signer.key"
        key.touch(mode=0o600)
        key.write_bytes(self.signer.key_pem())
        command = [
            "openssl", "ocsp", "-index", "index.txt", "-port", str(self.port), "-CA", "ca.pem",
            "-rsigner", "signer.pem", "-rkey", "signer.key", "-ignore_err",
        ]  # fmt: skip
        if self.next_minutes is not None:
            command += ["-nmin", str(self.next_minutes)]
        with open(self.directory / "stderr.log", "wb") as stderr:
            self.process = subprocess.Popen(command, cwd=self.directory, stdout=subprocess.DEVNULL, stderr=stderr)
        # Ready once it says so (after listen()).  Not a TCP probe: an empty connection stalls this
        # single-process responder until its next request times out.
        deadline = time.monotonic() + START_SECONDS
        log = self.directory / "stderr.log"
        while time.monotonic() < deadline:
            if "waiting for OCSP client connections" in log.read_text(errors="replace"):
                return self
            if self.process.poll() is not None:
                raise RuntimeError(f"openssl ocsp exited: {log.read_text(errors='replace')}")
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("openssl ocsp did not start listening")

    def stop(self) -> None:
        """Kill the responder (the one process this object started)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)

    def __enter__(self) -> OcspResponder:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()
