#!/usr/bin/env bash
# Build the LeaderWorkerSet controller (kubernetes-sigs/lws, pinned in go.mod) from the Go
# module proxy for the control-plane tier, and keep its CRD and webhook manifests beside it.
# Cached under ~/.cache/gsw-lws/<version>/ and built once per machine; prints that folder.
#
# `go install sigs.k8s.io/lws/cmd@<version>` would need the proxy's version list, which this
# machine's proxy refuses; building the package from a module that requires it does not.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
version="$(awk '$1 == "require" && $2 == "sigs.k8s.io/lws" {print $3}' "$here/go.mod")"
cache="${GSW_CACHE:-$HOME/.cache}/gsw-lws/${version}"
if [ -x "$cache/lws-controller" ] && [ -f "$cache/crd.yaml" ] && [ -f "$cache/webhooks.yaml" ]; then
  echo "$cache"
  exit 0
fi
command -v go >/dev/null || { echo "go is needed to build the LeaderWorkerSet controller" >&2; exit 1; }
rm -rf "$cache.partial"
mkdir -p "$cache.partial"
started=$(date +%s)
(
  cd "$here"
  CGO_ENABLED=0 GOFLAGS="${GOFLAGS:-} -trimpath -buildvcs=false" go build -ldflags "-s -w" -o "$cache.partial/lws-controller" sigs.k8s.io/lws/cmd
  source="$(go list -m -f '{{.Dir}}' sigs.k8s.io/lws)"
  cp "$source/config/crd/bases/leaderworkerset.x-k8s.io_leaderworkersets.yaml" "$cache.partial/crd.yaml"
  cp "$source/config/webhook/manifests.yaml" "$cache.partial/webhooks.yaml"
) >&2
rm -rf "$cache"
mv "$cache.partial" "$cache"
echo "built the LeaderWorkerSet controller ${version} in $(( $(date +%s) - started )) s in $cache" >&2
echo "$cache"
