"""Kubernetes label selectors (``labelSelector`` query parameter), parsed and matched by us.

The HPA sums every item we return, so the server must apply the selector itself. Grammar, as
in apimachinery ``pkg/labels/selector.go``: requirements separated by commas (AND), each one of

    key=value   key==value   key!=value   key in (v1,v2)   key notin (v1,v2)   key   !key

with optional whitespace around tokens. ``!=`` and ``notin`` are also true when the label is
absent. The empty selector matches everything (a missing parameter means the same). The set
operators ``>``/``<`` of upstream are not supported: an HPA's selector never produces them.

The input is the already URL-decoded parameter value.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache
from typing import Final

MAX_SELECTOR_LENGTH: Final = 4096
"""Longer selectors are refused before parsing; no HPA selector comes near this."""

# A label key: optional DNS-subdomain prefix and "/", then a name; values are names or empty.
_NAME: Final = r"[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
_KEY = re.compile(rf"^(?:[a-z0-9](?:[-a-z0-9.]{{0,251}}[a-z0-9])?/)?{_NAME}$")
_VALUE = re.compile(rf"^(?:{_NAME})?$")
_TOKEN = re.compile(r"\s*(==|!=|=|!|\(|\)|,|>|<|[^\s=!(),<>]+)")


class SelectorError(ValueError):
    """A label selector that does not parse; the message names the selector and the problem."""


class Operator(StrEnum):
    """How one requirement compares a label."""

    EQUALS = "="
    NOT_EQUALS = "!="
    IN = "in"
    NOT_IN = "notin"
    EXISTS = "exists"
    DOES_NOT_EXIST = "!"


@dataclass(frozen=True, slots=True)
class Requirement:
    """One comma-separated part of a selector."""

    key: str
    operator: Operator
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether `labels` satisfies this requirement."""
        present = self.key in labels
        match self.operator:
            case Operator.EQUALS | Operator.IN:
                return present and labels[self.key] in self.values
            case Operator.NOT_EQUALS | Operator.NOT_IN:
                return not present or labels[self.key] not in self.values
            case Operator.EXISTS:
                return present
            case Operator.DOES_NOT_EXIST:
                return not present


@dataclass(frozen=True, slots=True)
class Selector:
    """A parsed selector: all requirements must hold. No requirements matches everything."""

    requirements: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether `labels` satisfies every requirement."""
        return all(r.matches(labels) for r in self.requirements)

    def candidates(self, key: str) -> frozenset[str] | None:
        """The only values `key` may take under this selector, or None if not restricted.

        Lets the server look models up directly instead of matching every model.
        """
        allowed: frozenset[str] | None = None
        for requirement in self.requirements:
            if requirement.key == key and requirement.operator in (Operator.EQUALS, Operator.IN):
                allowed = requirement.values if allowed is None else allowed & requirement.values
        return allowed


def _tokens(text: str) -> list[str]:
    # Every non-space character starts some token and \s* eats the gaps, so finditer skips
    # nothing but whitespace.
    return [found.group(1) for found in _TOKEN.finditer(text)]


class _Parser:
    """Recursive descent over the token list; one instance per parse."""

    def __init__(self, selector: str) -> None:
        self.selector = selector
        self.tokens = _tokens(selector)
        self.position = 0

    def fail(self, problem: str) -> SelectorError:
        shown = self.selector if len(self.selector) <= 200 else self.selector[:200] + "…"
        return SelectorError(f"invalid label selector {shown!r}: {problem}")

    def peek(self) -> str | None:
        return self.tokens[self.position] if self.position < len(self.tokens) else None

    def take(self) -> str | None:
        token = self.peek()
        self.position += 1
        return token

    def key(self) -> str:
        token = self.take()
        if token is None or token in _SYMBOLS:
            raise self.fail(f"expected a label key, found {_show(token)}")
        if not _KEY.match(token):
            raise self.fail(f"{token!r} is not a valid label key")
        return token

    def value(self) -> str:
        token = self.peek()
        if token is None or token in (",", ")"):
            return ""  # "k=" and "k in (a,)" name the empty value, as upstream allows
        if token in _SYMBOLS:
            raise self.fail(f"expected a label value, found {_show(token)}")
        self.position += 1
        if not _VALUE.match(token):
            raise self.fail(f"{token!r} is not a valid label value")
        return token

    def value_set(self) -> frozenset[str]:
        if self.take() != "(":
            raise self.fail("expected '(' after in/notin")
        if self.peek() == ")":
            raise self.fail("empty value set after in/notin")
        values: set[str] = set()
        while True:
            values.add(self.value())
            token = self.take()
            if token == ")":
                return frozenset(values)
            if token != ",":
                raise self.fail(f"expected ',' or ')' in a set, found {_show(token)}")

    def requirement(self) -> Requirement:
        if self.peek() == "!":
            self.take()
            return Requirement(self.key(), Operator.DOES_NOT_EXIST)
        key = self.key()
        token = self.peek()
        if token is None or token == ",":
            return Requirement(key, Operator.EXISTS)
        self.take()
        if token in ("=", "=="):
            return Requirement(key, Operator.EQUALS, frozenset({self.value()}))
        if token == "!=":
            return Requirement(key, Operator.NOT_EQUALS, frozenset({self.value()}))
        if token == "in":
            return Requirement(key, Operator.IN, self.value_set())
        if token == "notin":
            return Requirement(key, Operator.NOT_IN, self.value_set())
        if token in (">", "<"):
            raise self.fail(f"operator {token!r} is not supported")
        raise self.fail(f"expected an operator after {key!r}, found {_show(token)}")

    def selector_(self) -> Selector:
        requirements: list[Requirement] = []
        if self.peek() is None:
            return Selector()
        while True:
            requirements.append(self.requirement())
            token = self.take()
            if token is None:
                return Selector(tuple(requirements))
            if token != ",":
                raise self.fail(f"expected ',' between requirements, found {_show(token)}")
            if self.peek() is None:
                raise self.fail("trailing ','")


_SYMBOLS: Final = frozenset({"==", "!=", "=", "!", "(", ")", ",", ">", "<"})


def _show(token: str | None) -> str:
    return "end of input" if token is None else repr(token)


@lru_cache(maxsize=1024)
def parse_selector(text: str) -> Selector:
    """Parse a URL-decoded selector; raises SelectorError naming the selector and the problem.

    Cached: an HPA asks with the same selector every sync, so the hot path parses once.
    """
    if len(text) > MAX_SELECTOR_LENGTH:
        raise SelectorError(
            f"invalid label selector ({len(text)} characters): longer than {MAX_SELECTOR_LENGTH}"
        )
    return _Parser(text).selector_()
