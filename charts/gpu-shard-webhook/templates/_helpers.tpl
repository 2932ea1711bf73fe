{{/* The name every object carries: the release's, as the kustomize base's "gpu-shard-webhook". */}}
{{- define "gsw.name" -}}gpu-shard-webhook{{- end -}}

{{- define "gsw.selectorLabels" -}}
app.kubernetes.io/name: {{ include "gsw.name" . }}
{{- end -}}

{{- define "gsw.labels" -}}
{{ include "gsw.selectorLabels" . }}
app.kubernetes.io/part-of: gpu-shard-webhook
{{- if .Values.helmLabels }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end }}
{{- end -}}

{{- define "gsw.prefix" -}}{{ .Values.config.prefix | default "gpu-shard.io" }}{{- end -}}

{{- define "gsw.serviceHost" -}}{{ include "gsw.name" . }}.{{ .Release.Namespace }}.svc{{- end -}}

{{/* Values -> the GSW_* variables of `serve` (webhook/config.py, webhook/cli.py). */}}
{{- define "gsw.env" -}}
{{- $settings := dict
  "prefix" "GSW_PREFIX" "gpuResources" "GSW_GPU_RESOURCES" "gpuDeviceClasses" "GSW_GPU_DEVICE_CLASSES"
  "defaultGpuLayers" "GSW_DEFAULT_GPU_LAYERS" "maxGpusPerNode" "GSW_MAX_GPUS_PER_NODE" "precedence" "GSW_PRECEDENCE"
  "injectAffinity" "GSW_INJECT_AFFINITY" "affinityResources" "GSW_AFFINITY_RESOURCES" "gpuCountLabel" "GSW_GPU_COUNT_LABEL"
  "sharingStrategyLabel" "GSW_SHARING_STRATEGY_LABEL" "sharedStrategies" "GSW_SHARED_STRATEGIES"
  "productLabel" "GSW_PRODUCT_LABEL" "cudaDriverLabel" "GSW_CUDA_DRIVER_LABEL" "bodyLimit" "GSW_BODY_LIMIT" -}}
{{- $server := dict
  "workers" "GSW_WORKERS" "threads" "GSW_THREADS" "logLevel" "GSW_LOG_LEVEL" "keepalive" "GSW_KEEPALIVE"
  "gracefulTimeout" "GSW_GRACEFUL_TIMEOUT" "handshakeTimeout" "GSW_HANDSHAKE_TIMEOUT" "headerTimeout" "GSW_HEADER_TIMEOUT"
  "bodyTimeout" "GSW_BODY_TIMEOUT" "writeTimeout" "GSW_WRITE_TIMEOUT" "maxConnections" "GSW_MAX_CONNECTIONS"
  "clusterChecks" "GSW_CLUSTER_CHECKS" "dra" "GSW_DRA" -}}
{{- range $key := (list "maxGpusPerNode" "precedence" "injectAffinity") }}
{{- $value := index $.Values.config $key }}
{{- if not (kindIs "invalid" $value) }}
- name: {{ index $settings $key }}
  value: {{ $value | toString | quote }}
{{- end }}
{{- end }}
{{- range $key, $name := $settings }}
{{- if not (has $key (list "maxGpusPerNode" "precedence" "injectAffinity")) }}
{{- $value := index $.Values.config $key }}
{{- if not (kindIs "invalid" $value) }}
- name: {{ $name }}
  value: {{ if kindIs "slice" $value }}{{ join "," $value | quote }}{{ else }}{{ $value | toString | quote }}{{ end }}
{{- end }}
{{- end }}
{{- end }}
{{- range $key, $name := $server }}
{{- $value := index $.Values.server $key }}
{{- if not (kindIs "invalid" $value) }}
- name: {{ $name }}
  value: {{ $value | toString | quote }}
{{- end }}
{{- end }}
{{- end -}}

{{/* The namespaces the webhooks never see: the configured ones and the release's own. */}}
{{- define "gsw.excludedNamespaces" -}}
{{- $names := concat .Values.webhooks.excludedNamespaces (list .Release.Namespace) | uniq -}}
[{{ join ", " $names }}]
{{- end -}}

{{/* The serving certificate, key and CA as JSON, worked out once per render (the Secret and the
     webhooks' caBundle must hold the same CA): generated, or provided. */}}
{{- define "gsw.certificates" -}}
{{- if not (hasKey .Values.certificates "_resolved") -}}
{{- $resolved := dict -}}
{{- if eq .Values.certificates.mode "generated" -}}
{{- $resolved = include "gsw.generatedCertificates" . | fromJson -}}
{{- else if eq .Values.certificates.mode "provided" -}}
{{- $p := .Values.certificates.provided -}}
{{- if not (and $p.cert $p.key $p.ca) -}}
{{- fail "certificates.mode=provided needs certificates.provided.cert, .key and .ca (--set-file from `gpu-shard-webhook certs --out DIR`)" -}}
{{- end -}}
{{- $resolved = dict "cert" $p.cert "key" $p.key "ca" $p.ca -}}
{{- end -}}
{{- $_ := set .Values.certificates "_resolved" $resolved -}}
{{- end -}}
{{- .Values.certificates._resolved | toJson -}}
{{- end -}}

{{/* The generated certificates: the existing Secret's on upgrade, new ones on install. */}}
{{- define "gsw.generatedCertificates" -}}
{{- $existing := lookup "v1" "Secret" .Release.Namespace .Values.certificates.secretName -}}
{{- if and $existing (index ($existing.data | default dict) "ca.crt") -}}
{{- dict "cert" (index $existing.data "tls.crt" | b64dec) "key" (index $existing.data "tls.key" | b64dec) "ca" (index $existing.data "ca.crt" | b64dec) | toJson -}}
{{- else -}}
{{- $days := int .Values.certificates.validityDays -}}
{{- $ca := genCA "gpu-shard-webhook CA" $days -}}
{{- $host := include "gsw.serviceHost" . -}}
{{- $names := list (include "gsw.name" .) (printf "%s.%s" (include "gsw.name" .) .Release.Namespace) $host (printf "%s.cluster.local" $host) -}}
{{- $cert := genSignedCert $host nil $names $days $ca -}}
{{- dict "cert" $cert.Cert "key" $cert.Key "ca" $ca.Cert | toJson -}}
{{- end -}}
{{- end -}}
