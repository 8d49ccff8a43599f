{{/* Names, labels and the few facts several templates share. */}}

{{- define "kubegate.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "kubegate.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "kubegate.labels" -}}
{{ include "kubegate.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "kubegate.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "kubegate.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name: name the existing service account when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The user name Kubernetes gives this chart's service account. */}}
{{- define "kubegate.serviceAccountUser" -}}
{{- printf "system:serviceaccount:%s:%s" .Release.Namespace (include "kubegate.serviceAccountName" .) -}}
{{- end -}}

{{/* An image reference: repository:tag, and @digest when one is pinned. */}}
{{- define "kubegate.image" -}}
{{- $ref := printf "%s:%s" .image.repository (default .appVersion .image.tag) -}}
{{- if .image.digest -}}{{- $ref = printf "%s@%s" $ref .image.digest -}}{{- end -}}
{{- $ref -}}
{{- end -}}

{{/*
The impersonation extras keys authz-server sends (decision/src/lib.rs, the `*_EXTRA`
constants): the gateway needs `impersonate` on `userextras/<key>` for each.
tests/tests/helm_chart.rs compares this list with the code, so a key added there
without RBAC here fails the tests.
*/}}
{{- define "kubegate.extraKeys" -}}
- kubegate.dev/request-id
- kubegate.dev/grant-id
{{- end -}}

{{/* The Secret holding the gateway's serving certificate. */}}
{{- define "kubegate.tlsSecretName" -}}
{{- if .Values.tls.certManager.enabled -}}
{{- printf "%s-tls" (include "kubegate.fullname" .) -}}
{{- else -}}
{{- .Values.tls.secretName -}}
{{- end -}}
{{- end -}}

{{/* The gateway user of a cluster in leasedWithLevels mode: its own, else this chart's service account. */}}
{{- define "kubegate.gatewayUser" -}}
{{- default (include "kubegate.serviceAccountUser" .root) .cluster.gatewayUser -}}
{{- end -}}

{{/*
A remote cluster's API server, from its `server` URL: "host port". An IPv6 host keeps
no brackets. Port 443 unless given.
*/}}
{{- define "kubegate.serverHostPort" -}}
{{- $url := urlParse .server -}}
{{- $hostport := $url.host -}}
{{- $host := $hostport -}}
{{- $port := "443" -}}
{{- if hasPrefix "[" $hostport -}}
{{- $host = regexReplaceAll "^\\[(.*)\\].*$" $hostport "${1}" -}}
{{- if regexMatch "\\]:[0-9]+$" $hostport -}}{{- $port = regexReplaceAll "^.*\\]:([0-9]+)$" $hostport "${1}" -}}{{- end -}}
{{- else if contains ":" $hostport -}}
{{- $host = regexReplaceAll ":[0-9]+$" $hostport "" -}}
{{- $port = regexReplaceAll "^.*:([0-9]+)$" $hostport "${1}" -}}
{{- end -}}
{{- printf "%s %s" $host $port -}}
{{- end -}}

{{/* IP_ADDRESS when the host is an IPv4 or IPv6 address, else DNS. */}}
{{- define "kubegate.sanType" -}}
{{- if or (regexMatch "^[0-9]+\\.[0-9]+\\.[0-9]+\\.[0-9]+$" .) (contains ":" .) -}}IP_ADDRESS{{- else -}}DNS{{- end -}}
{{- end -}}

{{/* Whether any in-cluster cluster uses `mode` (impersonate, leasedWithLevels, leased). */}}
{{- define "kubegate.inClusterModes" -}}
{{- $modes := list -}}
{{- range .Values.clusters -}}
{{- if .inCluster -}}{{- $modes = append $modes (default "impersonate" .identityMode) -}}{{- end -}}
{{- end -}}
{{- $modes | uniq | join "," -}}
{{- end -}}

{{/* Clusters whose credential is a token (in-cluster, or a remote one with `credential: token`). */}}
{{- define "kubegate.usesToken" -}}
{{- if or .inCluster (ne (default "token" .credential) "clientCertificate") -}}true{{- end -}}
{{- end -}}

{{/* The name of the cluster kubegate runs in (its inCluster entry), or nothing. */}}
{{- define "kubegate.inClusterName" -}}
{{- range .Values.clusters -}}
{{- if .inCluster -}}{{- .name -}}{{- end -}}
{{- end -}}
{{- end -}}

{{/* Access requests: the namespace their AccessRequest objects live in. */}}
{{- define "kubegate.accessRequests.namespace" -}}
{{- default .Release.Namespace .Values.accessRequests.namespace -}}
{{- end -}}

{{/* Access requests: the Secret holding the signing key (`signing-key`). */}}
{{- define "kubegate.accessRequests.signingKeySecret" -}}
{{- default (printf "%s-access-signing-key" (include "kubegate.fullname" .)) .Values.accessRequests.signingKeySecret -}}
{{- end -}}
