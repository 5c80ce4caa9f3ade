"""Every field of the bridge's config schema, nested sections, source families and unions of
sections inside lists included (`meterbridge.docs` documents only what the reference shows)."""

from __future__ import annotations

import typing
from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo

from meterbridge.config import config_model


def models_in(annotation: Any) -> Iterator[type[BaseModel]]:
    """Every model in an annotation: unions, lists, Annotated and optional ones included."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
    for arg in typing.get_args(annotation):
        yield from models_in(arg)


def schema_fields(model: type[BaseModel] | None = None) -> Iterator[tuple[str, FieldInfo]]:
    """(`Model.field`, its FieldInfo) of every field of `model` (default: the whole schema) and
    of every model below it, each model once."""
    seen: set[type[BaseModel]] = set()

    def walk(model: type[BaseModel]) -> Iterator[tuple[str, FieldInfo]]:
        if model in seen:
            return
        seen.add(model)
        for name, field in model.model_fields.items():
            yield f"{model.__name__}.{name}", field
            for nested in models_in(field.annotation):
                yield from walk(nested)

    yield from walk(model or config_model())


def is_secret(field: FieldInfo) -> bool:
    """Whether the field holds a secret (`SecretStr`, optional or not)."""
    return SecretStr in (field.annotation, *typing.get_args(field.annotation))
