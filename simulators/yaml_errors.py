"""Reading a simulator's YAML file and telling its problems as ``file:line: field: message``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

Loc = tuple[str | int, ...]


def read_yaml(path: Path, error: type[ValueError]) -> tuple[Any, yaml.Node | None]:
    """The file's data and its node tree (for line numbers); ``error`` says why not."""
    try:
        text = path.read_text(encoding="utf-8")
        return yaml.safe_load(text), yaml.compose(text)
    except OSError as exc:
        raise error(f"{path}: cannot read scenario: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise error(f"{path}: not valid YAML: {exc}") from exc


def describe_problems(
    source: str, what: str, tree: yaml.Node | None, problems: list[tuple[Loc, str]]
) -> str:
    lines = [f"{source}: invalid {what} ({len(problems)} problem(s))"]
    for loc, msg in problems:
        field = ".".join(str(part) for part in loc) or "(top level)"
        lines.append(f"  {source}:{line_of(tree, loc)}: {field}: {msg}")
    return "\n".join(lines)


def line_of(node: yaml.Node | None, loc: Loc) -> int:
    """The 1-based line of the deepest YAML node along ``loc`` that exists."""
    if node is None:
        return 1
    line = node.start_mark.line + 1
    for part in loc:
        child = None
        if isinstance(node, yaml.MappingNode):
            child = next((v for k, v in node.value if k.value == str(part)), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            child = node.value[part] if part < len(node.value) else None
        if child is None:
            break
        node = child
        line = node.start_mark.line + 1
    return line
