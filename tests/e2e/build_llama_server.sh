#!/usr/bin/env bash
# Build a CPU llama-server with the RPC backend (GGML_RPC=ON) and the RPC server
# (ggml-rpc-server, the multi-node worker) from the llama.cpp tree vendored in the
# llama-cpp-python sdist on PyPI (the only registry-reachable source of llama.cpp), once
# per machine. Prints the path of the cached directory (bin/llama-server,
# bin/ggml-rpc-server and the vocab GGUFs).
#
#   LLAMA_CPP_PYTHON_VERSION  sdist version (default 0.3.36: llama.cpp 0c1e570, the
#                             tree shared/llama-server/args.tsv was checked against)
#   GSW_CACHE                 cache root (default ~/.cache)
#   LLAMA_CMAKE_ARGS          extra CMake arguments (e.g. -DGGML_CUDA=ON)
#   LLAMA_BUILD_FLAVOUR       cache key suffix for such builds (default cpu-rpc)
#
# About 12 minutes on 2 cores the first time; a cache hit returns at once.
set -euo pipefail
version="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
flavour="${LLAMA_BUILD_FLAVOUR:-cpu-rpc}"
cache="${GSW_CACHE:-$HOME/.cache}/gsw-llama-server/${version}-${flavour}"
if [ -x "$cache/bin/llama-server" ] && [ -x "$cache/bin/ggml-rpc-server" ]; then
  echo "$cache"
  exit 0
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
python3 -m pip download --quiet --no-binary :all: --no-deps "llama-cpp-python==${version}" -d "$work" >&2
tar -xzf "$work"/llama_cpp_python-"${version}".tar.gz -C "$work"
tree="$work/llama_cpp_python-${version}/vendor/llama.cpp"
generator=()
command -v ninja >/dev/null && generator=(-G Ninja)
# The web UI and its prebuilt download are off: nothing outside the registries is reachable.
cmake -S "$tree" -B "$work/build" "${generator[@]}" \
  -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_APP=OFF \
  -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_OPENSSL=OFF \
  -DGGML_RPC=ON ${LLAMA_CMAKE_ARGS:-} >&2
cmake --build "$work/build" --target llama-server ggml-rpc-server -j "$(nproc)" >&2
mkdir -p "$cache.partial/bin" "$cache.partial/models"
cp "$work/build/bin/llama-server" "$work/build/bin/ggml-rpc-server" "$cache.partial/bin/"
cp "$tree"/models/ggml-vocab-llama-spm.gguf "$cache.partial/models/"
rm -rf "$cache"
mv "$cache.partial" "$cache"
echo "$cache"
