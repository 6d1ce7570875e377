package identity

import "fmt"

// UnconfirmedIssueError reports a token request that reached the
// authorization server in full but got no answer: the client timed out, or
// the connection broke after the request was written. The server may have
// issued a token that nobody holds; it dies at its exp, and revoking it
// would need the token itself. A Provider never retries such a request
// blindly (each retry could leave one more such token), so there is at most
// one per call. AssertionJTI, the jti of the request's client assertion,
// finds the attempt in the server's log (Okta's System Log).
type UnconfirmedIssueError struct {
	Issuer       string
	ClientID     string
	AssertionJTI string
	Err          error
}

func (e *UnconfirmedIssueError) Error() string {
	return fmt.Sprintf("token request to %s may have been served but got no answer (client %s, assertion jti %s): %v",
		e.Issuer, e.ClientID, e.AssertionJTI, e.Err)
}

func (e *UnconfirmedIssueError) Unwrap() error { return e.Err }
