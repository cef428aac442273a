#!/usr/bin/env bash
# Starts a three-node NATS JetStream cluster on loopback (ports 4222-4224) from
# deploy/nats/node-*.conf, and two TellOnce hub replicas on one R3 stream (gRPC on 50061 and
# 50062, data in cluster-data/hub-{a,b}), all as plain processes. Ctrl-C stops them all.
#
#   deploy/local-cluster.sh            # builds the hub (release) first
#   HUBS=0 deploy/local-cluster.sh     # only the NATS cluster
#
# Publish to one replica and read from the other (pass the publish's offset as
# consistency.min_offset to read your own write). Both replicas use the development
# credentials of hub-a (copied to hub-b), so the same --as names work against either.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$(scripts/install-nats)
mkdir -p cluster-data
pids=()
for i in 1 2 3; do
  "$bin" -c "deploy/nats/node-$i.conf" > "cluster-data/nats-$i.log" 2>&1 &
  pids+=($!)
done
trap 'kill "${pids[@]}" 2>/dev/null; wait' INT TERM EXIT
echo "nats cluster running: nats://127.0.0.1:4222, :4223, :4224 (logs in cluster-data/)"
if [ "${HUBS:-2}" != "0" ]; then
  cargo build --release -p tellonce
  urls=nats://127.0.0.1:4222,nats://127.0.0.1:4223,nats://127.0.0.1:4224
  for r in a b; do
    mkdir -p "cluster-data/hub-$r"
    cat > "cluster-data/hub-$r/tellonce.toml" <<TOML
version = 1
[server]
listen = "127.0.0.1:$([ $r = a ] && echo 50061 || echo 50062)"
[storage]
engine = "nats"
data_dir = "cluster-data/hub-$r/data"
[storage.nats]
url = "$urls"
replicas = 3
TOML
  done
  target/release/tellonce serve --config cluster-data/hub-a/tellonce.toml > cluster-data/hub-a.log 2>&1 &
  pids+=($!)
  # The second replica shares the first one's development credentials.
  for _ in $(seq 1 100); do
    [ -f cluster-data/hub-a/data/dev-credentials.toml ] && break
    sleep 0.1
  done
  mkdir -p cluster-data/hub-b/data
  cp cluster-data/hub-a/data/dev-credentials.toml cluster-data/hub-b/data/
  target/release/tellonce serve --config cluster-data/hub-b/tellonce.toml > cluster-data/hub-b.log 2>&1 &
  pids+=($!)
  echo "hub replicas: 127.0.0.1:50061 (a) and 127.0.0.1:50062 (b); credentials in cluster-data/hub-a/data/dev-credentials.toml"
fi
echo "Ctrl-C stops everything"
wait
