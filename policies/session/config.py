"""The `session` policy's options: every field documents its default."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, model_validator
from pydantic_core import PydanticCustomError

from gateway.api import HOP_BY_HOP, Duration, Options

# RFC 9110 token: cookie and header names.
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
# It goes into a quoted-string of WWW-Authenticate.
_REALM = re.compile(r'^[^"\\\x00-\x1f\x7f]{1,64}$')
# Headers the gateway or the credentials themselves own: forwarding a session field into one
# of them would break framing, routing or the credential stripping.
_RESERVED = HOP_BY_HOP | {"host", "content-length", "cookie", "authorization", "x-request-id"}


def _cookie_name(value: Any) -> Any:
    if isinstance(value, str) and not _TOKEN.fullmatch(value):
        raise PydanticCustomError("cookie", f"invalid cookie name {value!r}")
    return value


def _header_name(value: Any) -> Any:
    if isinstance(value, str):
        if not _TOKEN.fullmatch(value):
            raise PydanticCustomError("header", f"invalid header name {value!r}")
        lower = value.lower()
        if lower in _RESERVED or lower.startswith("proxy-"):
            raise PydanticCustomError("header", f"{value!r} cannot carry a session field")
    return value


def _scalar(value: Any) -> Any:
    # Session hash values are strings; YAML turns `level: 3` into an int, which means "3".
    # Booleans are refused: an app may have written "1", "true" or "True".
    if isinstance(value, bool):
        raise PydanticCustomError(
            "require", f"ambiguous value {value!r}: quote the exact string the app writes"
        )
    if isinstance(value, int):
        return str(value)
    return value


def _allowed(value: Any) -> Any:
    if isinstance(value, list):
        if not value:
            raise PydanticCustomError("require", "an empty list would refuse every session")
        return [_scalar(item) for item in value]
    return [_scalar(value)]


def _realm(value: Any) -> Any:
    if isinstance(value, str) and not _REALM.fullmatch(value):
        raise PydanticCustomError(
            "realm", f"invalid realm {value!r} (1-64 characters, no quotes or backslashes)"
        )
    return value


CookieName = Annotated[str, BeforeValidator(_cookie_name)]
HeaderName = Annotated[str, BeforeValidator(_header_name)]
Realm = Annotated[str, BeforeValidator(_realm)]
FieldName = Annotated[str, Field(min_length=1, max_length=256)]


class SessionOptions(Options):
    """Options of the `session` policy (see docs/policies/session.md)."""

    cookie: CookieName | None = Field(
        None,
        description="Read the session id from this cookie. Default: none "
        "(at least one of `cookie` and `bearer` is required).",
    )
    bearer: bool = Field(
        False,
        description="Read the session id from `Authorization: Bearer <id>` (checked before the "
        "cookie). Default: false.",
    )
    key_prefix: str = Field(
        "session:",
        min_length=1,
        max_length=128,
        description="The session is the Redis hash `<key_prefix><id>`, as the app writes it. "
        "Default: `session:`.",
    )
    forward: dict[FieldName, HeaderName] = Field(
        default_factory=dict,
        description="Session fields sent upstream as request headers (`{user_id: X-User-Id}`). "
        "These headers are removed from every client request first. Default: none.",
    )
    require: dict[FieldName, Annotated[list[str], BeforeValidator(_allowed)]] = Field(
        default_factory=dict,
        description="Fields the session must have, with the exact value or a list of accepted "
        "values (`{role: [admin, ops]}`); a mismatch is 403. Default: none.",
    )
    fields: list[FieldName] | None = Field(
        None,
        description="Fields put into `request.context['session']` for later policies, besides "
        "those of `forward` and `require`. Default: the whole hash; a list reads only "
        "those fields (less traffic for large sessions).",
    )
    optional: bool = Field(
        False,
        description="Let requests without a valid session pass, anonymously (no identity "
        "headers); a request with a valid session still gets them. Default: false.",
    )
    sliding_ttl: Duration | None = Field(
        None,
        gt=0,
        description="On use, push the session's expiry back to this much from now. "
        "Default: none (the app's expiry stands).",
    )
    refresh_every: Duration | None = Field(
        None,
        gt=0,
        description="Extend the expiry at most once per this interval per session (bounded "
        "writes). Default: a tenth of `sliding_ttl`.",
    )
    forward_credentials: bool = Field(
        False,
        description="Also send the session cookie / bearer token upstream. Default: false "
        "(removed; other cookies stay).",
    )
    realm: Realm = Field(
        "gateway",
        description='The realm named in `WWW-Authenticate` challenges. Default: "gateway".',
    )

    @model_validator(mode="after")
    def _coherent(self) -> SessionOptions:
        if self.cookie is None and not self.bearer:
            raise PydanticCustomError(
                "session", "set `cookie: NAME` and/or `bearer: true`: the session id comes from one"
            )
        if self.refresh_every is not None:
            if self.sliding_ttl is None:
                raise PydanticCustomError("session", "refresh_every needs sliding_ttl")
            if self.refresh_every >= self.sliding_ttl:
                raise PydanticCustomError(
                    "session", "refresh_every must be shorter than sliding_ttl"
                )
        headers = [name.lower() for name in self.forward.values()]
        duplicates = sorted({name for name in headers if headers.count(name) > 1})
        if duplicates:
            raise PydanticCustomError(
                "session", f"forward names header {duplicates[0]!r} for several fields"
            )
        return self

    @property
    def refresh_interval(self) -> float:
        """`refresh_every`, or its default (a tenth of `sliding_ttl`); 0 without sliding."""
        if self.sliding_ttl is None:
            return 0.0
        return self.refresh_every if self.refresh_every is not None else self.sliding_ttl / 10
