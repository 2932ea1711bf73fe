"""Certificates made by the project, and the watcher that rotates them without a restart."""

from __future__ import annotations

import contextlib
import ipaddress
import ssl
import subprocess
import sys
import time
from pathlib import Path

import requests
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from tests.harness import ROOT, running_server, verifying_session
from webhook.certs import CertWatcher, fingerprint, make_bundle, service_dns_names, write_bundle


def test_certs_command_writes_a_ca_and_a_serving_pair_for_the_service(tmp_path: Path) -> None:
    out = tmp_path / "certs"
    subprocess.run(
        [sys.executable, "-m", "webhook", "certs", "--service", "gsw", "--namespace", "gpu", "--out", str(out), "--days", "30"],
        check=True,
        cwd=ROOT,
    )
    assert sorted(p.name for p in out.iterdir()) == ["ca.crt", "ca.key", "tls.crt", "tls.key"]
    assert (out / "tls.key").stat().st_mode & 0o777 == 0o600
    assert (out / "ca.key").stat().st_mode & 0o777 == 0o600
    cert = x509.load_pem_x509_certificate((out / "tls.crt").read_bytes())
    ca = x509.load_pem_x509_certificate((out / "ca.crt").read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {"gsw", "gsw.gpu", "gsw.gpu.svc", "gsw.gpu.svc.cluster.local"} <= set(names.get_values_for_type(x509.DNSName))
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey) and cert.public_key().curve.name == "secp256r1"
    cert.verify_directly_issued_by(ca)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    assert 29 <= (cert.not_valid_after_utc - cert.not_valid_before_utc).days <= 31


def test_the_api_servers_tls_check_accepts_the_service_name(tmp_path: Path) -> None:
    bundle = make_bundle(service_dns_names("gsw", "gpu"), ip_addresses=["127.0.0.1"])
    write_bundle(bundle, tmp_path)
    client = ssl.create_default_context(cafile=str(tmp_path / "ca.crt"))
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(tmp_path / "tls.crt", tmp_path / "tls.key")
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    back_in, back_out = ssl.MemoryBIO(), ssl.MemoryBIO()
    client_side = client.wrap_bio(incoming, outgoing, server_hostname="gsw.gpu.svc")
    server_side = server.wrap_bio(back_in, back_out, server_side=True)
    for _ in range(10):
        for side in (client_side, server_side):
            with contextlib.suppress(ssl.SSLWantReadError):
                side.do_handshake()
        back_in.write(outgoing.read())
        incoming.write(back_out.read())
    assert client_side.getpeercert()["subjectAltName"]
    sans = x509.load_pem_x509_certificate(bundle.tls_cert).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.ip_address("127.0.0.1") in sans.get_values_for_type(x509.IPAddress)


def served_certificate(context: ssl.SSLContext, ca: bytes) -> bytes:
    """The certificate a handshake with ``context`` presents (in memory, no sockets)."""
    client_context = ssl.create_default_context(cadata=ca.decode())
    server_in, server_out, client_in, client_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    server = context.wrap_bio(server_in, server_out, server_side=True)
    client = client_context.wrap_bio(client_in, client_out, server_hostname="localhost")
    for _ in range(10):
        for side in (client, server):
            with contextlib.suppress(ssl.SSLWantReadError):
                side.do_handshake()
        server_in.write(client_out.read())
        client_in.write(server_out.read())
    return ssl.DER_cert_to_PEM_cert(client.getpeercert(binary_form=True)).encode()


def test_watcher_keeps_the_old_pair_while_a_rotation_is_half_written_then_serves_the_new_one(tmp_path: Path) -> None:
    original = make_bundle(["localhost"])
    write_bundle(original, tmp_path)
    watcher = CertWatcher(tmp_path / "tls.crt", tmp_path / "tls.key")
    context = watcher.context()
    old = watcher.served_fingerprint
    replacement = make_bundle(["localhost"])
    (tmp_path / "tls.crt").write_bytes(replacement.tls_cert)  # key not yet replaced
    watcher.refresh()
    assert watcher.last_error is not None and watcher.served_fingerprint == old
    assert fingerprint(served_certificate(context, original.ca_cert)) == old, "handshakes go on with the old pair"
    assert watcher.check()[0] is False
    (tmp_path / "tls.key").write_bytes(replacement.tls_key)
    watcher.refresh()
    assert watcher.served_fingerprint == fingerprint(replacement.tls_cert) != old
    assert fingerprint(served_certificate(watcher.context(), replacement.ca_cert)) == watcher.served_fingerprint
    assert fingerprint(served_certificate(context, original.ca_cert)) == old, "the old context is untouched"
    assert watcher.check()[0] is True


def test_running_server_serves_a_rotated_certificate_to_new_connections(tmp_path: Path) -> None:
    cert_dir = tmp_path / "certs"
    write_bundle(make_bundle(["localhost"]), cert_dir)
    with running_server(tmp_path, cert_dir=cert_dir) as server:
        old_ca = tmp_path / "old-ca.crt"
        old_ca.write_bytes((cert_dir / "ca.crt").read_bytes())
        kept = verifying_session(str(old_ca))
        assert kept.get(server.url + "/healthz", timeout=5).status_code == 200

        rotated = make_bundle(["localhost"])
        staging = tmp_path / "staging"
        write_bundle(rotated, staging)
        for name in ("tls.key", "tls.crt", "ca.crt"):
            (staging / name).replace(cert_dir / name)

        assert kept.get(server.url + "/healthz", timeout=5).status_code == 200, "a kept-alive connection is not dropped"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            ready = requests.get(server.url + "/readyz", verify=str(cert_dir / "ca.crt"), timeout=5)
            if ready.status_code == 200:
                break
            time.sleep(0.1)
        assert fingerprint(rotated.tls_cert)[:16] in ready.text
