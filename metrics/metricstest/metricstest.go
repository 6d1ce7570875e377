// Package metricstest reads a metrics file the way Prometheus does, with
// the text parser of github.com/prometheus/common/expfmt, for tests that
// check what the executor wrote.
package metricstest

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// File is a parsed metrics file.
type File map[string]*dto.MetricFamily

// Read parses the file at path.
func Read(path string) (File, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return Parse(b)
}

// Parse parses text in the exposition format, with the legacy (strict)
// metric name rules node_exporter's collector applies.
func Parse(b []byte) (File, error) {
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("parsing metrics: %w", err)
	}
	return File(fams), nil
}

// Metric returns the sample of family name whose labels are exactly
// labels ("k=v" pairs), or nil. As in Prometheus, a label with an empty
// value is no label.
func (f File) Metric(name string, labels ...string) *dto.Metric {
	fam := f[name]
	if fam == nil {
		return nil
	}
	want := map[string]string{}
	for _, kv := range labels {
		if k, v, _ := strings.Cut(kv, "="); v != "" {
			want[k] = v
		}
	}
	for _, m := range fam.GetMetric() {
		got := map[string]string{}
		for _, lp := range m.GetLabel() {
			if lp.GetValue() != "" {
				got[lp.GetName()] = lp.GetValue()
			}
		}
		if maps.Equal(got, want) {
			return m
		}
	}
	return nil
}

// Value is the value of a counter or gauge sample, 0 when absent (as a
// counter that never moved).
func (f File) Value(name string, labels ...string) float64 {
	m := f.Metric(name, labels...)
	switch {
	case m == nil:
		return 0
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Untyped != nil:
		return m.Untyped.GetValue()
	}
	return 0
}

// Complete reports whether text declares (HELP and TYPE) every family of
// names and ends with a whole line: the parser drops families without
// samples, so a file cut short after its last sample would still parse.
func Complete(text []byte, names []string) error {
	if len(text) == 0 || text[len(text)-1] != '\n' {
		return errors.New("the file does not end with a newline")
	}
	for _, n := range names {
		if !bytes.Contains(text, []byte("\n# TYPE "+n+" ")) && !bytes.HasPrefix(text, []byte("# TYPE "+n+" ")) {
			return fmt.Errorf("no TYPE line for %s", n)
		}
		if !bytes.Contains(text, []byte("# HELP "+n+" ")) {
			return fmt.Errorf("no HELP line for %s", n)
		}
	}
	return nil
}

// Names lists the families, sorted.
func (f File) Names() []string { return slices.Sorted(maps.Keys(f)) }
