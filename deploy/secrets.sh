#!/usr/bin/env bash
# Makes what the compose cluster mounts, in deploy/secrets/ (never committed): a random cookie,
# a CA, a TLS certificate for each node (node1 … node7) and one for clients (*.clients.cluster:
# any client named NAME.clients.cluster). Each node's folder holds its certificate and key, the
# CA's certificate and the cookie; the CA's key stays in secrets/ca, mounted nowhere. The
# folders mounted into containers belong to the image's user id (10001) and only it can read
# the keys and the cookie, so run this as root. Keeps a secrets/ that exists (delete it to
# start over).
set -euo pipefail
cd "$(dirname "$0")"
image=${GEN_CLUSTER_IMAGE:-gen-cluster:latest}
nodes=(node1 node2 node3 node4 node5 node6 node7)
if [ -e secrets ]; then
  echo "deploy/secrets exists: kept (delete it to make new secrets)"
  exit 0
fi
trap 'rm -rf secrets' ERR
mkdir -p secrets/ca
docker run --rm --user "$(id -u):$(id -g)" --entrypoint /gen-cluster \
  --volume "$PWD/secrets/ca:/ca" "$image" certs --dir /ca "${nodes[@]}" '*.clients.cluster' >/dev/null
cookie=$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')
for node in "${nodes[@]}" client; do
  mkdir -p "secrets/$node"
  printf '%s\n' "$cookie" > "secrets/$node/cookie"
  cp secrets/ca/ca.pem "secrets/$node/ca.pem"
done
for node in "${nodes[@]}"; do
  cp "secrets/ca/$node.pem" "secrets/$node/node.pem"
  cp "secrets/ca/$node.key" "secrets/$node/node.key"
done
cp secrets/ca/_.clients.cluster.pem secrets/client/client.pem
cp secrets/ca/_.clients.cluster.key secrets/client/client.key
for node in "${nodes[@]}" client; do
  chmod 700 "secrets/$node"
  chmod 600 "secrets/$node"/*
  chown -R 10001:10001 "secrets/$node"
done
echo "made deploy/secrets: a cookie, a CA (secrets/ca), certificates for ${nodes[*]} and *.clients.cluster"
