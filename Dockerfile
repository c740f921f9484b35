# syntax=docker/dockerfile:1
#
# The hub's container image: `sandbox-host run` on the volume /config, as a non-root user,
# under tini. The built-in sandbox runtime is the same binary, so the image holds only it.
#
#   docker build -t sandbox-host .
#   docker run -d --name hub -p 8123:8123 -v hub-config:/config --stop-timeout 30 sandbox-host
#   docker exec hub sandbox-host status
#
# Stopping: `docker stop` sends SIGTERM (STOPSIGNAL below) and SIGKILLs after its timeout,
# 10 s unless told otherwise. The hub stops every group in parallel, each within its stop
# grace (`stop_grace`, 10 s by default), and gives up after the longest grace plus 10 s, so
# the timeout must exceed that: `docker stop -t 30`, `docker run --stop-timeout 30`, or
# compose's `stop_grace_period: 30s` (more when a group's stop_grace is raised).

# --- builder: the release binary. Its Debian release matches the runtime's (glibc). ---
FROM rust:1.88-bookworm AS builder
WORKDIR /src
# A workspace build needs every member's manifest and sources, so the context is copied
# whole; .dockerignore keeps target/, .git/ and docs out (a doc change rebuilds nothing).
COPY . .
# The registry cache survives between builds; the binary stays in the layer for the next
# stage to copy.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    cargo build --release -p sandbox-host-cli --locked

# --- runtime ---
FROM debian:bookworm-slim AS runtime
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini ca-certificates \
    && rm -rf /var/lib/apt/lists/*
# A fixed uid/gid, so a bind-mounted /config can be chowned to it on the host
# (`chown -R 10001:10001 DIR`).
RUN groupadd --system --gid 10001 hub \
    && useradd --system --uid 10001 --gid hub --home-dir /config --no-create-home \
        --shell /usr/sbin/nologin hub \
    && mkdir -p /config \
    && chown hub:hub /config \
    && chmod 0700 /config
COPY --from=builder /src/target/release/sandbox-host /usr/local/bin/sandbox-host
# The container's configuration file: the defaults, except that the HTTP API listens on
# 0.0.0.0:8123. A new named volume starts with it; a bind-mounted directory without a
# sandbox-host.toml gets the program's default file, which listens on 127.0.0.1 only (see
# docs/OPERATING.md, "Running in a container").
COPY --chown=hub:hub --chmod=0600 packaging/container/sandbox-host.toml /config/sandbox-host.toml

ENV SANDBOX_HOST_CONFIG=/config
VOLUME /config
EXPOSE 8123
USER hub
STOPSIGNAL SIGTERM
# Unhealthy when the hub does not answer on its control socket (status exits 3) or a group
# has failed (exit 1): a failed group's integrations stay down until
# `sandbox-host restart GROUP`, which is worth an alert. Docker counts any non-zero exit as
# a failed check.
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 \
    CMD ["/usr/local/bin/sandbox-host", "status", "--config", "/config"]
# tini is PID 1: it forwards SIGTERM to the hub and reaps any orphaned process.
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/sandbox-host"]
CMD ["run", "--config", "/config"]
