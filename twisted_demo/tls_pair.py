"""
A certificate pair for HTTPS, parsed and checked: bytes in, a L{TLSPair} or
a L{ConfigError} out.  Pure and free of Twisted, so that it runs in the
parser process importing only C{cryptography} and pyOpenSSL.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta, timezone

from attrs import frozen
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    PrivateKeyTypes,
    PublicKeyTypes,
)
from OpenSSL import SSL

from twisted_demo.live import ConfigError

__all__ = [
    "CERT_FILE",
    "FLIGHT_LIMIT",
    "KEY_FILE",
    "NOT_BEFORE_LEEWAY",
    "ServableKey",
    "TLSPair",
    "handshake_flight",
    "load_pair",
    "parse_tls_files",
    "parse_tls_pair",
    "serving_context",
]

# The keys of a kubernetes.io/tls Secret, and so its files when mounted.
CERT_FILE = "tls.crt"
KEY_FILE = "tls.key"

# How far in the future a certificate's not-before may lie and still be
# taken: an issuer stamps a new certificate with its own clock, which may be
# ahead of this machine's.  A certificate further in the future is refused,
# so the current pair keeps serving instead of one no client accepts yet.
NOT_BEFORE_LEEWAY = timedelta(minutes=5)

# The most bytes the server's first handshake flight (its answer to a
# client's hello: the certificate and chain, and a few hundred bytes more)
# may take.  Twisted's TLS protocol moves 32 KiB from OpenSSL to the socket
# each time something happens on the connection (twisted/twisted#5095), and
# during a handshake nothing more happens until the client has the whole
# flight: a longer one would stall every handshake.  The flight is measured
# with a context like the server's; 256 bytes are left for what the
# server's own context may add to it (a few bytes in practice).
FLIGHT_LIMIT = 2**15 - 256


@frozen
class TLSPair:
    """
    A certificate chain and its private key, checked to belong together and
    to be valid when parsed.  Only bytes and plain values, so that it can
    come back from the parser process.

    @ivar certificate_pem: The certificate, then the chain that completes
        it, in PEM, as read.
    @ivar key_pem: The certificate's private key in PEM, as read.
    @ivar sha256: The SHA-256 fingerprint of the certificate in lower-case
        hex, as C{sha256sum} prints it for the DER form (C{openssl x509
        -fingerprint -sha256} prints it in upper case, with colons).
    @ivar subject: The certificate's subject, as an RFC 4514 string.
    @ivar serial: The certificate's serial number.
    @ivar not_before: The start of the certificate's validity, in UTC.
    @ivar not_after: The end of the certificate's validity, in UTC.
    """

    certificate_pem: bytes
    key_pem: bytes
    sha256: str
    subject: str
    serial: int
    not_before: datetime
    not_after: datetime


def parse_tls_pair(
    files: Mapping[str, bytes],
    *,
    cert_name: str = CERT_FILE,
    key_name: str = KEY_FILE,
    now: datetime | None = None,
) -> TLSPair:
    """
    Parse and check a certificate pair read from one generation of a
    directory, or refuse it with a L{ConfigError} naming the file and the
    reason.

    Refused: a certificate file with no PEM certificate, a key file with no
    unencrypted PEM private key, a key that is not the first certificate's,
    a certificate that has expired, and one whose validity starts more than
    L{NOT_BEFORE_LEEWAY} after C{now}.

    @param files: The files' contents by name.
    @param cert_name: The name of the certificate file in C{files}.
    @param key_name: The name of the private key file in C{files}.
    @param now: The time to check validity against; the current time when
        C{None}.
    """
    certificate_pem = _file(files, cert_name)
    key_pem = _file(files, key_name)
    try:
        chain = x509.load_pem_x509_certificates(certificate_pem)
    except ValueError:
        raise ConfigError(f"{cert_name}: no PEM certificate could be read") from None
    leaf = chain[0]
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except TypeError:
        raise ConfigError(
            f"{key_name}: the private key is encrypted; an unencrypted key is needed"
        ) from None
    except ValueError:
        raise ConfigError(f"{key_name}: no PEM private key could be read") from None
    if _servable(key) is None:
        raise ConfigError(
            f"{key_name}: a {type(key).__name__} cannot serve TLS; use RSA or ECDSA"
        )
    if _public_der(key.public_key()) != _public_der(leaf.public_key()):
        raise ConfigError(
            f"{key_name}: the private key does not match the certificate in {cert_name}"
        )
    when = datetime.now(timezone.utc) if now is None else now
    not_before, not_after = leaf.not_valid_before_utc, leaf.not_valid_after_utc
    if not_after <= when:
        raise ConfigError(
            f"{cert_name}: the certificate expired at {not_after.isoformat()}"
        )
    if not_before > when + NOT_BEFORE_LEEWAY:
        raise ConfigError(
            f"{cert_name}: the certificate is not valid until {not_before.isoformat()}"
        )
    pair = TLSPair(
        certificate_pem=certificate_pem,
        key_pem=key_pem,
        sha256=leaf.fingerprint(hashes.SHA256()).hex(),
        subject=leaf.subject.rfc4514_string(),
        serial=leaf.serial_number,
        not_before=not_before,
        not_after=not_after,
    )
    try:
        flight = handshake_flight(serving_context(pair))
    except Exception as e:
        # Parsed by cryptography yet not usable by OpenSSL: refused here
        # rather than at each handshake.
        raise ConfigError(
            f"{cert_name}: OpenSSL cannot serve this pair ({type(e).__name__})"
        ) from None
    if flight > FLIGHT_LIMIT:
        # The chain's size, not the flight's, which varies by a few bytes
        # with each signature: the same pair is refused in the same words.
        size = sum(len(c.public_bytes(serialization.Encoding.DER)) for c in chain)
        raise ConfigError(
            f"{cert_name}: the certificate chain is too large to serve "
            f"({size} bytes): a handshake with it takes more than the "
            f"{FLIGHT_LIMIT} bytes the server can send at once "
            f"(twisted/twisted#5095); use fewer names or a shorter chain"
        )
    return pair


def parse_tls_files(files: Mapping[str, bytes]) -> TLSPair:
    """
    L{parse_tls_pair} for two files of any names: the certificate's file
    first, then the key's, in the order the files were named to the live
    service (C{files=[cert, key]}), which reads them in that order.  A
    function of this module, so that the parser process finds it by its
    import path whatever the files are called.
    """
    if len(files) != 2:
        raise ConfigError(
            f"expected a certificate file and a key file, got {len(files)} files"
        )
    cert_name, key_name = files
    return parse_tls_pair(files, cert_name=cert_name, key_name=key_name)


ServableKey = (
    rsa.RSAPrivateKey
    | ec.EllipticCurvePrivateKey
    | ed25519.Ed25519PrivateKey
    | ed448.Ed448PrivateKey
    | dsa.DSAPrivateKey
)


def _servable(key: PrivateKeyTypes) -> ServableKey | None:
    """
    C{key} if it is of a kind pyOpenSSL can serve, else L{None}.
    """
    servable = (
        rsa.RSAPrivateKey,
        ec.EllipticCurvePrivateKey,
        ed25519.Ed25519PrivateKey,
        ed448.Ed448PrivateKey,
        dsa.DSAPrivateKey,
    )
    return key if isinstance(key, servable) else None


def load_pair(
    pair: TLSPair,
) -> tuple[x509.Certificate, list[x509.Certificate], ServableKey]:
    """
    The certificate, the chain after it and the private key of C{pair}.
    """
    leaf, *chain = x509.load_pem_x509_certificates(pair.certificate_pem)
    key = _servable(serialization.load_pem_private_key(pair.key_pem, password=None))
    if key is None:
        raise TypeError("a kind of private key pyOpenSSL cannot use")
    return leaf, chain, key


def serving_context(pair: TLSPair, context: SSL.Context | None = None) -> SSL.Context:
    """
    The one place where an OpenSSL server context is set up to serve
    C{pair}: C{context} (a new one with OpenSSL's defaults when L{None};
    the server passes one with Twisted's defaults for protocol versions,
    ciphers and sessions) with the certificate, its chain and its key,
    which OpenSSL checks to be the certificate's.
    """
    leaf, chain, key = load_pair(pair)
    if context is None:
        context = SSL.Context(SSL.TLS_SERVER_METHOD)
    context.use_certificate(leaf)
    context.use_privatekey(key)
    for certificate in chain:
        context.add_extra_chain_cert(certificate)
    context.check_privatekey()
    # An idle connection gives its read and write buffers back: 31 KB per
    # idle connection of the server rather than 55 KB.  Twisted's own
    # contexts set this too; set here, it holds whatever context is passed.
    context.set_mode(SSL.MODE_RELEASE_BUFFERS)
    return context


#: The protocol versions a client may ask for, newest first: the first
#: flight is measured for each, as its contents differ between them.
_VERSIONS = (SSL.TLS1_3_VERSION, SSL.TLS1_2_VERSION)


def handshake_flight(context: SSL.Context) -> int:
    """
    The bytes a server with C{context} sends in answer to a client's hello,
    for the longest of the protocol versions it completes one with: a
    handshake in memory, with no socket.

    @raise SSL.Error: If no version gets that far.
    """
    flights: list[int] = []
    error: SSL.Error | None = None
    for version in _VERSIONS:
        try:
            flights.append(_first_flight(context, version))
        except SSL.Error as e:
            error = e
    if not flights:
        assert error is not None
        raise error
    return max(flights)


def _first_flight(context: SSL.Context, version: int) -> int:
    client_context = SSL.Context(SSL.TLS_CLIENT_METHOD)
    client_context.set_max_proto_version(version)
    client = SSL.Connection(client_context, None)
    client.set_connect_state()
    server = SSL.Connection(context, None)
    server.set_accept_state()
    _step(client)
    server.bio_write(_drain(client))
    _step(server)
    return len(_drain(server))


def _step(connection: SSL.Connection) -> None:
    try:
        connection.do_handshake()
    except SSL.WantReadError:
        pass


def _drain(connection: SSL.Connection) -> bytes:
    """
    Everything C{connection} has to send now.
    """
    chunks = []
    while True:
        try:
            chunks.append(connection.bio_read(2**16))
        except SSL.WantReadError:
            return b"".join(chunks)


def _file(files: Mapping[str, bytes], name: str) -> bytes:
    try:
        return files[name]
    except KeyError:
        raise ConfigError(f"{name}: missing") from None


def _public_der(key: PublicKeyTypes) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER,
        serialization.PublicFormat.SubjectPublicKeyInfo,
    )
