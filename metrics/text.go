package metrics

import (
	"bytes"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
)

// render writes every family in Defs order in the text exposition format
// (version 0.0.4): HELP and TYPE, then its series sorted by label values.
// Unlabelled counters are written at 0 before their first increment, so
// alerts and dashboards find them on a fresh host.
func render(totals map[string]*series, gauges []Sample) []byte {
	var b bytes.Buffer
	byFamily := map[string][]*series{}
	for _, s := range totals {
		byFamily[s.Name] = append(byFamily[s.Name], s)
	}
	gaugesBy := map[string][]Sample{}
	for _, g := range gauges {
		gaugesBy[g.Def.Name] = append(gaugesBy[g.Def.Name], g)
	}
	for _, d := range Defs {
		fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s %s\n", d.Name, escapeHelp(d.Help), d.Name, d.Kind)
		if d.Kind == Gauge {
			gs := gaugesBy[d.Name]
			slices.SortFunc(gs, func(a, b Sample) int { return slices.Compare(a.Labels, b.Labels) })
			for _, g := range gs {
				writeSample(&b, d.Name, d.Labels, g.Labels, "", "", g.Value)
			}
			continue
		}
		ss := byFamily[d.Name]
		if len(ss) == 0 && len(d.Labels) == 0 && d.Kind == Counter {
			ss = []*series{{Name: d.Name}}
		}
		slices.SortFunc(ss, func(a, b *series) int { return slices.Compare(a.Labels, b.Labels) })
		for _, s := range ss {
			if d.Kind == Counter {
				writeSample(&b, d.Name, d.Labels, s.Labels, "", "", s.Value)
				continue
			}
			var cum uint64
			for i, bound := range d.Buckets {
				cum += s.Buckets[i]
				writeSample(&b, d.Name+"_bucket", d.Labels, s.Labels, "le", formatFloat(bound), float64(cum))
			}
			writeSample(&b, d.Name+"_bucket", d.Labels, s.Labels, "le", "+Inf", float64(s.Count))
			writeSample(&b, d.Name+"_sum", d.Labels, s.Labels, "", "", s.Sum)
			writeSample(&b, d.Name+"_count", d.Labels, s.Labels, "", "", float64(s.Count))
		}
	}
	return b.Bytes()
}

// writeSample writes one line; extraName/extraValue is the le label of a
// histogram bucket.
func writeSample(b *bytes.Buffer, name string, labelNames, values []string, extraName, extraValue string, v float64) {
	b.WriteString(name)
	if len(labelNames) > 0 || extraName != "" {
		b.WriteByte('{')
		for i, n := range labelNames {
			if i > 0 {
				b.WriteByte(',')
			}
			fmt.Fprintf(b, `%s="%s"`, n, escapeLabel(values[i]))
		}
		if extraName != "" {
			if len(labelNames) > 0 {
				b.WriteByte(',')
			}
			fmt.Fprintf(b, `%s="%s"`, extraName, extraValue)
		}
		b.WriteByte('}')
	}
	b.WriteByte(' ')
	b.WriteString(formatFloat(v))
	b.WriteByte('\n')
}

func formatFloat(v float64) string {
	switch {
	case math.IsInf(v, 1):
		return "+Inf"
	case math.IsInf(v, -1):
		return "-Inf"
	case math.IsNaN(v):
		return "NaN"
	}
	return strconv.FormatFloat(v, 'g', -1, 64)
}

var (
	labelEscaper = strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)
	helpEscaper  = strings.NewReplacer(`\`, `\\`, "\n", `\n`)
)

func escapeLabel(v string) string { return labelEscaper.Replace(v) }
func escapeHelp(v string) string  { return helpEscaper.Replace(v) }
