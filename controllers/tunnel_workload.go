package controllers

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	appsv1ac "k8s.io/client-go/applyconfigurations/apps/v1"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	metav1ac "k8s.io/client-go/applyconfigurations/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	scitunnelv1 "github.com/scitunnel/scitunnel/api/v1alpha1"
	"github.com/scitunnel/scitunnel/dataplane/config"
)

// Data-plane identity inside the image: the static binary runs as this non-root user.
const dataPlaneUID = 65532

func ownerRef(t *scitunnelv1.StreamTunnel) *metav1ac.OwnerReferenceApplyConfiguration {
	return metav1ac.OwnerReference().
		WithAPIVersion(scitunnelv1.GroupVersion.String()).
		WithKind("StreamTunnel").
		WithName(t.Name).
		WithUID(t.UID).
		WithController(true).
		WithBlockOwnerDeletion(true)
}

// getCached fetches an object from the cache; found is false when it does not exist.
func getCached(ctx context.Context, c client.Reader, key client.ObjectKey, obj client.Object) (found bool, err error) {
	if err := c.Get(ctx, key, obj); err != nil {
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		return false, err
	}
	return true, nil
}

// listenerProtocol is the L4 protocol of this end's listeners: UDP for the consumer-facing
// ports of a UDP tunnel and for both ends of plain UDP; TCP otherwise (TLS runs over TCP).
func listenerProtocol(t *scitunnelv1.StreamTunnel) corev1.Protocol {
	switch effectiveProtocol(t) {
	case "UDP/Plain":
		return corev1.ProtocolUDP
	case "UDP/TLS":
		if t.Spec.Role == scitunnelv1.RoleOutbound {
			return corev1.ProtocolUDP
		}
	}
	return corev1.ProtocolTCP
}

func portName(i int) string { return fmt.Sprintf("s%d", i) }

// reconcileService applies the Service in front of the proxy pods.
func (r *StreamTunnelReconciler) reconcileService(ctx context.Context, s *tunnelScope) error {
	t := s.tunnel
	if len(s.listenPorts) == 0 {
		return nil // an Outbound end whose remote (and so its port list) is not known yet
	}
	typ := corev1.ServiceTypeClusterIP
	var annotations map[string]string
	var lbClass *string
	if e := t.Spec.Exposure; e != nil {
		if e.Type != "" {
			typ = e.Type
		}
		annotations = e.Annotations
		lbClass = e.LoadBalancerClass
	}
	proto := listenerProtocol(t)
	// PreferDualStack: the flow label exists only in IPv6, so the Service needs an IPv6 address
	// (and its DNS name an AAAA record) for the peer's dialer to take the labelled path; a
	// single-stack cluster still gets its one family.
	spec := corev1ac.ServiceSpec().WithType(typ).WithSelector(selectorLabels(t)).
		WithIPFamilyPolicy(corev1.IPFamilyPolicyPreferDualStack)
	for i, p := range s.listenPorts {
		spec.WithPorts(corev1ac.ServicePort().WithName(portName(i)).WithProtocol(proto).
			WithPort(int32(p)).WithTargetPort(intstr.FromInt32(int32(p))))
	}
	if lbClass != nil && typ == corev1.ServiceTypeLoadBalancer {
		spec.WithLoadBalancerClass(*lbClass)
	}
	ac := corev1ac.Service(t.Name, t.Namespace).
		WithLabels(childLabels(t)).
		WithOwnerReferences(ownerRef(t)).
		WithSpec(spec)
	if len(annotations) > 0 {
		ac.WithAnnotations(annotations)
	}
	cur := &corev1.Service{}
	found, err := getCached(ctx, r.Client, client.ObjectKeyFromObject(t), cur)
	if err != nil {
		return err
	}
	var current client.Object
	if found {
		current = cur
	}
	svc := &corev1.Service{}
	changed, err := r.apply(ctx, current, ac, svc)
	if err != nil {
		return err
	}
	if !found && changed {
		r.Recorder.Eventf(t, svc, corev1.EventTypeNormal, "ServiceCreated", "Create", "created %s Service %s", typ, svc.Name)
	}
	s.service = svc
	r.setEndpoints(s)
	return nil
}

// setEndpoints reports where consumers or peers connect.
func (r *StreamTunnelReconciler) setEndpoints(s *tunnelScope) {
	t, svc := s.tunnel, s.service
	ports := make([]int32, len(s.listenPorts))
	for i, p := range s.listenPorts {
		ports[i] = int32(p)
	}
	dns := fmt.Sprintf("%s.%s.svc", svc.Name, svc.Namespace)
	eps := []scitunnelv1.TunnelEndpoint{{Type: "ClusterDNS", Address: dns, Ports: ports}}
	if ip := svc.Spec.ClusterIP; ip != "" && ip != corev1.ClusterIPNone {
		eps = append(eps, scitunnelv1.TunnelEndpoint{Type: "ClusterIP", Address: ip, Ports: ports})
	}
	if svc.Spec.Type == corev1.ServiceTypeNodePort || svc.Spec.Type == corev1.ServiceTypeLoadBalancer {
		var nodePorts []int32
		for _, p := range svc.Spec.Ports {
			if p.NodePort != 0 {
				nodePorts = append(nodePorts, p.NodePort)
			}
		}
		if len(nodePorts) > 0 {
			eps = append(eps, scitunnelv1.TunnelEndpoint{Type: "NodePort", Address: "*", Ports: nodePorts})
		}
	}
	primary := eps[0]
	for _, ing := range svc.Status.LoadBalancer.Ingress {
		addr := ing.IP
		if ing.Hostname != "" {
			addr = ing.Hostname
		}
		if addr != "" && len(eps) < 7 {
			ep := scitunnelv1.TunnelEndpoint{Type: "LoadBalancer", Address: addr, Ports: ports}
			eps = append(eps, ep)
			primary = ep
		}
	}
	if e := t.Spec.Exposure; e != nil && e.AdvertisedAddress != "" {
		ep := scitunnelv1.TunnelEndpoint{Type: "Advertised", Address: e.AdvertisedAddress, Ports: ports}
		eps = append(eps, ep)
		primary = ep
	}
	t.Status.Endpoints = eps
	t.Status.Endpoint = joinHostPorts(primary.Address, int32sToInts(primary.Ports))
}

// externalAddress is the address peers in other clusters should use, for the bundle.
func externalAddress(t *scitunnelv1.StreamTunnel) (string, []int) {
	for i := len(t.Status.Endpoints) - 1; i >= 0; i-- {
		ep := t.Status.Endpoints[i]
		if ep.Type == "Advertised" || ep.Type == "LoadBalancer" {
			return ep.Address, int32sToInts(ep.Ports)
		}
	}
	if len(t.Status.Endpoints) > 0 {
		return t.Status.Endpoints[0].Address, int32sToInts(t.Status.Endpoints[0].Ports)
	}
	return "", nil
}

func int32sToInts(in []int32) []int {
	out := make([]int, len(in))
	for i, v := range in {
		out[i] = int(v)
	}
	return out
}

// buildConfig renders the data-plane configuration for this end.
func (r *StreamTunnelReconciler) buildConfig(s *tunnelScope) (*config.Config, error) {
	t := s.tunnel
	routes, err := config.Expand(s.listenPorts, s.targets)
	if err != nil {
		return nil, err
	}
	cfg := &config.Config{
		Tunnel:   t.Namespace + "/" + t.Name,
		Role:     config.Role(t.Spec.Role),
		Protocol: config.Protocol(t.Spec.Protocol),
		Routes:   routes,
	}
	if t.Spec.Protocol == scitunnelv1.ProtocolUDP {
		cfg.UDPTransport = config.UDPTransport(t.Spec.UDPTransport)
		if cfg.UDPTransport == "" {
			cfg.UDPTransport = config.UDPOverTLS
		}
	}
	if usesTLS(t) {
		cfg.TLS = &config.TLSConfig{
			CertFile: TLSDir + "/tls.crt",
			KeyFile:  TLSDir + "/tls.key",
			CAFile:   TLSDir + "/ca.crt",
		}
		if t.Spec.Role == scitunnelv1.RoleInbound && len(t.Spec.Inbound.AllowedClients) > 0 {
			// The user's allow-list, plus the ends the operator wired or exported itself.
			allowed := slices.Clone(t.Spec.Inbound.AllowedClients)
			allowed = append(allowed, s.peerIDs...)
			if r.exportsBundle(t) {
				allowed = append(allowed, bundleIdentity(r.trustDomain(t), t.Namespace, t.Name))
			}
			slices.Sort(allowed)
			cfg.TLS.AllowedSANs = slices.Compact(allowed)
		}
		if t.Spec.Role == scitunnelv1.RoleOutbound {
			cfg.TLS.ServerName = s.serverName
		}
	}
	if s.tag != nil {
		cfg.Scitag = &config.Scitag{
			ExperimentID: int(s.tag.ExperimentID),
			ActivityID:   int(s.tag.ActivityID),
			Name:         s.tag.Name,
			Entropy:      s.tag.Entropy,
		}
	}
	tel := &config.Telemetry{SamplingRate: DefaultSampling, RegistryFile: RegistryFile}
	var own *config.Fireflies
	if ts := t.Spec.Telemetry; ts != nil {
		if ts.SamplingRate != nil {
			tel.SamplingRate = int(*ts.SamplingRate)
		}
		for _, c := range ts.Collectors {
			tel.Collectors = append(tel.Collectors, string(c))
		}
		own = firefliesFrom(ts.Fireflies)
	}
	cfg.Telemetry = tel
	if ff := mergeFireflies(own, s.fireflies); ff != nil {
		ff.Application = "scitunnel"
		cfg.Fireflies = ff
	}
	if t.Spec.IdleTimeout != nil {
		cfg.IdleTimeout = config.Duration{Duration: t.Spec.IdleTimeout.Duration}
	}
	cfg.Default()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return cfg, nil
}

// reconcileConfig applies the ConfigMap holding config.json and registry.json.
func (r *StreamTunnelReconciler) reconcileConfig(ctx context.Context, s *tunnelScope) error {
	t := s.tunnel
	if s.blocked {
		return nil
	}
	cfg, err := r.buildConfig(s)
	if err != nil {
		msg := fmt.Sprintf("the proxy configuration is invalid: %v", err)
		s.block("InvalidConfiguration", msg)
		s.degrade("InvalidConfiguration", msg)
		return nil
	}
	data, err := cfg.Marshal()
	if err != nil {
		return err
	}
	ac := corev1ac.ConfigMap(configMapName(t), t.Namespace).
		WithLabels(childLabels(t)).
		WithOwnerReferences(ownerRef(t)).
		WithData(map[string]string{ConfigKey: string(data), RegistryKey: string(s.registryJSON)})
	cur := &corev1.ConfigMap{}
	found, err := getCached(ctx, r.Client, client.ObjectKey{Namespace: t.Namespace, Name: configMapName(t)}, cur)
	if err != nil {
		return err
	}
	var current client.Object
	if found {
		current = cur
	}
	changed, err := r.apply(ctx, current, ac, nil)
	if err != nil {
		return err
	}
	if found && changed && cur.Data[ConfigKey] != string(data) {
		r.Recorder.Eventf(t, nil, corev1.EventTypeNormal, "ConfigurationChanged", "Update", "proxy configuration changed; rolling the proxy pods")
	}
	s.configHash = hashOf(data, s.registryJSON)
	return nil
}

// tagPendingWait bounds how long a new tunnel's pods wait for its ScitagPolicy to resolve; a
// policy that takes longer does not hold the data up (the pods start untagged and roll later).
const tagPendingWait = 30 * time.Second

// reconcileDeployment applies the proxy Deployment and reads its availability.
func (r *StreamTunnelReconciler) reconcileDeployment(ctx context.Context, s *tunnelScope) error {
	t := s.tunnel
	if s.blocked || s.configHash == "" {
		return r.observeDeployment(ctx, s) // keep reporting on pods that already run
	}
	if usesTLS(t) && s.tlsSecret == "" {
		return r.observeDeployment(ctx, s) // certificates not there yet: pods could not start
	}
	cur := &appsv1.Deployment{}
	found, err := getCached(ctx, r.Client, client.ObjectKeyFromObject(t), cur)
	if err != nil {
		return err
	}
	// A tunnel applied together with its ScitagPolicy: the policy resolves within moments.
	// Starting the pods untagged meanwhile would roll them again right away, and the first
	// consumers would stream, unlabelled, through pods that are already draining. (Wall-clock
	// time against the API server's timestamp: the reconciler's clock is for certificates.)
	if !found && s.tagPending && time.Since(t.CreationTimestamp.Time) < tagPendingWait {
		s.requeueAfter(time.Second)
		return nil
	}
	ac := appsv1ac.Deployment(t.Name, t.Namespace).
		WithLabels(childLabels(t)).
		WithOwnerReferences(ownerRef(t)).
		WithSpec(appsv1ac.DeploymentSpec().
			WithReplicas(replicasOf(t)).
			WithSelector(metav1ac.LabelSelector().WithMatchLabels(selectorLabels(t))).
			WithTemplate(r.podTemplate(s)))
	var current client.Object
	if found {
		current = cur
	}
	dep := &appsv1.Deployment{}
	changed, err := r.apply(ctx, current, ac, dep)
	if err != nil {
		return err
	}
	if !found && changed {
		r.Recorder.Eventf(t, dep, corev1.EventTypeNormal, "DeploymentCreated", "Create", "created proxy Deployment %s", dep.Name)
	}
	s.deployment = dep
	r.setAvailability(s)
	return nil
}

func (r *StreamTunnelReconciler) observeDeployment(ctx context.Context, s *tunnelScope) error {
	dep := &appsv1.Deployment{}
	found, err := getCached(ctx, r.Client, client.ObjectKeyFromObject(s.tunnel), dep)
	if err != nil || !found {
		return err
	}
	s.deployment = dep
	r.setAvailability(s)
	return nil
}

func replicasOf(t *scitunnelv1.StreamTunnel) int32 {
	if t.Spec.Replicas != nil {
		return *t.Spec.Replicas
	}
	return 1
}

// setAvailability derives ProxyAvailable and the scale status from the Deployment.
func (r *StreamTunnelReconciler) setAvailability(s *tunnelScope) {
	t, d := s.tunnel, s.deployment
	want := replicasOf(t)
	t.Status.Replicas = d.Status.Replicas
	t.Status.ReadyReplicas = d.Status.AvailableReplicas
	t.Status.Selector = labels.SelectorFromSet(selectorLabels(t)).String()
	for _, c := range d.Status.Conditions {
		if c.Type == appsv1.DeploymentReplicaFailure && c.Status == corev1.ConditionTrue {
			s.degrade("ReplicaFailure", fmt.Sprintf("the proxy pods cannot be created: %s", c.Message))
		}
		if c.Type == appsv1.DeploymentProgressing && c.Status == corev1.ConditionFalse && c.Reason == "ProgressDeadlineExceeded" {
			s.degrade("RolloutStuck", fmt.Sprintf("the proxy rollout is stuck: %s; check the pods' events", c.Message))
		}
	}
	switch {
	case want == 0:
		s.set(scitunnelv1.ConditionProxyAvailable, metav1.ConditionFalse, "ScaledToZero", "spec.replicas is 0: no proxy pod runs")
	case d.Status.AvailableReplicas > 0:
		s.set(scitunnelv1.ConditionProxyAvailable, metav1.ConditionTrue, "Available",
			fmt.Sprintf("%d of %d proxy pods available", d.Status.AvailableReplicas, want))
	default:
		s.set(scitunnelv1.ConditionProxyAvailable, metav1.ConditionFalse, "NoPodAvailable",
			fmt.Sprintf("0 of %d proxy pods available yet", want))
	}
}

// podTemplate is the proxy pod: the proxy container and the sFlow sidecar.
func (r *StreamTunnelReconciler) podTemplate(s *tunnelScope) *corev1ac.PodTemplateSpecApplyConfiguration {
	t := s.tunnel
	podLabels := map[string]string{}
	podAnnotations := map[string]string{}
	if p := t.Spec.Pod; p != nil {
		maps.Copy(podLabels, p.Labels)
		maps.Copy(podAnnotations, p.Annotations)
	}
	maps.Copy(podLabels, childLabels(t)) // ours win: the selector depends on them
	podAnnotations[AnnotationConfigHash] = s.configHash

	proto := listenerProtocol(t)
	proxyPorts := []*corev1ac.ContainerPortApplyConfiguration{
		corev1ac.ContainerPort().WithName("admin").WithContainerPort(AdminPort).WithProtocol(corev1.ProtocolTCP),
	}
	lowPort := false
	for i, p := range s.listenPorts {
		proxyPorts = append(proxyPorts, corev1ac.ContainerPort().WithName(portName(i)).WithContainerPort(int32(p)).WithProtocol(proto))
		if p < 1024 {
			lowPort = true
		}
	}
	mounts := []*corev1ac.VolumeMountApplyConfiguration{
		corev1ac.VolumeMount().WithName("config").WithMountPath(ConfigDir).WithReadOnly(true),
		corev1ac.VolumeMount().WithName("tmp").WithMountPath("/tmp"),
	}
	volumes := []*corev1ac.VolumeApplyConfiguration{
		corev1ac.Volume().WithName("config").WithConfigMap(corev1ac.ConfigMapVolumeSource().WithName(configMapName(t))),
		corev1ac.Volume().WithName("tmp").WithEmptyDir(corev1ac.EmptyDirVolumeSource().WithSizeLimit(resource.MustParse("16Mi"))),
	}
	if s.tlsSecret != "" {
		mounts = append(mounts, corev1ac.VolumeMount().WithName("tls").WithMountPath(TLSDir).WithReadOnly(true))
		volumes = append(volumes, corev1ac.Volume().WithName("tls").WithSecret(corev1ac.SecretVolumeSource().
			WithSecretName(s.tlsSecret).
			WithDefaultMode(0o440).
			WithItems(
				corev1ac.KeyToPath().WithKey("tls.crt").WithPath("tls.crt"),
				corev1ac.KeyToPath().WithKey("tls.key").WithPath("tls.key"),
				corev1ac.KeyToPath().WithKey("ca.crt").WithPath("ca.crt"),
			)))
	}

	proxy := corev1ac.Container().
		WithName(ProxyContainer).
		WithImage(r.Options.DataPlaneImage).
		WithArgs("run", "--config", ConfigFile).
		WithPorts(proxyPorts...).
		WithReadinessProbe(httpProbe("/readyz", AdminPort, 5)).
		WithLivenessProbe(httpProbe("/healthz", AdminPort, 10)).
		WithVolumeMounts(mounts...).
		WithSecurityContext(proxySecurityContext()).
		WithResources(resourcesOr(t.Spec.Pod, false))
	sampling := true
	if ts := t.Spec.Telemetry; ts != nil && ts.SamplingRate != nil && *ts.SamplingRate == 0 {
		sampling = false
	}
	sidecar := corev1ac.Container().
		WithName(SidecarContainer).
		WithImage(r.Options.DataPlaneImage).
		WithArgs("sflow", "--config", ConfigFile).
		WithPorts(
			corev1ac.ContainerPort().WithName("sflow").WithContainerPort(SFlowPort).WithProtocol(corev1.ProtocolUDP),
			corev1ac.ContainerPort().WithName("analyzer").WithContainerPort(AnalyzerPort).WithProtocol(corev1.ProtocolTCP),
		).
		WithReadinessProbe(httpProbe("/healthz", AnalyzerPort, 5)).
		WithLivenessProbe(httpProbe("/healthz", AnalyzerPort, 10)).
		WithVolumeMounts(
			corev1ac.VolumeMount().WithName("config").WithMountPath(ConfigDir).WithReadOnly(true),
			corev1ac.VolumeMount().WithName("tmp").WithMountPath("/tmp"),
		).
		WithSecurityContext(sflowSecurityContext(sampling)).
		WithResources(resourcesOr(t.Spec.Pod, true))
	if r.Options.ImagePullPolicy != "" {
		proxy.WithImagePullPolicy(r.Options.ImagePullPolicy)
		sidecar.WithImagePullPolicy(r.Options.ImagePullPolicy)
	}

	podSC := corev1ac.PodSecurityContext().
		WithFSGroup(dataPlaneUID).
		WithSeccompProfile(corev1ac.SeccompProfile().WithType(corev1.SeccompProfileTypeRuntimeDefault))
	if reflectFlowLabel(t, s.tag != nil) {
		// Namespaced, "unsafe" sysctl: the kubelet must allow it (see SysctlForbidden handling).
		podSC.WithSysctls(corev1ac.Sysctl().WithName(SysctlFlowLabelReflect).WithValue("1"))
	}
	if lowPort {
		// A safe, namespaced sysctl: lets the non-root proxy bind ports below 1024 without
		// NET_BIND_SERVICE.
		podSC.WithSysctls(corev1ac.Sysctl().WithName("net.ipv4.ip_unprivileged_port_start").WithValue("0"))
	}

	spec := corev1ac.PodSpec().
		WithAutomountServiceAccountToken(false). // data-plane pods hold no API credentials
		WithEnableServiceLinks(false).
		WithTerminationGracePeriodSeconds(45). // the proxy drains for up to 30s
		WithSecurityContext(podSC).
		WithContainers(proxy, sidecar).
		WithVolumes(volumes...)
	if p := t.Spec.Pod; p != nil {
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
	return corev1ac.PodTemplateSpec().
		WithLabels(podLabels).
		WithAnnotations(podAnnotations).
		WithSpec(spec)
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
// (dataplane/sampler). A file capability takes effect only without no_new_privs, hence
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
