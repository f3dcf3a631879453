"""Client certificates made by the PKI tools people actually use, each with the tool's OWN documented client
recipe, for tests/test_real_issuers.py and tests/e2e/test_real_issuers.py (issue 12).

certauth's own dev PKI (certauth.devpki) is made with ``cryptography`` and so only proves that certauth
accepts what certauth makes.  Each case here runs the real program (easy-rsa 3, mkcert, GnuTLS certtool,
cfssl, openssl) the way its documentation tells a user to make a CA and a client certificate, in a private
temporary directory, with no prompt and nothing installed anywhere else (mkcert never gets ``-install``, easy-rsa
gets its own ``EASYRSA_PKI``).  docs/issuers.md repeats the same commands for operators.

A tool that is missing skips its cases only when nobody could have installed it: not root and
``CERTAUTH_REQUIRE_TOOLS`` unset.  ``make test`` runs scripts/install-system-deps.sh (which installs them all)
and sets ``CERTAUTH_REQUIRE_TOOLS=1``; as root (CI) a missing tool is a failure, never a silent skip."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

EASYRSA = Path("/usr/share/easy-rsa/easyrsa")  # Debian's easy-rsa package: not on PATH

#: The extensions a v3 client certificate needs, for ``openssl x509 -req ... -extfile`` (the openssl recipes).
OPENSSL_CLIENT_EXTENSIONS = """\
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
"""

#: An intermediate CA's extensions, for the openssl root -> intermediate -> client recipe.
OPENSSL_INTERMEDIATE_EXTENSIONS = """\
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
"""


@dataclass(frozen=True)
class ToolPKI:
    """What one tool made: the CAs to trust (root first, then intermediates) and one client certificate + key."""

    case: str
    tool: str
    directory: Path
    authorities: tuple[Path, ...]
    client_cert: Path
    client_key: Path

    def client_pem(self) -> bytes:
        """The client certificate alone, PEM (what nginx forwards); a tool may write text before the PEM block."""
        return self.client().public_bytes(Encoding.PEM)

    def client(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.client_cert.read_bytes())

    def authorities_loaded(self) -> list[x509.Certificate]:
        """The CA certificates, root first (a tool may write text before the PEM block: it is skipped)."""
        return [x509.load_pem_x509_certificate(path.read_bytes()) for path in self.authorities]

    def authority_pems(self) -> list[bytes]:
        return [certificate.public_bytes(Encoding.PEM) for certificate in self.authorities_loaded()]

    @property
    def identity(self) -> str:
        """The identity name the tests register this client on."""
        return f"{self.case}-client"


class ToolFailed(AssertionError):
    pass


def run(command: str, cwd: Path, *, env: dict[str, str] | None = None, stdin: bytes | None = None) -> bytes:
    """Run one tool command, written as in the tool's documentation (split like a shell would, no shell);
    a failure shows the command and everything the tool printed."""
    result = subprocess.run(
        shlex.split(command),
        cwd=cwd,
        env={**os.environ, **(env or {})},
        input=stdin if stdin is not None else b"",
        capture_output=True,
        timeout=120,
        check=False,
    )
    if result.returncode != 0:
        output = (result.stdout + result.stderr).decode(errors="replace")
        raise ToolFailed(f"`{command}` exited {result.returncode} in {cwd}:\n{output}")
    return result.stdout


# --- easy-rsa 3 -------------------------------------------------------------------------------------------------
def easyrsa(directory: Path) -> ToolPKI:
    """easy-rsa 3's quick start (``easyrsa help``): init-pki, build-ca nopass, build-client-full NAME nopass.
    Batch mode, the CA's CN from EASYRSA_REQ_CN (easy-rsa refuses it for build-client-full: the NAME is the CN).
    easy-rsa's CA has a NON-critical basicConstraints (its x509-types/ca)."""
    pki = directory / "pki"
    env = {"EASYRSA_PKI": str(pki), "EASYRSA_BATCH": "1", "EASYRSA_ALGO": "rsa", "EASYRSA_KEY_SIZE": "2048"}
    run(f"{EASYRSA} init-pki", directory, env=env)
    run(f"{EASYRSA} build-ca nopass", directory, env={**env, "EASYRSA_REQ_CN": "easy-rsa test CA"})
    run(f"{EASYRSA} build-client-full easyrsa-client nopass", directory, env=env)
    return ToolPKI(
        "easy-rsa", "easy-rsa", directory, (pki / "ca.crt",), pki / "issued" / "easyrsa-client.crt",
        pki / "private" / "easyrsa-client.key",
    )  # fmt: skip


# --- mkcert ---------------------------------------------------------------------------------------------------
def mkcert(directory: Path) -> ToolPKI:
    """``mkcert -client NAME`` with ``CAROOT`` in the temp dir: mkcert creates its CA there on first use.
    Never ``-install``: that would add the CA to the system trust store (TRUST_STORES=none, to be sure)."""
    caroot = directory / "caroot"
    env = {"CAROOT": str(caroot), "TRUST_STORES": "none"}
    run("mkcert -client -cert-file client.pem -key-file client-key.pem mkcert-client@example.com", directory, env=env)
    return ToolPKI(
        "mkcert", "mkcert", directory, (caroot / "rootCA.pem",), directory / "client.pem", directory / "client-key.pem"
    )


# --- GnuTLS certtool ----------------------------------------------------------------------------------------------
CERTTOOL_CA_TEMPLATE = """\
cn = "certtool test CA"
organization = "Example"
serial = 001
expiration_days = 365
ca
cert_signing_key
crl_signing_key
"""

# certtool(1) "Certificate template": a TLS client certificate is tls_www_client, with signing_key (digital
# signature) and encryption_key (key encipherment: certtool leaves it out for the EC key used here).
CERTTOOL_CLIENT_TEMPLATE = """\
cn = "certtool-client"
organization = "Example"
expiration_days = 30
tls_www_client
signing_key
encryption_key
"""


def certtool(directory: Path) -> ToolPKI:
    """certtool(1)'s examples: --generate-privkey, --generate-self-signed with a CA template, then
    --generate-certificate with a ``tls_www_client`` template (EC P-256 keys: fast)."""
    (directory / "ca.tmpl").write_text(CERTTOOL_CA_TEMPLATE)
    (directory / "client.tmpl").write_text(CERTTOOL_CLIENT_TEMPLATE)
    key = "--key-type=ecdsa --curve=secp256r1"
    run(f"certtool --generate-privkey {key} --outfile ca-key.pem", directory)
    run("certtool --generate-self-signed --load-privkey ca-key.pem --template ca.tmpl --outfile ca-cert.pem", directory)
    run(f"certtool --generate-privkey {key} --outfile client-key.pem", directory)
    run(
        "certtool --generate-certificate --load-privkey client-key.pem --load-ca-certificate ca-cert.pem "
        "--load-ca-privkey ca-key.pem --template client.tmpl --outfile client.pem",
        directory,
    )
    return ToolPKI(
        "certtool", "certtool", directory, (directory / "ca-cert.pem",), directory / "client.pem",
        directory / "client-key.pem",
    )  # fmt: skip


# --- cfssl ------------------------------------------------------------------------------------------------------
#: cfssl's README/doc: a signing config with a "client" profile (usages signing, key encipherment, client auth)
#: and, for the intermediate, a profile with a CA constraint.
CFSSL_CONFIG = {
    "signing": {
        "default": {"expiry": "720h"},
        "profiles": {
            "client": {"expiry": "720h", "usages": ["signing", "key encipherment", "client auth"]},
            "intermediate": {
                "expiry": "720h",
                "usages": ["signing", "digital signature", "cert sign", "crl sign"],
                "ca_constraint": {"is_ca": True, "max_path_len": 0, "max_path_len_zero": True},
            },
        },
    }
}


def _csr(common_name: str) -> str:
    return json.dumps({"CN": common_name, "key": {"algo": "ecdsa", "size": 256}, "names": [{"O": "Example"}]})


def _cfssl(directory: Path, command: str, bare: str) -> None:
    """``cfssl <command> | cfssljson -bare <bare>``: writes <bare>.pem, <bare>-key.pem, <bare>.csr."""
    run(f"cfssljson -bare {bare}", directory, stdin=run(f"cfssl {command}", directory))


def _cfssl_ca(directory: Path) -> None:
    (directory / "config.json").write_text(json.dumps(CFSSL_CONFIG))
    (directory / "ca-csr.json").write_text(_csr("cfssl test CA"))
    (directory / "client-csr.json").write_text(_csr("cfssl-client"))
    _cfssl(directory, "gencert -initca ca-csr.json", "ca")


def cfssl(directory: Path) -> ToolPKI:
    """``cfssl gencert -initca`` then ``cfssl gencert -ca ca.pem -ca-key ca-key.pem -config config.json
    -profile client``."""
    _cfssl_ca(directory)
    _cfssl(
        directory, "gencert -ca ca.pem -ca-key ca-key.pem -config config.json -profile client client-csr.json", "client"
    )
    return ToolPKI(
        "cfssl", "cfssl", directory, (directory / "ca.pem",), directory / "client.pem", directory / "client-key.pem"
    )


def cfssl_intermediate(directory: Path) -> ToolPKI:
    """cfssl root -> intermediate -> client: the intermediate's key and CSR from ``gencert -initca``, signed by
    the root with ``cfssl sign -profile intermediate``; the client from ``gencert -ca intermediate.pem``."""
    _cfssl_ca(directory)
    (directory / "intermediate-csr.json").write_text(_csr("cfssl test intermediate"))
    _cfssl(directory, "gencert -initca intermediate-csr.json", "intermediate")
    _cfssl(
        directory,
        "sign -ca ca.pem -ca-key ca-key.pem -config config.json -profile intermediate intermediate.csr",
        "intermediate",
    )
    _cfssl(
        directory,
        "gencert -ca intermediate.pem -ca-key intermediate-key.pem -config config.json -profile client client-csr.json",
        "client",
    )
    return ToolPKI(
        "cfssl-intermediate", "cfssl", directory, (directory / "ca.pem", directory / "intermediate.pem"),
        directory / "client.pem", directory / "client-key.pem",
    )  # fmt: skip


# --- openssl ----------------------------------------------------------------------------------------------------
def _openssl_client(directory: Path, issuer: str, key: str, common_name: str) -> None:
    """A CSR for ``key``, then ``openssl x509 -req -CA <issuer>.pem ... -extfile client.ext``: the v3 extensions
    that make it a client certificate (without -extfile OpenSSL 3.0 writes a v1 certificate: openssl_seed_v1)."""
    (directory / "client.ext").write_text(OPENSSL_CLIENT_EXTENSIONS)
    run(f"openssl req -new {key} -out client.csr -subj '/CN={common_name}/O=Example'", directory)
    run(
        f"openssl x509 -req -in client.csr -CA {issuer}.pem -CAkey {issuer}.key -CAcreateserial -days 30 "
        "-out client.pem -extfile client.ext",
        directory,
    )


def _openssl_tool(case: str, directory: Path, authorities: tuple[str, ...]) -> ToolPKI:
    return ToolPKI(
        case, "openssl", directory, tuple(directory / f"{name}.pem" for name in authorities),
        directory / "client.pem", directory / "client.key",
    )  # fmt: skip


def openssl_default(directory: Path) -> ToolPKI:
    """``openssl req -x509`` with the distribution's default openssl.cnf (Debian's v3_ca: basicConstraints,
    SKI, AKI and NO keyUsage), then a v3 client via ``-extfile``."""
    run(
        "openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 30 "
        "-subj '/CN=openssl default CA/O=Example'",
        directory,
    )
    _openssl_client(directory, "ca", "-newkey rsa:2048 -nodes -keyout client.key", "openssl-client")
    return _openssl_tool("openssl", directory, ("ca",))


def _openssl_edwards(case: str, algorithm: str, directory: Path) -> ToolPKI:
    """An EdDSA CA (``openssl genpkey -algorithm ed25519|ed448``; keyUsage keyCertSign added so the only
    difference from a common CA is the algorithm) and an EdDSA client key."""
    run(f"openssl genpkey -algorithm {algorithm} -out ca.key", directory)
    run(
        f"openssl req -x509 -new -key ca.key -out ca.pem -days 30 -subj '/CN=openssl {algorithm} CA/O=Example' "
        "-addext keyUsage=critical,keyCertSign,cRLSign",
        directory,
    )
    run(f"openssl genpkey -algorithm {algorithm} -out client.key", directory)
    _openssl_client(directory, "ca", "-key client.key", f"openssl-{algorithm}-client")
    return _openssl_tool(case, directory, ("ca",))


def openssl_ed25519(directory: Path) -> ToolPKI:
    return _openssl_edwards("openssl-ed25519", "ed25519", directory)


def openssl_ed448(directory: Path) -> ToolPKI:
    return _openssl_edwards("openssl-ed448", "ed448", directory)


def openssl_intermediate(directory: Path) -> ToolPKI:
    """root (EC P-256, keyUsage keyCertSign) -> intermediate (``-extfile`` with CA:TRUE, pathlen:0) -> client."""
    ec = "-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes"
    run(
        f"openssl req -x509 {ec} -keyout ca.key -out ca.pem -days 30 -subj '/CN=openssl root CA/O=Example' "
        "-addext keyUsage=critical,keyCertSign,cRLSign",
        directory,
    )
    (directory / "intermediate.ext").write_text(OPENSSL_INTERMEDIATE_EXTENSIONS)
    run(
        f"openssl req -new {ec} -keyout intermediate.key -out intermediate.csr "
        "-subj '/CN=openssl intermediate CA/O=Example'",
        directory,
    )
    run(
        "openssl x509 -req -in intermediate.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 30 "
        "-out intermediate.pem -extfile intermediate.ext",
        directory,
    )
    _openssl_client(directory, "intermediate", f"{ec} -keyout client.key", "openssl-chained-client")
    return _openssl_tool("openssl-intermediate", directory, ("ca", "intermediate"))


def openssl_seed_v1(directory: Path) -> ToolPKI:
    """The widely copied recipe (an X.509 client-authentication tutorial, /work/shared/seeds/000_...), command for
    command: ``openssl x509 -req`` WITHOUT ``-extfile`` writes an X.509 v1 certificate (no extensions at all).
    certauth must refuse it with ``unsupported_certificate`` and say how to reissue it."""
    run("openssl genrsa -out ca.key 4096", directory)
    run('openssl req -new -x509 -days 3650 -key ca.key -out ca.crt -subj "/CN=MyDev CA/O=MyCompany/C=RO"', directory)
    run("openssl genrsa -out client.key 2048", directory)
    run('openssl req -new -key client.key -out client.csr -subj "/CN=my-service/O=MyCompany/C=RO"', directory)
    run(
        "openssl x509 -req -days 365 -in client.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out client.crt",
        directory,
    )
    return ToolPKI(
        "openssl-seed-v1", "openssl", directory, (directory / "ca.crt",), directory / "client.crt",
        directory / "client.key",
    )  # fmt: skip


#: case -> (the program it needs, builder).  ACCEPTED cases must authenticate; openssl-seed-v1 must be refused.
BUILDERS: dict[str, tuple[str, Callable[[Path], ToolPKI]]] = {
    "easy-rsa": (str(EASYRSA), easyrsa),
    "mkcert": ("mkcert", mkcert),
    "certtool": ("certtool", certtool),
    "cfssl": ("cfssl", cfssl),
    "cfssl-intermediate": ("cfssl", cfssl_intermediate),
    "openssl": ("openssl", openssl_default),
    "openssl-ed25519": ("openssl", openssl_ed25519),
    "openssl-ed448": ("openssl", openssl_ed448),
    "openssl-intermediate": ("openssl", openssl_intermediate),
    "openssl-seed-v1": ("openssl", openssl_seed_v1),
}
ACCEPTED = [case for case in BUILDERS if case != "openssl-seed-v1"]
#: The Debian package that brings each program (scripts/install-system-deps.sh installs them).
PACKAGES = {
    str(EASYRSA): "easy-rsa",
    "mkcert": "mkcert",
    "certtool": "gnutls-bin",
    "cfssl": "golang-cfssl",
    "openssl": "openssl",
    "promtool": "prometheus",
}


def tool_present(program: str) -> bool:
    if program.startswith("/"):
        return os.access(program, os.X_OK)
    return shutil.which(program) is not None and (program != "cfssl" or shutil.which("cfssljson") is not None)


def require_tool(program: str) -> None:
    """Skip when ``program`` is missing and nobody could have installed it; fail when it should be there."""
    if tool_present(program):
        return
    package = PACKAGES.get(program, program)
    message = f"{program} is missing (Debian package {package}): run scripts/install-system-deps.sh"
    if os.environ.get("CERTAUTH_REQUIRE_TOOLS") == "1" or os.geteuid() == 0:
        pytest.fail(f"{message} (required: CERTAUTH_REQUIRE_TOOLS=1 or running as root)", pytrace=False)
    pytest.skip(message)


class RealIssuers:
    """Builds each case on first use, once per test session, in its own subdirectory of ``base``."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self._built: dict[str, ToolPKI] = {}

    def __getitem__(self, case: str) -> ToolPKI:
        if case not in self._built:
            program, builder = BUILDERS[case]
            require_tool(program)
            directory = self.base / case
            directory.mkdir()
            self._built[case] = builder(directory)
        return self._built[case]
