package executor

// IdentitySettings configure the per-job Okta identity. Filled in by the
// identity work; an empty section means jobs run without an identity.
type IdentitySettings struct{}

func (o *IdentitySettings) applyDefaults() {}

func (o *IdentitySettings) validate(devMode bool) error { return nil }
