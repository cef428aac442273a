#!/usr/bin/env bash
# Starts a three-node NATS JetStream cluster on loopback (ports 4222-4224) as plain processes,
# from deploy/nats/node-*.conf, with data in ./cluster-data. Stops them on Ctrl-C.
#
#   deploy/local-cluster.sh
#   tellonce serve --engine nats --nats-url nats://127.0.0.1:4222,nats://127.0.0.1:4223 ...
#
# Hub replicas on the JetStream engine are not yet wired for reads (the scale-out issue); any
# replica already accepts writes to the one shared stream.
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
echo "nats cluster running: nats://127.0.0.1:4222, :4223, :4224 (logs in cluster-data/); Ctrl-C stops it"
wait
