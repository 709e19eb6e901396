"""The config's JSON Schema (for editors) and its Markdown reference (for the README).

Both come from the models, so neither can drift from what the loader accepts; policy options
come from each registered policy's own `Options` model.
"""

from __future__ import annotations

import json
import types
import typing
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from gateway.config.models import GatewayConfig
from gateway.config.units import Duration, Rate, Size, parse_duration, parse_rate, parse_size
from gateway.registry import Registry


def config_schema(registry: Registry) -> dict[str, Any]:
    """JSON Schema of a config file, with one variant per registered policy type."""
    schema = GatewayConfig.model_json_schema(ref_template="#/$defs/{model}")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    defs = schema.setdefault("$defs", {})
    variants = []
    for name in registry:
        options = registry[name].Options.model_json_schema(ref_template="#/$defs/{model}")
        defs.update(options.pop("$defs", {}))
        key = f"{name}_options"
        defs[key] = options
        variants.append(
            {
                "type": "object",
                "properties": {name: {"$ref": f"#/$defs/{key}"}},
                "required": [name],
                "additionalProperties": False,
            }
        )
    defs["PolicyDeclaration"] = {"oneOf": variants} if variants else {"type": "object"}
    schema["properties"]["policies"]["additionalProperties"] = {"$ref": "#/$defs/PolicyDeclaration"}
    defs["RouteConfig"]["properties"]["policies"]["items"] = {
        "anyOf": [
            {"type": "string", "description": "The name of an entry of the top-level `policies`."},
            {"$ref": "#/$defs/PolicyDeclaration"},
        ]
    }
    return schema


def reference_markdown(registry: Registry) -> str:
    """The README's config reference: every key, its type, default and meaning."""
    lines = ["| key | type | default | meaning |", "|---|---|---|---|"]
    _rows(GatewayConfig, "", lines)
    out = ["### Gateway", "", *lines]
    for name in registry:
        rows = ["| key | type | default | meaning |", "|---|---|---|---|"]
        _rows(registry[name].Options, "", rows)
        doc = (registry[name].__doc__ or "").strip().splitlines()
        out += ["", f"### Policy `{name}`", ""]
        if doc:
            out += [doc[0], ""]
        out += rows
    return "\n".join(out) + "\n"


def _rows(model: type[BaseModel], prefix: str, lines: list[str]) -> None:
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        nested = _nested_model(field.annotation)
        unit = _unit(field)
        if unit is not None:
            meaning = (field.description or "").replace("|", "\\|")
            lines.append(f"| `{key}` | {unit} | {_default(field, unit)} | {meaning} |")
            continue
        meaning = (field.description or "").replace("|", "\\|")
        lines.append(
            f"| `{key}` | {_type_name(field.annotation)} | {_default(field)} | {meaning} |"
        )
        if nested is not None:
            suffix = {list: "[].", dict: ".<name>."}.get(_container(field.annotation), ".")
            _rows(nested, key + suffix, lines)


def _unit(field: FieldInfo) -> str | None:
    """`duration`/`size`/`rate` for fields whose Annotated metadata pydantic moved aside."""
    parsers: dict[object, str] = {
        parse_duration: "duration",
        parse_size: "size",
        parse_rate: "rate",
    }
    for item in field.metadata:
        unit = parsers.get(getattr(item, "func", None))
        if unit is not None:
            return unit
    return None


def _human(value: Any, unit: str | None) -> str:
    if unit == "duration" and isinstance(value, int | float):
        if value and value < 1:
            return f"{value * 1000:g}ms"
        for size, suffix in ((86400, "d"), (3600, "h"), (60, "m")):
            if value >= size and value % size == 0:
                return f"{value / size:g}{suffix}"
        return f"{value:g}s"
    if unit == "size" and isinstance(value, int):
        for size, suffix in ((1024**3, "GiB"), (1024**2, "MiB"), (1024, "KiB")):
            if value >= size and value % size == 0:
                return f"{value // size}{suffix}"
    return json.dumps(value, default=str)


def _default(field: FieldInfo, unit: str | None = None) -> str:
    if field.is_required():
        return "required"
    if field.default_factory is not None:
        value = field.default_factory()  # type: ignore[call-arg]
        if isinstance(value, BaseModel):
            return "see below"
        return f"`{json.dumps(value)}`"
    value = field.default
    if value is PydanticUndefined:
        return ""
    return f"`{_human(value, unit)}`"


_UNITS = {"duration": Duration, "size": Size, "rate": Rate}


def _unwrap(annotation: Any) -> list[Any]:
    for unit, alias in _UNITS.items():
        if annotation == alias:
            return [unit]
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _unwrap(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return [a for arg in typing.get_args(annotation) for a in _unwrap(arg)]
    return [annotation]


def _container(annotation: Any) -> Any:
    """`list` or `dict` when the field holds several values, else None."""
    for option in _unwrap(annotation):
        if typing.get_origin(option) in (list, dict):
            return typing.get_origin(option)
    return None


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    """The model of the field's value, or of each item of its list or mapping."""
    for option in _unwrap(annotation):
        if typing.get_origin(option) in (list, dict):
            args = typing.get_args(option)
            option = _unwrap(args[-1])[0] if args else option
        if isinstance(option, type) and issubclass(option, BaseModel):
            return option
    return None


def _type_name(annotation: Any) -> str:
    names = []
    for option in _unwrap(annotation):
        if option is type(None):
            continue
        if isinstance(option, str):
            names.append(option)
            continue
        origin = typing.get_origin(option)
        if origin is list:
            inner = typing.get_args(option)
            names.append(f"list of {_type_name(inner[0]) if inner else 'any'}")
        elif origin is dict:
            names.append("mapping")
        elif origin is typing.Literal:
            names.append(" or ".join(f"`{a}`" for a in typing.get_args(option)))
        elif isinstance(option, type) and issubclass(option, BaseModel):
            names.append("mapping")
        else:
            name = getattr(option, "__name__", str(option))
            names.append(_FRIENDLY.get(name, name.lower()))
    return " or ".join(dict.fromkeys(names)) or "any"


_FRIENDLY = {
    "str": "string",
    "int": "integer",
    "float": "number",
    "bool": "boolean",
    "SecretStr": "string (secret)",
    "IPv4Network": "address or network",
    "IPv6Network": "address or network",
    "RequestKey": "key",
}


START, END = "<!-- config-reference:start -->\n", "<!-- config-reference:end -->"


def update_readme(path: str, registry: Registry | None = None) -> bool:
    """Rewrite the config reference between the README's markers; True when it changed."""
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    start = text.index(START) + len(START)
    end = text.index(END)
    fresh = text[:start] + reference_markdown(registry or Registry.discover()) + text[end:]
    if fresh == text:
        return False
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(fresh)
    return True
