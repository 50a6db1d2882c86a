"""``citygw config-schema``: a JSON Schema of ``gateway.yaml``, for editors to complete and
check while an operator types.

Generated from the config's own models (gateway/config.py ``GatewayConfig``), so it cannot
drift from what the gateway accepts, with one addition the models do not hold: a secret
may be given as ``<name>_file`` or ``<name>_env`` instead of its value (the loader reads it
before validation, gateway/config_secrets.py ``SECRET_SOURCES``), so those keys are added
where the loader takes them, with "one of them, not several" as the loader checks. The
schema is looser than the gateway in one respect only: checks across fields and files
(class codes in the catalogue, an adapter's section present) stay with ``citygw
check-config``, which explains each with the file's line.

With the YAML language server (VS Code, Neovim, ...), the first line of the config file
``# yaml-language-server: $schema=gateway.schema.json`` points it at the file this writes.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gateway.config import GatewayConfig
from gateway.config_secrets import SECRET_SOURCES

DRAFT = "https://json-schema.org/draft/2020-12/schema"
SOURCE_HELP = {
    "file": "a file holding {name} (its text, trailing newline dropped), relative to this"
    " file's folder",
    "env": "the name of an environment variable holding {name}",
}


def register(subparsers: argparse._SubParsersAction) -> None:
    command = subparsers.add_parser(
        "config-schema", help="print the JSON Schema of the gateway's config (for editors)"
    )
    command.add_argument("--out", type=Path, default=None, help="write it here, not to stdout")
    command.set_defaults(handler=_config_schema)


def _config_schema(args: argparse.Namespace) -> int:
    text = json.dumps(config_schema(), ensure_ascii=False, indent=2) + "\n"
    if args.out is None:
        sys.stdout.write(text)
        return 0
    try:
        args.out.write_text(text, encoding="utf-8")
    except OSError as exc:
        print(f"citygw: {args.out}: cannot write: {exc.strerror}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}")
    return 0


def config_schema() -> dict[str, Any]:
    """``GatewayConfig``'s validation schema with the secret sources the loader takes."""
    schema = GatewayConfig.model_json_schema(mode="validation")
    for loc, sources in SECRET_SOURCES.items():
        *path, name = loc
        for model in _models_at(schema, schema, path):
            if name in model.get("properties", {}):
                _add_sources(model, name, sources)
    return _install_paths_named(
        {
            "$schema": DRAFT,
            "title": "citygw gateway config (gateway.yaml)",
            **{key: value for key, value in schema.items() if key != "title"},
        }
    )


# Where this checkout or installation lives: defaults pointing at the shipped data files
# hold it, and the schema must read the same from any checkout (it is committed).
_INSTALLED = str(Path(__file__).resolve().parents[1]) + "/"


def _install_paths_named(node: Any) -> Any:
    """``node`` with every absolute path into the installed package written as
    ``<citygw>/…`` (e.g. the shipped dispatch tables' defaults)."""
    if isinstance(node, dict):
        return {key: _install_paths_named(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_install_paths_named(value) for value in node]
    if isinstance(node, str) and node.startswith(_INSTALLED):
        return "<citygw>/" + node.removeprefix(_INSTALLED)
    return node


def _models_at(root: dict[str, Any], node: dict[str, Any], path: list[str]) -> Iterator[dict]:
    """The object schemas reached from ``node`` along ``path`` (through ``$ref``s, optional
    sections and unions: each member that has the key)."""
    for model in _objects(root, node):
        if not path:
            yield model
            continue
        child = model.get("properties", {}).get(path[0])
        if child is not None:
            yield from _models_at(root, child, path[1:])


def _objects(root: dict[str, Any], node: dict[str, Any]) -> Iterator[dict]:
    if "$ref" in node:
        yield from _objects(root, _resolve(root, node["$ref"]))
    elif "properties" in node:
        yield node
    for member in (*node.get("anyOf", ()), *node.get("oneOf", ())):
        yield from _objects(root, member)


def _resolve(root: dict[str, Any], ref: str) -> dict[str, Any]:
    assert ref.startswith("#/$defs/"), ref  # pydantic's own references, nothing else
    return root["$defs"][ref.removeprefix("#/$defs/")]


def _add_sources(model: dict[str, Any], name: str, sources: tuple[str, ...]) -> None:
    """``<name>_<source>`` beside ``name``; exactly one of them where ``name`` is required,
    at most one otherwise."""
    keys = [name, *(f"{name}_{source}" for source in sources)]
    for source, key in zip(sources, keys[1:], strict=True):
        model["properties"][key] = {
            "type": "string",
            "minLength": 1,
            "description": SOURCE_HELP[source].format(name=name),
        }
    required = model.get("required", [])
    if name in required:
        required.remove(name)
        if not required:
            del model["required"]
        model["oneOf"] = [{"required": [key]} for key in keys]
    else:
        pairs = [[a, b] for i, a in enumerate(keys) for b in keys[i + 1 :]]
        model["not"] = {"anyOf": [{"required": pair} for pair in pairs]}
