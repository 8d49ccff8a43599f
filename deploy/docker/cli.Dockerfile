# syntax=docker/dockerfile:1
# The kubegate CLI's image (`kubegate doctor` in a Job, `kubegate exec-credential` in CI).
#
#   docker build -f deploy/docker/cli.Dockerfile -t REGISTRY/kubegate/cli:TAG .
#
# Built by deploy/docker/build.sh, as kubegate.Dockerfile is; base images pinned by digest.

FROM docker.io/library/rust:1.95-slim-bookworm@sha256:d7482085ff5b415f84dba5647ae71606650bdef00db7aeb69f4b3d170c3e4082 AS build
WORKDIR /src
COPY . .
RUN deploy/docker/build.sh /out

FROM gcr.io/distroless/cc-debian12:nonroot@sha256:9dac0a79194e45a7da0158a9c6da57b217585af0786db3845d1f0ec1a0dd182f
COPY --from=build /out/cli/ /
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/kubegate"]
