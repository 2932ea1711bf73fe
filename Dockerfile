# syntax=docker/dockerfile:1
# Build stage: turn the project and its dependencies into wheels.
FROM python:3.11.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY webhook ./webhook
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

# Final stage: the wheels installed into a clean slim image (no compilers),
# run as a numeric non-root user so runAsNonRoot can verify it.
FROM python:3.11.11-slim-bookworm
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index /wheels/*.whl && rm -rf /wheels
ENV PYTHONUNBUFFERED=1 \
    GSW_CERT_DIR=/etc/gpu-shard-webhook/certs
USER 10001:10001
EXPOSE 8443
# Certificates come from the Secret mounted at GSW_CERT_DIR (tls.crt, tls.key).
ENTRYPOINT ["gpu-shard-webhook", "serve"]
