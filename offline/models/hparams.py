"""Backbone hyper-parameters: `configs/defaults.yaml`, then `configs/<model>.yaml`, then overrides.

The YAML files are the single source of the default values (as in MMRec); the pydantic schema
of each model checks types and rejects unknown keys.
"""

from pathlib import Path
from typing import Any, TypeVar

from pydantic import Field, ValidationError

from offline.config import ConfigError, StrictModel, read_yaml

CONFIG_DIR = Path(__file__).parent / "configs"

HParamsT = TypeVar("HParamsT", bound="HParams")


class HParams(StrictModel):
    """Hyper-parameters every backbone has."""

    embedding_size: int = Field(gt=0)
    reg_weight: float = Field(ge=0)
    learning_rate: float = Field(gt=0)
    weight_decay: float = Field(ge=0)


def load_hparams(name: str, schema: type[HParamsT], overrides: dict[str, Any] | None = None) -> HParamsT:
    """The merged hyper-parameters of model `name`, validated by `schema`."""
    data = read_yaml(CONFIG_DIR / "defaults.yaml")
    data.update(read_yaml(CONFIG_DIR / f"{name}.yaml"))
    data.update(overrides or {})
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"invalid hyper-parameters for model {name!r}:\n{exc}") from exc
