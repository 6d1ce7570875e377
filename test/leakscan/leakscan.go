// Package leakscan finds credentials that escaped a test run: Okta access
// tokens (by shape, and every token a test registered, whole or by its
// signature alone) and PEM private keys, in logs, in every file under the
// directories a run wrote, and in `docker inspect` of every container an
// executor still manages. End-to-end tiers register what they produced and
// run one Scan at the end (TestMain), so a leak fails the run.
package leakscan

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/client"
)

// ManagedLabel marks the containers an executor manages.
const ManagedLabel = "io.gitlab-okta-executor.managed-by"

// Scan collects what a run produced. The zero value is ready; methods are
// safe for concurrent use.
type Scan struct {
	mu     sync.Mutex
	tokens map[string]bool
	texts  []namedText
	dirs   []string
}

type namedText struct{ where, text string }

// Token remembers a live token a test saw, so Run looks for it verbatim
// (and for its signature alone) everywhere.
func (s *Scan) Token(token string) {
	if token == "" {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.tokens == nil {
		s.tokens = map[string]bool{}
	}
	s.tokens[token] = true
}

// Text adds a text (a job log, runner log, stage environment) to the scan.
func (s *Scan) Text(where, text string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.texts = append(s.texts, namedText{where, text})
}

// Dir adds every file under dir (executor logs, audit log, state) to the
// scan. The files are read when Run runs.
func (s *Scan) Dir(dir string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dirs = append(s.dirs, dir)
}

// Run scans everything registered and, with a Docker client, every managed
// container's inspect output. It returns one line per leak, never the
// secret itself.
func (s *Scan) Run(ctx context.Context, docker *client.Client) []string {
	s.mu.Lock()
	tokens := make([]string, 0, len(s.tokens))
	for tok := range s.tokens {
		tokens = append(tokens, tok)
	}
	texts := append([]namedText(nil), s.texts...)
	dirs := append([]string(nil), s.dirs...)
	s.mu.Unlock()
	sort.Strings(tokens)

	var leaks []string
	for _, t := range texts {
		leaks = append(leaks, LeaksIn(t.where, t.text, tokens)...)
	}
	for _, dir := range dirs {
		_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return nil
			}
			b, err := os.ReadFile(p)
			if err != nil {
				leaks = append(leaks, fmt.Sprintf("%s: unreadable by the scan: %v", p, err))
				return nil
			}
			leaks = append(leaks, LeaksIn(p, string(b), tokens)...)
			return nil
		})
	}
	if docker != nil {
		leaks = append(leaks, scanManagedContainers(ctx, docker, tokens)...)
	}
	return leaks
}

// scanManagedContainers inspects every container an executor still
// manages (a test that failed may have left one).
func scanManagedContainers(ctx context.Context, cli *client.Client, tokens []string) []string {
	cs, err := cli.ContainerList(ctx, container.ListOptions{All: true,
		Filters: filters.NewArgs(filters.Arg("label", ManagedLabel))})
	if err != nil {
		return []string{fmt.Sprintf("listing managed containers for the scan: %v", err)}
	}
	var leaks []string
	for _, c := range cs {
		_, raw, err := cli.ContainerInspectWithRaw(ctx, c.ID, false)
		if client.IsErrNotFound(err) {
			continue
		}
		if err != nil {
			leaks = append(leaks, fmt.Sprintf("inspecting container %s for the scan: %v", c.ID[:12], err))
			continue
		}
		leaks = append(leaks, LeaksIn("docker inspect "+strings.Join(c.Names, ","), string(raw), tokens)...)
	}
	return leaks
}

// JWTShape matches a compact JWS whose header and payload are JSON objects.
var JWTShape = regexp.MustCompile(`eyJ[A-Za-z0-9_-]+\.eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*`)

// OktaAccessTokenClaims reports whether s is a JWT whose payload looks like
// an Okta access token: a cid claim and an issuer that is a custom
// authorization server. It returns the jti for the report (never the token).
func OktaAccessTokenClaims(s string) (jti string, ok bool) {
	parts := strings.Split(s, ".")
	if len(parts) < 2 {
		return "", false
	}
	b, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return "", false
	}
	var claims map[string]any
	if json.Unmarshal(b, &claims) != nil {
		return "", false
	}
	iss, _ := claims["iss"].(string)
	if _, hasCID := claims["cid"]; !hasCID || !strings.Contains(iss, "/oauth2/") {
		return "", false
	}
	jti, _ = claims["jti"].(string)
	return jti, true
}

// privateKeyPEM is a PEM private key with its content (a masked one shows
// "[MASKED]" after the header): the DPoP proof keys and job-app keys.
var privateKeyPEM = regexp.MustCompile(`-----BEGIN [A-Z ]*PRIVATE KEY-----\r?\n[A-Za-z0-9+/=]{32,}`)

// LeaksIn lists the leaks in one text: Okta-shaped JWTs, the given tokens
// (whole, or their signature segment alone) and private keys.
func LeaksIn(where, text string, tokens []string) []string {
	var out []string
	if privateKeyPEM.MatchString(text) {
		out = append(out, fmt.Sprintf("%s: a private key", where))
	}
	for _, m := range JWTShape.FindAllString(text, -1) {
		if jti, ok := OktaAccessTokenClaims(m); ok {
			out = append(out, fmt.Sprintf("%s: an Okta access token (jti %s)", where, jti))
		}
	}
	for _, tok := range tokens {
		jti, _ := OktaAccessTokenClaims(tok)
		switch {
		case strings.Contains(text, tok):
			out = append(out, fmt.Sprintf("%s: a token registered by a test (jti %s)", where, jti))
		case SignatureOf(tok) != "" && strings.Contains(text, SignatureOf(tok)):
			out = append(out, fmt.Sprintf("%s: the signature of a token registered by a test (jti %s)", where, jti))
		}
	}
	return dedupe(out)
}

// SignatureOf returns a JWT's signature segment when it is long enough to
// be unique (an RS256 signature is 342 characters).
func SignatureOf(tok string) string {
	i := strings.LastIndexByte(tok, '.')
	if i < 0 || len(tok)-i-1 < 40 {
		return ""
	}
	return tok[i+1:]
}

func dedupe(in []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, s := range in {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}
