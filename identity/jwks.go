package identity

import (
	"context"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// JWKS caching. The config, prepare, run and cleanup stages are separate
// processes, so the in-memory copy rarely outlives one stage; the disk
// cache lets them share one fetch.
const (
	// defaultKeysMaxAge applies when GitLab sends no Cache-Control max-age.
	defaultKeysMaxAge = time.Hour
	// maxKeysMaxAge caps a server-sent max-age: a rotated-out key must not
	// stay trusted for longer than a day.
	maxKeysMaxAge = 24 * time.Hour
	// minRefetchInterval limits refetches for an unknown kid, so a stream of
	// tokens with made-up kids cannot turn into a stream of requests.
	minRefetchInterval = 10 * time.Second
	// maxJWKSBytes bounds the key-set response.
	maxJWKSBytes = 1 << 20
	// minRSABits rejects weak keys even if GitLab publishes them.
	minRSABits = 2048
	// cacheVersion is the disk cache format.
	cacheVersion = 1
)

// ErrKeyFetch is wrapped by an *IDTokenError when GitLab's signing keys
// could not be fetched: an infrastructure problem, not a bad token.
var ErrKeyFetch = errors.New("fetching GitLab signing keys")

// keyCacheFile is the disk cache format (and the in-memory copy).
type keyCacheFile struct {
	Version     int             `json:"version"`
	URL         string          `json:"url"`
	FetchedAt   time.Time       `json:"fetched_at"`
	MaxAge      int64           `json:"max_age_seconds"`
	LastRefetch time.Time       `json:"last_refetch,omitzero"`
	Keys        json.RawMessage `json:"keys"`

	set jose.JSONWebKeySet // parsed Keys
}

func (f *keyCacheFile) fresh(now time.Time) bool {
	if f == nil || f.FetchedAt.After(now) {
		return false
	}
	return now.Before(f.FetchedAt.Add(time.Duration(f.MaxAge) * time.Second))
}

// key returns the usable RSA public key with this kid.
func (f *keyCacheFile) key(kid string) *rsa.PublicKey {
	if f == nil {
		return nil
	}
	for _, k := range f.set.Key(kid) {
		if pub, ok := k.Key.(*rsa.PublicKey); ok && k.Valid() && pub.N.BitLen() >= minRSABits &&
			(k.Use == "" || k.Use == "sig") && (k.Algorithm == "" || k.Algorithm == string(jose.RS256)) {
			return pub
		}
	}
	return nil
}

// hasUsableKey reports whether any key of the set could verify a token.
func (f *keyCacheFile) hasUsableKey() bool {
	for _, k := range f.set.Keys {
		if f.key(k.KeyID) != nil {
			return true
		}
	}
	return false
}

func (f *keyCacheFile) parse() error {
	f.set = jose.JSONWebKeySet{}
	if err := json.Unmarshal(f.Keys, &f.set); err != nil {
		return fmt.Errorf("parsing key set: %w", err)
	}
	return nil
}

func (v *GitLabVerifier) keysURL() string {
	return v.GitLabURL + "/oauth/discovery/keys"
}

// signingKey returns the public key for kid, fetching or refetching the
// key set as needed. Callers hold v.mu.
func (v *GitLabVerifier) signingKey(ctx context.Context, kid string) (*rsa.PublicKey, error) {
	now := v.now()
	cur := v.mem
	if !cur.fresh(now) {
		if disk := v.readCache(); disk.fresh(now) {
			cur = disk
		}
	}
	fetchedNow := false
	if !cur.fresh(now) {
		f, err := v.fetchKeys(ctx, now)
		if err != nil {
			return nil, err
		}
		if cur != nil {
			f.LastRefetch = cur.LastRefetch
		}
		cur, fetchedNow = f, true
		v.store(cur)
	}
	v.mem = cur
	if k := cur.key(kid); k != nil {
		return k, nil
	}
	if fetchedNow {
		return nil, unknownKey(kid, "")
	}
	// Unknown kid: GitLab may have rotated keys. Refetch once, but not more
	// than once per minRefetchInterval per cache (another process may have
	// just done so: the disk copy has the latest LastRefetch).
	last := cur.LastRefetch
	if disk := v.readCache(); disk != nil {
		if disk.fresh(now) && disk.FetchedAt.After(cur.FetchedAt) {
			if k := disk.key(kid); k != nil { // another process already refetched
				v.mem = disk
				return k, nil
			}
		}
		if disk.LastRefetch.After(last) {
			last = disk.LastRefetch
		}
	}
	if !last.IsZero() && now.Sub(last) < minRefetchInterval && !last.After(now) {
		return nil, unknownKey(kid, "; keys were refetched less than "+shortDuration(minRefetchInterval)+" ago")
	}
	f, err := v.fetchKeys(ctx, now)
	if err != nil {
		return nil, err
	}
	f.LastRefetch = now
	v.mem = f
	v.store(f)
	if k := f.key(kid); k != nil {
		return k, nil
	}
	return nil, unknownKey(kid, "")
}

func unknownKey(kid, why string) error {
	return &IDTokenError{Reason: fmt.Sprintf("unknown signing key (kid %s)%s", shown(kid), why)}
}

func (v *GitLabVerifier) fetchKeys(ctx context.Context, now time.Time) (*keyCacheFile, error) {
	fail := func(err error) error {
		return &IDTokenError{Reason: "could not fetch GitLab signing keys", Err: fmt.Errorf("%w from %s: %w", ErrKeyFetch, v.keysURL(), err)}
	}
	if v.HTTPClient == nil {
		return nil, fail(errors.New("no HTTP client configured"))
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, v.keysURL(), nil)
	if err != nil {
		return nil, fail(err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := v.HTTPClient.Do(req)
	if err != nil {
		return nil, fail(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxJWKSBytes+1))
	if err != nil {
		return nil, fail(err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fail(fmt.Errorf("HTTP status %d", resp.StatusCode))
	}
	if len(body) > maxJWKSBytes {
		return nil, fail(fmt.Errorf("key set larger than %d bytes", maxJWKSBytes))
	}
	f := &keyCacheFile{
		Version:   cacheVersion,
		URL:       v.keysURL(),
		FetchedAt: now,
		MaxAge:    int64(cacheMaxAge(resp.Header.Get("Cache-Control")) / time.Second),
		Keys:      json.RawMessage(body),
	}
	if err := f.parse(); err != nil {
		return nil, fail(err)
	}
	if !f.hasUsableKey() {
		// No token can verify against this set: GitLab's keys are
		// missing, which no job can fix. Not cached, so the next job
		// fetches again.
		return nil, fail(fmt.Errorf("key set has no usable signing key (RS256, RSA of at least %d bits) among %d keys", minRSABits, len(f.set.Keys)))
	}
	v.logger().Debug("fetched GitLab signing keys", "url", f.URL, "keys", len(f.set.Keys), "max_age", f.MaxAge)
	return f, nil
}

// cacheMaxAge reads max-age from a Cache-Control header: default 1h, capped
// at 24h; no-store/no-cache mean 0 (fetch every time).
func cacheMaxAge(h string) time.Duration {
	return maxAge(h, defaultKeysMaxAge, maxKeysMaxAge)
}

func maxAge(h string, def, limit time.Duration) time.Duration {
	age := def
	for _, d := range strings.Split(h, ",") {
		d = strings.ToLower(strings.TrimSpace(d))
		switch {
		case d == "no-store" || d == "no-cache":
			return 0
		case strings.HasPrefix(d, "max-age="):
			n, err := strconv.ParseInt(strings.Trim(strings.TrimPrefix(d, "max-age="), `"`), 10, 64)
			if err != nil || n < 0 {
				continue
			}
			if n > int64(limit/time.Second) {
				n = int64(limit / time.Second)
			}
			age = time.Duration(n) * time.Second
		}
	}
	return age
}

// cachePath names the cache file after the key-set URL, so one directory
// can serve several GitLab instances.
func (v *GitLabVerifier) cachePath() string {
	sum := sha256.Sum256([]byte(v.keysURL()))
	return filepath.Join(v.CacheDir, "gitlab-jwks-"+hex.EncodeToString(sum[:8])+".json")
}

func (v *GitLabVerifier) cache() *PrivateCache {
	return &PrivateCache{Dir: v.CacheDir, What: "GitLab key cache", Logger: v.logger()}
}

// readCache returns the disk copy, or nil when there is none or it cannot
// be trusted (see PrivateCache).
func (v *GitLabVerifier) readCache() *keyCacheFile {
	data := v.cache().Read(filepath.Base(v.cachePath()), 2*maxJWKSBytes)
	if data == nil {
		return nil
	}
	var f keyCacheFile
	if err := json.Unmarshal(data, &f); err != nil || f.Version != cacheVersion || f.URL != v.keysURL() || f.parse() != nil {
		v.logger().Warn("ignoring an unreadable GitLab key cache", "path", v.cachePath())
		return nil
	}
	return &f
}

// store writes the cache atomically (temp file, fsync, rename). Failures
// are logged, not returned: the cache is an optimisation.
func (v *GitLabVerifier) store(f *keyCacheFile) {
	data, err := json.Marshal(f)
	if err != nil {
		return
	}
	v.cache().Write(filepath.Base(v.cachePath()), data)
}

func writeFileAtomic(dir, path string, f *keyCacheFile) error {
	data, err := json.Marshal(f)
	if err != nil {
		return err
	}
	return writePrivate(dir, path, data)
}
