# syntax=docker/dockerfile:1
#
# One image, five services:  civicflow run intake | router | workorder_bridge | notifier | query
# plus the one-shot         civicflow migrate
# Written without a Docker engine to build it on; see deploy/README.md.
#
# No secrets are baked in: the database URL, the PII master key and the webhook secret come from the
# environment at run time (deploy/.env for Compose, a Secret for Kubernetes).
#
# For reproducible builds pin the base image by digest, e.g.
#   docker build --build-arg PYTHON_IMAGE=python:3.11-slim@sha256:<digest> .
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# constraints.txt pins every runtime dependency; every one ships a manylinux wheel for CPython 3.11
# on x86_64, so no compiler is needed (other architectures are unchecked).
COPY pyproject.toml constraints.txt ./
COPY civicflow ./civicflow
COPY services ./services
COPY samples ./samples
RUN pip install -c constraints.txt .

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="civicflow" \
      org.opencontainers.image.description="Open 311 case-routing platform (five services in one image)"
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
# A fixed numeric uid/gid so Kubernetes can check runAsNonRoot. /var/lib/civicflow is the only
# directory the user can write (the sample SMTP sink keeps mail there); /app, the working directory,
# is not writable on purpose: with CIVICFLOW_PII_MASTER_KEY unset a service would otherwise generate
# a key of its own under ./.civicflow, and each container would then encrypt with a different key.
RUN groupadd --system --gid 10001 civicflow \
 && useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home \
            --shell /usr/sbin/nologin civicflow \
 && mkdir -p /var/lib/civicflow/mail /app \
 && chown -R 10001:10001 /var/lib/civicflow
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
USER 10001:10001
# gRPC: intake 50051, query 50052, router 50053, workorder_bridge 50054, notifier 50055;
# HTTP: workorder_bridge webhooks 8081.
EXPOSE 50051 50052 50053 50054 50055 8081
ENTRYPOINT ["civicflow"]
CMD ["--help"]
