{{- define "detector.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "detector.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains (include "detector.name" .) .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "detector.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Labels; call with (dict "root" $ "component" "worker"). */}}
{{- define "detector.selectorLabels" -}}
app.kubernetes.io/name: {{ include "detector.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "detector.labels" -}}
{{ include "detector.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "detector.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "detector.secretName" -}}
{{- if .Values.secrets.create -}}{{ include "detector.fullname" . }}{{- else -}}{{ required "secrets.existingSecret is required when secrets.create is false" .Values.secrets.existingSecret }}{{- end -}}
{{- end -}}

{{/* Request workers never outnumber the partitions: an extra consumer would sit idle. */}}
{{- define "detector.workerMaxReplicas" -}}
{{- min (int .Values.worker.autoscaling.maxReplicas) (int .Values.kafka.partitions) -}}
{{- end -}}

{{- define "detector.secretsDir" -}}/var/run/secrets/detector{{- end -}}
{{- define "detector.policyDir" -}}/etc/detector{{- end -}}

{{/* Settings every process reads: logs, brokers, topics, the store, the policy, the hash key. */}}
{{- define "detector.commonEnv" -}}
- name: DETECTOR_LOG_LEVEL
  value: {{ .Values.log.level | quote }}
- name: DETECTOR_LOG_FORMAT
  value: {{ .Values.log.format | quote }}
- name: DETECTOR_KAFKA_BROKERS
  value: {{ .Values.kafka.brokers | quote }}
- name: DETECTOR_TOPIC_PARTITIONS
  value: {{ .Values.kafka.partitions | quote }}
- name: DETECTOR_TOPIC_REPLICATION
  value: {{ .Values.kafka.replication | quote }}
- name: DETECTOR_TOPIC_DECISIONS
  value: {{ .Values.topics.decisions | quote }}
- name: DETECTOR_TOPIC_FEEDBACK
  value: {{ .Values.topics.feedback | quote }}
- name: DETECTOR_STORE
  value: {{ .Values.redis.url | quote }}
- name: DETECTOR_HASH_KEY_FILE
  value: {{ include "detector.secretsDir" . }}/hash-key
{{- if .Values.policy }}
- name: DETECTOR_POLICY
  value: {{ include "detector.policyDir" . }}/policy.yaml
{{- end }}
{{- end -}}

{{- define "detector.extraEnv" -}}
{{- range $name, $value := . }}
- name: {{ $name }}
  value: {{ $value | quote }}
{{- end }}
{{- end -}}

{{/* Volumes: the secret files (only the keys a component needs), the policy, a writable /tmp. */}}
{{- define "detector.volumes" -}}
- name: secrets
  secret:
    secretName: {{ include "detector.secretName" .root }}
    defaultMode: 0400
    items:
      {{- range .keys }}
      - key: {{ . }}
        path: {{ . }}
      {{- end }}
{{- if .root.Values.policy }}
- name: policy
  configMap:
    name: {{ include "detector.fullname" .root }}-policy
{{- end }}
- name: tmp
  emptyDir:
    sizeLimit: 64Mi
{{- end -}}

{{- define "detector.volumeMounts" -}}
- name: secrets
  mountPath: {{ include "detector.secretsDir" . }}
  readOnly: true
{{- if .Values.policy }}
- name: policy
  mountPath: {{ include "detector.policyDir" . }}
  readOnly: true
{{- end }}
- name: tmp
  mountPath: /tmp
{{- end -}}

{{/* Probes on the named port; call with (dict "root" $ "port" "metrics"). */}}
{{- define "detector.probes" -}}
{{- $p := .root.Values.probes -}}
startupProbe:
  httpGet: {path: {{ $p.liveness.path }}, port: {{ .port }}}
  periodSeconds: {{ $p.startup.periodSeconds }}
  failureThreshold: {{ $p.startup.failureThreshold }}
livenessProbe:
  httpGet: {path: {{ $p.liveness.path }}, port: {{ .port }}}
  periodSeconds: {{ $p.liveness.periodSeconds }}
  failureThreshold: {{ $p.liveness.failureThreshold }}
readinessProbe:
  httpGet: {path: {{ $p.readiness.path }}, port: {{ .port }}}
  periodSeconds: {{ $p.readiness.periodSeconds }}
  failureThreshold: {{ $p.readiness.failureThreshold }}
{{- end -}}

{{/* The pod template's common part; call with (dict "root" $ "component" "worker" "values" .Values.worker). */}}
{{- define "detector.podSpecCommon" -}}
{{- with .root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
automountServiceAccountToken: false
enableServiceLinks: false
securityContext:
  {{- toYaml .root.Values.podSecurityContext | nindent 2 }}
# Long enough for a worker to finish its batch and commit after SIGTERM.
terminationGracePeriodSeconds: 60
{{- with .values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{- define "detector.captchaEnabled" -}}
{{- if or .Values.captcha.provider .Values.captcha.verifyUrl -}}true{{- end -}}
{{- end -}}

{{/* Where CAPTCHA tokens are checked, for the components that end challenges (worker, serve). */}}
{{- define "detector.captchaEnv" -}}
{{- if include "detector.captchaEnabled" . }}
{{- if .Values.captcha.provider }}
- name: DETECTOR_CAPTCHA_PROVIDER
  value: {{ .Values.captcha.provider | quote }}
{{- end }}
{{- if .Values.captcha.verifyUrl }}
- name: DETECTOR_CAPTCHA_VERIFY_URL
  value: {{ .Values.captcha.verifyUrl | quote }}
{{- end }}
- name: DETECTOR_CAPTCHA_SECRET_FILE
  value: {{ include "detector.secretsDir" . }}/captcha-secret
{{- end }}
{{- end -}}

{{/* The secret keys of a component that ends challenges; call with (list $ "hash-key" ...). */}}
{{- define "detector.withCaptchaKey" -}}
{{- $root := first . -}}
{{- $keys := rest . -}}
{{- if include "detector.captchaEnabled" $root }}{{ $keys = append $keys "captcha-secret" }}{{ end -}}
{{- toJson $keys -}}
{{- end -}}
