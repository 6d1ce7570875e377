package main

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

var (
	keyPEMOnce sync.Once
	keyPEM     []byte
)

// testKeyDir writes the RSA key the testdata settings name (@KEYDIR@): once
// 0600 as okta-key.pem, once world-readable as okta-key-0644.pem.
func testKeyDir(t *testing.T) string {
	t.Helper()
	keyPEMOnce.Do(func() {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			panic(err)
		}
		keyPEM = pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)})
	})
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "okta-key.pem"), keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "okta-key-0644.pem"), keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(dir, "okta-key-0644.pem"), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// runGolden runs the command and compares "exit N" plus stdout with
// testdata/<golden>; tmp (the key directory) is written as @KEYDIR@.
func runGolden(t *testing.T, golden string, args []string, tmp string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := realMain(args, &out, &errOut, env(nil))
	got := fmt.Sprintf("exit %d\n%s", code, out.String())
	if errOut.Len() > 0 {
		got += "stderr: " + errOut.String()
	}
	if tmp != "" {
		got = strings.ReplaceAll(got, tmp, "@KEYDIR@")
	}
	path := filepath.Join("testdata", golden)
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("reading golden file (run with -update to create it): %v", err)
	}
	if got != string(want) {
		t.Errorf("%s differs (run with -update to accept):\n--- got\n%s--- want\n%s", path, got, want)
	}
}

// TestCheckGolden runs check on every testdata/check/*.toml (one valid
// file, broken files with one key wrong each, lint cases), each copied next
// to a real key file.
func TestCheckGolden(t *testing.T) {
	inputs, err := filepath.Glob("testdata/check/*.toml")
	if err != nil || len(inputs) < 50 {
		t.Fatalf("testdata/check has %d inputs (%v): run python3 gen.py there", len(inputs), err)
	}
	for _, in := range inputs {
		name := strings.TrimSuffix(filepath.Base(in), ".toml")
		t.Run(name, func(t *testing.T) {
			dir := testKeyDir(t)
			src, err := os.ReadFile(in)
			if err != nil {
				t.Fatal(err)
			}
			file := filepath.Join(dir, "settings.toml")
			if err := os.WriteFile(file, bytes.ReplaceAll(src, []byte("@KEYDIR@"), []byte(dir)), 0o600); err != nil {
				t.Fatal(err)
			}
			runGolden(t, filepath.Join("check", name+".golden"), []string{"check", "--settings", file}, dir)
		})
	}
}

// TestCheckConfigs runs check on every file in configs/ as shipped (the
// example names a key file this machine does not have), and on the example
// with a real key, which must be valid.
func TestCheckConfigs(t *testing.T) {
	inputs, err := filepath.Glob("../../configs/*.toml")
	if err != nil || len(inputs) == 0 {
		t.Fatalf("no configs: %v", err)
	}
	for _, in := range inputs {
		name := strings.TrimSuffix(filepath.Base(in), ".toml")
		t.Run(name, func(t *testing.T) {
			runGolden(t, filepath.Join("check", "configs-"+name+".golden"), []string{"check", "--settings", in}, "")
		})
	}
	t.Run("settings.example with its key", func(t *testing.T) {
		dir := testKeyDir(t)
		src, err := os.ReadFile("../../configs/settings.example.toml")
		if err != nil {
			t.Fatal(err)
		}
		src = bytes.ReplaceAll(src, []byte("/etc/gitlab-okta-executor/okta-key.pem"), []byte(filepath.Join(dir, "okta-key.pem")))
		file := filepath.Join(dir, "settings.toml")
		if err := os.WriteFile(file, src, 0o600); err != nil {
			t.Fatal(err)
		}
		var out, errOut bytes.Buffer
		if code := realMain([]string{"check", "--settings", file}, &out, &errOut, env(nil)); code != 0 {
			t.Fatalf("check on the example with a key: exit %d\n%s%s", code, out.String(), errOut.String())
		}
		if !strings.Contains(out.String(), ": valid, ") {
			t.Errorf("no valid summary: %s", out.String())
		}
	})
}

func TestCheckStrictFailsOnWarnings(t *testing.T) {
	dir := testKeyDir(t)
	src, err := os.ReadFile("testdata/check/lint-unbounded.toml")
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "s.toml")
	if err := os.WriteFile(file, bytes.ReplaceAll(src, []byte("@KEYDIR@"), []byte(dir)), 0o600); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if code := realMain([]string{"check", "--settings", file}, &out, &out, env(nil)); code != 0 {
		t.Fatalf("warnings alone: exit %d, want 0\n%s", code, out.String())
	}
	if code := realMain([]string{"check", "--strict", "--settings", file}, &out, &out, env(nil)); code != 1 {
		t.Fatalf("--strict with warnings: exit %d, want 1\n%s", code, out.String())
	}
}

// TestHelpOnEveryCommand: --help, -h and `help CMD` print the command's
// usage on stdout and exit 0, never an ERROR line.
func TestHelpOnEveryCommand(t *testing.T) {
	for cmd := range commandHelp {
		cases := [][]string{{cmd, "--help"}, {cmd, "-h"}, {"help", cmd}}
		if cmd != "help" {
			cases = append(cases, []string{cmd, "--settings", "x.toml", "--help"})
		}
		for _, args := range cases {
			var out, errOut bytes.Buffer
			code := realMain(args, &out, &errOut, env(nil))
			if code != 0 || errOut.Len() != 0 || !strings.HasPrefix(out.String(), "usage: gitlab-okta-executor "+cmd) {
				t.Errorf("%q: exit %d, stdout %q, stderr %q", args, code, out.String(), errOut.String())
			}
		}
	}
	for _, args := range [][]string{{"--help"}, {"-h"}, {"help"}} {
		var out, errOut bytes.Buffer
		if code := realMain(args, &out, &errOut, env(nil)); code != 0 || out.String() != usage {
			t.Errorf("%q: exit %d, stdout %q", args, code, out.String())
		}
	}
	var out, errOut bytes.Buffer
	if code := realMain([]string{"help", "frobnicate"}, &out, &errOut, env(nil)); code != 2 || !strings.Contains(errOut.String(), `unknown command "frobnicate"`) {
		t.Errorf("help of an unknown command: exit %d, stderr %q", code, errOut.String())
	}
}

// TestUsageListsEveryCommand keeps the command list and the help texts in
// step.
func TestUsageListsEveryCommand(t *testing.T) {
	for cmd := range commandHelp {
		if !strings.Contains(usage, "\n  "+cmd+" ") {
			t.Errorf("usage does not list %q", cmd)
		}
	}
}
