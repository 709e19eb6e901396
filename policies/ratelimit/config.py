"""Options of the `rate_limit` policy: one limit written inline, or several under `limits`.

Each limit is a flat mapping whose `algorithm` decides which other keys it takes; problems are
reported on the key they concern (`rate_limit.limits[1].burst: required key is missing`), not
on the mapping as a whole.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationError, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from gateway.api import Duration, Key, Options, Rate

Algorithm = Literal["sliding_window", "token_bucket"]

_TAKES: dict[str, tuple[str, ...]] = {
    "sliding_window": ("limit", "window", "approximate"),
    "token_bucket": ("rate", "burst", "cost"),
}
_REQUIRED: dict[str, tuple[str, ...]] = {
    "sliding_window": ("limit", "window"),
    "token_bucket": ("rate", "burst"),
}
_PARAMETERS = ("limit", "window", "approximate", "rate", "burst", "cost")
_MAX_COUNT = 1_000_000_000
# Times are integer microseconds inside the script; Lua numbers are doubles, exact to 2**53.
_MAX_MICROS = 2**50
_MIN_WINDOW = 0.001


class LimitFields(Options):
    """The parameters of one limit, shared by the inline form and each `limits` entry."""

    algorithm: Algorithm | None = Field(
        None,
        description="`sliding_window` (at most `limit` requests in any `window`) or "
        "`token_bucket` (`burst` tokens refilled at `rate`, `cost` per request). Required "
        "unless `limits` is given.",
    )
    limit: int | None = Field(
        None,
        ge=1,
        le=_MAX_COUNT,
        strict=True,  # YAML `true` is not a count
        description="sliding_window: requests admitted in any `window`. Required for it.",
    )
    window: Duration | None = Field(
        None,
        description="sliding_window: the window's length (`1m`, `10s`, `1h`). Required for it.",
    )
    approximate: bool = Field(
        False,
        description="sliding_window: count with two fixed-window counters (constant memory) "
        "instead of one entry per admitted request; the previous window's requests are "
        "assumed evenly spread, so up to 2 x `limit` may pass in the worst case "
        "(docs/policies/rate_limit.md). For limits of many thousands. Default: false.",
    )
    rate: Rate | None = Field(
        None,
        description="token_bucket: the refill rate (`10/s`, `600/m`, `1000/h`). Required for it.",
    )
    burst: int | None = Field(
        None,
        ge=1,
        le=_MAX_COUNT,
        strict=True,
        description="token_bucket: the bucket's size, the most requests admitted at once. "
        "Required for it.",
    )
    cost: int = Field(
        1,
        ge=1,
        le=_MAX_COUNT,
        strict=True,
        description="token_bucket: tokens each request takes; at most `burst`. Default: 1.",
    )

    def _problems(self) -> list[InitErrorDetails]:
        """What is wrong with this limit's keys for its algorithm (empty when nothing)."""
        algorithm = self.algorithm
        if algorithm is None:
            return []
        given = self.model_fields_set
        takes = _TAKES[algorithm]
        problems = [
            _problem(
                (name,),
                f"{name!r} is not an option of {algorithm} (it takes {', '.join(takes)})",
                getattr(self, name),
            )
            for name in _PARAMETERS
            if name in given and name not in takes
        ]
        problems += [
            InitErrorDetails(type="missing", loc=(name,), input=None)
            for name in _REQUIRED[algorithm]
            if getattr(self, name) is None
        ]
        if self.window is not None and not _MIN_WINDOW <= self.window <= _MAX_MICROS / 1e6:
            message = "window must be at least 1ms (and under 35 years)"
            problems.append(_problem(("window",), message, self.window))
        if self.rate is not None and self.rate.per_second > 1e6:
            problems.append(_problem(("rate",), "rate must be at most 1000000/s", str(self.rate)))
        if algorithm == "token_bucket" and self.burst is not None:
            if self.cost > self.burst:
                problems.append(
                    _problem(
                        ("cost",),
                        f"cost {self.cost} exceeds burst {self.burst}: no request could pass",
                        self.cost,
                    )
                )
            if self.rate is not None and self.burst / self.rate.per_second > _MAX_MICROS / 1e6:
                problems.append(
                    _problem(("burst",), "burst / rate must be under 35 years", self.burst)
                )
        return problems


class Limit(LimitFields):
    """One entry of `limits`."""

    algorithm: Algorithm = Field(
        description="`sliding_window` or `token_bucket`; the other keys depend on it."
    )
    name: str | None = Field(
        None,
        min_length=1,
        max_length=64,
        pattern=r"^[ !#-\[\]-~]+$",
        description="This limit's name in the `RateLimit-Policy` and `RateLimit` fields "
        "(printable ASCII, no quote or backslash). Default: `<policy>.<index>`, e.g. "
        "`per-key.0` for the first entry of the policy named `per-key`.",
    )

    @model_validator(mode="after")
    def _check(self) -> Limit:
        _raise(self._problems())
        return self


class RateLimitOptions(LimitFields):
    """`rate_limit`: limits requests per key, counted in the shared store."""

    limits: list[Limit] | None = Field(
        None,
        min_length=1,
        description="Several limits checked and consumed together in one store call (a "
        "request passes only if every limit admits it, and then counts against each); "
        "instead of `algorithm` and its parameters. Default: none.",
    )
    key: Key = Field(
        "client_ip",  # type: ignore[assignment]  # validated into a RequestKey (validate_default)
        description="What is counted: `client_ip`, `header.NAME`, `query.NAME`, "
        "`session.FIELD`, `route` (one bucket for the route), or a list of these. A part "
        "the request lacks counts as one shared anonymous value. Default: `client_ip`.",
    )
    on_store_error: Literal["allow", "deny", "local"] = Field(
        "allow",
        description="When the store cannot answer in time: `allow` lets the request through "
        "(without RateLimit fields), `deny` answers 503 `rate_limit_unavailable` with "
        "`Retry-After: 1`, `local` limits in this process to its share of each limit "
        "(`local_share`). Default: `allow`.",
    )
    local_share: int | None = Field(
        None,
        ge=1,
        le=_MAX_COUNT,
        strict=True,
        description="With `on_store_error: local`: the number of gateway processes N that "
        "share the limits; each enforces `limit / N` (a bucket `rate / N`, `burst / N`, at "
        "least 1) while the store is unreachable. Default: the number of processes the "
        "store last saw (a heartbeat; 1 before the first).",
    )

    @model_validator(mode="after")
    def _check(self) -> RateLimitOptions:
        given = self.model_fields_set
        if self.limits is not None:
            problems = [
                _problem(
                    (name,),
                    f"{name!r} belongs to a single limit: with `limits`, set it in each entry",
                    getattr(self, name),
                )
                for name in ("algorithm", *_PARAMETERS)
                if name in given
            ]
            seen: dict[str, int] = {}
            for index, name in enumerate(limit.name for limit in self.limits):
                if name is None:
                    continue
                if name in seen:
                    problems.append(
                        _problem(
                            ("limits", index, "name"),
                            f"duplicate limit name {name!r} (first at limits[{seen[name]}])",
                            name,
                        )
                    )
                seen.setdefault(name, index)
        elif self.algorithm is None:
            problems = [
                _problem(
                    ("algorithm",),
                    "required key is missing: set `algorithm` (sliding_window or token_bucket) "
                    "with its parameters, or `limits`",
                    None,
                )
            ]
        else:
            problems = self._problems()
        if self.local_share is not None and self.on_store_error != "local":
            message = "local_share applies only with `on_store_error: local`"
            problems.append(_problem(("local_share",), message, self.local_share))
        _raise(problems)
        return self

    def all_limits(self) -> tuple[LimitFields, ...]:
        """The limits in the order they are checked: `limits`, or this mapping's own one."""
        return tuple(self.limits) if self.limits is not None else (self,)


def _problem(loc: tuple[str | int, ...], message: str, value: object) -> InitErrorDetails:
    return InitErrorDetails(type=PydanticCustomError("rate_limit", message), loc=loc, input=value)


def _raise(problems: list[InitErrorDetails]) -> None:
    if problems:
        # Raised inside a validator, the locations nest under the enclosing key path.
        raise ValidationError.from_exception_data("rate_limit", problems)
