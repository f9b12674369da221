# Production image of the Onderwijs & Regio gateway.
# Build: docker build -t onderwijs-gateway .   (not built on the development machines: no engine)
FROM python:3.11-slim AS build
WORKDIR /src
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
COPY pyproject.toml constraints.txt README.md ./
COPY gateway ./gateway
COPY policies ./policies
COPY audit ./audit
COPY retention ./retention
COPY console ./console
COPY demo_upstream ./demo_upstream
COPY devidp ./devidp
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install -c constraints.txt .

FROM python:3.11-slim
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
RUN groupadd --system --gid 10001 gateway \
 && useradd --system --uid 10001 --gid gateway --home-dir /nonexistent --shell /usr/sbin/nologin gateway
COPY --from=build /opt/venv /opt/venv
# The audit spool lives here: mount a volume so events survive a container restart.
RUN mkdir -p /var/lib/gateway && chown gateway:gateway /var/lib/gateway
WORKDIR /var/lib/gateway
USER gateway:gateway
# HTTPS, and the plain-HTTP listener that only redirects. Metrics stay on 127.0.0.1:9090.
EXPOSE 8443 8080
# Settings: mount a TOML file at /etc/gateway/gateway.toml (see config/gateway.example.toml)
# and the TLS certificate and key it names; or set GATEWAY_* variables.
ENV GATEWAY_CONFIG=/etc/gateway/gateway.toml
# The local operations listener answers /health without passing the host allow-list.
HEALTHCHECK --interval=30s --timeout=3s --start-period=10s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:9090/health', timeout=2).status != 200)"]
STOPSIGNAL SIGTERM
CMD ["python", "-m", "gateway", "serve"]
