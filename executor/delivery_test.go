package executor

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// deliveryShells are the shells the wrapper must work under: the images'
// sh is dash, busybox ash or bash.
func deliveryShells(t *testing.T) map[string][]string {
	t.Helper()
	shells := map[string][]string{}
	for name, argv := range map[string][]string{
		"dash": {"dash"}, "bash": {"bash"}, "busybox": {"busybox", "sh"},
	} {
		if _, err := exec.LookPath(argv[0]); err == nil {
			shells[name] = argv
		}
	}
	if len(shells) == 0 {
		t.Fatal("no POSIX shell (dash, bash, busybox) on this machine: the delivery wrapper cannot be tested")
	}
	return shells
}

// runDelivered runs a sub-stage's exec rewritten by withDelivery on this
// machine, with shell in place of the container's sh, and returns its
// stdout, the stderr the job log would get, the exit code and the
// delivery.
func runDelivered(t *testing.T, shell []string, files []SecretFile, script string) (string, string, int, *delivery) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	spec, d, err := withDelivery(ExecSpec{
		Cmd: []string{"sh", "-c", ShellProbe}, Stdin: strings.NewReader(script), Stdout: &stdout, Stderr: &stderr,
	}, files)
	if err != nil {
		t.Fatal(err)
	}
	if spec.Cmd[0] != "sh" || spec.Cmd[1] != "-c" || len(spec.Cmd) != 3 {
		t.Fatalf("command %q, want sh -c <wrapper>", spec.Cmd)
	}
	cmd := exec.Command(shell[0], append(shell[1:], spec.Cmd[1:]...)...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = spec.Stdin, spec.Stdout, spec.Stderr
	code := 0
	if err := cmd.Run(); err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			t.Fatal(err)
		}
		code = ee.ExitCode()
	}
	if err := d.report.Flush(); err != nil {
		t.Fatal(err)
	}
	return stdout.String(), stderr.String(), code, d
}

// TestDeliveryWritesTheFilesThenRunsTheScript: the wrapper writes each
// file byte for byte (one line, several lines, a trailing newline), 0400,
// replacing an older file; then the shell runs exactly the script that
// followed the preamble, which finds the files; the report stays out of
// the job log while the script's own stderr gets there. No secret is in
// the command.
func TestDeliveryWritesTheFilesThenRunsTheScript(t *testing.T) {
	for name, shell := range deliveryShells(t) {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			token, key := filepath.Join(dir, "token"), filepath.Join(dir, "dpop-key.pem")
			if err := os.WriteFile(token, []byte("old-token"), 0o400); err != nil {
				t.Fatal(err)
			}
			files := []SecretFile{
				{Path: token, Content: "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJqb2IifQ.c2ln"},
				{Path: key, Content: "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMG\n  indented \\n 'quoted' $HOME\n-----END PRIVATE KEY-----\n"},
			}
			script := "set -e\ntest \"$(cat '" + token + "')\" = '" + files[0].Content + "'\necho script-ran\necho script-stderr >&2\nread -r extra || echo stdin-ends-with-the-script\n"
			stdout, stderr, code, d := runDelivered(t, shell, files, script)
			if code != 0 {
				t.Fatalf("exit %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
			}
			if err := d.result(); err != nil {
				t.Fatalf("delivery not confirmed: %v", err)
			}
			select {
			case <-d.confirmed:
			default:
				t.Error("confirmed not closed")
			}
			if stdout != "script-ran\nstdin-ends-with-the-script\n" {
				t.Errorf("stdout %q: the script did not run as sent", stdout)
			}
			if stderr != "script-stderr\n" {
				t.Errorf("job-log stderr %q, want only the script's", stderr)
			}
			for _, f := range files {
				got, err := os.ReadFile(f.Path)
				if err != nil {
					t.Fatal(err)
				}
				if string(got) != f.Content {
					t.Errorf("%s holds %q, want %q", f.Path, got, f.Content)
				}
				fi, err := os.Stat(f.Path)
				if err != nil {
					t.Fatal(err)
				}
				if fi.Mode().Perm() != 0o400 {
					t.Errorf("%s mode %o, want 400", f.Path, fi.Mode().Perm())
				}
			}
			left, _ := filepath.Glob(filepath.Join(dir, "*.new.*"))
			if len(left) > 0 {
				t.Errorf("temporary files left: %v", left)
			}
			for _, arg := range []string{deliverScript + ShellProbe} {
				for _, f := range files {
					if strings.Contains(arg, f.Content) || strings.Contains(arg, d.nonce) {
						t.Error("the command carries a secret or the nonce")
					}
				}
			}
		})
	}
}

// TestDeliveryFailureStopsTheScript: a file that cannot be written fails
// the exec before the script runs, with the reason, and is not confirmed.
func TestDeliveryFailureStopsTheScript(t *testing.T) {
	for name, shell := range deliveryShells(t) {
		t.Run(name, func(t *testing.T) {
			missing := filepath.Join(t.TempDir(), "no-such-dir", "token")
			stdout, stderr, code, d := runDelivered(t, shell, []SecretFile{{Path: missing, Content: "tok"}}, "echo script-ran\n")
			if code == 0 || strings.Contains(stdout, "script-ran") {
				t.Fatalf("exit %d, stdout %q: the script ran without its token file", code, stdout)
			}
			err := d.result()
			if !errors.Is(err, ErrDeliveryUnconfirmed) || !strings.Contains(err.Error(), "no-such-dir") {
				t.Errorf("result %v, want ErrDeliveryUnconfirmed naming the path", err)
			}
			if strings.Contains(stderr, d.nonce) {
				t.Errorf("job-log stderr %q shows the report", stderr)
			}
		})
	}
}

// TestDeliveryReportPassesOtherOutputOn: output that is not the wrapper's
// report (a shell that never ran the wrapper) reaches the job log whole,
// also when it comes in pieces, and the delivery is unconfirmed.
func TestDeliveryReportPassesOtherOutputOn(t *testing.T) {
	var log bytes.Buffer
	_, d, err := withDelivery(ExecSpec{Stderr: &log}, []SecretFile{{Path: "/x", Content: "y"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"sh: ", "exec: not found", "\nmore\n", "tail"} {
		if _, err := d.report.Write([]byte(p)); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.report.Flush(); err != nil {
		t.Fatal(err)
	}
	if log.String() != "sh: exec: not found\nmore\ntail" {
		t.Errorf("job log %q", log.String())
	}
	if !errors.Is(d.result(), ErrDeliveryUnconfirmed) {
		t.Errorf("result %v, want unconfirmed", d.result())
	}
}
