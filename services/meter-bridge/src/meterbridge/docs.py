"""The configuration reference (Markdown), generated from the schema.

The README embeds this output between markers; a test fails when they differ, so the
README can never drift from what the bridge accepts.
"""

from __future__ import annotations

import typing
from collections.abc import Iterator
from types import NoneType, UnionType
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from .config import BridgeConfig, config_model


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Literal:
        return " \\| ".join(f"`{a}`" for a in args)
    if origin is typing.Annotated:
        return _type_name(args[0])
    if origin in (UnionType, typing.Union):
        names = [_type_name(a) for a in args if a is not NoneType]
        return " or ".join(names) + (" (optional)" if NoneType in args else "")
    if origin is list:
        return f"list of {_type_name(args[0])}"
    name = getattr(annotation, "__name__", str(annotation))
    return {"SecretStr": "secret", "PosixPath": "path", "Path": "path"}.get(name, name)


def _model_of(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (UnionType, typing.Union):
        # an optional section (`influx: InfluxConfig | None`): document its keys
        models = [a for a in typing.get_args(annotation) if a is not NoneType]
        if len(models) == 1:
            return _model_of(models[0])
    return None


def _rows(model: type[BaseModel], prefix: str) -> Iterator[tuple[str, str, str, str]]:
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        nested = _model_of(field.annotation)
        if nested is not None:
            yield from _rows(nested, f"{key}.")
            continue
        if name != "sources" and typing.get_origin(field.annotation) is list:
            item = _model_of(typing.get_args(field.annotation)[0])
            if item is not None:  # a list of sections (kasa.plugs): one row per item key
                yield key, "list", "`[]`", field.description or ""
                yield from _rows(item, f"{key}[].")
                continue
        if field.is_required():
            default = "**required**"
        elif field.default_factory is not None:
            default = "`[]`" if typing.get_origin(field.annotation) is list else "(see below)"
        elif field.default is None or field.default is PydanticUndefined:
            default = "-"
        else:
            default = f"`{field.default}`"
        yield key, _type_name(field.annotation), default, field.description or ""


def _table(rows: Iterator[tuple[str, str, str, str]]) -> list[str]:
    lines = ["| key | type | default | description |", "|---|---|---|---|"]
    lines += [f"| `{k}` | {t} | {d} | {desc} |" for k, t, d, desc in rows]
    return lines


def source_models(model: type[BridgeConfig] | None = None) -> list[type[BaseModel]]:
    """Every source family's config model, in the order of the schema (default: `config_model()`)."""
    annotation = (model or config_model()).model_fields["sources"].annotation
    (item,) = typing.get_args(annotation)
    inner = typing.get_args(item)[0] if typing.get_origin(item) is typing.Annotated else item
    members = typing.get_args(inner) or (inner,)
    return [m for m in members if _model_of(m) is not None]


def config_reference(schema: type[BridgeConfig] | None = None) -> str:
    """The whole reference as Markdown, for `schema` (default: `config_model()`)."""
    schema = schema or config_model()
    out = ["### Settings", ""]
    out += _table(row for row in _rows(schema, "") if row[0] != "sources")
    for model in source_models(schema):
        source_type = typing.get_args(model.model_fields["type"].annotation)[0]
        out += ["", f"### Source `type: {source_type}`", "", (model.__doc__ or "").strip().splitlines()[0], ""]
        out += _table(row for row in _rows(model, "sources[].") if row[0] != "sources[].type")
    return "\n".join(out)
