package executor

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/bmatcuk/doublestar/v4"
)

// ShellProbe starts the first shell found, in the order the Docker
// executor probes (bash paths first, then sh variants, then busybox). With
// no arguments the shell reads its script from stdin.
const ShellProbe = `if [ -x /usr/local/bin/bash ]; then exec /usr/local/bin/bash
elif [ -x /usr/bin/bash ]; then exec /usr/bin/bash
elif [ -x /bin/bash ]; then exec /bin/bash
elif [ -x /usr/local/bin/sh ]; then exec /usr/local/bin/sh
elif [ -x /usr/bin/sh ]; then exec /usr/bin/sh
elif [ -x /bin/sh ]; then exec /bin/sh
elif [ -x /busybox/sh ]; then exec /busybox/sh
else echo shell not found; exit 1
fi
`

// runnerBinaryTarget is where the gitlab-runner binary appears in the build
// container; /usr/local/bin is on every image's default PATH.
const runnerBinaryTarget = "/usr/local/bin/gitlab-runner"

// opportunisticReap bounds the reap every prepare runs, so a busy host
// cleans up after crashed jobs without a timer and without slowing jobs.
var opportunisticReap = ReapOptions{MaxJobs: 3, SkipApps: true}

// containerPlan is what prepare will create, decided (and refused) before
// anything is created.
type containerPlan struct {
	build    imagePlan
	services []servicePlan
}

type imagePlan struct {
	ref        string
	policies   []PullPolicy
	entrypoint []string
	privileged bool
}

type servicePlan struct {
	imagePlan
	aliases []string
	command []string
	env     []string
}

// Prepare implements the prepare stage: policy and identity first (so a
// denial leaves nothing behind), then the job's network, services and build
// container, then the token file. On failure it tears down what it made;
// cleanup will do the same again, idempotently.
func (s *Stages) Prepare(ctx context.Context) (err error) {
	start := s.now()
	p, err := s.payload()
	if err != nil {
		return err
	}
	unlock, err := s.State.Lock(p.ID, true)
	if err != nil {
		return err
	}
	defer unlock()
	defer func() {
		// A prepare that fails before it records state leaves only the
		// lock file its Lock created (the teardown below covers the rest).
		if err != nil {
			if ferr := s.forgetIfStateless(p.ID); ferr != nil {
				s.Log.Warn("removing the lock of a failed prepare", "job", p.ID, "error", ferr)
			}
		}
	}()

	var unreachable *EngineUnreachableError
	if rep, rerr := s.Reap(ctx, opportunisticReap); errors.As(rerr, &unreachable) {
		// Nothing below can work: say so once.
		return unreachable
	} else if rerr != nil {
		s.Log.Warn("opportunistic reap failed", "error", rerr)
	} else if rep.Jobs > 0 {
		s.Log.Info("opportunistic reap", "jobs", rep.Jobs, "containers", rep.Containers, "tokens", rep.Tokens)
	}

	plan, err := s.plan(p)
	if err != nil {
		return err
	}
	runnerBin, err := s.runnerBinary()
	if err != nil {
		return err
	}
	names := NamesFor(s.Settings.RunnerID, p.ID)
	s.jobf("Preparing job %d with gitlab-okta-executor %s on runner %s", p.ID, s.Version, s.Settings.RunnerID)
	p.Runner = s.runnerInfo(ctx)
	s.Log.Info("gitlab runner", "job", p.ID, "version", p.Runner.Version, "version_from", p.Runner.From, "payload_shape", p.Shape())

	// Images first: a slow pull must not eat into the token's lifetime,
	// and a missing image needs no credential revoked.
	auth := registryAuth(p)
	buildInfo, err := s.ensureImage(ctx, plan.build, auth)
	if err != nil {
		return err
	}
	s.jobf("Using image %s (%s)", plan.build.ref, shortID(buildInfo.ID))
	svcPorts := make([][]int, len(plan.services))
	for i, svc := range plan.services {
		info, err := s.ensureImage(ctx, svc.imagePlan, auth)
		if err != nil {
			return err
		}
		svcPorts[i] = info.ExposedTCPPorts
	}

	st := &JobState{
		Runner: s.Settings.RunnerID, JobID: p.ID, ProjectID: p.JobInfo.ProjectID,
		ProjectPath: p.JobInfo.ProjectFullPath, PipelineID: p.JobInfo.PipelineID,
		Ref: p.GitInfo.Ref, Protected: p.Protected(), CreatedAt: s.now().UTC(),
		Timeout: p.RunnerInfo.Timeout, Attempt: s.Getenv(envAttempt), Phase: PhasePreparing,
		User: s.Settings.Docker.User,
	}
	ledger := NewLedger(s.State, st)
	if err := ledger.Save(); err != nil {
		return err
	}
	defer func() {
		if err == nil {
			return
		}
		// Best effort: leave no container and no live credential behind
		// even if the runner never calls cleanup.
		tctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		if terr := s.teardown(tctx, p.ID, ledger, "prepare failed"); terr != nil {
			s.Log.Warn("teardown after failed prepare", "job", p.ID, "error", terr)
		}
	}()

	var issuing *issuance
	if s.Identity != nil {
		// The decision first: a denial creates nothing and leaves nothing
		// to revoke.
		if err := s.Identity.Authorize(ctx, p, st); err != nil {
			return err
		}
		// Then the tokens are issued while the containers are created
		// (overlap.go). However prepare ends, the issuance ends first, so
		// the teardown after a failure revokes what it issued.
		issuing = s.startIssue(ctx, ledger)
		defer func() {
			if ierr := issuing.wait(); ierr != nil && err != nil && ierr != err {
				s.Log.Warn("issuing the job's token failed too", "job", p.ID, "error", ierr)
			}
		}()
	}

	// A previous attempt of this job may have left resources behind.
	if err := s.removeJobResources(ctx, p.ID); err != nil {
		return err
	}

	netLabels := jobLabels(s.Settings.RunnerID, p, "network", st.CreatedAt)
	netID, err := s.Runtime.CreateNetwork(ctx, names.Network, netLabels)
	if err != nil {
		return fmt.Errorf("creating job network: %w", err)
	}

	svcIDs := make([]string, len(plan.services))
	for i, svc := range plan.services {
		s.jobf("Starting service %s as %s", svc.ref, strings.Join(svc.aliases, ", "))
		id, err := s.Runtime.RunContainer(ctx, ContainerSpec{
			Name: names.Service(i, svc.aliases[0]), Image: svc.ref, Entrypoint: svc.entrypoint,
			Cmd: svc.command, Env: svc.env, Labels: jobLabels(s.Settings.RunnerID, p, "service", st.CreatedAt),
			NetworkID: netID, NetworkAliases: svc.aliases,
			Privileged: svc.privileged, CapDrop: []string{"ALL"}, CapAdd: s.Settings.Docker.CapAdd,
			SecurityOpt: s.securityOpt(), MemoryBytes: s.Settings.Docker.MemoryBytes(), NanoCPUs: s.Settings.Docker.NanoCPUs(),
		})
		if err != nil {
			return fmt.Errorf("starting service %s: %w", svc.ref, err)
		}
		svcIDs[i] = id
	}
	for i, svc := range plan.services {
		s.waitForService(ctx, svc, svcIDs[i], netID, svcPorts[i])
	}

	mounts, err := s.buildMounts(p, runnerBin, st)
	if err != nil {
		return err
	}
	buildID, err := s.Runtime.RunContainer(ctx, ContainerSpec{
		Name: names.Build, Image: plan.build.ref, Entrypoint: plan.build.entrypoint,
		Cmd: []string{"sh", "-c", ShellProbe}, OpenStdin: true,
		Labels:    jobLabels(s.Settings.RunnerID, p, "build", st.CreatedAt),
		User:      s.Settings.Docker.User,
		NetworkID: netID, NetworkAliases: []string{"build"},
		Mounts:     mounts,
		Privileged: plan.build.privileged, CapDrop: []string{"ALL"}, CapAdd: s.Settings.Docker.CapAdd,
		SecurityOpt: s.securityOpt(), Devices: s.Settings.Docker.Devices,
		MemoryBytes: s.Settings.Docker.MemoryBytes(), NanoCPUs: s.Settings.Docker.NanoCPUs(),
		ExtraHosts: s.Settings.Docker.ExtraHosts,
	})
	if err != nil {
		return fmt.Errorf("starting build container: %w", err)
	}
	// Before any credential enters it (confinement.go).
	if err := s.verifyConfinement(ctx, buildID, plan.build.privileged); err != nil {
		return err
	}
	if err := issuing.wait(); err != nil {
		return err
	}

	if s.Identity != nil && len(st.Credentials) > 0 {
		for _, line := range s.Identity.Describe(st) {
			s.jobf("%s", line)
		}
	}
	// The identity's files are delivered by the exec of the first
	// sub-stage that has them (delivery.go), not by an exec of their own.
	if err := ledger.Update(func(st *JobState) { st.Phase = PhaseReady }); err != nil {
		return err
	}
	s.Log.Info("prepared", "job", p.ID, "container", shortID(buildID), "services", len(plan.services), "duration", s.now().Sub(start))
	return nil
}

// plan resolves images and pull policies and applies every allowlist. All
// refusals are build failures: the job asked for something the runner's
// operator does not allow, and retrying will not help.
func (s *Stages) plan(p *Payload) (*containerPlan, error) {
	d := &s.Settings.Docker
	ref := p.Image.Name
	if ref == "" {
		ref = d.DefaultImage
	}
	if !matchAny(d.AllowedImages, ref) {
		return nil, Buildf("image %q is not allowed by this runner (allowed_images: %s)", ref, strings.Join(d.AllowedImages, ", "))
	}
	policies, err := s.pullPolicies(p.Image.PullPolicies, ref)
	if err != nil {
		return nil, err
	}
	plan := &containerPlan{build: imagePlan{
		ref: ref, policies: policies, entrypoint: p.Image.Entrypoint,
		privileged: d.Privileged && matchAny(d.PrivilegedImages, ref),
	}}
	if d.Privileged && !plan.build.privileged {
		s.jobf("Image %s is not in privileged_images: running it unprivileged", ref)
	}
	var publicEnv []string
	for _, v := range p.Variables {
		if v.Public && !v.Masked && !v.File {
			publicEnv = append(publicEnv, v.Key+"="+v.Value)
		}
	}
	for _, svc := range p.Services {
		if svc.Name == "" {
			return nil, Buildf("a service has no image name")
		}
		if !matchAny(d.AllowedServices, svc.Name) {
			return nil, Buildf("service image %q is not allowed by this runner (allowed_services: %s)", svc.Name, strings.Join(d.AllowedServices, ", "))
		}
		pol, err := s.pullPolicies(svc.PullPolicies, svc.Name)
		if err != nil {
			return nil, err
		}
		env := append([]string(nil), publicEnv...)
		for _, v := range svc.Variables {
			env = append(env, v.Key+"="+v.Value)
		}
		plan.services = append(plan.services, servicePlan{
			imagePlan: imagePlan{ref: svc.Name, policies: pol, entrypoint: svc.Entrypoint,
				privileged: d.Privileged && matchAny(d.PrivilegedImages, svc.Name)},
			aliases: serviceAliases(svc), command: svc.Command, env: env,
		})
	}
	return plan, nil
}

func (s *Stages) pullPolicies(requested []string, ref string) ([]PullPolicy, error) {
	d := &s.Settings.Docker
	list := requested
	if len(list) == 0 {
		list = d.PullPolicy
	}
	out := make([]PullPolicy, 0, len(list))
	for _, pp := range list {
		if !validPullPolicy(pp) {
			return nil, Buildf("image %q: unknown pull policy %q", ref, pp)
		}
		if len(d.AllowedPullPolicies) > 0 && !contains(d.AllowedPullPolicies, pp) {
			return nil, Buildf("image %q: pull policy %q is not allowed by this runner (allowed_pull_policies: %s)", ref, pp, strings.Join(d.AllowedPullPolicies, ", "))
		}
		out = append(out, PullPolicy(pp))
	}
	return out, nil
}

// ensureImage tries the pull policies in order, like the Docker executor.
func (s *Stages) ensureImage(ctx context.Context, ip imagePlan, auth []RegistryAuth) (ImageInfo, error) {
	var errs []error
	for _, pol := range ip.policies {
		info, err := s.Runtime.EnsureImage(ctx, ip.ref, pol, auth, s.Stdout)
		if err == nil {
			return info, nil
		}
		errs = append(errs, err)
	}
	err := errors.Join(errs...)
	var ie *ImageError
	if errors.As(err, &ie) {
		return ImageInfo{}, &BuildError{Err: fmt.Errorf("preparing image %s: %w", ip.ref, ie)}
	}
	return ImageInfo{}, fmt.Errorf("preparing image %s: %w", ip.ref, err)
}

func (s *Stages) securityOpt() []string {
	opts := []string{"no-new-privileges"}
	for _, o := range s.Settings.Docker.SecurityOpt {
		if o != "no-new-privileges" && o != "no-new-privileges:true" {
			opts = append(opts, o)
		}
	}
	return opts
}

// buildMounts: a per-job builds volume, the per-project cache volume, the
// gitlab-runner binary, the identity tmpfs and the operator's volumes.
func (s *Stages) buildMounts(p *Payload, runnerBin string, st *JobState) ([]Mount, error) {
	mounts := []Mount{
		{Type: MountVolume, Target: s.Settings.BuildsDir},
		{Type: MountVolume, Source: cacheVolumeName(s.Settings.RunnerID, p.JobInfo.ProjectID, p.Protected()), Target: s.Settings.CacheDir},
		{Type: MountBind, Source: runnerBin, Target: runnerBinaryTarget, ReadOnly: true},
	}
	if s.Identity != nil {
		ms, err := s.Identity.Mounts(st)
		if err != nil {
			return nil, err
		}
		mounts = append(mounts, ms...)
	}
	for _, v := range s.Settings.Docker.Volumes {
		m, err := parseVolume(v)
		if err != nil {
			return nil, fmt.Errorf("docker.volumes %q: %w", v, err)
		}
		mounts = append(mounts, m)
	}
	return mounts, nil
}

// runnerBinary finds the gitlab-runner binary to mount: the configured one,
// else the binary of the runner process that invoked us, else gitlab-runner
// on PATH. Without it the cache and artifact sub-stages would print a
// warning and succeed, silently dropping artifacts, so its absence fails
// prepare.
func (s *Stages) runnerBinary() (string, error) {
	if b := s.Settings.Docker.RunnerBinary; b != "" {
		return b, nil
	}
	if exe := s.parentExe(); exe != "" {
		return exe, nil
	}
	if p, err := exec.LookPath("gitlab-runner"); err == nil {
		if abs, err := filepath.EvalSymlinks(p); err == nil {
			return abs, nil
		}
		return p, nil
	}
	return "", errors.New("finding the gitlab-runner binary for the build container: set docker.runner_binary in the settings (without it caches and artifacts would be silently skipped)")
}

// waitForService waits until every exposed TCP port of a service accepts
// connections, dialling its address on the job network. Like the Docker
// executor, a service that does not come up is a warning, not a failure.
func (s *Stages) waitForService(ctx context.Context, svc servicePlan, id, netID string, ports []int) {
	if len(ports) == 0 || s.Settings.Docker.ServiceWaitTimeout.Duration == 0 {
		return
	}
	deadline := s.now().Add(s.Settings.Docker.ServiceWaitTimeout.Duration)
	wctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	for _, port := range ports {
		for {
			info, err := s.Runtime.InspectContainer(wctx, id)
			if err == nil && !info.Running {
				s.jobf("*** WARNING: Service %s exited before port %d answered.", svc.ref, port)
				return
			}
			if ip := info.IPAddresses[netID]; err == nil && ip != "" {
				var d net.Dialer
				dctx, dcancel := context.WithTimeout(wctx, time.Second)
				c, derr := d.DialContext(dctx, "tcp", net.JoinHostPort(ip, strconv.Itoa(port)))
				dcancel()
				if derr == nil {
					c.Close()
					break
				}
			}
			select {
			case <-wctx.Done():
				s.jobf("*** WARNING: Service %s probably didn't start properly: port %d did not answer within %s.", svc.ref, port, s.Settings.Docker.ServiceWaitTimeout.Duration)
				return
			case <-time.After(200 * time.Millisecond):
			}
		}
	}
}

// serviceAliases returns the explicit aliases (comma or space separated)
// and the two the Docker executor derives from the image name.
func serviceAliases(svc PayloadImage) []string {
	var out []string
	seen := map[string]bool{}
	add := func(a string) {
		if a != "" && !seen[a] {
			seen[a] = true
			out = append(out, a)
		}
	}
	for _, a := range strings.FieldsFunc(svc.Alias, func(r rune) bool { return r == ',' || r == ' ' }) {
		add(a)
	}
	name := svc.Name
	if i := strings.LastIndex(name, "@"); i >= 0 {
		name = name[:i]
	}
	if i := strings.LastIndex(name, ":"); i > strings.LastIndex(name, "/") {
		name = name[:i]
	}
	add(strings.ReplaceAll(name, "/", "__"))
	add(strings.ReplaceAll(name, "/", "-"))
	return out
}

func registryAuth(p *Payload) []RegistryAuth {
	var out []RegistryAuth
	for _, c := range p.Credentials {
		if c.Type == "registry" {
			out = append(out, RegistryAuth{ServerAddress: c.URL, Username: c.Username, Password: c.Password})
		}
	}
	return out
}

// matchAny reports whether name matches one of the doublestar globs; an
// empty list allows everything, as in the Docker executor.
func matchAny(globs []string, name string) bool {
	if len(globs) == 0 {
		return true
	}
	for _, g := range globs {
		if ok, _ := doublestar.Match(g, name); ok {
			return true
		}
	}
	return false
}

func contains(list []string, v string) bool {
	for _, x := range list {
		if x == v {
			return true
		}
	}
	return false
}

func shortID(id string) string {
	id = strings.TrimPrefix(id, "sha256:")
	if len(id) > 12 {
		return id[:12]
	}
	return id
}
