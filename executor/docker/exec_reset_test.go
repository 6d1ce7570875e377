package docker

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/docker/docker/client"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/executor"
)

// resetEngine serves one exec the way dockerd ends the attach of a
// process that exited without reading its stdin: the output, then the
// hijacked connection closed while stdin it never read is still queued on
// it. On a unix socket the kernel then reports ECONNRESET to the reader
// once the queued output is consumed, instead of EOF. dockerd half-closes
// first and closes later, so against the real engine this shows only when
// the reader runs late (a loaded host); here it happens every time.
type resetEngine struct {
	t      *testing.T
	output string
	code   int
}

func (e *resetEngine) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	path := r.URL.Path
	if strings.HasPrefix(path, "/v1.") {
		path = path[strings.Index(path[1:], "/")+1:]
	}
	switch {
	case path == "/_ping":
		w.Header().Set("Api-Version", "1.41")
		fmt.Fprint(w, "OK")
	case strings.HasSuffix(path, "/exec") && r.Method == http.MethodPost:
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		fmt.Fprint(w, `{"Id":"e1"}`)
	case path == "/exec/e1/start":
		io.Copy(io.Discard, r.Body)
		conn, _, err := w.(http.Hijacker).Hijack()
		if err != nil {
			e.t.Errorf("hijacking: %v", err)
			return
		}
		defer conn.Close()
		fmt.Fprint(conn, "HTTP/1.1 101 UPGRADED\r\nContent-Type: application/vnd.docker.raw-stream\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\n")
		// Take one byte of stdin, so the rest of what the client sent
		// is queued unread when the connection closes.
		if _, err := io.ReadFull(conn, make([]byte, 1)); err != nil {
			e.t.Errorf("reading stdin: %v", err)
		}
		var hdr [8]byte
		hdr[0] = 1 // stdout
		binary.BigEndian.PutUint32(hdr[4:], uint32(len(e.output)))
		conn.Write(append(hdr[:], e.output...))
	case path == "/exec/e1/json":
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"ID": "e1", "Running": false, "ExitCode": e.code})
	default:
		e.t.Errorf("unexpected request %s %s", r.Method, r.URL.Path)
		http.NotFound(w, r)
	}
}

// TestExecOutputEndsWithResetAfterUnreadStdin: a process that exits
// without reading all of its stdin (a script that exits early) ends with
// its exit code and its whole output, not "connection reset by peer".
func TestExecOutputEndsWithResetAfterUnreadStdin(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "engine.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: &resetEngine{t: t, output: "partial output\n", code: 5}}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	cli, err := client.NewClientWithOpts(client.WithHost("unix://"+sock), client.WithVersion("1.41"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	rt := newRuntime(cli, nil)

	var stdout bytes.Buffer
	code, err := rt.Exec(t.Context(), "c1", executor.ExecSpec{
		Cmd: []string{"sh", "-c", "exit 5"}, Stdin: bytes.NewReader(bytes.Repeat([]byte("x"), 1<<20)), Stdout: &stdout,
	})
	if err != nil || code != 5 {
		t.Fatalf("Exec = %d, %v; want 5", code, err)
	}
	if stdout.String() != "partial output\n" {
		t.Errorf("stdout = %q, want the whole output", stdout.String())
	}
}
