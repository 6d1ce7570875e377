// Command demo is `make demo`: it runs one CI job through all four stages
// of the built gitlab-okta-executor, in Docker, with the local Okta dev
// issuer as the identity provider. The job reads its token, calls a
// protected endpoint (a service container that validates Okta's JWTs) with
// it, and after cleanup the demo shows Okta's introspection reporting the
// token inactive. Everything is local: images are built from this machine's
// files and the issuer listens on loopback.
package main

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/docker/docker/client"
	"github.com/go-jose/go-jose/v4"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/identity"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/identity/okta"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/test/fakeokta"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/test/harness"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/test/testimages"
)

const (
	clientID = "0oa-demo-runner"
	keyID    = "demo-key-1"
	scope    = "demo:read"
)

func main() {
	executorBin := flag.String("executor", "bin/gitlab-okta-executor", "the built executor")
	issuerBin := flag.String("issuer", "bin/okta-dev-issuer", "the built dev issuer")
	flag.Parse()
	if err := run(*executorBin, *issuerBin); err != nil {
		fmt.Fprintln(os.Stderr, "demo failed:", err)
		os.Exit(1)
	}
}

func step(format string, args ...any) { fmt.Printf("\n==> "+format+"\n", args...) }

func run(executorBin, issuerBin string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	work, err := os.MkdirTemp("", "gitlab-okta-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	executorBin, _ = filepath.Abs(executorBin)

	step("building the local images (no registry needed)")
	cli, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		return err
	}
	images, err := testimages.Ensure(ctx, cli)
	if err != nil {
		return err
	}
	wd, _ := os.Getwd()
	resource, err := testimages.DemoResource(ctx, cli, wd)
	if err != nil {
		return err
	}
	runnerBin := filepath.Join(work, "gitlab-runner")
	if err := goBuild("./test/fakerunner", runnerBin); err != nil {
		return err
	}

	step("starting the Okta dev issuer with the runner's service app")
	key, err := fakeokta.NewClientKey(keyID, jose.ES256)
	if err != nil {
		return err
	}
	keyFile, jwksFile := filepath.Join(work, "runner-key.pem"), filepath.Join(work, "runner-jwks.json")
	der, err := x509.MarshalPKCS8PrivateKey(key.Private.Key)
	if err != nil {
		return err
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		return err
	}
	jwks, _ := json.Marshal(key.JWKS())
	if err := os.WriteFile(jwksFile, jwks, 0o600); err != nil {
		return err
	}
	ready := filepath.Join(work, "issuer-ready")
	issuerCmd := exec.CommandContext(ctx, issuerBin, "--addr", "127.0.0.1:0", "--client-id", clientID,
		"--client-jwks", jwksFile, "--scopes", scope, "--lifetime", "5m", "--ready-file", ready)
	issuerLog, err := os.Create(filepath.Join(work, "issuer.log"))
	if err != nil {
		return err
	}
	issuerCmd.Stderr, issuerCmd.Stdout = issuerLog, issuerLog
	if err := issuerCmd.Start(); err != nil {
		return err
	}
	defer func() { issuerCmd.Process.Signal(os.Interrupt); issuerCmd.Wait() }()
	issuer, err := waitForFile(ctx, ready)
	if err != nil {
		return fmt.Errorf("dev issuer did not start: %w", err)
	}
	fmt.Println("issuer:", issuer)
	keys, err := httpGet(issuer + "/v1/keys")
	if err != nil {
		return err
	}

	step("writing the executor settings (dev mode: plain http on loopback)")
	stateDir := filepath.Join(work, "state")
	settings := filepath.Join(work, "settings.toml")
	org := issuer[:strings.Index(issuer, "/oauth2/")]
	if err := os.WriteFile(settings, []byte(fmt.Sprintf(`runner_id = "demo"
state_dir = %q
log_file = %q
dev_mode = true
[docker]
runner_binary = %q
pull_policy = ["never"]
[okta]
org_url = %q
client_id = %q
private_key_file = %q
key_id = %q
assertion_audience = "endpoint"
default_lifetime = "5m"
refresh_margin = "1m"
[[policy.rules]]
name = "demo-projects"
scopes = [%q]
[policy.rules.bound_claims]
project_id = ["42"]
`, stateDir, filepath.Join(work, "executor.log"), runnerBin, org, clientID, keyFile, keyID, scope)), 0o600); err != nil {
		return err
	}

	args := func(c string) []string { return []string{c, "--settings", settings} }
	r := &harness.Runner{Binary: executorBin, ConfigArgs: args("config"), PrepareArgs: args("prepare"),
		RunArgs: args("run"), CleanupArgs: args("cleanup"), LogWriter: os.Stdout,
		Env: []string{"PATH=" + os.Getenv("PATH"), "HOME=" + work}}
	job := harness.Job{
		Payload: harness.Payload{
			JobInfo: harness.JobInfo{ProjectID: 42, ProjectFullPath: "demo/app"},
			Image:   harness.Image{Name: images.Busybox},
			Services: []harness.Image{{Name: resource, Alias: "api", Variables: []harness.Variable{
				{Key: "DEMO_JWKS", Value: keys}, {Key: "DEMO_ISSUER", Value: issuer}, {Key: "DEMO_SCOPE", Value: scope}}}},
		},
		Steps: []harness.Step{{Name: "script", Script: []string{
			`echo "token file: $OKTA_ACCESS_TOKEN_FILE (mode $(stat -c %a "$OKTA_ACCESS_TOKEN_FILE"))"`,
			`echo "scopes: $OKTA_SCOPES; expires: $OKTA_TOKEN_EXPIRES_AT"`,
			`echo "the token is masked in the log: $OKTA_ACCESS_TOKEN"`,
			`wget -qO- --header "Authorization: Bearer $(cat "$OKTA_ACCESS_TOKEN_FILE")" http://api:8080/hello; echo`,
		}}},
	}
	a, err := r.NewAttempt(job)
	if err != nil {
		return err
	}
	defer a.Close()

	step("job log (config, prepare, run sub-stages, cleanup)")
	for _, stage := range []func(context.Context) (harness.StageRun, error){a.Config, a.Prepare} {
		if st, err := stage(ctx); err != nil || st.ExitCode != 0 {
			return fmt.Errorf("%s failed (exit %d): %v", st.Name, st.ExitCode, err)
		}
	}
	// The operator can read the 0600 ledger; the demo does so only to ask
	// Okta about the token after cleanup.
	token, err := ledgerToken(stateDir)
	if err != nil {
		return err
	}
	for _, sub := range []string{"prepare_script", "get_sources", "build_script"} {
		if st, err := a.Run(ctx, sub); err != nil || st.ExitCode != 0 {
			return fmt.Errorf("%s failed (exit %d): %v", sub, st.ExitCode, err)
		}
	}
	if st, err := a.Cleanup(ctx); err != nil || st.ExitCode != 0 {
		return fmt.Errorf("cleanup failed (exit %d): %v\n%s", st.ExitCode, err, st.Output)
	}

	step("asking the issuer about the job's token after cleanup (RFC 7662 introspection)")
	signer, err := okta.LoadPrivateKey(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	if err != nil {
		return err
	}
	oc, err := okta.New(okta.Config{ClientID: clientID, Key: signer, KeyID: keyID, HTTPClient: &http.Client{Timeout: 10 * time.Second}})
	if err != nil {
		return err
	}
	active, err := oc.Introspect(ctx, issuer, identity.Secret(token))
	if err != nil {
		return err
	}
	fmt.Printf("token active after cleanup: %v\n", active)
	if active {
		return errors.New("the job's token is still active after cleanup")
	}

	step("audit log")
	audit, err := os.ReadFile(filepath.Join(stateDir, "audit.log"))
	if err != nil {
		return err
	}
	fmt.Print(string(audit))
	return nil
}

func goBuild(pkg, out string) error {
	cmd := exec.Command("go", "build", "-o", out, pkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("building %s: %v\n%s", pkg, err, b)
	}
	return nil
}

func waitForFile(ctx context.Context, name string) (string, error) {
	for {
		if b, err := os.ReadFile(name); err == nil && len(b) > 0 {
			return strings.TrimSpace(string(b)), nil
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func httpGet(url string) (string, error) {
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

func ledgerToken(stateDir string) (string, error) {
	matches, _ := filepath.Glob(filepath.Join(stateDir, "jobs", "*", "state.json"))
	if len(matches) != 1 {
		return "", fmt.Errorf("want one job state, found %d", len(matches))
	}
	b, err := os.ReadFile(matches[0])
	if err != nil {
		return "", err
	}
	var st struct {
		Credentials []struct {
			Tokens []struct {
				Token string `json:"token"`
			} `json:"tokens"`
		} `json:"credentials"`
	}
	if err := json.Unmarshal(b, &st); err != nil || len(st.Credentials) == 0 || len(st.Credentials[0].Tokens) == 0 {
		return "", fmt.Errorf("no token in the job's ledger: %v", err)
	}
	return st.Credentials[0].Tokens[0].Token, nil
}
