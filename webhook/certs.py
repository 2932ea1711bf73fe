"""Certificates for the webhook's TLS: a small CA and a serving certificate, and
a watcher that serves the current pair on every handshake.

The API server checks the serving certificate's SANs (``NAME.NS.svc``; a CN
alone is refused since Kubernetes 1.19) against the CA in the webhook
configuration's ``caBundle``.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import logging
import os
import ssl
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

log = logging.getLogger("gpu_shard_webhook.certs")

CA_CERT, CA_KEY, TLS_CERT, TLS_KEY = "ca.crt", "ca.key", "tls.crt", "tls.key"
LOCAL_NAMES = ("localhost",)
LOCAL_IPS = ("127.0.0.1", "::1")


def service_dns_names(service: str, namespace: str) -> list[str]:
    return [service, f"{service}.{namespace}", f"{service}.{namespace}.svc", f"{service}.{namespace}.svc.cluster.local"]


@dataclass(frozen=True)
class Bundle:
    ca_cert: bytes
    ca_key: bytes
    tls_cert: bytes
    tls_key: bytes


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def make_bundle(dns_names: Sequence[str], ip_addresses: Sequence[str] = LOCAL_IPS, days: int = 365) -> Bundle:
    """An ECDSA P-256 CA and a serving certificate signed by it."""
    now = datetime.datetime.now(datetime.UTC)
    start, end = now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=days)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gpu-shard-webhook CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),  # keyCertSign, cRLSign
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
    names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_addresses]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns_names[0] if dns_names else "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, False, False, False, False),  # digitalSignature
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return Bundle(
        ca_cert.public_bytes(serialization.Encoding.PEM),
        _key_pem(ca_key),
        cert.public_bytes(serialization.Encoding.PEM),
        _key_pem(key),
    )


def _write(path: Path, data: bytes, mode: int) -> None:
    """Write atomically (a reader never sees half a file) with the given mode."""
    temporary = path.with_name(f".{path.name}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(temporary, mode)
    os.replace(temporary, path)


def write_bundle(bundle: Bundle, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    _write(out / CA_CERT, bundle.ca_cert, 0o644)
    _write(out / CA_KEY, bundle.ca_key, 0o600)
    _write(out / TLS_KEY, bundle.tls_key, 0o600)
    _write(out / TLS_CERT, bundle.tls_cert, 0o644)


def ensure_serving_files(cert_dir: Path, service: str, namespace: str) -> bool:
    """Create a dev CA and serving pair when ``cert_dir`` has none; True when created."""
    if (cert_dir / TLS_CERT).exists() and (cert_dir / TLS_KEY).exists():
        return False
    names = [*LOCAL_NAMES, *service_dns_names(service, namespace)]
    write_bundle(make_bundle(names), cert_dir)
    return True


def fingerprint(pem: bytes) -> str:
    cert = x509.load_pem_x509_certificate(pem)
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


class CertWatcher:
    """Serves the certificate on disk now: the current SSLContext, rebuilt when the files change.

    :meth:`refresh` (called from the serving loop every second or two) compares the
    files' identity (inode, size, mtime) with the last load, as a cert-manager renewal
    or a Secret update changes it, and builds a new context from them; connections
    accepted afterwards use it, a handshake already in progress keeps the old one.
    A new context rather than the old one reloaded in place: ``load_cert_chain`` on a
    live context that fails half-way (the key written before the certificate) leaves it
    holding a certificate without its key, and every handshake then fails with
    "no shared cipher" (seen in the tests). A pair that fails to load keeps the previous
    context until the next refresh tries again, so no handshake fails during a rotation.
    """

    def __init__(self, cert_path: Path, key_path: Path) -> None:
        self.cert_path = cert_path
        self.key_path = key_path
        self._lock = threading.Lock()
        self._stamp: tuple[int, ...] | None = None
        self._context: ssl.SSLContext | None = None
        self.served_fingerprint: str | None = None
        self.not_after: float | None = None  # of the certificate served, as Unix time
        self.last_error: str | None = None

    def _identity(self) -> tuple[int, ...]:
        stamps: list[int] = []
        for path in (self.cert_path, self.key_path):
            status = path.stat()
            stamps += [status.st_ino, status.st_size, status.st_mtime_ns]
        return tuple(stamps)

    def _build(self) -> None:
        identity = self._identity()
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.cert_path, self.key_path)
        self._context, self._stamp = context, identity
        pem = self.cert_path.read_bytes()
        self.served_fingerprint = fingerprint(pem)
        self.not_after = x509.load_pem_x509_certificate(pem).not_valid_after_utc.timestamp()
        self.last_error = None

    def context(self) -> ssl.SSLContext:
        """The context to wrap a new connection with (built on first use: raises when unloadable)."""
        context = self._context
        if context is None:
            with self._lock:
                if self._context is None:
                    self._build()
                context = self._context
        assert context is not None
        return context

    def refresh(self) -> None:
        self.context()
        with self._lock:
            try:
                if self._identity() != self._stamp:
                    self._build()
                    log.info("serving the new certificate sha256:%s", (self.served_fingerprint or "")[:16])
            except (OSError, ssl.SSLError, ValueError) as error:
                if self.last_error != str(error):
                    log.warning("keeping the previous certificate: %s", error)
                self.last_error = str(error)

    def check(self) -> tuple[bool, str]:
        """Ready when the certificate served is the one on disk now."""
        try:
            self.context()
            on_disk = fingerprint(self.cert_path.read_bytes())
        except (OSError, ssl.SSLError, ValueError) as error:
            return False, f"certificate not loadable: {error}"
        if on_disk != self.served_fingerprint:
            return False, f"serving an old certificate ({self.last_error or 'reload pending'})"
        return True, f"serving certificate sha256:{on_disk[:16]}"
