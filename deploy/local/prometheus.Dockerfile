# Local stand-in for the prom/prometheus image, from Debian's prometheus package (2.42 in bookworm), for
# hosts that reach no container registry (scripts/stack_images.sh). Like the official image: the prometheus
# binary is the entry point (docker-compose.yml passes only flags), /prometheus is its writable data dir.
ARG DEBIAN_IMAGE=autoft-local/debian:bookworm
FROM ${DEBIAN_IMAGE}
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /prometheus /etc/prometheus \
    && chown prometheus:prometheus /prometheus
USER prometheus
WORKDIR /prometheus
EXPOSE 9090
ENTRYPOINT ["/usr/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]
