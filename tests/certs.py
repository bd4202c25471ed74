"""
Certificates made for a test with C{cryptography}: a CA, leaves it issues
for localhost and 127.0.0.1, and the broken pairs a server must refuse.
"""

from __future__ import annotations

import ipaddress
from datetime import datetime, timedelta, timezone

from attrs import frozen
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from twisted_demo.tls import CERT_FILE, KEY_FILE, TLSPair
from twisted_demo.tls_pair import handshake_flight, serving_context


def new_key() -> ec.EllipticCurvePrivateKey:
    # P-256 keys are made in microseconds, where RSA takes a noticeable
    # share of a test on a busy machine.
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


@frozen
class Leaf:
    """
    A certificate and its key, as the files of a C{kubernetes.io/tls}
    Secret.
    """

    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    chain: tuple[x509.Certificate, ...] = ()

    @property
    def cert_pem(self) -> bytes:
        return b"".join(
            c.public_bytes(serialization.Encoding.PEM)
            for c in (self.certificate, *self.chain)
        )

    @property
    def key_pem(self) -> bytes:
        return key_pem(self.key)

    @property
    def sha256(self) -> str:
        return self.certificate.fingerprint(hashes.SHA256()).hex()

    def files(self) -> dict[str, bytes]:
        return {CERT_FILE: self.cert_pem, KEY_FILE: self.key_pem}


@frozen
class CA:
    """
    A self-signed certificate authority that issues leaves.
    """

    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @classmethod
    def make(cls, name: str = "configmapdemo test CA") -> CA:
        key = new_key()
        return cls._signed(name, key, _name(name), key)

    @classmethod
    def _signed(
        cls,
        name: str,
        key: ec.EllipticCurvePrivateKey,
        issuer: x509.Name,
        issuer_key: ec.EllipticCurvePrivateKey,
    ) -> CA:
        now = datetime.now(timezone.utc)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=30))
            .add_extension(
                x509.BasicConstraints(ca=True, path_length=None), critical=True
            )
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(issuer_key, hashes.SHA256())
        )
        return cls(certificate, key)

    @property
    def cert_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return key_pem(self.key)

    def intermediate(self, name: str = "configmapdemo test intermediate") -> CA:
        """
        A CA whose certificate this one issues: clients that trust only
        this one need the intermediate's certificate from the server.
        """
        return self._signed(name, new_key(), self.certificate.subject, self.key)

    def issue(
        self,
        name: str = "localhost",
        *,
        not_before: datetime | None = None,
        not_after: datetime | None = None,
        with_chain: bool = False,
        names: int = 0,
    ) -> Leaf:
        """
        A server certificate for localhost and 127.0.0.1, and C{names} more
        host names (as a certificate for many hosts has), valid from a day
        ago for a week unless told otherwise, with a new key.
        """
        now = datetime.now(timezone.utc)
        key = new_key()
        certificate = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(
                now - timedelta(days=1) if not_before is None else not_before
            )
            .not_valid_after(
                now + timedelta(days=7) if not_after is None else not_after
            )
            .add_extension(
                x509.SubjectAlternativeName(
                    [
                        x509.DNSName("localhost"),
                        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                        *(x509.DNSName(f"host-{i}.example.com") for i in range(names)),
                    ]
                ),
                critical=False,
            )
            .add_extension(
                x509.BasicConstraints(ca=False, path_length=None), critical=True
            )
            .add_extension(
                x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
                critical=False,
            )
            .sign(self.key, hashes.SHA256())
        )
        return Leaf(certificate, key, (self.certificate,) if with_chain else ())

    def expired(self) -> Leaf:
        """
        A leaf whose validity ended an hour ago.
        """
        now = datetime.now(timezone.utc)
        return self.issue(
            "expired",
            not_before=now - timedelta(days=2),
            not_after=now - timedelta(hours=1),
        )


def flight_of(leaf: Leaf) -> int:
    """
    The bytes of the server's first handshake flight with C{leaf}, however
    large, measured as the server measures it.
    """
    certificate = leaf.certificate
    pair = TLSPair(
        certificate_pem=leaf.cert_pem,
        key_pem=leaf.key_pem,
        sha256=leaf.sha256,
        subject=certificate.subject.rfc4514_string(),
        serial=certificate.serial_number,
        not_before=certificate.not_valid_before_utc,
        not_after=certificate.not_valid_after_utc,
    )
    return handshake_flight(serving_context(pair))


def leaf_with_flight(ca: CA, most: int, within: int = 512) -> Leaf:
    """
    A leaf for localhost with as many more host names as keep its first
    handshake flight at most C{most} bytes, and within C{within} of it.
    """
    base = flight_of(ca.issue())
    per_name = (flight_of(ca.issue(names=100)) - base) / 100
    names = int((most - base) / per_name)
    for _ in range(20):
        leaf = ca.issue(names=names)
        flight = flight_of(leaf)
        if most - within <= flight <= most:
            return leaf
        # Aim for the middle of the range, one name at least.
        step = int((most - within / 2 - flight) / per_name)
        names += step or (1 if flight < most else -1)
    raise AssertionError(f"no leaf with a flight within {within} of {most}")


def mismatched(leaf: Leaf) -> dict[str, bytes]:
    """
    C{leaf}'s certificate with some other key.
    """
    return {CERT_FILE: leaf.cert_pem, KEY_FILE: key_pem(new_key())}
