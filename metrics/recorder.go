package metrics

import (
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/identity"
)

// maxLabelValue bounds a label value's length: rule names are the
// longest values, and a dashboard needs no more.
const maxLabelValue = 128

// Recorder counts what one process did until Flush adds it to the totals.
// It is safe for concurrent use; a nil *Recorder records nothing, so code
// without metrics (doctor, tests) passes nil.
type Recorder struct {
	mu     sync.Mutex
	series map[string]*series
}

// series is one labelled time series: a counter's value, or a histogram's
// per-bucket (not cumulative) counts, sum and count.
type series struct {
	Name    string   `json:"name"`
	Labels  []string `json:"labels,omitempty"`
	Value   float64  `json:"value,omitempty"`
	Buckets []uint64 `json:"buckets,omitempty"`
	Count   uint64   `json:"count,omitempty"`
	Sum     float64  `json:"sum,omitempty"`
}

// New returns an empty Recorder.
func New() *Recorder { return &Recorder{series: map[string]*series{}} }

// key identifies a series: the name and label values, NUL-separated (no
// label value can hold a NUL after cleanLabel).
func key(name string, labels []string) string {
	return name + "\x00" + strings.Join(labels, "\x00")
}

// cleanLabel keeps a label value valid UTF-8 without NULs, and bounded.
func cleanLabel(v string) string {
	v = strings.ToValidUTF8(strings.ReplaceAll(v, "\x00", ""), "\uFFFD")
	if len(v) > maxLabelValue {
		v = v[:maxLabelValue]
		for !utf8.ValidString(v) {
			v = v[:len(v)-1]
		}
	}
	return v
}

// get returns the series of d with these label values, creating it. A call
// with the wrong number of labels is a programming error.
func (r *Recorder) get(d *Def, labels []string) *series {
	if len(labels) != len(d.Labels) {
		panic("metrics: " + d.Name + " takes labels " + strings.Join(d.Labels, ","))
	}
	clean := make([]string, len(labels))
	for i, l := range labels {
		clean[i] = cleanLabel(l)
	}
	k := key(d.Name, clean)
	s, ok := r.series[k]
	if !ok {
		s = &series{Name: d.Name, Labels: clean}
		if d.Kind == Histogram {
			s.Buckets = make([]uint64, len(d.Buckets)+1)
		}
		r.series[k] = s
	}
	return s
}

// Add adds v to the counter d with the given label values, in d's order.
func (r *Recorder) Add(d *Def, v float64, labels ...string) {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.get(d, labels).Value += v
}

// Observe records one observation v in the histogram d.
func (r *Recorder) Observe(d *Def, v float64, labels ...string) {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.get(d, labels)
	i, _ := slices.BinarySearch(d.Buckets, v) // first bound >= v: le is inclusive
	s.Buckets[i]++
	s.Count++
	s.Sum += v
}

// ObserveWait records a wait for a rate limit to reset before a request
// to endpoint (see EndpointOf for the names): the app manager's 429
// waits, and any host-wide request budget that makes a caller wait.
func (r *Recorder) ObserveWait(endpoint string, d time.Duration) {
	r.Add(RateLimitWaits, 1, endpoint)
	r.Add(RateLimitWaitSeconds, d.Seconds(), endpoint)
}

// AuditShipped counts audit lines the shipper (syslog) delivered. With
// AuditShipFailed it is the audit shipper's observer interface
// (auditlog.ShipObserver): pass the Recorder as its Observer.
func (r *Recorder) AuditShipped(n int) { r.Add(AuditShipped, float64(n)) }

// AuditShipFailed counts a shipping round that failed, its pending lines
// left for the next round. The error is the shipper's to log.
func (r *Recorder) AuditShipFailed(pending int, _ error) { r.Add(AuditShipFailures, 1) }

// Reaped is what one reaper pass removed.
type Reaped struct {
	Jobs, Containers, Networks, Tokens, Apps int
}

// AddReaped counts one reaper pass.
func (r *Recorder) AddReaped(rep Reaped) {
	r.Add(ReapedJobs, float64(rep.Jobs))
	r.Add(ReapedContainers, float64(rep.Containers))
	r.Add(ReapedNetworks, float64(rep.Networks))
	r.Add(ReapedTokens, float64(rep.Tokens))
	r.Add(ReapedApps, float64(rep.Apps))
}

// CountAuditEvent counts one audit event in the family its kind belongs
// to, by rule and outcome, and in AuditEvents by kind.
func (r *Recorder) CountAuditEvent(e identity.AuditEvent) {
	r.Add(AuditEvents, 1, e.Event)
	var d *Def
	switch e.Event {
	case identity.EventIssued:
		d = TokensIssued
	case identity.EventRefreshed:
		d = TokensRefreshed
	case identity.EventRevoked, identity.EventReaped:
		d = TokensRevoked
	case identity.EventRevokeFailed:
		d = RevokeFailures
	case identity.EventDenied:
		d = Denials
	case identity.EventIssueFailed:
		d = IssueFailures
	default:
		return
	}
	r.Add(d, 1, e.Rule, e.Outcome)
}

// take returns the recorded series and empties the recorder, so a second
// Flush does not add them again.
func (r *Recorder) take() []*series {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]*series, 0, len(r.series))
	for _, s := range r.series {
		out = append(out, s)
	}
	r.series = map[string]*series{}
	return out
}

// putBack returns series a failed Flush could not add, for the next one.
func (r *Recorder) putBack(ss []*series) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, s := range ss {
		k := key(s.Name, s.Labels)
		if cur, ok := r.series[k]; ok {
			cur.add(s)
		} else {
			r.series[k] = s
		}
	}
}

// add adds o's counts to s.
func (s *series) add(o *series) {
	s.Value += o.Value
	s.Count += o.Count
	s.Sum += o.Sum
	for i := range s.Buckets {
		if i < len(o.Buckets) {
			s.Buckets[i] += o.Buckets[i]
		}
	}
}
