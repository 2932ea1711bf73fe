{{/* What every webhook entry shares: the Service, the CA, the timeouts, the namespaces left out. */}}
{{- define "gsw.webhookCommon" -}}
admissionReviewVersions: ["v1"]
sideEffects: None
timeoutSeconds: {{ .root.Values.webhooks.timeoutSeconds }}
failurePolicy: {{ .root.Values.webhooks.failurePolicy }}
matchPolicy: Equivalent
clientConfig:
  {{- if .root.Values.webhooks.url }}
  url: {{ printf "%s%s" (trimSuffix "/" .root.Values.webhooks.url) .path }}
  {{- else }}
  service:
    name: {{ include "gsw.name" .root }}
    namespace: {{ .root.Release.Namespace }}
    path: {{ .path }}
    port: 443
  {{- end }}
  {{- if has .root.Values.certificates.mode (list "generated" "provided") }}
  caBundle: {{ (include "gsw.certificates" .root | fromJson).ca | b64enc }}
  {{- end }}
namespaceSelector:
  matchExpressions:
    - key: kubernetes.io/metadata.name
      operator: NotIn
      values: {{ include "gsw.excludedNamespaces" .root }}
{{- end -}}

{{- define "gsw.webhookAnnotations" -}}
{{- if eq .Values.certificates.mode "cert-manager" }}
annotations:
  cert-manager.io/inject-ca-from: {{ .Release.Namespace }}/{{ .Values.certificates.secretName }}
{{- end }}
{{- end -}}

{{/* The CEL condition: the workload's pod template carries the opt-in label. */}}
{{- define "gsw.templateOptedIn" -}}
{{- $label := printf "%s/enabled" (include "gsw.prefix" .root) -}}
has({{ .template }}.metadata) &&
has({{ .template }}.metadata.labels) &&
'{{ $label }}' in {{ .template }}.metadata.labels &&
{{ .template }}.metadata.labels['{{ $label }}'] == 'true'
{{- end -}}

{{/* The CEL condition for a LeaderWorkerSet: its own label, or either template's (the Deployment habit). */}}
{{- define "gsw.groupOptedIn" -}}
{{- $label := printf "%s/enabled" (include "gsw.prefix" .) -}}
(has(object.metadata.labels) && '{{ $label }}' in object.metadata.labels && object.metadata.labels['{{ $label }}'] == 'true') ||
(has(object.spec.leaderWorkerTemplate) && has(object.spec.leaderWorkerTemplate.workerTemplate) &&
{{- include "gsw.templateOptedIn" (dict "root" . "template" "object.spec.leaderWorkerTemplate.workerTemplate") | nindent 1 }}) ||
(has(object.spec.leaderWorkerTemplate) && has(object.spec.leaderWorkerTemplate.leaderTemplate) &&
{{- include "gsw.templateOptedIn" (dict "root" . "template" "object.spec.leaderWorkerTemplate.leaderTemplate") | nindent 1 }})
{{- end -}}
