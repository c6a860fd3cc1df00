"""Print the README's configuration table from the service's Settings model (one source of truth)."""

from pydantic_core import PydanticUndefined

from service.config import Settings


def settings_table() -> str:
    rows = ["| variable | default | meaning |", "| --- | --- | --- |"]
    for name, field in Settings.model_fields.items():
        default = "required" if field.default is PydanticUndefined else field.default
        if isinstance(default, list):
            default = ",".join(default) or "(empty)"
        elif default is None:
            default = "(unset)"
        rows.append(f"| `CLIPER_{name.upper()}` | `{default}` | {field.description or ''} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(settings_table())
