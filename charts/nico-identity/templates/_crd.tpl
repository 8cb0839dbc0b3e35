{{/* Schema pieces the CertificateRequestPolicy CRD repeats. */}}

{{- define "nico-identity.crdAllowedString" -}}
type: object
properties:
  value: {type: string}
  required: {type: boolean}
  validations: {{ include "nico-identity.crdValidations" . }}
{{- end }}
{{- define "nico-identity.crdAllowedStrings" -}}
type: object
properties:
  values:
    type: array
    items: {type: string}
  required: {type: boolean}
  validations: {{ include "nico-identity.crdValidations" . }}
{{- end }}
{{- define "nico-identity.crdValidations" -}}
{type: array, items: {type: object, required: [rule], properties: {rule: {type: string}, message: {type: string}}}}
{{- end }}
