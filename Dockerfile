# syntax=docker/dockerfile:1
# One image for every jobgate process: `jobgate server` by default, `jobgate worker` for workers.
ARG PYTHON_IMAGE=python:3.11-slim

# Builds both packages as wheels into a venv; the runtime stage copies only the venv.
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/jobgate
WORKDIR /src
COPY clients/python clients/python
COPY pyproject.toml README.md ./
COPY core core
COPY server server
COPY workers workers
COPY launcher launcher
# Not editable and without the dev extra: the venv must stand alone once /src is gone. Both
# paths in one command so pip takes jobgate-client from here rather than from an index.
RUN /opt/jobgate/bin/pip install ./clients/python .

FROM ${PYTHON_IMAGE} AS runtime
ENV PATH=/opt/jobgate/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    JOBGATE_LISTEN=0.0.0.0:50051 \
    JOBGATE_DATA_DIR=/var/lib/jobgate
RUN groupadd --system --gid 10001 jobgate \
    && useradd --system --uid 10001 --gid jobgate --home-dir /var/lib/jobgate \
        --shell /usr/sbin/nologin jobgate \
    && install -d -o jobgate -g jobgate /var/lib/jobgate
COPY --from=builder /opt/jobgate /opt/jobgate
USER jobgate
WORKDIR /var/lib/jobgate
EXPOSE 50051
# The server's grpc.health.v1 status; worker containers override it (`jobgate health --broker`).
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["jobgate", "health", "--timeout", "3"]
# SIGTERM (docker stop) drains: calls in flight and running jobs get JOBGATE_SHUTDOWN_GRACE_SECONDS.
STOPSIGNAL SIGTERM
CMD ["jobgate", "server"]
