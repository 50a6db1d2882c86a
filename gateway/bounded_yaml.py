"""Reading one YAML file with bounds, so that no file can crash or stall the loader.

A config file comes from whoever can write to its folder. PyYAML alone turns some files
into tracebacks or unbounded work: deep nesting raises RecursionError in its composer, an
integer of 5,000 digits raises ValueError from ``int()``, and aliases can make a few
kilobytes stand for billions of nodes ("billion laughs") that validation would then walk.
Here the file is bounded in bytes, must be UTF-8, is checked for depth on PyYAML's event
stream (which is not recursive) before anything is composed, and for its size with every
alias expanded before anything is constructed. Every refusal is a ``YamlFileError`` whose
text names the file and says what is wrong, never quoting the file's content: it may hold
a secret.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

MAX_BYTES = 1024 * 1024  # a gateway config is a few kilobytes
MAX_DEPTH = 64
MAX_NODES = 100_000  # with aliases expanded


class YamlFileError(ValueError):
    """The file cannot be read as bounded YAML; ``str()`` says why, for the operator."""


def load_yaml_file(path: Path) -> tuple[yaml.Node | None, Any]:
    """The file's YAML node tree (for line numbers) and its constructed data."""
    text = _read_utf8(path)
    _check_depth(path, text)
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        if root is not None:
            _check_expanded_size(path, root)
        return root, loader.construct_document(root) if root is not None else None
    except YamlFileError:
        raise
    except yaml.MarkedYAMLError as exc:
        raise YamlFileError(_describe(path, exc)) from None
    except yaml.YAMLError as exc:
        raise YamlFileError(f"{path}: not valid YAML: {type(exc).__name__}") from None
    except ValueError as exc:  # int() of too many digits, impossible dates
        reason = str(exc).split(";")[0]  # not Python's advice on sys.set_int_max_str_digits
        raise YamlFileError(f"{path}: a number or date cannot be read: {reason}") from None
    finally:
        loader.dispose()


def _read_utf8(path: Path) -> str:
    try:
        if not path.is_file():
            raise YamlFileError(f"{path}: not a regular file")
        with path.open("rb") as file:
            raw = file.read(MAX_BYTES + 1)
    except OSError as exc:
        raise YamlFileError(f"{path}: cannot read: {exc.strerror}") from None
    if len(raw) > MAX_BYTES:
        raise YamlFileError(f"{path}: larger than {MAX_BYTES} bytes; is this the right file?")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise YamlFileError(
            f"{path}:{line}: not UTF-8 (byte {exc.start}); save the file as UTF-8"
        ) from None


def _check_depth(path: Path, text: str) -> None:
    depth = 0
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                if depth > MAX_DEPTH:
                    line = event.start_mark.line + 1
                    raise YamlFileError(f"{path}:{line}: nested deeper than {MAX_DEPTH} levels")
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
    except yaml.MarkedYAMLError as exc:
        raise YamlFileError(_describe(path, exc)) from None
    except yaml.YAMLError as exc:
        raise YamlFileError(f"{path}: not valid YAML: {type(exc).__name__}") from None


def _check_expanded_size(path: Path, root: yaml.Node) -> None:
    """Counts the nodes the data will have once aliases are expanded, in time linear in the
    tree (each node's expanded size is computed once), and refuses recursive aliases."""
    sizes: dict[int, int] = {}
    depths: dict[int, int] = {}
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    open_nodes: set[int] = set()
    while stack:
        node, children_done = stack.pop()
        if id(node) in sizes:
            continue
        children = _children(node)
        if children_done:
            open_nodes.discard(id(node))
            sizes[id(node)] = 1 + sum(sizes[id(child)] for child in children)
            depths[id(node)] = 1 + max((depths[id(child)] for child in children), default=0)
            line = node.start_mark.line + 1
            if sizes[id(node)] > MAX_NODES:
                raise YamlFileError(
                    f"{path}:{line}: more than {MAX_NODES} values once aliases are expanded"
                )
            if depths[id(node)] > MAX_DEPTH + 1:  # + 1: the scalars at the bottom
                raise YamlFileError(
                    f"{path}:{line}: nested deeper than {MAX_DEPTH} levels through aliases"
                )
            continue
        if id(node) in open_nodes:
            line = node.start_mark.line + 1
            raise YamlFileError(f"{path}:{line}: an alias refers to a collection containing it")
        open_nodes.add(id(node))
        stack.append((node, True))
        stack.extend((child, False) for child in children if id(child) not in sizes)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def _describe(path: Path, exc: yaml.MarkedYAMLError) -> str:
    """PyYAML's own text quotes the offending line, which may hold a password: keep only
    the position and the problem."""
    mark = exc.problem_mark or exc.context_mark
    where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
    problem = exc.problem or exc.context or "unreadable"
    return f"{where}: not valid YAML: {problem}"
