"""``--config`` files (TOML or YAML) and the printed configuration (TOML, reusable with ``--config``)."""

from __future__ import annotations

import math
import os
from typing import Any

from ..errors import InputError

__all__ = ["fmt_number", "format_config", "load_config", "one_line"]


def one_line(text: Any) -> str:
    """``text`` with every run of white space (newlines too) as one space."""
    return " ".join(str(text).split())


def fmt_number(v: Any) -> str:
    """``3.0`` -> ``'3'``; anything else as ``str``."""
    if isinstance(v, float) and v.is_integer() and math.isfinite(v):
        return str(int(v))
    return str(v)


def load_config(path: str | os.PathLike) -> dict[str, Any]:
    """Read a TOML (``.toml``) or YAML (``.yaml``/``.yml``) file of run options; other names: either.

    Raises
    ------
    InputError
        Missing or unreadable file, a syntax error, or a top level that is not a table.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise InputError(f"config file not found: {path}")
    import tomllib

    import yaml

    lower = path.lower()
    kinds = ["toml"] if lower.endswith(".toml") else ["yaml"] if lower.endswith((".yaml", ".yml")) else ["toml", "yaml"]
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except OSError as exc:
        raise InputError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    data: Any = None
    for i, kind in enumerate(kinds):
        try:
            data = tomllib.loads(raw.decode("utf-8")) if kind == "toml" else yaml.safe_load(raw)
            break
        except Exception as exc:
            if i == len(kinds) - 1:
                what = f" as {kind.upper()}" if len(kinds) == 1 else " as TOML or YAML"
                raise InputError(f"cannot parse config file {path}{what}: {one_line(exc)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        hint = " (TOML needs a .toml name)" if " = " in raw.decode("utf-8", "replace") and kinds == ["yaml"] else ""
        raise InputError(
            f"config file {path} must hold options as key = value (TOML) or key: value (YAML), "
            f"got a {type(data).__name__}{hint}"
        )
    return data


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v) if isinstance(v, float) and math.isfinite(v) else str(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items()) + "}"
    text = str(v).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


def format_config(resolved: dict[str, Any]) -> str:
    """The resolved options as TOML (unset ones commented out), ready to reuse with ``--config``."""
    lines = []
    for key, value in resolved.items():
        if key in ("input", "output"):
            lines.append(f"# {key} = {_toml_value(value)}")
        elif value is None:
            lines.append(f"# {key} = (not set)")
        else:
            lines.append(f"{key} = {_toml_value(value)}")
    return "\n".join(lines)
