"""Front-proxy authentication rules and the extension-apiserver-authentication ConfigMap."""

from __future__ import annotations

import json

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from scaler.api.auth import (
    ANONYMOUS,
    AUTHENTICATED_GROUP,
    AuthenticationError,
    Authenticator,
    RequestHeaderConfig,
    RequestHeaderConfigError,
    load_requestheader_config,
)

PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
CONFIG = RequestHeaderConfig(client_ca_pem=PEM, allowed_names=("front-proxy-client",))


def headers(*pairs: tuple[str, str]) -> CIMultiDictProxy[str]:
    """Request headers from (name, value) pairs; repeated names allowed."""
    return CIMultiDictProxy(CIMultiDict(pairs))


def test_verified_allowed_client_asserts_user_and_groups() -> None:
    """With an allowed CN, X-Remote-User/Group are trusted and system:authenticated is added."""
    user = Authenticator(CONFIG).authenticate(
        client_common_name="front-proxy-client",
        headers=headers(
            ("X-Remote-User", "system:kube-controller-manager"),
            ("x-remote-group", "system:masters"),
            ("X-Remote-Group", "ops"),
            ("X-Remote-Extra-Scopes%2Fa", "x"),
        ),
    )
    assert user.name == "system:kube-controller-manager"
    assert user.groups == ("system:masters", "ops", AUTHENTICATED_GROUP)
    assert user.extra == {"scopes/a": ("x",)}


def test_cn_not_in_allowed_names_is_refused() -> None:
    """A certificate from the CA with another CN cannot assert an identity."""
    with pytest.raises(AuthenticationError, match="not an allowed front-proxy name"):
        Authenticator(CONFIG).authenticate(
            client_common_name="intruder", headers=headers(("X-Remote-User", "admin"))
        )


def test_empty_allowed_names_accepts_any_cn() -> None:
    """An empty allowed-names list trusts any certificate the CA signed."""
    config = RequestHeaderConfig(client_ca_pem=PEM)
    user = Authenticator(config).authenticate(
        client_common_name="anyone", headers=headers(("X-Remote-User", "u"))
    )
    assert user.name == "u"


def test_no_certificate_is_refused() -> None:
    """Headers without a verified certificate are not trusted (401)."""
    with pytest.raises(AuthenticationError, match="no verified front-proxy client certificate"):
        Authenticator(CONFIG).authenticate(
            client_common_name=None, headers=headers(("X-Remote-User", "admin"))
        )


def test_certificate_without_user_header_is_refused() -> None:
    """A valid certificate but no user header authenticates nobody."""
    with pytest.raises(AuthenticationError, match="no user"):
        Authenticator(CONFIG).authenticate(
            client_common_name="front-proxy-client", headers=headers()
        )


def test_anonymous_only_when_allowed() -> None:
    """allow_anonymous turns an unauthenticated request into system:anonymous."""
    user = Authenticator(CONFIG, allow_anonymous=True).authenticate(
        client_common_name=None, headers=headers()
    )
    assert user == ANONYMOUS


def test_probes_and_metrics_are_public_and_nothing_else() -> None:
    """Only the probes and /metrics (scraped by Prometheus) skip authentication by default."""
    authenticator = Authenticator(CONFIG)
    public = ("/healthz", "/livez", "/readyz", "/metrics")
    assert all(authenticator.is_public(p) for p in public)
    assert not authenticator.is_public("/apis/external.metrics.k8s.io/v1beta1")
    assert not authenticator.is_public("/debug/decisions")


def test_configmap_is_parsed_with_custom_headers() -> None:
    """All request-header keys of the ConfigMap are read; header names may be customised."""
    config = load_requestheader_config(
        {
            "client-ca-file": "ignored",
            "requestheader-client-ca-file": PEM,
            "requestheader-allowed-names": '["front-proxy-client"]',
            "requestheader-username-headers": '["X-Remote-User", "Impersonate-User"]',
            "requestheader-group-headers": '["X-Remote-Group"]',
            "requestheader-extra-headers-prefix": '["X-Remote-Extra-"]',
        }
    )
    assert config.client_ca_pem == PEM
    assert config.allowed_names == ("front-proxy-client",)
    assert config.username_headers == ("X-Remote-User", "Impersonate-User")


def test_configmap_defaults_for_missing_header_keys() -> None:
    """Missing header keys take upstream's defaults; missing allowed names allow any CN."""
    config = load_requestheader_config({"requestheader-client-ca-file": PEM})
    assert config == RequestHeaderConfig(client_ca_pem=PEM)


@pytest.mark.parametrize(
    ("key", "raw", "problem"),
    [
        ("requestheader-allowed-names", "front-proxy-client", "not JSON"),
        ("requestheader-username-headers", json.dumps({"a": 1}), "JSON array of strings"),
        ("requestheader-client-ca-file", "not a pem", "no PEM certificate"),
    ],
)
def test_malformed_configmap_names_the_key(key: str, raw: str, problem: str) -> None:
    """A malformed value raises RequestHeaderConfigError naming the ConfigMap and key."""
    data = {"requestheader-client-ca-file": PEM, key: raw}
    with pytest.raises(RequestHeaderConfigError, match=key) as caught:
        load_requestheader_config(data)
    assert problem in str(caught.value)
    assert "kube-system/extension-apiserver-authentication" in str(caught.value)
