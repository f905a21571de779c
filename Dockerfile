# Gateway image: `docker build -t keygate .`
#   docker run -v $PWD/gateway.toml:/etc/gateway/gateway.toml:ro -v gateway-data:/var/lib/gateway \
#     -e GATEWAY_ADMIN_TOKEN=... -p 8080:8080 -p 127.0.0.1:8081:8081 keygate
# The mounted config should set server.host = "0.0.0.0", admin.host = "0.0.0.0" (publish the
# admin port on a private interface only) and store.url = "sqlite:////var/lib/gateway/gateway.db".

FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY gateway ./gateway
RUN python -m venv /opt/gateway \
    && /opt/gateway/bin/pip install --no-cache-dir --disable-pip-version-check .

FROM python:3.11-slim
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/gateway --create-home gateway \
    && mkdir -p /etc/gateway
COPY --from=build /opt/gateway /opt/gateway
ENV PATH="/opt/gateway/bin:$PATH" \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
USER 10001:10001
WORKDIR /var/lib/gateway
VOLUME ["/var/lib/gateway"]
EXPOSE 8080 8081
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8081/healthz', timeout=2).status != 200)"]
ENTRYPOINT ["gateway", "serve"]
CMD ["--config", "/etc/gateway/gateway.toml"]
