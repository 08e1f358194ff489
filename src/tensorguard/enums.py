"""The base of every tensorguard enum: a string whose text, JSON and f-string form is its value."""

from __future__ import annotations

from enum import Enum


class TextEnum(str, Enum):
    """A ``str`` enum that prints as its value on every Python version (``f"{Role.FFN}"`` is ``ffn``)."""

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)
