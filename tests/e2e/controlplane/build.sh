#!/usr/bin/env bash
# Build a real Kubernetes control plane for the end-to-end tier from the Go module
# proxy: kube-apiserver, kube-controller-manager and kubectl from k8s.io/kubernetes
# (pinned in go.mod, every k8s.io staging module replaced by its v0.Y.Z), and an
# embedded etcd (./etcd). Cached under ~/.cache/gsw-controlplane/<version>/ and
# built once per machine; prints that folder.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
version="$(awk '$1 == "k8s.io/kubernetes" {print $2}' "$here/go.mod")"
cache="${GSW_CACHE:-$HOME/.cache}/gsw-controlplane/${version}"
binaries=(kube-apiserver kube-controller-manager kubectl etcd)
complete=true
for binary in "${binaries[@]}"; do [ -x "$cache/$binary" ] || complete=false; done
# Built with the version stamped (an unstamped API server reports v0.0.0-master, which helm's
# kubeVersion check refuses); a cache without the stamp is rebuilt.
[ -f "$cache/version-stamped" ] || complete=false
if $complete; then
  echo "$cache"
  exit 0
fi
command -v go >/dev/null || { echo "go is needed to build the control plane" >&2; exit 1; }
rm -rf "$cache.partial"
mkdir -p "$cache.partial"
started=$(date +%s)
(
  cd "$here"
  # Without cgo: static binaries, and no C toolchain differences between machines.
  # No VCS stamp: the checkout may belong to another user, which git refuses to read.
  minor="$(echo "$version" | cut -d. -f2)"
  stamp=""
  for package in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    stamp="$stamp -X $package.gitVersion=$version -X $package.gitMajor=1 -X $package.gitMinor=$minor -X $package.gitTreeState=clean"
  done
  CGO_ENABLED=0 GOFLAGS="${GOFLAGS:-} -trimpath -buildvcs=false" go build -ldflags "-s -w $stamp" -o "$cache.partial/" \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kubectl ./etcd
) >&2
echo "$version" > "$cache.partial/version-stamped"
rm -rf "$cache"
mv "$cache.partial" "$cache"
echo "built the control plane ${version} in $(( $(date +%s) - started )) s; $(du -sh "$cache" | cut -f1) in $cache" >&2
echo "$cache"
