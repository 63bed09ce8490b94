{{/*
Names, labels and the job's restream configuration.
*/}}

{{/* The chart name, or nameOverride. */}}
{{- define "restream.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The full name of the release's resources (the Job, ConfigMap, Secret, ...): 63 characters
at most, since it becomes a label value (the Job's pods carry job-name=FULLNAME).
*/}}
{{- define "restream.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* Chart name and version, for the helm.sh/chart label. */}}
{{- define "restream.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every resource. */}}
{{- define "restream.labels" -}}
helm.sh/chart: {{ include "restream.chart" . }}
{{ include "restream.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Labels that identify the release's pods (the PodMonitor selects by them). */}}
{{- define "restream.selectorLabels" -}}
app.kubernetes.io/name: {{ include "restream.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The ServiceAccount the pod runs as. */}}
{{- define "restream.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "restream.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The image reference: by digest when one is given, else by tag (default appVersion). */}}
{{- define "restream.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The backtest's job_id: jobId, or the release name. */}}
{{- define "restream.jobId" -}}
{{- default .Release.Name .Values.jobId }}
{{- end }}

{{/* Whether the chart creates the credentials Secret ("true" or empty). */}}
{{- define "restream.createSecret" -}}
{{- $c := .Values.credentials }}
{{- if and (not $c.existingSecret) (or $c.kafkaSaslUsername $c.kafkaSaslPassword $c.kafkaSslKeyPassword $c.schemaRegistryBasicAuth) }}true{{ end }}
{{- end }}

{{/* The Secret that holds the credentials; empty when there is none. */}}
{{- define "restream.secretName" -}}
{{- if .Values.credentials.existingSecret }}
{{- .Values.credentials.existingSecret }}
{{- else if include "restream.createSecret" . }}
{{- include "restream.fullname" . }}
{{- end }}
{{- end }}

{{/* Where tlsSecret is mounted. */}}
{{- define "restream.tlsDir" -}}
/etc/restream/tls
{{- end }}

{{/*
The job's restream configuration (/etc/restream/job.yaml). Each key is a setting of
`restream run`; values left empty are left out, so that restream's own defaults apply.
Secrets are not here: they reach the container as environment variables from the Secret.
*/}}
{{- define "restream.config" -}}
{{- $v := .Values }}
{{- $tls := include "restream.tlsDir" . }}
{{- $files := list $v.kafka.caFile $v.kafka.certFile $v.kafka.keyFile $v.schemaRegistry.caFile $v.schemaRegistry.certFile $v.schemaRegistry.keyFile }}
{{- if and (compact $files) (not $v.tlsSecret) }}
{{- fail "tlsSecret is required when kafka.caFile, certFile, keyFile or schemaRegistry.caFile, certFile, keyFile name a file: the Secret that holds them" }}
{{- end }}
{{- $kafka := deepCopy (default (dict) $v.kafka.config) }}
{{- with $v.kafka.caFile }}{{ $_ := set $kafka "ssl.ca.location" (printf "%s/%s" $tls .) }}{{ end }}
{{- with $v.kafka.certFile }}{{ $_ := set $kafka "ssl.certificate.location" (printf "%s/%s" $tls .) }}{{ end }}
{{- with $v.kafka.keyFile }}{{ $_ := set $kafka "ssl.key.location" (printf "%s/%s" $tls .) }}{{ end }}
{{- $config := dict }}
{{- $_ := set $config "job_id" (include "restream.jobId" .) }}
{{- $_ = set $config "bootstrap_servers" (required "kafka.bootstrapServers is required: the Kafka bootstrap servers, host:port[,host:port]" $v.kafka.bootstrapServers) }}
{{- $_ = set $config "pipeline" (required "pipeline is required: a built-in pipeline (social-spam) or package.module:attribute" $v.pipeline) }}
{{- with $v.inputs }}{{ $_ = set $config "inputs" . }}{{ end }}
{{- $_ = set $config "start" $v.start }}
{{- $_ = set $config "end" $v.end }}
{{- $_ = set $config "value_format" $v.valueFormat }}
{{- with $v.keyFormat }}{{ $_ = set $config "key_format" . }}{{ end }}
{{- with $v.schemas }}{{ $_ = set $config "schemas" . }}{{ end }}
{{- with $v.eventTime }}{{ $_ = set $config "event_time" . }}{{ end }}
{{- $_ = set $config "input_reader" $v.inputReader }}
{{- with $v.schemaRegistry.url }}{{ $_ = set $config "schema_registry_url" . }}{{ end }}
{{- with $v.schemaRegistry.caFile }}{{ $_ = set $config "schema_registry_ca_location" (printf "%s/%s" $tls .) }}{{ end }}
{{- with $v.schemaRegistry.certFile }}{{ $_ = set $config "schema_registry_cert_location" (printf "%s/%s" $tls .) }}{{ end }}
{{- with $v.schemaRegistry.keyFile }}{{ $_ = set $config "schema_registry_key_location" (printf "%s/%s" $tls .) }}{{ end }}
{{- with $v.outputs }}{{ $_ = set $config "outputs" . }}{{ end }}
{{- with $v.outputSchemas }}{{ $_ = set $config "output_schemas" . }}{{ end }}
{{- $_ = set $config "output_format" $v.outputFormat }}
{{- $_ = set $config "output_headers" $v.outputHeaders }}
{{- $_ = set $config "output_writer" $v.outputWriter }}
{{- if gt (int $v.outputPartitions) 0 }}{{ $_ = set $config "output_partitions" (int $v.outputPartitions) }}{{ end }}
{{- $_ = set $config "output_replication_factor" (int $v.outputReplicationFactor) }}
{{- with $v.deadLetterTopic }}{{ $_ = set $config "dead_letter_topic" . }}{{ end }}
{{- $_ = set $config "on_bad_record" $v.onBadRecord }}
{{- $_ = set $config "max_bad_records" $v.maxBadRecords }}
{{- $_ = set $config "executor" $v.executor }}
{{- $_ = set $config "workers" (int $v.workers) }}
{{- $_ = set $config "epoch_size" (int $v.epochSize) }}
{{- $_ = set $config "ray_readers" (int $v.ray.readers) }}
{{- $_ = set $config "ray_sinks" (int $v.ray.sinks) }}
{{- $_ = set $config "sink_processes" (int $v.sinkProcesses) }}
{{- /* Checkpoints only on the claim: on the pod's own disk they would die with the pod. */}}
{{- with $v.checkpoints.existingClaim }}
{{- $_ = set $config "checkpoint_dir" $v.checkpoints.mountPath }}
{{- $_ = set $config "checkpoint_every_epochs" (int $v.checkpoints.everyEpochs) }}
{{- $_ = set $config "checkpoint_every_seconds" (int $v.checkpoints.everySeconds) }}
{{- $_ = set $config "checkpoint_keep" (int $v.checkpoints.keep) }}
{{- end }}
{{- $_ = set $config "broker_timeout" (int $v.brokerTimeout) }}
{{- $_ = set $config "stall_timeout" (int $v.stallTimeout) }}
{{- $_ = set $config "lease_timeout" (int $v.leaseTimeout) }}
{{- with $v.leaseTopic }}{{ $_ = set $config "lease_topic" . }}{{ end }}
{{- $_ = set $config "metrics_port" (int $v.metrics.port) }}
{{- with $v.pushgateway }}{{ $_ = set $config "pushgateway" . }}{{ end }}
{{- $_ = set $config "progress" "log" }}
{{- $_ = set $config "log_format" "json" }}
{{- $_ = set $config "log_level" $v.logLevel }}
{{- with $kafka }}{{ $_ = set $config "kafka" . }}{{ end }}
{{- toYaml $config }}
{{- end }}
