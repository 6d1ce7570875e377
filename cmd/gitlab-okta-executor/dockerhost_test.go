package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// localDockerSocket is the engine's unix socket these tests relay to:
// DOCKER_HOST when it names one, else the default path.
func localDockerSocket(t *testing.T) string {
	t.Helper()
	sock := "/var/run/docker.sock"
	if h := os.Getenv("DOCKER_HOST"); strings.HasPrefix(h, "unix://") {
		sock = strings.TrimPrefix(h, "unix://")
	} else if h != "" {
		t.Fatalf("these tests relay to the engine's unix socket; DOCKER_HOST is %q", h)
	}
	if c, err := net.Dial("unix", sock); err != nil {
		t.Fatalf("these tests need the Docker engine's socket %s and cannot reach it: %v", sock, err)
	} else {
		c.Close()
	}
	return sock
}

// socketProxy relays a unix socket of its own to the engine's and counts
// the connections it relayed, so a test can tell which socket a client
// used.
type socketProxy struct {
	path  string
	conns atomic.Int64
}

func newSocketProxy(t *testing.T, target string) *socketProxy {
	t.Helper()
	p := &socketProxy{path: filepath.Join(t.TempDir(), "proxy.sock")}
	l, err := net.Listen("unix", p.path)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { l.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			p.conns.Add(1)
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				up, err := net.Dial("unix", target)
				if err != nil {
					return
				}
				defer up.Close()
				done := make(chan struct{})
				go func() { io.Copy(up, c); up.(*net.UnixConn).CloseWrite(); close(done) }()
				io.Copy(c, up)
				<-done
			}()
		}
	}()
	return p
}

func writeHostSettings(t *testing.T, host string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "settings.toml")
	body := "runner_id = \"dockerhost-test\"\nstate_dir = \"" + t.TempDir() + "\"\n[docker]\nhost = \"" + host + "\"\n"
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestDockerHostSettingIsUsed: docker.host wins over the runner's
// environment, so jobs go to the daemon the operator named.
func TestDockerHostSettingIsUsed(t *testing.T) {
	proxy := newSocketProxy(t, localDockerSocket(t))
	// The environment names a daemon that does not exist: only the
	// setting can make the stage succeed.
	t.Setenv("DOCKER_HOST", "unix://"+filepath.Join(t.TempDir(), "absent.sock"))
	var out, errOut bytes.Buffer
	code := realMain([]string{"reap", "--settings", writeHostSettings(t, "unix://"+proxy.path)}, &out, &errOut, env(nil))
	if code != 0 {
		t.Fatalf("reap through docker.host: code %d, stderr %q", code, errOut.String())
	}
	if proxy.conns.Load() == 0 {
		t.Errorf("reap succeeded without a connection to docker.host: the setting is ignored")
	}
}

// TestDockerHostUnreachableIsOneSystemFailureLine: a prepare whose daemon
// does not answer fails as the runner's fault (retried), with one line
// that names the daemon.
func TestDockerHostUnreachableIsOneSystemFailureLine(t *testing.T) {
	dead := filepath.Join(t.TempDir(), "dead.sock")
	settings := writeHostSettings(t, "unix://"+dead)
	if f, err := os.OpenFile(settings, os.O_APPEND|os.O_WRONLY, 0); err != nil {
		t.Fatal(err)
	} else {
		// pull_policy never: should the setting be ignored, nothing
		// tries a registry.
		f.WriteString("runner_binary = \"/bin/true\"\npull_policy = [\"never\"]\n")
		f.Close()
	}
	payload := filepath.Join(t.TempDir(), "job.json")
	b, _ := json.Marshal(map[string]any{"id": 4242, "job_info": map[string]any{"project_id": 7}})
	if err := os.WriteFile(payload, b, 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	getenv := env(map[string]string{"JOB_RESPONSE_FILE": payload, "BUILD_FAILURE_EXIT_CODE": "41", "SYSTEM_FAILURE_EXIT_CODE": "42"})
	code := realMain([]string{"prepare", "--settings", settings}, &out, &errOut, getenv)
	if code != 42 {
		t.Fatalf("prepare against a dead docker.host: code %d, want the system failure 42; stderr %q", code, errOut.String())
	}
	lines := strings.Split(strings.TrimSpace(errOut.String()), "\n")
	if len(lines) != 1 || !strings.HasPrefix(lines[0], "ERROR: ") || !strings.Contains(lines[0], dead) {
		t.Errorf("stderr = %q, want one ERROR line naming %s", errOut.String(), dead)
	}
	t.Logf("job log: %s", errOut.String())
}
