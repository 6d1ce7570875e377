// Package testimages builds, from files already on this machine, the small
// container images the integration tests of gitlab-okta-executor run in. No
// registry is reachable where the tests run, so nothing is pulled: every
// image is built through the Docker API (ImageBuild with a tar context made in
// Go, never the docker CLI) and cached by a content-hash label, so a second
// Ensure costs a few inspect calls.
//
// The images and what they are for:
//
//   - Busybox (gitlab-okta-executor-test/busybox:latest): FROM scratch,
//     Debian's static busybox with its applets linked in /bin, a static bash
//     as /bin/bash, root and an unprivileged "ci" user (uid and gid 1000),
//     /tmp 1777. It is the job image of most tests: it has the bash that
//     GitLab's generated scripts want, a POSIX sh, nc, wget and httpd for
//     service containers, and nothing that needs a registry.
//   - Git (gitlab-okta-executor-test/git:latest): Busybox plus the host's git,
//     /usr/lib/git-core and every shared library git, git-remote-http and
//     git-http-backend load, so the get_sources stage can run "git clone
//     http://..." inside a job container.
//   - GitServer: Git plus one bare repository served over smart HTTP by
//     busybox httpd and git http-backend (EXPOSE 80), to be run as a service
//     container that job containers clone from.
//   - Build: any small Dockerfile without a context (for example an image
//     FROM Busybox with EXPOSE lines), cached the same way.
package testimages

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/build"
	"github.com/docker/docker/client"
)

// Image references the package tags. Git server images and Build images are
// tagged with a prefix of their content hash instead, so different contents
// never overwrite each other.
const (
	BusyboxRef    = "gitlab-okta-executor-test/busybox:latest"
	GitRef        = "gitlab-okta-executor-test/git:latest"
	GitServerRepo = "gitlab-okta-executor-test/git-server"
)

// HashLabel is the image label holding the hash of everything an image was
// built from; an image whose label matches is reused as it is.
const HashLabel = "io.gitlab-okta-executor.test.content-hash"

// Host files the images are made of. They come from the Debian packages
// busybox-static, bash-static and git.
const (
	hostBusybox = "/bin/busybox"
	hostBash    = "/bin/bash-static"
	hostGit     = "/usr/bin/git"
	hostGitCore = "/usr/lib/git-core"
	// hostGitTemplates is optional: without it git clone only warns.
	hostGitTemplates = "/usr/share/git-core/templates"
)

// gitLinked are the git programs whose shared libraries must be in the
// image: git itself, the HTTP transport used by clone, and the server side
// used by GitServer.
var gitLinked = []string{hostGit, hostGitCore + "/git-remote-http", hostGitCore + "/git-http-backend"}

// Images holds the references of the images Ensure made available.
type Images struct {
	// Busybox is the static busybox + bash image.
	Busybox string
	// Git is Busybox plus a working git with HTTP transport.
	Git string
}

// ensureMu serialises builds within one test binary; concurrent test
// binaries may build the same image twice, which is harmless.
var ensureMu sync.Mutex

// Ensure builds the Busybox and Git images unless images built from the same
// content are already present, and returns their references.
func Ensure(ctx context.Context, cli *client.Client) (Images, error) {
	ensureMu.Lock()
	defer ensureMu.Unlock()
	bb, err := busyboxRootfs()
	if err != nil {
		return Images{}, fmt.Errorf("collecting busybox image files: %w", err)
	}
	bbKey, err := ensure(ctx, cli, BusyboxRef, busyboxDockerfile, bb, "")
	if err != nil {
		return Images{}, err
	}
	gitFiles, err := gitRootfs()
	if err != nil {
		return Images{}, fmt.Errorf("collecting git image files: %w", err)
	}
	if _, err := ensure(ctx, cli, GitRef, "FROM "+BusyboxRef+"\n"+rootfsDockerfileTail, gitFiles, bbKey); err != nil {
		return Images{}, err
	}
	return Images{Busybox: BusyboxRef, Git: GitRef}, nil
}

// GitServer returns the reference of an image, FROM the Git image, that
// serves the bare repository bareRepoDir over smart HTTP on port 80: a
// container of it answers
//
//	git clone http://<alias>/cgi-bin/git/<name>.git
//
// where <name> is the base name of bareRepoDir without ".git". The image is
// built when no image with the same content exists.
func GitServer(ctx context.Context, cli *client.Client, bareRepoDir string) (string, error) {
	imgs, err := Ensure(ctx, cli)
	if err != nil {
		return "", err
	}
	name := strings.TrimSuffix(filepath.Base(filepath.Clean(bareRepoDir)), ".git")
	if name == "" || name == "." || name == string(filepath.Separator) {
		return "", fmt.Errorf("building git server image: no repository name in %q", bareRepoDir)
	}
	if _, err := os.Stat(filepath.Join(bareRepoDir, "HEAD")); err != nil {
		return "", fmt.Errorf("building git server image: %s is not a bare repository: %w", bareRepoDir, err)
	}
	var r rootfs
	r.file("www/cgi-bin/git", 0o755, []byte(gitCGI))
	if err := r.tree("srv/git/"+name+".git", bareRepoDir); err != nil {
		return "", fmt.Errorf("collecting repository %s: %w", bareRepoDir, err)
	}
	gitKey, err := imageKey(ctx, cli, imgs.Git)
	if err != nil {
		return "", err
	}
	dockerfile := "FROM " + imgs.Git + "\n" + rootfsDockerfileTail +
		"EXPOSE 80\nCMD [\"httpd\", \"-f\", \"-v\", \"-p\", \"80\", \"-h\", \"/www\"]\n"
	hash, err := r.hash(dockerfile, gitKey)
	if err != nil {
		return "", fmt.Errorf("hashing git server image files: %w", err)
	}
	ref := GitServerRepo + ":" + hash[:12]
	ensureMu.Lock()
	defer ensureMu.Unlock()
	if err := buildImage(ctx, cli, ref, dockerfile, &r, hash); err != nil {
		return "", err
	}
	return ref, nil
}

// gitCGI is the CGI program busybox httpd runs for /cgi-bin/git/...; git
// http-backend reads PATH_INFO, QUERY_STRING and the request body.
const gitCGI = `#!/bin/sh
export GIT_PROJECT_ROOT=/srv/git GIT_HTTP_EXPORT_ALL=1
exec git http-backend
`

// Build builds a Dockerfile that needs no context files (FROM, ENV, EXPOSE,
// CMD, ENTRYPOINT, LABEL, RUN...) unless an image built from the same
// Dockerfile and the same base images exists, and returns its reference
// repo:<hash prefix>. Base images must be present locally.
func Build(ctx context.Context, cli *client.Client, repo, dockerfile string) (string, error) {
	var bases []string
	for _, line := range strings.Split(dockerfile, "\n") {
		f := strings.Fields(line)
		if len(f) < 2 || !strings.EqualFold(f[0], "FROM") {
			continue
		}
		for _, w := range f[1:] {
			if !strings.HasPrefix(w, "--") {
				if w != "scratch" {
					key, err := imageKey(ctx, cli, w)
					if err != nil {
						return "", err
					}
					bases = append(bases, key)
				}
				break
			}
		}
	}
	var empty rootfs
	hash, err := empty.hash(dockerfile, strings.Join(bases, ","))
	if err != nil {
		return "", fmt.Errorf("hashing image %s: %w", repo, err)
	}
	ref := repo + ":" + hash[:12]
	ensureMu.Lock()
	defer ensureMu.Unlock()
	if err := buildImage(ctx, cli, ref, dockerfile, nil, hash); err != nil {
		return "", err
	}
	return ref, nil
}

// rootfsDockerfileTail adds the rootfs.tar of the context; ADD extracts a
// local tar keeping owners, modes, symlinks and hard links, which COPY would
// not.
const rootfsDockerfileTail = "ADD rootfs.tar /\n"

const busyboxDockerfile = "FROM scratch\n" + rootfsDockerfileTail +
	"ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n" +
	"CMD [\"sh\"]\n"

const (
	passwd = "root:x:0:0:root:/root:/bin/sh\n" +
		"ci:x:1000:1000:ci:/home/ci:/bin/sh\n" +
		"nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
	group = "root:x:0:\nci:x:1000:\nnogroup:x:65534:\n"
)

func busyboxRootfs() (*rootfs, error) {
	out, err := exec.Command(hostBusybox, "--list").Output()
	if err != nil {
		return nil, fmt.Errorf("listing busybox applets of %s (package busybox-static): %w", hostBusybox, err)
	}
	var r rootfs
	r.dir("bin", 0o755, 0)
	r.dir("etc", 0o755, 0)
	r.dir("root", 0o700, 0)
	r.dir("home", 0o755, 0)
	r.dir("home/ci", 0o755, 1000)
	r.dir("tmp", 0o1777, 0)
	r.dir("var", 0o755, 0)
	r.dir("var/tmp", 0o1777, 0)
	r.dir("usr", 0o755, 0)
	r.dir("usr/bin", 0o755, 0)
	r.dir("usr/local", 0o755, 0)
	r.dir("usr/local/bin", 0o755, 0)
	r.hostFile("bin/busybox", 0o755, hostBusybox)
	r.hostFile("bin/bash", 0o755, hostBash)
	for _, applet := range strings.Fields(string(out)) {
		if applet == "busybox" || strings.Contains(applet, "/") {
			continue
		}
		r.symlink("bin/"+applet, "busybox")
	}
	// Scripts starting with #!/usr/bin/env bash must run too.
	r.symlink("usr/bin/env", "/bin/busybox")
	r.file("etc/passwd", 0o644, []byte(passwd))
	r.file("etc/group", 0o644, []byte(group))
	return &r, nil
}

func gitRootfs() (*rootfs, error) {
	var r rootfs
	r.hostFile("usr/bin/git", 0o755, hostGit)
	if err := r.tree("usr/lib/git-core", hostGitCore); err != nil {
		return nil, err
	}
	if _, err := os.Stat(hostGitTemplates); err == nil {
		if err := r.tree("usr/share/git-core/templates", hostGitTemplates); err != nil {
			return nil, err
		}
	}
	libs := map[string]bool{}
	for _, bin := range gitLinked {
		found, err := sharedLibraries(bin)
		if err != nil {
			return nil, err
		}
		for _, l := range found {
			libs[l] = true
		}
	}
	for _, l := range sortedKeys(libs) {
		// The file at the path the loader looks up, whatever symlinks lead
		// to it on the host.
		r.hostFile(strings.TrimPrefix(l, "/"), 0o755, l)
	}
	return &r, nil
}

// sharedLibraries returns the absolute paths ldd reports for bin, the dynamic
// loader included.
func sharedLibraries(bin string) ([]string, error) {
	out, err := exec.Command("ldd", bin).Output()
	if err != nil {
		return nil, fmt.Errorf("listing shared libraries of %s with ldd: %w", bin, err)
	}
	var libs []string
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if strings.Contains(line, "not found") {
			return nil, fmt.Errorf("listing shared libraries of %s: %s", bin, line)
		}
		f := strings.Fields(line)
		switch {
		case len(f) >= 3 && f[1] == "=>" && strings.HasPrefix(f[2], "/"):
			libs = append(libs, f[2])
		case len(f) >= 1 && strings.HasPrefix(f[0], "/"):
			libs = append(libs, f[0])
		}
	}
	if len(libs) == 0 {
		return nil, fmt.Errorf("listing shared libraries of %s: ldd reported none", bin)
	}
	return libs, nil
}

func sortedKeys(m map[string]bool) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// ensure builds ref from dockerfile and files unless it already carries the
// hash of them, and returns its key (see imageKey); base is the key of the
// FROM image, part of the hash.
func ensure(ctx context.Context, cli *client.Client, ref, dockerfile string, files *rootfs, base string) (string, error) {
	hash, err := files.hash(dockerfile, base)
	if err != nil {
		return "", fmt.Errorf("hashing files of image %s: %w", ref, err)
	}
	if err := buildImage(ctx, cli, ref, dockerfile, files, hash); err != nil {
		return "", err
	}
	return "content " + hash, nil
}

// buildImage builds ref unless it carries hash already.
func buildImage(ctx context.Context, cli *client.Client, ref, dockerfile string, files *rootfs, hash string) error {
	img, err := cli.ImageInspect(ctx, ref)
	switch {
	case err == nil && img.Config != nil && img.Config.Labels[HashLabel] == hash:
		return nil
	case err != nil && !cerrdefs.IsNotFound(err):
		return fmt.Errorf("inspecting image %s: %w", ref, err)
	}
	buildCtx, err := contextTar(dockerfile, files)
	if err != nil {
		return fmt.Errorf("making build context of image %s: %w", ref, err)
	}
	resp, err := cli.ImageBuild(ctx, bytes.NewReader(buildCtx), build.ImageBuildOptions{
		Tags:        []string{ref},
		Labels:      map[string]string{HashLabel: hash},
		Remove:      true,
		ForceRemove: true,
		Version:     build.BuilderV1,
	})
	if err != nil {
		return fmt.Errorf("building image %s: %w", ref, err)
	}
	defer resp.Body.Close()
	if err := readBuildOutput(resp.Body); err != nil {
		return fmt.Errorf("building image %s: %w", ref, err)
	}
	return nil
}

// imageKey identifies the content of a base image: its content hash when
// this package built it (stable when another process rebuilds the same
// content concurrently), else its id.
func imageKey(ctx context.Context, cli *client.Client, ref string) (string, error) {
	img, err := cli.ImageInspect(ctx, ref)
	if err != nil {
		return "", fmt.Errorf("inspecting image %s: %w", ref, err)
	}
	if img.Config != nil && img.Config.Labels[HashLabel] != "" {
		return "content " + img.Config.Labels[HashLabel], nil
	}
	return img.ID, nil
}

// readBuildOutput consumes the JSON message stream of a build and returns
// its error, with the last lines of output for context.
func readBuildOutput(r io.Reader) error {
	dec := json.NewDecoder(r)
	var tail []string
	for {
		var m struct {
			Stream      string `json:"stream"`
			Error       string `json:"error"`
			ErrorDetail struct {
				Message string `json:"message"`
			} `json:"errorDetail"`
		}
		if err := dec.Decode(&m); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("reading build output: %w", err)
		}
		if s := strings.TrimSpace(m.Stream); s != "" {
			tail = append(tail, s)
			if len(tail) > 5 {
				tail = tail[1:]
			}
		}
		if m.Error != "" || m.ErrorDetail.Message != "" {
			msg := m.ErrorDetail.Message
			if msg == "" {
				msg = m.Error
			}
			return fmt.Errorf("%s (after: %s)", msg, strings.Join(tail, " | "))
		}
	}
}

// contextTar returns a build context holding the Dockerfile and, when files
// is not nil, rootfs.tar.
func contextTar(dockerfile string, files *rootfs) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	add := func(name string, data []byte) error {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(data)), Typeflag: tar.TypeReg}); err != nil {
			return err
		}
		_, err := tw.Write(data)
		return err
	}
	if err := add("Dockerfile", []byte(dockerfile)); err != nil {
		return nil, err
	}
	if files != nil {
		inner, err := files.tar()
		if err != nil {
			return nil, err
		}
		if err := add("rootfs.tar", inner); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// rootfs is a list of filesystem entries to put in an image.
type rootfs struct {
	entries []entry
}

type entry struct {
	name     string // path in the image, no leading slash
	typ      byte   // tar.TypeDir, TypeReg or TypeSymlink
	mode     int64
	owner    int // uid and gid
	data     []byte
	hostPath string // content of a regular file when data is nil
	linkname string
}

func (r *rootfs) dir(name string, mode int64, owner int) {
	r.entries = append(r.entries, entry{name: name, typ: tar.TypeDir, mode: mode, owner: owner})
}

func (r *rootfs) file(name string, mode int64, data []byte) {
	r.entries = append(r.entries, entry{name: name, typ: tar.TypeReg, mode: mode, data: data})
}

func (r *rootfs) hostFile(name string, mode int64, hostPath string) {
	r.entries = append(r.entries, entry{name: name, typ: tar.TypeReg, mode: mode, hostPath: hostPath})
}

func (r *rootfs) symlink(name, target string) {
	r.entries = append(r.entries, entry{name: name, typ: tar.TypeSymlink, mode: 0o777, linkname: target})
}

// tree adds the host directory src under name, keeping symlinks and modes;
// everything is owned by root.
func (r *rootfs) tree(name, src string) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		dst := path.Join(name, filepath.ToSlash(rel))
		info, err := d.Info()
		if err != nil {
			return err
		}
		mode := int64(info.Mode().Perm())
		switch {
		case d.IsDir():
			r.dir(dst, mode, 0)
		case d.Type()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			r.symlink(dst, target)
		case d.Type().IsRegular():
			r.hostFile(dst, mode, p)
		}
		return nil
	})
}

// withParents returns the entries preceded by a directory entry for every
// parent directory not listed explicitly.
func (r *rootfs) withParents() []entry {
	have := map[string]bool{}
	for _, e := range r.entries {
		if e.typ == tar.TypeDir {
			have[e.name] = true
		}
	}
	var out []entry
	for _, e := range r.entries {
		var missing []string
		for d := path.Dir(e.name); d != "." && d != "/" && !have[d]; d = path.Dir(d) {
			missing = append(missing, d)
			have[d] = true
		}
		for i := len(missing) - 1; i >= 0; i-- {
			out = append(out, entry{name: missing[i], typ: tar.TypeDir, mode: 0o755})
		}
		out = append(out, e)
	}
	return out
}

func (e entry) content() ([]byte, error) {
	if e.data != nil || e.hostPath == "" {
		return e.data, nil
	}
	return os.ReadFile(e.hostPath)
}

// hash returns the hex SHA-256 of the Dockerfile, the base image id and
// every entry's metadata and content.
func (r *rootfs) hash(dockerfile, base string) (string, error) {
	h := sha256.New()
	fmt.Fprintf(h, "dockerfile %d %s\nbase %s\n", len(dockerfile), dockerfile, base)
	if r != nil {
		for _, e := range r.withParents() {
			fmt.Fprintf(h, "%c %q %o %d %q\n", e.typ, e.name, e.mode, e.owner, e.linkname)
			if e.typ != tar.TypeReg {
				continue
			}
			if e.hostPath != "" && e.data == nil {
				f, err := os.Open(e.hostPath)
				if err != nil {
					return "", err
				}
				n, err := io.Copy(h, f)
				f.Close()
				if err != nil {
					return "", fmt.Errorf("reading %s: %w", e.hostPath, err)
				}
				fmt.Fprintf(h, "\n%d\n", n)
			} else {
				h.Write(e.data)
				fmt.Fprintf(h, "\n%d\n", len(e.data))
			}
		}
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// tar returns the entries as a tar archive.
func (r *rootfs) tar() ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range r.withParents() {
		hdr := &tar.Header{Name: e.name, Typeflag: e.typ, Mode: e.mode, Uid: e.owner, Gid: e.owner, Linkname: e.linkname}
		var data []byte
		switch e.typ {
		case tar.TypeDir:
			hdr.Name += "/"
		case tar.TypeReg:
			var err error
			if data, err = e.content(); err != nil {
				return nil, err
			}
			hdr.Size = int64(len(data))
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, fmt.Errorf("writing %s: %w", e.name, err)
		}
		if _, err := tw.Write(data); err != nil {
			return nil, fmt.Errorf("writing %s: %w", e.name, err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// DemoResourceRef is the image of test/demoresource: a protected resource
// that validates Okta access tokens (Bearer and DPoP) and listens on 8080.
const DemoResourceRef = "gitlab-okta-executor-test/demo-resource:latest"

// DemoResource builds the static demo-resource binary from this module and
// puts it in a scratch image that EXPOSEs 8080 (so prepare waits for it).
// moduleDir is the module's root.
func DemoResource(ctx context.Context, cli *client.Client, moduleDir string) (string, error) {
	dir, err := os.MkdirTemp("", "demo-resource-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(dir)
	bin := filepath.Join(dir, "demo-resource")
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", bin, "./test/demoresource/cmd/demo-resource")
	cmd.Dir = moduleDir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building demo-resource: %v\n%s", err, out)
	}
	var r rootfs
	r.hostFile("demo-resource", 0o755, bin)
	if _, err := ensure(ctx, cli, DemoResourceRef, "FROM scratch\n"+rootfsDockerfileTail+"EXPOSE 8080\nENTRYPOINT [\"/demo-resource\"]\n", &r, ""); err != nil {
		return "", err
	}
	return DemoResourceRef, nil
}
