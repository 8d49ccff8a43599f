{{/*
Envoy's configuration: envoy/kubegate.yaml with its placeholders filled from values,
one route and one upstream cluster per configured cluster (as
kubegate_tests::envoy_config::add_cluster builds them), plus what a pod needs beyond
the template: a readiness listener on the pod IP answering kubelet from Envoy's
admin (which stays on loopback), and the serving certificate and client certificates
as SDS secrets re-read when their Secret changes, and with accessRequests.enabled or
discovery.enabled the routes to authz-server's HTTP API (access requests and their
console, resource discovery). tests/tests/helm_chart.rs checks that
the gateway listener and the clusters are exactly the template's.
*/}}
{{- define "kubegate.envoyConfig" -}}
{{- $p := .Values.paths -}}
{{- $e := .Values.envoy -}}
# Rendered by the kubegate Helm chart from envoy/kubegate.yaml; see the comments there.
node:
  id: kubegate-gateway
  cluster: kubegate

admin:
  address:
    socket_address: { address: 127.0.0.1, port_value: {{ $e.adminPort }} }

static_resources:
  listeners:
  - name: kubegate
    address:
      socket_address: { address: 0.0.0.0, port_value: {{ $e.port }} }
    filter_chains:
    - transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          common_tls_context:
            alpn_protocols: [h2, http/1.1]
            # The serving certificate, re-read when its Secret is updated (a move
            # into the directory, as kubelet updates a Secret volume).
            tls_certificate_sds_secret_configs:
            - name: serving-cert
              sds_config:
                path_config_source:
                  path: {{ $p.envoyConfig }}/serving-cert-sds.yaml
                  watched_directory: { path: {{ $p.tls }} }
      filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: kubegate
          # Before any route is chosen, a client's x-kubegate-cluster is gone: the first
          # route choice (made before any filter runs) can only be the refusing route,
          # so routing rests on the decision alone, even if a later Envoy stopped
          # re-picking the route when the filter sets the header.
          early_header_mutation_extensions:
          - name: envoy.http.early_header_mutation.header_mutation
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.http.early_header_mutation.header_mutation.v3.HeaderMutation
              mutations:
              - remove: x-kubegate-cluster
          codec_type: AUTO
          use_remote_address: true
          preserve_external_request_id: false
          stream_idle_timeout: {{ $e.streamIdleTimeout }}
          request_timeout: 0s
          upgrade_configs:
          - upgrade_type: websocket
          - upgrade_type: spdy/3.1
          http2_protocol_options:
            max_concurrent_streams: 256
          local_reply_config:
            mappers:
            - filter:
                and_filter:
                  filters:
                  - response_flag_filter: { flags: [UAEX] }
                  - status_code_filter:
                      comparison:
                        op: EQ
                        value: { default_value: 503, runtime_key: kubegate.authz_unavailable_status }
              body_format_override:
                content_type: application/json
                json_format:
                  kind: Status
                  apiVersion: v1
                  metadata: {}
                  status: Failure
                  reason: ServiceUnavailable
                  code: 503
                  message: "kubegate's authorization service is unavailable, so the gateway refuses all requests; try again shortly"
            - filter:
                response_flag_filter: { flags: [UF, UH, URX, UC, UT, UO] }
              body_format_override:
                content_type: application/json
                json_format:
                  kind: Status
                  apiVersion: v1
                  metadata: {}
                  status: Failure
                  reason: ServiceUnavailable
                  code: "%RESPONSE_CODE%"
                  message: "kubegate cannot reach the Kubernetes API server (%RESPONSE_CODE_DETAILS%)"
            - filter:
                status_code_filter:
                  comparison:
                    op: EQ
                    value: { default_value: 503, runtime_key: kubegate.filter_failed_status }
              body_format_override:
                content_type: application/json
                json_format:
                  kind: Status
                  apiVersion: v1
                  metadata: {}
                  status: Failure
                  reason: ServiceUnavailable
                  code: 503
                  message: "kubegate's gateway filter is recovering from a failure, so the gateway refuses requests for a moment; try again shortly (%RESPONSE_CODE_DETAILS%)"
          route_config:
            name: kubernetes
            virtual_hosts:
            - name: kubernetes
              domains: ["*"]
              # Routing follows authz-server's decision: the inject stage sets
              # x-kubegate-cluster to the decided cluster. One route per cluster, then
              # the refusal: without a decision, no upstream.
              routes:
              {{- $apiRoutes := list }}
              {{- if .Values.accessRequests.enabled }}
              {{- $apiRoutes = append $apiRoutes (list "kubegate-api" "/kubegate/v1/access/") }}
              {{- $apiRoutes = append $apiRoutes (list "kubegate-console" "/kubegate/console/") }}
              {{- end }}
              {{- if .Values.discovery.enabled }}
              {{- $apiRoutes = append $apiRoutes (list "kubegate-discovery" "/kubegate/v1/discovery/") }}
              {{- end }}
              {{- if $apiRoutes }}
              # First, kubegate's own APIs (access requests, discovery) and its web
              # console: to authz-server's HTTP listener (apiListen), with no filter of
              # the chain on them (no ext_authz: a request body never goes through it; no
              # impersonation, no gateway credential: that listener authenticates every
              # call by the user's own token). The routes are envoy/kubegate.yaml's. The
              # console (with its discovery pages, /kubegate/console/discovery) comes
              # with access requests only.
              {{- range $apiRoutes }}
              - name: {{ index . 0 }}
                match: { prefix: {{ index . 1 | quote }} }
                route:
                  cluster: kubegate_api
                  timeout: 10s
                request_headers_to_remove: [x-real-ip, forwarded]
                request_headers_to_add:
                - header: { key: x-forwarded-for, value: "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%" }
                  append_action: OVERWRITE_IF_EXISTS_OR_ADD
                typed_per_filter_config:
                  envoy.filters.http.ext_authz:
                    "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute
                    disabled: true
                  {{- range list "kubegate.strip" "kubegate.inject" }}
                  {{ . }}:
                    "@type": type.googleapis.com/envoy.config.route.v3.FilterConfig
                    disabled: true
                  {{- end }}
              {{- end }}
              {{- end }}
              {{- range .Values.clusters }}
              - name: cluster-{{ .name }}
                match:
                  prefix: "/"
                  headers:
                  - name: x-kubegate-cluster
                    string_match: { exact: {{ .name | quote }} }
                route:
                  cluster: kube_{{ .name }}
                  timeout: 0s
                request_headers_to_remove: [x-real-ip, forwarded, x-kubegate-cluster]
                request_headers_to_add:
                - header: { key: x-forwarded-for, value: "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%" }
                  append_action: OVERWRITE_IF_EXISTS_OR_ADD
              {{- end }}
              - name: no-decision
                match: { prefix: "/" }
                direct_response:
                  status: 404
                  body:
                    inline_string: '{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","reason":"NotFound","code":404,"message":"kubegate decided no cluster for this request"}'
                response_headers_to_add:
                - header: { key: content-type, value: application/json }
                  append_action: OVERWRITE_IF_EXISTS_OR_ADD
          http_filters:
          - name: kubegate.strip
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
              config:
                name: kubegate.strip
                root_id: kubegate
                configuration:
                  "@type": type.googleapis.com/google.protobuf.StringValue
                  value: '{"stage":"strip"}'
                failure_policy: FAIL_RELOAD
                reload_config: { backoff: { base_interval: 1s } }
                vm_config:
                  vm_id: kubegate.strip
                  runtime: envoy.wasm.runtime.v8
                  code: { local: { filename: {{ $p.wasm }}/kubegate_wasm_filter.wasm } }
          - name: envoy.filters.http.ext_authz
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz
              transport_api_version: V3
              failure_mode_allow: false
              status_on_error: { code: ServiceUnavailable }
              include_tls_session: true
              grpc_service:
                envoy_grpc: { cluster_name: kubegate_authz }
                timeout: {{ $e.authzTimeout }}
          - name: kubegate.inject
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
              config:
                name: kubegate.inject
                root_id: kubegate
                # grantStatusCluster: where the stage asks whether the access grants of
                # its running exec/attach/port-forward streams are still active (the
                # kubegate_api cluster below, with accessRequests.enabled; without it no
                # decision names a grant and nothing is asked).
                configuration:
                  "@type": type.googleapis.com/google.protobuf.StringValue
                  value: '{"stage":"inject","grantStatusCluster":"kubegate_api"}'
                failure_policy: FAIL_RELOAD
                reload_config: { backoff: { base_interval: 1s } }
                vm_config:
                  vm_id: kubegate.inject
                  runtime: envoy.wasm.runtime.v8
                  code: { local: { filename: {{ $p.wasm }}/kubegate_wasm_filter.wasm } }
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router

  # kubelet's readiness probe connects to the pod IP: this listener answers GET /ready
  # from Envoy's admin (LIVE once initialised, 503 while draining) and nothing else,
  # so the admin interface itself stays on loopback.
  - name: readiness
    address:
      socket_address: { address: 0.0.0.0, port_value: {{ $e.readinessPort }} }
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: readiness
          route_config:
            name: readiness
            virtual_hosts:
            - name: readiness
              domains: ["*"]
              routes:
              - match:
                  path: /ready
                  headers:
                  - name: ":method"
                    string_match: { exact: GET }
                route: { cluster: envoy_admin }
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router

  clusters:
  - name: kubegate_authz
    type: STRICT_DNS
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config:
          http2_protocol_options: {}
    load_assignment:
      cluster_name: kubegate_authz
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
              socket_address: { address: 127.0.0.1, port_value: {{ .Values.authz.port }} }

  - name: envoy_admin
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: envoy_admin
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
              socket_address: { address: 127.0.0.1, port_value: {{ $e.adminPort }} }
{{- if or .Values.accessRequests.enabled .Values.discovery.enabled }}

  # authz-server's HTTP API (access requests, discovery): plain HTTP/1.1 on loopback,
  # no credential of any cluster. The inject stage's grant checks use it too.
  - name: kubegate_api
    type: STRICT_DNS
    connect_timeout: 1s
    load_assignment:
      cluster_name: kubegate_api
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
              socket_address: { address: 127.0.0.1, port_value: {{ .Values.authz.apiPort }} }
{{- end }}
{{- range .Values.clusters }}
{{- $address := "" }}{{- $port := "" }}{{- $serverName := "" }}{{- $ca := "" }}{{- $tokenDir := "" }}
{{- if .inCluster }}
{{- $api := default dict .apiServer }}
{{- $address = default "kubernetes.default.svc" $api.address }}
{{- $port = toString (default 443 $api.port) }}
{{- $serverName = default "kubernetes.default.svc" $api.serverName }}
{{- $ca = printf "%s/ca.crt" $p.serviceAccount }}
{{- $tokenDir = $p.serviceAccount }}
{{- else }}
{{- $hp := splitList " " (include "kubegate.serverHostPort" .) }}
{{- $address = index $hp 0 }}
{{- $port = index $hp 1 }}
{{- $serverName = default $address .serverName }}
{{- $ca = printf "%s/%s/ca.crt" $p.clusterCredentials .name }}
{{- $tokenDir = printf "%s/%s" $p.clusterCredentials .name }}
{{- end }}

  - name: kube_{{ .name }}
    type: STRICT_DNS
    connect_timeout: 5s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        # HTTP/1.1 upstream: websocket and SPDY upgrades are HTTP/1.1 mechanisms.
        explicit_http_config:
          http_protocol_options: {}
        # This cluster's own credential, added on the way to this cluster only.
        http_filters:
        {{- if include "kubegate.usesToken" . }}
        - name: envoy.filters.http.credential_injector
          typed_config:
            "@type": type.googleapis.com/envoy.extensions.filters.http.credential_injector.v3.CredentialInjector
            overwrite: true
            allow_request_without_credential: false
            credential:
              name: envoy.http.injected_credentials.generic
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.http.injected_credentials.generic.v3.Generic
                header: Authorization
                header_value_prefix: "Bearer "
                credential:
                  name: gateway-token
                  sds_config:
                    # Re-read when a file is moved into the token's directory: how
                    # kubelet rotates a projected token and updates a Secret volume.
                    path_config_source:
                      path: {{ $p.envoyConfig }}/gateway-token-{{ .name }}-sds.yaml
                      watched_directory: { path: {{ $tokenDir }} }
        {{- end }}
        - name: envoy.filters.http.upstream_codec
          typed_config:
            "@type": type.googleapis.com/envoy.extensions.filters.http.upstream_codec.v3.UpstreamCodec
    load_assignment:
      cluster_name: kube_{{ .name }}
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
              socket_address: { address: {{ $address }}, port_value: {{ $port }} }
    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        {{- if eq (include "kubegate.sanType" $serverName) "DNS" }}
        sni: {{ $serverName }}
        {{- end }}
        common_tls_context:
          {{- if not (include "kubegate.usesToken" .) }}
          # The gateway's client certificate, re-read when its Secret is updated.
          tls_certificate_sds_secret_configs:
          - name: client-cert-{{ .name }}
            sds_config:
              path_config_source:
                path: {{ $p.envoyConfig }}/client-cert-{{ .name }}-sds.yaml
                watched_directory: { path: {{ $tokenDir }} }
          {{- end }}
          validation_context:
            trusted_ca: { filename: {{ $ca }} }
            match_typed_subject_alt_names:
            - san_type: {{ include "kubegate.sanType" $serverName }}
              matcher: { exact: {{ $serverName | quote }} }
{{- end }}
{{- end -}}

{{/* The SDS files beside envoy.yaml: one per token, client certificate, and the serving certificate. */}}
{{- define "kubegate.envoySdsFiles" -}}
{{- $p := .Values.paths -}}
serving-cert-sds.yaml: |
  resources:
  - "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret
    name: serving-cert
    tls_certificate:
      certificate_chain: { filename: {{ $p.tls }}/tls.crt }
      private_key: { filename: {{ $p.tls }}/tls.key }
{{- range .Values.clusters }}
{{- $dir := ternary $p.serviceAccount (printf "%s/%s" $p.clusterCredentials .name) (eq (toString .inCluster) "true") }}
{{- if include "kubegate.usesToken" . }}
gateway-token-{{ .name }}-sds.yaml: |
  resources:
  - "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret
    name: gateway-token
    generic_secret:
      secret:
        filename: {{ $dir }}/token
{{- else }}
client-cert-{{ .name }}-sds.yaml: |
  resources:
  - "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret
    name: client-cert-{{ .name }}
    tls_certificate:
      certificate_chain: { filename: {{ $dir }}/tls.crt }
      private_key: { filename: {{ $dir }}/tls.key }
{{- end }}
{{- end }}
{{- end -}}
