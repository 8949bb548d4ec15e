# The prefect-aci worker image: one static (musl) binary on a distroless base.
#
#   docker build -t <registry>.azurecr.io/prefect-aci:latest .
#
# `prefect-aci setup` runs it as `prefect-aci worker start --pool NAME` with the pool's
# managed identity; the image holds nothing else (no shell, no Python: flow code runs in the
# flow-run containers the worker starts).

FROM rust:1-alpine AS build
# ring (TLS) needs a C compiler and musl headers; everything links statically.
RUN apk add --no-cache musl-dev gcc
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p prefect-aci \
 && cp target/release/prefect-aci /prefect-aci

# distroless/static: CA certificates, /etc/passwd with a nonroot user, and nothing else.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /prefect-aci /usr/local/bin/prefect-aci
ENTRYPOINT []
CMD ["prefect-aci", "worker", "start", "--help"]
