"""YAML config files with `key=value` overrides, validated by a pydantic model.

One loader for every command that takes `[CONFIG.yaml] [KEY=VALUE]...` (the study, the reasoner
recipe), so they read files, parse overrides and report mistakes the same way.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


def load_config(model: type[M], path: str | os.PathLike | None, overrides: list[str] | tuple[str, ...],
                error: type[Exception] = ValueError) -> M:
    """Read a YAML file (the model's defaults when `path` is None), apply `key=value` overrides
    (`sae.k=16`, `strengths=[0.1,0.3]`; values parsed as YAML) and validate. Every problem is raised
    as `error` with a message that names the file, the override or the field."""
    data: dict[str, Any] = {}
    if path is not None:
        file = Path(path)
        if file.is_dir():
            inside = sorted(p.name for p in file.glob("*.yaml"))[:5]
            hint = f" (it holds {', '.join(inside)})" if inside else ""
            raise error(f"{str(path)!r} is a folder; name a YAML config file{hint}")
        if not file.is_file():
            raise error(f"config not found: {str(path)!r}")
        try:
            data = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as err:
            raise error(f"{str(path)!r} is not valid YAML: {err}") from None
        except UnicodeDecodeError:
            raise error(f"{str(path)!r} is not UTF-8 text; a config is a YAML file") from None
        except OSError as err:
            raise error(f"cannot read {str(path)!r}: {err.strerror or err}") from None
        if not isinstance(data, dict):
            raise error(f"{str(path)!r} must hold a mapping of settings, got {type(data).__name__}")
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise error(f"override {item!r} must look like key=value (e.g. seed=1)")
        *parents, leaf = key.strip().split(".")
        target = data
        for part in parents:
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                raise error(f"override {item!r}: {part!r} is not a section")
        try:
            target[leaf] = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as err:
            raise error(f"override {item!r}: the value is not valid YAML: {err}") from None
    try:
        return model(**data)
    except ValidationError as err:
        lines = [f"  {'.'.join(map(str, e['loc'])) or '(config)'}: {e['msg']}" for e in err.errors()]
        raise error(f"invalid {model.__name__}:\n" + "\n".join(lines)) from None
