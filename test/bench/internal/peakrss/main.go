// Command peakrss runs a command and prints the peak resident set size of
// that command alone, for BenchmarkConfigStage.
//
// On Linux the ru_maxrss of a child is never lower than the resident set of
// the process that started it: exec folds the high-water mark of the image
// it replaces into the process's record, and Go starts children with
// vfork semantics, so a child of a large test binary inherits that binary's
// peak. Started from this small program instead, the floor is this
// program's own peak, which it prints too.
//
//	peakrss PROG ARGS...
//
// prints "maxrss_kib=N floor_kib=M" on stdout, passes the command's stdout
// and stderr to its stderr and exits with the command's exit code. Without
// arguments it exits 0 at once: the smallest Go program, for scale.
package main

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
)

func main() {
	if len(os.Args) < 2 {
		return
	}
	floor := selfHWM()
	cmd := exec.Command(os.Args[1], os.Args[2:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stderr, os.Stderr
	err := cmd.Run()
	if cmd.ProcessState == nil {
		fmt.Fprintln(os.Stderr, "peakrss:", err)
		os.Exit(2)
	}
	ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	if !ok {
		fmt.Fprintln(os.Stderr, "peakrss: no rusage on this platform")
		os.Exit(2)
	}
	fmt.Printf("maxrss_kib=%d floor_kib=%d\n", ru.Maxrss, floor)
	os.Exit(cmd.ProcessState.ExitCode())
}

// selfHWM is this process's VmHWM in KiB (0 if unknown): the most a child
// can inherit.
func selfHWM() int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n
		}
	}
	return 0
}
