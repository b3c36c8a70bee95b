{{/* Chart name, truncated to a DNS label. */}}
{{- define "wattcap.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: release-chart, unless the release name already has the chart's name. */}}
{{- define "wattcap.fullname" -}}
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

{{- define "wattcap.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "wattcap.selectorLabels" -}}
app.kubernetes.io/name: {{ include "wattcap.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "wattcap.labels" -}}
helm.sh/chart: {{ include "wattcap.chart" . }}
{{ include "wattcap.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: wattcap
{{- end }}

{{- define "wattcap.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "wattcap.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "wattcap.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{/* Identities the admission policies trust as the operator, as a CEL list literal. */}}
{{- define "wattcap.operatorUsers" -}}
{{- $sa := printf "system:serviceaccount:%s:%s" .Release.Namespace (include "wattcap.serviceAccountName" .) -}}
{{- prepend (.Values.admission.operatorUsers | default list) $sa | toJson -}}
{{- end }}

{{- define "wattcap.operatorGroups" -}}
{{- .Values.admission.operatorGroups | default list | toJson -}}
{{- end }}

{{/* CEL: the request comes from the operator. */}}
{{- define "wattcap.isOperator" -}}
(request.userInfo.username in {{ include "wattcap.operatorUsers" . }} || (has(request.userInfo.groups) && request.userInfo.groups.exists(g, g in {{ include "wattcap.operatorGroups" . }})))
{{- end }}

{{/* The namespaces the admission policies govern: the selector less the exempt ones. */}}
{{- define "wattcap.governedNamespaces" -}}
{{- $sel := .Values.admission.namespaceSelector | default dict -}}
{{- with $sel.matchLabels }}
matchLabels:
  {{- toYaml . | nindent 2 }}
{{- end }}
matchExpressions:
  {{- with $sel.matchExpressions }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
  - key: kubernetes.io/metadata.name
    operator: NotIn
    values:
      {{- toYaml (.Values.admission.exemptNamespaces | default (list "kube-system")) | nindent 6 }}
{{- end }}
