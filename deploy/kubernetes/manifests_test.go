package kubernetes

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// The image the Dockerfile makes, as the manifests name it, and where it
// puts the programs.
const (
	image  = "fanout:latest"
	binDir = "/usr/local/bin/"
)

// kinds are the objects the manifests may hold, by apiVersion and kind. A
// kind not here fails the test: each one here is checked below.
var kinds = map[string]func() metav1.Object{
	"v1 Namespace":                  func() metav1.Object { return new(corev1.Namespace) },
	"v1 Service":                    func() metav1.Object { return new(corev1.Service) },
	"apps/v1 Deployment":            func() metav1.Object { return new(appsv1.Deployment) },
	"policy/v1 PodDisruptionBudget": func() metav1.Object { return new(policyv1.PodDisruptionBudget) },
}

// decode decodes one YAML document into the API type of its kind, as
// strictly as the API server's strict field validation (kubectl apply
// --validate=strict): an unknown field, a field spelled in another case or
// a duplicate key is an error. It returns nil for an empty document.
func decode(doc []byte) (metav1.Object, error) {
	j, err := yaml.YAMLToJSONStrict(doc) // refuses duplicate keys
	if err != nil {
		return nil, err
	}
	if string(bytes.TrimSpace(j)) == "null" {
		return nil, nil
	}
	var tm metav1.TypeMeta
	if err := json.Unmarshal(j, &tm); err != nil {
		return nil, err
	}
	newObject, ok := kinds[tm.APIVersion+" "+tm.Kind]
	if !ok {
		return nil, fmt.Errorf("apiVersion %q kind %q: not a kind this test knows", tm.APIVersion, tm.Kind)
	}
	obj := newObject()
	strict, err := kjson.UnmarshalStrict(j, obj, kjson.DisallowDuplicateFields, kjson.DisallowUnknownFields)
	if err != nil {
		return nil, err
	}
	if len(strict) > 0 {
		return nil, fmt.Errorf("%s: %w", tm.Kind, errors.Join(strict...))
	}
	return obj, nil
}

// manifests are the objects of this folder's manifest files, by kind, and
// where each one is (file and name), for messages.
type manifests struct {
	files       []string // the files kubectl apply -f reads, in its order
	namespaces  []*corev1.Namespace
	deployments []*appsv1.Deployment
	services    []*corev1.Service
	pdbs        []*policyv1.PodDisruptionBudget
	at          map[metav1.Object]string // "x.yaml: Deployment x"
	file        map[metav1.Object]string
}

// load decodes every file of this folder that `kubectl apply -f` reads
// (.yaml, .yml and .json, not in subfolders), every document of each.
func load(t *testing.T) *manifests {
	t.Helper()
	entries, err := os.ReadDir(".")
	require.NoError(t, err)
	m := &manifests{at: map[metav1.Object]string{}, file: map[metav1.Object]string{}}
	for _, e := range entries { // ReadDir sorts by name, as kubectl does
		if e.IsDir() || !slices.Contains([]string{".yaml", ".yml", ".json"}, filepath.Ext(e.Name())) {
			continue
		}
		m.files = append(m.files, e.Name())
		f, err := os.Open(e.Name())
		require.NoError(t, err)
		r := utilyaml.NewYAMLReader(bufio.NewReader(f))
		for n := 1; ; n++ {
			doc, err := r.Read()
			if err == io.EOF {
				break
			}
			require.NoError(t, err, "%s: document %d", e.Name(), n)
			obj, err := decode(doc)
			require.NoError(t, err, "%s: document %d", e.Name(), n)
			if obj == nil {
				continue
			}
			var kind string
			switch o := obj.(type) {
			case *corev1.Namespace:
				kind, m.namespaces = "Namespace", append(m.namespaces, o)
			case *corev1.Service:
				kind, m.services = "Service", append(m.services, o)
			case *appsv1.Deployment:
				kind, m.deployments = "Deployment", append(m.deployments, o)
			case *policyv1.PodDisruptionBudget:
				kind, m.pdbs = "PodDisruptionBudget", append(m.pdbs, o)
			}
			m.at[obj] = fmt.Sprintf("%s: %s %s", e.Name(), kind, obj.GetName())
			m.file[obj] = e.Name()
		}
		require.NoError(t, f.Close())
	}
	require.NotEmpty(t, m.files, "no manifests here")
	return m
}

func TestDecodeRefusesWhatTheAPIServerWould(t *testing.T) {
	const deployment = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: x\n"
	cases := []struct {
		name, doc string
	}{
		{"unknown field", deployment + "spec:\n  replica: 2\n"},
		{"field in another case", deployment + "spec:\n  Replicas: 2\n"},
		{"duplicate key", deployment + "spec:\n  replicas: 2\n  replicas: 3\n"},
		{"unknown kind", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n"},
		{"old apiVersion", "apiVersion: policy/v1beta1\nkind: PodDisruptionBudget\nmetadata:\n  name: x\n"},
		{"wrong type", deployment + "spec:\n  replicas: two\n"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := decode([]byte(c.doc))
			require.Error(t, err)
		})
	}
	obj, err := decode([]byte(deployment + "spec:\n  replicas: 2\n"))
	require.NoError(t, err)
	require.EqualValues(t, 2, *obj.(*appsv1.Deployment).Spec.Replicas)
}

func TestNamespace(t *testing.T) {
	m := load(t)
	require.Len(t, m.namespaces, 1, "one Namespace")
	ns := m.namespaces[0]
	require.Equal(t, m.files[0], m.file[ns],
		"the Namespace is in the file kubectl apply -f reads first, so it exists before what goes in it")
	for obj, at := range m.at {
		if obj != ns {
			require.Equal(t, ns.Name, obj.GetNamespace(), "%s: namespace", at)
		}
	}
}

func TestLabels(t *testing.T) {
	m := load(t)
	check := func(at string, l map[string]string, name string) {
		t.Helper()
		require.Equal(t, name, l["app.kubernetes.io/name"], "%s: label app.kubernetes.io/name", at)
		require.Equal(t, "fanout", l["app.kubernetes.io/part-of"], "%s: label app.kubernetes.io/part-of", at)
	}
	for obj, at := range m.at {
		check(at, obj.GetLabels(), obj.GetName())
	}
	for _, d := range m.deployments {
		check(m.at[d]+" pod template", d.Spec.Template.Labels, d.Name)
	}
}

// selected returns the Deployments whose pods sel selects.
func (m *manifests) selected(sel labels.Selector) []*appsv1.Deployment {
	var ds []*appsv1.Deployment
	for _, d := range m.deployments {
		if !sel.Empty() && sel.Matches(labels.Set(d.Spec.Template.Labels)) {
			ds = append(ds, d)
		}
	}
	return ds
}

// serviceSelector is the selector of s's pods.
func serviceSelector(s *corev1.Service) labels.Selector {
	return labels.SelectorFromSet(s.Spec.Selector)
}

func TestDeploymentSelectors(t *testing.T) {
	m := load(t)
	require.NotEmpty(t, m.deployments)
	for _, d := range m.deployments {
		at := m.at[d]
		sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
		require.NoError(t, err, at)
		require.False(t, sel.Empty(), "%s: an empty selector", at)
		require.True(t, sel.Matches(labels.Set(d.Spec.Template.Labels)), "%s: the selector does not match the pod template's labels", at)
		require.Equal(t, []*appsv1.Deployment{d}, m.selected(sel), "%s: the selector matches the pods of another Deployment too", at)
		var services []string
		for _, s := range m.services {
			if slices.Contains(m.selected(serviceSelector(s)), d) {
				services = append(services, s.Name)
			}
		}
		require.Len(t, services, 1, "%s: one Service selects its pods", at)
	}
	for _, s := range m.services {
		require.Len(t, m.selected(serviceSelector(s)), 1, "%s: selects the pods of one Deployment", m.at[s])
	}
}

// containerPort returns the port of c that p names (by name, or by number),
// and whether c has one.
func containerPort(c corev1.Container, p intstr.IntOrString) (corev1.ContainerPort, bool) {
	for _, cp := range c.Ports {
		if p.Type == intstr.String && cp.Name == p.StrVal || p.Type == intstr.Int && cp.ContainerPort == p.IntVal {
			return cp, true
		}
	}
	return corev1.ContainerPort{}, false
}

// targetPort returns the port of the pods of d that sp reaches, and whether
// they have one.
func targetPort(d *appsv1.Deployment, sp corev1.ServicePort) (corev1.ContainerPort, bool) {
	target := sp.TargetPort
	if target.Type == intstr.Int && target.IntVal == 0 { // unset: the Service's port
		target = intstr.FromInt32(sp.Port)
	}
	for _, c := range d.Spec.Template.Spec.Containers {
		if cp, ok := containerPort(c, target); ok {
			return cp, true
		}
	}
	return corev1.ContainerPort{}, false
}

func TestServicePorts(t *testing.T) {
	m := load(t)
	for _, s := range m.services {
		require.NotEmpty(t, s.Spec.Ports, m.at[s])
		for _, d := range m.selected(serviceSelector(s)) {
			for _, sp := range s.Spec.Ports {
				cp, ok := targetPort(d, sp)
				require.True(t, ok, "%s: port %s (%d) targets %s, which %s has no container port of",
					m.at[s], sp.Name, sp.Port, sp.TargetPort.String(), m.at[d])
				require.Equal(t, protocolOf(sp.Protocol), protocolOf(cp.Protocol), "%s: port %s: protocol", m.at[s], sp.Name)
			}
		}
	}
}

// protocolOf is p, or TCP when it is unset, as the API server defaults it.
func protocolOf(p corev1.Protocol) corev1.Protocol {
	if p == "" {
		return corev1.ProtocolTCP
	}
	return p
}

// container is a container of a Deployment's pods and the program it runs.
type container struct {
	at      string // the Deployment and the container, for messages
	program string // x, y, z, middle, ...
	flags   []flagArg
	c       corev1.Container
	d       *appsv1.Deployment
}

// flagArg is one argument of a container: -name=value, or -name alone (a
// bool flag, or the allow-list's way to pass one).
type flagArg struct {
	name, value string
	hasValue    bool
}

// parseArgs reads a container's args. Each argument is one flag,
// -name=value or -name alone, so that the args can be read without knowing
// which flags of the program take a value: a value in an argument of its
// own would be taken for a bool flag here and as that flag's value by the
// program.
func parseArgs(args []string) ([]flagArg, error) {
	var flags []flagArg
	for _, a := range args {
		name, ok := strings.CutPrefix(a, "-")
		if !ok || name == "" || strings.HasPrefix(name, "-") {
			return nil, fmt.Errorf("argument %q: write each flag -name=value, one argument each (the programs take no other arguments)", a)
		}
		name, value, hasValue := strings.Cut(name, "=")
		flags = append(flags, flagArg{name: name, value: value, hasValue: hasValue})
	}
	return flags, nil
}

// flagValue returns the value of the last -name in fs (the one a program keeps),
// and whether there is one.
func flagValue(fs []flagArg, name string) (string, bool) {
	for i := len(fs) - 1; i >= 0; i-- {
		if fs[i].name == name {
			return fs[i].value, true
		}
	}
	return "", false
}

// containers returns every container of every Deployment of m, each with its
// program (the base name of its command, which is under binDir) and flags.
func (m *manifests) containers(t *testing.T) []container {
	t.Helper()
	var cs []container
	for _, d := range m.deployments {
		require.NotEmpty(t, d.Spec.Template.Spec.Containers, m.at[d])
		for _, c := range d.Spec.Template.Spec.Containers {
			at := fmt.Sprintf("%s container %s", m.at[d], c.Name)
			require.Len(t, c.Command, 1, "%s: the command is the program alone, its flags are the args", at)
			program, ok := strings.CutPrefix(c.Command[0], binDir)
			require.True(t, ok && program != "" && !strings.Contains(program, "/"), "%s: command %q is not a program in %s", at, c.Command[0], binDir)
			flags, err := parseArgs(c.Args)
			require.NoError(t, err, at)
			cs = append(cs, container{at: at, program: program, flags: flags, c: c, d: d})
		}
	}
	return cs
}

// flagPort returns the port of the address that flag name of c gives, and
// whether c has the flag.
func flagPort(t *testing.T, c container, name string) (int32, bool) {
	t.Helper()
	v, ok := flagValue(c.flags, name)
	if !ok {
		return 0, false
	}
	_, port, err := net.SplitHostPort(v)
	require.NoError(t, err, "%s: -%s", c.at, name)
	n, err := strconv.ParseUint(port, 10, 16)
	require.NoError(t, err, "%s: -%s", c.at, name)
	return int32(n), true
}

// listenFlags are the flags of the programs that name an address to listen
// on.
var listenFlags = []string{"listen", "http", "admin"}

func TestContainerPortsAreListenedOn(t *testing.T) {
	m := load(t)
	for _, c := range m.containers(t) {
		var listened []int32
		for _, name := range listenFlags {
			if port, ok := flagPort(t, c, name); ok {
				require.NotZero(t, port, "%s: -%s on a fixed port, for the Service and the probes", c.at, name)
				listened = append(listened, port)
			}
		}
		var ports []int32
		for _, cp := range c.c.Ports {
			require.NotEmpty(t, cp.Name, "%s: port %d has a name, for the Services and probes to use", c.at, cp.ContainerPort)
			ports = append(ports, cp.ContainerPort)
		}
		slices.Sort(listened)
		slices.Sort(ports)
		require.Equal(t, listened, ports, "%s: the container ports are the ports of its -listen, -http and -admin", c.at)
	}
}

func TestProbesOnTheAdminEndpoint(t *testing.T) {
	m := load(t)
	for _, c := range m.containers(t) {
		admin, ok := flagPort(t, c, "admin")
		require.True(t, ok, "%s: no -admin, which serves the probes", c.at)
		for _, p := range []struct {
			kind, path string
			probe      *corev1.Probe
		}{
			{"liveness", "/healthz", c.c.LivenessProbe},
			{"readiness", "/readyz", c.c.ReadinessProbe},
		} {
			require.NotNil(t, p.probe, "%s: no %s probe", c.at, p.kind)
			get := p.probe.HTTPGet
			require.NotNil(t, get, "%s: the %s probe is not httpGet", c.at, p.kind)
			require.Equal(t, p.path, get.Path, "%s: %s probe path", c.at, p.kind)
			cp, ok := containerPort(c.c, get.Port)
			require.True(t, ok, "%s: the %s probe's port %s is no container port", c.at, p.kind, get.Port.String())
			require.Equal(t, admin, cp.ContainerPort, "%s: the %s probe's port is -admin's", c.at, p.kind)
		}
	}
}

func TestTerminationGracePeriod(t *testing.T) {
	m := load(t)
	for _, c := range m.containers(t) {
		v, ok := flagValue(c.flags, "grace")
		require.True(t, ok, "%s: -grace given, not left to the program's default", c.at)
		grace, err := time.ParseDuration(v)
		require.NoError(t, err, "%s: -grace", c.at)
		var sleep time.Duration
		if l := c.c.Lifecycle; l != nil && l.PreStop != nil {
			require.NotNil(t, l.PreStop.Sleep, "%s: the image has no shell: a preStop hook can only sleep", c.at)
			sleep = time.Duration(l.PreStop.Sleep.Seconds) * time.Second
		}
		period := c.d.Spec.Template.Spec.TerminationGracePeriodSeconds
		require.NotNil(t, period, "%s: terminationGracePeriodSeconds", c.at)
		require.Greater(t, time.Duration(*period)*time.Second, sleep+grace,
			"%s: terminationGracePeriodSeconds leaves time for the preStop sleep and -grace, before SIGKILL", c.at)
	}
}

func TestLogsAsJSON(t *testing.T) {
	m := load(t)
	for _, c := range m.containers(t) {
		v, _ := flagValue(c.flags, "log-format")
		require.Equal(t, "json", v, "%s: -log-format=json, a JSON object a line for the cluster's log collector", c.at)
	}
}

func TestPodDisruptionBudgets(t *testing.T) {
	m := load(t)
	budgets := map[*appsv1.Deployment]int{}
	for _, p := range m.pdbs {
		sel, err := metav1.LabelSelectorAsSelector(p.Spec.Selector)
		require.NoError(t, err, m.at[p])
		ds := m.selected(sel)
		require.Len(t, ds, 1, "%s: selects the pods of one Deployment", m.at[p])
		d := ds[0]
		budgets[d]++
		require.NotNil(t, p.Spec.MinAvailable, "%s: minAvailable", m.at[p])
		require.Equal(t, intstr.FromInt32(1), *p.Spec.MinAvailable, "%s: minAvailable", m.at[p])
		require.NotNil(t, d.Spec.Replicas, "%s: replicas", m.at[d])
		require.Greater(t, *d.Spec.Replicas, p.Spec.MinAvailable.IntVal,
			"%s: more replicas than %s's minAvailable, or no pod could ever be evicted", m.at[d], m.at[p])
	}
	for _, d := range m.deployments {
		require.Equal(t, 1, budgets[d], "%s: one PodDisruptionBudget", m.at[d])
	}
}

func TestContainersRestricted(t *testing.T) {
	m := load(t)
	for _, d := range m.deployments {
		pod := d.Spec.Template.Spec
		psc := pod.SecurityContext
		require.NotNil(t, psc, "%s: pod securityContext", m.at[d])
		require.True(t, psc.RunAsNonRoot != nil && *psc.RunAsNonRoot, "%s: runAsNonRoot", m.at[d])
		if psc.RunAsUser != nil {
			require.NotZero(t, *psc.RunAsUser, "%s: runAsUser", m.at[d])
		}
		require.True(t, psc.SeccompProfile != nil && psc.SeccompProfile.Type == corev1.SeccompProfileTypeRuntimeDefault,
			"%s: seccompProfile RuntimeDefault, as the restricted Pod Security Standard wants", m.at[d])
		require.False(t, pod.HostNetwork || pod.HostPID || pod.HostIPC, "%s: host namespaces", m.at[d])
	}
	for _, c := range m.containers(t) {
		sc := c.c.SecurityContext
		require.NotNil(t, sc, "%s: securityContext", c.at)
		require.True(t, sc.AllowPrivilegeEscalation != nil && !*sc.AllowPrivilegeEscalation, "%s: allowPrivilegeEscalation false", c.at)
		require.True(t, sc.ReadOnlyRootFilesystem != nil && *sc.ReadOnlyRootFilesystem, "%s: readOnlyRootFilesystem", c.at)
		require.False(t, sc.Privileged != nil && *sc.Privileged, "%s: privileged", c.at)
		require.NotNil(t, sc.Capabilities, "%s: capabilities", c.at)
		require.Equal(t, []corev1.Capability{"ALL"}, sc.Capabilities.Drop, "%s: capabilities dropped", c.at)
		require.Empty(t, sc.Capabilities.Add, "%s: capabilities added", c.at)
	}
}

func TestImageAndResources(t *testing.T) {
	m := load(t)
	built := dockerfilePrograms(t)
	for _, c := range m.containers(t) {
		require.Equal(t, image, c.c.Image, "%s: image", c.at)
		require.Equal(t, corev1.PullIfNotPresent, c.c.ImagePullPolicy,
			"%s: imagePullPolicy IfNotPresent, so that an image loaded into the cluster is used (for :latest the default is Always)", c.at)
		require.Contains(t, built, c.program, "%s: runs %s, which the Dockerfile does not build", c.at, c.program)
		for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
			req, ok := c.c.Resources.Requests[r]
			require.True(t, ok, "%s: requests %s", c.at, r)
			limit, ok := c.c.Resources.Limits[r]
			require.True(t, ok, "%s: limits %s", c.at, r)
			require.LessOrEqual(t, req.Cmp(limit), 0, "%s: %s request over its limit", c.at, r)
		}
	}
}

// replicaFlags are the flags of the middle that name a route's replicas.
var replicaFlags = []string{"x", "y", "z"}

func TestMiddleFindsBackendsByHeadlessServices(t *testing.T) {
	m := load(t)
	ns := m.namespaces[0].Name
	services := map[string]*corev1.Service{}
	for _, s := range m.services {
		services[s.Name] = s
	}
	var middles int
	found := map[string]bool{}
	for _, c := range m.containers(t) {
		if c.program != "middle" {
			continue
		}
		middles++
		for _, route := range replicaFlags {
			v, ok := flagValue(c.flags, route)
			require.True(t, ok, "%s: -%s", c.at, route)
			for _, replica := range strings.Split(v, ",") {
				hostport, ok := strings.CutPrefix(replica, "dns:")
				require.True(t, ok, "%s: -%s %q: dns:NAME:PORT, resolved again every -resolve-every as pods come and go", c.at, route, replica)
				host, port, err := net.SplitHostPort(hostport)
				require.NoError(t, err, "%s: -%s", c.at, route)
				name, ok := strings.CutSuffix(host, "."+ns+".svc.cluster.local")
				require.True(t, ok, "%s: -%s %q: a Service's name in namespace %s", c.at, route, replica, ns)
				require.Equal(t, route, name, "%s: -%s names the Service of route %s", c.at, route, route)
				s := services[name]
				require.NotNil(t, s, "%s: -%s names Service %s, which is not here", c.at, route, name)
				require.Equal(t, corev1.ClusterIPNone, s.Spec.ClusterIP,
					"%s: headless (clusterIP: None), so that its name resolves to every ready pod", m.at[s])
				found[name] = true
				n, err := strconv.ParseInt(port, 10, 32)
				require.NoError(t, err, "%s: -%s", c.at, route)
				var sp *corev1.ServicePort
				for i := range s.Spec.Ports {
					if s.Spec.Ports[i].Port == int32(n) {
						sp = &s.Spec.Ports[i]
					}
				}
				require.NotNil(t, sp, "%s: -%s port %d is no port of %s", c.at, route, n, m.at[s])
				for _, d := range m.selected(serviceSelector(s)) {
					cp, ok := targetPort(d, *sp)
					require.True(t, ok, "%s: port %d targets no container port", m.at[s], n)
					require.Equal(t, int32(n), cp.ContainerPort,
						"%s: port %d targets container port %d: a headless Service's name resolves to the pods, so its port must be theirs", m.at[s], n, cp.ContainerPort)
				}
			}
		}
	}
	require.Equal(t, 1, middles, "one middle")
	for _, s := range m.services {
		if !found[s.Name] {
			require.NotEqual(t, corev1.ClusterIPNone, s.Spec.ClusterIP,
				"%s: a Service the middle does not resolve is a normal one: clients reach one virtual IP", m.at[s])
		}
	}
}
