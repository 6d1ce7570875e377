package incident

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// Status is what `status` reports of one host: the jobs whose state is
// live, the jobs whose cleanup left tokens it could not revoke, and the
// locks in force. It is built from token ids, never tokens: it has no field
// that could hold one.
type Status struct {
	Runner string    `json:"runner"`
	Time   time.Time `json:"time"`
	// Jobs are jobs being prepared or running.
	Jobs []JobStatus `json:"jobs"`
	// Unrevoked are jobs whose cleanup is over but left tokens unrevoked
	// (phase finished) or containers unremoved (phase cleanup_failed):
	// the reaper's work, listed with the age of each token.
	Unrevoked []JobStatus `json:"unrevoked"`
	Locks     []Lock      `json:"locks"`
}

// JobStatus is one job's identity as its state records it.
type JobStatus struct {
	JobID       int64     `json:"job_id"`
	ProjectID   int64     `json:"project_id"`
	ProjectPath string    `json:"project_path,omitempty"`
	Phase       string    `json:"phase"`
	CreatedAt   time.Time `json:"created_at"`
	AgeSeconds  int64     `json:"age_seconds"`
	Rule        string    `json:"rule,omitempty"`
	Mode        string    `json:"mode,omitempty"`
	Scopes      []string  `json:"scopes,omitempty"`
	AppID       string    `json:"app_id,omitempty"`
	// Tokens are the job's unrevoked tokens, oldest first.
	Tokens     []TokenStatus `json:"tokens"`
	Revocation *Revocation   `json:"revocation,omitempty"`
}

// TokenStatus is one unrevoked token, by its jti.
type TokenStatus struct {
	JTI        string    `json:"jti"`
	IssuedAt   time.Time `json:"issued_at"`
	ExpiresAt  time.Time `json:"expires_at"`
	AgeSeconds int64     `json:"age_seconds"`
	Expired    bool      `json:"expired"`
}

// WriteJSON writes the status as one indented JSON object.
func (s *Status) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(s); err != nil {
		return fmt.Errorf("writing status: %w", err)
	}
	return nil
}

// WriteText writes the status as a summary line and one table per section
// with anything in it.
func (s *Status) WriteText(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "runner %s at %s: %s, %s, %s\n", s.Runner, s.Time.UTC().Format(time.RFC3339),
		count(len(s.Jobs), "live job", "live jobs"),
		count(len(s.Unrevoked), "job with tokens cleanup could not revoke", "jobs with tokens cleanup could not revoke"),
		count(len(s.Locks), "incident lock", "incident locks"))
	if len(s.Jobs) > 0 {
		fmt.Fprintln(tw, "\nLIVE JOBS")
		fmt.Fprintln(tw, "JOB\tPROJECT\tPATH\tRULE\tMODE\tPHASE\tAGE\tSCOPES\tTOKEN JTI\tEXPIRES\tAPP")
		for _, j := range s.Jobs {
			phase := j.Phase
			if j.Revocation != nil {
				phase += " (revoked)"
			}
			for _, t := range tokensOrNone(j.Tokens) {
				fmt.Fprintf(tw, "%d\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", j.JobID, j.ProjectID, dash(j.ProjectPath),
					dash(j.Rule), dash(j.Mode), phase, age(j.AgeSeconds), dash(strings.Join(j.Scopes, " ")),
					dash(t.JTI), expiry(t, s.Time), dash(j.AppID))
			}
		}
	}
	if len(s.Unrevoked) > 0 {
		fmt.Fprintln(tw, "\nNOT REVOKED BY CLEANUP (the reaper retries; `reap` now)")
		fmt.Fprintln(tw, "JOB\tPROJECT\tRULE\tMODE\tPHASE\tTOKEN JTI\tTOKEN AGE\tEXPIRES\tAPP")
		for _, j := range s.Unrevoked {
			for _, t := range tokensOrNone(j.Tokens) {
				fmt.Fprintf(tw, "%d\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", j.JobID, j.ProjectID, dash(j.Rule), dash(j.Mode),
					j.Phase, dash(t.JTI), ageOf(t), expiry(t, s.Time), dash(j.AppID))
			}
		}
	}
	if len(s.Locks) > 0 {
		fmt.Fprintln(tw, "\nINCIDENT LOCKS (no new token for matching jobs)")
		fmt.Fprintln(tw, "NAME\tSELECTS\tBY\tAT\tREASON")
		for _, l := range s.Locks {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", l.Name(), l.Selector, l.By, l.At.UTC().Format(time.RFC3339), l.Reason)
		}
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("writing status: %w", err)
	}
	return nil
}

// tokensOrNone gives a job without unrevoked tokens one row of dashes.
func tokensOrNone(ts []TokenStatus) []TokenStatus {
	if len(ts) == 0 {
		return []TokenStatus{{}}
	}
	return ts
}

func expiry(t TokenStatus, now time.Time) string {
	if t.ExpiresAt.IsZero() {
		return "-"
	}
	if d := t.ExpiresAt.Sub(now); d > 0 {
		return "in " + d.Round(time.Second).String()
	}
	return "expired " + now.Sub(t.ExpiresAt).Round(time.Second).String() + " ago"
}

func ageOf(t TokenStatus) string {
	if t.IssuedAt.IsZero() {
		return "-"
	}
	return age(t.AgeSeconds)
}

func age(seconds int64) string { return (time.Duration(seconds) * time.Second).String() }

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func count(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return strconv.Itoa(n) + " " + many
}
