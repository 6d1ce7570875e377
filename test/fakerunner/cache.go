package main

import (
	"archive/zip"
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"

	"github.com/bmatcuk/doublestar/v4"
)

// cacheExtractor is CacheExtractorCommand.Execute without the download.
func cacheExtractor(f flags, log *logger) int {
	file := f.get("file")
	if file == "" {
		log.warningf("Missing cache file")
		return 1
	}
	if f.get("url") != "" || f.get("gocloud-url") != "" {
		log.warningf("fake gitlab-runner: remote caches are not supported, extracting the local one")
	} else {
		log.infof("No URL provided, cache will not be downloaded from shared cache server. " +
			"Instead a local version of cache will be extracted.")
	}
	r, err := zip.OpenReader(file)
	if errors.Is(err, fs.ErrNotExist) {
		log.warningf("Cache file does not exist")
		return 1
	}
	if err != nil {
		log.fatalf("%v", err)
		return 1
	}
	defer r.Close()
	if err := extract(&r.Reader, log); err != nil {
		log.fatalf("%v", err)
		return 1
	}
	return 0
}

// extract writes the entries of a zip below the working directory, like
// helpers/archives.ExtractZipArchive: existing files are replaced, modes
// restored, entries that would leave the directory refused.
func extract(r *zip.Reader, log *logger) error {
	for _, zf := range r.File {
		name := filepath.FromSlash(zf.Name)
		if !filepath.IsLocal(strings.TrimSuffix(name, string(filepath.Separator))) {
			return fmt.Errorf("%s: entry outside the working directory", zf.Name)
		}
		if err := os.MkdirAll(filepath.Dir(name), 0o777); err != nil {
			return err
		}
		var err error
		switch zf.Mode() & fs.ModeType {
		case fs.ModeDir:
			if err = os.Mkdir(name, zf.Mode().Perm()); errors.Is(err, fs.ErrExist) {
				err = nil
			}
		case fs.ModeSymlink:
			var target []byte
			if target, err = readEntry(zf); err == nil {
				_ = os.Remove(name)
				err = os.Symlink(string(target), name)
			}
		case 0:
			err = extractFile(zf, name)
		default:
			log.warningf("File ignored: %q", zf.Name)
		}
		if err != nil {
			log.warningf("%s: %s", zf.Name, err)
		}
	}
	for _, zf := range r.File {
		if zf.Mode()&fs.ModeSymlink != 0 {
			continue
		}
		name := filepath.FromSlash(zf.Name)
		_ = os.Chmod(name, zf.Mode().Perm())
		_ = os.Chtimes(name, zf.Modified, zf.Modified)
	}
	return nil
}

func readEntry(zf *zip.File) ([]byte, error) {
	rc, err := zf.Open()
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(rc)
}

func extractFile(zf *zip.File, name string) error {
	in, err := zf.Open()
	if err != nil {
		return err
	}
	defer in.Close()
	_ = os.Remove(name)
	out, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, zf.Mode().Perm())
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		_ = out.Close()
		return err
	}
	return out.Close()
}

// cacheArchiver is CacheArchiverCommand.Execute without the upload.
func cacheArchiver(f flags, log *logger) int {
	file := f.get("file")
	if file == "" {
		log.fatalf("Missing --file")
		return 1
	}
	wd, err := os.Getwd()
	if err != nil {
		log.fatalf("Unable to get working directory")
		return 1
	}
	files := map[string]fs.FileInfo{}
	for _, p := range f["path"] {
		addPath(wd, p, files, log)
	}
	if f.has("untracked") {
		addUntracked(wd, files, log)
	}
	if len(files) == 0 {
		log.warningf("No files to cache.")
		return 0
	}
	if err := writeZip(file, files); err != nil {
		log.fatalf("%v", err)
		return 1
	}
	if f.get("url") == "" && f.get("gocloud-url") == "" {
		log.infof("No URL provided, cache will not be uploaded to shared cache server. " +
			"Cache will be stored only locally.")
	}
	return 0
}

// addPath is fileArchiver.processPath: a doublestar glob relative to the
// working directory; every match is walked.
func addPath(wd, p string, files map[string]fs.FileInfo, log *logger) {
	if p == "" {
		log.warningf("No matching files. Path is empty.")
		return
	}
	rel, err := relativeInProject(wd, p)
	if err != nil {
		log.warningf("processPath: %v", err)
		return
	}
	matches, err := doublestar.FilepathGlob(rel, doublestar.WithNoFollow())
	if err != nil {
		log.warningf("%s: %v", p, err)
		return
	}
	found := 0
	for _, m := range matches {
		_ = filepath.Walk(m, func(path string, info fs.FileInfo, err error) error {
			if err == nil && add(wd, path, files) {
				found++
			}
			return nil
		})
	}
	if found == 0 {
		log.warningf("%s: no matching files. Ensure that the artifact path is relative to the working directory (%s)", p, wd)
	} else {
		log.infof("%s: found %d matching artifact files and directories", p, found)
	}
}

// relativeInProject is fileArchiver.findRelativePathInProject.
func relativeInProject(wd, p string) (string, error) {
	slash := filepath.ToSlash(p)
	if filepath.Clean(slash) == filepath.Clean(wd) {
		return ".", nil
	}
	base, pattern := slash, ""
	if strings.ContainsAny(slash, "*?[{") {
		base, pattern = doublestar.SplitPattern(slash)
	}
	abs, err := filepath.Abs(base)
	if err != nil {
		return "", fmt.Errorf("could not resolve artifact absolute path %s: %w", p, err)
	}
	rel, err := filepath.Rel(wd, abs)
	if err != nil {
		return "", fmt.Errorf("could not resolve artifact relative path %s: %w", p, err)
	}
	if rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
		return "", fmt.Errorf("artifact path is not a subpath of project directory: %s", p)
	}
	return filepath.FromSlash(filepath.Join(rel, pattern)), nil
}

// add records a path if it lies in the working directory.
func add(wd, p string, files map[string]fs.FileInfo) bool {
	abs, err := filepath.Abs(p)
	if err != nil {
		return false
	}
	rel, err := filepath.Rel(wd, abs)
	if err != nil || rel == "." || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
		return false
	}
	info, err := os.Lstat(rel)
	if err != nil {
		return false
	}
	files[filepath.ToSlash(rel)] = info
	return true
}

// addUntracked is fileArchiver.processUntracked: git ls-files -o.
func addUntracked(wd string, files map[string]fs.FileInfo, log *logger) {
	var out bytes.Buffer
	cmd := exec.Command("git", "ls-files", "-o", "-z")
	cmd.Stdout = &out
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		log.warningf("untracked: %v", err)
		return
	}
	found := 0
	rd := bufio.NewReader(&out)
	for {
		line, err := rd.ReadString(0)
		if err != nil {
			break
		}
		if add(wd, line[:len(line)-1], files) {
			found++
		}
	}
	if found == 0 {
		log.warningf("untracked: no files")
	} else {
		log.infof("untracked: found %d files", found)
	}
}

// writeZip writes the files, sorted, into a temp file next to name and
// renames it into place; the parent directories are created 0700 like the
// real archiver's.
func writeZip(name string, files map[string]fs.FileInfo) error {
	if err := os.MkdirAll(filepath.Dir(name), 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(name), "archive_")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()

	paths := make([]string, 0, len(files))
	for p := range files {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	zw := zip.NewWriter(tmp)
	for _, p := range paths {
		if err := addToZip(zw, p, files[p]); err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
	}
	if err := zw.Close(); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), name)
}

func addToZip(zw *zip.Writer, p string, info fs.FileInfo) error {
	h, err := zip.FileInfoHeader(info)
	if err != nil {
		return err
	}
	h.Name = p
	switch {
	case info.IsDir():
		h.Name += "/"
		h.Method = zip.Store
		_, err = zw.CreateHeader(h)
		return err
	case info.Mode()&fs.ModeSymlink != 0:
		target, err := os.Readlink(p)
		if err != nil {
			return err
		}
		h.Method = zip.Store
		w, err := zw.CreateHeader(h)
		if err != nil {
			return err
		}
		_, err = io.WriteString(w, target)
		return err
	case info.Mode().IsRegular():
		h.Method = zip.Deflate
		w, err := zw.CreateHeader(h)
		if err != nil {
			return err
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = io.Copy(w, f)
		return err
	default:
		return nil // pipes, sockets, devices are not archived
	}
}
