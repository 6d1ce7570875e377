package fakeokta

import "crypto/rand"

// DPoPNonce returns the nonce the authorization server currently demands
// in DPoP proofs at /v1/token. It panics if the server does not exist.
func (s *Server) DPoPNonce(authServerID string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mustAuthServer(authServerID).dpopNonce
}

// RotateDPoPNonce replaces the authorization server's DPoP nonce, as Okta
// does from time to time, and returns the new one: proofs carrying the old
// nonce then get use_dpop_nonce with the new one. It panics if the server
// does not exist.
func (s *Server) RotateDPoPNonce(authServerID string) string {
	n := rand.Text()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.mustAuthServer(authServerID).dpopNonce = n
	return n
}
