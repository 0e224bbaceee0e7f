# Warren node image. No registry is reachable, so nothing is pulled: the image is the static
# binary alone. Build it with scripts/build-static.sh first (scripts/docker-cluster.sh up does
# both); .dockerignore keeps the build context to that one file.
FROM scratch
# Lets scripts/docker-cluster.sh prune the images earlier builds left untagged.
LABEL org.warrenmq.image=warren
COPY bin/warren-static /warren
# Raft log, snapshots, message store and the node-id file: kept across container restarts.
VOLUME ["/data"]
ENV WARREN_DATA_DIR=/data
# AMQP, HTTP API, Raft, gossip (tcp and udp), forwarded topology writes, node-to-node data links.
EXPOSE 5672 15672 7000 7946/tcp 7946/udp 7001 7002
# There is no shell in the image: the health check is the binary asking its own HTTP API, which
# answers only once the node has started (status exits 0 when /api/nodes and /api/overview
# answer). It assumes the default --http-addr port 15672 inside the container, and logs in as
# guest/guest unless the container sets WARREN_USER and WARREN_PASSWORD.
HEALTHCHECK --interval=2s --timeout=5s --start-period=60s --retries=3 \
  CMD ["/warren", "status", "--http", "127.0.0.1:15672"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/warren", "run"]
