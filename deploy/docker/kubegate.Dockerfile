# syntax=docker/dockerfile:1
# kubegate's image: authz-server, and the wasm filter that the Helm chart's init
# container (kubegate-install-filter) copies into the emptyDir stock Envoy loads it from.
#
#   docker build -f deploy/docker/kubegate.Dockerfile -t REGISTRY/kubegate/kubegate:TAG .
#
# Everything is built by deploy/docker/build.sh, which the tests also run natively.
# The base images are pinned by digest; docs/operators.md ("Images") says where the
# digests come from and how to check them before building.

# rust:1.95-slim-bookworm (Debian 12), the toolchain the project builds with.
FROM docker.io/library/rust:1.95-slim-bookworm@sha256:d7482085ff5b415f84dba5647ae71606650bdef00db7aeb69f4b3d170c3e4082 AS build
WORKDIR /src
COPY . .
RUN deploy/docker/build.sh /out

# Distroless, glibc and CA certificates only: no shell, no package manager; user 65532.
FROM gcr.io/distroless/cc-debian12:nonroot@sha256:9dac0a79194e45a7da0158a9c6da57b217585af0786db3845d1f0ec1a0dd182f
COPY --from=build /out/kubegate/ /
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/kubegate-authz-server"]
