package docker

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/client"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/executor"
)

// fakeEngine serves the few Engine API endpoints a pull touches, and fails
// the test on any other request.
type fakeEngine struct {
	t *testing.T

	mu       sync.Mutex
	present  bool
	authSeen []string
	// pull is the progress stream of /images/create; pullStatus its status.
	pull       []map[string]any
	pullStatus int
	// podman makes the version endpoint Podman's; exitRaces is how many
	// container inspects fail as Podman's do while the container's
	// process exits; inspects counts them all.
	podman    bool
	exitRaces int
	inspects  int
}

func (e *fakeEngine) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	e.mu.Lock()
	defer e.mu.Unlock()
	path := r.URL.Path
	if i := strings.Index(path, "/v1."); i == 0 {
		path = path[strings.Index(path[1:], "/")+1:]
	}
	switch {
	case path == "/_ping":
		w.Header().Set("Api-Version", "1.41")
		fmt.Fprint(w, "OK")
	case path == "/images/create" && r.Method == http.MethodPost:
		e.authSeen = append(e.authSeen, r.Header.Get("X-Registry-Auth"))
		if e.pullStatus != 0 && e.pullStatus != http.StatusOK {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(e.pullStatus)
			fmt.Fprint(w, `{"message":"pull access denied for team/app, repository does not exist or may require 'docker login'"}`)
			return
		}
		enc := json.NewEncoder(w)
		failed := false
		for _, m := range e.pull {
			enc.Encode(m)
			if _, ok := m["error"]; ok {
				failed = true
			}
		}
		e.present = !failed
	case strings.HasPrefix(path, "/images/") && strings.HasSuffix(path, "/json"):
		w.Header().Set("Content-Type", "application/json")
		if !e.present {
			w.WriteHeader(http.StatusNotFound)
			fmt.Fprintf(w, `{"message":"No such image: %s"}`, strings.TrimSuffix(strings.TrimPrefix(path, "/images/"), "/json"))
			return
		}
		fmt.Fprint(w, `{"Id":"sha256:1111111111111111111111111111111111111111111111111111111111111111",
			"Config":{"ExposedPorts":{"8080":{},"443/tcp":{},"53/udp":{}}}}`)
	case path == "/version":
		w.Header().Set("Content-Type", "application/json")
		if e.podman {
			fmt.Fprint(w, `{"Version":"4.3.1","ApiVersion":"1.41","MinAPIVersion":"1.24","Components":[{"Name":"Podman Engine","Version":"4.3.1"}]}`)
			return
		}
		fmt.Fprint(w, `{"Version":"20.10.24","ApiVersion":"1.41","MinAPIVersion":"1.12"}`)
	case path == "/networks" && r.Method == http.MethodGet:
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `[]`)
	case strings.HasPrefix(path, "/containers/") && strings.HasSuffix(path, "/json"):
		e.inspects++
		w.Header().Set("Content-Type", "application/json")
		if e.exitRaces > 0 {
			e.exitRaces--
			// Podman 4.3.1's answer, seen in the Podman tier.
			w.WriteHeader(http.StatusInternalServerError)
			fmt.Fprint(w, `{"cause":"no such process","message":"read /proc/22723/cgroup: no such process","response":500}`)
			return
		}
		fmt.Fprint(w, `{"Id":"b22c4c45a8047502a31c54a4fcf1565c1755009137eb28d1a82770cf0c57fc6f","Name":"/kept",
			"Created":"2026-12-02T14:16:14.5Z","State":{"Running":false,"Pid":0,"ExitCode":0},"Config":{"Labels":{}}}`)
	default:
		e.t.Errorf("unexpected request %s %s", r.Method, r.URL)
		w.WriteHeader(http.StatusNotImplemented)
	}
}

func engineRuntime(t *testing.T, e *fakeEngine) *Runtime {
	srv := httptest.NewServer(e)
	t.Cleanup(srv.Close)
	cli, err := client.NewClientWithOpts(client.WithHost("tcp://"+srv.Listener.Addr().String()), client.WithAPIVersionNegotiation())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return newRuntime(cli, nil)
}

var pullStream = []map[string]any{
	{"status": "Pulling from team/app", "id": "2"},
	{"status": "Pulling fs layer", "id": "aaa"},
	{"status": "Pulling fs layer", "id": "bbb"},
	{"status": "Already exists", "id": "ccc"},
	{"status": "Downloading", "id": "aaa", "progressDetail": map[string]int{"current": 10, "total": 100}, "progress": "[=>   ]"},
	{"status": "Downloading", "id": "aaa", "progressDetail": map[string]int{"current": 100, "total": 100}, "progress": "[=====>]"},
	{"status": "Verifying Checksum", "id": "aaa"},
	{"status": "Download complete", "id": "aaa"},
	{"status": "Extracting", "id": "aaa", "progress": "[==>  ]"},
	{"status": "Pull complete", "id": "aaa"},
	{"status": "Waiting", "id": "bbb"},
	{"status": "Pull complete", "id": "bbb"},
	{"status": "Digest: sha256:2222222222222222222222222222222222222222222222222222222222222222"},
	{"status": "Status: Downloaded newer image for registry.example.com:5000/team/app:2"},
}

var creds = []executor.RegistryAuth{
	{ServerAddress: "https://index.docker.io/v1/", Username: "hub-user", Password: "hub-pass"},
	{ServerAddress: "registry.example.com:5000", Username: "team-user", Password: "team-pass"},
	{ServerAddress: "https://other.example.com", Username: "other", Password: "other-pass"},
}

func decodeAuth(t *testing.T, header string) map[string]string {
	t.Helper()
	if header == "" {
		return nil
	}
	b, err := base64.URLEncoding.DecodeString(header)
	if err != nil {
		t.Fatalf("X-Registry-Auth %q is not base64url: %v", header, err)
	}
	var m map[string]string
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("X-Registry-Auth %s is not JSON: %v", b, err)
	}
	return m
}

func TestPullRendersProgressAndSendsMatchingAuth(t *testing.T) {
	e := &fakeEngine{t: t, pull: pullStream}
	rt := engineRuntime(t, e)
	var out strings.Builder
	info, err := rt.EnsureImage(context.Background(), "registry.example.com:5000/team/app:2", executor.PullIfNotPresent, creds, &out)
	if err != nil {
		t.Fatalf("EnsureImage = %v", err)
	}
	if info.ID != "sha256:1111111111111111111111111111111111111111111111111111111111111111" || !reflect.DeepEqual(info.ExposedTCPPorts, []int{443, 8080}) {
		t.Errorf("EnsureImage = %+v", info)
	}
	want := `Pulling image registry.example.com:5000/team/app:2 ...
2: Pulling from team/app
ccc: Already exists
aaa: Pull complete
bbb: Pull complete
Digest: sha256:2222222222222222222222222222222222222222222222222222222222222222
Status: Downloaded newer image for registry.example.com:5000/team/app:2
`
	if out.String() != want {
		t.Errorf("progress:\n%s\nwant:\n%s", out.String(), want)
	}
	if len(e.authSeen) != 1 {
		t.Fatalf("%d pulls, want 1", len(e.authSeen))
	}
	auth := decodeAuth(t, e.authSeen[0])
	if auth["username"] != "team-user" || auth["password"] != "team-pass" || auth["serveraddress"] != "registry.example.com:5000" {
		t.Errorf("X-Registry-Auth = %v, want the registry.example.com:5000 credential", auth)
	}
}

func TestPullAuthSelection(t *testing.T) {
	for _, tc := range []struct {
		ref, wantUser string
	}{
		{"alpine", "hub-user"},
		{"docker.io/library/alpine:3", "hub-user"},
		{"index.docker.io/team/tool", "hub-user"},
		{"other.example.com/x/y@sha256:2222222222222222222222222222222222222222222222222222222222222222", "other"},
		{"unknown.example.com/x", ""},
		{"registry.example.com/x", ""}, // the port is part of the host
	} {
		t.Run(tc.ref, func(t *testing.T) {
			e := &fakeEngine{t: t}
			rt := engineRuntime(t, e)
			if _, err := rt.EnsureImage(context.Background(), tc.ref, executor.PullAlways, creds, nil); err != nil {
				t.Fatalf("EnsureImage = %v", err)
			}
			auth := decodeAuth(t, e.authSeen[0])
			if auth["username"] != tc.wantUser {
				t.Errorf("credential user %q, want %q", auth["username"], tc.wantUser)
			}
		})
	}
}

func TestPullFailuresAreImageErrors(t *testing.T) {
	t.Run("error in the stream", func(t *testing.T) {
		e := &fakeEngine{t: t, pull: []map[string]any{
			{"status": "Pulling from team/app", "id": "2"},
			{"error": "manifest unknown", "errorDetail": map[string]string{"message": "manifest for team/app:2 not found: manifest unknown"}},
		}}
		_, err := engineRuntime(t, e).EnsureImage(context.Background(), "team/app:2", executor.PullIfNotPresent, nil, nil)
		var ie *executor.ImageError
		if !errors.As(err, &ie) || !strings.Contains(ie.Reason, "manifest unknown") {
			t.Errorf("EnsureImage = %v, want an ImageError carrying Docker's message", err)
		}
	})
	t.Run("error status", func(t *testing.T) {
		e := &fakeEngine{t: t, pullStatus: http.StatusNotFound}
		_, err := engineRuntime(t, e).EnsureImage(context.Background(), "team/app:2", executor.PullAlways, nil, nil)
		var ie *executor.ImageError
		if !errors.As(err, &ie) || !strings.Contains(ie.Reason, "pull access denied") {
			t.Errorf("EnsureImage = %v, want an ImageError carrying Docker's message", err)
		}
	})
	t.Run("daemon unreachable is not the job's fault", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		l.Close()
		cli, err := client.NewClientWithOpts(client.WithHost("tcp://"+addr), client.WithVersion("1.41"))
		if err != nil {
			t.Fatal(err)
		}
		defer cli.Close()
		_, err = newRuntime(cli, nil).EnsureImage(context.Background(), "team/app:2", executor.PullAlways, nil, nil)
		var ie *executor.ImageError
		if err == nil || errors.As(err, &ie) {
			t.Errorf("EnsureImage with no daemon = %v, want a plain error", err)
		}
	})
}

func TestParseDevices(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want container.DeviceMapping
	}{
		{"/dev/fuse", container.DeviceMapping{PathOnHost: "/dev/fuse", PathInContainer: "/dev/fuse", CgroupPermissions: "rwm"}},
		{"/dev/fuse:rw", container.DeviceMapping{PathOnHost: "/dev/fuse", PathInContainer: "/dev/fuse", CgroupPermissions: "rw"}},
		{"/dev/sda:/dev/xvda", container.DeviceMapping{PathOnHost: "/dev/sda", PathInContainer: "/dev/xvda", CgroupPermissions: "rwm"}},
		{"/dev/sda:/dev/xvda:r", container.DeviceMapping{PathOnHost: "/dev/sda", PathInContainer: "/dev/xvda", CgroupPermissions: "r"}},
	} {
		got, err := parseDevices([]string{tc.in})
		if err != nil || len(got) != 1 || got[0] != tc.want {
			t.Errorf("parseDevices(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
	}
	for _, bad := range []string{"/dev/sda:/dev/xvda:rx", "/dev/a:/dev/b:r:w", "dev/sda", "/dev/sda:xvda", "/dev/sda:/dev/x:rr"} {
		if got, err := parseDevices([]string{bad}); err == nil {
			t.Errorf("parseDevices(%q) = %+v, want an error", bad, got)
		}
	}
}

func TestContainerConfig(t *testing.T) {
	cfg, hc, nc, err := containerConfig(executor.ContainerSpec{
		Name: "job", Image: "img", Entrypoint: []string{}, NetworkID: "net1", NetworkAliases: []string{"build"},
		Mounts: []executor.Mount{
			{Type: executor.MountTmpfs, Target: "/tmp", TmpfsMode: 0o1777, TmpfsSize: 1 << 20},
			{Type: executor.MountVolume, Target: "/cache"},
			{Type: executor.MountBind, Source: "/srv", Target: "/srv", ReadOnly: true},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual([]string(cfg.Entrypoint), []string{""}) {
		t.Errorf("empty entrypoint sent as %q, want [\"\"] (clear)", cfg.Entrypoint)
	}
	if string(hc.NetworkMode) != "net1" || !reflect.DeepEqual(nc.EndpointsConfig["net1"].Aliases, []string{"build"}) {
		t.Errorf("network mode %q endpoints %+v", hc.NetworkMode, nc.EndpointsConfig)
	}
	tm := hc.Mounts[0].TmpfsOptions
	if tm == nil || fmt.Sprintf("%o", tm.Mode) != "1777" || tm.SizeBytes != 1<<20 {
		t.Errorf("tmpfs options %+v: the daemon formats Mode with %%o and must read 1777", tm)
	}
	if hc.Mounts[1].Source != "" || !hc.Mounts[2].ReadOnly {
		t.Errorf("mounts %+v", hc.Mounts)
	}
	if _, _, _, err := containerConfig(executor.ContainerSpec{NetworkAliases: []string{"x"}}); err == nil {
		t.Error("aliases without a network accepted")
	}
	if _, _, _, err := containerConfig(executor.ContainerSpec{Mounts: []executor.Mount{{Type: "nfs", Target: "/x"}}}); err == nil {
		t.Error("unknown mount type accepted")
	}
}

// TestInspectRidesOutPodmansExitRace: Podman 4.3 fails a container inspect
// with a 500 when the container's process exits while it reads
// /proc/PID/cgroup; the next inspect sees the container stopped. The
// Podman tier's TestEntrypoint met it once.
func TestInspectRidesOutPodmansExitRace(t *testing.T) {
	e := &fakeEngine{t: t, podman: true, exitRaces: 2}
	rt := engineRuntime(t, e)
	info, err := rt.InspectContainer(context.Background(), "kept")
	if err != nil || info.Running || info.Name != "kept" {
		t.Fatalf("InspectContainer = %+v, %v; want the stopped container", info, err)
	}
	if e.inspects != 3 {
		t.Errorf("%d inspects, want 3 (two races, then the answer)", e.inspects)
	}
	// Not a race that ends: the error comes through.
	e.exitRaces = 100
	if _, err := rt.InspectContainer(context.Background(), "kept"); err == nil || !strings.Contains(err.Error(), "no such process") {
		t.Errorf("InspectContainer during an endless race = %v, want Podman's error", err)
	}
	// Docker Engine never answers so: its 500s are not retried.
	d := &fakeEngine{t: t, exitRaces: 1}
	if _, err := engineRuntime(t, d).InspectContainer(context.Background(), "kept"); err == nil || d.inspects != 1 {
		t.Errorf("Docker Engine: InspectContainer = %v after %d inspects, want the error after 1", err, d.inspects)
	}
}
