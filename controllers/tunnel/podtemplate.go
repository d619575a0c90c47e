package tunnel

import (
	"encoding/json"
	"maps"
	"slices"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/intstr"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"

	scitunnelv1 "github.com/scitunnel/scitunnel/api/v1alpha1"
	"github.com/scitunnel/scitunnel/controllers/internal/child"
	"github.com/scitunnel/scitunnel/dataplane/contract"
)

// Data-plane identity inside the image: the static binary runs as this non-root user.
const dataPlaneUID = 65532

// podTemplate is the proxy pod: the proxy container and the sFlow sidecar.
func (r *Reconciler) podTemplate(s *scope) *corev1ac.PodTemplateSpecApplyConfiguration {
	t := s.tunnel
	podLabels := map[string]string{}
	podAnnotations := map[string]string{}
	if p := t.Spec.Pod; p != nil {
		maps.Copy(podLabels, p.Labels)
		maps.Copy(podAnnotations, p.Annotations)
	}
	maps.Copy(podLabels, child.Labels(t)) // ours win: the selector depends on them
	podAnnotations[child.AnnotationConfigHash] = s.configHash

	proxy, sidecar := r.proxyContainer(s), r.sidecarContainer(t)
	if r.Options.ImagePullPolicy != "" {
		proxy.WithImagePullPolicy(r.Options.ImagePullPolicy)
		sidecar.WithImagePullPolicy(r.Options.ImagePullPolicy)
	}
	spec := corev1ac.PodSpec().
		WithAutomountServiceAccountToken(false). // data-plane pods hold no API credentials
		WithEnableServiceLinks(false).
		WithTerminationGracePeriodSeconds(45). // the proxy drains for up to 30s
		WithSecurityContext(podSecurityContext(s)).
		WithContainers(proxy, sidecar).
		WithVolumes(volumes(s)...)
	place(spec, t.Spec.Pod)
	return corev1ac.PodTemplateSpec().
		WithLabels(podLabels).
		WithAnnotations(podAnnotations).
		WithSpec(spec)
}

// volumes: the ConfigMap, a small /tmp, and the certificate Secret when the end uses TLS.
func volumes(s *scope) []*corev1ac.VolumeApplyConfiguration {
	v := []*corev1ac.VolumeApplyConfiguration{
		corev1ac.Volume().WithName("config").WithConfigMap(corev1ac.ConfigMapVolumeSource().WithName(child.ConfigMapName(s.tunnel))),
		corev1ac.Volume().WithName("tmp").WithEmptyDir(corev1ac.EmptyDirVolumeSource().WithSizeLimit(resource.MustParse("16Mi"))),
	}
	if s.tlsSecret != "" {
		v = append(v, corev1ac.Volume().WithName("tls").WithSecret(corev1ac.SecretVolumeSource().
			WithSecretName(s.tlsSecret).
			WithDefaultMode(0o440).
			WithItems(
				corev1ac.KeyToPath().WithKey(contract.CertKey).WithPath(contract.CertKey),
				corev1ac.KeyToPath().WithKey(contract.KeyKey).WithPath(contract.KeyKey),
				corev1ac.KeyToPath().WithKey(contract.CAKey).WithPath(contract.CAKey),
			)))
	}
	return v
}

// proxyContainer runs `scitunnel run` with the end's listeners.
func (r *Reconciler) proxyContainer(s *scope) *corev1ac.ContainerApplyConfiguration {
	t := s.tunnel
	proto := listenerProtocol(t)
	ports := make([]*corev1ac.ContainerPortApplyConfiguration, 0, 1+len(s.ends.ListenPorts))
	ports = append(ports, corev1ac.ContainerPort().WithName("admin").WithContainerPort(contract.AdminPort).WithProtocol(corev1.ProtocolTCP))
	for i, p := range s.ends.ListenPorts {
		ports = append(ports, corev1ac.ContainerPort().WithName(portName(i)).WithContainerPort(int32(p)).WithProtocol(proto))
	}
	mounts := []*corev1ac.VolumeMountApplyConfiguration{
		corev1ac.VolumeMount().WithName("config").WithMountPath(contract.ConfigDir).WithReadOnly(true),
		corev1ac.VolumeMount().WithName("tmp").WithMountPath("/tmp"),
	}
	if s.tlsSecret != "" {
		mounts = append(mounts, corev1ac.VolumeMount().WithName("tls").WithMountPath(contract.TLSDir).WithReadOnly(true))
	}
	return corev1ac.Container().
		WithName(contract.ProxyContainer).
		WithImage(r.Options.DataPlaneImage).
		WithArgs("run", "--config", contract.ConfigFile).
		WithPorts(ports...).
		WithReadinessProbe(httpProbe("/readyz", contract.AdminPort, 5)).
		WithLivenessProbe(httpProbe("/healthz", contract.AdminPort, 10)).
		WithVolumeMounts(mounts...).
		WithSecurityContext(proxySecurityContext()).
		WithResources(resourcesOr(t.Spec.Pod, false))
}

// sidecarContainer runs `scitunnel sflow`: the sampler (unless sampling is off) and the
// analyzer.
func (r *Reconciler) sidecarContainer(t *scitunnelv1.StreamTunnel) *corev1ac.ContainerApplyConfiguration {
	sampling := true
	if ts := t.Spec.Telemetry; ts != nil && ts.SamplingRate != nil && *ts.SamplingRate == 0 {
		sampling = false
	}
	return corev1ac.Container().
		WithName(contract.SidecarContainer).
		WithImage(r.Options.DataPlaneImage).
		WithArgs("sflow", "--config", contract.ConfigFile).
		WithPorts(
			corev1ac.ContainerPort().WithName("sflow").WithContainerPort(contract.SFlowPort).WithProtocol(corev1.ProtocolUDP),
			corev1ac.ContainerPort().WithName("analyzer").WithContainerPort(contract.AnalyzerPort).WithProtocol(corev1.ProtocolTCP),
		).
		WithReadinessProbe(httpProbe("/healthz", contract.AnalyzerPort, 5)).
		WithLivenessProbe(httpProbe("/healthz", contract.AnalyzerPort, 10)).
		WithVolumeMounts(
			corev1ac.VolumeMount().WithName("config").WithMountPath(contract.ConfigDir).WithReadOnly(true),
			corev1ac.VolumeMount().WithName("tmp").WithMountPath("/tmp"),
		).
		WithSecurityContext(sflowSecurityContext(sampling)).
		WithResources(resourcesOr(t.Spec.Pod, true))
}

// podSecurityContext: the data-plane group, seccomp, and the namespaced sysctls the end needs.
func podSecurityContext(s *scope) *corev1ac.PodSecurityContextApplyConfiguration {
	podSC := corev1ac.PodSecurityContext().
		WithFSGroup(dataPlaneUID).
		WithSeccompProfile(corev1ac.SeccompProfile().WithType(corev1.SeccompProfileTypeRuntimeDefault))
	if reflectFlowLabel(s.tunnel, s.tag != nil) {
		// Namespaced, "unsafe" sysctl: the kubelet must allow it (see SysctlForbidden handling).
		podSC.WithSysctls(corev1ac.Sysctl().WithName(SysctlFlowLabelReflect).WithValue("1"))
	}
	if slices.ContainsFunc(s.ends.ListenPorts, func(p int) bool { return p < 1024 }) {
		// A safe, namespaced sysctl: lets the non-root proxy bind ports below 1024 without
		// NET_BIND_SERVICE.
		podSC.WithSysctls(corev1ac.Sysctl().WithName("net.ipv4.ip_unprivileged_port_start").WithValue("0"))
	}
	return podSC
}

// place passes the user's placement settings through.
func place(spec *corev1ac.PodSpecApplyConfiguration, p *scitunnelv1.ProxyPodSpec) {
	if p == nil {
		return
	}
	if len(p.NodeSelector) > 0 {
		spec.WithNodeSelector(p.NodeSelector)
	}
	for i := range p.Tolerations {
		spec.WithTolerations(convert[corev1ac.TolerationApplyConfiguration](&p.Tolerations[i]))
	}
	if p.Affinity != nil {
		spec.WithAffinity(convert[corev1ac.AffinityApplyConfiguration](p.Affinity))
	}
	for i := range p.TopologySpreadConstraints {
		spec.WithTopologySpreadConstraints(convert[corev1ac.TopologySpreadConstraintApplyConfiguration](&p.TopologySpreadConstraints[i]))
	}
	if p.PriorityClassName != "" {
		spec.WithPriorityClassName(p.PriorityClassName)
	}
}

// SysctlFlowLabelReflect mirrors an accepted connection's flow label on its replies.
const SysctlFlowLabelReflect = "net.ipv6.flowlabel_reflect"

// reflectFlowLabel: Inbound pods of a tagged tunnel reflect by default (the bulk data flows
// from the accepting side, whose label it cannot choose otherwise).
func reflectFlowLabel(t *scitunnelv1.StreamTunnel, tagged bool) bool {
	if t.Spec.Role != scitunnelv1.RoleInbound || t.Spec.Inbound == nil {
		return false
	}
	if t.Spec.Inbound.FlowLabelReflection != nil {
		return *t.Spec.Inbound.FlowLabelReflection
	}
	return tagged
}

func httpProbe(path string, port int32, period int32) *corev1ac.ProbeApplyConfiguration {
	return corev1ac.Probe().
		WithHTTPGet(corev1ac.HTTPGetAction().WithPath(path).WithPort(intstr.FromInt32(port))).
		WithPeriodSeconds(period).
		WithTimeoutSeconds(2).
		WithFailureThreshold(3)
}

// proxySecurityContext is Pod Security "restricted": non-root, no privilege escalation,
// read-only root filesystem, every capability dropped, seccomp RuntimeDefault.
func proxySecurityContext() *corev1ac.SecurityContextApplyConfiguration {
	return corev1ac.SecurityContext().
		WithRunAsNonRoot(true).
		WithRunAsUser(dataPlaneUID).
		WithRunAsGroup(dataPlaneUID).
		WithAllowPrivilegeEscalation(false).
		WithReadOnlyRootFilesystem(true).
		WithCapabilities(corev1ac.Capabilities().WithDrop("ALL")).
		WithSeccompProfile(corev1ac.SeccompProfile().WithType(corev1.SeccompProfileTypeRuntimeDefault))
}

// sflowSecurityContext is THE one place that decides the sFlow sidecar's privileges.
//
// The in-pod sampler opens an AF_PACKET socket, which needs CAP_NET_RAW. The sidecar runs
// non-root (uid 65532) like every other container, with every capability dropped except
// NET_RAW, a read-only root filesystem and seccomp RuntimeDefault. Adding NET_RAW to a non-root
// container only puts it in the bounding set (containerd sets no ambient capabilities), so the
// image's /scitunnel carries the file capability cap_net_raw=p (hack/imagepack -cap-net-raw;
// the Dockerfile's setcap) and the sampler raises it for the socket's creation alone
// (dataplane/telemetry/sampler). A file capability takes effect only without no_new_privs, hence
// allowPrivilegeEscalation true in this container: nothing in the image is setuid or carries
// any other capability, so it grants no more than NET_RAW.
//
// NET_RAW (and the escalation flag) put this container outside Pod Security "restricted". With
// telemetry.samplingRate 0 the sampler is off, and the sidecar drops every capability with no
// escalation, so the whole pod is "restricted". Whoever changes this changes it here and only
// here.
func sflowSecurityContext(sampling bool) *corev1ac.SecurityContextApplyConfiguration {
	sc := corev1ac.SecurityContext().
		WithRunAsNonRoot(true).WithRunAsUser(dataPlaneUID).WithRunAsGroup(dataPlaneUID).
		WithReadOnlyRootFilesystem(true).
		WithSeccompProfile(corev1ac.SeccompProfile().WithType(corev1.SeccompProfileTypeRuntimeDefault))
	if !sampling {
		return sc.WithAllowPrivilegeEscalation(false).WithCapabilities(corev1ac.Capabilities().WithDrop("ALL"))
	}
	return sc.WithAllowPrivilegeEscalation(true).
		WithCapabilities(corev1ac.Capabilities().WithDrop("ALL").WithAdd("NET_RAW"))
}

// resourcesOr returns the user's resources or modest defaults: requests that let the
// scheduler place the pod, and a memory limit that stops a leak from starving the node. No CPU
// limit: throttling a data mover costs throughput.
func resourcesOr(p *scitunnelv1.ProxyPodSpec, sidecar bool) *corev1ac.ResourceRequirementsApplyConfiguration {
	if p != nil {
		if sidecar && p.SidecarResources != nil {
			return convert[corev1ac.ResourceRequirementsApplyConfiguration](p.SidecarResources)
		}
		if !sidecar && p.Resources != nil {
			return convert[corev1ac.ResourceRequirementsApplyConfiguration](p.Resources)
		}
	}
	if sidecar {
		return corev1ac.ResourceRequirements().
			WithRequests(corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("50m"), corev1.ResourceMemory: resource.MustParse("64Mi")}).
			WithLimits(corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("256Mi")})
	}
	return corev1ac.ResourceRequirements().
		WithRequests(corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("64Mi")}).
		WithLimits(corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("1Gi")})
}

// convert turns a typed API struct into its apply configuration: both share one JSON shape.
func convert[T any](in any) *T {
	b, err := json.Marshal(in)
	if err != nil {
		panic(err) // API types always marshal
	}
	out := new(T)
	if err := json.Unmarshal(b, out); err != nil {
		panic(err)
	}
	return out
}
