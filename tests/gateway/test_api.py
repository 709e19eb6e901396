"""The public surface for policies: `gateway.api`, as docs/policies/writing.md describes it."""

from __future__ import annotations

import re
from pathlib import Path
from types import ModuleType

import gateway.api
from gateway.api import Policy
from gateway.config.loader import parse_config
from gateway.registry import Registry
from gateway.store.memory import MemoryStore
from tests.support.harness import InProcessGateway
from tests.support.upstream import Upstream

DOC = Path(__file__).parents[2] / "docs" / "policies" / "writing.md"


def test_every_public_name_is_documented_and_exists() -> None:
    documented = set(re.findall(r"`(\w+)`", DOC.read_text().split("## The shape of one")[0]))
    missing = sorted(set(gateway.api.__all__) - documented)
    assert missing == []
    for name in gateway.api.__all__:
        assert getattr(gateway.api, name) is not None


async def test_the_documented_example_policy_runs_as_a_plugin(upstream: Upstream) -> None:
    source = re.search(r"```python\n(.*?)```", DOC.read_text(), re.S)
    assert source is not None
    module = ModuleType("example_policy")
    exec(compile(source.group(1), str(DOC), "exec"), module.__dict__)
    hello = module.Hello
    assert issubclass(hello, Policy)
    registry = Registry({**Registry.discover(), "hello": hello})
    text = f"""
upstreams:
  backend: {{targets: ["{upstream.url}"]}}
routes:
  - name: greeted
    match: {{path: /}}
    upstream: backend
    policies: [{{hello: {{name: X-Greeting}}}}]
"""
    loaded = parse_config(text, "plugin.yaml", env={}, registry=registry)
    gw = await InProcessGateway(loaded, MemoryStore(), registry).start()
    try:
        async with gw.request("GET", "/echo") as response:
            assert response.status == 200
            assert response.headers["X-Greeting"] == "world"
    finally:
        await gw.close()
