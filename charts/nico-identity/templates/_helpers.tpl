{{/* Names, labels, pod boilerplate and the TOML writer shared by every role. */}}

{{- define "nico-identity.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's base name; role objects append -<role>, so it stays under 50. */}}
{{- define "nico-identity.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* The name of a role's objects; call with (dict "root" $ "role" "approver"). */}}
{{- define "nico-identity.roleName" -}}
{{- printf "%s-%s" (include "nico-identity.fullname" .root) .role }}
{{- end }}

{{- define "nico-identity.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "nico-identity.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: nico-identity
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Labels of a role's objects; call with (dict "root" $ "role" "approver"). */}}
{{- define "nico-identity.roleLabels" -}}
{{ include "nico-identity.labels" .root }}
app.kubernetes.io/component: {{ .role }}
{{- end }}

{{/* What a role's Services, PDBs and Deployments select. */}}
{{- define "nico-identity.selectorLabels" -}}
app.kubernetes.io/name: {{ include "nico-identity.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .role }}
{{- end }}

{{/* The account a role runs as; values is the role's section. */}}
{{- define "nico-identity.serviceAccountName" -}}
{{- if .values.serviceAccount.create }}
{{- default (include "nico-identity.roleName" .) .values.serviceAccount.name }}
{{- else }}
{{- required (printf "%s.serviceAccount.name is required when serviceAccount.create is false" .key) .values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "nico-identity.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/* The account string of the csi-node, as the API server names it. */}}
{{- define "nico-identity.csiNodeUser" -}}
{{- $sa := include "nico-identity.serviceAccountName" (dict "root" . "role" "csi-node" "values" .Values.csiNode "key" "csiNode") }}
{{- printf "system:serviceaccount:%s:%s" .Release.Namespace $sa }}
{{- end }}

{{/* The RBAC resource name of a signer: <kinds>.<group>/[<namespace>.]<name>. */}}
{{- define "nico-identity.signer" -}}
{{- $kind := default "Issuer" .kind }}
{{- $group := default "cert-manager.io" .group }}
{{- if eq $kind "Issuer" }}
{{- printf "issuers.%s/%s.%s" $group (required "a namespaced Issuer signer needs a namespace" .namespace) .name }}
{{- else }}
{{- printf "%ss.%s/%s" (lower $kind) $group .name }}
{{- end }}
{{- end }}

{{/* The top-level keys every role's configuration file starts with. */}}
{{- define "nico-identity.commonConfig" -}}
{{- dict "log_format" .Values.logFormat "log_filter" .Values.logFilter "health_address" "0.0.0.0:9402" | toJson }}
{{- end }}

{{/*
A TOML document from a map: scalars and arrays of scalars as `key = <JSON>` (JSON strings,
numbers, booleans and arrays are TOML too), nested maps as [tables], lists of maps as
[[arrays of tables]], nulls left out. Call with (dict "table" $map "path" "").
*/}}
{{- define "nico-identity.toml" -}}
{{- $path := .path }}
{{- range $key, $value := .table }}
{{- $tables := and (kindIs "slice" $value) (gt (len $value) 0) (kindIs "map" (first $value)) }}
{{- if not (or (kindIs "map" $value) $tables (kindIs "invalid" $value)) }}
{{ $key }} = {{ toJson $value }}
{{- end }}
{{- end }}
{{- range $key, $value := .table }}
{{- $name := ternary $key (printf "%s.%s" $path $key) (eq $path "") }}
{{- if kindIs "map" $value }}

[{{ $name }}]
{{- include "nico-identity.toml" (dict "table" $value "path" $name) }}
{{- else if and (kindIs "slice" $value) (gt (len $value) 0) (kindIs "map" (first $value)) }}
{{- range $value }}

[[{{ $name }}]]
{{- include "nico-identity.toml" (dict "table" . "path" $name) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The pod-level parts every role shares: the account, no service-link variables (NICO_*
variables are configuration), the config volume. Call with the role dict.
*/}}
{{- define "nico-identity.podEnv" -}}
- name: NICO_POD_NAME
  valueFrom:
    fieldRef: {fieldPath: metadata.name}
- name: NICO_POD_NAMESPACE
  valueFrom:
    fieldRef: {fieldPath: metadata.namespace}
{{- with .values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* The health port and its probes. */}}
{{- define "nico-identity.probes" -}}
livenessProbe:
  httpGet: {path: /healthz, port: health}
  periodSeconds: 10
  failureThreshold: 3
readinessProbe:
  httpGet: {path: /readyz, port: health}
  periodSeconds: 5
  failureThreshold: 2
{{- end }}

{{/* The container hardening of every role but csi-node. */}}
{{- define "nico-identity.restrictedContainer" -}}
securityContext:
  runAsNonRoot: true
  runAsUser: 65532
  runAsGroup: 65532
  allowPrivilegeEscalation: false
  readOnlyRootFilesystem: true
  capabilities: {drop: [ALL]}
  seccompProfile: {type: RuntimeDefault}
{{- end }}

{{/* Scheduling fields of a role's pod. */}}
{{- define "nico-identity.scheduling" -}}
{{- with .values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.topologySpreadConstraints }}
topologySpreadConstraints:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/*
A role's ConfigMap holding config.toml; call with (dict "root" $ "role" "approver" "config"
<the document as JSON>).
*/}}
{{- define "nico-identity.configMap" -}}
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ include "nico-identity.roleName" . }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "nico-identity.roleLabels" . | nindent 4 }}
data:
  config.toml: |
    # nico-identity {{ .role }}, rendered by the chart from its values.
    {{- include "nico-identity.toml" (dict "table" (.config | fromJson) "path" "") | trim | nindent 4 }}
{{- end }}
