"""Durations, sizes and rates as written in config files, as pydantic types.

`Duration` is seconds (float), `Size` is bytes (int), `Rate` is a (count, per-seconds) pair.
Each accepts the SPEC's spelling (`250ms`, `10MiB`, `10/s`) or a plain number.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema
from pydantic_core import PydanticCustomError

_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")
_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(\d+(?:\.\d+)?)?\s*(ms|s|m|h|d)\s*$")


def _invalid(kind: str, value: Any, hint: str = "") -> PydanticCustomError:
    # Formatted here: pydantic's templates know `{name}` but not `{name!r}`.
    return PydanticCustomError(kind, f"invalid {kind} {value!r}{hint}")


def parse_duration(value: Any) -> float:
    """`250ms`, `30s`, `5m`, `1h`, `1d` or a number of seconds -> seconds."""
    if isinstance(value, bool):
        raise _invalid("duration", value)
    if isinstance(value, int | float):
        if value < 0:
            raise PydanticCustomError("duration", "duration must not be negative", {})
        seconds = float(value)
    else:
        match = _DURATION.match(value) if isinstance(value, str) else None
        if match is None:
            raise _invalid("duration", value)
        number, unit = match.groups()
        seconds = float(number) * _DURATION_UNITS[unit or "s"]
    # `.inf` (or a number too long for a float) would reach timers and deadlines as infinity.
    if not math.isfinite(seconds):
        raise _invalid("duration", value)
    return seconds


def parse_size(value: Any) -> int:
    """`512KiB`, `1MiB`, `10MiB` or a number of bytes -> bytes."""
    if isinstance(value, bool):
        raise _invalid("size", value)
    if isinstance(value, int):
        if value < 0:
            raise PydanticCustomError("size", "size must not be negative", {})
        return value
    match = _SIZE.match(value) if isinstance(value, str) else None
    if match is None or match.group(2).lower() not in _SIZE_UNITS:
        raise _invalid("size", value)
    number, unit = match.groups()
    size = float(number) * _SIZE_UNITS[unit.lower()]
    if not math.isfinite(size):
        raise _invalid("size", value)
    return int(size)


@dataclass(frozen=True, slots=True)
class RateValue:
    """`count` events per `period` seconds."""

    count: float
    period: float

    @property
    def per_second(self) -> float:
        return self.count / self.period

    def __str__(self) -> str:
        return f"{self.count:g}/{self.period:g}s"


def parse_rate(value: Any) -> RateValue:
    """`10/s`, `600/m`, `1000/h`, `5/10s` -> RateValue."""
    if isinstance(value, RateValue):
        return value
    match = _RATE.match(value) if isinstance(value, str) else None
    if match is None:
        raise _invalid("rate", value, " (expected e.g. 10/s, 600/m)")
    count, multiple, unit = match.groups()
    period = float(multiple or 1) * _DURATION_UNITS[unit]
    if not (math.isfinite(float(count)) and math.isfinite(period)):
        raise _invalid("rate", value, " (expected e.g. 10/s, 600/m)")
    if float(count) <= 0 or period <= 0:
        raise PydanticCustomError("rate", f"rate must be positive, got {value!r}")
    return RateValue(float(count), period)


Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    WithJsonSchema(
        {"anyOf": [{"type": "string", "pattern": _DURATION.pattern}, {"type": "number"}]}
    ),
]
Size = Annotated[
    int,
    BeforeValidator(parse_size),
    WithJsonSchema({"anyOf": [{"type": "string"}, {"type": "integer", "minimum": 0}]}),
]
Rate = Annotated[
    RateValue,
    BeforeValidator(parse_rate),
    PlainSerializer(str),
    WithJsonSchema({"type": "string", "pattern": _RATE.pattern}),
]
