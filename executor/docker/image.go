package docker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/distribution/reference"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/registry"
	"github.com/docker/docker/client"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/executor"
)

// dockerHubDomain is the registry host of references without one, as the
// reference library normalises it.
const dockerHubDomain = "docker.io"

// reasonNeverPull is the ImageError reason for a missing image under pull
// policy never.
const reasonNeverPull = "not present locally and pull policy is never"

// imageIDPattern matches image ids, which are looked up but never pulled.
// (compiled on first use: a stage that pulls nothing never needs it).
var imageIDPattern = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^(sha256:)?[0-9a-f]{64}$`) })

// EnsureImage makes ref available according to policy and returns its id and
// exposed TCP ports. Pull progress goes to out as a few readable lines.
func (r *Runtime) EnsureImage(ctx context.Context, ref string, policy executor.PullPolicy, auth []executor.RegistryAuth, out io.Writer) (executor.ImageInfo, error) {
	if out == nil {
		out = io.Discard
	}
	switch policy {
	case executor.PullAlways, executor.PullIfNotPresent, executor.PullNever:
	default:
		return executor.ImageInfo{}, fmt.Errorf("ensuring image %s: unknown pull policy %q", ref, policy)
	}
	var named reference.Named
	if !imageIDPattern().MatchString(ref) {
		var err error
		if named, err = reference.ParseNormalizedNamed(ref); err != nil {
			return executor.ImageInfo{}, &executor.ImageError{Image: ref, Reason: "invalid reference: " + err.Error()}
		}
	}
	if policy != executor.PullAlways {
		info, err := r.inspectImage(ctx, ref)
		switch {
		case err == nil:
			r.logger.Debug("image present", "image", ref, "id", info.ID, "policy", policy)
			return info, nil
		case !errors.Is(err, executor.ErrNotFound):
			return executor.ImageInfo{}, err
		case policy == executor.PullNever:
			return executor.ImageInfo{}, &executor.ImageError{Image: ref, Reason: reasonNeverPull}
		}
	}
	if named == nil {
		return executor.ImageInfo{}, &executor.ImageError{Image: ref, Reason: "image ids cannot be pulled and this one is not present locally"}
	}
	if err := r.pull(ctx, ref, named, auth, out); err != nil {
		return executor.ImageInfo{}, err
	}
	return r.inspectImage(ctx, ref)
}

func (r *Runtime) inspectImage(ctx context.Context, ref string) (executor.ImageInfo, error) {
	img, err := r.cli.ImageInspect(ctx, ref)
	if err != nil {
		return executor.ImageInfo{}, notFound("inspecting image "+ref, err)
	}
	info := executor.ImageInfo{ID: img.ID}
	if img.Config != nil {
		info.ExposedTCPPorts = tcpPorts(img.Config.ExposedPorts)
	}
	return info, nil
}

// tcpPorts returns the sorted TCP port numbers of an ExposedPorts set, whose
// keys are "80/tcp", "53/udp" or "8080" (tcp).
func tcpPorts(exposed map[string]struct{}) []int {
	var ports []int
	for k := range exposed {
		port, proto, _ := strings.Cut(k, "/")
		if proto != "" && proto != "tcp" {
			continue
		}
		if n, err := strconv.Atoi(port); err == nil && n > 0 && n < 65536 {
			ports = append(ports, n)
		}
	}
	sort.Ints(ports)
	return ports
}

// pull pulls ref with the credential of its registry. Failures the daemon
// reports are *executor.ImageError; failing to reach the daemon or the
// context ending is not.
func (r *Runtime) pull(ctx context.Context, ref string, named reference.Named, auth []executor.RegistryAuth, out io.Writer) error {
	start := time.Now()
	domain := reference.Domain(named)
	opts := image.PullOptions{}
	cred, found := authFor(domain, auth)
	if found {
		enc, err := registry.EncodeAuthConfig(registry.AuthConfig{
			Username:      cred.Username,
			Password:      cred.Password,
			ServerAddress: cred.ServerAddress,
		})
		if err != nil {
			return fmt.Errorf("encoding registry credential for %s: %w", domain, err)
		}
		opts.RegistryAuth = enc
	}
	fmt.Fprintf(out, "Pulling image %s ...\n", ref)
	r.logger.Info("pulling image", "image", ref, "registry", domain, "authenticated", found)
	rc, err := r.cli.ImagePull(ctx, ref, opts)
	if err == nil {
		err = renderPull(rc, out)
		rc.Close()
	}
	if err != nil {
		r.logger.Warn("image pull failed", "image", ref, "duration", since(start), "error", err)
		if ctx.Err() != nil || client.IsErrConnectionFailed(err) || cerrdefs.IsCanceled(err) || cerrdefs.IsDeadlineExceeded(err) {
			return fmt.Errorf("pulling image %s: %w", ref, err)
		}
		return &executor.ImageError{Image: ref, Reason: "pull failed: " + err.Error()}
	}
	r.logger.Info("pulled image", "image", ref, "duration", since(start))
	return nil
}

// authFor returns the credential whose server address names domain.
func authFor(domain string, auth []executor.RegistryAuth) (executor.RegistryAuth, bool) {
	for _, a := range auth {
		if registryHost(a.ServerAddress) == domain {
			return a, true
		}
	}
	return executor.RegistryAuth{}, false
}

// registryHost reduces a credential's server address ("https://index.docker.io/v1/",
// "registry.example.com:5000", "http://host/path") to the host part a
// reference's domain is compared with.
func registryHost(addr string) string {
	addr = strings.ToLower(strings.TrimSpace(addr))
	if i := strings.Index(addr, "://"); i >= 0 {
		addr = addr[i+3:]
	}
	addr, _, _ = strings.Cut(addr, "/")
	switch addr {
	case "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com":
		return dockerHubDomain
	}
	return addr
}

// pullMessage is one JSON message of the pull progress stream.
type pullMessage struct {
	ID          string `json:"id"`
	Status      string `json:"status"`
	Error       string `json:"error"`
	ErrorDetail *struct {
		Message string `json:"message"`
	} `json:"errorDetail"`
}

// layerNoise are per-layer statuses repeated many times during a pull; only
// the outcome of each layer and the overall statuses are shown.
var layerNoise = map[string]bool{
	"Pulling fs layer":   true,
	"Waiting":            true,
	"Downloading":        true,
	"Verifying Checksum": true,
	"Download complete":  true,
	"Extracting":         true,
}

// renderPull writes the readable lines of a pull progress stream to out and
// returns the error the stream reports.
func renderPull(r io.Reader, out io.Writer) error {
	dec := json.NewDecoder(r)
	for {
		var m pullMessage
		if err := dec.Decode(&m); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("reading pull progress: %w", err)
		}
		if m.ErrorDetail != nil && m.ErrorDetail.Message != "" {
			return errors.New(m.ErrorDetail.Message)
		}
		if m.Error != "" {
			return errors.New(m.Error)
		}
		if m.Status == "" || (m.ID != "" && layerNoise[m.Status]) {
			continue
		}
		if m.ID != "" {
			fmt.Fprintf(out, "%s: %s\n", m.ID, m.Status)
		} else {
			fmt.Fprintln(out, m.Status)
		}
	}
}
