# The helper image: FROM scratch, only the static mailcow-borg binary. `mailcow-borg backup`
# makes the same image by itself from its own executable (no registry, no Dockerfile needed);
# this file is for building it elsewhere, then `--helper-image` (or `helper_image` in the
# config) names it.
#
#   From source (needs the rust image):
#     docker build -t mailcow-borg:local .
#   From a binary you built or downloaded (needs nothing pulled):
#     cargo build --release
#     docker build --target prebuilt -t mailcow-borg:local .
#     docker build --target prebuilt --build-arg BINARY=path/in/context -t mailcow-borg:local .
#
# `prebuilt` comes first so that the classic builder, which builds every stage before the
# target, never needs the rust image for it.

FROM scratch AS prebuilt
ARG BINARY=target/x86_64-unknown-linux-gnu/release/mailcow-borg
COPY ${BINARY} /mailcow-borg
ENTRYPOINT ["/mailcow-borg"]

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked

FROM scratch AS from-source
COPY --from=build /src/target/x86_64-unknown-linux-gnu/release/mailcow-borg /mailcow-borg
ENTRYPOINT ["/mailcow-borg"]
