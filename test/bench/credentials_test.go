package bench

import (
	"context"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/broker"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/executor"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/identity"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/identity/okta"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/test/fakeokta"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/test/identityenv"
)

// credentialsPolicy: project g/one gets one credential, g/two two, on two
// authorization servers.
const credentialsPolicy = `
[[policy.rules]]
name = "one"
scopes = ["ci:read"]
bound_claims = { project_path = ["g/one"] }

[[policy.rules]]
name = "two"
bound_claims = { project_path = ["g/two"] }
[[policy.rules.credentials]]
name = "ci"
scopes = ["ci:read"]
[[policy.rules.credentials]]
name = "deploy"
authorization_server = "` + identityenv.ProdServer + `"
scopes = ["deploy:prod"]
`

// BenchmarkCredentials measures a job's identity wall time (Authorize,
// Issue, RevokeAll through package broker against the fake Okta on
// loopback) for a rule granting two credentials on two authorization
// servers against a rule granting one, in the same run. The two are issued
// (and revoked) concurrently, so x-two-over-one (the ratio of the medians)
// should stay near 1, not 2. On loopback the fake runs in this process on
// the same two cores, so its own work (RSA signing) is not free to overlap;
// rtt-20ms adds a 20 ms wait before every answer, the order of a round
// trip to Okta's cloud, which is what concurrent issuance overlaps.
func BenchmarkCredentials(b *testing.B) {
	b.Run("loopback", func(b *testing.B) { benchCredentials(b, 0) })
	b.Run("rtt-20ms", func(b *testing.B) { benchCredentials(b, 20*time.Millisecond) })
}

func benchCredentials(b *testing.B, rtt time.Duration) {
	env := identityenv.Start(b, time.Hour)
	if rtt > 0 {
		env.Okta.Inject(fakeokta.Fault{Delay: rtt, Count: math.MaxInt32})
	}
	dir := b.TempDir()
	sp := filepath.Join(dir, "settings.toml")
	body := "dev_mode = true\nrunner_id = \"bench\"\nstate_dir = \"" + dir + "\"\n" +
		env.SettingsTOML(`audit_log = "`+filepath.Join(dir, "audit.log")+`"`) + "\n[policy]\non_no_match = \"fail\"\n" + credentialsPolicy
	if err := os.WriteFile(sp, []byte(body), 0o600); err != nil {
		b.Fatal(err)
	}
	s, err := executor.LoadSettings(sp)
	if err != nil {
		b.Fatal(err)
	}
	key, err := okta.LoadPrivateKey(s.Identity.PrivateKeyPEM())
	if err != nil {
		b.Fatal(err)
	}
	transport := http.DefaultTransport.(*http.Transport).Clone()
	defer transport.CloseIdleConnections()
	client, err := okta.New(okta.Config{ClientID: identityenv.ClientID, Key: key, KeyID: identityenv.KeyID,
		HTTPClient: &http.Client{Transport: transport, Timeout: 10 * time.Second}, MaxAttempts: 1})
	if err != nil {
		b.Fatal(err)
	}
	br := &broker.Broker{Settings: s, Provider: client, Log: hclog.NewNullLogger(), JobLog: io.Discard,
		Audit: &identity.AuditLog{Path: s.Identity.AuditLog}}
	store := executor.NewMemStore()
	ctx := context.Background()
	var jobID int64
	job := func(project string, want int) time.Duration {
		jobID++
		p := &executor.Payload{ID: jobID, JobInfo: executor.PayloadJobInfo{ProjectID: 7, ProjectFullPath: project}}
		st := &executor.JobState{Runner: "bench", JobID: jobID}
		l := executor.NewLedger(store, st)
		start := time.Now()
		if err := br.Authorize(ctx, p, st); err != nil {
			b.Fatal(err)
		}
		if err := br.Issue(ctx, l); err != nil {
			b.Fatal(err)
		}
		if err := br.RevokeAll(ctx, l, "bench"); err != nil {
			b.Fatal(err)
		}
		d := time.Since(start)
		if len(st.Credentials) != want || st.LiveTokens() != 0 {
			b.Fatalf("%s: %d credentials, %d live", project, len(st.Credentials), st.LiveTokens())
		}
		return d
	}
	job("g/one", 1) // warm up the connection and both sides
	job("g/two", 2)
	var one, two []time.Duration
	b.ResetTimer()
	for range b.N {
		one = append(one, job("g/one", 1))
		two = append(two, job("g/two", 2))
	}
	b.StopTimer()
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(ms(median(one)), "ms/one-credential")
	b.ReportMetric(ms(median(two)), "ms/two-credentials")
	b.ReportMetric(float64(median(two))/float64(median(one)), "x-two-over-one")
}
