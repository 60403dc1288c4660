{{/* Name of the release's objects: the release name, with the chart name unless it holds it. */}}
{{- define "cs.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end }}

{{/* Labels of every object. */}}
{{- define "cs.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end }}

{{/* Selector labels of one role's pods; call with (dict "ctx" $ "role" "web"). */}}
{{- define "cs.selector" -}}
app.kubernetes.io/name: {{ .ctx.Chart.Name }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .role }}
{{- end }}

{{/* All labels of one role's objects; call with (dict "ctx" $ "role" "web"). */}}
{{- define "cs.roleLabels" -}}
{{ include "cs.labels" .ctx }}
app.kubernetes.io/component: {{ .role }}
{{- end }}

{{/* Name of one role's objects (ServiceAccount, Deployment, Service, RBAC). */}}
{{- define "cs.roleName" -}}
{{- printf "%s-%s" (include "cs.fullname" .ctx) .role -}}
{{- end }}

{{- define "cs.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}
{{- end }}

{{/* Annotations that tell checkov (`checkov -d manifests --framework kubernetes`) which of its
checks a role fails by design, and why; call with (dict "ctx" $ "role" "agent"). A run then fails
only on something new. */}}
{{- define "cs.checkovSkips" -}}
{{- $skips := dict
  "CKV_K8S_11" "CPU limits throttle a role that serves people (CFS quota); its request gives it its share. Set <role>.resources.limits.cpu to cap it"
  "CKV_K8S_15" "each release has a tag of its own (or image.digest): IfNotPresent starts pods while the registry is down; image.pullPolicy changes it"
  "CKV_K8S_38" "every role is a client of the Kubernetes API, with a ServiceAccount of its own and least-privilege RBAC" }}
{{- if not .ctx.Values.image.digest }}
{{- $_ := set $skips "CKV_K8S_43" "pinned by the chart's version tag; set image.digest to pin it by digest" }}
{{- end }}
{{- if eq .role "agent" }}
{{- $_ := set $skips "CKV_K8S_19" "the servers' firewall (iptables rules) lives in the host's network namespace (docs/admin-guide.md: Isolation)" }}
{{- $_ := set $skips "CKV_K8S_23" "uid 0: it uses the host's Docker socket and runs iptables, with no capability but NET_ADMIN and NET_RAW" }}
{{- $_ := set $skips "CKV_K8S_40" "uid 0: it uses the host's Docker socket and runs iptables, with no capability but NET_ADMIN and NET_RAW" }}
{{- $_ := set $skips "CKV_K8S_25" "NET_ADMIN and NET_RAW for the servers' networks and firewall, nothing else" }}
{{- $_ := set $skips "CKV_K8S_27" "the agent's job is to drive the host's Docker engine, through its socket" }}
{{- end }}
{{- $n := 0 }}
{{- range $id := keys $skips | sortAlpha }}
{{- $n = add1 $n }}
checkov.io/skip{{ $n }}: {{ printf "%s=%s" $id (index $skips $id) | quote }}
{{- end }}
{{- end }}

{{- define "cs.serversNamespace" -}}
{{- .Values.serversNamespace | default .Release.Namespace -}}
{{- end }}

{{- define "cs.leaseNamespace" -}}
{{- .Values.leaseNamespace | default .Release.Namespace -}}
{{- end }}

{{/* The Lease the scheduler replicas elect their leader with. */}}
{{- define "cs.schedulerLease" -}}
compute-server-scheduler
{{- end }}

{{- define "cs.sessionKeySecret" -}}
{{- .Values.web.sessionKey.existingSecret | default (printf "%s-web-session" (include "cs.fullname" .)) -}}
{{- end }}

{{- define "cs.hostKeySecret" -}}
{{- .Values.bastion.hostKey.existingSecret | default (printf "%s-bastion-host-key" (include "cs.fullname" .)) -}}
{{- end }}

{{- define "cs.issuer" -}}
{{- $url := required "keycloak.url is not set: give Keycloak's base URL as browsers reach it, such as --set keycloak.url=https://keycloak.example.com" .Values.keycloak.url -}}
{{- printf "%s/realms/%s" (trimSuffix "/" $url) .Values.keycloak.realm -}}
{{- end }}

{{- define "cs.publicUrl" -}}
{{- if .Values.web.publicUrl -}}
{{- .Values.web.publicUrl -}}
{{- else if .Values.web.ingress.enabled -}}
{{- printf "%s://%s" (ternary "https" "http" (ne .Values.web.ingress.tlsSecret "")) .Values.web.ingress.host -}}
{{- else -}}
http://127.0.0.1:{{ .Values.web.service.port }}
{{- end -}}
{{- end }}

{{/* Pod security context of the roles that need nothing from their node. */}}
{{- define "cs.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* Container security context of every role. */}}
{{- define "cs.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
capabilities:
  drop: [ALL]
{{- end }}

{{/* Environment every role shares. */}}
{{- define "cs.commonEnv" -}}
- name: COMPUTE_SERVER_LOG_FORMAT
  value: {{ .Values.logFormat | quote }}
- name: RUST_LOG
  value: {{ .Values.logLevel | quote }}
{{- end }}

{{/* Pod metadata shared by the roles; call with (dict "ctx" $ "role" "web"). */}}
{{- define "cs.podMetadata" -}}
labels:
  {{- include "cs.roleLabels" . | nindent 2 }}
  {{- with .ctx.Values.podLabels }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- with .ctx.Values.podAnnotations }}
annotations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* Scheduling values of one role; call with the role's values. */}}
{{- define "cs.scheduling" -}}
{{- with .nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* Liveness and readiness probes on a named port. */}}
{{- define "cs.probes" -}}
livenessProbe:
  httpGet: {path: /healthz, port: {{ . }}}
  periodSeconds: 10
  failureThreshold: 3
readinessProbe:
  httpGet: {path: /readyz, port: {{ . }}}
  periodSeconds: 5
  failureThreshold: 2
{{- end }}

{{/* A map as k=v,k2=v2 (sorted). */}}
{{- define "cs.pairs" -}}
{{- $pairs := list }}
{{- range $k, $v := . }}
{{- $pairs = append $pairs (printf "%s=%s" $k (toString $v)) }}
{{- end }}
{{- join "," $pairs -}}
{{- end }}

{{/* Name of one role's ServiceAccount: <role>.serviceAccountName, else the role's name; call
with (dict "ctx" $ "role" "web"). */}}
{{- define "cs.serviceAccountName" -}}
{{- (index .ctx.Values .role).serviceAccountName | default (include "cs.roleName" .) -}}
{{- end }}

{{/* The user name the API server gives one role's ServiceAccount; call as cs.serviceAccountName. */}}
{{- define "cs.serviceAccountUser" -}}
{{- printf "system:serviceaccount:%s:%s" .ctx.Release.Namespace (include "cs.serviceAccountName" .) -}}
{{- end }}

{{/* The user CA Secret's key `key` mounted at /etc/compute-server/user-ca (browser sessions). */}}
{{- define "cs.userCaMount" -}}
{{- if .ctx.Values.browserSessions.userCaSecret }}
volumeMounts:
  - {name: user-ca, mountPath: /etc/compute-server/user-ca, readOnly: true}
{{- end }}
{{- end }}

{{- define "cs.userCaVolume" -}}
{{- with .ctx.Values.browserSessions.userCaSecret }}
volumes:
  - name: user-ca
    secret: {secretName: {{ . }}, items: [{key: {{ $.key }}, path: {{ $.key }}}]}
{{- end }}
{{- end }}

{{/* The snapshot store of the agents (values snapshots.store): its URL ... */}}
{{- define "cs.snapshotEnv" -}}
{{- with .Values.snapshots.store }}
- name: COMPUTE_SERVER_SNAPSHOT_STORE
  value: {{ . | quote }}
{{- end }}
{{- end }}

{{/* ... and its credentials, from the Secret snapshots.credentialsSecret. */}}
{{- define "cs.snapshotEnvFrom" -}}
{{- with .Values.snapshots.credentialsSecret }}
envFrom:
  - secretRef:
      name: {{ . | quote }}
{{- end }}
{{- end }}
