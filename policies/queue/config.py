"""The `queue` policy's options: every field documents its default."""

from __future__ import annotations

from pydantic import Field, model_validator
from pydantic_core import PydanticCustomError

from gateway.api import Duration, Options, Size


class RetryOptions(Options):
    """Exponential backoff with full jitter between delivery attempts."""

    first: Duration = Field(
        1.0, gt=0, description="Upper bound of the wait before the second attempt. Default: 1s."
    )
    max: Duration = Field(
        300.0,
        gt=0,
        description="Cap of the wait between attempts (the bound doubles per attempt up to "
        "it). Default: 5m.",
    )


class QueueOptions(Options):
    """Options of the `queue` policy (see docs/policies/queue.md)."""

    max_body: Size = Field(
        256 * 1024,
        gt=0,
        description="Largest request body accepted into the queue; larger ones get 413. "
        "Default: 256KiB.",
    )
    max_attempts: int = Field(
        10,
        ge=1,
        le=1000,
        description="Deliveries tried before an entry is dead-lettered. Default: 10.",
    )
    retry: RetryOptions = Field(
        default_factory=RetryOptions,
        description="Backoff between attempts: `{first, max}`. Default: `{first: 1s, max: 5m}`.",
    )
    retention: Duration = Field(
        7 * 86400.0,
        gt=0,
        description="Entries (and dead letters) older than this are trimmed, delivered or "
        "not. Default: 7d.",
    )
    visibility_timeout: Duration = Field(
        30.0,
        gt=0,
        description="An entry held this long by one gateway (dead or stuck) is taken over by "
        "another; a delivery is abandoned (and retried) just before it. Default: 30s.",
    )
    concurrency: int = Field(
        16,
        ge=1,
        le=1024,
        description="Deliveries in flight at once per route and gateway process. Default: 16.",
    )
    poll: Duration = Field(
        0.5,
        gt=0,
        le=60,
        description="How often an idle process asks the store for work that other processes "
        "accepted or that became due. Default: 500ms.",
    )

    @model_validator(mode="after")
    def _coherent(self) -> QueueOptions:
        if self.retry.first > self.retry.max:
            raise PydanticCustomError("queue", "retry.first must not exceed retry.max")
        if self.visibility_timeout < 0.2:
            raise PydanticCustomError("queue", "visibility_timeout must be at least 200ms")
        return self
