package auditlog

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

// BrokenError is the first place where a chain does not verify.
type BrokenError struct {
	File string
	// Line is 1-based; for a missing tail, the line after the last.
	Line int
	// Seq is the line's seq (0 when it has none).
	Seq     uint64
	Problem string
}

func (e *BrokenError) Error() string {
	if e.Seq == 0 {
		return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Problem)
	}
	return fmt.Sprintf("%s:%d: seq %d: %s", e.File, e.Line, e.Seq, e.Problem)
}

// KeyNeededError: the lines carry MACs and no key was given, so nothing
// can be said about them.
type KeyNeededError struct {
	File string
	Line int
}

func (e *KeyNeededError) Error() string {
	return fmt.Sprintf("%s:%d: the line carries an HMAC (mac): verifying needs the key", e.File, e.Line)
}

// VerifyOptions say what a chain is checked against.
type VerifyOptions struct {
	// Key verifies mac links; without it lines must carry plain hashes.
	Key Key
	// Head, when set, is the recorded chain head of the last file: the
	// file must reach it (a removed tail shows).
	Head *Head
	// HeadFile names Head in messages.
	HeadFile string
}

// Report summarizes a verified chain.
type Report struct {
	Files int
	Lines int
	// Unchained counts lines before the first chained one (written before
	// the chain existed): they are not verified.
	Unchained int
	// FirstSeq and LastSeq bound the chained lines; FirstSeq > 1 means the
	// files continue an earlier one not given.
	FirstSeq, LastSeq uint64
	// Keyed: the lines carry macs. BeforeKey counts plain-hash lines
	// before the first mac line (written before the key was set).
	Keyed     bool
	BeforeKey int
}

// Verify checks that files, oldest first (audit.log.2 audit.log.1
// audit.log), hold one unbroken chain: each line's link matches its
// content, seq counts up by one, prev is the link of the line before,
// across file boundaries too. It returns the first problem as a
// *BrokenError.
func Verify(files []string, opt VerifyOptions) (Report, error) {
	v := &verifier{opt: opt, files: files}
	for i, name := range files {
		if err := v.file(i, name); err != nil {
			return v.rep, err
		}
	}
	v.rep.Files = len(files)
	if opt.Key != nil && !v.rep.Keyed && v.rep.BeforeKey > 0 {
		// Nothing anchors plain hashes: anyone could have written them.
		return v.rep, &BrokenError{File: v.lastFile, Line: v.lastLine, Seq: v.rep.LastSeq,
			Problem: "no line carries a mac although a key was given: the lines were written without the key, or forged (verify files from before the key without it)"}
	}
	if opt.Head != nil {
		if err := v.checkHead(); err != nil {
			return v.rep, err
		}
	}
	return v.rep, nil
}

type verifier struct {
	opt      VerifyOptions
	files    []string
	rep      Report
	started  bool
	expect   uint64
	prev     string
	prevFile string
	prevLine int
	lastFile string
	lastLine int
}

func (v *verifier) file(index int, name string) error {
	f, err := openLog(name)
	if err != nil {
		return err
	}
	defer f.Close()
	r := bufio.NewReaderSize(f, 64<<10)
	v.lastFile, v.lastLine = name, 0
	for n := 1; ; n++ {
		line, err := r.ReadBytes('\n')
		if len(line) == 0 && errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("reading audit log %s: %w", name, err)
		}
		v.lastLine = n
		if err != nil { // EOF without a newline
			p, _ := parseLine(line)
			return &BrokenError{File: name, Line: n, Seq: p.seq,
				Problem: "truncated: the last line has no newline (the file was cut, or a write did not finish)"}
		}
		if err := v.line(index, name, n, line[:len(line)-1]); err != nil {
			return err
		}
	}
}

func (v *verifier) line(index int, name string, n int, line []byte) error {
	v.rep.Lines++
	broken := func(seq uint64, format string, args ...any) error {
		return &BrokenError{File: name, Line: n, Seq: seq, Problem: fmt.Sprintf(format, args...)}
	}
	p, ok := parseLine(line)
	if !json.Valid(line) || len(bytes.TrimSpace(line)) == 0 {
		return broken(p.seq, "not a JSON object: the line was edited or corrupted")
	}
	if !ok {
		if !v.started {
			v.rep.Unchained++
			return nil
		}
		return broken(0, "has no chain fields (seq, prev, hash or mac): it was edited or inserted")
	}
	// With a key, plain-hash lines may precede the first mac line (the
	// key was added later): that line's mac covers their last link, which
	// covers the rest by SHA-256. After a mac line a plain one is forged.
	key, what := Key(nil), "hash"
	switch {
	case p.keyed && v.opt.Key == nil:
		return &KeyNeededError{File: name, Line: n}
	case p.keyed:
		key, what = v.opt.Key, "mac"
		v.rep.Keyed = true
	case v.opt.Key != nil && v.rep.Keyed:
		return broken(p.seq, "has a plain hash after lines with a mac: it was written without the key, or forged")
	case v.opt.Key != nil:
		v.rep.BeforeKey++
	}
	if seal(key, p.body) != p.link {
		return broken(p.seq, "the content does not match its %s: the line was edited", what)
	}
	if v.started {
		switch {
		case p.seq > v.expect:
			if f, l, found := v.find(index, n, v.expect); found {
				return broken(p.seq, "out of order: seq %d belongs here but is at %s:%d", v.expect, f, l)
			}
			if p.seq == v.expect+1 {
				return broken(p.seq, "1 line missing before this one (seq %d)", v.expect)
			}
			return broken(p.seq, "%d lines missing before this one (seq %d to %d)", p.seq-v.expect, v.expect, p.seq-1)
		case p.seq < v.expect:
			return broken(p.seq, "out of order or repeated: seq %d comes after seq %d", p.seq, v.expect-1)
		case p.prev != v.prev:
			return broken(p.seq, "prev does not match the %s of the line before (%s:%d): that line was replaced, or this one was moved", what, v.prevFile, v.prevLine)
		}
	} else {
		switch {
		case p.seq == 0:
			return broken(p.seq, "seq 0: a chain starts at 1")
		case p.seq == 1 && p.prev != "":
			return broken(p.seq, "seq 1 must start the chain with an empty prev")
		}
		v.started = true
		v.rep.FirstSeq = p.seq
	}
	v.expect, v.prev, v.prevFile, v.prevLine = p.seq+1, p.link, name, n
	v.rep.LastSeq = p.seq
	return nil
}

// openLog opens an audit file; a .gz one (a compressed rotation) is
// read through gzip.
func openLog(name string) (io.ReadCloser, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, fmt.Errorf("opening audit log: %w", err)
	}
	if !strings.HasSuffix(name, ".gz") {
		return f, nil
	}
	z, err := gzip.NewReader(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("opening audit log %s: %w", name, err)
	}
	return struct {
		io.Reader
		io.Closer
	}{z, f}, nil
}

// find looks for the line with seq after (index, line), to tell a
// reordered line from a missing one.
func (v *verifier) find(index, after int, seq uint64) (string, int, bool) {
	for i := index; i < len(v.files); i++ {
		f, err := openLog(v.files[i])
		if err != nil {
			return "", 0, false
		}
		r := bufio.NewReaderSize(f, 64<<10)
		for n := 1; ; n++ {
			line, err := r.ReadBytes('\n')
			if len(line) == 0 {
				break
			}
			if i > index || n > after {
				if p, ok := parseLine(bytes.TrimSuffix(line, []byte{'\n'})); ok && p.seq == seq {
					f.Close()
					return v.files[i], n, true
				}
			}
			if err != nil {
				break
			}
		}
		f.Close()
	}
	return "", 0, false
}

// checkHead compares the end of the chain with the recorded head.
func (v *verifier) checkHead() error {
	h := v.opt.Head
	name := v.lastFile
	switch {
	case h.Seq > v.rep.LastSeq:
		missing := h.Seq - v.rep.LastSeq
		return &BrokenError{File: name, Line: v.lastLine + 1, Seq: v.rep.LastSeq + 1,
			Problem: fmt.Sprintf("%d line(s) missing at the end: the chain head %s records seq %d, the file ends at seq %d (its tail was removed)", missing, v.opt.HeadFile, h.Seq, v.rep.LastSeq)}
	case h.Seq == v.rep.LastSeq && h.Link != v.prev:
		return &BrokenError{File: name, Line: v.lastLine, Seq: h.Seq,
			Problem: fmt.Sprintf("the last line is not the one the chain head %s records: it was replaced", v.opt.HeadFile)}
	}
	return nil
}
