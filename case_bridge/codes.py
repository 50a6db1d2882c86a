"""Class codes (大类/小类 matter codes) and their names, from data files — never from code."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

STANDARD_TABLE = Path(__file__).with_name("data") / "class_codes.tsv"


class ClassCatalog:
    """GB/T 47678.5 matter codes plus the city's local codes (e.g. road water-logging)."""

    def __init__(self, local_classes: Mapping[str, str], table: Path = STANDARD_TABLE) -> None:
        self._names: dict[str, str] = {}
        for line in table.read_text(encoding="utf-8").splitlines():
            if not line or line.startswith("#") or line.startswith("code\t"):
                continue
            code, _category, name = line.split("\t")
            self._names[code] = name
        self._names.update(local_classes)

    def __contains__(self, code: object) -> bool:
        return code in self._names

    def __iter__(self) -> Iterator[str]:
        """The codes, standard ones in table order, then the local ones."""
        return iter(self._names)

    def name(self, code: str) -> str:
        return self._names[code]
