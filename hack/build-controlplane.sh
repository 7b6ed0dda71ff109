#!/usr/bin/env bash
# Builds kube-apiserver, kube-proxy and etcd for world/controlplane into
# ${FLOWPLACE_CACHE:-$HOME/.cache/flowplace}/controlplane/<key>/ and prints that
# directory. The key hashes world/controlplane/tools/go.{mod,sum} (as embedded
# in world/controlplane/toolsmod, which a built flowplace binary carries) and
# the build flags; if the directory exists nothing is built. The logic lives in
# Go (controlplane.Binaries) so that tests, this script and any flowplace
# binary share one cache key.
set -euo pipefail
cd "$(dirname "$0")/.."
exec go run ./world/controlplane/cmd/controlplane-bin
