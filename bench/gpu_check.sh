#!/usr/bin/env bash
# One short device check (issue: prove the 2-GPU argv on a real GPU). For a session
# whose task has the `device` tool; CI never has a GPU. Prepare here, on this machine:
#
#   mkdir -p .device && echo /.device/ >> .git/info/exclude
#   python3 -m pip download --no-binary :all: --no-deps llama-cpp-python==0.3.36 -d .device
#   python3 tests/e2e/tiny_model.py ~/.cache/gsw-llama-server/0.3.36-cpu-rpc/models/ggml-vocab-llama-spm.gguf .device/tiny.gguf
#   python3 -m webhook preview -f manifests/examples/llama-13b-2gpu.yaml > .device/admitted.yaml
#
# then run it there with `carry: [".device"]`:  bash bench/gpu_check.sh
# It builds llama-server with CUDA for Hopper from the same sdist, starts it with the
# argv the webhook produced for the 2-GPU 13B example (tiny model, a local port), and
# checks the log for the test plan's lines. The log lands in $OUT (or /tmp).
set -euo pipefail
out="${OUT:-/tmp}"
work="$(mktemp -d)"
tar -xzf .device/llama_cpp_python-0.3.36.tar.gz -C "$work"
tree="$work/llama_cpp_python-0.3.36/vendor/llama.cpp"
cmake -S "$tree" -B "$work/build" -DCMAKE_BUILD_TYPE=Release -DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_APP=OFF -DLLAMA_BUILD_UI=OFF \
  -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_OPENSSL=OFF > "$out/cmake.log" 2>&1
cmake --build "$work/build" --target llama-server -j "$(nproc)" > "$out/build.log" 2>&1
# The admitted pod's args, with the model and port pointed here.
mapfile -t args < <(python3 - <<'PY'
import yaml
doc = next(d for d in yaml.safe_load_all(open(".device/admitted.yaml")) if d)
args = doc["spec"]["containers"][0]["args"]
out, skip = [], False
for i, a in enumerate(args):
    if skip:
        skip = False
        continue
    if a in ("-m", "--model", "--port", "--host"):
        skip = True
        continue
    out.append(a)
print("\n".join(out + ["-m", ".device/tiny.gguf", "--port", "18080", "--host", "127.0.0.1"]))
PY
)
echo "llama-server ${args[*]}" | tee "$out/argv.txt"
GGML_CUDA_DEVICES=2 "$work/build/bin/llama-server" "${args[@]}" > "$out/llama-server.log" 2>&1 &
server=$!
for _ in $(seq 1 120); do curl -sf http://127.0.0.1:18080/health >/dev/null && break; sleep 0.5; done
curl -s http://127.0.0.1:18080/v1/chat/completions -H 'Content-Type: application/json' \
  -d '{"messages":[{"role":"user","content":"Hello"}],"max_tokens":16}' > "$out/completion.json" || true
kill "$server"; wait "$server" || true
grep -E "offloaded [0-9]+/[0-9]+ layers to GPU" "$out/llama-server.log"
grep -cE "CUDA[01]" "$out/llama-server.log"
