{{/* Names, labels and images shared by every template. */}}

{{- define "flowplace.estimator.name" -}}flowplace-estimator{{- end -}}
{{- define "flowplace.scheduler.name" -}}flowplace-scheduler{{- end -}}
{{- define "flowplace.agent.name" -}}flowplace-agent{{- end -}}
{{- define "flowplace.collector.name" -}}flowplace-collector{{- end -}}
{{- define "flowplace.dashboards.name" -}}flowplace-dashboards{{- end -}}

{{/* The Secret holding a component's kubeconfig of the karmada-apiserver.
The estimator's is the addon's <addon>-config (key karmada.config), the
Secret karmadactl addons checks for before it enables an addon. */}}
{{- define "flowplace.karmadaConfigSecret" -}}
{{- if eq . "flowplace-estimator" }}flowplace-config{{ else }}{{ . }}-karmada-config{{ end -}}
{{- end -}}

{{/* The ConfigMap of the OTLP CA bundle (host and members). */}}
{{- define "flowplace.otlpCAConfigMap" -}}flowplace-otlp-ca{{- end -}}

{{/* The latency matrix the estimator publishes for the agents (karmada-apiserver, agent namespace; propagated). */}}
{{- define "flowplace.matrixConfigMap" -}}flowplace-cluster-latency{{- end -}}

{{/* The Secret of one member's OTLP client identity in the karmada-apiserver. */}}
{{- define "flowplace.agent.identitySecret" -}}flowplace-agent-otlp-{{ . }}{{- end -}}

{{/* The users the components' client certificates name. */}}
{{- define "flowplace.estimator.user" -}}system:flowplace:estimator{{- end -}}
{{- define "flowplace.scheduler.user" -}}system:flowplace:scheduler{{- end -}}

{{/* Labels of every object: (dict "root" $ "component" "estimator"). */}}
{{- define "flowplace.labels" -}}
app.kubernetes.io/name: {{ include (printf "flowplace.%s.name" .component) .root }}
app.kubernetes.io/component: {{ .component }}
app.kubernetes.io/part-of: flowplace
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
{{- /* Which rendering an object is from: a host cluster that is also a member
holds both, and each release manages only its own. */}}
flowplace.io/install-mode: {{ .root.Values.installMode }}
{{- with .root.Values.global.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Pod selector labels: (dict "root" $ "component" "estimator"). */}}
{{- define "flowplace.selectorLabels" -}}
app.kubernetes.io/name: {{ include (printf "flowplace.%s.name" .component) .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- end -}}

{{/* registry/repository:tag: (dict "image" .Values.x.image "root" $). */}}
{{- define "flowplace.image" -}}
{{- $registry := .image.registry | default .root.Values.global.imageRegistry | default "docker.io" -}}
{{- $tag := .image.tag | default .root.Chart.AppVersion -}}
{{- printf "%s/%s:%s" $registry .image.repository $tag -}}
{{- end -}}

{{- define "flowplace.imagePullSecrets" -}}
{{- with .Values.global.imagePullSecrets }}
imagePullSecrets:
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* A kubeconfig of the karmada-apiserver for a component's client
certificate: (dict "root" $ "user" "system:flowplace:estimator"). The files
are mounted beside it. */}}
{{- define "flowplace.karmadaKubeconfig" -}}
apiVersion: v1
kind: Config
clusters:
- name: karmada-apiserver
  cluster:
    server: {{ .root.Values.karmada.apiServer }}
    certificate-authority: /etc/karmada/pki/ca.crt
users:
- name: {{ .user }}
  user:
    client-certificate: /etc/karmada/pki/tls.crt
    client-key: /etc/karmada/pki/tls.key
contexts:
- name: karmada-apiserver
  context:
    cluster: karmada-apiserver
    user: {{ .user }}
current-context: karmada-apiserver
{{- end -}}

{{/* Fail with the key's name when a required value is empty. */}}
{{- define "flowplace.required" -}}
{{- if not .value -}}
{{- fail (printf "%s is required (%s)" .key .why) -}}
{{- end -}}
{{- end -}}

{{/* Placement of the agent: agent.clusterNames and/or agent.clusterSelector. */}}
{{- define "flowplace.agent.clusterAffinity" -}}
clusterAffinity:
  {{- with .clusterNames }}
  clusterNames:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .clusterSelector }}
  labelSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}

{{/* Non-empty when the agent exports OTLP over mTLS. */}}
{{- define "flowplace.agent.tls" -}}
{{- if and .Values.agent.otlp.endpoint (not .Values.agent.otlp.insecure) }}true{{ end -}}
{{- end -}}

{{/* Non-empty when the agents export through a collector gateway per member. */}}
{{- define "flowplace.collector.enabled" -}}
{{- if and .Values.collector.enabled .Values.agent.enabled .Values.agent.otlp.endpoint }}true{{ end -}}
{{- end -}}
