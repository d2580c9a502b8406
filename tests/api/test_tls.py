"""TLS material: the generated serving certificate and the serving context's options."""

from __future__ import annotations

import ipaddress
import ssl
from pathlib import Path

import pytest
import trustme
from cryptography import x509

from scaler.api.tls import self_signed_certificate, service_hosts, serving_ssl_context


def test_generated_certificate_carries_localhost_and_service_names() -> None:
    """SANs: localhost, 127.0.0.1 and the in-cluster service DNS names; signed by its CA."""
    generated = self_signed_certificate(service_hosts("scaler", "scaler-system"))
    leaf = x509.load_pem_x509_certificates(generated.cert_pem)[0]
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(sans.get_values_for_type(x509.DNSName)) >= {
        "localhost",
        "scaler.scaler-system.svc",
        "scaler.scaler-system.svc.cluster.local",
    }
    assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    ca = x509.load_pem_x509_certificate(generated.ca_pem)
    leaf.verify_directly_issued_by(ca)


def test_client_ca_makes_client_certificates_optional() -> None:
    """With a request-header CA, client certs are requested but optional (probes have none)."""
    ca = trustme.CA()
    context, generated = serving_ssl_context(client_ca_pem=ca.cert_pem.bytes().decode())
    assert context.verify_mode is ssl.CERT_OPTIONAL
    assert generated is not None


def test_without_client_ca_no_certificate_is_requested() -> None:
    """Without a CA nothing can be verified, so no client certificate is asked for."""
    context, _ = serving_ssl_context()
    assert context.verify_mode is ssl.CERT_NONE


def test_given_certificate_is_used_and_nothing_generated(tmp_path: Path) -> None:
    """A given cert/key pair loads and no certificate is generated."""
    leaf = trustme.CA().issue_cert("scaler.scaler-system.svc")
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    leaf.private_key_pem.write_to_path(str(key))
    _, generated = serving_ssl_context(cert_file=cert, key_file=key)
    assert generated is None


def test_cert_without_key_is_an_error_naming_both_flags(tmp_path: Path) -> None:
    """Only one of the pair is a configuration error naming both flags."""
    with pytest.raises(ValueError, match="--tls-cert-file and --tls-private-key-file"):
        serving_ssl_context(cert_file=tmp_path / "tls.crt")


def test_unreadable_certificate_names_the_files(tmp_path: Path) -> None:
    """A cert file that does not load is an error naming the file."""
    cert = tmp_path / "tls.crt"
    cert.write_text("garbage")
    with pytest.raises(ValueError, match=str(cert)):
        serving_ssl_context(cert_file=cert, key_file=cert)
