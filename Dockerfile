# The gateway as a container: a wheel built in one stage, installed into a virtualenv that the
# slim final stage copies; non-root; health-checked on the admin listener; SIGTERM drains.
#
#   docker build -t gateway .
#   docker run -p 8080:8080 -v $PWD/gateway.yaml:/etc/gateway/gateway.yaml:ro gateway
#
# BASE is any Debian-like image with python3 (3.11 or newer) and its venv module: where no
# image registry is reachable, one made locally (see tests/image/ and README "Deploying").
ARG BASE=python:3.12-slim

FROM ${BASE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY gateway ./gateway
COPY policies ./policies
# Package-index settings (a mirror, a CA bundle) may be mounted at build time, e.g. a
# pip.conf in /etc/xdg/pip; nothing of them is copied into the image.
RUN python3 -m venv /opt/gateway \
 && /opt/gateway/bin/pip wheel --no-deps --wheel-dir /wheels . \
 && /opt/gateway/bin/pip install /wheels/gateway-*.whl \
 && /opt/gateway/bin/gateway --help >/dev/null

FROM ${BASE}
ENV PATH=/opt/gateway/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    GATEWAY_CONFIG=/etc/gateway/gateway.yaml \
    LISTEN=0.0.0.0:8080 \
    ADMIN_LISTEN=127.0.0.1:9901 \
    REDIS_URL=memory://
RUN (getent group gateway || groupadd --system --gid 10001 gateway) >/dev/null \
 && useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home \
      --shell /usr/sbin/nologin gateway
COPY --from=build /opt/gateway /opt/gateway
# The example config runs as is on the embedded store; mount your own over it (or point
# GATEWAY_CONFIG elsewhere). The admin listener stays on loopback inside the container
# unless ADMIN_LISTEN (and then ADMIN_TOKEN) say otherwise.
COPY config.example.yaml /etc/gateway/gateway.yaml
USER 10001:10001
EXPOSE 8080 9901
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://' + os.environ.get('ADMIN_LISTEN', '127.0.0.1:9901').replace('0.0.0.0', '127.0.0.1') + '/-/health', timeout=2)"]
ENTRYPOINT ["gateway", "run"]
