"""Building and running the container image with podman, on a machine that may pull no image.

The base image is made locally (mmdebstrap, then `podman import`) and cached between runs in
`~/.cache/gateway-image`; the runtime is told what this kind of machine lacks (no setrlimit
defaults, cgroupfs) through a CONTAINERS_CONF of its own; the build machine's pip settings
(its CA bundle, an index URL) are mounted into the build, never copied into the image.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

BASE = "localhost/gateway-base"
REDIS = "localhost/gateway-redis"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "gateway-image"
TOOLS = ("podman", "runc", "mmdebstrap")


def image_tag(root: Path) -> str:
    # One tag per checkout: worktrees testing at the same time do not run each other's image.
    return f"localhost/gateway:test-{hashlib.sha256(str(root).encode()).hexdigest()[:10]}"


def missing_tools() -> list[str]:
    return [tool for tool in TOOLS if shutil.which(tool) is None]


def environment(folder: Path) -> dict[str, str]:
    conf = folder / "containers.conf"
    # runc named here too, for the podman that podman-compose runs (no --runtime of ours there).
    conf.write_text(
        '[containers]\ndefault_ulimits = []\n[engine]\ncgroup_manager = "cgroupfs"\nruntime = "runc"\n'
    )
    return dict(os.environ, CONTAINERS_CONF=str(conf))


def run(command: list[str], *, env: dict[str, str] | None = None, timeout: float = 120) -> str:
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        output = (result.stderr or result.stdout)[-4000:]
        raise RuntimeError(f"{' '.join(command[:4])} ...: exit {result.returncode}\n{output}")
    return result.stdout


async def run_async(
    command: list[str], *, env: dict[str, str], timeout: float = 60
) -> tuple[int, str]:
    """`command`'s exit code and output, without blocking the event loop."""
    # Output goes to a file, not a pipe: conmon, left running by `run --detach`, would
    # inherit the pipe and keep it open.
    with tempfile.TemporaryFile() as out:
        process = await asyncio.create_subprocess_exec(*command, env=env, stdout=out, stderr=out)
        try:
            async with asyncio.timeout(timeout):
                code = await process.wait()
        except TimeoutError:
            process.kill()
            await process.wait()
            raise
        out.seek(0)
        return code, out.read().decode(errors="replace")


def podman(*args: str, env: dict[str, str], timeout: float = 120) -> str:
    return run(["podman", "--runtime", "runc", *args], env=env, timeout=timeout)


def why_containers_cannot_run(env: dict[str, str]) -> str | None:
    """Why this machine cannot build or run a container (the test is then skipped), or None."""
    missing = missing_tools()
    if missing:
        return f"missing {', '.join(missing)} (`make test` installs them with apt-get)"
    if os.geteuid() != 0:
        # Rootless podman and mmdebstrap's unshare mode both need user namespaces.
        probe = subprocess.run(
            ["unshare", "--user", "--map-root-user", "true"], capture_output=True, text=True
        )
        if probe.returncode != 0:
            return f"no user namespaces for rootless podman: {probe.stderr.strip()}"
    try:
        podman("info", env=env, timeout=60)
    except RuntimeError as error:
        return f"podman cannot start here: {error}"
    return None


def why_base_cannot_run(env: dict[str, str]) -> str | None:
    """Whether the runtime can start a container at all, tried on the base (no gateway yet)."""
    try:
        podman("run", "--rm", "--network", "host", BASE, "true", env=env, timeout=120)
    except RuntimeError as error:
        return f"the container runtime cannot start a container here: {error}"
    return None


def base_image(env: dict[str, str]) -> None:
    """The Debian base with python3, made once and cached as a tarball."""
    local_image(BASE, "base", ["python3", "python3-venv", "ca-certificates"], env)


def redis_image(env: dict[str, str]) -> None:
    """A Debian image with redis-server, for the compose test (no registry to pull redis from)."""
    local_image(REDIS, "redis", ["redis-server"], env)


def local_image(name: str, label: str, packages: list[str], env: dict[str, str]) -> None:
    """Image `name` made by mmdebstrap from Debian `packages`; the tarball is cached."""
    exists = subprocess.run(["podman", "image", "exists", name], env=env, capture_output=True)
    if exists.returncode == 0:
        return
    tarball = CACHE / f"{label}-bookworm.tar"
    if not tarball.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        partial = CACHE / f"{label}-bookworm.partial.tar"
        run(
            [
                "mmdebstrap",
                "--variant=minbase",
                f"--include={','.join(packages)}",
                "bookworm",
                str(partial),
            ],
            timeout=900,
        )
        partial.rename(tarball)
    podman("import", str(tarball), name, env=env, timeout=300)


def pip_settings(folder: Path) -> Path:
    """A pip.conf for the build with this machine's CA bundle and index, if it has them."""
    folder.mkdir(exist_ok=True)
    lines = ["[global]", "timeout = 180"]

    def setting(name: str) -> str:
        result = subprocess.run(
            ["python3", "-m", "pip", "config", "get", name], capture_output=True, text=True
        )
        return result.stdout.strip() if result.returncode == 0 else ""

    cert = os.environ.get("PIP_CERT") or setting("global.cert")
    if cert and Path(cert).is_file():
        shutil.copy(cert, folder / "ca.crt")
        lines.append("cert = /etc/xdg/pip/ca.crt")
    index = os.environ.get("PIP_INDEX_URL") or setting("global.index-url")
    if index.startswith(("http://", "https://")):
        lines.append(f"index-url = {index}")
    (folder / "pip.conf").write_text("\n".join(lines) + "\n")
    return folder


def build(root: Path, tag: str, env: dict[str, str]) -> None:
    """The image from the repository's own Dockerfile, on the local base."""
    with tempfile.TemporaryDirectory(prefix="gateway-pip-") as scratch:
        pip = pip_settings(Path(scratch) / "pip")
        podman(
            "build",
            "--format",
            "docker",  # keeps HEALTHCHECK (the OCI format has none)
            "--network",
            "host",
            "--volume",
            f"{pip}:/etc/xdg/pip:ro",
            "--build-arg",
            f"BASE={BASE}",
            "--tag",
            tag,
            str(root),
            env=env,
            timeout=900,
        )


_prepared: dict[Path, dict[str, str] | str] = {}


def prepare(root: Path, folder: Path) -> dict[str, str]:
    """The podman environment with the checkout's image built, once per test run however many
    tests use it; raise `Unavailable` (the test skips) where containers cannot run here."""
    if root not in _prepared:
        env = environment(folder)
        reason = why_containers_cannot_run(env)
        if reason is None:
            base_image(env)
            reason = why_base_cannot_run(env)
        if reason is None:
            build(root, image_tag(root), env)
        _prepared[root] = env if reason is None else reason
    prepared = _prepared[root]
    if isinstance(prepared, str):
        raise Unavailable(prepared)
    return prepared


class Unavailable(Exception):
    """Containers cannot be built or run on this machine; the message says why."""
