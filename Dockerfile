# tresor-router image: multi-stage on Debian bookworm, slim runtime, non-root.
#
#   docker build -t tresor-router .        (or: podman build --format docker ...)
#   docker run --rm -v $PWD/config.yaml:/etc/tresor/config.yaml:ro \
#     -v tresor-state:/var/lib/tresor/state -p 8080:8080 tresor-router
#
# Config: /etc/tresor/config.yaml (TRESOR_CONFIG), mounted read-only; it must listen on
# 0.0.0.0:8080 (or the host's 127.0.0.1 with host networking). State (the SQLite store,
# the receipt signing key when it is generated): the volume /var/lib/tresor/state; the
# working directory is /var/lib/tresor, so the default relative paths state/... land in
# it. Uploads spool to /tmp, at most server.spool_max_bytes (default 1 GiB) at once: with a
# read-only root, mount a tmpfs/emptyDir there larger than that. Operator guide:
# deploy/README.md.

# ---------------------------------------------------------------------------- build
FROM debian:bookworm AS build
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      g++ cmake ninja-build pkg-config ccache \
      libboost1.81-dev libboost-json1.81-dev libsimdjson-dev libspdlog-dev libyaml-cpp-dev \
      libsqlite3-dev libhiredis-dev libssl-dev prometheus-cpp-dev libjemalloc-dev zlib1g-dev \
    && rm -rf /var/lib/apt/lists/*
ENV CCACHE_DIR=/ccache
WORKDIR /src
# Only what the build reads (BUILD_TESTING=OFF: of tests/ only the fake upstream is built).
COPY CMakeLists.txt ./
COPY common common
COPY config config
COPY router router
COPY providers providers
COPY storage storage
COPY receipts receipts
COPY accounts accounts
COPY telemetry telemetry
COPY server server
COPY tests/fake_upstream tests/fake_upstream
# The ccache cache mount survives between builds on the same builder (BuildKit, buildah),
# so a rebuild after a source change recompiles only what changed.
RUN --mount=type=cache,target=/ccache \
    cmake -S . -B /build -G Ninja -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF \
          -DCMAKE_CXX_COMPILER_LAUNCHER=ccache \
    && ninja -C /build tresor-router tresor-fake-upstream \
    && strip --strip-unneeded /build/tresor-router /build/tresor-fake-upstream \
    && /build/tresor-router hash-key "tr-$(printf 'de%.0s' $(seq 48))" >/dev/null

# -------------------------------------------------------------------------- runtime
FROM debian:bookworm-slim
LABEL org.opencontainers.image.title="tresor-router" \
      org.opencontainers.image.description="OpenAI-compatible API gateway" \
      org.opencontainers.image.source="deploy/README.md"
# Runtime libraries only (ldd of the binaries); curl is for the HEALTHCHECK.
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      ca-certificates curl \
      libboost-json1.81.0 libsimdjson14 libspdlog1.10 libfmt9 libyaml-cpp0.7 libssl3 \
      libsqlite3-0 libhiredis0.14 libprometheus-cpp-core1.0 libjemalloc2 \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/* /var/log/apt /var/log/dpkg.log \
    && groupadd --system --gid 10001 tresor \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/tresor --no-create-home \
         --shell /usr/sbin/nologin tresor \
    && install -d -o 10001 -g 10001 -m 0750 /var/lib/tresor /var/lib/tresor/state \
    && install -d -m 0755 /etc/tresor
COPY --from=build /build/tresor-router /build/tresor-fake-upstream /usr/local/bin/
COPY deploy/examples /etc/tresor/examples
# Fail the build if a shared library is missing from the runtime stage.
RUN ! ldd /usr/local/bin/tresor-router /usr/local/bin/tresor-fake-upstream | grep 'not found'
USER 10001:10001
WORKDIR /var/lib/tresor
ENV TRESOR_CONFIG=/etc/tresor/config.yaml \
    TRESOR_HEALTHCHECK_URL=http://127.0.0.1:8080/healthz
VOLUME ["/var/lib/tresor/state"]
EXPOSE 8080
STOPSIGNAL SIGTERM
# Override TRESOR_HEALTHCHECK_URL when the config listens elsewhere (another port, TLS).
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD curl -fsSk --max-time 2 "$TRESOR_HEALTHCHECK_URL" >/dev/null || exit 1
ENTRYPOINT ["/usr/local/bin/tresor-router"]
