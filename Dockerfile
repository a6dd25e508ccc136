# Multi-stage build on Debian bookworm; the runtime image runs as a non-root user.
FROM debian:bookworm-slim AS build
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      g++ cmake ninja-build pkg-config libboost1.81-dev libboost-json1.81-dev libsimdjson-dev \
      libspdlog-dev libyaml-cpp-dev catch2 libsqlite3-dev libhiredis-dev libssl-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY CMakeLists.txt ./
COPY common common
COPY config config
COPY router router
COPY providers providers
COPY receipts receipts
COPY server server
COPY tests tests
RUN cmake -S . -B /build -G Ninja -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF \
    && ninja -C /build tresor-router tresor-fake-upstream

FROM debian:bookworm-slim
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      ca-certificates curl libboost-json1.81.0 libsimdjson14 libspdlog1.10 libyaml-cpp0.7 libssl3 \
      libsqlite3-0 libhiredis0.14 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/tresor --create-home tresor
COPY --from=build /build/tresor-router /build/tresor-fake-upstream /usr/local/bin/
COPY deploy/examples /etc/tresor/examples
USER tresor
WORKDIR /var/lib/tresor
ENV TRESOR_CONFIG=/etc/tresor/config.yaml
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s CMD curl -fsS http://127.0.0.1:8080/healthz || exit 1
ENTRYPOINT ["/usr/local/bin/tresor-router"]
