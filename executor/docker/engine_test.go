package docker

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"sync"
	"testing"
	"time"
)

// versionEngine serves /_ping, /version and an empty container and network
// listing the way a daemon of the given version does, and refuses API
// versions below minAPI with Docker Engine 29's status and body.
type versionEngine struct {
	t              *testing.T
	apiVersion     string
	minAPI         string
	version        json.RawMessage
	mu             sync.Mutex
	versionsSeen   []string
	unversionedHit int
}

var versionPrefix = regexp.MustCompile(`^/v(1\.(\d+))(/.*)$`)

func (e *versionEngine) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	path := r.URL.Path
	if m := versionPrefix.FindStringSubmatch(path); m != nil {
		e.mu.Lock()
		e.versionsSeen = append(e.versionsSeen, m[1])
		e.mu.Unlock()
		minor, _ := strconv.Atoi(m[2])
		floor, _ := strconv.Atoi(e.minAPI[2:])
		if minor < floor {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusBadRequest)
			fmt.Fprintf(w, `{"message":"client version %s is too old. Minimum supported API version is %s, please upgrade your client to a newer version"}`, m[1], e.minAPI)
			return
		}
		path = m[3]
	}
	w.Header().Set("Api-Version", e.apiVersion)
	switch path {
	case "/_ping":
		fmt.Fprint(w, "OK")
	case "/version":
		w.Header().Set("Content-Type", "application/json")
		w.Write(e.version)
	case "/containers/json", "/networks":
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, "[]")
	default:
		e.t.Errorf("unexpected request %s %s", r.Method, r.URL)
		w.WriteHeader(http.StatusNotImplemented)
	}
}

func (e *versionEngine) runtime(t *testing.T) *Runtime {
	srv := httptest.NewServer(e)
	t.Cleanup(srv.Close)
	rt, err := Connect(nil, Endpoint{Host: "tcp://" + srv.Listener.Addr().String()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rt.Close() })
	return rt
}

// Captured from the engines: Docker Engine 29 (API 1.52, floor 1.44) as
// documented, and Debian's Podman 4.3.1 compat service.
const (
	docker29Version = `{"Platform":{"Name":"Docker Engine - Community"},"Components":[{"Name":"Engine","Version":"29.0.0",
		"Details":{"ApiVersion":"1.52","MinAPIVersion":"1.44","Os":"linux"}}],"Version":"29.0.0","ApiVersion":"1.52",
		"MinAPIVersion":"1.44","Os":"linux","Arch":"amd64"}`
	podman43Version = `{"Platform":{"Name":"linux/amd64/debian-12"},"Components":[{"Name":"Podman Engine","Version":"4.3.1",
		"Details":{"APIVersion":"4.3.1","MinAPIVersion":"4.0.0","Os":"linux"}},{"Name":"Conmon","Version":"conmon version 2.1.6"}],
		"Version":"4.3.1","ApiVersion":"1.41","MinAPIVersion":"1.24","Os":"linux","Arch":"amd64"}`
)

// TestNegotiatesWithTheAPIFloorOfDockerEngine29: Docker Engine 29 refuses
// API versions below 1.44; the client negotiates a version it accepts
// instead of a pinned old one, for every call.
func TestNegotiatesWithTheAPIFloorOfDockerEngine29(t *testing.T) {
	e := &versionEngine{t: t, apiVersion: "1.52", minAPI: "1.44", version: json.RawMessage(docker29Version)}
	rt := e.runtime(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := rt.Ping(ctx); err != nil {
		t.Fatalf("Ping = %v", err)
	}
	eng, err := rt.Engine(ctx)
	if err != nil || eng.Kind != KindDocker || eng.Version != "29.0.0" || eng.MinAPIVersion != "1.44" {
		t.Fatalf("Engine = %+v, %v; want Docker Engine 29.0.0 with floor 1.44", eng, err)
	}
	if _, err := rt.ListContainers(ctx, map[string]string{"a": "b"}); err != nil {
		t.Fatalf("ListContainers = %v", err)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.versionsSeen) == 0 {
		t.Fatal("no versioned request reached the engine")
	}
	for _, v := range e.versionsSeen {
		if minor, _ := strconv.Atoi(v[2:]); minor < 44 {
			t.Errorf("a request used API %s, below the engine's floor 1.44 (all: %v)", v, e.versionsSeen)
		}
	}
}

// TestEngineTellsPodmanFromDocker: the version endpoint's components say
// which engine answers; only Podman gets Podman's quirks.
func TestEngineTellsPodmanFromDocker(t *testing.T) {
	for _, tc := range []struct {
		name, body, api, kind, version string
		podmanQuirks                   bool
	}{
		{"docker 29", docker29Version, "1.52", KindDocker, "29.0.0", false},
		{"podman 4.3", podman43Version, "1.41", KindPodman, "4.3.1", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := &versionEngine{t: t, apiVersion: tc.api, minAPI: "1.24", version: json.RawMessage(tc.body)}
			rt := e.runtime(t)
			eng, err := rt.Engine(context.Background())
			if err != nil || eng.Kind != tc.kind || eng.Version != tc.version || eng.APIVersion != tc.api {
				t.Fatalf("Engine = %+v, %v; want %s %s (API %s)", eng, err, tc.kind, tc.version, tc.api)
			}
			want := quirks{}
			if tc.podmanQuirks {
				want = quirks{endpointKeyedByName: true, untypedErrors: true, removeByIDIgnoresUse: true, capAddAmbientForUsers: true, inspectRacesExit: true}
			}
			if eng.quirks != want {
				t.Errorf("quirks = %+v, want %+v", eng.quirks, want)
			}
		})
	}
}
