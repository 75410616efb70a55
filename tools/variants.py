"""The NAME:KEY=VALUE,... settings the selection tools take (select_namd's --variant, select_method's --setting)."""

from __future__ import annotations

import yaml


def parse_variant(text: str) -> tuple[str, dict]:
    """NAME:KEY=VALUE,KEY=VALUE -> (NAME, {KEY: VALUE}); a value may be a YAML list or mapping."""
    name, _, body = text.partition(":")
    overrides = {}
    for item in filter(None, _top_level_split(body)):
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"{text!r}: {item!r} is not KEY=VALUE")
        overrides[key.strip()] = parse_value(value)
    return name, overrides


def parse_value(text: str):
    """YAML, except that 3e-3 is a number (YAML 1.1 wants 3.0e-3)."""
    value = yaml.safe_load(text)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    return value


def _top_level_split(text: str) -> list[str]:
    """Split at the commas outside brackets, so that 'a=[1, 2],b=3' is two items."""
    items, depth, start = [], 0, 0
    for i, char in enumerate(text):
        depth += (char in "[{") - (char in "]}")
        if char == "," and depth == 0:
            items.append(text[start:i])
            start = i + 1
    return [*items, text[start:]]
