# syntax=docker/dockerfile:1
# toolvault server image: build a wheel, install it with the server extra, run as non-root.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY proto ./proto
COPY client ./client
COPY server ./server
COPY sandbox ./sandbox
RUN pip wheel --no-cache-dir --wheel-dir /wheels '.[server]'

FROM ${PYTHON_IMAGE}
RUN useradd --system --uid 10001 --home-dir /var/lib/toolvault --create-home toolvault
COPY --from=build /wheels /wheels
# The versions are pinned by the wheels built above; nothing comes from an index.
# hadolint ignore=DL3013
RUN pip install --no-cache-dir --no-index --find-links /wheels 'toolvault[server]' \
    && rm -rf /wheels
USER 10001
# Beyond loopback the server also needs TLS (TOOLVAULT_TLS_CERT and TOOLVAULT_TLS_KEY; set
# TOOLVAULT_CA_CERT for the health check), or TOOLVAULT_INSECURE=true behind a proxy or mesh
# that does TLS: it refuses to start otherwise.
ENV TOOLVAULT_LISTEN=0.0.0.0:50051 \
    TOOLVAULT_AUTH=required \
    TOOLVAULT_DATA_DIR=/var/lib/toolvault \
    PYTHONUNBUFFERED=1
VOLUME ["/var/lib/toolvault"]
EXPOSE 50051
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
    CMD ["toolvault", "--server", "127.0.0.1:50051", "health", "--timeout", "4"]
ENTRYPOINT ["toolvault"]
CMD ["serve"]
