# One image for every role of compute-server: `compute-server <role>`.
#
#   docker build -t computeserver/compute-server:0.1.0 .
#
# The base images are build arguments: the public ones by default; tests/support/image.sh
# passes locally made ones (no registry reachable there). Any glibc-based runtime image with
# iptables works (the agent runs it for the servers' firewall); nothing is run in it at build time.
ARG BUILDER_IMAGE=rust:1-bookworm
# The runtime base needs glibc and, for the agent's firewall, iptables: Kubernetes' own base of
# kube-proxy has both (and picks the host's iptables backend).
ARG RUNTIME_IMAGE=registry.k8s.io/build-image/distroless-iptables:v0.8.7

FROM ${BUILDER_IMAGE} AS build
WORKDIR /src
ENV CARGO_PROFILE_RELEASE_STRIP=symbols
# The dependencies first, in a layer of their own, built against an empty crate: editing the
# sources then rebuilds only compute-server itself. (The classic builder of Docker 20.10 has no
# cache mounts; this layer is the cache.)
COPY Cargo.toml Cargo.lock ./
# Cargo.toml names the benchmarks: empty ones stand in, so that this layer depends on
# Cargo.toml and Cargo.lock only.
RUN mkdir -p src benches \
 && echo 'fn main() {}' >src/main.rs \
 && touch src/lib.rs \
 && for bench in $(sed -n 's/^name = "\(.*\)"$/\1/p' Cargo.toml | grep -vx compute-server); do \
      echo 'fn main() {}' >"benches/$bench.rs"; \
    done \
 && cargo build --release --locked --bin compute-server \
 && rm -rf src target/release/compute-server* target/release/deps/compute_server-* \
      target/release/deps/libcompute_server-* target/release/.fingerprint/compute-server-*
COPY src src
RUN cargo build --release --locked --bin compute-server \
 && install -D target/release/compute-server /out/usr/local/bin/compute-server \
 && install -D -m 0644 /etc/ssl/certs/ca-certificates.crt /out/etc/ssl/certs/ca-certificates.crt

FROM ${RUNTIME_IMAGE}
LABEL org.opencontainers.image.title=compute-server \
      org.opencontainers.image.description="Self-service compute servers: web, scheduler, node agent, bastion" \
      org.opencontainers.image.licenses=Apache-2.0
COPY --from=build /out/ /
# Non-root by default (the "nonroot" user of distroless images). The agent's DaemonSet adds the
# group that may use the host's Docker socket; see charts/compute-server.
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/compute-server"]
CMD ["--help"]
