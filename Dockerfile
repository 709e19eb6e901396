# The gateway as a container: slim Python, non-root, health-checked on the admin listener.
#   docker build -t gateway .
#   docker run -p 8080:8080 -e UPSTREAM=http://api:9000 -e REDIS_URL=redis://redis:6379/0 \
#     -e WORKERS=auto gateway
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
RUN useradd --create-home --uid 10001 gateway
WORKDIR /app

COPY pyproject.toml README.md ./
COPY gateway ./gateway
COPY policies ./policies
RUN pip install .

COPY config.example.yaml /etc/gateway/gateway.yaml
# The public listener faces the world; the admin listener stays on loopback inside the
# container unless ADMIN_LISTEN (and then ADMIN_TOKEN) say otherwise.
ENV GATEWAY_CONFIG=/etc/gateway/gateway.yaml \
    LISTEN=0.0.0.0:8080 \
    ADMIN_LISTEN=127.0.0.1:9901 \
    REDIS_URL=memory://

USER gateway
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD python -c "import os, urllib.request; urllib.request.urlopen('http://' + os.environ['ADMIN_LISTEN'].replace('0.0.0.0', '127.0.0.1') + '/-/health', timeout=2)"
CMD ["gateway", "run"]
