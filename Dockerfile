# The example programs (x, y, z, middle, client, loadgen, demo) in one small
# image, each at /usr/local/bin/<name>, built statically. Build it from the
# repository root, where go.work is: the programs build with the workspace,
# against the library beside them.
#
#	docker build -t fanout .
#
# Run a program by its name. The image has no default command and exposes
# no port (add -p 7001:7001 to reach this x from the host):
#
#	docker run fanout x -listen :7001
#
# The programs run as user 65532, not root, and the servers write nothing
# but standard error, so a read-only root file system suits them.
# deploy/kubernetes/ runs the whole system on Kubernetes from this image; its
# test checks this file (every program built, CGO_ENABLED=0, a non-root
# user).

# The Go release of go.work's go line.
FROM golang:1.26 AS build
WORKDIR /src
ENV CGO_ENABLED=0
# .dockerignore keeps out what the programs are not built from.
COPY . .
RUN --mount=type=cache,target=/go/pkg/mod \
	--mount=type=cache,target=/root/.cache/go-build \
	go build -trimpath -ldflags="-s -w" -o /out/ \
		./examples/x ./examples/y ./examples/z ./examples/middle \
		./examples/client ./examples/loadgen ./examples/demo

# Static binaries need nothing from the image but the CA certificates, for a
# program that checks a certificate against the system's roots (the
# programs' mutual TLS trusts the CA that -tls-ca names instead).
FROM scratch
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/
COPY --from=build /out/ /usr/local/bin/
ENV PATH=/usr/local/bin
USER 65532:65532
