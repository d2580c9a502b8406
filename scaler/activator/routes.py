"""Routes: which model a request is for, where its Service is, and how long it may be held.

Built once at start from the policies (their optional ``service`` section) and from
``--upstream MODEL=URL`` overrides. A request matches a model by its Host header first (exact,
case-insensitive, port ignored), then by the longest path prefix that ends at a segment
boundary (``/mixtral`` matches ``/mixtral/v1/chat/completions`` and ``/mixtral``, not
``/mixtral2/...``). A prefix is stripped before forwarding: ``/mixtral/v1/models`` reaches the
model server as ``/v1/models``. A Host match forwards the path unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

from yarl import URL

from scaler.core.policy import Engine, ModelPolicy

# The port each engine's OpenAI-compatible server listens on by default.
ENGINE_DEFAULT_PORT: dict[Engine, int] = {Engine.VLLM: 8000, Engine.LLAMACPP: 8080}

HOLD_MARGIN_SECONDS = 30.0
"""Added to ``coldStart.seconds × overdueFactor``: the time to notice readiness and probe."""


class RouteError(ValueError):
    """The policies and overrides cannot be routed unambiguously (duplicate host or prefix,
    an override for an unknown model, a malformed override)."""


@dataclass(frozen=True, slots=True)
class ModelRoute:
    """Everything the activator needs to route, hold and forward one model's requests."""

    model: str
    namespace: str
    deployment: str  # scaled by --scale-on-wake
    service: str  # the Kubernetes Service whose EndpointSlices tell readiness
    upstream: URL  # scheme://host:port of the model server (Service DNS or an override)
    host: str | None
    path_prefix: str
    hold_timeout_s: float  # longest a request waits for a ready endpoint
    retry_after_s: int  # advertised to clients turned away (Retry-After header)
    overridden: bool  # upstream given by --upstream: readiness is polled, not watched


def hold_timeout(policy: ModelPolicy, *, margin_s: float = HOLD_MARGIN_SECONDS) -> float:
    """How long a request may wait for `policy`'s model: the time after which decide() itself
    counts a starting replica as stuck (``coldStart.seconds × overdueFactor``, at least
    ``coldStart.uncachedSeconds``: ``ColdStart.overdue_after_seconds``), plus a margin.

    Mixtral (60 s × 3 + 30 s) waits 210 s, enough for a cold page cache (107 s measured).
    """
    return policy.cold_start.overdue_after_seconds + margin_s


def parse_upstream(text: str) -> tuple[str, URL]:
    """One ``--upstream MODEL=URL`` value as (model, base URL); RouteError when malformed."""
    model, sep, raw = text.partition("=")
    if not sep or not model or not raw:
        raise RouteError(
            f"--upstream {text!r}: expected MODEL=URL, e.g. tinyllama=http://127.0.0.1:8080"
        )
    url = URL(raw)
    if url.scheme not in ("http", "https") or not url.host:
        raise RouteError(f"--upstream {text!r}: URL must be http(s)://host[:port]")
    if url.path not in ("", "/") or url.query_string or url.fragment:
        raise RouteError(f"--upstream {text!r}: URL must have no path, query or fragment")
    return model, url.with_path("")


def build_routes(
    policies: Iterable[ModelPolicy],
    *,
    upstreams: Mapping[str, URL] | None = None,
    hold_margin_s: float = HOLD_MARGIN_SECONDS,
) -> RouteTable:
    """The route table for `policies`, with `upstreams` replacing the in-cluster Service URLs."""
    overrides = dict(upstreams or {})
    routes: list[ModelRoute] = []
    for policy in policies:
        svc = policy.service
        name = svc.name or policy.target.deployment
        port = svc.port or ENGINE_DEFAULT_PORT[policy.engine]
        default = URL.build(scheme="http", host=f"{name}.{policy.target.namespace}.svc", port=port)
        upstream = overrides.pop(policy.model, None)
        routes.append(
            ModelRoute(
                model=policy.model,
                namespace=policy.target.namespace,
                deployment=policy.target.deployment,
                service=name,
                upstream=upstream or default,
                host=svc.host,
                path_prefix=svc.path_prefix or f"/{policy.model}",
                hold_timeout_s=hold_timeout(policy, margin_s=hold_margin_s),
                retry_after_s=max(1, math.ceil(policy.cold_start.seconds)),
                overridden=upstream is not None,
            )
        )
    if overrides:
        raise RouteError(
            f"--upstream names models without a policy: {', '.join(sorted(overrides))}"
        )
    return RouteTable(routes)


@dataclass(frozen=True, slots=True)
class RouteMatch:
    """A request's model and the path to forward to its server."""

    route: ModelRoute
    path: str  # what the model server sees: the raw path, less the prefix when routed by it
    stripped_prefix: str = ""  # the prefix removed ("" when routed by Host)


class RouteTable:
    """Looks up the model a request is for (Host first, then longest path prefix)."""

    def __init__(self, routes: Iterable[ModelRoute]) -> None:
        self.routes: tuple[ModelRoute, ...] = tuple(routes)
        self._by_host: dict[str, ModelRoute] = {}
        self._by_prefix: dict[str, ModelRoute] = {}
        for route in self.routes:
            if route.host is not None:
                host = route.host.lower()
                if host in self._by_host:
                    raise RouteError(
                        f"service.host {host!r} is used by both {self._by_host[host].model!r}"
                        f" and {route.model!r}"
                    )
                self._by_host[host] = route
            if route.path_prefix in self._by_prefix:
                raise RouteError(
                    f"service.pathPrefix {route.path_prefix!r} is used by both"
                    f" {self._by_prefix[route.path_prefix].model!r} and {route.model!r}"
                )
            self._by_prefix[route.path_prefix] = route
        # Longest first, so "/a/b" wins over "/a".
        self._prefixes = sorted(self._by_prefix, key=len, reverse=True)

    def by_host(self, host: str | None) -> ModelRoute | None:
        """The route whose ``service.host`` is this Host header (port ignored), or None."""
        if not host or host.startswith("["):  # policy hosts are DNS names, never IPv6 literals
            return None
        return self._by_host.get(host.lower().rsplit(":", 1)[0])

    def match(self, host: str | None, path: str) -> RouteMatch | None:
        """The route for a request with this Host header and (raw) path, or None (a 404)."""
        route = self.by_host(host)
        if route is not None:
            return RouteMatch(route, path)
        for prefix in self._prefixes:
            if path == prefix or path.startswith(prefix + "/"):
                return RouteMatch(self._by_prefix[prefix], path[len(prefix) :] or "/", prefix)
        return None

    def __iter__(self) -> Iterator[ModelRoute]:
        return iter(self.routes)
