"""Just enough DER to build certificates ``cryptography`` refuses to build (v1, negative or oversized
serials, MD5/SHA-1 signatures): split a TBSCertificate into its fields, change them, sign again."""

from __future__ import annotations

from collections.abc import Callable

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa


def _length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def tlv(tag: int, content: bytes) -> bytes:
    return bytes([tag]) + _length(len(content)) + content


def split(data: bytes) -> list[bytes]:
    """The TLVs directly inside one constructed value's content."""
    items, i = [], 0
    while i < len(data):
        start = i
        i += 1
        first = data[i]
        i += 1
        if first & 0x80:
            count = first & 0x7F
            length = int.from_bytes(data[i : i + count], "big")
            i += count
        else:
            length = first
        i += length
        items.append(data[start:i])
    return items


def content(item: bytes) -> bytes:
    first = item[1]
    offset = 2 + (first & 0x7F if first & 0x80 else 0)
    return item[offset:]


def integer(value: int) -> bytes:
    length = max(1, (value.bit_length() + 8) // 8) if value >= 0 else ((-value - 1).bit_length() + 8) // 8
    return tlv(0x02, value.to_bytes(length, "big", signed=True))


OIDS = {  # AlgorithmIdentifier DER for RSA signatures
    "sha256": bytes.fromhex("300d06092a864886f70d01010b0500"),
    "sha1": bytes.fromhex("300d06092a864886f70d0101050500"),
    "md5": bytes.fromhex("300d06092a864886f70d0101040500"),
}
HASHES = {"sha256": hashes.SHA256(), "sha1": hashes.SHA1(), "md5": hashes.MD5()}


def resign(
    certificate: x509.Certificate,
    issuer_key: rsa.RSAPrivateKey,
    *,
    transform: Callable[[list[bytes]], list[bytes]] = lambda fields: fields,
    digest: str = "sha256",
) -> x509.Certificate:
    """Rebuild ``certificate`` with its TBS fields passed through ``transform``, signed by an RSA key
    with ``digest`` (which ``cryptography``'s builder would refuse for md5/sha1)."""
    fields = split(content(certificate.tbs_certificate_bytes))
    fields = transform(fields)
    # the TBS "signature" AlgorithmIdentifier is the field after the serial
    index = 2 if fields[0][0] == 0xA0 else 1
    fields[index] = OIDS[digest]
    tbs = tlv(0x30, b"".join(fields))
    signature = issuer_key.sign(tbs, padding.PKCS1v15(), HASHES[digest])
    der = tlv(0x30, tbs + OIDS[digest] + tlv(0x03, b"\x00" + signature))
    return x509.load_der_x509_certificate(der)


def der_bytes(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.DER)


# The order n of each curve's base point: an ECDSA signature (r, s) verifies exactly when (r, n - s) does.
CURVE_ORDERS = {
    "secp256r1": 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551,
    "secp384r1": int(
        "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFC7634D81F4372DDF581A0DB248B0A77AECEC196ACCC52973", 16
    ),
}


def ecdsa_twin(certificate: x509.Certificate, issuer: x509.Certificate) -> x509.Certificate:
    """The same signed certificate with its ECDSA signature re-encoded as (r, n - s): the TBS (serial,
    subject, key, validity) is untouched and the issuer's signature still verifies, but the DER, and so the
    SHA-256 thumbprint, differ.  Anyone can do this with public data alone: no key is needed."""
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

    issuer_key = issuer.public_key()
    assert isinstance(issuer_key, ec.EllipticCurvePublicKey), "only an ECDSA signature has an (r, n - s) twin"
    order = CURVE_ORDERS[issuer_key.curve.name]
    tbs, algorithm, _signature = split(content(der_bytes(certificate)))
    r, s = decode_dss_signature(certificate.signature)
    signature = encode_dss_signature(r, order - s)
    twin = x509.load_der_x509_certificate(tlv(0x30, tbs + algorithm + tlv(0x03, b"\x00" + signature)))
    twin.verify_directly_issued_by(issuer)  # the point: it is as valid as the original
    return twin
