package okta

import (
	"context"
	"net/http"
	"net/url"
	"strings"
)

// Budget paces the client's requests against Okta's rate limits, across
// every process of the host (identity/okta/budget implements it). Wait is
// called before each attempt with the attempt's rate-limit bucket and
// returns when the request may go; release is called once its answer has
// been read. Observe is given every answer's status and headers.
type Budget interface {
	Wait(ctx context.Context, bucket string) (release func(), err error)
	Observe(bucket string, status int, header http.Header)
}

// noBudget lets every request go at once.
type noBudget struct{}

func (noBudget) Wait(context.Context, string) (func(), error) { return func() {}, nil }
func (noBudget) Observe(string, int, http.Header)             {}

// rateBucket names the rate-limit bucket an endpoint counts against: Okta
// counts /oauth2/{authServerId}/v1/* of every custom authorization server
// of the org in one bucket, and the org server's /oauth2/v1/* in another.
// Any other URL is its own bucket.
func rateBucket(endpoint string) string {
	u, err := url.Parse(endpoint)
	if err != nil {
		return endpoint
	}
	p := u.Path
	if rest, ok := strings.CutPrefix(p, "/oauth2/"); ok {
		id, suffix, _ := strings.Cut(rest, "/")
		switch {
		case id == "v1":
			p = "/oauth2/v1"
		case strings.HasPrefix(suffix, "v1/"):
			p = "/oauth2/{authServerId}/v1"
		}
	}
	return u.Scheme + "://" + u.Host + p
}
