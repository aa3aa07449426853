# syntax=docker/dockerfile:1
# Bingsan's container image: `docker build -t bingsan:0.1.0 .`
# Build stage: the release binary. Runtime stage: distroless "cc" (glibc,
# libgcc, CA certificates, /etc/passwd with the nonroot user 65532) plus the
# binary, nothing else: no shell, no package manager.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
RUN cargo build --release --locked --bin bingsan \
    && mkdir -p /out/var/lib/bingsan/data /out/var/lib/bingsan/warehouse

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/bingsan /usr/local/bin/bingsan
# Owned by the runtime user, so a fresh volume mounted here is writable.
COPY --from=build --chown=65532:65532 /out/var/lib/bingsan /var/lib/bingsan
# The store and the warehouse (BINGSAN_DATA_DIR, BINGSAN_WAREHOUSE).
ENV BINGSAN_DATA_DIR=/var/lib/bingsan/data \
    BINGSAN_WAREHOUSE=/var/lib/bingsan/warehouse \
    BINGSAN_LISTEN=0.0.0.0:8181 \
    BINGSAN_METRICS_LISTEN=0.0.0.0:9090
WORKDIR /var/lib/bingsan
VOLUME ["/var/lib/bingsan"]
USER 65532:65532
EXPOSE 8181 9090
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/bingsan"]
CMD ["serve"]
