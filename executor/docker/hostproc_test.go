package docker

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/executor"
)

// TestReadOwnedBy: a process's status is returned only when its cgroup
// names the container; anything else sends the check back to the exec.
func TestReadOwnedBy(t *testing.T) {
	const id = "7faf4cfdb49b397104008aea95e3d3ca67b62ff361e4332bebda98ce005b4b49"
	status := "Name:\tsh\nUid:\t1000\t1000\t1000\t1000\nCapEff:\t0000000000000000\n"
	for name, tc := range map[string]struct {
		cgroup  string // "" writes no cgroup file
		status  bool
		fallsBk bool
	}{
		"docker cgroupfs":         {cgroup: "9:name=systemd:/docker/" + id + "\n8:pids:/docker/" + id + "\n", status: true},
		"podman systemd":          {cgroup: "0::/machine.slice/libpod-" + id + ".scope/container\n", status: true},
		"someone else's pid":      {cgroup: "0::/user.slice/user-1000.slice/session-2.scope\n", status: true, fallsBk: true},
		"another container":       {cgroup: "0::/docker/" + "0123" + id[4:] + "\n", status: true, fallsBk: true},
		"no such process here":    {fallsBk: true},
		"status hidden (hidepid)": {cgroup: "0::/docker/" + id + "\n", fallsBk: true},
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			if tc.cgroup != "" {
				if err := os.WriteFile(filepath.Join(dir, "cgroup"), []byte(tc.cgroup), 0o444); err != nil {
					t.Fatal(err)
				}
			}
			if tc.status {
				if err := os.WriteFile(filepath.Join(dir, "status"), []byte(status), 0o444); err != nil {
					t.Fatal(err)
				}
			}
			got, err := readOwnedBy(dir, id)
			switch {
			case tc.fallsBk && !errors.Is(err, executor.ErrNotOnThisHost):
				t.Errorf("readOwnedBy = %q, %v; want ErrNotOnThisHost", got, err)
			case !tc.fallsBk && (err != nil || string(got) != status):
				t.Errorf("readOwnedBy = %q, %v; want the status", got, err)
			}
		})
	}
}

// TestContainerProcessStatusRemoteEngine: an engine reached over TCP runs
// its containers elsewhere; nothing is asked of it.
func TestContainerProcessStatusRemoteEngine(t *testing.T) {
	rt, err := Connect(nil, Endpoint{Host: "tcp://192.0.2.1:2376"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rt.ContainerProcessStatus(context.Background(), "build"); !errors.Is(err, executor.ErrNotOnThisHost) {
		t.Errorf("ContainerProcessStatus = %v, want ErrNotOnThisHost", err)
	}
}
