package executor

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
)

// Delivery of the identity's files in the exec of a sub-stage.
//
// Prepare used to write the token file with a docker exec of its own right
// after creating the build container; that exec was most of what an
// identity cost a job on a nearby issuer. Now each run call compares the
// files its sub-stage gets (Identity.Files) with what the state records in
// the tmpfs (JobState.Files, by hash), and delivers the difference — the
// first token, a token refreshed or rotated before the sub-stage, a file
// removed for a sub-stage without its credential — in the exec that runs
// its script: the exec's command is the fixed
// wrapper deliverScript followed by ShellProbe, and its stdin is a framed
// preamble with the files, then the runner's script. The wrapper reads the
// preamble with the shell's read builtin (which never reads past a
// newline, so the script is left on stdin for the shell it then execs),
// writes each file as prepare did (0400 of the script user in the tmpfs,
// through a temporary file renamed over the old one), and reports on
// stderr, under a nonce that came with the preamble, that it is done. The
// contents travel only on stdin and in the wrapper shell's unexported
// variables: never in arguments, environment or anything docker inspect
// shows. Run records the files only on that report; without it the
// sub-stage is a system failure and the next run delivers again.
//
// Preamble, every field one line:
//
//	nonce
//	number of files
//	per file: path, number of lines N, then its content as N lines;
//	or path and "-" for a file the sub-stage must not see (removed)
//
// A file's content is its lines joined by "\n": content ending in a
// newline has an empty last line.

// deliverScript is the wrapper run before ShellProbe. It exits 1 with a
// "<nonce> failed" report (and the reason) when a file cannot be written.
const deliverScript = `IFS= read -r goe_nonce || exit 1
goe_deliver() {
  IFS= read -r n || return 1
  umask 0377
  while [ "$n" -gt 0 ]; do
    IFS= read -r f && IFS= read -r k || return 1
    n=$((n-1))
    if [ "$k" = - ]; then rm -f "$f" || return 1; continue; fi
    t="$f.new.$$"
    { i=0; while [ "$i" -lt "$k" ]; do IFS= read -r l || return 1; [ "$i" -eq 0 ] || printf '\n'; printf '%s' "$l"; i=$((i+1)); done; } > "$t" || return 1
    mv -f "$t" "$f" || return 1
  done
}
if goe_err=$(goe_deliver 2>&1); then printf '%s ok\n' "$goe_nonce" >&2; else printf '%s failed\n%s\n' "$goe_nonce" "$goe_err" >&2; exit 1; fi
unset goe_nonce goe_err
`

// deliveryPreamble frames files for deliverScript under nonce.
func deliveryPreamble(nonce string, files []SecretFile) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s\n%d\n", nonce, len(files))
	for _, f := range files {
		if f.Remove {
			fmt.Fprintf(&b, "%s\n-\n", f.Path)
			continue
		}
		lines := strings.Split(f.Content, "\n")
		fmt.Fprintf(&b, "%s\n%d\n", f.Path, len(lines))
		for _, l := range lines {
			b.WriteString(l)
			b.WriteByte('\n')
		}
	}
	return b.Bytes()
}

// ErrDeliveryUnconfirmed is a sub-stage's exec that ended without the
// wrapper reporting the identity's files written.
var ErrDeliveryUnconfirmed = errors.New("the build container did not confirm the token files written")

// delivery is one pending delivery riding on a sub-stage's exec.
type delivery struct {
	nonce  string
	files  []SecretFile
	report *deliveryReport
	// recordOnce records files in the state once (recordDelivery).
	recordOnce sync.Once
	recordErr  error
	// confirmed is closed when the wrapper reports the files written.
	confirmed chan struct{}
	mu        sync.Mutex
	ok        bool
	failure   bytes.Buffer
}

// withDelivery rewrites a sub-stage's exec so it first writes files: the
// wrapper before the shell probe, the preamble before the script, and a
// filter on stderr that takes the wrapper's report out of the job log.
func withDelivery(spec ExecSpec, files []SecretFile) (ExecSpec, *delivery, error) {
	nonce, err := randomHex(16)
	if err != nil {
		return spec, nil, fmt.Errorf("creating delivery nonce: %w", err)
	}
	d := &delivery{nonce: nonce, confirmed: make(chan struct{})}
	spec.Cmd = []string{"sh", "-c", deliverScript + ShellProbe}
	spec.Stdin = io.MultiReader(bytes.NewReader(deliveryPreamble(nonce, files)), orEmpty(spec.Stdin))
	d.report = &deliveryReport{d: d, next: spec.Stderr}
	spec.Stderr = d.report
	return spec, d, nil
}

func orEmpty(r io.Reader) io.Reader {
	if r == nil {
		return strings.NewReader("")
	}
	return r
}

// result is nil once the wrapper reported the files written, else why not.
func (d *delivery) result() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.ok {
		return nil
	}
	if msg := strings.TrimSpace(d.failure.String()); msg != "" {
		return fmt.Errorf("%w: %s", ErrDeliveryUnconfirmed, msg)
	}
	return ErrDeliveryUnconfirmed
}

// maxReport bounds what deliveryReport holds back from the job log.
const maxReport = 4 << 10

// deliveryReport takes the wrapper's report, the first line of stderr,
// out of the stream and passes everything after it on. A first line that
// is not a report (the wrapper never ran) is passed on with the rest.
type deliveryReport struct {
	d      *delivery
	next   io.Writer
	head   []byte
	done   bool // the first line is handled
	failed bool // the rest is the failure's reason
}

func (r *deliveryReport) Write(p []byte) (int, error) {
	n := len(p)
	if r.done {
		if r.failed {
			r.d.mu.Lock()
			if r.d.failure.Len() < maxReport {
				r.d.failure.Write(p[:min(len(p), maxReport-r.d.failure.Len())])
			}
			r.d.mu.Unlock()
			return n, nil
		}
		return r.next.Write(p)
	}
	r.head = append(r.head, p...)
	i := bytes.IndexByte(r.head, '\n')
	if i < 0 && len(r.head) < maxReport {
		return n, nil
	}
	r.done = true
	all := r.head
	r.head = nil
	if i >= 0 {
		switch line, rest := string(all[:i]), all[i+1:]; line {
		case r.d.nonce + " ok":
			r.d.mu.Lock()
			r.d.ok = true
			r.d.mu.Unlock()
			close(r.d.confirmed)
			all = rest
		case r.d.nonce + " failed":
			r.failed = true
			_, err := r.Write(rest)
			return n, err
		}
	}
	// After the report, or instead of one (the wrapper never ran): the
	// sub-stage's own output.
	if len(all) > 0 {
		if _, err := r.next.Write(all); err != nil {
			return n, err
		}
	}
	return n, nil
}

// Flush passes on a first line still held back (output that ended without
// a newline and without a report).
func (r *deliveryReport) Flush() error {
	if r.done || len(r.head) == 0 {
		return nil
	}
	r.done = true
	_, err := r.next.Write(r.head)
	r.head = nil
	return err
}

// startDelivery prepares the exec of a sub-stage to deliver the files of
// the job's identity that differ from what the tmpfs holds; nil when there
// is nothing to do.
func (s *Stages) startDelivery(spec *ExecSpec, st *JobState, subStage string) (*delivery, error) {
	if st == nil || len(st.Credentials) == 0 || s.Identity == nil {
		return nil, nil
	}
	files := fileChanges(st, s.Identity.Files(st, subStage))
	if len(files) == 0 {
		return nil, nil
	}
	next, d, err := withDelivery(*spec, files)
	if err != nil {
		return nil, err
	}
	d.files = files
	*spec = next
	return d, nil
}

// waitConfirmed waits until d is confirmed (true, at once for no
// delivery) or stop is closed (false).
func (d *delivery) waitConfirmed(stop <-chan struct{}) bool {
	if d == nil {
		return true
	}
	select {
	case <-d.confirmed:
		return true
	case <-stop:
		return false
	}
}

// finishDelivery, once the exec is over, records a confirmed delivery
// (JobState.Files) or fails the sub-stage: a script must never run
// believing it has a token file it lacks, and the runner must see a
// system failure, not the script's. Nothing to do for d nil.
func (s *Stages) finishDelivery(jobID int64, d *delivery) error {
	if d == nil {
		return nil
	}
	if err := d.report.Flush(); err != nil {
		return err
	}
	if err := d.result(); err != nil {
		return fmt.Errorf("delivering the job's token files: %w", err)
	}
	return s.recordDelivery(jobID, d)
}

// recordDelivery records the files of a confirmed delivery in the state,
// once: the refresher records it before it may write a newer file (it
// waits for the confirmation), finishDelivery otherwise. Nothing to do for
// d nil.
func (s *Stages) recordDelivery(jobID int64, d *delivery) error {
	if d == nil {
		return nil
	}
	d.recordOnce.Do(func() {
		unlock, err := s.State.Lock(jobID, true)
		if err != nil {
			d.recordErr = err
			return
		}
		defer unlock()
		st, err := s.State.Load(jobID)
		if err != nil {
			d.recordErr = err
			return
		}
		recordFiles(st, d.files)
		d.recordErr = s.State.Save(st)
	})
	return d.recordErr
}
