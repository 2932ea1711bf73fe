// A minimal Go net/http admission webhook doing the same work as gpu-shard-webhook's /mutate
// for a GPU pod: decode the AdmissionReview, count nvidia.com/gpu in the first container,
// append --n-gpu-layers/--split-mode/--tensor-split to its args, add the GPU toleration, the
// node affinity and a status annotation, and answer with the JSON patch. Standard library only.
// It is the reference bench/admission.py measures the Python server against, in the same run.
package main

import (
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"net/http"
	"strconv"
	"strings"
	"time"
)

type patchOp struct {
	Op    string `json:"op"`
	Path  string `json:"path"`
	Value any    `json:"value"`
}

func asMap(v any) map[string]any {
	m, _ := v.(map[string]any)
	return m
}

func asList(v any) []any {
	l, _ := v.([]any)
	return l
}

func gpus(container map[string]any) int {
	limits := asMap(asMap(container["resources"])["limits"])
	switch v := limits["nvidia.com/gpu"].(type) {
	case string:
		n, _ := strconv.Atoi(v)
		return n
	case float64:
		return int(v)
	}
	return 0
}

func mutate(review map[string]any) map[string]any {
	request := asMap(review["request"])
	pod := asMap(request["object"])
	response := map[string]any{"uid": request["uid"], "allowed": true}
	spec := asMap(pod["spec"])
	containers := asList(spec["containers"])
	if len(containers) == 0 {
		return response
	}
	container := asMap(containers[0])
	n := gpus(container)
	if n == 0 {
		return response
	}
	args := asList(container["args"])
	flags := []string{"--n-gpu-layers", "999"}
	if n > 1 {
		split := strings.TrimSuffix(strings.Repeat("1,", n), ",")
		flags = append(flags, "--split-mode", "layer", "--tensor-split", split)
	}
	var ops []patchOp
	for i, token := range flags {
		ops = append(ops, patchOp{"add", fmt.Sprintf("/spec/containers/0/args/%d", len(args)+i), token})
	}
	toleration := map[string]any{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
	if spec["tolerations"] == nil {
		ops = append(ops, patchOp{"add", "/spec/tolerations", []any{toleration}})
	} else {
		ops = append(ops, patchOp{"add", "/spec/tolerations/-", toleration})
	}
	if n > 1 && spec["affinity"] == nil {
		expressions := []any{
			map[string]any{"key": "nvidia.com/gpu.count", "operator": "Gt", "values": []any{strconv.Itoa(n - 1)}},
			map[string]any{"key": "nvidia.com/gpu.sharing-strategy", "operator": "NotIn", "values": []any{"time-slicing", "mps"}},
		}
		affinity := map[string]any{"nodeAffinity": map[string]any{"requiredDuringSchedulingIgnoredDuringExecution": map[string]any{
			"nodeSelectorTerms": []any{map[string]any{"matchExpressions": expressions}}}}}
		ops = append(ops, patchOp{"add", "/spec/affinity", affinity})
	}
	status, _ := json.Marshal(map[string]any{"container": container["name"], "gpus": n, "resource": "nvidia.com/gpu", "channel": "args"})
	metadata := asMap(pod["metadata"])
	if metadata["annotations"] == nil {
		ops = append(ops, patchOp{"add", "/metadata/annotations", map[string]any{"gpu-shard.io/status": string(status)}})
	} else {
		ops = append(ops, patchOp{"add", "/metadata/annotations/gpu-shard.io~1status", string(status)})
	}
	patch, _ := json.Marshal(ops)
	response["patchType"] = "JSONPatch"
	response["patch"] = base64.StdEncoding.EncodeToString(patch)
	return response
}

func main() {
	addr := flag.String("addr", "127.0.0.1:8443", "listen address")
	cert := flag.String("cert", "tls.crt", "certificate")
	key := flag.String("key", "tls.key", "private key")
	flag.Parse()
	mux := http.NewServeMux()
	mux.HandleFunc("/mutate", func(w http.ResponseWriter, r *http.Request) {
		var review map[string]any
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4<<20)).Decode(&review); err != nil {
			http.Error(w, "bad AdmissionReview", http.StatusBadRequest)
			return
		}
		answer := map[string]any{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": mutate(review)}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(answer)
	})
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	server := &http.Server{Addr: *addr, Handler: mux, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second, IdleTimeout: 95 * time.Second}
	log.Fatal(server.ListenAndServeTLS(*cert, *key))
}
