"""Records that write themselves as JSON-ready data: a frozen dataclass's fields in the order
they are declared, datetimes in ISO 8601, tuples as lists, nested records as objects."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from datetime import datetime
from decimal import Decimal
from typing import Any, ClassVar, cast

__all__ = ["JsonRecord", "as_json"]


class JsonRecord:
    """Mixed into a dataclass: `to_json()` without a hand-written copy of every field."""

    # Fields written under another name, e.g. a segment's key as "source".
    json_names: ClassVar[Mapping[str, str]] = {}

    def to_json(self) -> dict[str, Any]:
        names = self.json_names
        return {
            names.get(f.name, f.name): as_json(getattr(self, f.name))
            for f in fields(cast(Any, self))
        }


def as_json(value: Any) -> Any:
    """`value` as json.dumps takes it; numbers, strings and None stay as they are."""
    if isinstance(value, JsonRecord):
        return value.to_json()
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Decimal):
        # JSON has one kind of number; a sum of money (at most 14 digits) prints back exactly
        # as the same decimal, so the stable shape of `stats --json` keeps its numbers.
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, list | tuple):
        return [as_json(item) for item in value]
    if isinstance(value, Mapping):
        return {key: as_json(item) for key, item in value.items()}
    return value
