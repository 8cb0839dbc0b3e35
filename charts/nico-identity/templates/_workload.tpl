{{/*
The objects approver, issuer and webhook share. Each helper takes the role dict:
(dict "root" $ "role" "<role>" "values" <the role's values> "key" "<values key>") plus, for
the Deployment, "config" (the configuration document as JSON).
*/}}

{{- define "nico-identity.serviceAccount" -}}
{{- if .values.serviceAccount.create }}
apiVersion: v1
kind: ServiceAccount
metadata:
  name: {{ include "nico-identity.serviceAccountName" . }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "nico-identity.roleLabels" . | nindent 4 }}
  {{- with .values.serviceAccount.annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
{{- end }}

{{/* A binding of the role's ClusterRole or Role (kind) to its account. */}}
{{- define "nico-identity.binding" -}}
apiVersion: rbac.authorization.k8s.io/v1
kind: {{ .kind }}Binding
metadata:
  name: {{ .name }}
  {{- if eq .kind "Role" }}
  namespace: {{ .namespace | default .ctx.root.Release.Namespace }}
  {{- end }}
  labels:
    {{- include "nico-identity.roleLabels" .ctx | nindent 4 }}
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: {{ .kind }}
  name: {{ .name }}
subjects:
  - kind: ServiceAccount
    name: {{ include "nico-identity.serviceAccountName" .ctx }}
    namespace: {{ .ctx.root.Release.Namespace }}
{{- end }}

{{/* The Lease a leader-elected role holds, by name, in the release namespace. */}}
{{- define "nico-identity.leaseRules" -}}
- apiGroups: [coordination.k8s.io]
  resources: [leases]
  verbs: [create]
- apiGroups: [coordination.k8s.io]
  resources: [leases]
  resourceNames: [{{ include "nico-identity.roleName" . }}]
  verbs: [get, update, patch, delete]
{{- end }}

{{- define "nico-identity.podDisruptionBudget" -}}
{{- if and .values.podDisruptionBudget.enabled (gt (int .values.replicas) 1) }}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "nico-identity.roleName" . }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "nico-identity.roleLabels" . | nindent 4 }}
spec:
  maxUnavailable: {{ .values.podDisruptionBudget.maxUnavailable }}
  selector:
    matchLabels:
      {{- include "nico-identity.selectorLabels" . | nindent 6 }}
{{- end }}
{{- end }}

{{/* The Service in front of /metrics (and, for the webhook, its HTTPS port). */}}
{{- define "nico-identity.service" -}}
apiVersion: v1
kind: Service
metadata:
  name: {{ include "nico-identity.roleName" . }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "nico-identity.roleLabels" . | nindent 4 }}
spec:
  type: ClusterIP
  selector:
    {{- include "nico-identity.selectorLabels" . | nindent 4 }}
  ports:
    {{- if eq .role "webhook" }}
    - {name: https, port: 443, targetPort: https, protocol: TCP}
    {{- end }}
    - {name: metrics, port: 9402, targetPort: health, protocol: TCP}
{{- end }}

{{- define "nico-identity.deployment" -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "nico-identity.roleName" . }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "nico-identity.roleLabels" . | nindent 4 }}
spec:
  replicas: {{ .values.replicas }}
  selector:
    matchLabels:
      {{- include "nico-identity.selectorLabels" . | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "nico-identity.selectorLabels" . | nindent 8 }}
        {{- with .values.podLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      annotations:
        checksum/config: {{ .config | sha256sum }}
        {{- with .values.podAnnotations }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    spec:
      serviceAccountName: {{ include "nico-identity.serviceAccountName" . }}
      enableServiceLinks: false
      securityContext:
        runAsNonRoot: true
        seccompProfile: {type: RuntimeDefault}
      {{- include "nico-identity.scheduling" . | nindent 6 }}
      containers:
        - name: {{ .role }}
          image: {{ include "nico-identity.image" .root }}
          imagePullPolicy: {{ .root.Values.image.pullPolicy }}
          args: [{{ .role }}, --config, /etc/nico-identity/config.toml]
          env:
            {{- include "nico-identity.podEnv" . | nindent 12 }}
          ports:
            {{- if eq .role "webhook" }}
            - {name: https, containerPort: 9443, protocol: TCP}
            {{- end }}
            - {name: health, containerPort: 9402, protocol: TCP}
          {{- include "nico-identity.probes" . | nindent 10 }}
          {{- include "nico-identity.restrictedContainer" . | nindent 10 }}
          resources:
            {{- toYaml .values.resources | nindent 12 }}
          volumeMounts:
            - name: config
              mountPath: /etc/nico-identity
              readOnly: true
            {{- if and (eq .role "issuer") .values.vaultToken.enabled }}
            - name: vault-token
              mountPath: /var/run/secrets/tokens
              readOnly: true
            {{- end }}
            {{- with .values.extraVolumeMounts }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
      volumes:
        - name: config
          configMap:
            name: {{ include "nico-identity.roleName" . }}
        {{- if and (eq .role "issuer") .values.vaultToken.enabled }}
        - name: vault-token
          projected:
            sources:
              - serviceAccountToken:
                  path: vault-token
                  audience: {{ .values.vaultToken.audience }}
                  expirationSeconds: {{ .values.vaultToken.expirationSeconds }}
        {{- end }}
        {{- with .values.extraVolumes }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
{{- end }}

{{/* Where the API server reaches a webhook: (dict "name" "namespace" "path"). */}}
{{- define "nico-identity.webhookClient" -}}
clientConfig:
  service:
    name: {{ .name }}
    namespace: {{ .namespace }}
    path: {{ .path }}
    port: 443
{{- end }}
