{{/* The chart's name, and the release's full name (at most 63 characters). */}}
{{- define "gpu-monitor-api.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "gpu-monitor-api.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "gpu-monitor-api.selectorLabels" -}}
app.kubernetes.io/name: {{ include "gpu-monitor-api.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "gpu-monitor-api.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "gpu-monitor-api.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "gpu-monitor-api.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "gpu-monitor-api.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The port scrapers use: the API port, or metrics.port when set. */}}
{{- define "gpu-monitor-api.metricsPortName" -}}
{{- if .Values.metrics.port }}metrics{{ else }}http{{ end }}
{{- end }}

{{/* Refuse settings that cannot work together, at render time. */}}
{{- define "gpu-monitor-api.validate" -}}
{{- $auth := .Values.prometheus.auth }}
{{- $ways := 0 }}
{{- if $auth.bearerToken.secretName }}{{ $ways = add1 $ways }}{{ end }}
{{- if $auth.serviceAccountToken }}{{ $ways = add1 $ways }}{{ end }}
{{- if $auth.basicAuth.secretName }}{{ $ways = add1 $ways }}{{ end }}
{{- if gt $ways 1 }}
{{- fail "prometheus.auth: choose one of bearerToken.secretName, serviceAccountToken and basicAuth.secretName" }}
{{- end }}
{{- if and .Values.prometheus.tls.ca.secretName .Values.prometheus.tls.ca.configMapName }}
{{- fail "prometheus.tls.ca: set secretName or configMapName, not both" }}
{{- end }}
{{- if and .Values.metrics.port (eq (int .Values.metrics.port) (int .Values.port)) }}
{{- fail "metrics.port must differ from port (0 serves /metrics on the API port)" }}
{{- end }}
{{- if and .Values.prometheus.headersSecret.secretName .Values.config.PROMETHEUS_HEADERS }}
{{- fail "set config.PROMETHEUS_HEADERS or prometheus.headersSecret, not both" }}
{{- end }}
{{- range $name, $_ := .Values.config }}
{{- if has $name (list "PORT" "METRICS_PORT" "PROMETHEUS_MULTIPROC_DIR" "METRICS_MAPPING_FILE") }}
{{- fail (printf "config.%s is set by the chart: use the chart's own value for it" $name) }}
{{- end }}
{{- if regexMatch "^PROMETHEUS_(BEARER_TOKEN|PASSWORD|USERNAME|CA_FILE|CLIENT_CERT|CLIENT_KEY)" $name }}
{{- fail (printf "config.%s: credentials come from Secrets (prometheus.auth, prometheus.tls)" $name) }}
{{- end }}
{{- end }}
{{- end }}
