// Package leftovers lists and removes the Docker containers and networks
// that carry one executor runner id's label, for end-to-end tests that must
// prove a job left nothing behind (and clean up when it did), and the
// runner id's cache volumes, which outlive jobs by design.
package leftovers

import (
	"context"
	"strings"
	"testing"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/volume"
	"github.com/docker/docker/client"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/executor"
)

func selector(runnerID string) filters.Args {
	return filters.NewArgs(filters.Arg("label", executor.LabelRunner+"="+runnerID))
}

// Containers lists every container of the runner id, stopped ones too.
func Containers(t testing.TB, cli *client.Client, runnerID string) []container.Summary {
	t.Helper()
	cs, err := cli.ContainerList(context.Background(), container.ListOptions{All: true, Filters: selector(runnerID)})
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

// Networks lists every network of the runner id.
func Networks(t testing.TB, cli *client.Client, runnerID string) []network.Summary {
	t.Helper()
	ns, err := cli.NetworkList(context.Background(), network.ListOptions{Filters: selector(runnerID)})
	if err != nil {
		t.Fatal(err)
	}
	return ns
}

// ForceRemove removes the runner id's containers (with their anonymous
// volumes) and networks, ignoring errors: it is the last resort of a test
// that already failed.
func ForceRemove(t testing.TB, cli *client.Client, runnerID string) {
	t.Helper()
	ctx := context.Background()
	for _, c := range Containers(t, cli, runnerID) {
		_ = cli.ContainerRemove(ctx, c.ID, container.RemoveOptions{Force: true, RemoveVolumes: true})
	}
	for _, n := range Networks(t, cli, runnerID) {
		_ = cli.NetworkRemove(ctx, n.ID)
	}
}

// CacheVolumes names the runner id's per-project cache volumes
// (gitlab-okta-<runner id>-cache-...): they persist across jobs, so a test
// runner that used them removes them when it is done.
func CacheVolumes(t testing.TB, cli *client.Client, runnerID string) []string {
	t.Helper()
	prefix := "gitlab-okta-" + runnerID + "-cache-"
	// Docker's name filter matches substrings; the prefix decides.
	resp, err := cli.VolumeList(context.Background(), volume.ListOptions{Filters: filters.NewArgs(filters.Arg("name", prefix))})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, v := range resp.Volumes {
		if strings.HasPrefix(v.Name, prefix) {
			names = append(names, v.Name)
		}
	}
	return names
}

// RemoveCacheVolumes removes the runner id's cache volumes; a volume still
// in use is an error of the test.
func RemoveCacheVolumes(t testing.TB, cli *client.Client, runnerID string) {
	t.Helper()
	for _, name := range CacheVolumes(t, cli, runnerID) {
		if err := cli.VolumeRemove(context.Background(), name, false); err != nil {
			t.Errorf("removing cache volume %s: %v", name, err)
		}
	}
}
