package identity

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/auditlog"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

func auditEvents() map[string]AuditEvent {
	at := time.Date(2026, 3, 4, 10, 15, 30, 123000000, time.UTC)
	exp := at.Add(15 * time.Minute)
	base := AuditEvent{
		Time: at, Runner: "runner-7", JobID: 501, ProjectID: 42, ProjectPath: "group/app",
		PipelineID: 900, Ref: "main", Protected: ptr(true),
	}
	with := func(f func(*AuditEvent)) AuditEvent {
		e := base
		f(&e)
		return e
	}
	return map[string]AuditEvent{
		EventIssued: with(func(e *AuditEvent) {
			e.Event, e.Rule, e.Mode, e.Scopes = EventIssued, "deploy", "token", []string{"deploy:write", "artifacts:read"}
			e.ClaimSources = map[string]string{"project_id": SourcePayload, "ref_protected": SourceIDToken}
			e.Issuer, e.TokenJTI, e.ExpiresAt = "https://example.okta.com/oauth2/aus1deploy", "AT.abc123", &exp
			e.OktaRequestID, e.Outcome = "req-1", "success"
		}),
		EventRefreshed: with(func(e *AuditEvent) {
			e.Event, e.Rule, e.Mode, e.Scopes = EventRefreshed, "deploy", "token", []string{"deploy:write"}
			e.Issuer, e.TokenJTI, e.ExpiresAt = "https://example.okta.com/oauth2/aus1deploy", "AT.def456", &exp
			e.OktaRequestID, e.Outcome = "req-2", "success"
		}),
		EventRevoked: with(func(e *AuditEvent) {
			e.Event, e.Rule, e.Issuer, e.TokenJTI = EventRevoked, "deploy", "https://example.okta.com/oauth2/aus1deploy", "AT.def456"
			e.OktaRequestID, e.Outcome = "req-3", "success"
		}),
		EventRevokeFailed: with(func(e *AuditEvent) {
			e.Event, e.Rule, e.Issuer, e.TokenJTI = EventRevokeFailed, "deploy", "https://example.okta.com/oauth2/aus1deploy", "AT.def456"
			e.OktaRequestID, e.Outcome, e.Reason = "req-4", "failure", "okta: HTTP 429 E0000047 rate limit exceeded"
		}),
		EventDenied: with(func(e *AuditEvent) {
			e.Event, e.Protected, e.Outcome = EventDenied, nil, "failure"
			e.ClaimSources = map[string]string{"project_id": SourcePayload, "project_path": "absent", "ref_protected": SourcePredefinedVariable}
			e.Reason = `no policy rule matched: "deploy": ref_protected is "false" (predefined_variable; wants ["true"])`
		}),
		EventIssueFailed + "_unconfirmed": with(func(e *AuditEvent) {
			e.Event, e.Rule, e.Mode, e.Scopes = EventIssueFailed, "deploy", "token", []string{"deploy:write"}
			e.Issuer, e.AssertionJTI, e.Outcome = "https://example.okta.com/oauth2/aus1deploy", "Q7XGJ3VYRAX4GA3D2B6XTYHCZE", "unconfirmed"
			e.Reason = "token request may have been served but got no answer"
		}),
		EventRefreshAdjusted: with(func(e *AuditEvent) {
			e.Event, e.Rule, e.Mode, e.Scopes = EventRefreshAdjusted, "deploy", "token", []string{"deploy:write"}
			e.Issuer, e.TokenJTI, e.ExpiresAt = "https://example.okta.com/oauth2/aus1deploy", "AT.abc123", &exp
			e.TokenLifetime, e.RefreshMargin, e.Outcome = 300, 100, "adjusted"
			e.Reason = `Okta's tokens for rule "deploy" live 5m0s, less than twice okta.refresh_margin (5m0s): refreshing 1m40s before expiry instead`
		}),
		EventReaped: with(func(e *AuditEvent) {
			e.Event, e.Issuer, e.TokenJTI, e.Outcome = EventReaped, "https://example.okta.com/oauth2/aus1deploy", "AT.ghi789", "success"
			e.Mode, e.AppID = "app", "0oa1jobapp"
			e.Reason = "job state older than 24h without cleanup"
		}),
	}
}

func TestAuditGolden(t *testing.T) {
	for kind, e := range auditEvents() {
		t.Run(kind, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "audit.jsonl")
			if err := (&AuditLog{Path: path}).Record(e); err != nil {
				t.Fatalf("Record: %v", err)
			}
			got, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			golden := filepath.Join("testdata", "audit", kind+".golden")
			if *update {
				if err := os.MkdirAll(filepath.Dir(golden), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(golden, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test ./identity/ -run TestAuditGolden -update)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("audit line differs from %s\n got  %s want %s", golden, got, want)
			}
		})
	}
}

func TestAuditFileModes(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "new", "audit")
	path := filepath.Join(dir, "audit.jsonl")
	a := &AuditLog{Path: path}
	if err := a.Record(auditEvents()[EventIssued]); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(dir); err != nil || st.Mode().Perm() != 0o700 {
		t.Errorf("created directory mode = %v (err %v), want 0700", st.Mode().Perm(), err)
	}
	if st, err := os.Stat(path); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("created file mode = %v (err %v), want 0600", st.Mode().Perm(), err)
	}
	if err := a.Record(auditEvents()[EventRevoked]); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(path)
	if n := strings.Count(string(data), "\n"); n != 2 {
		t.Errorf("file has %d lines, want 2 (appended)", n)
	}
}

func TestAuditRefusesReadableFile(t *testing.T) {
	for _, mode := range []os.FileMode{0o644, 0o640, 0o604} {
		path := filepath.Join(t.TempDir(), "audit.jsonl")
		if err := os.WriteFile(path, []byte("existing\n"), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(path, mode); err != nil { // umask-proof
			t.Fatal(err)
		}
		err := (&AuditLog{Path: path}).Record(auditEvents()[EventIssued])
		if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("mode %04o", mode)) {
			t.Errorf("mode %04o: err = %v, want a refusal naming the mode", mode, err)
		}
		if data, _ := os.ReadFile(path); string(data) != "existing\n" {
			t.Errorf("mode %04o: file changed to %q", mode, data)
		}
	}
}

func TestAuditConcurrentRecordsAreWholeLines(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	const writers, each = 8, 50
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			a := &AuditLog{Path: path} // as separate processes would
			for i := range each {
				e := auditEvents()[EventIssued]
				e.JobID = int64(w*1000 + i)
				e.Reason = strings.Repeat("r", 2000) // lines larger than a pipe buffer chunk
				if err := a.Record(e); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	seen := map[int64]bool{}
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var e AuditEvent
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("line %d is not a whole event: %v", len(seen)+1, err)
		}
		seen[e.JobID] = true
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(seen) != writers*each {
		t.Errorf("read %d distinct events, want %d", len(seen), writers*each)
	}
	if rep, err := auditlog.Verify([]string{path}, auditlog.VerifyOptions{}); err != nil || rep.LastSeq != writers*each {
		t.Errorf("the lines are not one chain: %+v, %v", rep, err)
	}
}

func TestAuditMirrorsToLogger(t *testing.T) {
	var buf bytes.Buffer
	logger := hclog.New(&hclog.LoggerOptions{Output: &buf, JSONFormat: true, Level: hclog.Info, DisableTime: true})
	e := auditEvents()[EventIssued]
	if err := (&AuditLog{Logger: logger}).Record(e); err != nil {
		t.Fatal(err)
	}
	var logged map[string]any
	if err := json.Unmarshal(buf.Bytes(), &logged); err != nil {
		t.Fatalf("log line %q: %v", buf.String(), err)
	}
	line, _ := json.Marshal(e)
	var want map[string]any
	if err := json.Unmarshal(line, &want); err != nil {
		t.Fatal(err)
	}
	if logged["@level"] != "info" || logged["@message"] != "audit" {
		t.Errorf("logged %v, want an info message \"audit\"", logged)
	}
	for k, v := range want {
		if fmt.Sprint(logged[k]) != fmt.Sprint(v) {
			t.Errorf("logged %s = %v, want %v", k, logged[k], v)
		}
	}
}

func TestAuditStampsZeroTime(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.FixedZone("X", 3600))
	e := auditEvents()[EventDenied]
	e.Time = time.Time{}
	if err := (&AuditLog{Path: path, Clock: func() time.Time { return at }}).Record(e); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(path)
	if !strings.HasPrefix(string(data), `{"time":"2026-01-02T02:04:05Z",`) {
		t.Errorf("line %s, want the clock's time in UTC", data)
	}
}
