"""The certificate the join page and WHIP/WHEP are served with.

Browsers give a page the camera and microphone only on a secure origin, so
those pages are served over TLS: with the operator's certificate and key from
the settings (``tls_cert`` / ``tls_key``; a PEM chain is fine), or, when none
is given, a self-signed certificate made on first start in the state folder and
kept there, so its fingerprint (printed in the start banner) stays the same
across restarts and people who accepted it once are not asked again.
"""
from __future__ import annotations

import datetime as dt
import ipaddress
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.internet.interfaces import IOpenSSLContextFactory
from zope.interface import implementer

from gateway.files import write_private


class TlsError(Exception):
    """The certificate or key cannot be used (one line for the operator)."""


@dataclass(frozen=True)
class Certificate:
    cert: Path
    key: Path
    fingerprint: str          # SHA-256, AA:BB:… as browsers show it
    self_signed: bool
    made_now: bool = False


def default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "cau"


def _fingerprint(cert: x509.Certificate) -> str:
    return ":".join(f"{b:02X}" for b in cert.fingerprint(hashes.SHA256()))


def load(cert_path: Path, key_path: Path, *, self_signed: bool = False) -> Certificate:
    try:
        data = cert_path.read_bytes()
        key_data = key_path.read_bytes()
    except OSError as exc:
        raise TlsError(f"cannot read {exc.filename}: {exc.strerror}") from None
    try:
        cert = x509.load_pem_x509_certificate(data)
    except ValueError:
        raise TlsError(f"{cert_path} is not a PEM certificate") from None
    try:
        key = serialization.load_pem_private_key(key_data, password=None)
    except (ValueError, TypeError):
        raise TlsError(f"{key_path} is not an unencrypted PEM private key") from None
    pub = cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    if key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo) != pub:
        raise TlsError(f"{key_path} is not the private key of {cert_path}")
    return Certificate(cert_path, key_path, _fingerprint(cert), self_signed)


def trust_root(spec: str):
    """The trust root outgoing SIP over TLS verifies far certificates with: ``"system"`` (the
    platform's CAs) or a PEM file of one or more CA certificates (the province's or the national
    network's CA). Returns a Twisted trust root and a one-line description; TlsError otherwise."""
    from twisted.internet import ssl

    if spec == "system":
        return ssl.platformTrust(), "the system's CAs"
    path = Path(spec)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise TlsError(f"tls_ca: cannot read {path}: {exc.strerror}") from None
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError:
        certs = []
    if not certs:
        raise TlsError(f"tls_ca: {path} holds no PEM certificate (-----BEGIN CERTIFICATE-----)")
    now = dt.datetime.now(dt.timezone.utc)
    def until(c: x509.Certificate) -> dt.datetime:       # cryptography < 42 has no *_utc
        return getattr(c, "not_valid_after_utc", None) or c.not_valid_after.replace(tzinfo=dt.timezone.utc)

    if all(until(c) < now for c in certs):
        raise TlsError(f"tls_ca: every certificate in {path} has expired")
    roots = [ssl.Certificate.loadPEM(c.public_bytes(serialization.Encoding.PEM)) for c in certs]
    return ssl.trustRootFromCertificates(roots), f"{len(certs)} CA certificate{'s' * (len(certs) != 1)} of {path}"


def self_signed(state_dir: Path, addresses: list[str]) -> Certificate:
    """The kept self-signed certificate in ``state_dir/tls``, made now when there is none."""
    folder = state_dir / "tls"
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    if cert_path.exists() and key_path.exists():
        return load(cert_path, key_path, self_signed=True)
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise TlsError(f"cannot make {folder} for the self-signed certificate: {exc.strerror} "
                       "(set state_dir, or tls_cert and tls_key, in the settings)") from None
    key = ec.generate_private_key(ec.SECP256R1())
    host = socket.gethostname() or "cau"
    names: list[x509.GeneralName] = [x509.DNSName(host), x509.DNSName("localhost")]
    for a in dict.fromkeys(["127.0.0.1", "::1", *addresses]):
        try:
            ip = ipaddress.ip_address(a)
        except ValueError:
            continue
        if not ip.is_unspecified:
            names.append(x509.IPAddress(ip))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host),
                         x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Cầu gateway (self-signed)")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=825))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(key, hashes.SHA256()))
    try:
        write_private(key_path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                  serialization.NoEncryption()))
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    except OSError as exc:
        raise TlsError(f"cannot write the self-signed certificate into {folder}: {exc.strerror}") from None
    return Certificate(cert_path, key_path, _fingerprint(cert), True, made_now=True)


@implementer(IOpenSSLContextFactory)
class ContextFactory:
    """A Twisted TLS context factory for a PEM chain and key (TLS 1.2 or newer)."""

    def __init__(self, cert: Certificate) -> None:
        from OpenSSL import SSL

        ctx = SSL.Context(SSL.TLS_SERVER_METHOD)
        ctx.set_min_proto_version(SSL.TLS1_2_VERSION)
        try:
            ctx.use_certificate_chain_file(str(cert.cert))
            ctx.use_privatekey_file(str(cert.key))
            ctx.check_privatekey()
        except SSL.Error as exc:
            raise TlsError(f"{cert.cert} / {cert.key} cannot be used for TLS: {exc}") from None
        self._ctx = ctx

    def getContext(self) -> object:  # noqa: N802 (Twisted)
        return self._ctx
