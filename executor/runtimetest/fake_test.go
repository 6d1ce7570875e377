package runtimetest_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/executor"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/executor/runtimetest"
)

const (
	shellImage    = "gitlab-okta-executor-test/busybox:latest"
	exposingImage = "gitlab-okta-executor-test/exposing:1"
	missingImage  = "gitlab-okta-executor-test/missing:never"
)

func newFake(t *testing.T) *runtimetest.Fake {
	f := runtimetest.NewFake()
	f.AddImage(shellImage, executor.ImageInfo{})
	f.AddImage(exposingImage, executor.ImageInfo{ExposedTCPPorts: []int{8080, 80}})
	f.HandleExec(runtimetest.ContractExecHandler(f))
	return f
}

func TestFakeContract(t *testing.T) {
	runtimetest.RunContract(t, func(t *testing.T) executor.Runtime {
		f := newFake(t)
		f.SimulateHostProcesses(true)
		return f
	}, runtimetest.ContractImages{
		Shell:           shellImage,
		Exposing:        exposingImage,
		ExposedTCPPorts: []int{80, 8080},
		Missing:         missingImage,
		HostProcesses:   true,
	})
}

func TestFakePullFromRegistry(t *testing.T) {
	ctx := context.Background()
	f := newFake(t)
	f.AddRemoteImage("registry.example.com:5000/team/app:2", executor.ImageInfo{ExposedTCPPorts: []int{443}})
	auth := []executor.RegistryAuth{
		{ServerAddress: "https://index.docker.io/v1/", Username: "hub"},
		{ServerAddress: "registry.example.com:5000", Username: "team"},
	}
	var out strings.Builder
	info, err := f.EnsureImage(ctx, "registry.example.com:5000/team/app:2", executor.PullIfNotPresent, auth, &out)
	if err != nil || info.ID == "" || len(info.ExposedTCPPorts) != 1 {
		t.Fatalf("EnsureImage = %+v, %v", info, err)
	}
	if !strings.Contains(out.String(), "Pulling image registry.example.com:5000/team/app:2") {
		t.Errorf("progress %q", out.String())
	}
	// Now present: never works, if-not-present does not pull again.
	if _, err := f.EnsureImage(ctx, "registry.example.com:5000/team/app:2", executor.PullNever, nil, nil); err != nil {
		t.Errorf("EnsureImage(never) after the pull = %v", err)
	}
	if _, err := f.EnsureImage(ctx, "registry.example.com:5000/team/app:2", executor.PullIfNotPresent, nil, nil); err != nil {
		t.Errorf("EnsureImage(if-not-present) after the pull = %v", err)
	}
	if _, err := f.EnsureImage(ctx, "registry.example.com:5000/team/app:2", executor.PullAlways, auth, nil); err != nil {
		t.Errorf("EnsureImage(always) = %v", err)
	}
	pulls := f.Pulls()
	if len(pulls) != 2 || pulls[0].Auth == nil || pulls[0].Auth.Username != "team" {
		t.Errorf("Pulls() = %+v, want two pulls with the team credential", pulls)
	}
	// docker.io normalisation and the hub credential.
	f.AddRemoteImage("alpine", executor.ImageInfo{})
	if _, err := f.EnsureImage(ctx, "docker.io/library/alpine:latest", executor.PullAlways, auth, nil); err != nil {
		t.Fatalf("EnsureImage(alpine) = %v", err)
	}
	pulls = f.Pulls()
	if last := pulls[len(pulls)-1]; last.Ref != "docker.io/library/alpine:latest" || last.Auth == nil || last.Auth.Username != "hub" {
		t.Errorf("last pull = %+v, want alpine with the hub credential", last)
	}
}

func TestFakeClockSpecAndRecords(t *testing.T) {
	ctx := context.Background()
	f := newFake(t)
	at := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	f.SetClock(func() time.Time { return at })
	spec := executor.ContainerSpec{Name: "job-1", Image: "gitlab-okta-executor-test/busybox", Labels: map[string]string{"job": "1"}, Privileged: false, CapDrop: []string{"ALL"}}
	id, err := f.RunContainer(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	info, err := f.InspectContainer(ctx, "/job-1")
	if err != nil || !info.Created.Equal(at) || info.ID != id {
		t.Errorf("InspectContainer = %+v, %v; want created at %v", info, err, at)
	}
	got, ok := f.Spec(id)
	if !ok || got.CapDrop[0] != "ALL" {
		t.Errorf("Spec = %+v, %v", got, ok)
	}
	// The returned labels are copies.
	info.Labels["job"] = "changed"
	if again, _ := f.InspectContainer(ctx, id); again.Labels["job"] != "1" {
		t.Errorf("labels changed through a returned map: %v", again.Labels)
	}
	if _, err := f.Exec(ctx, id, executor.ExecSpec{Cmd: []string{"true"}, Env: []string{"A=b"}, User: "ci"}); err != nil {
		t.Fatal(err)
	}
	if recs := f.Execs(); len(recs) != 1 || recs[0].ContainerID != id || recs[0].User != "ci" || recs[0].Env[0] != "A=b" {
		t.Errorf("Execs() = %+v", recs)
	}
}

func TestFakeStopAndInjectedErrors(t *testing.T) {
	ctx := context.Background()
	f := newFake(t)
	id, err := f.RunContainer(ctx, executor.ContainerSpec{Name: "svc", Image: shellImage})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.StopContainer(id); err != nil {
		t.Fatal(err)
	}
	select {
	case <-f.Stopped(id):
	default:
		t.Error("Stopped channel open after StopContainer")
	}
	if info, _ := f.InspectContainer(ctx, id); info.Running {
		t.Error("stopped container still running")
	}
	if _, err := f.Exec(ctx, id, executor.ExecSpec{Cmd: []string{"true"}}); err == nil || errors.Is(err, executor.ErrNotFound) {
		t.Errorf("Exec in a stopped container = %v, want a not-running error", err)
	}
	boom := errors.New("boom")
	f.FailNext("RemoveContainer", boom)
	if err := f.RemoveContainer(ctx, id); !errors.Is(err, boom) {
		t.Errorf("RemoveContainer with an injected error = %v", err)
	}
	if err := f.RemoveContainer(ctx, id); err != nil {
		t.Errorf("RemoveContainer after the injected error = %v", err)
	}
}

func TestFakePredefinedNetworks(t *testing.T) {
	ctx := context.Background()
	f := newFake(t)
	all, err := f.ListNetworks(ctx, nil)
	if err != nil || len(all) != 3 {
		t.Fatalf("ListNetworks(nil) = %+v, %v; want bridge, host, none", all, err)
	}
	if err := f.RemoveNetwork(ctx, "bridge"); err == nil {
		t.Error("removing the bridge network succeeded")
	}
	if _, err := f.CreateNetwork(ctx, "host", nil); err == nil {
		t.Error("creating a network named host succeeded")
	}
	if _, err := f.RunContainer(ctx, executor.ContainerSpec{Name: "x1", Image: shellImage, NetworkID: "bridge", NetworkAliases: []string{"a"}}); err == nil {
		t.Error("aliases on the default bridge accepted")
	}
}
