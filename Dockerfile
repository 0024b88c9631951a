# Memberspot Hub in a container. Build: docker build -t memberspot-hub .
# Run behind an HTTPS proxy (docs/operations.md, "Containers"); compose.yaml adds PostgreSQL.

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --package memberspot-cli --bin memberspot \
    && install -m 0755 target/release/memberspot /usr/local/bin/memberspot

# The binary needs only glibc: the slim Debian image of the same release as the builder.
FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --home-dir /var/lib/memberspot --shell /usr/sbin/nologin memberspot \
    && install -d -o memberspot -g memberspot -m 0700 /var/lib/memberspot
COPY --from=build /usr/local/bin/memberspot /usr/local/bin/memberspot
USER memberspot
# The database (SQLite unless DATABASE_URL is set), the sealed master key file and the
# admin token live in the data directory: keep it on a volume.
ENV MEMBERSPOT_DATA_DIR=/var/lib/memberspot \
    MEMBERSPOT_LISTEN=0.0.0.0:8787 \
    MEMBERSPOT_LOG_FORMAT=json
VOLUME ["/var/lib/memberspot"]
EXPOSE 8787
# No curl in the image: bash's /dev/tcp asks /healthz for its status line.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/8787 && printf 'GET /healthz HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n' >&3 && head -n 1 <&3 | grep -q ' 200 '"]
ENTRYPOINT ["memberspot"]
# Off loopback, serve refuses plain HTTP: set MEMBERSPOT_PUBLIC_URL=https://… (the proxy
# in front), or add --insecure-http on a private network.
CMD ["serve"]
