// Command fakerunner is a stand-in for the gitlab-runner binary inside job
// containers, for end-to-end tests of the executor. The scripts the runner
// generates call `gitlab-runner` for caches and artifacts; this binary
// implements the subcommands they use with the real one's file semantics
// and exit codes, without talking to GitLab or a cache server:
//
//	gitlab-runner --version
//	gitlab-runner cache-extractor --file F [--timeout N] [...]
//	gitlab-runner cache-archiver --file F --path P [--path P2] [--untracked] [...]
//	gitlab-runner artifacts-uploader --url U --token T --id N --path P [...]
//	gitlab-runner artifacts-downloader --url U --token T --id N
//
// cache-extractor extracts the zip F into the working directory; a missing
// F prints "WARNING: Cache file does not exist" and exits 1, like the real
// one (the runner's script then prints "Failed to extract cache" and goes
// on). cache-archiver zips the matching paths (doublestar globs relative to
// the working directory, which they must stay in) and the untracked files
// (git ls-files -o) into F, creating its parent directories. The artifacts
// commands only print what they would do and exit 0. Flags the real
// commands take but that need a server (--url, --env-file, ...) are
// accepted and ignored.
//
// Build it with CGO_ENABLED=0 (harness.BuildFakeRunner does) so it runs in
// any image.
package main

import (
	"fmt"
	"io"
	"os"
	"strings"
)

// version is what --version prints; the first line is the real one's shape.
const version = "Version:      18.6.0-fake\nGit revision: fake\nGit branch:   fake\nOS/Arch:      fake\n"

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run dispatches a command line and returns the exit code.
func run(args []string, stdout, stderr io.Writer) int {
	log := &logger{w: stderr}
	if len(args) == 0 {
		fmt.Fprintln(stderr, "usage: gitlab-runner [--version] <cache-extractor|cache-archiver|artifacts-uploader|artifacts-downloader> [flags]")
		return 1
	}
	// global flags before the subcommand, like urfave/cli
	for len(args) > 0 && strings.HasPrefix(args[0], "-") {
		switch args[0] {
		case "--version", "-v":
			fmt.Fprint(stdout, version)
			return 0
		case "--debug", "--log-format", "--log-level":
			if args[0] != "--debug" && len(args) > 1 {
				args = args[1:]
			}
			args = args[1:]
		default:
			log.fatalf("flag provided but not defined: %s", args[0])
			return 1
		}
	}
	if len(args) == 0 {
		log.fatalf("missing command")
		return 1
	}
	cmd, rest := args[0], args[1:]
	f, err := parseFlags(rest)
	if err != nil {
		log.fatalf("%v", err)
		return 1
	}
	switch cmd {
	case "--version", "version":
		fmt.Fprint(stdout, version)
		return 0
	case "cache-extractor":
		return cacheExtractor(f, log)
	case "cache-archiver":
		return cacheArchiver(f, log)
	case "artifacts-uploader":
		return artifactsUploader(f, stdout, log)
	case "artifacts-downloader":
		return artifactsDownloader(f, stdout, log)
	default:
		log.fatalf("command %q is not implemented by the fake gitlab-runner", cmd)
		return 1
	}
}

// boolFlags are the flags of the emulated commands that take no value.
var boolFlags = map[string]bool{
	"untracked":                   true,
	"redact-url":                  true,
	"generate-artifacts-metadata": true,
	"debug":                       true,
}

// flags holds the parsed --name value pairs; repeated flags keep all values.
type flags map[string][]string

func (f flags) get(name string) string {
	if v := f[name]; len(v) > 0 {
		return v[len(v)-1]
	}
	return ""
}

func (f flags) has(name string) bool { _, ok := f[name]; return ok }

// parseFlags reads "--name value", "--name=value" and the bool flags. Any
// unknown flag is accepted (the runner passes server-side ones).
func parseFlags(args []string) (flags, error) {
	f := flags{}
	for i := 0; i < len(args); i++ {
		a := args[i]
		if !strings.HasPrefix(a, "-") {
			return nil, fmt.Errorf("unexpected argument %q", a)
		}
		name := strings.TrimLeft(a, "-")
		if n, v, ok := strings.Cut(name, "="); ok {
			f[n] = append(f[n], v)
			continue
		}
		if boolFlags[name] {
			f[name] = append(f[name], "true")
			continue
		}
		if i+1 >= len(args) {
			return nil, fmt.Errorf("flag needs an argument: %s", a)
		}
		i++
		f[name] = append(f[name], args[i])
	}
	return f, nil
}

// ANSI sequences of the runner's log formatter.
const (
	ansiYellow  = "\033[0;33m"
	ansiBoldRed = "\033[31;1m"
	ansiReset   = "\033[0;m"
)

// logger prints like the runner's RunnerTextFormatter (logrus to stderr).
type logger struct{ w io.Writer }

func (l *logger) print(color, prefix, msg string) {
	fmt.Fprintf(l.w, "%s%s%-*s%s \n", color, prefix, 50-len(prefix), msg, ansiReset)
}

func (l *logger) infof(format string, args ...any) { l.print("", "", fmt.Sprintf(format, args...)) }

func (l *logger) warningf(format string, args ...any) {
	l.print(ansiYellow, "WARNING: ", fmt.Sprintf(format, args...))
}

func (l *logger) fatalf(format string, args ...any) {
	l.print(ansiBoldRed, "FATAL: ", fmt.Sprintf(format, args...))
}

// artifactsUploader prints the upload it would make (never the token).
func artifactsUploader(f flags, stdout io.Writer, log *logger) int {
	if f.get("id") == "" {
		log.fatalf("Missing build ID (--id)")
		return 1
	}
	name := f.get("name")
	if name == "" {
		name = "archive"
	}
	fmt.Fprintf(stdout, "fake gitlab-runner: would upload artifacts %q of job %s to %s: paths=%q exclude=%q untracked=%v format=%q type=%q expire_in=%q\n",
		name, f.get("id"), f.get("url"), f["path"], f["exclude"], f.has("untracked"),
		f.get("artifact-format"), f.get("artifact-type"), f.get("expire-in"))
	return 0
}

// artifactsDownloader prints the download it would make (never the token).
func artifactsDownloader(f flags, stdout io.Writer, log *logger) int {
	if f.get("id") == "" {
		log.fatalf("Missing build ID (--id)")
		return 1
	}
	fmt.Fprintf(stdout, "fake gitlab-runner: would download the artifacts of job %s from %s\n", f.get("id"), f.get("url"))
	return 0
}
