"""Policy types by name, discovered through the `gateway.policies` entry-point group."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from importlib.metadata import entry_points

from gateway.policy import Policy

log = logging.getLogger("gateway.registry")

GROUP = "gateway.policies"


class Registry(Mapping[str, type[Policy]]):
    """Maps a YAML policy key (`rate_limit`) to its class.

    A plugin that fails to import is remembered with its error, which is reported only when
    a config actually uses it: one broken plugin must not stop configs that do not need it.
    """

    def __init__(
        self, policies: Mapping[str, type[Policy]], broken: Mapping[str, str] | None = None
    ) -> None:
        self._policies = dict(policies)
        self.broken = dict(broken or {})

    @classmethod
    def discover(cls) -> Registry:
        """Load every policy registered under the entry-point group."""
        policies: dict[str, type[Policy]] = {}
        broken: dict[str, str] = {}
        for ep in entry_points(group=GROUP):
            try:
                loaded = ep.load()
            except Exception as exc:  # a plugin's import error is reported, not raised
                broken[ep.name] = f"{type(exc).__name__}: {exc}"
                log.debug("policy %r (%s) failed to load: %s", ep.name, ep.value, exc)
                continue
            if not (isinstance(loaded, type) and issubclass(loaded, Policy)):
                broken[ep.name] = f"{ep.value} is not a gateway.policy.Policy subclass"
                continue
            policies[ep.name] = loaded
        return cls(policies, broken)

    def __getitem__(self, name: str) -> type[Policy]:
        return self._policies[name]

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._policies))

    def __len__(self) -> int:
        return len(self._policies)
