{{/*
Parts of the RayJob (executor: ray) that the head pod (the driver) and the worker pods share.
*/}}

{{/*
The Ray container's environment: the numba cache on the /tmp emptyDir, the credentials from
the Secret (the driver and the actors that read and write Kafka need them), extraEnv.
*/}}
{{- define "restream.ray.env" -}}
{{- $secret := include "restream.secretName" . }}
# Compiled per-key kernels cache their machine code here (the /tmp emptyDir): the root
# filesystem is read-only.
- name: NUMBA_CACHE_DIR
  value: /tmp/numba-cache
{{- if $secret }}
- name: RESTREAM_KAFKA_SASL_USERNAME
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: kafka-sasl-username
      optional: true
- name: RESTREAM_KAFKA_SASL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: kafka-sasl-password
      optional: true
- name: RESTREAM_KAFKA_SSL_KEY_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: kafka-ssl-key-password
      optional: true
- name: RESTREAM_SCHEMA_REGISTRY_BASIC_AUTH
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: schema-registry-basic-auth
      optional: true
{{- end }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Mounts of every Ray container: schema files, TLS files, the object store, /tmp. */}}
{{- define "restream.ray.volumeMounts" -}}
{{- if .Values.schemaFiles }}
- name: schema-files
  mountPath: /etc/restream/schemas
  readOnly: true
{{- end }}
{{- if .Values.tlsSecret }}
- name: tls
  mountPath: {{ include "restream.tlsDir" . }}
  readOnly: true
{{- end }}
# Ray's object store (shared memory).
- name: shm
  mountPath: /dev/shm
# Ray's session directory (/tmp/ray: logs, spilled objects) and the numba cache.
- name: tmp
  mountPath: /tmp
{{- with .Values.extraVolumeMounts }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* The volumes behind restream.ray.volumeMounts. */}}
{{- define "restream.ray.volumes" -}}
{{- if .Values.schemaFiles }}
- name: schema-files
  configMap:
    name: {{ include "restream.fullname" . }}
    items:
      {{- range $file, $_ := .Values.schemaFiles }}
      - key: {{ $file | quote }}
        path: {{ $file | quote }}
      {{- end }}
{{- end }}
{{- if .Values.tlsSecret }}
- name: tls
  secret:
    secretName: {{ .Values.tlsSecret }}
{{- end }}
- name: shm
  emptyDir:
    medium: Memory
    sizeLimit: {{ .Values.shmSizeLimit }}
- name: tmp
  emptyDir:
    sizeLimit: {{ .Values.ray.tmpSizeLimit }}
{{- with .Values.extraVolumes }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Pod-level settings of every Ray pod. */}}
{{- define "restream.ray.podSettings" -}}
serviceAccountName: {{ include "restream.serviceAccountName" . }}
# Neither restream nor Ray's start-up calls the Kubernetes API.
automountServiceAccountToken: false
# Service links would inject variables such as RESTREAM_KAFKA_PORT (from a Service named
# restream-kafka), which restream would read as Kafka client settings.
enableServiceLinks: false
{{- with .Values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.podSecurityContext }}
securityContext:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* Labels of every Ray pod. */}}
{{- define "restream.ray.podLabels" -}}
{{ include "restream.labels" . }}
{{- with .Values.podLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}
