# syntax=docker/dockerfile:1
# The webhook on Debian 12 slim and Debian's own Python 3.11: two stages, the second without
# pip, compilers or caches. Every dependency ships manylinux wheels, so nothing is compiled.
#
#   podman build -t gpu-shard-webhook .        (or docker build)
#
# The test suite (tests/test_image.py) builds debian:bookworm-slim itself from Debian's packages
# with mmdebstrap, so the build never pulls from a registry.
ARG BASE=debian:bookworm-slim

FROM ${BASE} AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
 && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/gpu-shard-webhook
# For a build behind a TLS-intercepting proxy or a private index: pip reads these (unset: PyPI).
ARG PIP_CERT
ARG PIP_INDEX_URL
COPY pyproject.toml README.md /src/
COPY webhook /src/webhook
# kubernetes >= 35 also ships an asyncio client (kubernetes/aio, with aiohttp and its own
# dependencies: about 80 MB) that the webhook never imports; dropping it halves the image. The
# container test (tests/test_image.py) runs the Node and DRA watches with what remains.
RUN /opt/gpu-shard-webhook/bin/pip install --no-cache-dir --no-compile /src \
 && /opt/gpu-shard-webhook/bin/pip uninstall -y -q aiohttp aiohttp-retry aiosignal aiohappyeyeballs frozenlist multidict yarl propcache \
 && rm -rf /opt/gpu-shard-webhook/lib/python3.11/site-packages/kubernetes/aio \
 && /opt/gpu-shard-webhook/bin/pip uninstall -y -q pip setuptools \
 && /opt/gpu-shard-webhook/bin/python -m compileall -q /opt/gpu-shard-webhook/lib

FROM ${BASE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/* /var/log/* /usr/share/doc/* /usr/share/man/*
COPY --from=build /opt/gpu-shard-webhook /opt/gpu-shard-webhook
ENV PATH=/opt/gpu-shard-webhook/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    GSW_CERT_DIR=/etc/gpu-shard-webhook/certs
# A numeric non-root user, so the Deployment's runAsNonRoot can verify it; the root
# filesystem can be read-only (gunicorn and the metrics write to /tmp, an emptyDir there).
USER 10001:10001
EXPOSE 8443
# Certificates come from the Secret mounted at GSW_CERT_DIR (tls.crt, tls.key).
ENTRYPOINT ["gpu-shard-webhook", "serve"]
