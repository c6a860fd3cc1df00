"""Text views of an item: which fields feed which prompt, and how long text is chunked.

A view turns one or more text fields into a prompt such as "The product title is {}.". An
empty field becomes the `missing` word ("The product brand is Missing."), as in the CLIPER
paper's code. The global view fills every view's value into one template; unlike the official
code (where only the last placeholder got filled) each placeholder is named after its view.
"""

import string
from collections.abc import Callable, Mapping
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, field_validator, model_validator

GLOBAL_VIEW = "global"
PRESETS = ("products", "movies")
_PRESET_DIR = Path(__file__).parent / "presets"


class ViewSpec(BaseModel):
    """One view: the columns it reads (joined with ", ") and its prompt template with one `{}`."""

    model_config = ConfigDict(extra="forbid")

    name: str
    columns: list[str]
    template: str
    split: str | None = None  # a separator inside a column, e.g. "|" in "Kitchen|Mugs"

    @field_validator("template")
    @classmethod
    def _one_placeholder(cls, template: str) -> str:
        fields = [field for _, field, _, _ in string.Formatter().parse(template) if field is not None]
        if fields != [""]:
            raise ValueError(f"a view template needs exactly one '{{}}' placeholder, got {template!r}")
        return template

    def value(self, row: Mapping[str, object], missing: str) -> str:
        """The view's text for one item: its columns' non-empty parts, or `missing`."""
        parts: list[str] = []
        for column in self.columns:
            text = _clean(row.get(column))
            pieces = text.split(self.split) if self.split else [text]
            parts.extend(piece.strip() for piece in pieces if piece.strip())
        return ", ".join(parts) if parts else missing

    def prompt(self, value: str) -> str:
        return self.template.format(value)


class ViewsConfig(BaseModel):
    """The views of a catalog, in order; the global view (if any) is always last."""

    model_config = ConfigDict(extra="forbid")

    name: str = "custom"
    views: list[ViewSpec]
    global_template: str | None = None
    missing: str = "Missing"

    @model_validator(mode="after")
    def _check_names(self) -> "ViewsConfig":
        names = [view.name for view in self.views]
        if not names:
            raise ValueError("a views config needs at least one view")
        if len(set(names)) != len(names) or GLOBAL_VIEW in names:
            raise ValueError(f"view names must be unique and not {GLOBAL_VIEW!r}, got {names}")
        if self.global_template is not None:
            used = {f for _, f, _, _ in string.Formatter().parse(self.global_template) if f is not None}
            unknown = used - set(names)
            if unknown or "" in used:
                raise ValueError(
                    f"global_template placeholders must be view names {names}, got {sorted(used)}"
                )
        return self

    @property
    def view_names(self) -> list[str]:
        names = [view.name for view in self.views]
        return names + [GLOBAL_VIEW] if self.global_template is not None else names

    @property
    def templates(self) -> dict[str, str]:
        templates = {view.name: view.template for view in self.views}
        if self.global_template is not None:
            templates[GLOBAL_VIEW] = self.global_template
        return templates

    @property
    def columns(self) -> list[str]:
        """Every text column some view reads, in first-use order."""
        return list(dict.fromkeys(column for view in self.views for column in view.columns))

    @property
    def list_separators(self) -> dict[str, str]:
        """The columns that hold lists, each with its separator (the first view that splits it)."""
        separators: dict[str, str] = {}
        for view in self.views:
            for column in view.columns:
                if view.split:
                    separators.setdefault(column, view.split)
        return separators

    def values(self, row: Mapping[str, object]) -> dict[str, str]:
        return {view.name: view.value(row, self.missing) for view in self.views}

    def prompts(self, row: Mapping[str, object]) -> list[str]:
        """One prompt per view (global last) for an item's fields."""
        values = self.values(row)
        prompts = [view.prompt(values[view.name]) for view in self.views]
        if self.global_template is not None:
            prompts.append(self.global_template.format(**values))
        return prompts

    def view_texts(self, row: Mapping[str, object]) -> list[tuple[str, str]]:
        """(template, value) per view, global last as ("{}", the filled global prompt).

        This is what chunking works on: a long value is cut and each piece put back into its
        view's template, so every chunk keeps its view prompt.
        """
        values = self.values(row)
        pairs = [(view.template, values[view.name]) for view in self.views]
        if self.global_template is not None:
            pairs.append(("{}", self.global_template.format(**values)))
        return pairs


def load_views(spec: str | Path) -> ViewsConfig:
    """A preset name (`products`, `movies`) or the path of a YAML views file."""
    if str(spec) in PRESETS:
        path = _PRESET_DIR / f"{spec}.yaml"
    else:
        path = Path(spec)
    if not path.is_file():
        raise FileNotFoundError(f"views {spec!r} is neither a preset {PRESETS} nor a YAML file")
    return ViewsConfig.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))


def chunk_prompts(
    template: str,
    value: str,
    count_tokens: Callable[[str], int],
    max_tokens: int,
    max_chunks: int,
) -> list[str]:
    """Cut `value` into word windows whose prompts fit `max_tokens`; at most `max_chunks`.

    Each chunk is the largest run of words (binary search) whose filled template fits, so a
    text needs few tokenizer calls. A single word longer than the context stays one chunk and
    is truncated by the tokenizer.
    """
    prompt = template.format(value)
    if count_tokens(prompt) <= max_tokens:
        return [prompt]
    words = value.split()
    chunks: list[str] = []
    start = 0
    while start < len(words) and len(chunks) < max_chunks:
        low, high = start + 1, len(words)
        while low < high:
            middle = (low + high + 1) // 2
            if count_tokens(template.format(" ".join(words[start:middle]))) <= max_tokens:
                low = middle
            else:
                high = middle - 1
        chunks.append(template.format(" ".join(words[start:low])))
        start = low
    return chunks


def _clean(value: object) -> str:
    if value is None or (isinstance(value, float) and value != value):  # None or NaN
        return ""
    text = str(value).strip()
    return "" if text in {"N/A", "nan"} else text
