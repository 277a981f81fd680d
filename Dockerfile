# octopoll as a container image: every service of docker-compose.yml (nodes,
# swarm, the one-shot certificate maker) runs this one image.
#
#   docker build .                          from source: the `source` target (needs the Rust image)
#   docker build --target prebuilt .        a binary built on the host (target/release/octopoll,
#                                           or --build-arg OCTOPOLL_BINARY=path); no crates fetched
#
# The base is a variable (OCTOPOLL_BASE_IMAGE, default debian:bookworm-slim): on a machine with no
# registry, `.ci/docker-base` builds a local Debian image to use instead. The binary is linked against
# glibc, so the base must be Debian 12 (bookworm) or newer when the binary was built on the host.

ARG OCTOPOLL_BASE_IMAGE=debian:bookworm-slim
ARG RUST_IMAGE=rust:1-bookworm

# Stages in this order: the classic builder (docker-compose 1.29) builds every stage up to the target,
# so `prebuilt` comes first and never waits on a Rust image.
FROM ${OCTOPOLL_BASE_IMAGE} AS prebuilt
ARG OCTOPOLL_BINARY=target/release/octopoll
COPY ${OCTOPOLL_BINARY} /usr/local/bin/octopoll
# /certs belongs to the unprivileged user, so a named volume mounted there does too.
RUN /usr/local/bin/octopoll --version && mkdir -p /certs && chown 10001:10001 /certs
USER 10001:10001
ENTRYPOINT ["/usr/local/bin/octopoll"]
CMD ["--help"]

FROM ${RUST_IMAGE} AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p octopoll-cli && cp target/release/octopoll /octopoll

FROM ${OCTOPOLL_BASE_IMAGE} AS source
COPY --from=build /octopoll /usr/local/bin/octopoll
RUN mkdir -p /certs && chown 10001:10001 /certs
USER 10001:10001
ENTRYPOINT ["/usr/local/bin/octopoll"]
CMD ["--help"]
