package executor_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/executor"
	"github.com/gitlab-okta-executor/gitlab-okta-executor/executor/runtimetest"
)

// TestPrepareRefusesABuildContainerTheEngineDidNotConfine: an engine that
// accepts cap_drop or no-new-privileges and does not apply them fails
// prepare with one line, as a system failure, and leaves nothing behind.
func TestPrepareRefusesABuildContainerTheEngineDidNotConfine(t *testing.T) {
	for name, tc := range map[string]struct {
		settings string
		flaws    runtimetest.EngineFlaws
		want     string
	}{
		"cap_drop ignored": {"", runtimetest.EngineFlaws{IgnoreCapDrop: true},
			"the container's process (uid 0) has KILL,SETPCAP,NET_BIND_SERVICE,NET_RAW,SYS_CHROOT,MKNOD,AUDIT_WRITE,SETFCAP in its bounding set beyond docker.cap_add (CHOWN,DAC_OVERRIDE,FOWNER,FSETID,SETGID,SETUID)"},
		"cap_add granted to a non-root user": {"user = \"1000\"\ncap_add = [\"CHOWN\"]\n", runtimetest.EngineFlaws{CapAddToUsers: true},
			"the container's process (uid 1000) holds effective capabilities CHOWN, want none for a non-root user"},
		"no-new-privileges ignored": {"", runtimetest.EngineFlaws{IgnoreNoNewPrivileges: true},
			"the container's process (uid 0) can gain privileges: no_new_privs is not set"},
	} {
		for _, host := range []bool{false, true} {
			t.Run(name+readBy(host), func(t *testing.T) {
				e := newStageEnv(t, tc.settings, basicPayload)
				e.rt.SimulateFlaws(tc.flaws)
				e.rt.SimulateHostProcesses(host)
				err := e.stages().Prepare(context.Background())
				if err == nil || executor.IsBuildFailure(err) {
					t.Fatalf("Prepare = %v, want a system failure", err)
				}
				if msg := err.Error(); !strings.Contains(msg, tc.want) || strings.Contains(msg, "\n") {
					t.Errorf("Prepare = %q, want one line containing %q", msg, tc.want)
				}
				if cs, ns := e.containers(), e.networks(); len(cs)+len(ns) != 0 {
					t.Errorf("left behind: %d containers, %d networks", len(cs), len(ns))
				}
				if _, err := e.store.Load(101); !errors.Is(err, executor.ErrNoState) {
					t.Errorf("state left behind: %v", err)
				}
				if n := probes(e); host && n != 0 {
					t.Errorf("%d probe execs, want none: the host's /proc answers", n)
				}
			})
		}
	}
}

// readBy names the way a test reads the build container's processes.
func readBy(host bool) string {
	if host {
		return ", read on the host"
	}
	return ", read by an exec"
}

// probes counts the confinement probes exec'd in the stage env's engine.
func probes(e *stageEnv) int {
	n := 0
	for _, x := range e.rt.Execs() {
		if strings.Join(x.Cmd, " ") == strings.Join(executor.ConfinementProbe, " ") {
			n++
		}
	}
	return n
}

// TestPrepareAcceptsWhatTheSettingsGrant: the check passes on an engine
// that applies the settings, also for a non-root user and privileged images.
func TestPrepareAcceptsWhatTheSettingsGrant(t *testing.T) {
	for name, settings := range map[string]string{
		"defaults":   "",
		"non-root":   "user = \"1000\"\n",
		"no cap_add": "cap_add = []\n",
		"privileged": "privileged = true\nprivileged_images = [\"busybox:*\"]\n",
	} {
		for _, host := range []bool{false, true} {
			t.Run(name+readBy(host), func(t *testing.T) {
				e := newStageEnv(t, settings, basicPayload)
				e.rt.SimulateHostProcesses(host)
				if err := e.stages().Prepare(context.Background()); err != nil {
					t.Fatalf("Prepare = %v", err)
				}
				for _, x := range e.rt.Execs() {
					if strings.Join(x.Cmd, " ") == strings.Join(executor.ConfinementProbe, " ") && x.User != e.settings.Docker.User {
						t.Errorf("probe ran as %q, want the script user %q", x.User, e.settings.Docker.User)
					}
				}
				// Read on the host, the check needs no exec at all.
				if n, want := probes(e), map[bool]int{false: 1, true: 0}[host]; n != want {
					t.Errorf("%d confinement probes, want %d", n, want)
				}
				if host && len(e.rt.Execs()) != 0 {
					t.Errorf("prepare exec'd %d processes, want none", len(e.rt.Execs()))
				}
			})
		}
	}
}
