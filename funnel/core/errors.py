"""Refusals of what a person typed, as codes with fields: the domain says what was wrong
(`InputError("amount.not_positive")`, `InputError("id.too_large", what="lead", limit=...)`)
and the presentation says it in the reader's language. Nothing here is a sentence."""

from __future__ import annotations

from typing import Any

__all__ = ["InputError"]


class InputError(ValueError):
    """A refused input: `code` names the problem, `fields` the values a text may quote."""

    def __init__(self, code: str, /, **fields: Any) -> None:
        self.code = code
        self.fields = fields
        details = ", ".join(f"{name}={value!r}" for name, value in fields.items())
        super().__init__(f"{code} ({details})" if details else code)
