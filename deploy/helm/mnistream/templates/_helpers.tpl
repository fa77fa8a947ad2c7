{{/* The image of one component: <registry>/<name>:<tag>. */}}
{{- define "mnistream.image" -}}
{{ .root.Values.images.registry }}/{{ index .root.Values.images .name }}:{{ .root.Values.images.tag }}
{{- end }}

{{- define "mnistream.labels" -}}
app.kubernetes.io/name: mnistream
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
{{- end }}

{{- define "mnistream.selector" -}}
app.kubernetes.io/name: mnistream
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* Settings every program that talks to Kafka reads: where it is, and who signs in
(dict root, user: a key of kafka.users), so no pod reaches Kafka as anyone but its own user. */}}
{{- define "mnistream.commonEnv" -}}
- name: LOG_JSON
  value: "true"
- name: KAFKA_BOOTSTRAP_SERVERS
  value: {{ .root.Values.kafka.bootstrapServers | quote }}
{{- with .root.Values.tracing.otlpEndpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ . | quote }}
- name: TRACE_SAMPLE_RATIO
  value: {{ $.root.Values.tracing.sampleRatio | quote }}
{{- end }}
{{- include "mnistream.kafkaEnv" . }}
{{- end }}

{{/* Signing in to Kafka as one user of kafka.users: its name, and its password from the
Secret of the same name (Strimzi's KafkaUser makes it). PLAINTEXT signs in as no one. */}}
{{- define "mnistream.kafkaEnv" -}}
{{- $kafka := .root.Values.kafka }}
{{- $name := required (printf "kafka.users.%s is not set" .user) (index $kafka.users .user) }}
- name: KAFKA_SECURITY_PROTOCOL
  value: {{ $kafka.securityProtocol | quote }}
{{- if ne $kafka.securityProtocol "PLAINTEXT" }}
- name: KAFKA_SASL_MECHANISM
  value: {{ $kafka.saslMechanism | quote }}
- name: KAFKA_SASL_USERNAME
  value: {{ $name | quote }}
- name: KAFKA_SASL_PASSWORD
  valueFrom:
    secretKeyRef: {name: {{ $name }}, key: password}
{{- end }}
{{- end }}

{{- define "mnistream.s3Env" -}}
- name: S3_ENDPOINT_URL
  value: {{ .root.Values.s3.endpoint | quote }}
- name: DRAWINGS_BUCKET
  value: {{ .root.Values.s3.drawingsBucket | quote }}
- name: ARTIFACTS_BUCKET
  value: {{ .root.Values.s3.artifactsBucket | quote }}
- name: S3_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef: {name: {{ index .root.Values.s3.secrets .user }}, key: accessKey}
- name: S3_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef: {name: {{ index .root.Values.s3.secrets .user }}, key: secretKey}
{{- end }}

{{- define "mnistream.mlflowEnv" -}}
- name: MLFLOW_TRACKING_URI
  value: {{ .Values.mlflow.trackingUri | quote }}
- name: REGISTERED_MODEL_NAME
  value: {{ .Values.mlflow.registeredModelName | quote }}
{{- end }}

{{/* DATABASE_URL from CloudNativePG's application Secret (Kubernetes expands $(VAR)). */}}
{{- define "mnistream.databaseEnv" -}}
- name: DB_USER
  valueFrom:
    secretKeyRef: {name: {{ .Values.postgres.secretName }}, key: username}
- name: DB_PASSWORD
  valueFrom:
    secretKeyRef: {name: {{ .Values.postgres.secretName }}, key: password}
- name: DATABASE_URL
  value: "postgresql+asyncpg://$(DB_USER):$(DB_PASSWORD)@{{ .Values.postgres.host }}:{{ .Values.postgres.port }}/{{ .Values.postgres.database }}"
{{- end }}

{{/* Probes on a service's own /healthz (alive) and /readyz (ready to take work). */}}
{{- define "mnistream.probes" -}}
startupProbe:
  httpGet: {path: /healthz, port: http}
  periodSeconds: 2
  failureThreshold: 60
livenessProbe:
  httpGet: {path: /healthz, port: http}
  periodSeconds: 10
  failureThreshold: 3
readinessProbe:
  httpGet: {path: /readyz, port: http}
  periodSeconds: 5
  failureThreshold: 2
{{- end }}

{{/* The pod-level parts every workload shares: security, a writable /tmp. */}}
{{- define "mnistream.podSecurity" -}}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
automountServiceAccountToken: false
{{- end }}
