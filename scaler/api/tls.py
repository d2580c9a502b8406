"""TLS for the API server: the serving certificate and the client-certificate trust root.

The aggregator reaches us over TLS and presents its front-proxy client certificate. The
serving context therefore asks for a client certificate (``CERT_OPTIONAL``: kubelet probes
bring none) and verifies it against the request-header CA, the same CA the Authenticator
trusts: a handshake with a certificate from any other CA fails, so a certificate the server
reports as verified is one the request-header CA signed.

Without a given certificate and key, a CA and a serving certificate signed by it are
generated at start, as Kubernetes apiservers do (``GenerateSelfSignedCertKey``); register the
APIService with ``insecureSkipTLSVerify: true`` or with the generated CA as ``caBundle``.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DEFAULT_HOSTS: Final = ("localhost", "127.0.0.1")
"""Names every generated certificate carries, next to the service DNS names."""


def service_hosts(service: str, namespace: str) -> tuple[str, ...]:
    """The DNS names a Service is reached by in-cluster (the aggregator uses `<svc>.<ns>.svc`)."""
    base = f"{service}.{namespace}"
    return (service, base, f"{base}.svc", f"{base}.svc.cluster.local")


@dataclass(frozen=True, slots=True)
class ServingCertificate:
    """A PEM serving certificate chain and key, and the CA that signed it."""

    cert_pem: bytes  # the serving certificate followed by its CA
    key_pem: bytes
    ca_pem: bytes


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _subject_alternative_names(hosts: Sequence[str]) -> x509.SubjectAlternativeName:
    entries: list[x509.GeneralName] = []
    for host in dict.fromkeys(hosts):  # keeps order, drops duplicates
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            entries.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(entries)


def self_signed_certificate(
    hosts: Sequence[str] = (), *, valid_days: int = 365, now: datetime.datetime | None = None
) -> ServingCertificate:
    """Generate a CA and a serving certificate for `hosts` plus localhost and 127.0.0.1."""
    now = now or datetime.datetime.now(datetime.UTC)
    start, end = now - datetime.timedelta(hours=1), now + datetime.timedelta(days=valid_days)
    names = (*DEFAULT_HOSTS, *hosts)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name(f"scaler-ca@{int(now.timestamp())}")
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(names[-1] if hosts else "localhost"))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(_subject_alternative_names(names), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_pem = ca.public_bytes(serialization.Encoding.PEM)
    return ServingCertificate(
        cert_pem=cert.public_bytes(serialization.Encoding.PEM) + ca_pem,
        key_pem=key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        ca_pem=ca_pem,
    )


def serving_ssl_context(
    *,
    cert_file: Path | None = None,
    key_file: Path | None = None,
    client_ca_pem: str | None = None,
    hosts: Sequence[str] = (),
) -> tuple[ssl.SSLContext, ServingCertificate | None]:
    """The server's SSL context, and the generated certificate when none was given.

    `client_ca_pem` is the request-header CA; with it, client certificates are requested
    (optional) and verified against it. Raises ValueError naming the flag when only one of
    cert/key is given or a file does not load.
    """
    if (cert_file is None) != (key_file is None):
        raise ValueError("--tls-cert-file and --tls-private-key-file must be given together")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    generated: ServingCertificate | None = None
    if cert_file is not None and key_file is not None:
        try:
            context.load_cert_chain(cert_file, key_file)
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(
                f"cannot load --tls-cert-file {cert_file} / --tls-private-key-file {key_file}:"
                f" {exc}"
            ) from None
    else:
        generated = self_signed_certificate(hosts)
        # load_cert_chain reads files only; the key lives on disk just for this call.
        with tempfile.TemporaryDirectory(prefix="scaler-tls-") as folder:
            cert_path, key_path = Path(folder, "tls.crt"), Path(folder, "tls.key")
            cert_path.write_bytes(generated.cert_pem)
            key_path.touch(mode=0o600)
            key_path.write_bytes(generated.key_pem)
            context.load_cert_chain(cert_path, key_path)
    if client_ca_pem:
        try:
            context.load_verify_locations(cadata=client_ca_pem)
        except ssl.SSLError as exc:
            raise ValueError(f"cannot load the request-header client CA: {exc}") from None
        context.verify_mode = ssl.CERT_OPTIONAL
    else:
        context.verify_mode = ssl.CERT_NONE
    return context, generated
