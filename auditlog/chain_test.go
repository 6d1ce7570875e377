package auditlog

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestMain lets tests re-exec the test binary as a separate writer process
// (AUDITLOG_TEST_WRITER=path,head,count).
func TestMain(m *testing.M) {
	if spec := os.Getenv("AUDITLOG_TEST_WRITER"); spec != "" {
		parts := strings.Split(spec, ",")
		n, _ := strconv.Atoi(parts[2])
		c := &Chain{Path: parts[0], HeadFile: parts[1]}
		for i := range n {
			if _, err := c.Append(event(os.Getpid()*1000 + i)); err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(3)
			}
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func event(job int) []byte {
	return fmt.Appendf(nil, `{"time":"2026-03-04T10:15:30Z","event":"issued","job_id":%d,"reason":"a \"quoted\",\"seq\":9 reason","outcome":"ok"}`, job)
}

var testKey = Key("0123456789abcdef0123456789abcdef0123456789abcdef")

// writeChain appends n events and returns the chain.
func writeChain(t *testing.T, n int, key Key) *Chain {
	t.Helper()
	dir := t.TempDir()
	c := &Chain{Path: filepath.Join(dir, "log", "audit.log"), HeadFile: filepath.Join(dir, "state", "audit", "chain-head.json"), Key: key}
	for i := 1; i <= n; i++ {
		if _, err := c.Append(event(i)); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

func fileLines(t *testing.T, name string) [][]byte {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.SplitAfter(b, []byte("\n"))
}

func writeLines(t *testing.T, name string, lines [][]byte) {
	t.Helper()
	if err := os.WriteFile(name, bytes.Join(lines, nil), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestAppendWritesASupersetOfTheEvent(t *testing.T) {
	c := writeChain(t, 2, nil)
	lines := fileLines(t, c.Path)
	first := string(lines[0])
	if !strings.HasPrefix(first, string(event(1)[:len(event(1))-1])+`,"seq":1,"prev":"","hash":"`) {
		t.Errorf("line 1 = %s", first)
	}
	p, ok := parseLine(bytes.TrimSuffix(lines[1], []byte("\n")))
	q, _ := parseLine(bytes.TrimSuffix(lines[0], []byte("\n")))
	if !ok || p.seq != 2 || p.prev != q.link || p.keyed {
		t.Errorf("line 2 = %s: parsed %+v", lines[1], p)
	}
	st, err := os.Stat(c.HeadPath())
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("chain head: %v %v", st, err)
	}
	h, err := ReadHead(c.HeadPath(), nil)
	if err != nil || h.Seq != 2 || h.Link != p.link {
		t.Errorf("head %+v, %v", h, err)
	}
}

func TestVerifyAcceptsAnIntactChain(t *testing.T) {
	for _, key := range []Key{nil, testKey} {
		c := writeChain(t, 5, key)
		h, err := ReadHead(c.HeadPath(), key)
		if err != nil {
			t.Fatal(err)
		}
		rep, err := Verify([]string{c.Path}, VerifyOptions{Key: key, Head: &h})
		if err != nil || rep.Lines != 5 || rep.FirstSeq != 1 || rep.LastSeq != 5 || rep.Keyed != (key != nil) {
			t.Errorf("key %v: %+v, %v", key != nil, rep, err)
		}
	}
}

// TestVerifyFindsTampering edits a 6-line chain and expects the first
// broken line, its seq and the problem.
func TestVerifyFindsTampering(t *testing.T) {
	rehash := func(line []byte, prev string, key Key) []byte {
		p, _ := parseLine(bytes.TrimSuffix(line, []byte("\n")))
		body := bytes.Replace(p.body, []byte(`"prev":"`+p.prev+`"`), []byte(`"prev":"`+prev+`"`), 1)
		out, _ := sealLine(append(body[:bytes.LastIndex(body, []byte(`,"seq":`))], '}'), Link{Seq: p.seq - 1, Hash: prev}, key)
		return out
	}
	cases := []struct {
		name    string
		key     Key
		tamper  func(lines [][]byte) [][]byte
		line    int
		seq     uint64
		problem string
	}{
		{"edited line", nil, func(l [][]byte) [][]byte {
			l[2] = bytes.Replace(l[2], []byte(`"job_id":3`), []byte(`"job_id":4`), 1)
			return l
		}, 3, 3, "the content does not match its hash: the line was edited"},
		{"edited line re-hashed", nil, func(l [][]byte) [][]byte {
			p, _ := parseLine(bytes.TrimSuffix(l[1], []byte("\n")))
			l[2] = rehash(bytes.Replace(l[2], []byte(`"job_id":3`), []byte(`"job_id":99`), 1), p.link, nil)
			return l
		}, 4, 4, "prev does not match the hash of the line before"},
		{"edited line with a key", testKey, func(l [][]byte) [][]byte {
			p, _ := parseLine(bytes.TrimSuffix(l[1], []byte("\n")))
			l[2] = rehash(bytes.Replace(l[2], []byte(`"job_id":3`), []byte(`"job_id":99`), 1), p.link, Key("forger's own key, 32 bytes long!!"))
			return l
		}, 3, 3, "the content does not match its mac"},
		{"deleted line", nil, func(l [][]byte) [][]byte {
			return append(l[:2], l[3:]...)
		}, 3, 4, "1 line missing before this one (seq 3)"},
		{"deleted lines", nil, func(l [][]byte) [][]byte {
			return append(l[:1], l[4:]...)
		}, 2, 5, "3 lines missing before this one (seq 2 to 4)"},
		{"swapped pair", nil, func(l [][]byte) [][]byte {
			l[2], l[3] = l[3], l[2]
			return l
		}, 3, 4, "out of order: seq 3 belongs here but is at"},
		{"duplicated line", nil, func(l [][]byte) [][]byte {
			return append(l[:3], append([][]byte{l[1]}, l[3:]...)...)
		}, 4, 2, "out of order or repeated: seq 2 comes after seq 3"},
		{"truncated tail", nil, func(l [][]byte) [][]byte {
			l[5] = l[5][:40]
			return l
		}, 6, 0, "truncated: the last line has no newline"},
		{"inserted unchained line", nil, func(l [][]byte) [][]byte {
			return append(l[:2], append([][]byte{[]byte("{\"event\":\"issued\"}\n")}, l[2:]...)...)
		}, 3, 0, "has no chain fields"},
		{"garbage line", nil, func(l [][]byte) [][]byte {
			l[1] = []byte("not json\n")
			return l
		}, 2, 0, "not a JSON object"},
		{"plain hash where a mac is expected", testKey, func(l [][]byte) [][]byte {
			p, _ := parseLine(bytes.TrimSuffix(l[0], []byte("\n")))
			l[1] = rehash(l[1], p.link, nil)
			return l
		}, 2, 2, "has a plain hash after lines with a mac"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := writeChain(t, 6, tc.key)
			writeLines(t, c.Path, tc.tamper(fileLines(t, c.Path)))
			_, err := Verify([]string{c.Path}, VerifyOptions{Key: tc.key})
			var be *BrokenError
			if !errors.As(err, &be) {
				t.Fatalf("Verify: %v, want a *BrokenError", err)
			}
			if be.File != c.Path || be.Line != tc.line || be.Seq != tc.seq || !strings.Contains(be.Problem, tc.problem) {
				t.Errorf("got %v (line %d, seq %d), want line %d, seq %d: %q", be, be.Line, be.Seq, tc.line, tc.seq, tc.problem)
			}
		})
	}
}

func TestVerifyFindsARemovedTailByTheHead(t *testing.T) {
	c := writeChain(t, 6, testKey)
	lines := fileLines(t, c.Path)
	writeLines(t, c.Path, lines[:4])
	h, err := ReadHead(c.HeadPath(), testKey)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Verify([]string{c.Path}, VerifyOptions{Key: testKey}); err != nil {
		t.Fatalf("without the head the cut is invisible, got %v", err)
	}
	_, err = Verify([]string{c.Path}, VerifyOptions{Key: testKey, Head: &h, HeadFile: c.HeadPath()})
	var be *BrokenError
	if !errors.As(err, &be) || be.Line != 5 || be.Seq != 5 || !strings.Contains(be.Problem, "2 line(s) missing at the end") {
		t.Errorf("got %v", err)
	}
	// A head rewritten without the key to match the cut fails its MAC.
	forged := Head{File: h.File, Seq: 4, Link: h.Link, MAC: h.MAC}
	writeHead(t, c.HeadPath(), forged)
	var me *HeadMACError
	if _, err := ReadHead(c.HeadPath(), testKey); !errors.As(err, &me) {
		t.Errorf("forged head: %v", err)
	}
}

func writeHead(t *testing.T, name string, h Head) {
	t.Helper()
	b := fmt.Appendf(nil, `{"file":%q,"seq":%d,"link":%q,"mac":%q}`, h.File, h.Seq, h.Link, h.MAC)
	if err := os.WriteFile(name, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestVerifyNeedsTheKeyForMACs(t *testing.T) {
	c := writeChain(t, 2, testKey)
	var ke *KeyNeededError
	if _, err := Verify([]string{c.Path}, VerifyOptions{}); !errors.As(err, &ke) || ke.Line != 1 {
		t.Errorf("got %v", err)
	}
}

// TestRotationContinuesTheChain renames the file as logrotate does: the
// next line starts a new file that continues the chain from the head.
func TestRotationContinuesTheChain(t *testing.T) {
	for _, key := range []Key{nil, testKey} {
		c := writeChain(t, 3, key)
		old2, old1 := c.Path+".2", c.Path+".1"
		if err := os.Rename(c.Path, old2); err != nil {
			t.Fatal(err)
		}
		for i := 4; i <= 5; i++ {
			if _, err := c.Append(event(i)); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.Rename(c.Path, old1); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Append(event(6)); err != nil {
			t.Fatal(err)
		}
		h, err := ReadHead(c.HeadPath(), key)
		if err != nil {
			t.Fatal(err)
		}
		rep, err := Verify([]string{old2, old1, c.Path}, VerifyOptions{Key: key, Head: &h})
		if err != nil || rep.Files != 3 || rep.Lines != 6 || rep.LastSeq != 6 {
			t.Errorf("rotated set: %+v, %v", rep, err)
		}
		if rep, err := Verify([]string{c.Path}, VerifyOptions{Key: key}); err != nil || rep.FirstSeq != 6 {
			t.Errorf("the newest file alone continues an earlier one: %+v, %v", rep, err)
		}
		// A compressed generation (logrotate's compress) reads as gzip.
		gz := old2 + ".gz"
		var zb bytes.Buffer
		zw := gzip.NewWriter(&zb)
		zw.Write(bytes.Join(fileLines(t, old2), nil))
		zw.Close()
		if err := os.WriteFile(gz, zb.Bytes(), 0o600); err != nil {
			t.Fatal(err)
		}
		if rep, err := Verify([]string{gz, old1, c.Path}, VerifyOptions{Key: key}); err != nil || rep.Lines != 6 {
			t.Errorf("with a .gz generation: %+v, %v", rep, err)
		}
		var be *BrokenError
		if _, err := Verify([]string{old2, c.Path}, VerifyOptions{Key: key}); !errors.As(err, &be) || be.File != c.Path || be.Line != 1 || !strings.Contains(be.Problem, "2 lines missing") {
			t.Errorf("a missing middle file: %v", err)
		}
		if _, err := Verify([]string{old1, old2, c.Path}, VerifyOptions{Key: key}); !errors.As(err, &be) || be.File != old2 || be.Line != 1 {
			t.Errorf("files out of order: %v", err)
		}
	}
}

func TestAppendAfterAnUnchainedFileAndACutLine(t *testing.T) {
	dir := t.TempDir()
	c := &Chain{Path: filepath.Join(dir, "audit.log")}
	if err := os.WriteFile(c.Path, []byte("{\"event\":\"issued\",\"job_id\":1}\n{\"event\":\"iss"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Append(event(2)); err != nil {
		t.Fatal(err)
	}
	lines := fileLines(t, c.Path)
	if len(lines) != 4 || string(lines[1]) != "{\"event\":\"iss\n" {
		t.Fatalf("lines %q", lines)
	}
	_, err := Verify([]string{c.Path}, VerifyOptions{})
	var be *BrokenError
	if !errors.As(err, &be) || be.Line != 2 || !strings.Contains(be.Problem, "not a JSON object") {
		t.Errorf("the cut line is reported: %v", err)
	}
	writeLines(t, c.Path, [][]byte{lines[0], lines[2]})
	if rep, err := Verify([]string{c.Path}, VerifyOptions{}); err != nil || rep.Unchained != 1 || rep.FirstSeq != 1 {
		t.Errorf("an unchained prefix is counted, not verified: %+v, %v", rep, err)
	}
}

// TestConcurrentWritersKeepOneChain runs writers as separate processes
// (the test binary re-executed) and rotates the file while they write.
func TestConcurrentWritersKeepOneChain(t *testing.T) {
	dir := t.TempDir()
	path, head := filepath.Join(dir, "audit.log"), filepath.Join(dir, "state", "chain-head.json")
	const writers, each = 6, 40
	var cmds []*exec.Cmd
	for range writers {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), fmt.Sprintf("AUDITLOG_TEST_WRITER=%s,%s,%d", path, head, each))
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		cmds = append(cmds, cmd)
	}
	// Rotate once the writers are under way, as logrotate would.
	rotated := path + ".1"
	deadline := time.Now().Add(30 * time.Second)
	for {
		if b, _ := os.ReadFile(path); bytes.Count(b, []byte("\n")) >= 20 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("writers wrote nothing in 30s")
		}
		time.Sleep(time.Millisecond)
	}
	if err := os.Rename(path, rotated); err != nil {
		t.Fatal(err)
	}
	for _, cmd := range cmds {
		if err := cmd.Wait(); err != nil {
			t.Fatalf("writer: %v", err)
		}
	}
	h, err := ReadHead(head, nil)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := Verify([]string{rotated, path}, VerifyOptions{Head: &h})
	if err != nil || rep.Lines != writers*each || rep.LastSeq != writers*each {
		t.Errorf("%+v, %v", rep, err)
	}
}

// TestAppendContinuesFromTheFurthestEnd: a file cut behind the head gets
// its next line after the head (the cut shows as a gap where it is); a
// head behind the file (a crash between line and head) yields to the file.
func TestAppendContinuesFromTheFurthestEnd(t *testing.T) {
	c := writeChain(t, 5, nil)
	writeLines(t, c.Path, fileLines(t, c.Path)[:3])
	if _, err := c.Append(event(6)); err != nil {
		t.Fatal(err)
	}
	_, err := Verify([]string{c.Path}, VerifyOptions{})
	var be *BrokenError
	if !errors.As(err, &be) || be.Line != 4 || be.Seq != 6 || !strings.Contains(be.Problem, "2 lines missing before this one (seq 4 to 5)") {
		t.Errorf("cut file: %v", err)
	}

	c = writeChain(t, 3, nil)
	lines := fileLines(t, c.Path)
	p, _ := parseLine(bytes.TrimSuffix(lines[1], []byte("\n")))
	writeHead(t, c.HeadPath(), Head{File: c.Path, Seq: 2, Link: p.link})
	if _, err := c.Append(event(4)); err != nil {
		t.Fatal(err)
	}
	if rep, err := Verify([]string{c.Path}, VerifyOptions{}); err != nil || rep.LastSeq != 4 {
		t.Errorf("head behind the file: %+v, %v", rep, err)
	}
}

// TestAppendIgnoresAnUnusableHead: a head that does not parse (a write
// torn by a power loss) or fails its MAC is not trusted; the chain goes
// on from the file's last line.
func TestAppendIgnoresAnUnusableHead(t *testing.T) {
	for name, content := range map[string]string{
		"torn":       `{"file":"/x","seq":9,"li`,
		"forged mac": `{"file":"/x","seq":9,"link":"` + strings.Repeat("0", 64) + `","mac":"00"}`,
	} {
		c := writeChain(t, 2, testKey)
		if err := os.WriteFile(c.HeadPath(), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Append(event(3)); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		h, err := ReadHead(c.HeadPath(), testKey)
		if rep, verr := Verify([]string{c.Path}, VerifyOptions{Key: testKey, Head: &h}); err != nil || verr != nil || rep.LastSeq != 3 {
			t.Errorf("%s head: %+v, %v, %v", name, rep, err, verr)
		}
	}
}

func TestKeyNeverFormats(t *testing.T) {
	k := Key("super-secret-hmac-key-0123456789abcdef")
	for _, got := range []string{fmt.Sprint(k), fmt.Sprintf("%v %+v %#v %s %x %q", k, k, k, k, k, k), fmt.Sprintf("%+v", struct{ K Key }{k})} {
		if strings.Contains(got, "super") || strings.Contains(got, "73757065") {
			t.Errorf("the key formats as %q", got)
		}
	}
}

// TestVerifyAcceptsAKeyAddedLater: plain-hash lines before the first mac
// line are anchored by it; a file of plain lines alone is not accepted
// with a key.
func TestVerifyAcceptsAKeyAddedLater(t *testing.T) {
	c := writeChain(t, 3, nil)
	c.Key = testKey
	for i := 4; i <= 5; i++ {
		if _, err := c.Append(event(i)); err != nil {
			t.Fatal(err)
		}
	}
	h, err := ReadHead(c.HeadPath(), testKey)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := Verify([]string{c.Path}, VerifyOptions{Key: testKey, Head: &h})
	if err != nil || !rep.Keyed || rep.BeforeKey != 3 || rep.LastSeq != 5 {
		t.Errorf("key added later: %+v, %v", rep, err)
	}
	// An edit of a plain line is caught by the next line's prev...
	lines := fileLines(t, c.Path)
	p, _ := parseLine(bytes.TrimSuffix(lines[0], []byte("\n")))
	q, _ := parseLine(bytes.TrimSuffix(lines[1], []byte("\n")))
	forged, _ := sealLine(append(bytes.Replace(q.body[:bytes.LastIndex(q.body, []byte(`,"seq":`))], []byte(`"job_id":2`), []byte(`"job_id":7`), 1), '}'), Link{Seq: 1, Hash: p.link}, nil)
	edited := append([][]byte{lines[0], forged}, lines[2:]...)
	writeLines(t, c.Path, edited)
	var be *BrokenError
	if _, err := Verify([]string{c.Path}, VerifyOptions{Key: testKey}); !errors.As(err, &be) || be.Line != 3 || !strings.Contains(be.Problem, "prev does not match") {
		t.Errorf("edited plain line: %v", err)
	}
	// ...and plain lines alone prove nothing under a key.
	writeLines(t, c.Path, lines[:3])
	if _, err := Verify([]string{c.Path}, VerifyOptions{Key: testKey}); !errors.As(err, &be) || be.Line != 3 || !strings.Contains(be.Problem, "no line carries a mac") {
		t.Errorf("plain lines only: %v", err)
	}
}
