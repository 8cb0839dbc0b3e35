# The nico-identity image: one static binary, every role.
#
#   docker build --tag nico-identity:dev .
#
# The binary is linked statically against musl and runs on distroless/static. It runs as
# the image's non-root user (65532); only the csi-node role runs as root, privileged,
# because it mounts a tmpfs per volume into pods (the chart sets that for its DaemonSet).

FROM rust:1.95-alpine AS build
# aws-lc-rs (the only crypto provider) compiles C with the system toolchain.
RUN apk add --no-cache musl-dev gcc g++ make cmake perl
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p nico-identity \
    && cp target/release/nico-identity /nico-identity

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /nico-identity /nico-identity
USER 65532:65532
ENTRYPOINT ["/nico-identity"]
CMD ["--help"]
