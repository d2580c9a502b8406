"""The shipped Gatus and Homepage configs, the keys their docs define, and the parts of their
semantics the tests need: Gatus' condition check on a JSON body, Homepage's field lookup.

Sources (the configs' comments cite them too):

- Gatus: TwiN/gatus README (v5.x), sections Configuration, Endpoints, Client configuration,
  Conditions (placeholders ``[STATUS]``, ``[RESPONSE_TIME]``, ``[BODY]`` with a dotted JSON
  path; functions ``any``, ``pat``, ``len``, ``has``). Gatus resolves ``[BODY].a.b`` by
  splitting on ``.`` and prints the value found with Go's ``%v`` (booleans ``true``/``false``);
  ``any(x, y)`` passes when the resolved value equals one of the listed ones.
- Homepage: gethomepage/homepage docs/widgets/services/customapi.md (v1.x): ``field`` is a
  key or a nested YAML object whose innermost value is the last key; ``additionalField`` has
  its own ``field`` and ``format``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import yaml

from tests.deploy.objects import MANIFESTS

GATUS = MANIFESTS / "monitoring" / "gatus-endpoints.yaml"
HOMEPAGE = MANIFESTS / "monitoring" / "homepage-services.yaml"

GATUS_TOP_LEVEL = frozenset(
    {
        "metrics",
        "storage",
        "alerting",
        "announcements",
        "endpoints",
        "external-endpoints",
        "security",
        "concurrency",
        "disable-monitoring-lock",
        "skip-invalid-config-update",
        "web",
        "ui",
        "maintenance",
    }
)
GATUS_ENDPOINT_KEYS = frozenset(
    {
        "enabled",
        "name",
        "group",
        "url",
        "method",
        "conditions",
        "interval",
        "graphql",
        "body",
        "headers",
        "dns",
        "ssh",
        "alerts",
        "maintenance-windows",
        "client",
        "ui",
        "extra-labels",
    }
)
GATUS_CLIENT_KEYS = frozenset(
    {
        "insecure",
        "ignore-redirect",
        "timeout",
        "dns-resolver",
        "oauth2",
        "proxy-url",
        "identity-aware-proxy",
        "tls",
        "network",
        "tunnel",
    }
)
GATUS_PLACEHOLDERS = frozenset(
    {
        "[STATUS]",
        "[RESPONSE_TIME]",
        "[IP]",
        "[BODY]",
        "[CONNECTED]",
        "[CERTIFICATE_EXPIRATION]",
        "[DOMAIN_EXPIRATION]",
        "[DNS_RCODE]",
    }
)

HOMEPAGE_WIDGET_KEYS = frozenset(
    {
        "type",
        "url",
        "refreshInterval",
        "username",
        "password",
        "method",
        "headers",
        "requestBody",
        "display",
        "mappings",
    }
)
HOMEPAGE_DISPLAYS = frozenset({"block", "list", "dynamic-list"})
HOMEPAGE_MAPPING_KEYS = frozenset(
    {
        "field",
        "label",
        "format",
        "remap",
        "scale",
        "prefix",
        "suffix",
        "additionalField",
        "locale",
        "dateStyle",
        "timeStyle",
        "style",
        "numeric",
    }
)
HOMEPAGE_FORMATS = frozenset(
    {
        "text",
        "number",
        "float",
        "percent",
        "duration",
        "bytes",
        "bitrate",
        "size",
        "date",
        "relativeDate",
    }
)
HOMEPAGE_SERVICE_KEYS = frozenset(
    {"description", "href", "icon", "widget", "widgets", "ping", "siteMonitor", "server"}
)

# <placeholder or [BODY] path> <operator> <value>; `len(...)`/`has(...)` wrap the left side.
_CONDITION = re.compile(
    r"^(?P<left>(?:len|has)\(\[[A-Z_]+\][^)]*\)|\[[A-Z_]+\](?:\.[A-Za-z0-9_.\[\]-]+)?)"
    r" (?P<op>==|!=|<=|>=|<|>) (?P<right>.+)$"
)


def gatus_config() -> dict[str, Any]:
    """The shipped Gatus config."""
    loaded: dict[str, Any] = yaml.safe_load(GATUS.read_text())
    return loaded


def homepage_services() -> list[Any]:
    """The shipped Homepage services.yaml snippet (a list of groups)."""
    loaded: list[Any] = yaml.safe_load(HOMEPAGE.read_text())
    return loaded


def homepage_widgets() -> list[dict[str, Any]]:
    """Every service widget of the snippet."""
    return [
        service["widget"]
        for group in homepage_services()
        for services in group.values()
        for entry in services
        for service in entry.values()
    ]


def parse_condition(condition: str) -> tuple[str, str, str]:
    """(left, operator, right) of a Gatus condition; ValueError when it is not one."""
    found = _CONDITION.match(condition)
    if found is None:
        raise ValueError(f"not a Gatus condition: {condition!r}")
    return found["left"], found["op"], found["right"]


def _go_string(value: object) -> str:
    """A JSON value as Gatus compares it (Go ``%v``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "<nil>"
    return str(value)


def gatus_condition_holds(condition: str, *, status: int, body: Any) -> bool:
    """Whether `condition` passes on an answer; only ``[STATUS]`` and ``[BODY]`` paths with
    ``==`` (and ``any``), the forms the shipped status endpoints use."""
    left, op, right = parse_condition(condition)
    if op != "==":
        raise ValueError(f"only == is evaluated here: {condition!r}")
    if left == "[STATUS]":
        value = str(status)
    elif left.startswith("[BODY]."):
        found: Any = body
        for key in left.removeprefix("[BODY].").split("."):
            if not isinstance(found, Mapping) or key not in found:
                return False  # Gatus fails a condition whose path does not resolve
            found = found[key]
        value = _go_string(found)
    else:
        raise ValueError(f"not evaluated here: {condition!r}")
    if right.startswith("any(") and right.endswith(")"):
        return value in {v.strip() for v in right[4:-1].split(",")}
    return value == right


def homepage_value(field: Any, data: Any) -> Any:
    """Homepage's lookup of a mapping's `field` in the API's JSON (None when absent)."""
    value = data
    while isinstance(field, Mapping):
        key = next(iter(field))
        if not isinstance(value, Mapping) or key not in value:
            return None
        value, field = value[key], field[key]
    if not isinstance(value, Mapping):
        return None
    return value.get(field)
