package executor

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"strconv"
	"strings"
)

// The build container's confinement is verified, not assumed: an engine may
// accept cap_drop and no-new-privileges and still not apply them (Podman
// grants cap_add to non-root users; an engine behind a proxy may drop
// fields). After the build container starts, and before any credential
// enters it, prepare reads what its processes hold from the kernel and
// refuses to go on when that is more than the settings grant.

// ConfinementProbe is the command the check runs in the build container,
// as the script user: shell builtins only, so any image with sh answers. It
// prints the Uid, CapEff, CapBnd and NoNewPrivs lines of /proc/1/status
// (the container's process) and /proc/self/status (a process started the
// way job scripts are), each prefixed with the file's path.
var ConfinementProbe = []string{"sh", "-c", `for f in /proc/1/status /proc/self/status; do
while IFS= read -r l; do case "$l" in Uid:*|CapEff:*|CapBnd:*|NoNewPrivs:*) echo "$f $l";; esac; done < "$f"
done`}

// Confinement is what the settings grant the build container's processes.
type Confinement struct {
	// CapAdd are the capabilities added after cap_drop ALL (docker.cap_add).
	CapAdd []string
	// Privileged containers hold every capability by request.
	Privileged bool
	// User runs the probe (docker.user; empty is the image's user).
	User string
}

// CapabilityNames are Linux's capabilities by number (capability.h).
var CapabilityNames = []string{
	"CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID",
	"SETPCAP", "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW", "IPC_LOCK", "IPC_OWNER",
	"SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT", "SYS_ADMIN", "SYS_BOOT", "SYS_NICE",
	"SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD", "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP",
	"MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG", "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF",
	"CHECKPOINT_RESTORE",
}

// CapabilityMask returns the bit set of capability names (with or without
// CAP_, any case); names it does not know add nothing.
func CapabilityMask(names []string) uint64 {
	var m uint64
	for _, n := range names {
		n = strings.TrimPrefix(strings.ToUpper(strings.TrimSpace(n)), "CAP_")
		for i, c := range CapabilityNames {
			if c == n {
				m |= 1 << i
			}
		}
	}
	return m
}

// capabilityList names the bits of m ("none" for the empty set).
func capabilityList(m uint64) string {
	var out []string
	for m != 0 {
		i := bits.TrailingZeros64(m)
		if i < len(CapabilityNames) {
			out = append(out, CapabilityNames[i])
		} else {
			out = append(out, "cap"+strconv.Itoa(i))
		}
		m &^= 1 << i
	}
	if len(out) == 0 {
		return "none"
	}
	return strings.Join(out, ",")
}

// procStatus is what the probe read of one process.
type procStatus struct {
	uid            int // effective uid; -1 unread
	capEff, capBnd uint64
	noNewPrivs     bool
	seen           int // lines read: 4 when complete
}

// HostProcesses is a Runtime whose engine runs its containers on this host,
// in a pid namespace this process sees. The status of a container's first
// process is then read from this host's kernel: no exec in the container
// (the largest part of the check's cost), and nothing in the job's image
// (its sh, its /proc reading) takes part in the answer.
type HostProcesses interface {
	// ContainerProcessStatus returns /proc/PID/status of the running
	// container's first process as this host's kernel reports it; an error
	// wrapping ErrNotOnThisHost when this host cannot see it (a remote
	// engine, another pid namespace, a /proc that hides it).
	ContainerProcessStatus(ctx context.Context, containerID string) ([]byte, error)
}

// ErrNotOnThisHost is a container whose processes this host cannot read:
// the check falls back to ConfinementProbe.
var ErrNotOnThisHost = errors.New("the container's processes are not visible on this host")

// VerifyConfinement checks what the running container containerID's
// processes hold: that no_new_privs is set, that the bounding and effective
// sets hold nothing beyond want.CapAdd (unless privileged), and that a
// non-root process has no effective capability at all, as Docker Engine
// gives it. It reads the container's first process from this host's kernel
// when rt is HostProcesses and the engine is here (the exec'd processes of
// job scripts get the same capability set and no_new_privs from the engine);
// otherwise it runs ConfinementProbe in the container as want.User, which
// reads that process and itself, a process started like a job script. The
// error is one line naming what is wrong.
func VerifyConfinement(ctx context.Context, rt Runtime, containerID string, want Confinement) error {
	checks, err := readConfinement(ctx, rt, containerID, want.User)
	if err != nil {
		return fmt.Errorf("verifying the build container's confinement: %w", err)
	}
	allowed := CapabilityMask(want.CapAdd)
	// The first process that is wrong is reported, with its first fault:
	// one line, and job processes mostly inherit the container's faults.
	for _, p := range checks {
		if fault := confinementFault(p.st, allowed, want.Privileged); fault != "" {
			return fmt.Errorf("the container engine did not confine the build container as the settings ask: %s (uid %d) %s", p.name, p.st.uid, fault)
		}
	}
	return nil
}

// procCheck is one process VerifyConfinement judges.
type procCheck struct {
	name string
	st   procStatus
}

// readConfinement reads the status of the container's processes: from
// this host's kernel when it can, else through ConfinementProbe.
func readConfinement(ctx context.Context, rt Runtime, containerID, user string) ([]procCheck, error) {
	if hp, ok := rt.(HostProcesses); ok {
		status, err := hp.ContainerProcessStatus(ctx, containerID)
		switch {
		case err == nil:
			procs, err := parseProbe(prefixLines("/proc/1/status", status), "/proc/1/status")
			if err != nil {
				return nil, err
			}
			return []procCheck{{"the container's process", procs["/proc/1/status"]}}, nil
		case !errors.Is(err, ErrNotOnThisHost):
			return nil, err
		}
	}
	var out, errOut strings.Builder
	code, err := rt.Exec(ctx, containerID, ExecSpec{Cmd: ConfinementProbe, User: user, Stdout: &out, Stderr: &errOut})
	if err != nil {
		return nil, err
	}
	if code != 0 {
		return nil, fmt.Errorf("reading /proc exited %d: %s", code, oneLine(errOut.String()))
	}
	procs, err := parseProbe(strings.NewReader(out.String()), "/proc/1/status", "/proc/self/status")
	if err != nil {
		return nil, err
	}
	return []procCheck{{"the container's process", procs["/proc/1/status"]}, {"a job process", procs["/proc/self/status"]}}, nil
}

// prefixLines puts file before every line of status, as ConfinementProbe
// prints them.
func prefixLines(file string, status []byte) io.Reader {
	var b strings.Builder
	for _, l := range strings.Split(strings.TrimRight(string(status), "\n"), "\n") {
		b.WriteString(file + " " + l + "\n")
	}
	return strings.NewReader(b.String())
}

// confinementFault says what is wrong with st, or "".
func confinementFault(st procStatus, allowed uint64, privileged bool) string {
	switch {
	case !st.noNewPrivs:
		return "can gain privileges: no_new_privs is not set"
	case privileged:
		return ""
	case st.capBnd&^allowed != 0:
		return fmt.Sprintf("has %s in its bounding set beyond docker.cap_add (%s)", capabilityList(st.capBnd&^allowed), capabilityList(allowed))
	case st.uid != 0 && st.capEff != 0:
		return fmt.Sprintf("holds effective capabilities %s, want none for a non-root user", capabilityList(st.capEff))
	case st.capEff&^allowed != 0:
		return fmt.Sprintf("holds effective capabilities %s beyond docker.cap_add (%s)", capabilityList(st.capEff&^allowed), capabilityList(allowed))
	}
	return ""
}

// parseProbe reads ConfinementProbe's output into the status of each file;
// each of files must be complete.
func parseProbe(r io.Reader, files ...string) (map[string]procStatus, error) {
	procs := map[string]procStatus{}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		file, line, ok := strings.Cut(sc.Text(), " ")
		if !ok {
			continue
		}
		key, val, _ := strings.Cut(line, ":")
		fields := strings.Fields(val)
		if len(fields) == 0 {
			continue
		}
		st, ok := procs[file]
		if !ok {
			st.uid = -1
		}
		var err error
		switch key {
		case "Uid":
			if len(fields) < 2 {
				return nil, fmt.Errorf("reading %s: Uid line %q", file, line)
			}
			st.uid, err = strconv.Atoi(fields[1])
		case "CapEff":
			st.capEff, err = strconv.ParseUint(fields[0], 16, 64)
		case "CapBnd":
			st.capBnd, err = strconv.ParseUint(fields[0], 16, 64)
		case "NoNewPrivs":
			st.noNewPrivs = fields[0] == "1"
		default:
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("reading %s: %s line %q: %w", file, key, line, err)
		}
		st.seen++
		procs[file] = st
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading the probe's output: %w", err)
	}
	for _, f := range files {
		// A kernel without no_new_privs (before 4.10) does not report it:
		// then nothing can be verified.
		if procs[f].seen != 4 {
			return nil, fmt.Errorf("reading %s: want its Uid, CapEff, CapBnd and NoNewPrivs lines, got %d of them", f, procs[f].seen)
		}
	}
	return procs, nil
}

func oneLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i] + " ..."
	}
	if s == "" {
		return "no output"
	}
	return s
}

// verifyConfinement checks the build container against the settings; see
// VerifyConfinement.
func (s *Stages) verifyConfinement(ctx context.Context, containerID string, privileged bool) error {
	return VerifyConfinement(ctx, s.Runtime, containerID, Confinement{
		CapAdd: s.Settings.Docker.CapAdd, Privileged: privileged, User: s.Settings.Docker.User,
	})
}
