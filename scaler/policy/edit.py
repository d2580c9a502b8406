"""Writing a changed policy as an operator would: a minimal edit of the file it came from.

`edit_values` replaces the changed scalars in the original text in place (PyYAML's node
marks give each value's exact span), so comments, key order, quoting, flow mappings and
every untouched line stay byte for byte. `policy_yaml` is the fallback when no original is
at hand: the whole policy, defaults left out (no ``queries: {}`` or ``service: {}``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import yaml

from scaler.core.policy import ModelPolicy

FieldPath = tuple[str, ...]
"""A field as YAML keys from the document's root: ``("scaleDown", "stabilizationSeconds")``."""


class EditError(ValueError):
    """The change cannot be made in place (the field is not a plain value in the text)."""


def changed_fields(before: ModelPolicy, after: ModelPolicy) -> dict[FieldPath, Any]:
    """The leaf fields (YAML keys) whose values differ from `before` to `after`. Pure."""
    old = before.model_dump(by_alias=True, mode="json", exclude_none=True)
    new = after.model_dump(by_alias=True, mode="json", exclude_none=True)
    changes: dict[FieldPath, Any] = {}
    _diff(old, new, (), changes)
    return changes


def _diff(old: Any, new: Any, path: FieldPath, out: dict[FieldPath, Any]) -> None:
    if isinstance(old, dict) and isinstance(new, dict):
        for key in new:
            if key in old:
                _diff(old[key], new[key], (*path, str(key)), out)
            else:
                out[(*path, str(key))] = new[key]
        for key in old:
            if key not in new:
                out[(*path, str(key))] = None
        return
    if old != new:
        out[path] = new


def number(value: float) -> str:
    """A number as an operator writes it: ``4``, not ``4.0``; ``0.11``, not ``0.11000000001``."""
    if not math.isfinite(value):
        raise EditError(f"{value} is not a number a policy can hold")
    if float(value).is_integer():
        return str(int(value))
    return f"{value:.10g}"


def edit_values(text: str, changes: Mapping[FieldPath, Any]) -> str:
    """`text` (one policy document) with the numbers at `changes`' paths replaced in place,
    or added as the last entry of their block mapping when absent (``sizing.aimPercentile``);
    EditError when a path is not a number written in the text (a mapping, a string, a flow
    mapping), so the caller can write the whole policy instead."""
    root = yaml.compose(text, Loader=yaml.SafeLoader)
    if root is None:
        raise EditError("empty document")
    spans: list[tuple[int, int, str]] = []
    for path, value in changes.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise EditError(f"{'.'.join(path)}: only numbers are edited in place")
        node = _find(root, path)
        if node is None:
            spans.append(_new_entry(text, root, path, number(value)))
            continue
        if not isinstance(node, yaml.ScalarNode) or node.style is not None:
            raise EditError(f"{'.'.join(path)}: not a plain value in the file")
        spans.append((node.start_mark.index, node.end_mark.index, number(value)))
    for start, end, replacement in sorted(spans, reverse=True):
        # Keep a trailing comment in its column (aligned comments stay aligned).
        gap = len(text) - len(text[end:].lstrip(" ")) - end
        if start < end and text.startswith("#", end + gap) and gap > 0:
            width = max(1, (end - start) + gap - len(replacement))
            end, replacement = end + gap, replacement + " " * width
        text = text[:start] + replacement + text[end:]
    return text


def _new_entry(text: str, root: yaml.Node, path: FieldPath, value: str) -> tuple[int, int, str]:
    """An insertion (position, position, line) adding ``key: value`` as the last entry of
    the block mapping that holds `path` (``sizing.aimPercentile`` into ``sizing:``)."""
    parent = _find(root, path[:-1])
    if not isinstance(parent, yaml.MappingNode) or parent.flow_style or not parent.value:
        raise EditError(f"{'.'.join(path)}: absent, and its mapping is not a block in the file")
    indent = parent.value[0][0].start_mark.column
    last = parent.value[-1][1].end_mark.index
    line_end = text.find("\n", last)
    if last > 0 and text[last - 1] == "\n":  # a nested block ends at the next line's start
        line_end = last - 1
    if line_end < 0:
        return len(text), len(text), f"\n{' ' * indent}{path[-1]}: {value}"
    return line_end, line_end, f"\n{' ' * indent}{path[-1]}: {value}"


def _find(node: yaml.Node, path: FieldPath) -> yaml.Node | None:
    for key in path:
        if not isinstance(node, yaml.MappingNode):
            return None
        found = [v for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == key]
        if not found:
            return None
        node = found[-1]  # the loader keeps the last of duplicate keys
    return node


def policy_yaml(policy: ModelPolicy) -> str:
    """The whole policy as YAML, in schema order, without the fields left at their defaults."""
    document = policy.model_dump(by_alias=True, mode="json", exclude_defaults=True)
    return yaml.safe_dump(document, sort_keys=False)
