"""Config loading shared by every stage: pydantic models with defaults, overridden by YAML.

Unknown keys are errors (a typo never silently falls back to a default).
"""

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

ConfigT = TypeVar("ConfigT", bound="StrictModel")


class ConfigError(ValueError):
    """A config file or override that cannot be used, with a message that says what to fix."""


class StrictModel(BaseModel):
    """Base of every config model: unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())


def read_yaml(path: Path) -> dict[str, Any]:
    """Read a YAML mapping, with a clear error for a missing file or a non-mapping document."""
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of settings, got {type(data).__name__}")
    return data


def load_config(model: type[ConfigT], path: Path | None = None, **overrides: Any) -> ConfigT:
    """Defaults of `model`, then the YAML file at `path`, then non-None keyword overrides."""
    data = read_yaml(path) if path is not None else {}
    data.update({key: value for key, value in overrides.items() if value is not None})
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        source = f" in {path}" if path is not None else ""
        raise ConfigError(f"invalid settings{source}:\n{exc}") from exc
