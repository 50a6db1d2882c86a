"""MQTT topic filters in fleet config: checked at load, so a typo is not a silent no-match."""

from __future__ import annotations


def check_filter(text: str) -> str:
    """Return ``text`` if it is a usable subscription filter, else raise ValueError.

    ``$``-topics are refused: ``$SYS`` is the broker's own, and shared subscriptions
    (``$share/group/...``) are applied by the router to every filter at once.
    """
    if not text or "\x00" in text:
        raise ValueError("a topic filter must be non-empty text")
    if text.startswith("$"):
        raise ValueError(f"topic filter {text!r}: $-topics are not fleet topics")
    levels = text.split("/")
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            raise ValueError(f"topic filter {text!r}: # must be the whole last level")
        if "+" in level and level != "+":
            raise ValueError(f"topic filter {text!r}: + must be a whole level")
    return text


def level_is_variable(text: str, index: int) -> bool:
    """Whether level ``index`` of messages matching filter ``text`` can differ between
    messages (a ``+`` level, or at/after a ``#``): only such a level can name a device."""
    levels = text.split("/")
    if "#" in levels and index >= levels.index("#"):
        return True
    return index < len(levels) and levels[index] == "+"


def topic_level(topic: str, index: int) -> str | None:
    levels = topic.split("/")
    return levels[index] if index < len(levels) and levels[index] else None
