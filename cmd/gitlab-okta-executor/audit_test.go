package main

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/auditlog/syslogtest"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/executor"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/identity"
)

// auditSettings writes valid settings whose state dir and audit log are
// in a temp dir, with an HMAC key and the given extra TOML.
func auditSettings(t *testing.T, extra string) (file, dir string) {
	t.Helper()
	dir = testKeyDir(t)
	src, err := os.ReadFile("testdata/check/valid.toml")
	if err != nil {
		t.Fatal(err)
	}
	key := filepath.Join(dir, "audit.key")
	if err := os.WriteFile(key, []byte(strings.Repeat("5e", 32)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	body := strings.ReplaceAll(string(src), "@KEYDIR@", dir)
	body = strings.Replace(body, `state_dir = "/var/lib/gitlab-okta-executor"`, fmt.Sprintf("state_dir = %q", filepath.Join(dir, "state")), 1)
	body += fmt.Sprintf("\n[audit]\nhmac_key_file = %q\n%s", key, extra)
	file = filepath.Join(dir, "settings.toml")
	if err := os.WriteFile(file, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return file, dir
}

// record writes n events through the audit log the stages build.
func record(t *testing.T, settingsFile string, from, to int) *identity.AuditLog {
	t.Helper()
	s, err := executor.LoadSettings(settingsFile)
	if err != nil {
		t.Fatal(err)
	}
	a := newAuditLog(s, nil, nil)
	for i := from; i <= to; i++ {
		if err := a.Record(identity.AuditEvent{Event: identity.EventIssued, JobID: int64(i), Outcome: "ok"}); err != nil {
			t.Fatal(err)
		}
	}
	return a
}

func runCmd(args ...string) (int, string, string) {
	var out, errOut bytes.Buffer
	code := realMain(args, &out, &errOut, env(nil))
	return code, out.String(), errOut.String()
}

func TestAuditVerifyCommand(t *testing.T) {
	file, dir := auditSettings(t, "")
	a := record(t, file, 1, 3)
	if filepath.Dir(a.ChainHead) != filepath.Join(dir, "state", "audit") || len(a.Key) == 0 {
		t.Fatalf("chain head %s, key %d bytes", a.ChainHead, len(a.Key))
	}
	code, out, errOut := runCmd("audit", "verify", "--settings", file)
	if code != 0 || !strings.Contains(out, "audit verify: ok: 3 lines in 1 file(s), seq 1 to 3, HMAC-SHA256 chain") ||
		!strings.Contains(out, "its end matches the chain head "+a.ChainHead) {
		t.Errorf("intact log: exit %d\n%s%s", code, out, errOut)
	}
	keyFile := filepath.Join(dir, "audit.key")
	if code, out, errOut := runCmd("audit", "verify", "--key-file", keyFile, a.Path); code != 0 || !strings.Contains(out, "not checked against a chain head") {
		t.Errorf("with --key-file: exit %d\n%s%s", code, out, errOut)
	}
	if code, _, errOut := runCmd("audit", "verify", a.Path); code != 2 || !strings.Contains(errOut, "carries an HMAC (mac): verifying needs the key") {
		t.Errorf("without a key: exit %d, stderr %q", code, errOut)
	}

	// Rotated: the pair verifies in order, and the removed tail of the
	// live file shows against the head.
	if err := os.Rename(a.Path, a.Path+".1"); err != nil {
		t.Fatal(err)
	}
	record(t, file, 4, 5)
	if code, out, errOut := runCmd("audit", "verify", "--settings", file, a.Path+".1", a.Path); code != 0 || !strings.Contains(out, "5 lines in 2 file(s), seq 1 to 5") {
		t.Errorf("rotated pair: exit %d\n%s%s", code, out, errOut)
	}
	b, _ := os.ReadFile(a.Path)
	if err := os.WriteFile(a.Path, b[:bytes.IndexByte(b, '\n')+1], 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, _ = runCmd("audit", "verify", "--settings", file, a.Path+".1", a.Path)
	if want := a.Path + ":2: seq 5: 1 line(s) missing at the end"; code != 1 || !strings.Contains(out, want) || !strings.HasSuffix(out, "audit verify: broken\n") {
		t.Errorf("removed tail: exit %d\n%s\nwant %q", code, out, want)
	}
}

// TestAuditShipFromStagesAndCommand: with [audit.syslog], recording ships;
// events recorded while the receiver is down wait, and `audit ship` sends
// them once it is back.
func TestAuditShipFromStagesAndCommand(t *testing.T) {
	rcv := syslogtest.ListenTCP(t)
	addr := rcv.Addr()
	file, _ := auditSettings(t, fmt.Sprintf("[audit.syslog]\naddress = \"tcp://%s\"\nhostname = \"ci-1\"\n", addr))
	record(t, file, 1, 2)
	rcv.Stop()
	if got := shippedSeqs(t, rcv); got != "1 2" {
		t.Errorf("shipped at record: seqs %q, want 1 2", got)
	}

	record(t, file, 3, 4) // receiver down: recorded, not shipped, no error
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	rcv = syslogtest.Serve(ln)
	t.Cleanup(rcv.Stop)
	code, out, errOut := runCmd("audit", "ship", "--settings", file)
	rcv.Stop()
	if code != 0 || out != "audit ship: 2 line(s) sent to tcp://"+addr+"\n" {
		t.Errorf("audit ship: exit %d\n%s%s", code, out, errOut)
	}
	if got := shippedSeqs(t, rcv); got != "3 4" {
		t.Errorf("audit ship sent seqs %q, want 3 4", got)
	}
}

// shippedSeqs lists the sequenceIds received, after checking each
// message's header.
func shippedSeqs(t *testing.T, r *syslogtest.Receiver) string {
	t.Helper()
	if err := r.Err(); err != nil {
		t.Errorf("receiver: %v", err)
	}
	msgs := r.Messages()
	for _, m := range msgs {
		if !bytes.HasPrefix(m, []byte("<86>1 ")) || !bytes.Contains(m, []byte(" ci-1 gitlab-okta-executor - issued ")) {
			t.Errorf("message %q", m)
		}
	}
	return syslogtest.SequenceIDs(msgs)
}
