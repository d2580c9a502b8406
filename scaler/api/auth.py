"""Front-proxy (request-header) authentication, as Kubernetes extension apiservers do it.

The aggregator forwards every request with its front-proxy client certificate and the
caller's identity in ``X-Remote-User`` / ``X-Remote-Group`` / ``X-Remote-Extra-*``. Those
headers are trusted only on a connection whose client certificate was verified against the
request-header CA (done by the TLS layer, see ``scaler.api.tls``) and whose subject CN is in
the allowed names (an empty list allows any name the CA signed). Every authenticated user gets
the group ``system:authenticated``, as upstream's delegating authenticator adds it.

Authorization is not done here: no SubjectAccessReview is sent. The aggregator has already
authorized the caller (RBAC on ``external.metrics.k8s.io``) before proxying, and only it holds
a certificate our CA signed; a request without one is refused with 401.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import unquote

from multidict import CIMultiDictProxy

PROBE_PATHS: Final = frozenset({"/healthz", "/livez", "/readyz"})
"""Always allowed: kubelet probes carry no client certificate."""

PUBLIC_PATHS: Final = PROBE_PATHS | {"/metrics", "/status"}
"""Served without authentication by default: the probes, the self-metrics, which
Prometheus scrapes without the aggregator's front-proxy certificate, and /status, which
Gatus and Homepage read the same way. /metrics carries replica counts, signal values and
latencies, the same figures the external metrics API serves to the HPA, and no secret;
/status a subset of them (states, replica counts, reasons, held requests). Whoever reaches
port 6443 can read them (the NetworkPolicy admits the API server, which dials from outside
the pod network, so it cannot narrow this)."""

AUTHENTICATED_GROUP: Final = "system:authenticated"
ANONYMOUS_USER: Final = "system:anonymous"
UNAUTHENTICATED_GROUP: Final = "system:unauthenticated"

CONFIGMAP_NAMESPACE: Final = "kube-system"
CONFIGMAP_NAME: Final = "extension-apiserver-authentication"


class AuthenticationError(Exception):
    """The request carries no identity we trust (HTTP 401)."""


class RequestHeaderConfigError(ValueError):
    """The request-header configuration is malformed; the message names the key."""


@dataclass(frozen=True, slots=True)
class RequestHeaderConfig:
    """Which client certificates may assert an identity, and in which headers."""

    client_ca_pem: str | None = None
    allowed_names: tuple[str, ...] = ()
    username_headers: tuple[str, ...] = ("X-Remote-User",)
    group_headers: tuple[str, ...] = ("X-Remote-Group",)
    extra_headers_prefixes: tuple[str, ...] = ("X-Remote-Extra-",)


@dataclass(frozen=True, slots=True)
class UserInfo:
    """The caller, as the front proxy asserted it."""

    name: str
    groups: tuple[str, ...] = ()
    extra: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


ANONYMOUS: Final = UserInfo(ANONYMOUS_USER, (UNAUTHENTICATED_GROUP,))


def _json_names(data: Mapping[str, str], key: str, default: tuple[str, ...]) -> tuple[str, ...]:
    raw = data.get(key)
    if raw is None or not raw.strip():
        return default
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise RequestHeaderConfigError(
            f"{CONFIGMAP_NAMESPACE}/{CONFIGMAP_NAME} key {key}: not JSON ({exc})"
        ) from None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise RequestHeaderConfigError(
            f"{CONFIGMAP_NAMESPACE}/{CONFIGMAP_NAME} key {key}: expected a JSON array of"
            f" strings, got {raw!r}"
        )
    return tuple(value)


def load_requestheader_config(configmap_data: Mapping[str, str]) -> RequestHeaderConfig:
    """Parse the data of ConfigMap kube-system/extension-apiserver-authentication.

    Missing header keys take upstream's defaults; a missing CA leaves front-proxy
    authentication impossible (every non-probe request is then 401 unless anonymous is on).
    """
    ca = configmap_data.get("requestheader-client-ca-file")
    if ca is not None and "-----BEGIN CERTIFICATE-----" not in ca:
        raise RequestHeaderConfigError(
            f"{CONFIGMAP_NAMESPACE}/{CONFIGMAP_NAME} key requestheader-client-ca-file:"
            " no PEM certificate"
        )
    defaults = RequestHeaderConfig()
    return RequestHeaderConfig(
        client_ca_pem=ca,
        allowed_names=_json_names(configmap_data, "requestheader-allowed-names", ()),
        username_headers=_json_names(
            configmap_data, "requestheader-username-headers", defaults.username_headers
        ),
        group_headers=_json_names(
            configmap_data, "requestheader-group-headers", defaults.group_headers
        ),
        extra_headers_prefixes=_json_names(
            configmap_data, "requestheader-extra-headers-prefix", defaults.extra_headers_prefixes
        ),
    )


def common_name_of(peercert: Mapping[str, object] | None) -> str | None:
    """Subject CN of a verified certificate (``SSLSocket.getpeercert()`` form): None when no
    certificate was verified, "" for one without a CN.

    With several CNs the last one counts, as in kube-apiserver: Go's ``pkix.Name`` keeps the
    last CommonName of the subject, and the request-header authenticator checks that one.
    """
    if not peercert:  # None without TLS, {} when no certificate was verified
        return None
    common_name = ""
    subject = peercert.get("subject", ())
    for rdn in subject if isinstance(subject, tuple) else ():
        for attribute, value in rdn:
            if attribute == "commonName":
                common_name = str(value)
    return common_name


class Authenticator:
    """Decides who a request comes from: a front-proxy user, anonymous, or nobody (401)."""

    def __init__(
        self,
        config: RequestHeaderConfig | None = None,
        *,
        allow_anonymous: bool = False,
        public_paths: Collection[str] = PUBLIC_PATHS,
    ) -> None:
        self.config = config or RequestHeaderConfig()
        self.allow_anonymous = allow_anonymous
        self.public_paths = frozenset(public_paths)
        self._allowed = frozenset(self.config.allowed_names)
        self._extra_prefixes = tuple(p.lower() for p in self.config.extra_headers_prefixes)

    def is_public(self, path: str) -> bool:
        """Whether `path` is served without authentication (probes)."""
        return path in self.public_paths

    def authenticate(
        self, *, client_common_name: str | None, headers: CIMultiDictProxy[str]
    ) -> UserInfo:
        """The caller of a request; raises AuthenticationError when nobody is trusted.

        `client_common_name` is the subject CN of a client certificate the TLS layer verified
        against the request-header CA (its last CN, as kube-apiserver), "" for a verified
        certificate without a CN (accepted when no allowed names are set, as upstream),
        None without a verified certificate.
        """
        user = self._front_proxy_user(client_common_name, headers)
        if user is not None:
            return user
        if self.allow_anonymous:
            return ANONYMOUS
        if client_common_name is None:
            raise AuthenticationError("no verified front-proxy client certificate")
        if self._allowed and not client_common_name:
            raise AuthenticationError(
                "the verified client certificate has no common name (CN), and only allowed"
                " front-proxy names may assert a user"
            )
        if self._allowed and client_common_name not in self._allowed:
            raise AuthenticationError(
                f"client certificate CN {client_common_name!r} is not an allowed front-proxy name"
            )
        raise AuthenticationError("no user in the front-proxy headers")

    def _front_proxy_user(
        self, client_common_name: str | None, headers: CIMultiDictProxy[str]
    ) -> UserInfo | None:
        if client_common_name is None or self.config.client_ca_pem is None:
            return None
        if self._allowed and client_common_name not in self._allowed:
            return None
        name = next(
            (v for h in self.config.username_headers for v in headers.getall(h, ()) if v), None
        )
        if name is None:
            return None
        groups = [g for h in self.config.group_headers for g in headers.getall(h, ())]
        if AUTHENTICATED_GROUP not in groups:
            groups.append(AUTHENTICATED_GROUP)
        extra: dict[str, list[str]] = {}
        if self._extra_prefixes:
            for header, value in headers.items():
                lowered = header.lower()
                for prefix in self._extra_prefixes:
                    if lowered.startswith(prefix) and len(lowered) > len(prefix):
                        extra.setdefault(unquote(lowered[len(prefix) :]), []).append(value)
        return UserInfo(name, tuple(groups), {k: tuple(v) for k, v in extra.items()})
