package harness

import (
	"fmt"
	"path"
	"path/filepath"
	"strconv"
	"strings"
)

// The sub-stages the runner passes to run_exec (common.BuildStage).
const (
	SubStagePrepareScript          = "prepare_script"
	SubStageGetSources             = "get_sources"
	SubStageClearWorktree          = "clear_worktree"
	SubStageRestoreCache           = "restore_cache"
	SubStageDownloadArtifacts      = "download_artifacts"
	SubStageBuildScript            = "build_script"
	SubStageAfterScript            = "after_script"
	SubStageArchiveCache           = "archive_cache"
	SubStageArchiveCacheOnFailure  = "archive_cache_on_failure"
	SubStageUploadArtifactsSuccess = "upload_artifacts_on_success"
	SubStageUploadArtifactsFailure = "upload_artifacts_on_failure"
	SubStageCleanupFileVariables   = "cleanup_file_variables"
)

// ANSI sequences of gitlab-runner's helpers/ansi_colors.go.
const (
	ansiBoldRed   = "\033[31;1m"
	ansiBoldGreen = "\033[32;1m"
	ansiBoldCyan  = "\033[36;1m"
	ansiYellow    = "\033[0;33m"
	ansiReset     = "\033[0;m"
	ansiClear     = "\033[0K"
)

// gitlabEnvFileName is the dotenv file of GITLAB_ENV in the temp project dir.
const gitlabEnvFileName = "gitlab_runner_env"

// defaultCacheRequestTimeout is the runner's DefaultCacheRequestTimeout
// (minutes), passed as cache-extractor/cache-archiver --timeout.
const defaultCacheRequestTimeout = 10

// shellEscape is gitlab-runner's helpers.ShellEscape: the input unchanged
// when it is made of safe characters only, else ANSI-C quoted ($'...')
// with control and non-ASCII bytes hex escaped.
func shellEscape(input string) string {
	if input == "" {
		return "''"
	}
	const hextable = "0123456789abcdef"
	var sb strings.Builder
	escape := false
	for _, c := range []byte(input) {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9',
			c == ',', c == '-', c == '.', c == '/', c == '@', c == '_':
			sb.WriteByte(c)
		case strings.IndexByte(" !\"#$%&()*+:;<=>?[]^`{|}~", c) >= 0:
			sb.WriteByte(c)
			escape = true
		default:
			escape = true
			switch c {
			case '\a':
				sb.WriteString(`\a`)
			case '\b':
				sb.WriteString(`\b`)
			case '\t':
				sb.WriteString(`\t`)
			case '\n':
				sb.WriteString(`\n`)
			case '\v':
				sb.WriteString(`\v`)
			case '\f':
				sb.WriteString(`\f`)
			case '\r':
				sb.WriteString(`\r`)
			case '\'':
				sb.WriteString(`\'`)
			case '\\':
				sb.WriteString(`\\`)
			default:
				sb.Write([]byte{'\\', 'x', hextable[c>>4], hextable[c&0x0f]})
			}
		}
	}
	if escape {
		return "$'" + sb.String() + "'"
	}
	return sb.String()
}

// doubleQuote is the runner's doubleQuote: "..." so that variables expand.
func doubleQuote(s string) string { return `"` + s + `"` }

// bashWriter builds the body of a sub-stage script like shells.BashWriter.
type bashWriter struct {
	strings.Builder
	indent int
}

func (w *bashWriter) Line(text string) {
	w.WriteString(strings.Repeat("  ", w.indent) + text + "\n")
}

func (w *bashWriter) Linef(format string, args ...any) { w.Line(fmt.Sprintf(format, args...)) }

func (w *bashWriter) command(quote func(string) string, cmd string, args ...string) string {
	list := []string{shellEscape(cmd)}
	for _, a := range args {
		list = append(list, quote(a))
	}
	return strings.Join(list, " ")
}

func (w *bashWriter) Command(cmd string, args ...string) {
	w.Line(w.command(shellEscape, cmd, args...))
}

func (w *bashWriter) CommandArgExpand(cmd string, args ...string) {
	w.Line(w.command(doubleQuote, cmd, args...))
}

func (w *bashWriter) IfCmd(cmd string, args ...string) {
	w.Linef("if %s >/dev/null 2>&1 ; then", w.command(shellEscape, cmd, args...))
	w.indent++
}

func (w *bashWriter) IfCmdWithOutput(cmd string, args ...string) {
	w.Linef("if %s ; then", w.command(shellEscape, cmd, args...))
	w.indent++
}

func (w *bashWriter) IfDirectory(p string) {
	w.Linef("if [ -d %q ]; then", p)
	w.indent++
}

func (w *bashWriter) Else() {
	w.indent--
	w.Line("else")
	w.indent++
}

func (w *bashWriter) EndIf() {
	w.indent--
	w.Line("fi")
}

func (w *bashWriter) Cd(p string)    { w.Command("cd", p) }
func (w *bashWriter) MkDir(p string) { w.Command("mkdir", "-p", p) }
func (w *bashWriter) RmFile(p string) {
	w.CommandArgExpand("rm", "-f", p)
}

func (w *bashWriter) RmDir(p string) {
	w.IfDirectory(p)
	w.CommandArgExpand("chmod", "-R", "u+rwX", p)
	w.EndIf()
	w.CommandArgExpand("rm", "-r", "-f", p)
}

func (w *bashWriter) Noticef(format string, args ...any) {
	w.Line("echo " + shellEscape(ansiBoldGreen+fmt.Sprintf(format, args...)+ansiReset))
}

func (w *bashWriter) Warningf(format string, args ...any) {
	w.Line("echo " + shellEscape(ansiYellow+fmt.Sprintf(format, args...)+ansiReset))
}

func (w *bashWriter) EmptyLine() { w.Line("echo") }

// finish wraps the body like shells.BashWriter.Finish(false): the whole
// script can also be fed to a shell on stdin.
func (w *bashWriter) finish() string {
	var b strings.Builder
	b.WriteString("#!/usr/bin/env bash\n\n")
	b.WriteString("trap 'exit 1' TERM\n\n")
	b.WriteString(`case "$(set -o)" in *"pipefail"*) set -o pipefail;; esac; set -o errexit` + "\n")
	b.WriteString("set +o noclobber\n")
	b.WriteString("(trap 'exit 1' TERM; eval " + shellEscape(w.String()) + ") < /dev/null\n")
	b.WriteString("exit 0\n")
	return b.String()
}

// scriptInfo is what the script generators need of an attempt.
type scriptInfo struct {
	payload       Payload
	vars          []Variable // all job variables, expanded (Attempt.Variables)
	rootDir       string     // CI_BUILDS_DIR
	buildDir      string     // CI_PROJECT_DIR
	cacheDir      string     // <cache_dir>/<project dir>
	hostname      string     // config stage "hostname"
	serverURL     string
	runnerCommand string
	getSources    bool
	extra         map[string][]string // ExtraSubStages by name
}

func (s *scriptInfo) tmpDir() string { return s.buildDir + ".tmp" }

func (s *scriptInfo) tmpFile(name string) string { return path.Join(s.tmpDir(), name) }

// exports writes every job variable like AbstractShell.writeExports; with
// envOnly, file variables are exported as their path only.
func (s *scriptInfo) exports(w *bashWriter, envOnly bool) {
	for _, v := range s.vars {
		if v.File {
			file := s.tmpFile(v.Key)
			if !envOnly {
				w.Linef("mkdir -p %q", s.tmpDir())
				w.Linef("printf '%%s' %s > %q", shellEscape(v.Value), file)
			}
			w.Linef("export %s=%q", shellEscape(v.Key), file)
			continue
		}
		w.Linef("export %s=%s", shellEscape(v.Key), shellEscape(v.Value))
	}
	envFile := s.tmpFile(gitlabEnvFileName)
	w.Linef("export %s=%s", "GITLAB_ENV", shellEscape(envFile))
	w.Linef("mkdir -p %q", s.tmpDir())
	w.Linef("touch %q", envFile)
	w.Linef(`while read -r line; do export "$line"; done < %q`, envFile)
}

// commands writes user commands like AbstractShell.writeCommands: each one
// echoed as "$ cmd" in bold green, then run.
func (s *scriptInfo) commands(w *bashWriter, commands []string) {
	for _, c := range commands {
		c = strings.TrimSpace(c)
		switch first, _, multi := strings.Cut(c, "\n"); {
		case c == "":
			w.EmptyLine()
		case multi:
			w.Noticef("$ %s # collapsed multi-line command", first)
		default:
			w.Noticef("$ %s", c)
		}
		w.Line(c)
	}
}

// step returns the payload step named name, if any.
func (s *scriptInfo) step(name string) *Step {
	for i := range s.payload.Steps {
		if s.payload.Steps[i].Name == name {
			return &s.payload.Steps[i]
		}
	}
	return nil
}

// generate returns the script of a sub-stage and whether the runner would
// run it at all (false: the runner skips the stage, ErrSkipBuildStage).
// Names that are not built-in stages are user steps (step_<name>,
// build_script) or Job.ExtraSubStages, like the runner's writeUserScript.
func (s *scriptInfo) generate(subStage string) (string, bool) {
	w := &bashWriter{}
	ok := true
	switch subStage {
	case SubStagePrepareScript:
		if s.hostname != "" {
			w.Line("echo " + strconv.Quote("Running on $(hostname) via "+s.hostname+"..."))
		} else {
			w.Line("echo " + strconv.Quote("Running on $(hostname)..."))
		}
		w.RmFile(s.tmpFile(gitlabEnvFileName))
		w.RmFile(s.tmpFile("masking.db"))
	case SubStageGetSources:
		s.getSourcesScript(w)
	case SubStageClearWorktree:
		w.Noticef("Deleting tracked and untracked files...")
		w.IfDirectory(s.buildDir)
		w.Cd(s.buildDir)
		w.Command("git", "rm", "-rf", "--ignore-unmatch", "--quiet", ".")
		w.Command("git", "clean", "-ffdx", "-q")
		w.EndIf()
	case SubStageRestoreCache:
		ok = s.restoreCacheScript(w)
	case SubStageDownloadArtifacts:
		ok = s.downloadArtifactsScript(w)
	case SubStageAfterScript:
		st := s.step("after_script")
		if st == nil || len(st.Script) == 0 {
			return "", false
		}
		s.exports(w, false)
		w.Cd(s.buildDir)
		w.Noticef("Running after script...")
		s.commands(w, st.Script)
	case SubStageArchiveCache, SubStageArchiveCacheOnFailure:
		ok = s.archiveCacheScript(w, subStage == SubStageArchiveCache)
	case SubStageUploadArtifactsSuccess, SubStageUploadArtifactsFailure:
		ok = s.uploadArtifactsScript(w, subStage == SubStageUploadArtifactsSuccess)
	case SubStageCleanupFileVariables:
		s.exports(w, true)
		w.RmFile(s.tmpFile(gitlabEnvFileName))
		w.RmFile(s.tmpFile("masking.db"))
		for _, v := range s.vars {
			if v.File {
				w.RmFile(s.tmpFile(v.Key))
			}
		}
	default:
		var script []string
		if cmds, found := s.extra[subStage]; found {
			script = cmds
		} else if st := s.stepForStage(subStage); st != nil {
			script = st.Script
		} else {
			return "", false
		}
		s.exports(w, false)
		w.Cd(s.buildDir)
		s.commands(w, script)
	}
	if !ok {
		return "", false
	}
	return w.finish(), true
}

// stepForStage finds the payload step a user sub-stage runs.
func (s *scriptInfo) stepForStage(subStage string) *Step {
	for i, st := range s.payload.Steps {
		if stepSubStage(st.Name) == subStage {
			return &s.payload.Steps[i]
		}
	}
	return nil
}

// stepSubStage is common.StepToBuildStage plus the custom executor's
// step_script → build_script translation.
func stepSubStage(name string) string {
	stage := "step_" + strings.ToLower(name)
	if stage == "step_script" {
		return SubStageBuildScript
	}
	return stage
}

// getSourcesScript is a simplified GIT_STRATEGY=fetch (or none, when the
// job has GetSources unset): git init, fetch the refspecs, check out the
// sha, clean.
func (s *scriptInfo) getSourcesScript(w *bashWriter) {
	s.exports(w, false)
	w.Linef("export GIT_TERMINAL_PROMPT=0")
	w.Linef("export GCM_INTERACTIVE=Never")
	if !s.getSources {
		w.Noticef("Skipping Git repository setup")
		w.MkDir(s.buildDir)
		return
	}
	gi := s.payload.GitInfo
	w.Noticef("Fetching changes...")
	w.MkDir(s.buildDir)
	w.Cd(s.buildDir)
	w.Line("if [ ! -d .git ]; then git init -q; fi")
	w.Linef("git remote set-url origin %s 2>/dev/null || git remote add origin %s",
		shellEscape(gi.RepoURL), shellEscape(gi.RepoURL))
	fetch := []string{"-c", "protocol.file.allow=always", "fetch", "-q", "--prune", "origin"}
	if gi.Depth > 0 {
		fetch = append(fetch, "--depth", strconv.Itoa(gi.Depth))
	}
	w.Command("git", append(fetch, gi.Refspecs...)...)
	short := gi.Sha
	if len(short) > 8 {
		short = short[:8]
	}
	w.Noticef("Checking out %s as detached HEAD (ref is %s)...", short, gi.Ref)
	w.Command("git", "-c", "submodule.recurse=false", "checkout", "-f", "-q", gi.Sha)
	w.Command("git", "clean", "-ffdx")
}

// cacheKey returns the human cache key and its archive path relative to
// the project dir, like newCacheConfig with FF_HASH_CACHE_KEYS off.
func (s *scriptInfo) cacheKey(c Cache) (key, file, alternate string) {
	key = strings.TrimPrefix(path.Join("/", s.payload.JobInfo.Name, s.payload.GitInfo.Ref), "/")
	if c.Key != "" {
		key = expand(c.Key, s.vars, s.tmpDir())
	}
	rel := func(k string) string {
		r, err := filepath.Rel(s.buildDir, path.Join(s.cacheDir, k, "cache.zip"))
		if err != nil {
			return path.Join(s.cacheDir, k, "cache.zip")
		}
		return r
	}
	return key, rel(key), rel(sha256Hex(key))
}

func cachePolicyAllows(policy, want string) bool {
	return policy == "" || policy == "pull-push" || policy == want
}

func cacheWhen(when string, jobOK bool) bool {
	switch when {
	case "", "on_success":
		return jobOK
	case "on_failure":
		return !jobOK
	case "always":
		return true
	}
	return false
}

func artifactWhen(when string, jobOK bool) bool { return cacheWhen(when, jobOK) }

func (s *scriptInfo) guardRunnerCommand(w *bashWriter, action string, f func()) {
	w.IfCmd(s.runnerCommand, "--version")
	f()
	w.Else()
	w.Warningf("Missing %s. %s is disabled.", s.runnerCommand, action)
	w.EndIf()
}

func (s *scriptInfo) restoreCacheScript(w *bashWriter) bool {
	s.exports(w, false)
	w.Cd(s.buildDir)
	found := false
	for _, c := range s.payload.Cache {
		if len(c.Paths) == 0 && !c.Untracked {
			continue
		}
		found = true
		key, file, _ := s.cacheKey(c)
		if !cachePolicyAllows(expand(c.Policy, s.vars, s.tmpDir()), "pull") {
			w.Noticef("Not downloading cache %s due to policy", key)
			continue
		}
		s.guardRunnerCommand(w, "Extracting cache", func() {
			w.Noticef("Checking cache for %s...", key)
			w.IfCmdWithOutput(s.runnerCommand, "cache-extractor", "--file", file,
				"--timeout", strconv.Itoa(defaultCacheRequestTimeout))
			w.Noticef("Successfully extracted cache")
			w.Else()
			w.Warningf("Failed to extract cache")
			w.EndIf()
		})
	}
	return found
}

func (s *scriptInfo) archiveCacheScript(w *bashWriter, jobOK bool) bool {
	s.exports(w, false)
	w.Cd(s.buildDir)
	found := false
	for _, c := range s.payload.Cache {
		if !cacheWhen(c.When, jobOK) {
			continue
		}
		var args []string
		for _, p := range c.Paths {
			args = append(args, "--path", p)
		}
		if c.Untracked {
			args = append(args, "--untracked")
		}
		if len(args) == 0 {
			continue
		}
		found = true
		key, file, alternate := s.cacheKey(c)
		if !cachePolicyAllows(expand(c.Policy, s.vars, s.tmpDir()), "push") {
			w.Noticef("Not uploading cache %s due to policy", key)
			continue
		}
		s.guardRunnerCommand(w, "Creating cache", func() {
			w.Noticef("Creating cache %s...", key)
			w.IfCmdWithOutput(s.runnerCommand, append([]string{"cache-archiver",
				"--file", file, "--alternate-file", alternate,
				"--timeout", strconv.Itoa(defaultCacheRequestTimeout)}, args...)...)
			w.Noticef("Created cache")
			w.Else()
			w.Warningf("Failed to create cache")
			w.EndIf()
		})
	}
	return found
}

func (s *scriptInfo) downloadArtifactsScript(w *bashWriter) bool {
	var deps []Dependency
	for _, d := range s.payload.Dependencies {
		if d.ArtifactsFile.Filename != "" {
			deps = append(deps, d)
		}
	}
	if len(deps) == 0 {
		return false
	}
	s.exports(w, false)
	w.Cd(s.buildDir)
	s.guardRunnerCommand(w, "Artifacts downloading", func() {
		for _, d := range deps {
			w.Noticef("Downloading artifacts for %s (%d)...", d.Name, d.ID)
			w.Command(s.runnerCommand, "artifacts-downloader", "--url", s.serverURL,
				"--token", d.Token, "--id", strconv.FormatInt(d.ID, 10))
		}
	})
	return true
}

func (s *scriptInfo) uploadArtifactsScript(w *bashWriter, jobOK bool) bool {
	s.exports(w, false)
	w.Cd(s.buildDir)
	found := false
	for _, a := range s.payload.Artifacts {
		if !artifactWhen(a.When, jobOK) {
			continue
		}
		var paths []string
		for _, p := range a.Paths {
			paths = append(paths, "--path", p)
		}
		for _, p := range a.Exclude {
			paths = append(paths, "--exclude", p)
		}
		if a.Untracked {
			paths = append(paths, "--untracked")
		}
		if len(paths) == 0 {
			continue
		}
		found = true
		args := []string{"artifacts-uploader", "--url", s.serverURL, "--token", s.payload.Token,
			"--id", strconv.FormatInt(s.payload.ID, 10), "--timeout", "1h0m0s",
			"--response-header-timeout", "10m0s"}
		args = append(args, paths...)
		if a.Name != "" {
			args = append(args, "--name", a.Name)
		}
		if a.ExpireIn != "" {
			args = append(args, "--expire-in", a.ExpireIn)
		}
		if a.Format != "" {
			args = append(args, "--artifact-format", a.Format)
		}
		if a.Type != "" {
			args = append(args, "--artifact-type", a.Type)
		}
		s.guardRunnerCommand(w, "Uploading artifacts", func() {
			w.Noticef("Uploading artifacts...")
			w.Command(s.runnerCommand, args...)
		})
	}
	return found
}
