"""Reading a simulator's YAML file and telling its problems as ``file:line: field: message``."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

Loc = tuple[str | int, ...]
Model = TypeVar("Model", bound=BaseModel)


def read_yaml(path: Path, error: type[ValueError]) -> tuple[Any, yaml.Node | None]:
    """The file's data and its node tree (for line numbers); ``error`` says why not."""
    try:
        text = path.read_text(encoding="utf-8")
        return yaml.safe_load(text), yaml.compose(text)
    except OSError as exc:
        raise error(f"{path}: cannot read scenario: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise error(f"{path}: not valid YAML: {exc}") from exc


def load_yaml_model(
    path: Path, model: type[Model], what: str, error: type[ValueError]
) -> tuple[Model, yaml.Node | None]:
    """Read ``path`` and validate it as ``model``; the node tree comes back for later
    cross-checks. Every schema problem is raised at once as ``error``, file:line: field."""
    data, tree = read_yaml(path, error)
    try:
        return model.model_validate(data), tree
    except ValidationError as exc:
        problems = [(tuple(e["loc"]), e["msg"]) for e in exc.errors()]
        raise error(describe_problems(str(path), what, tree, problems)) from None


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
