#!/usr/bin/env bash
# Build the real helm CLI the chart tests use, from the Go module proxy (no download site
# is reachable). Cached under ~/.cache/gsw-helm/<version>/helm and built once per machine;
# prints the binary's path.
set -euo pipefail
version="${GSW_HELM_VERSION:-v3.22.0}"
cache="${GSW_CACHE:-$HOME/.cache}/gsw-helm/${version}"
if [ -x "$cache/helm" ]; then
  echo "$cache/helm"
  exit 0
fi
command -v go >/dev/null || { echo "go is needed to build helm" >&2; exit 1; }
rm -rf "$cache.partial"
mkdir -p "$cache.partial"
started=$(date +%s)
# Outside any module: go install pkg@version builds exactly what helm's own go.mod pins.
(cd "$cache.partial" && CGO_ENABLED=0 GOBIN="$cache.partial" GOFLAGS="-trimpath -buildvcs=false" \
  go install -ldflags "-s -w" "helm.sh/helm/v3/cmd/helm@${version}") >&2
rm -rf "$cache"
mv "$cache.partial" "$cache"
echo "built helm ${version} in $(( $(date +%s) - started )) s; $(du -sh "$cache" | cut -f1) in $cache" >&2
echo "$cache/helm"
