"""A tiny JSON path: ``$``, ``.name``, ``['name']`` and ``[index]`` steps, nothing else.

Why not jsonpath-ng or jmespath: a fleet mapping needs one value at one fixed place.
Filters, wildcards and recursive descent return lists and invite configs whose meaning
depends on the data; parsing once at config load and walking a tuple of steps per message is
also several times cheaper than a general engine on the hot path, and adds no dependency.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import GetCoreSchemaHandler
from pydantic_core import core_schema

_NAME = re.compile(r"\.([^.\[\]'\"]+)")
_INDEX = re.compile(r"\[(\d+)\]")
_QUOTED = re.compile(r"\['([^']*)'\]|\[\"([^\"]*)\"\]")
MISSING = object()  # what resolve() returns when the document has nothing at the path


class JsonPath:
    """A parsed path; ``resolve(doc)`` returns the value there or ``MISSING``."""

    __slots__ = ("steps", "text")

    def __init__(self, text: str) -> None:
        if not text.startswith("$"):
            raise ValueError(f"JSON path {text!r} must start with $")
        steps: list[str | int] = []
        pos = 1
        while pos < len(text):
            if match := _NAME.match(text, pos):
                steps.append(match.group(1))
            elif match := _INDEX.match(text, pos):
                steps.append(int(match.group(1)))
            elif match := _QUOTED.match(text, pos):
                steps.append(match.group(1) if match.group(1) is not None else match.group(2))
            else:
                raise ValueError(
                    f"JSON path {text!r}: cannot read {text[pos:]!r}"
                    " (use .name, ['name'] or [index])"
                )
            pos = match.end()
        self.text = text
        self.steps: tuple[str | int, ...] = tuple(steps)

    def resolve(self, doc: Any) -> Any:
        node = doc
        for step in self.steps:
            if isinstance(step, int):
                if not isinstance(node, list) or step >= len(node):
                    return MISSING
            elif not isinstance(node, dict) or step not in node:
                return MISSING
            node = node[step]
        return node

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return f"JsonPath({self.text!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, JsonPath) and other.steps == self.steps

    def __hash__(self) -> int:
        return hash(self.steps)

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: type[Any], handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        """Validated from a string in config, so a bad path is a config error with a line."""
        return core_schema.no_info_after_validator_function(
            cls,
            core_schema.str_schema(),
            serialization=core_schema.to_string_ser_schema(),
        )
