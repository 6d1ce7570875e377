package fakeokta

// Admin roles. In Okta a service app calling the management API needs both
// the okta.* scopes granted to it (checked at the org token endpoint) and an
// admin role assigned to it: without the role the token is still issued
// with the granted scopes, but every /api/v1 call answers 403 E0000006 "You
// do not have permission to perform the requested action". Clients have a
// role by default here, so existing tests need no setup.

// RemoveAdminRole takes every admin role away from a client.
func (s *Server) RemoveAdminRole(clientID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.mgmt.noRole == nil {
		s.mgmt.noRole = map[string]bool{}
	}
	s.mgmt.noRole[clientID] = true
}

func (s *Server) hasAdminRole(clientID string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return !s.mgmt.noRole[clientID]
}
