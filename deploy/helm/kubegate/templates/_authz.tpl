{{/*
authz-server's configuration file (docs/configuration.md), from values: the listen
addresses the pod's layout needs, the issuers (a `caFrom` becomes the file its
Secret or ConfigMap is mounted as), the clusters without the chart's own keys (how
Envoy reaches each is Envoy's side), roles, the policy directory, with
accessRequests.enabled the access-request API, store and workflows, and with
discovery.enabled the resource-discovery settings (and the API they are served on).
*/}}
{{- define "kubegate.authzConfig" -}}
{{- $p := .Values.paths -}}
{{- $a := .Values.authz -}}
{{- if eq .Values.mode "mesh" }}
# Mesh mode: your Envoys call authz-server over the network, with mutual TLS.
listen: 0.0.0.0:{{ $a.port }}
grpcTls:
  certFile: {{ $p.grpcTls }}/tls.crt
  keyFile: {{ $p.grpcTls }}/tls.key
  clientCaFile: {{ $p.grpcTls }}/ca.crt
{{- else }}
# Beside Envoy on loopback: the ext_authz channel never leaves the pod.
listen: 127.0.0.1:{{ $a.port }}
{{- end }}
metricsListen: 0.0.0.0:{{ $a.metricsPort }}
healthListen: 0.0.0.0:{{ $a.healthPort }}
{{- if or .Values.accessRequests.enabled .Values.discovery.enabled }}
# kubegate's HTTP API, on loopback: Envoy in this pod routes to it
{{- if .Values.accessRequests.enabled }}
# /kubegate/v1/access/ and /kubegate/console/ (access requests, docs/access-requests.md)
{{- end }}
{{- if .Values.discovery.enabled }}
# /kubegate/v1/discovery/ (resource discovery, docs/discovery.md)
{{- end }}
# (Gateway mode only: validate.yaml refuses both in mesh mode.)
apiListen: 127.0.0.1:{{ $a.apiPort }}
{{- end }}
{{- with $a.settings }}
{{ toYaml . }}
{{- end }}
policyFiles: [{{ $p.policies }}]
clusters:
{{- range .Values.clusters }}
- name: {{ .name }}
  {{- with .hosts }}
  hosts: {{ toJson . }}
  {{- end }}
  {{- with .tags }}
  tags: {{ toJson . }}
  {{- end }}
  identityMode: {{ default "impersonate" .identityMode }}
  {{- if hasKey . "includeIdpGroups" }}
  includeIdpGroups: {{ .includeIdpGroups }}
  {{- end }}
  {{- if hasKey . "includeRoleNames" }}
  includeRoleNames: {{ .includeRoleNames }}
  {{- end }}
  {{- if eq (default "impersonate" .identityMode) "leasedWithLevels" }}
  gatewayUser: {{ include "kubegate.gatewayUser" (dict "root" $ "cluster" .) | quote }}
  {{- end }}
  {{- if eq $.Values.mode "gateway" }}
  # authz-server's own way to this API server, with the credential Envoy uses: for the
  # upstream health check (kubegate_upstream_up), `kubegate doctor` and resource
  # discovery.
  upstream:
    {{- if .inCluster }}
    inCluster: true
    {{- with .apiServer }}
    {{- if .address }}
    server: https://{{ .address }}:{{ default 443 .port }}
    {{- end }}
    {{- end }}
    caFile: {{ $p.serviceAccount }}/ca.crt
    tokenFile: {{ $p.serviceAccount }}/token
    {{- else }}
    server: {{ .server }}
    caFile: {{ $p.clusterCredentials }}/{{ .name }}/ca.crt
    {{- if eq (default "token" .credential) "clientCertificate" }}
    clientCertFile: {{ $p.clusterCredentials }}/{{ .name }}/tls.crt
    clientKeyFile: {{ $p.clusterCredentials }}/{{ .name }}/tls.key
    {{- else }}
    tokenFile: {{ $p.clusterCredentials }}/{{ .name }}/token
    {{- end }}
    {{- end }}
    healthCheck:
      namespace: {{ $.Values.healthCheck.namespace }}
  {{- end }}
{{- end }}
{{- with .Values.roles }}
roles:
{{ toYaml . }}
{{- end }}
{{- if .Values.accessRequests.enabled }}
# AccessRequest objects (accessrequests.kubegate.dev) in the cluster kubegate runs in;
# approvals and grants signed with the key mounted from the chart's Secret.
accessRequests:
  cluster: {{ include "kubegate.inClusterName" . }}
  namespace: {{ include "kubegate.accessRequests.namespace" . }}
  signingKeyFile: {{ $p.accessRequests }}/signing-key
  {{- with .Values.accessRequests.console }}
  {{- if .enabled }}
  # The web console (/kubegate/console/): login with this client of the issuer.
  console:
    clientId: {{ .clientId | quote }}
    {{- with .issuer }}
    issuer: {{ . | quote }}
    {{- end }}
    url: {{ default (printf "https://%s" $.Values.host) .url | quote }}
  {{- end }}
  {{- end }}
{{- with .Values.accessRequests.workflows }}
workflows:
{{ toYaml . }}
{{- else }}
workflows: []
{{- end }}
{{- end }}
{{- with .Values.discovery }}
{{- if .enabled }}
# Resource discovery (docs/discovery.md): each discovered cluster's RBAC, read through
# its `upstream` (the credential Envoy uses there). Read at start only.
discovery:
  dropAfter: {{ default "6h" .dropAfter | quote }}
  {{- with .clusters }}
  clusters: {{ toJson . }}
  {{- end }}
{{- end }}
{{- end }}
issuers:
{{- range $i, $issuer := .Values.issuers }}
- {{ omit $issuer "caFrom" | toYaml | indent 2 | trim }}
  {{- with $issuer.caFrom }}
  caFile: {{ printf "%s/%d/%s" $p.issuerCAs $i (default "ca.crt" .key) }}
  {{- end }}
{{- end }}
{{- end -}}
