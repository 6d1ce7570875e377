package docker

import (
	"context"
	"fmt"
	"maps"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/network"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/executor"
)

// CreateNetwork creates a bridge network with labels and returns its id. An
// existing network of that name is reused when its labels are exactly
// labels, and is an error otherwise.
func (r *Runtime) CreateNetwork(ctx context.Context, name string, labels map[string]string) (string, error) {
	start := time.Now()
	// The client asks older daemons to check for duplicates (CheckDuplicate)
	// and newer ones always do, so a second create of a name conflicts.
	resp, err := r.cli.NetworkCreate(ctx, name, network.CreateOptions{Driver: "bridge", Labels: labels})
	if err == nil {
		if resp.Warning != "" {
			r.logger.Warn("docker warning creating network", "name", name, "id", resp.ID, "warning", resp.Warning)
		}
		r.logger.Info("created network", "name", name, "id", resp.ID, "duration", since(start))
		return resp.ID, nil
	}
	q, qerr := r.quirks(ctx)
	if qerr != nil {
		return "", fmt.Errorf("creating network %s: %w; %w", name, err, qerr)
	}
	if !r.networkConflict(ctx, q, name, err) {
		return "", fmt.Errorf("creating network %s: %w", name, err)
	}
	existing, inspectErr := r.cli.NetworkInspect(ctx, name, network.InspectOptions{})
	if inspectErr != nil {
		return "", fmt.Errorf("creating network %s: %w; inspecting the existing one: %w", name, err, inspectErr)
	}
	if existing.Name != name || !sameLabels(existing.Labels, labels) {
		return "", fmt.Errorf("creating network %s: a network of that name exists with labels %v, want %v: %w", name, existing.Labels, labels, err)
	}
	r.logger.Info("reusing network", "name", name, "id", existing.ID)
	return existing.ID, nil
}

// sameLabels compares label sets, nil being the empty set.
func sameLabels(a, b map[string]string) bool {
	return len(a) == len(b) && maps.Equal(a, b)
}

// RemoveNetwork removes a network; a missing one is not an error.
func (r *Runtime) RemoveNetwork(ctx context.Context, nameOrID string) error {
	q, err := r.quirks(ctx)
	if err != nil {
		return fmt.Errorf("removing network %s: %w", nameOrID, err)
	}
	ref, err := r.removeNetworkRef(ctx, q, nameOrID)
	if err != nil {
		return err
	}
	if ref == "" {
		r.logger.Debug("network already gone", "network", nameOrID)
		return nil
	}
	err = r.cli.NetworkRemove(ctx, ref)
	switch {
	case cerrdefs.IsNotFound(err):
		r.logger.Debug("network already gone", "network", nameOrID)
		return nil
	case err != nil:
		return notFound("removing network "+nameOrID, err)
	}
	r.logger.Info("removed network", "network", nameOrID)
	return nil
}

// ListNetworks returns every network carrying all the given labels.
func (r *Runtime) ListNetworks(ctx context.Context, labels map[string]string) ([]executor.NetworkInfo, error) {
	list, err := r.cli.NetworkList(ctx, network.ListOptions{Filters: labelFilters(labels)})
	if err != nil {
		return nil, notFound(fmt.Sprintf("listing networks with labels %v", labels), err)
	}
	out := make([]executor.NetworkInfo, 0, len(list))
	for _, n := range list {
		l := n.Labels
		if l == nil {
			l = map[string]string{}
		}
		out = append(out, executor.NetworkInfo{ID: n.ID, Name: n.Name, Labels: l, Created: n.Created})
	}
	return out, nil
}
