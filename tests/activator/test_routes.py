"""The policy's optional service section and the route table built from it."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from yarl import URL

from scaler.activator.routes import RouteError, build_routes, hold_timeout, parse_upstream
from scaler.policy import load_policies
from tests.builders import POLICIES, make_policy


def test_shipped_policies_route_to_their_services_by_default() -> None:
    """Without a service section: Service = deployment, engine port, prefix /<model>."""
    table = build_routes(load_policies(POLICIES))
    by_model = {r.model: r for r in table}
    assert by_model["mistral-7b"].upstream == URL("http://mistral-7b.cortex.svc:8000")  # vLLM
    assert by_model["mixtral-8x7b"].upstream == URL("http://mixtral-8x7b.cortex.svc:8080")
    assert by_model["mixtral-8x7b"].path_prefix == "/mixtral-8x7b"
    assert not by_model["tinyllama"].overridden


def test_service_section_overrides_name_port_host_and_prefix() -> None:
    """Every service field is used as given."""
    policy = make_policy(
        "mixtral-8x7b",
        service={"name": "mixtral", "port": 9000, "host": "mixtral.lan", "pathPrefix": "/mx"},
    )
    (route,) = build_routes([policy])
    assert route.upstream == URL("http://mixtral.cortex.svc:9000")
    assert route.service == "mixtral"
    assert route.deployment == "mixtral-8x7b"
    assert (route.host, route.path_prefix) == ("mixtral.lan", "/mx")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("pathPrefix", "mixtral"),
        ("pathPrefix", "/"),
        ("pathPrefix", "/mixtral/"),
        ("pathPrefix", "/a?b"),
        ("host", "Mixtral.lan"),
        ("host", "mixtral.lan:80"),
        ("host", "http://mixtral"),
        ("name", "Mixtral_svc"),
        ("port", 0),
        ("port", 70000),
        ("extra", "x"),
    ],
)
def test_service_section_rejects_bad_values(field: str, value: object) -> None:
    """Malformed prefixes, hosts, names, ports and unknown keys are policy errors."""
    with pytest.raises(ValidationError, match="service"):
        make_policy("tinyllama", service={field: value})


def test_hold_timeout_is_the_overdue_time_plus_margin() -> None:
    """coldStart.seconds × overdueFactor + margin: Mixtral gets 60 × 3 + 30 = 210 s."""
    assert hold_timeout(make_policy("mixtral-8x7b")) == 210
    assert hold_timeout(make_policy("tinyllama"), margin_s=0) == 30


def test_prefix_routing_strips_the_prefix_at_segment_boundaries_only() -> None:
    """/mixtral-8x7b/v1/x → /v1/x; the bare prefix → /; /mixtral-8x7bx is not a match."""
    table = build_routes([make_policy("mixtral-8x7b"), make_policy("tinyllama")])
    match = table.match(None, "/mixtral-8x7b/v1/chat/completions")
    assert match is not None
    assert (match.route.model, match.path, match.stripped_prefix) == (
        "mixtral-8x7b",
        "/v1/chat/completions",
        "/mixtral-8x7b",
    )
    bare = table.match("10.0.0.1:8080", "/mixtral-8x7b")
    assert bare is not None
    assert bare.path == "/"
    assert table.match(None, "/mixtral-8x7bx/v1/models") is None


def test_the_longest_prefix_wins() -> None:
    """Nested prefixes: /a/b routes to its own model, /a/c to the shorter one."""
    table = build_routes(
        [
            make_policy("tinyllama", service={"pathPrefix": "/a"}),
            make_policy("mistral-7b", service={"pathPrefix": "/a/b"}),
        ]
    )
    ab = table.match(None, "/a/b/v1/models")
    ac = table.match(None, "/a/c/v1/models")
    assert ab is not None
    assert ac is not None
    assert (ab.route.model, ab.path) == ("mistral-7b", "/v1/models")
    assert (ac.route.model, ac.path) == ("tinyllama", "/c/v1/models")


def test_host_routing_ignores_case_and_port_and_keeps_the_path() -> None:
    """A Host match forwards the whole path, prefix-looking or not."""
    table = build_routes([make_policy("tinyllama", service={"host": "tiny.lan"})])
    match = table.match("TINY.lan:8443", "/tinyllama/v1/models")
    assert match is not None
    assert (match.route.model, match.path, match.stripped_prefix) == (
        "tinyllama",
        "/tinyllama/v1/models",
        "",
    )
    assert table.by_host("[::1]:80") is None


def test_duplicate_hosts_or_prefixes_are_refused() -> None:
    """Two models on one Host or one prefix cannot be routed: a RouteError names both."""
    with pytest.raises(RouteError, match="'tinyllama' and 'mistral-7b'"):
        build_routes(
            [
                make_policy("tinyllama", service={"host": "llm.lan"}),
                make_policy("mistral-7b", service={"host": "llm.lan"}),
            ]
        )
    with pytest.raises(RouteError, match="pathPrefix '/llm'"):
        build_routes(
            [
                make_policy("tinyllama", service={"pathPrefix": "/llm"}),
                make_policy("mistral-7b", service={"pathPrefix": "/llm"}),
            ]
        )


def test_upstream_overrides() -> None:
    """--upstream MODEL=URL replaces the Service URL and marks the route as polled."""
    model, url = parse_upstream("tinyllama=http://127.0.0.1:8081/")
    (route,) = build_routes([make_policy("tinyllama")], upstreams={model: url})
    assert route.upstream == URL("http://127.0.0.1:8081")
    assert route.overridden


@pytest.mark.parametrize(
    "text", ["tinyllama", "=http://x", "tinyllama=ftp://x", "tinyllama=http://x/v1"]
)
def test_malformed_upstreams_are_refused(text: str) -> None:
    """MODEL=URL with an http(s) URL and no path, or a RouteError."""
    with pytest.raises(RouteError, match="--upstream"):
        parse_upstream(text)


def test_an_upstream_for_an_unknown_model_is_refused() -> None:
    """A typo in --upstream must not silently leave the real model on its Service."""
    with pytest.raises(RouteError, match="tinylama"):
        build_routes([make_policy("tinyllama")], upstreams={"tinylama": URL("http://x:1")})
