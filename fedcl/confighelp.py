"""Key listings generated from a command's structured config (``fedcl COMMAND --help``).

Every leaf key of the config dataclass is listed with its type, default and a one-line
description, so the help cannot drift from the config. A key's description is, in order:
``field(metadata={"help": ...})``, else its entry in the Google-style ``Attributes:`` (or
``Args:``) section of the dataclass's docstring. Nested dataclasses give dotted keys
(``eval.epochs``), described by the nested class's own docstring.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from dataclasses import dataclass
from typing import Any

from omegaconf import OmegaConf

__all__ = ["KeyHelp", "attribute_docs", "config_keys", "format_keys"]

_SECTION = re.compile(r"^(\s*)(Attributes|Args|Arguments|Parameters):\s*$")
_ENTRY = re.compile(r"^([A-Za-z_][\w]*(?:\s*,\s*[A-Za-z_][\w]*)*)\s*(?:\([^)]*\))?:\s*(.*)$")


@dataclass(frozen=True)
class KeyHelp:
    """One config key as listed by ``--help``.

    Attributes:
        key: dotted key as written on the command line (``eval.epochs``).
        type: the declared type, as written in the dataclass (``int | None``).
        default: the default value, formatted as it is typed in an override.
        help: the one-line description ("" when the config does not document the key).
    """

    key: str
    type: str
    default: str
    help: str


_WIDTH = 110  # longest description shown; the docstring keeps the full text


def _first_sentence(text: str) -> str:
    text = " ".join(text.split()).replace("``", "")
    # a sentence ends at ". " before a capital letter, a parenthesis or code; "e.g." does not end one
    m = re.search(r"(?<!\be\.g)(?<!\bi\.e)\.\s+(?=[A-Z(`])", text)
    text = text[:m.start()] if m else text.rstrip(".")
    if len(text) > _WIDTH:
        text = text[:_WIDTH - 3].rsplit(" ", 1)[0].rstrip(",;:") + "..."
    return text


def attribute_docs(cls: type) -> dict[str, str]:
    """The one-line description of each attribute in ``cls``'s ``Attributes:``/``Args:`` docstring section.

    An entry ``a, b: text`` documents both ``a`` and ``b``; an entry runs on over the lines
    indented deeper than its name; only its first sentence is kept.
    """
    docs: dict[str, str] = {}
    lines = (cls.__doc__ or "").expandtabs().splitlines()
    section_indent: int | None = None
    names: list[str] = []
    parts: list[str] = []
    entry_indent = 0

    def flush() -> None:
        for name in names:
            docs.setdefault(name, _first_sentence(" ".join(parts)))

    for line in lines:
        if section_indent is None:
            m = _SECTION.match(line)
            if m:
                section_indent = len(m.group(1))
            continue
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        if indent <= section_indent:  # the section ended (next heading or prose)
            flush()
            names, parts, section_indent = [], [], None
            m = _SECTION.match(line)
            if m:
                section_indent = len(m.group(1))
            continue
        m = _ENTRY.match(line.strip())
        if m and (not names or indent <= entry_indent):
            flush()
            names = [n.strip() for n in m.group(1).split(",")]
            parts, entry_indent = [m.group(2)], indent
        else:
            parts.append(line.strip())
    flush()
    return docs


def _type_name(tp: Any) -> str:
    if isinstance(tp, str):
        return tp.replace("typing.", "")
    if isinstance(tp, type) and not typing.get_args(tp):
        return tp.__name__
    return str(tp).replace("typing.", "").replace("NoneType", "None")


def _format_value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return "???" if value == "???" else (value if value else "''")
    if isinstance(value, list):
        return "[" + ",".join(_format_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{_format_value(v)}" for k, v in value.items()) + "}"
    return str(value)


def _walk(cls: type, defaults: dict[str, Any], prefix: str) -> list[KeyHelp]:
    hints = typing.get_type_hints(cls)
    docs = attribute_docs(cls)
    keys: list[KeyHelp] = []
    for f in dataclasses.fields(cls):
        if not f.init or f.name.startswith("_"):
            continue
        tp = hints.get(f.name)
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            keys += _walk(tp, defaults.get(f.name) or {}, f"{prefix}{f.name}.")
            continue
        doc = str(f.metadata.get("help", "")) or docs.get(f.name, "")
        keys.append(KeyHelp(f"{prefix}{f.name}", _type_name(f.type), _format_value(defaults.get(f.name)), doc))
    return keys


def config_keys(schema: type) -> list[KeyHelp]:
    """Every leaf key of the config dataclass ``schema`` (nested ones dotted), in declaration order."""
    defaults = OmegaConf.to_container(OmegaConf.structured(schema), resolve=False)
    return _walk(schema, defaults if isinstance(defaults, dict) else {}, "")  # type: ignore[arg-type]


def format_keys(schema: type) -> str:
    """The key table of ``--help``: one line per key, ``key  type  default  description``."""
    keys = config_keys(schema)
    wk = max(len(k.key) for k in keys)
    wt = min(max(len(k.type) for k in keys), 16)
    wd = min(max(len(k.default) for k in keys), 16)
    lines = [f"  {'key':<{wk}}  {'type':<{wt}}  {'default':<{wd}}  description"]
    for k in keys:
        default = k.default if len(k.default) <= 40 else k.default[:37] + "..."
        lines.append(f"  {k.key:<{wk}}  {k.type:<{wt}}  {default:<{wd}}  {k.help}".rstrip())
    return "\n".join(lines)
