#!/usr/bin/env bash
# Makes what the compose cluster mounts, in deploy/secrets/ (never committed): a random cookie,
# a CA, a TLS certificate for each node (node1 … node7) and one for clients (*.clients.cluster:
# any client named NAME.clients.cluster). Each node's folder holds its certificate and key, the
# CA's certificate and the cookie; the CA's key stays in secrets/ca, mounted nowhere. The
# folders mounted into containers belong to the image's user id (10001) and only it can read
# the keys and the cookie, so this runs as root. Keeps a secrets/ that exists (delete it to
# start over); an interrupted run leaves none.
set -euo pipefail
umask 077
cd "$(dirname "$0")"
image=${GEN_CLUSTER_IMAGE:-gen-cluster:latest}
nodes=(node1 node2 node3 node4 node5 node6 node7)
if [ -e secrets ]; then
  echo "deploy/secrets exists: kept (delete it to make new secrets)"
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "run as root: the files are handed to the containers' user id (10001)" >&2
  exit 1
fi
made=$(mktemp -d secrets.XXXXXX)
trap 'rm -rf "$made"' EXIT
mkdir "$made/ca"
docker run --rm --user 0 --entrypoint /gen-cluster --volume "$PWD/$made/ca:/ca" "$image" \
  certs --dir /ca "${nodes[@]}" '*.clients.cluster' >/dev/null
cookie=$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')
for node in "${nodes[@]}" client; do
  mkdir "$made/$node"
  printf '%s\n' "$cookie" >"$made/$node/cookie"
  cp "$made/ca/ca.pem" "$made/$node/ca.pem"
done
for node in "${nodes[@]}"; do
  cp "$made/ca/$node.pem" "$made/$node/node.pem"
  cp "$made/ca/$node.key" "$made/$node/node.key"
done
cp "$made/ca/_.clients.cluster.pem" "$made/client/client.pem"
cp "$made/ca/_.clients.cluster.key" "$made/client/client.key"
for node in "${nodes[@]}" client; do
  chown -R 10001:10001 "$made/$node"
done
chmod 755 "$made"
mv "$made" secrets
trap - EXIT
echo "made deploy/secrets: a cookie, a CA (secrets/ca), certificates for ${nodes[*]} and *.clients.cluster"
