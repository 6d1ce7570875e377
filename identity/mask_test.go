package identity

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"
	"testing"
)

// maskAll writes the chunks through a Masker over secrets, flushes, and
// returns the output.
func maskAll(t testing.TB, secrets []string, chunks ...string) string {
	t.Helper()
	var out bytes.Buffer
	m := NewMasker(&out)
	for _, s := range secrets {
		m.Add(s)
	}
	for _, c := range chunks {
		n, err := m.Write([]byte(c))
		if err != nil || n != len(c) {
			t.Fatalf("Write(%q) = %d, %v", c, n, err)
		}
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	return out.String()
}

// reference is the batch result the stream must equal: leftmost match,
// the longest secret at a position.
func reference(stream string, secrets []string) string {
	s := append([]string(nil), secrets...)
	sort.SliceStable(s, func(i, j int) bool { return len(s[i]) > len(s[j]) })
	var args []string
	for _, x := range s {
		if len(x) >= minMaskLen {
			args = append(args, x, MaskMarker)
		}
	}
	if len(args) == 0 {
		return stream
	}
	return strings.NewReplacer(args...).Replace(stream)
}

func TestMaskerCases(t *testing.T) {
	const tok = "eyJhbGciOiJSUzI1NiJ9.payload.signature"
	cases := []struct {
		name    string
		secrets []string
		chunks  []string
		want    string
	}{
		{"no secrets", nil, []string{"hello ", "world\n"}, "hello world\n"},
		{"one occurrence", []string{tok}, []string{"token=" + tok + "\n"}, "token=[MASKED]\n"},
		{"several occurrences", []string{tok}, []string{tok + tok + " and " + tok}, "[MASKED][MASKED] and [MASKED]"},
		{"split in two", []string{tok}, []string{"a=" + tok[:10], tok[10:] + "!"}, "a=[MASKED]!"},
		{"split in many", []string{tok}, []string{"x", tok[:1], tok[1:2], tok[2:20], tok[20:], "y"}, "x[MASKED]y"},
		{"prefix then mismatch", []string{"supersecretvalue"}, []string{"supersecret", "s are fine\n"}, "supersecrets are fine\n"},
		{"short secret ignored", []string{"short"}, []string{"a short line"}, "a short line"},
		{"longest wins at a position", []string{"password1", "password123"}, []string{"password12", "3 password1 x"}, "[MASKED] [MASKED] x"},
		{"shorter completes when the longer does not", []string{"password1", "password123"}, []string{"password1", "2!"}, "[MASKED]2!"},
		{"overlap: leftmost wins", []string{"abcdefgh", "efghijkl"}, []string{"abcdefghijkl"}, "[MASKED]ijkl"},
		{"self-overlapping secret", []string{"aaaaaaaab"}, []string{"aaaaa", "aaaaaaaab"}, "aaaaa[MASKED]"},
		{"trailing partial of 8+ bytes is masked", []string{tok}, []string{"end " + tok[:12]}, "end [MASKED]"},
		{"trailing partial under 8 bytes is kept", []string{tok}, []string{"end " + tok[:5]}, "end " + tok[:5]},
		{"secret in one write with text", []string{"s3cr3t-v4lue"}, []string{"1 s3cr3t-v4lue 2 s3cr3t-v4lue 3"}, "1 [MASKED] 2 [MASKED] 3"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := maskAll(t, tc.secrets, tc.chunks...); got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestMaskerEverySplitPoint(t *testing.T) {
	const secret = "glpat-0123456789abcdefghij"
	stream := "before " + secret + " middle " + secret + " after\n"
	want := strings.ReplaceAll(stream, secret, MaskMarker)
	for i := 0; i <= len(stream); i++ {
		for j := i; j <= len(stream); j += 3 {
			if got := maskAll(t, []string{secret}, stream[:i], stream[i:j], stream[j:]); got != want {
				t.Fatalf("split at %d,%d: got %q, want %q", i, j, got, want)
			}
		}
	}
	chunks := strings.Split(stream, "")
	if got := maskAll(t, []string{secret}, chunks...); got != want {
		t.Fatalf("byte by byte: got %q, want %q", got, want)
	}
}

// writeLog records each underlying Write.
type writeLog struct{ writes []string }

func (w *writeLog) Write(p []byte) (int, error) {
	w.writes = append(w.writes, string(p))
	return len(p), nil
}

func (w *writeLog) String() string { return strings.Join(w.writes, "") }

func TestMaskerHoldsBackOnlyAPossibleSecret(t *testing.T) {
	var log writeLog
	m := NewMasker(&log)
	m.Add("s3cr3t-value")
	write := func(s string) {
		t.Helper()
		if _, err := m.Write([]byte(s)); err != nil {
			t.Fatal(err)
		}
	}
	write("plain output, no secret start\n")
	if got := log.String(); got != "plain output, no secret start\n" {
		t.Fatalf("ordinary output delayed: emitted %q", got)
	}
	write("progress: s3cr")
	if got := log.String(); got != "plain output, no secret start\nprogress: " {
		t.Fatalf("emitted %q, want everything but the partial secret", got)
	}
	write("ew is fine")
	if got := log.String(); !strings.HasSuffix(got, "progress: s3crew is fine") {
		t.Fatalf("emitted %q, want the held bytes released once they cannot be a secret", got)
	}
	// Longest suffix that is a prefix: "s3cr3t-s3cr3t-value" must wait
	// at "s3cr3t-s3c", not just "s3c".
	log.writes = nil
	write("x s3cr3t-s3c")
	write("r3t-value y")
	if err := m.Flush(); err != nil {
		t.Fatal(err)
	}
	if got := log.String(); got != "x s3cr3t-[MASKED] y" {
		t.Fatalf("got %q", got)
	}
}

func TestMaskerAddWhileWriting(t *testing.T) {
	var out lockedBuffer
	m := NewMasker(&out)
	secrets := make([]string, 8)
	for i := range secrets {
		secrets[i] = fmt.Sprintf("secret-number-%02d-xyz", i)
	}
	var wg sync.WaitGroup
	for _, s := range secrets {
		wg.Go(func() { m.Add(s) })
	}
	for range 4 {
		wg.Go(func() {
			for range 100 {
				if _, err := m.Write([]byte("line of ordinary output\n")); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	// Once Add has returned, every secret is masked.
	for _, s := range secrets {
		if _, err := m.Write([]byte("x " + s[:5])); err != nil {
			t.Fatal(err)
		}
		if _, err := m.Write([]byte(s[5:] + " y\n")); err != nil {
			t.Fatal(err)
		}
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	got := out.String()
	for _, s := range secrets {
		if strings.Contains(got, s) {
			t.Errorf("output contains %q", s)
		}
	}
	if n := strings.Count(got, "x [MASKED] y\n"); n != len(secrets) {
		t.Errorf("masked %d secrets, want %d", n, len(secrets))
	}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

type failWriter struct{ n int }

func (f *failWriter) Write(p []byte) (int, error) {
	f.n++
	return 0, errors.New("disk full")
}

func TestMaskerWriteErrorIsSticky(t *testing.T) {
	fw := &failWriter{}
	m := NewMasker(fw)
	m.Add("0123456789")
	if _, err := m.Write([]byte("hello")); err == nil {
		t.Fatal("Write succeeded over a failing writer")
	}
	if _, err := m.Write([]byte("again")); err == nil || fw.n != 1 {
		t.Fatalf("second Write: err %v, underlying writes %d; want the first error again without writing", err, fw.n)
	}
	if err := m.Flush(); err == nil {
		t.Fatal("Flush succeeded after a write error")
	}
}

// streamGen builds a stream of lowercase noise, full secrets and short
// decoy prefixes of secrets (under 16 bytes), always separated by noise,
// so the only ≥16-byte runs of secret text in the input are whole secrets.
type streamGen struct {
	secrets []string
	b       strings.Builder
}

func (g *streamGen) noise(r byte) {
	const alphabet = "abcdefghijklmnopqrstuvwxyz \n"
	g.b.WriteByte(alphabet[int(r)%len(alphabet)])
}

func (g *streamGen) secret(i int) { g.b.WriteString(g.secrets[i%len(g.secrets)]) }

func (g *streamGen) decoy(i, n int) {
	s := g.secrets[i%len(g.secrets)]
	g.b.WriteString(s[:1+n%min(15, len(s)-1)])
}

// randomSecrets are uppercase/digit strings, some sharing prefixes with
// others (one extends another), so partial matches are common.
func randomSecrets(r *rand.Rand, n int) []string {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._"
	out := make([]string, 0, n)
	for len(out) < n {
		var b strings.Builder
		for range 8 + r.IntN(50) {
			b.WriteByte(alphabet[r.IntN(len(alphabet))])
		}
		s := b.String()
		if len(out) > 0 && r.IntN(3) == 0 {
			s = out[r.IntN(len(out))] + s[:1+r.IntN(len(s)-1)] // extends another secret
		}
		out = append(out, s)
	}
	return out
}

// checkStream masks stream in the given chunk sizes and checks it against
// the batch reference and the no-leak property.
func checkStream(t testing.TB, secrets []string, stream string, sizes []int) {
	t.Helper()
	var chunks []string
	rest := stream
	for i := 0; len(rest) > 0; i++ {
		n := 1
		if len(sizes) > 0 {
			n = max(1, sizes[i%len(sizes)])
		}
		n = min(n, len(rest))
		chunks = append(chunks, rest[:n])
		rest = rest[n:]
	}
	got := maskAll(t, secrets, chunks...)
	if want := reference(stream, secrets); got != want {
		t.Fatalf("chunked output differs from the batch result\nsecrets %q\nsizes %v\nstream %q\ngot  %q\nwant %q", secrets, sizes, stream, got, want)
	}
	if len(secrets) == 1 {
		if want := strings.ReplaceAll(stream, secrets[0], MaskMarker); got != want {
			t.Fatalf("output differs from strings.ReplaceAll\ngot  %q\nwant %q", got, want)
		}
	}
	for _, s := range secrets {
		if strings.Contains(got, s) {
			t.Fatalf("output contains secret %q", s)
		}
		for i := 0; i+16 <= len(s); i++ {
			if w := s[i : i+16]; strings.Contains(got, w) {
				t.Fatalf("output contains %q, a 16-byte piece of secret %q", w, s)
			}
		}
	}
}

func TestMaskerRandomChunkings(t *testing.T) {
	for seed := range uint64(400) {
		r := rand.New(rand.NewPCG(seed, 0x6d61736b))
		g := &streamGen{secrets: randomSecrets(r, 1+r.IntN(4))}
		if seed%4 == 0 {
			g.secrets = g.secrets[:1] // exercise the strings.ReplaceAll comparison
		}
		for range 20 + r.IntN(200) {
			switch r.IntN(6) {
			case 0:
				g.secret(r.IntN(8))
			case 1:
				g.decoy(r.IntN(8), r.IntN(16))
			}
			g.noise(byte(r.IntN(256)))
		}
		sizes := make([]int, 1+r.IntN(8))
		for i := range sizes {
			sizes[i] = 1 + r.IntN(3+r.IntN(90))
		}
		checkStream(t, g.secrets, g.b.String(), sizes)
	}
}

func FuzzMasker(f *testing.F) {
	f.Add([]byte("\x00\x08\x10hello\x01\x02"), []byte{1, 2, 3})
	f.Add([]byte("aaaa\x00bbbb\x08\x11\x09"), []byte{7})
	f.Add([]byte{0, 0, 0, 0, 8, 16, 24, 1, 9, 17}, []byte{0, 255, 13})
	secrets := []string{"FUZZSECRET-0001", "FUZZSECRET-0001-LONGER-TAIL", "QQQQQQQQQQQQQQQQQQQQ", "EYJ.HDR.PAYLOAD.SIG"}
	f.Fuzz(func(t *testing.T, program, cuts []byte) {
		g := &streamGen{secrets: secrets}
		for _, op := range program {
			switch op % 8 {
			case 0:
				g.secret(int(op / 8))
			case 1:
				g.decoy(int(op/8), int(op/32))
			}
			g.noise(op)
		}
		sizes := make([]int, len(cuts))
		for i, c := range cuts {
			sizes[i] = 1 + int(c)%64
		}
		checkStream(t, secrets, g.b.String(), sizes)
	})
}

func BenchmarkMasker(b *testing.B) {
	r := rand.New(rand.NewPCG(1, 2))
	secrets := []string{
		"eyJhbGciOiJSUzI1NiIsImtpZCI6IjEifQ." + strings.Repeat("Q", 700) + ".sig",
		"glpat-" + strings.Repeat("x", 20),
		"0oa1b2c3d4e5f6g7h8i9",
	}
	var stream bytes.Buffer
	for stream.Len() < 4<<20 {
		fmt.Fprintf(&stream, "%06d step %d: compiling package example.com/pkg%d ... ok\n", r.IntN(1e6), r.IntN(100), r.IntN(1000))
		if r.IntN(200) == 0 {
			stream.WriteString("token " + secrets[r.IntN(len(secrets))] + "\n")
		}
	}
	data := stream.Bytes()
	const chunk = 4096
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		m := NewMasker(discard{})
		for _, s := range secrets {
			m.Add(s)
		}
		for off := 0; off < len(data); off += chunk {
			if _, err := m.Write(data[off:min(off+chunk, len(data))]); err != nil {
				b.Fatal(err)
			}
		}
		if err := m.Close(); err != nil {
			b.Fatal(err)
		}
	}
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
