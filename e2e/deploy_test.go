package e2e

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

// credentialsDir writes the files the examples and manifests name: a
// token file, a JWT secret, an admin token and a TLS pair (under the names
// both use: tls/cert.pem, tls/key.pem, tls.crt, tls.key).
func credentialsDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	must(t, err)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "gateway"},
		DNSNames: []string{"localhost"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	must(t, err)
	kder, err := x509.MarshalECPrivateKey(key)
	must(t, err)
	cert := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	kpem := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
	must(t, os.MkdirAll(filepath.Join(dir, "tls"), 0o700))
	for name, content := range map[string][]byte{
		"tokens.txt":   []byte(sha(aliceToken) + " alice\n"),
		"jwt.key":      []byte(jwtSecret + "\n"),
		"admin.token":  []byte(adminToken + "\n"),
		"tls/cert.pem": cert, "tls/key.pem": kpem,
		"tls.crt": cert, "tls.key": kpem,
	} {
		must(t, os.WriteFile(filepath.Join(dir, name), content, 0o600))
	}
	return dir
}

// TestExamplesPassCheck (SPEC 12): every config in examples/ and the one in
// the Kubernetes manifest pass `gateway check` (exit 0), with the files
// they name present.
func TestExamplesPassCheck(t *testing.T) {
	files, err := filepath.Glob("../examples/*.yaml")
	must(t, err)
	if len(files) < 6 {
		t.Fatalf("examples/: %d configs, want the six of SPEC 12's list", len(files))
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			dir := credentialsDir(t)
			data, err := os.ReadFile(f)
			must(t, err)
			must(t, os.WriteFile(filepath.Join(dir, "gateway.yaml"), data, 0o600))
			if out, errOut, code := runGateway(t, dir, "check", "-c", "gateway.yaml"); code != 0 {
				t.Fatalf("gateway check %s: exit %d\n%s%s", f, code, out, errOut)
			}
		})
	}
	t.Run("k8s configmap", func(t *testing.T) {
		dir := credentialsDir(t)
		cfg := k8sDocs(t)["ConfigMap"]["data"].(map[string]any)["gateway.yaml"].(string)
		cfg = strings.ReplaceAll(cfg, "/etc/gateway/credentials/", dir+"/")
		must(t, os.WriteFile(filepath.Join(dir, "gateway.yaml"), []byte(cfg), 0o600))
		if out, errOut, code := runGateway(t, dir, "check", "-c", "gateway.yaml"); code != 0 {
			t.Fatalf("gateway check of the ConfigMap: exit %d\n%s%s", code, out, errOut)
		}
	})
}

// k8sDocs reads deploy/k8s/gateway.yaml by kind.
func k8sDocs(t *testing.T) map[string]map[string]any {
	t.Helper()
	data, err := os.ReadFile("../deploy/k8s/gateway.yaml")
	must(t, err)
	docs := map[string]map[string]any{}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		var d map[string]any
		if err := dec.Decode(&d); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("deploy/k8s/gateway.yaml: %v", err)
		}
		docs[d["kind"].(string)] = d
	}
	return docs
}

func dig(t *testing.T, v any, path ...any) any {
	t.Helper()
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, ok := v.(map[string]any)
			if !ok {
				t.Fatalf("manifest: no %q in %v", k, v)
			}
			v = m[k]
		case int:
			l, ok := v.([]any)
			if !ok || len(l) <= k {
				t.Fatalf("manifest: no item %d in %v", k, v)
			}
			v = l[k]
		}
	}
	return v
}

// TestKubernetesManifests (SPEC 12): the Deployment is ready on /readyz,
// leaves the endpoints before it drains (preStop), gives the drain more
// time than drain_timeout, runs as non-root; a Service and a
// PodDisruptionBudget come with it.
func TestKubernetesManifests(t *testing.T) {
	docs := k8sDocs(t)
	for _, kind := range []string{"ConfigMap", "Deployment", "Service", "PodDisruptionBudget"} {
		if docs[kind] == nil {
			t.Fatalf("deploy/k8s/gateway.yaml has no %s", kind)
		}
	}
	pod := dig(t, docs["Deployment"], "spec", "template", "spec")
	c := dig(t, pod, "containers", 0)
	if p := dig(t, c, "readinessProbe", "httpGet", "path"); p != "/readyz" {
		t.Errorf("readiness probe on %v, want /readyz", p)
	}
	if dig(t, c, "lifecycle", "preStop") == nil {
		t.Error("no preStop: the pod would drain while still in the Service's endpoints")
	}
	var cfg struct {
		DrainTimeout string `yaml:"drain_timeout"`
	}
	must(t, yaml.Unmarshal([]byte(dig(t, docs["ConfigMap"], "data", "gateway.yaml").(string)), &cfg))
	drain, err := time.ParseDuration(cfg.DrainTimeout)
	must(t, err)
	grace := time.Duration(dig(t, pod, "terminationGracePeriodSeconds").(int)) * time.Second
	if grace <= drain+5*time.Second {
		t.Errorf("terminationGracePeriodSeconds %v, want more than drain_timeout %v plus the preStop", grace, drain)
	}
	if dig(t, pod, "securityContext", "runAsNonRoot") != true {
		t.Error("the pod may run as root")
	}
	if dig(t, docs["PodDisruptionBudget"], "spec", "maxUnavailable") == nil {
		t.Error("the PodDisruptionBudget bounds nothing")
	}
}

// TestSystemdUnitVerifies (SPEC 12): deploy/gateway.service passes
// `systemd-analyze verify` without a warning (with ExecStart pointed at the
// binary under test), and reloads by SIGHUP.
func TestSystemdUnitVerifies(t *testing.T) {
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("systemd-analyze not found (scripts/test.sh installs systemd)")
		}
		t.Skip("systemd-analyze not installed")
	}
	unit, err := os.ReadFile("../deploy/gateway.service")
	must(t, err)
	if !strings.Contains(string(unit), "ExecReload=/bin/kill -HUP $MAINPID") {
		t.Error("the unit does not reload by SIGHUP")
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "gateway.service")
	must(t, os.WriteFile(path, bytes.ReplaceAll(unit, []byte("/usr/local/bin/gateway"), []byte(gatewayBin)), 0o644))
	cmd := exec.Command("systemd-analyze", "verify", path)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil || out.Len() != 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out.String())
	}
}
