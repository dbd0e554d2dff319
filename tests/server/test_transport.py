"""TLS and mutual TLS with certificates made here, and the refusal to listen exposed."""

from __future__ import annotations

import datetime as dt
import ipaddress
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.conftest import TOOLVAULT, ServerProcess
from toolvault.client import TLS, Client, Unavailable
from toolvault.server.config import Settings


@dataclass
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    stranger_cert: Path
    stranger_key: Path


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
    usage: x509.ObjectIdentifier | None,
) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    issuer_name, signer = issuer or (name, key)
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=usage is None, path_length=None), critical=True)
    )
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if usage == ExtendedKeyUsageOID.SERVER_AUTH:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    return builder.sign(signer, hashes.SHA256())


def _write(path: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> Path:
    path.with_suffix(".key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    root = tmp_path_factory.mktemp("pki")
    ca_key, stranger_ca_key = _key(), _key()
    ca = _cert("toolvault test CA", ca_key, None, None)
    stranger_ca = _cert("someone else's CA", stranger_ca_key, None, None)
    files = {}
    for name, usage, signer in (
        ("server", ExtendedKeyUsageOID.SERVER_AUTH, (ca.subject, ca_key)),
        ("client", ExtendedKeyUsageOID.CLIENT_AUTH, (ca.subject, ca_key)),
        ("stranger", ExtendedKeyUsageOID.CLIENT_AUTH, (stranger_ca.subject, stranger_ca_key)),
    ):
        key = _key()
        files[name] = _write(root / f"{name}.pem", _cert(name, key, signer, usage), key)
    return Pki(
        ca=_write(root / "ca.pem", ca, ca_key),
        server_cert=files["server"],
        server_key=files["server"].with_suffix(".key"),
        client_cert=files["client"],
        client_key=files["client"].with_suffix(".key"),
        stranger_cert=files["stranger"],
        stranger_key=files["stranger"].with_suffix(".key"),
    )


@pytest.fixture
def tls_server(pki: Pki, tmp_path: Path) -> Iterator[ServerProcess]:
    tls = ["--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_key)]
    server = ServerProcess(db=f"sqlite:///{tmp_path / 'db'}", data_dir=tmp_path, extra_args=tls)
    server.start()
    yield server
    server.stop()


def test_a_tls_server_answers_clients_that_trust_its_ca_only(
    tls_server: ServerProcess, pki: Pki
) -> None:
    assert any("(TLS, auth off" in line for line in tls_server.log)
    with Client(tls_server.address, tls=TLS.from_files(ca=pki.ca), retries=False) as client:
        client.publish("echo", "def main(x):\n    return x\n")
        assert client.invoke("echo", {"x": "over TLS"}).result == "over TLS"
    for tls in (None, TLS()):  # plaintext; TLS trusting only the system's roots
        with Client(tls_server.address, tls=tls, timeout=5, retries=False) as client:
            with pytest.raises(Unavailable):
                client.functions()
    health = [TOOLVAULT, "--server", tls_server.address, "health"]
    assert subprocess.run([*health[:1], "--ca-cert", str(pki.ca), *health[1:]]).returncode == 0
    assert subprocess.run(health, capture_output=True).returncode == 3


def test_mutual_tls_refuses_clients_without_a_certificate_from_its_ca(
    pki: Pki, tmp_path: Path
) -> None:
    tls = ["--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_key)]
    server = ServerProcess(
        db=f"sqlite:///{tmp_path / 'db'}",
        data_dir=tmp_path,
        extra_args=[*tls, "--tls-client-ca", str(pki.ca)],
    )
    server.start()
    try:
        assert any("(mutual TLS, auth off" in line for line in server.log)
        member = TLS.from_files(pki.ca, pki.client_cert, pki.client_key)
        with Client(server.address, tls=member, retries=False) as client:
            assert client.functions() == []
        for outsider in (
            TLS.from_files(pki.ca),
            TLS.from_files(pki.ca, pki.stranger_cert, pki.stranger_key),
        ):
            with Client(server.address, tls=outsider, timeout=5, retries=False) as client:
                with pytest.raises(Unavailable):
                    client.functions()
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("listen", "flags", "refused"),
    [
        ("127.0.0.1:1", {}, False),
        ("[::1]:1", {}, False),
        ("localhost:1", {}, False),
        ("0.0.0.0:1", {}, True),
        ("[::]:1", {}, True),
        ("10.1.2.3:1", {"auth": "required"}, True),
        ("toolvault.example:1", {"tls_cert": "c", "tls_key": "k"}, True),
        ("0.0.0.0:1", {"auth": "required", "tls_cert": "c", "tls_key": "k"}, False),
        ("0.0.0.0:1", {"insecure": True}, False),
    ],
)
def test_listening_beyond_loopback_needs_auth_and_tls_or_insecure(
    listen: str, flags: dict[str, object], refused: bool
) -> None:
    problem = Settings(listen=listen, **flags).exposure_problem()  # type: ignore[arg-type]
    assert (problem is not None) == refused


def test_serve_refuses_an_exposed_address_before_binding_it(tmp_path: Path) -> None:
    done = subprocess.run(
        [TOOLVAULT, "serve", "--listen", "0.0.0.0:0", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.startswith(
        "error: refusing to listen on 0.0.0.0:0 without authentication (--auth required) and "
        "TLS (--tls-cert and --tls-key): anyone who can reach the port could run code."
    )
    assert "--insecure" in done.stderr
    assert not (tmp_path / "toolvault.db").exists()
