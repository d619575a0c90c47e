# Builds SciTunnel's two images with Docker, for users who have a Docker engine:
#
#   docker build --target manager   --build-arg VERSION=v0.1.0 -t scitunnel/manager:v0.1.0 .
#   docker build --target dataplane --build-arg VERSION=v0.1.0 -t scitunnel/dataplane:v0.1.0 .
#
# (`make docker-build` runs both.) Both binaries are static (CGO_ENABLED=0), so the runtime image
# is distroless/static: CA certificates, tzdata and a passwd with the nonroot user 65532, no
# shell. `make images` builds equivalent images without Docker (hack/imagepack).

FROM golang:1.26 AS builder
ARG VERSION=dev
# Set by BuildKit for the --platform being built; empty (host platform) with the classic builder.
ARG TARGETOS
ARG TARGETARCH
WORKDIR /src
# Modules first, so source edits do not invalidate the download layer.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 GOOS=${TARGETOS:-linux} GOARCH=${TARGETARCH} \
    go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/manager ./cmd && \
    CGO_ENABLED=0 GOOS=${TARGETOS:-linux} GOARCH=${TARGETARCH} \
    go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/scitunnel ./cmd/scitunnel

# The operator's manager.
FROM gcr.io/distroless/static:nonroot AS manager
COPY --from=builder /out/manager /manager
USER 65532:65532
ENTRYPOINT ["/manager"]

# The non-root sFlow sidecar gets NET_RAW from the binary's file capability, permitted but not
# effective (the sampler raises it itself), so the binary also starts in containers without it.
# BuildKit's COPY keeps the security.capability xattr.
FROM builder AS dataplane-caps
RUN apt-get update -q && apt-get install -y -q --no-install-recommends libcap2-bin && \
    setcap cap_net_raw=p /out/scitunnel && getcap /out/scitunnel

# The data plane: proxy (`scitunnel run`), sFlow sidecar (`scitunnel sflow`), CLI. Last stage,
# so a plain `docker build .` produces it.
FROM gcr.io/distroless/static:nonroot AS dataplane
COPY --from=dataplane-caps /out/scitunnel /scitunnel
USER 65532:65532
ENTRYPOINT ["/scitunnel"]
