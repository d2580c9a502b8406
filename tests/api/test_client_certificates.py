"""Front-proxy client certificates over real TLS: which CN counts, and a certificate with none.

A CA and client certificates are made with `cryptography`; the API is served by `serve_api`
with that CA as the request-header CA, and aiohttp presents the client certificate.
"""

from __future__ import annotations

import datetime
import ssl
from pathlib import Path

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from scaler.api.auth import Authenticator, RequestHeaderConfig
from scaler.api.server import serve_api
from scaler.api.tls import serving_ssl_context
from tests.api.conftest import Wiring

NOW = datetime.datetime.now(datetime.UTC)


def _name(*common_names: str) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "scaler-tests")]
    attributes += [x509.NameAttribute(NameOID.COMMON_NAME, cn) for cn in common_names]
    return x509.Name(attributes)


def _builder(
    subject: x509.Name, issuer: x509.Name, key: ec.EllipticCurvePrivateKey
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - datetime.timedelta(hours=1))
        .not_valid_after(NOW + datetime.timedelta(days=1))
    )


@pytest.fixture(scope="module")
def ca() -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A request-header CA."""
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        _builder(_name("front-proxy-ca"), _name("front-proxy-ca"), key)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def client_files(
    tmp_path: Path, ca: tuple[ec.EllipticCurvePrivateKey, x509.Certificate], *cns: str
) -> tuple[Path, Path]:
    """A client certificate signed by `ca` with subject CNs `cns` (in order), as PEM files."""
    ca_key, ca_cert = ca
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        _builder(_name(*cns), ca_cert.subject, key)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "client.crt", tmp_path / "client.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def status_for(
    tmp_path: Path,
    ca: tuple[ec.EllipticCurvePrivateKey, x509.Certificate],
    cns: tuple[str, ...],
    allowed: tuple[str, ...],
) -> tuple[int, str]:
    """Status and body of GET /apis with a client certificate carrying `cns`."""
    ca_pem = ca[1].public_bytes(serialization.Encoding.PEM).decode()
    wiring = Wiring()
    wiring.authenticator = Authenticator(
        RequestHeaderConfig(client_ca_pem=ca_pem, allowed_names=allowed)
    )
    context, _ = serving_ssl_context(client_ca_pem=ca_pem)
    client = ssl.create_default_context()
    client.check_hostname = False
    client.verify_mode = ssl.CERT_NONE
    client.load_cert_chain(*client_files(tmp_path, ca, *cns))
    async with (
        serve_api(
            wiring.app(), host="127.0.0.1", port=0, ssl_context=context, close_grace=0.1
        ) as endpoint,
        aiohttp.ClientSession() as session,
        session.get(
            f"{endpoint.url}/apis", ssl=client, headers={"X-Remote-User": "system:kube-agg"}
        ) as response,
    ):
        return response.status, await response.text()


@pytest.mark.parametrize(("allowed", "status"), [(("second",), 200), (("first",), 401)])
async def test_with_two_cns_the_last_one_counts_as_in_kube_apiserver(
    tmp_path: Path,
    ca: tuple[ec.EllipticCurvePrivateKey, x509.Certificate],
    allowed: tuple[str, ...],
    status: int,
) -> None:
    """Subject CN=first, CN=second: only "second" is the certificate's name."""
    got, body = await status_for(tmp_path, ca, ("first", "second"), allowed)
    assert got == status, body


async def test_a_verified_certificate_without_a_cn_is_accepted_without_allowed_names(
    tmp_path: Path, ca: tuple[ec.EllipticCurvePrivateKey, x509.Certificate]
) -> None:
    """No allowed names: any certificate the CA signed may assert a user, CN or not."""
    got, body = await status_for(tmp_path, ca, (), ())
    assert got == 200, body


async def test_a_verified_certificate_without_a_cn_is_named_so_when_refused(
    tmp_path: Path, ca: tuple[ec.EllipticCurvePrivateKey, x509.Certificate]
) -> None:
    """With allowed names, a CN-less certificate is refused for lacking a CN (it was verified:
    not "no verified front-proxy client certificate")."""
    got, body = await status_for(tmp_path, ca, (), ("front-proxy-client",))
    assert got == 401
    assert "no common name" in body
    assert "no verified" not in body
