{{/*
Each role's configuration file, as the binary reads it (`nico-identity <role> --config`):
the keys the roles must agree on come from the top-level values, the role's `config` map
adds the rest. Every helper returns the whole document as JSON for the TOML writer.
*/}}

{{- define "nico-identity.issuerRef" -}}
{{- dict "name" .name "kind" .kind "group" .group | toJson }}
{{- end }}

{{/* The key algorithms csi-node may request: its default and the per-volume choices. */}}
{{- define "nico-identity.requestedKeys" -}}
{{- prepend .Values.csiNode.allowedKeyAlgorithms .Values.csiNode.keyAlgorithm | uniq | toJson }}
{{- end }}

{{- define "nico-identity.csiNodeConfig" -}}
{{- $v := .Values }}
{{- $plugin := printf "%s/plugins/%s" $v.kubeletDir $v.driverName }}
{{- $section := dict
  "driver_name" $v.driverName
  "endpoint" (printf "%s/csi.sock" $plugin)
  "trust_domain" $v.trustDomain
  "id_template" $v.idTemplate
  "issuer" (include "nico-identity.issuerRef" $v.spiffeIssuer | fromJson)
  "duration" $v.csiNode.duration
  "key_algorithm" $v.csiNode.keyAlgorithm
  "allowed_key_algorithms" $v.csiNode.allowedKeyAlgorithms
  "token_audience" ""
  "request_identity" $v.requestIdentity
  "state_dir" $plugin
  "target_roots" (list (printf "%s/pods" $v.kubeletDir))
  "mount" true
  "registration" (dict
    "enabled" true
    "socket" (printf "/registration/%s-reg.sock" $v.driverName)
    "kubelet_endpoint" (printf "%s/csi.sock" $plugin))
}}
{{- with $v.csiNode.issuerConfigMap }}
{{- $_ := set $section "issuer_config_map" (dict "namespace" $.Release.Namespace "name" .) }}
{{- end }}
{{- with $v.csiNode.trustBundle.configMap }}
{{- if .name }}
{{- $map := dict "namespace" (default $.Release.Namespace .namespace) "name" .name "key" .key }}
{{- $_ := set $section "trust_bundle" (dict "config_map" $map) }}
{{- end }}
{{- end }}
{{- $section = mustMergeOverwrite $section (deepCopy $v.csiNode.config) }}
{{- $doc := include "nico-identity.commonConfig" . | fromJson }}
{{- $_ := set $doc "csi_node" $section }}
{{- toJson $doc }}
{{- end }}

{{- define "nico-identity.approverConfig" -}}
{{- $v := .Values }}
{{- $keys := $v.approver.keyAlgorithms }}
{{- if not $keys }}
{{- $keys = include "nico-identity.requestedKeys" . | fromJsonArray }}
{{- end }}
{{- $section := dict
  "trust_domain" $v.trustDomain
  "id_template" $v.idTemplate
  "issuer" (include "nico-identity.issuerRef" $v.spiffeIssuer | fromJson)
  "key_algorithms" $keys
  "requester" $v.requestIdentity
  "leader_election" true
  "lease_name" (include "nico-identity.roleName" (dict "root" . "role" "approver"))
}}
{{- if eq $v.requestIdentity "driver" }}
{{- $_ := set $section "driver_accounts" (list (include "nico-identity.csiNodeUser" .)) }}
{{- end }}
{{- $section = mustMergeOverwrite $section (deepCopy $v.approver.config) }}
{{- $doc := include "nico-identity.commonConfig" . | fromJson }}
{{- $_ := set $doc "approver" $section }}
{{- toJson $doc }}
{{- end }}

{{/* The Secret of the local CA, in the release namespace. */}}
{{- define "nico-identity.caSecretName" -}}
{{- default (printf "%s-ca" (include "nico-identity.fullname" .)) .Values.issuer.localCA.secretName }}
{{- end }}

{{- define "nico-identity.issuerConfig" -}}
{{- $v := .Values }}
{{- $issuers := list }}
{{- if $v.issuer.localCA.enabled }}
{{- $ca := dict
  "secret" (printf "%s/%s" .Release.Namespace (include "nico-identity.caSecretName" .))
  "generate" $v.issuer.localCA.generate
  "validity" $v.issuer.localCA.validity
}}
{{- $spiffe := include "nico-identity.issuerRef" $v.spiffeIssuer | fromJson }}
{{- $issuers = append $issuers (set $spiffe "local_ca" $ca) }}
{{- end }}
{{- $issuers = concat $issuers (deepCopy $v.issuer.extraIssuers) }}
{{- $section := dict
  "issuers" $issuers
  "leader_election" true
  "lease_name" (include "nico-identity.roleName" (dict "root" . "role" "issuer"))
}}
{{- $section = mustMergeOverwrite $section (deepCopy $v.issuer.config) }}
{{- $doc := include "nico-identity.commonConfig" . | fromJson }}
{{- $_ := set $doc "issuer" $section }}
{{- toJson $doc }}
{{- end }}

{{- define "nico-identity.webhookConfig" -}}
{{- $v := .Values }}
{{- $name := include "nico-identity.roleName" (dict "root" . "role" "webhook") }}
{{- /* The chart owns the webhook configurations; the role only writes their caBundle. */}}
{{- $section := dict
  "listen_address" "0.0.0.0:9443"
  "service_name" $name
  "service_namespace" .Release.Namespace
  "service_port" 443
  "configuration_name" $name
  "manage_configurations" false
  "ca_secret" (printf "%s-ca" $name)
  "timeout_seconds" $v.webhook.timeoutSeconds
  "inject" (dict
    "enabled" $v.webhook.injection.enabled
    "driver_name" $v.driverName
    "mount_path" $v.webhook.injection.mountPath)
}}
{{- $section = mustMergeOverwrite $section (deepCopy $v.webhook.config) }}
{{- $doc := include "nico-identity.commonConfig" . | fromJson }}
{{- $_ := set $doc "webhook" $section }}
{{- toJson $doc }}
{{- end }}
