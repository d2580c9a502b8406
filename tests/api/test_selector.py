"""The labelSelector grammar: every operator, whitespace, errors naming the selector."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scaler.api.selector import MAX_SELECTOR_LENGTH, SelectorError, parse_selector

MISTRAL = {"model": "mistral-7b"}
TINY = {"model": "tinyllama"}
NONE: dict[str, str] = {}


@pytest.mark.parametrize(
    ("selector", "labels", "expected"),
    [
        ("", MISTRAL, True),
        ("   ", NONE, True),
        ("model=mistral-7b", MISTRAL, True),
        ("model=mistral-7b", TINY, False),
        ("model==mistral-7b", MISTRAL, True),
        ("model!=mistral-7b", TINY, True),
        ("model!=mistral-7b", MISTRAL, False),
        ("model!=mistral-7b", NONE, True),
        ("model in (tinyllama, mistral-7b)", MISTRAL, True),
        ("model in (tinyllama)", MISTRAL, False),
        ("model notin (tinyllama)", MISTRAL, True),
        ("model notin (mistral-7b,tinyllama)", MISTRAL, False),
        ("model notin (tinyllama)", NONE, True),
        ("model", MISTRAL, True),
        ("model", NONE, False),
        ("!model", NONE, True),
        ("!model", MISTRAL, False),
        ("  model = mistral-7b ,  tier  notin ( gpu ) ", MISTRAL, True),
        ("model=mistral-7b,model=tinyllama", MISTRAL, False),
        ("app.kubernetes.io/name=x", {"app.kubernetes.io/name": "x"}, True),
        ("model=", {"model": ""}, True),
    ],
)
def test_matching(selector: str, labels: dict[str, str], expected: bool) -> None:
    """Each operator, AND across commas, and whitespace around tokens, as upstream."""
    assert parse_selector(selector).matches(labels) is expected


@pytest.mark.parametrize(
    ("selector", "problem"),
    [
        ("model in ()", "empty value set"),
        ("model in (a", "expected ',' or ')'"),
        ("model in a", "expected '('"),
        ("model=a=b", "expected ','"),
        ("model>1", "not supported"),
        (",", "expected a label key"),
        ("model,", "trailing ','"),
        ("model mistral", "expected an operator"),
        ("-bad=x", "not a valid label key"),
        ("model=bad value!", "expected"),
        ("model=\ufffd", "not a valid label value"),
        ("model=" + "a" * 64, "not a valid label value"),
    ],
)
def test_bad_selectors_raise_naming_the_selector(selector: str, problem: str) -> None:
    """A malformed selector raises SelectorError quoting it and saying what is wrong."""
    with pytest.raises(SelectorError, match="invalid label selector") as caught:
        parse_selector(selector)
    assert problem in str(caught.value)
    assert selector[:20] in str(caught.value)


def test_oversized_selectors_are_refused_before_parsing() -> None:
    """A selector longer than the limit is an error, and the message does not echo it."""
    huge = "a=b," * MAX_SELECTOR_LENGTH
    with pytest.raises(SelectorError, match="longer than") as caught:
        parse_selector(huge)
    assert len(str(caught.value)) < 200


def test_candidates_narrow_equality_and_in() -> None:
    """candidates() intersects = and in requirements on a key; None when unrestricted."""
    assert parse_selector("model in (a,b),model=b").candidates("model") == frozenset({"b"})
    assert parse_selector("model!=a").candidates("model") is None
    assert parse_selector("").candidates("model") is None


_NAMES = st.from_regex(r"[a-z0-9]([-a-z0-9]{0,10}[a-z0-9])?", fullmatch=True)


@given(key=_NAMES, value=_NAMES, other=_NAMES, spaces=st.sampled_from(["", " ", "  "]))
def test_equality_matches_exactly_its_value(key: str, value: str, other: str, spaces: str) -> None:
    """key=value matches the label set with that value and no other, whatever the spacing."""
    selector = parse_selector(f"{spaces}{key}{spaces}={spaces}{value}{spaces}")
    assert selector.matches({key: value})
    assert selector.matches({key: other}) is (other == value)


@given(key=_NAMES, values=st.lists(_NAMES, min_size=1, max_size=4), probe=_NAMES)
def test_in_and_notin_are_complements_when_the_label_is_set(
    key: str, values: list[str], probe: str
) -> None:
    """For a present label, `in (s)` and `notin (s)` never agree."""
    listed = ",".join(values)
    labels = {key: probe}
    assert parse_selector(f"{key} in ({listed})").matches(labels) is not parse_selector(
        f"{key} notin ({listed})"
    ).matches(labels)


@given(st.text(max_size=60))
def test_arbitrary_text_parses_or_raises_selector_error(text: str) -> None:
    """Any input either parses or raises SelectorError; nothing else escapes."""
    with contextlib.suppress(SelectorError):
        parse_selector(text)
