package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docker/docker/client"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/auditlog/syslogtest"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/identity"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/preflight"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/test/identityenv"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/test/testimages"
)

var (
	busyboxOnce sync.Once
	busyboxRef  string
	busyboxErr  error
)

// busyboxImage builds (or finds) the local test image on the real engine,
// once per test binary.
func busyboxImage(t *testing.T) string {
	t.Helper()
	busyboxOnce.Do(func() {
		cli, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
		if err != nil {
			busyboxErr = err
			return
		}
		defer cli.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		imgs, err := testimages.Ensure(ctx, cli)
		busyboxRef, busyboxErr = imgs.Busybox, err
	})
	if busyboxErr != nil {
		t.Fatalf("the doctor tests need the Docker engine and the local test images: %v", busyboxErr)
	}
	return busyboxRef
}

// imageWithFileAt builds (once per content) an image from base with a
// regular file at path, where the token's tmpfs directory would go.
func imageWithFileAt(t *testing.T, base, path string) string {
	t.Helper()
	cli, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	ref, err := testimages.Build(ctx, cli, "gitlab-okta-executor-test/file-at", fmt.Sprintf("FROM %s\nRUN echo not-a-directory > %s\n", base, path))
	if err != nil {
		t.Fatalf("building an image with a file at %s: %v", path, err)
	}
	return ref
}

// doctorWorld is a settings file over the fake Okta and GitLab, a state
// directory and the real Docker engine.
type doctorWorld struct {
	t        *testing.T
	env      *identityenv.Env
	dir      string
	image    string
	okta     string // extra [okta] lines
	docker   string // extra [docker] lines
	top      string // extra top-level lines
	rules    string
	clientID string // default identityenv.ClientID
	keyFile  string
	gitlab   string // gitlab.url, default the fake's
}

func newDoctorWorld(t *testing.T, o identityenv.Options) *doctorWorld {
	if o.Lifetime == 0 {
		o.Lifetime = time.Hour
	}
	env := identityenv.StartWith(t, o)
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "state"), 0o700); err != nil {
		t.Fatal(err)
	}
	alg := "ES256"
	if o.RSA {
		alg = "RS256"
	}
	return &doctorWorld{
		t: t, env: env, dir: dir, image: busyboxImage(t),
		okta:     fmt.Sprintf("key_algorithm = %q\naudit_log = %q", alg, filepath.Join(dir, "state", "audit.log")),
		rules:    doctorRule("read", `scopes = ["ci:read"]`),
		clientID: identityenv.ClientID, keyFile: env.KeyFile, gitlab: env.GitLab.URL(),
	}
}

func (w *doctorWorld) settingsFile() string {
	self, err := os.Executable()
	if err != nil {
		w.t.Fatal(err)
	}
	// identityenv's sections, with this world's app and GitLab URL.
	sections := strings.NewReplacer(
		fmt.Sprintf("client_id = %q", identityenv.ClientID), fmt.Sprintf("client_id = %q", w.clientID),
		fmt.Sprintf("private_key_file = %q", w.env.KeyFile), fmt.Sprintf("private_key_file = %q", w.keyFile),
		fmt.Sprintf("key_id = %q", identityenv.KeyID), fmt.Sprintf("key_id = %q", keyIDOf(w.clientID)),
		fmt.Sprintf("url = %q", w.env.GitLab.URL()), fmt.Sprintf("url = %q", w.gitlab),
	).Replace(w.env.SettingsTOML(w.okta))
	body := fmt.Sprintf("dev_mode = true\nrunner_id = \"doctor-test\"\nstate_dir = %q\n%s\n[docker]\ndefault_image = %q\nrunner_binary = %q\n%s\n%s\n%s",
		filepath.Join(w.dir, "state"), w.top, w.image, self, w.docker, sections, w.rules)
	file := filepath.Join(w.dir, "settings.toml")
	if err := os.WriteFile(file, []byte(body), 0o600); err != nil {
		w.t.Fatal(err)
	}
	return file
}

func keyIDOf(clientID string) string {
	if clientID == identityenv.DPoPClientID {
		return identityenv.DPoPKeyID
	}
	return identityenv.KeyID
}

// doctorRule is a rule that check finds nothing to lint about.
func doctorRule(name, lines string) string {
	return fmt.Sprintf("\n[[policy.rules]]\nname = %q\nrequire_id_token = true\n%s\n[policy.rules.bound_claims]\nproject_path = [\"platform/%s\"]\n", name, lines, name)
}

type doctorRun struct {
	code    int
	text    string
	results map[string]preflight.Result
	order   []preflight.Result
}

// run runs doctor through realMain with --json; the fake's tokens must all
// be revoked afterwards and nothing secret printed.
func (w *doctorWorld) run() doctorRun { return w.runAs(false) }

// runBoth also runs doctor as text and checks that both agree.
func (w *doctorWorld) runBoth() doctorRun { return w.runAs(true) }

func (w *doctorWorld) runAs(text bool) doctorRun {
	w.t.Helper()
	file := w.settingsFile()
	var out, errOut bytes.Buffer
	code := realMain([]string{"doctor", "--settings", file, "--json"}, &out, &errOut, env(nil))
	var doc struct {
		Checks  []preflight.Result `json:"checks"`
		Summary map[string]int     `json:"summary"`
	}
	if err := json.Unmarshal(out.Bytes(), &doc); err != nil {
		w.t.Fatalf("doctor --json: exit %d, %v\n%s%s", code, err, out.String(), errOut.String())
	}
	r := doctorRun{code: code, results: map[string]preflight.Result{}, order: doc.Checks}
	for _, c := range doc.Checks {
		r.results[c.Name] = c
	}
	r.text = out.String()
	if text {
		var tb bytes.Buffer
		if tcode := realMain([]string{"doctor", "--settings", file}, &tb, &errOut, env(nil)); tcode != code {
			w.t.Errorf("text exit %d, json exit %d", tcode, code)
		}
		r.text = tb.String()
	}
	for _, tok := range w.env.Okta.Issued() {
		if !tok.Revoked {
			w.t.Errorf("doctor left token %s of %s unrevoked", tok.JTI, tok.ClientID)
		}
	}
	for _, secret := range []string{"eyJ", "PRIVATE KEY", "mgmt."} {
		if strings.Contains(r.text, secret) || strings.Contains(out.String(), secret) {
			w.t.Errorf("doctor printed something secret-looking (%q):\n%s", secret, r.text)
		}
	}
	return r
}

func (r doctorRun) want(t *testing.T, name string, status preflight.Status, detailPart string) preflight.Result {
	t.Helper()
	got, ok := r.results[name]
	if !ok {
		t.Fatalf("no check %q; got:\n%s", name, r.text)
	}
	if got.Status != status || !strings.Contains(got.Detail+" — "+got.Fix, detailPart) {
		t.Errorf("%s: %s %q — %q; want %s containing %q", name, got.Status, got.Detail, got.Fix, status, detailPart)
	}
	if status != preflight.Pass && got.Fix == "" && name != "okta.apps.rate_limit" {
		t.Errorf("%s: %s without a fix", name, status)
	}
	return got
}

func TestDoctorAllPass(t *testing.T) {
	w := newDoctorWorld(t, identityenv.Options{DPoPApp: true})
	w.okta += w.env.DPoPSection()
	w.rules += doctorRule("prod", fmt.Sprintf("scopes = [\"deploy:prod\"]\nauthorization_server = %q", identityenv.ProdServer)) +
		doctorRule("bound", "mode = \"dpop\"\nscopes = [\"ci:write\"]")
	r := w.runBoth()
	if r.code != 0 {
		t.Fatalf("exit %d\n%s", r.code, r.text)
	}
	for _, c := range r.order {
		if c.Status != preflight.Pass {
			t.Errorf("not PASS: %+v", c)
		}
	}
	r.want(t, "docker.engine", preflight.Pass, "answers: Docker")
	r.want(t, "docker.api_version", preflight.Pass, "within")
	r.want(t, "docker.default_image", preflight.Pass, "is present")
	r.want(t, "docker.tmpfs", preflight.Pass, "private tmpfs at /run/gitlab-okta")
	r.want(t, "runner_binary", preflight.Pass, "mounted into build containers")
	r.want(t, "state_dir", preflight.Pass, "mode 700")
	r.want(t, "okta.private_key_file", preflight.Pass, `signs ES256 with kid "runner-key-1"`)
	r.want(t, "okta.dpop.private_key_file", preflight.Pass, "0600")
	// A loopback server is not an Okta URL: its endpoints are discovered.
	r.want(t, "okta.discovery "+w.env.Issuer("default"), preflight.Pass, "discovered token endpoint "+w.env.Issuer("default")+"/v1/token")
	r.want(t, "okta.discovery "+w.env.Issuer(identityenv.ProdServer), preflight.Pass, "discovered token endpoint "+w.env.Issuer(identityenv.ProdServer)+"/v1/token")
	r.want(t, `okta.token rule "read"`, preflight.Pass, "got Bearer with ci:read")
	r.want(t, `okta.token rule "prod"`, preflight.Pass, "deploy:prod")
	r.want(t, `okta.token rule "bound"`, preflight.Pass, "DPoP-bound token")
	r.want(t, `okta.lifetime rule "read"`, preflight.Pass, "Okta grants 1h; the executor uses the rule's 15m")
	r.want(t, "gitlab.issuer", preflight.Pass, w.env.GitLab.URL())
	r.want(t, "gitlab.jwks", preflight.Pass, "serves 1 keys")
	// The audit log is created by doctor's own events; the second run
	// (text) then finds it 0600.
	r.want(t, "audit_log", preflight.Pass, "")

	// Every test token is audited as doctor, issued and revoked.
	f, err := os.Open(filepath.Join(w.dir, "state", "audit.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	n := 0
	for sc := bufio.NewScanner(f); sc.Scan(); n++ {
		var e identity.AuditEvent
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatal(err)
		}
		if e.Event != preflight.EventDoctor || e.Outcome != "issued_and_revoked" || e.TokenJTI == "" || e.Runner != "doctor-test" {
			t.Errorf("audit event %+v", e)
		}
	}
	if issued := len(w.env.Okta.Issued()); n != issued || n != 6 {
		t.Errorf("%d audit events for %d issued tokens, want 6 (3 rules, text and JSON runs)", n, issued)
	}
	// Two runs, each one token request for "read" and "prod" and two for
	// "bound": Okta's DPoP nonce challenge, then the proof with the nonce.
	if hits := w.env.Okta.Hits("/v1/token"); hits != 8 {
		t.Errorf("%d token requests, want 8 (the dpop rule answers a nonce challenge)", hits)
	}
	for _, line := range strings.Split(strings.TrimSpace(r.text), "\n") {
		if !strings.HasPrefix(line, "PASS ") && !strings.HasPrefix(line, "doctor: ") {
			t.Errorf("text line %q", line)
		}
	}
	if !strings.HasSuffix(r.text, fmt.Sprintf("doctor: %d passed, 0 warnings, 0 failed\n", len(r.order))) {
		t.Errorf("summary: %s", r.text)
	}
}

func TestDoctorDockerFailures(t *testing.T) {
	t.Run("engine unreachable", func(t *testing.T) {
		w := newDoctorWorld(t, identityenv.Options{})
		t.Setenv("DOCKER_HOST", "tcp://127.0.0.1:1")
		r := w.run()
		if r.code != 1 {
			t.Errorf("exit %d, want 1", r.code)
		}
		r.want(t, "docker.engine", preflight.Fail, "tcp://127.0.0.1:1 does not answer")
	})
	t.Run("image absent, pull policy never", func(t *testing.T) {
		w := newDoctorWorld(t, identityenv.Options{})
		w.image = "127.0.0.1:1/absent/image:1"
		w.docker = `pull_policy = ["never"]`
		r := w.run()
		r.want(t, "docker.default_image", preflight.Fail, "is absent and docker.pull_policy [never] never pulls")
		r.want(t, "docker.tmpfs", preflight.Warn, "not tested")
	})
	t.Run("image absent, registry unreachable", func(t *testing.T) {
		w := newDoctorWorld(t, identityenv.Options{})
		w.image = "127.0.0.1:1/absent/image:1"
		r := w.run()
		r.want(t, "docker.default_image", preflight.Fail, "is absent and its registry does not answer")
	})
	t.Run("tmpfs refused", func(t *testing.T) {
		w := newDoctorWorld(t, identityenv.Options{})
		// The settings accept /gitlab-okta (a top-level directory of its
		// own), but this image has a regular file there: the engine
		// itself refuses to mount a tmpfs over it. (A /proc path, the
		// engine's other refusal, is now refused by settings validation.)
		w.image = imageWithFileAt(t, w.image, "/gitlab-okta")
		w.okta += "\n[okta.delivery]\ntoken_file = \"/gitlab-okta/token\""
		r := w.run()
		r.want(t, "docker.tmpfs", preflight.Fail, "starting a container with a tmpfs at /gitlab-okta")
	})
}

func TestDoctorAPIVersionRange(t *testing.T) {
	for _, tc := range []struct {
		api, min string
		want     preflight.Status
	}{
		{"1.41", "1.12", preflight.Pass},
		{"1.40", "1.12", preflight.Warn},
		{"1.99", "1.90", preflight.Fail},
	} {
		got := preflight.CheckAPIVersion(tc.api, tc.min)
		if got.Status != tc.want || (tc.want != preflight.Pass && got.Fix == "") {
			t.Errorf("API %s (min %s): %+v, want %s", tc.api, tc.min, got, tc.want)
		}
	}
}

func TestDoctorHostFailures(t *testing.T) {
	t.Run("no runner binary", func(t *testing.T) {
		w := newDoctorWorld(t, identityenv.Options{})
		t.Setenv("PATH", t.TempDir())
		file := w.settingsFile()
		src, _ := os.ReadFile(file)
		self, _ := os.Executable()
		w.docker = ""
		// runner_binary unset: doctor looks where prepare looks.
		body := strings.Replace(string(src), fmt.Sprintf("runner_binary = %q\n", self), "", 1)
		if err := os.WriteFile(file, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		code := realMain([]string{"doctor", "--settings", file}, &out, &out, env(nil))
		if code != 1 || !strings.Contains(out.String(), "FAIL runner_binary: finding the gitlab-runner binary") {
			t.Errorf("exit %d:\n%s", code, out.String())
		}
	})
	t.Run("state dir open to others, audit log world-readable", func(t *testing.T) {
		w := newDoctorWorld(t, identityenv.Options{})
		if err := os.Chmod(filepath.Join(w.dir, "state"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(w.dir, "state", "audit.log"), nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(filepath.Join(w.dir, "state", "audit.log"), 0o644); err != nil {
			t.Fatal(err)
		}
		r := w.run()
		r.want(t, "state_dir", preflight.Fail, "has mode 755: others can read job secrets — chmod 700")
		r.want(t, "audit_log", preflight.Fail, "has mode 644")
	})
	t.Run("state dir missing", func(t *testing.T) {
		w := newDoctorWorld(t, identityenv.Options{})
		if err := os.Remove(filepath.Join(w.dir, "state")); err != nil {
			t.Fatal(err)
		}
		w.okta = `key_algorithm = "ES256"`
		r := w.run()
		r.want(t, "state_dir", preflight.Warn, "does not exist yet")
	})
	t.Run("signing key", func(t *testing.T) {
		w := newDoctorWorld(t, identityenv.Options{})
		w.okta = fmt.Sprintf("audit_log = %q", filepath.Join(w.dir, "state", "audit.log"))
		r := w.run()
		r.want(t, "okta.private_key_file", preflight.Warn, `set okta.key_algorithm = "ES256"`)
		if err := os.Chmod(w.keyFile, 0o644); err != nil {
			t.Fatal(err)
		}
		r = w.run()
		if r.code != 1 || len(r.order) != 1 {
			t.Fatalf("a key readable by others must stop doctor at the settings: %s", r.text)
		}
		r.want(t, "settings", preflight.Fail, "is readable by others (mode 644): chmod 600 it")
	})
}

func TestDoctorOktaFailures(t *testing.T) {
	t.Run("Okta's fixed layout (discovery = false) checked against the metadata", func(t *testing.T) {
		t.Parallel()
		w := newDoctorWorld(t, identityenv.Options{})
		w.okta += "\ndiscovery = false"
		w.rules = doctorRule("nowhere", "scopes = [\"ci:read\"]\nauthorization_server = \"ausnope\"") +
			doctorRule("read", "scopes = [\"ci:read\"]")
		r := w.run()
		r.want(t, "okta.discovery "+w.env.Issuer("default"), preflight.Pass, "metadata names issuer "+w.env.Issuer("default")+" and Okta's endpoints")
		r.want(t, "okta.discovery "+w.env.Issuer("ausnope"), preflight.Fail, "— check okta.org_url and the authorization server id")
	})
	t.Run("unknown authorization server and scope", func(t *testing.T) {
		t.Parallel()
		w := newDoctorWorld(t, identityenv.Options{})
		w.rules = doctorRule("nowhere", "scopes = [\"ci:read\"]\nauthorization_server = \"ausnope\"") +
			doctorRule("admin", "scopes = [\"ci:admin\"]")
		r := w.run()
		if r.code != 1 {
			t.Errorf("exit %d", r.code)
		}
		r.want(t, "okta.discovery "+w.env.Issuer("ausnope"), preflight.Fail, "no metadata document found (404 from")
		r.want(t, "okta.discovery "+w.env.Issuer("ausnope"), preflight.Fail, "— check okta.issuer")
		r.want(t, `okta.token rule "admin"`, preflight.Fail, "invalid_scope")
		r.want(t, `okta.token rule "admin"`, preflight.Fail, "create scope(s) ci:admin on "+w.env.Issuer("default"))
		r.want(t, `okta.token rule "nowhere"`, preflight.Fail, "")
	})
	t.Run("token-mode app requires DPoP", func(t *testing.T) {
		t.Parallel()
		w := newDoctorWorld(t, identityenv.Options{DPoPApp: true})
		w.clientID, w.keyFile = identityenv.DPoPClientID, w.env.DPoPKeyFile
		r := w.run()
		got := r.want(t, `okta.token rule "read"`, preflight.Fail, "app 0oa-runner-dpop-app requires DPoP, so it cannot serve token-mode rules")
		if !strings.Contains(got.Detail, "invalid_dpop_proof") || !strings.Contains(got.Fix, "turn off \"Require Demonstrating Proof of Possession") {
			t.Errorf("%+v", got)
		}
	})
	t.Run("dpop rule on an app that does not bind", func(t *testing.T) {
		t.Parallel()
		w := newDoctorWorld(t, identityenv.Options{})
		w.rules = doctorRule("bound", "mode = \"dpop\"\nscopes = [\"ci:read\"]")
		r := w.run()
		r.want(t, `okta.token rule "bound"`, preflight.Fail, "the token is not bound to the proof key")
	})
	t.Run("Okta lifetime under the refresh margin", func(t *testing.T) {
		t.Parallel()
		w := newDoctorWorld(t, identityenv.Options{Lifetime: 5 * time.Minute})
		r := w.run()
		r.want(t, `okta.lifetime rule "read"`, preflight.Fail, "Okta grants 5m, not more than okta.refresh_margin 5m")
	})
	t.Run("Okta lifetime under the rule's", func(t *testing.T) {
		t.Parallel()
		w := newDoctorWorld(t, identityenv.Options{Lifetime: 10 * time.Minute})
		r := w.run()
		if r.code != 0 {
			t.Errorf("warnings alone: exit %d", r.code)
		}
		r.want(t, `okta.lifetime rule "read"`, preflight.Warn, "Okta grants 10m, less than the rule's 15m: tokens expire early and are refreshed more often — set the access policy rule's access token lifetime")
	})
}

func TestDoctorAppMode(t *testing.T) {
	newAppWorld := func(t *testing.T) *doctorWorld {
		w := newDoctorWorld(t, identityenv.Options{RSA: true, AppMode: true})
		w.rules = doctorRule("per-job", fmt.Sprintf("mode = \"app\"\naccess_policy = %q\nscopes = [\"ci:read\"]", w.env.AppPolicy))
		return w
	}
	t.Run("pass", func(t *testing.T) {
		t.Parallel()
		w := newAppWorld(t)
		r := w.run()
		if r.code != 0 {
			t.Fatalf("exit %d\n%s", r.code, r.text)
		}
		r.want(t, `okta.apps rule "per-job"`, preflight.Pass, "management token works; access policy "+w.env.AppPolicy)
		r.want(t, "okta.apps.rate_limit", preflight.Pass, "okta.apps.max_concurrent 10 costs at most 30 app calls a minute")
	})
	t.Run("no admin role", func(t *testing.T) {
		t.Parallel()
		w := newAppWorld(t)
		w.env.Okta.RemoveAdminRole(identityenv.ClientID)
		r := w.run()
		r.want(t, `okta.apps rule "per-job"`, preflight.Fail, "forbidden (403 E0000006): the app has no admin role")
	})
	t.Run("policy not found and scope not granted", func(t *testing.T) {
		t.Parallel()
		w := newAppWorld(t)
		w.rules = doctorRule("gone", "mode = \"app\"\naccess_policy = \"00pnosuch\"\nscopes = [\"ci:read\"]") +
			doctorRule("wide", fmt.Sprintf("mode = \"app\"\naccess_policy = %q\nscopes = [\"ci:write\"]", w.env.AppPolicy))
		r := w.run()
		r.want(t, `okta.apps rule "gone"`, preflight.Fail, "access policy 00pnosuch does not exist on authorization server default")
		r.want(t, `okta.apps rule "wide"`, preflight.Fail, "has no active client_credentials rule granting ci:write")
	})
	t.Run("max_concurrent beyond the org's rate limit", func(t *testing.T) {
		t.Parallel()
		w := newAppWorld(t)
		w.okta += "\n[okta.apps]\nmax_concurrent = 1000"
		r := w.run()
		r.want(t, "okta.apps.rate_limit", preflight.Warn, "okta.apps.max_concurrent 1000 can cost 3000 app calls a minute, above the org's 1200/min")
	})
}

func TestDoctorGitLabFailures(t *testing.T) {
	t.Run("issuer is not gitlab.url", func(t *testing.T) {
		t.Parallel()
		w := newDoctorWorld(t, identityenv.Options{})
		w.gitlab = strings.Replace(w.env.GitLab.URL(), "127.0.0.1", "localhost", 1)
		r := w.run()
		r.want(t, "gitlab.issuer", preflight.Fail, fmt.Sprintf("set gitlab.url = %q", w.env.GitLab.URL()))
	})
	t.Run("keys unreachable", func(t *testing.T) {
		t.Parallel()
		w := newDoctorWorld(t, identityenv.Options{})
		w.env.GitLab.FailKeys(http.StatusInternalServerError)
		r := w.run()
		r.want(t, "gitlab.jwks", preflight.Fail, "HTTP 500")
	})
}

// TestDoctorAuditSyslog: doctor connects to the syslog receiver of
// [audit.syslog] and fails when nothing listens.
func TestDoctorAuditSyslog(t *testing.T) {
	rcv := syslogtest.ListenTCP(t)
	addr := rcv.Addr()
	w := newDoctorWorld(t, identityenv.Options{})
	w.rules += fmt.Sprintf("\n[audit.syslog]\naddress = \"tcp://%s\"\n", addr)
	r := w.run()
	r.want(t, "audit.syslog", preflight.Pass, "reached tcp://"+addr)
	rcv.Stop()
	r = w.run()
	r.want(t, "audit.syslog", preflight.Fail, "cannot reach tcp://"+addr)
	if r.code != 1 {
		t.Errorf("exit %d with the receiver down, want 1", r.code)
	}
}
