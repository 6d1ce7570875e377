package metrics_test

import (
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/gitlab-okta-executor/gitlab-okta-executor/metrics"
)

// TestReadmeListsEveryMetric keeps the README's table in step with Defs.
func TestReadmeListsEveryMetric(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range metrics.Defs {
		if !strings.Contains(string(readme), "`"+d.Name+"`") {
			t.Errorf("README does not list %s", d.Name)
		}
	}
}

var metricRef = regexp.MustCompile(`gitlab_okta_executor_[a-z_]+`)

// TestSampleAlertRules: configs/prometheus-alerts.yml is a Prometheus
// rules file whose expressions name only metrics the executor writes, and
// the README shows it verbatim.
func TestSampleAlertRules(t *testing.T) {
	raw, err := os.ReadFile("../configs/prometheus-alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	var file struct {
		Groups []struct {
			Name  string `yaml:"name"`
			Rules []struct {
				Alert       string            `yaml:"alert"`
				Expr        string            `yaml:"expr"`
				For         string            `yaml:"for"`
				Labels      map[string]string `yaml:"labels"`
				Annotations map[string]string `yaml:"annotations"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	dec := yaml.NewDecoder(strings.NewReader(string(raw)))
	dec.KnownFields(true)
	if err := dec.Decode(&file); err != nil {
		t.Fatalf("not a rules file: %v", err)
	}
	known := map[string]bool{}
	for _, d := range metrics.Defs {
		known[d.Name] = true
		if d.Kind == metrics.Histogram {
			for _, s := range []string{"_bucket", "_sum", "_count"} {
				known[d.Name+s] = true
			}
		}
	}
	var alerts []string
	for _, g := range file.Groups {
		if g.Name == "" || len(g.Rules) == 0 {
			t.Errorf("group %+v", g)
		}
		for _, r := range g.Rules {
			alerts = append(alerts, r.Alert)
			if r.Alert == "" || r.Expr == "" || r.Labels["severity"] == "" || r.Annotations["summary"] == "" {
				t.Errorf("rule %+v lacks alert, expr, severity or summary", r)
			}
			refs := metricRef.FindAllString(r.Expr, -1)
			if len(refs) == 0 {
				t.Errorf("%s: expr %q names no executor metric", r.Alert, r.Expr)
			}
			for _, m := range refs {
				if !known[m] {
					t.Errorf("%s: expr names %s, which the executor does not write", r.Alert, m)
				}
			}
			if !balanced(r.Expr) {
				t.Errorf("%s: unbalanced brackets in %q", r.Alert, r.Expr)
			}
			if r.For != "" {
				if _, err := time.ParseDuration(r.For); err != nil {
					t.Errorf("%s: for %q: %v", r.Alert, r.For, err)
				}
			}
		}
	}
	// The alerts operators asked for.
	for _, want := range []string{"gitlab_okta_executor_live_tokens_past_job", "gitlab_okta_executor_token_revoke_failures_total", "gitlab_okta_executor_okta_rate_limited_total"} {
		if !strings.Contains(string(raw), want) {
			t.Errorf("no alert on %s", want)
		}
	}
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(readme), "```yaml\n"+string(raw)+"```") {
		t.Error("the README's sample alerts differ from configs/prometheus-alerts.yml")
	}
}

func balanced(expr string) bool {
	var stack []rune
	pairs := map[rune]rune{')': '(', ']': '[', '}': '{'}
	for _, c := range expr {
		switch c {
		case '(', '[', '{':
			stack = append(stack, c)
		case ')', ']', '}':
			if len(stack) == 0 || stack[len(stack)-1] != pairs[c] {
				return false
			}
			stack = stack[:len(stack)-1]
		}
	}
	return len(stack) == 0
}
