package identity

import (
	"encoding/json"
	"fmt"
	"time"
)

// LedgerSecret is a credential value the job's ledger keeps: an access
// token, a DPoP proof key, a job app's private key. Like Secret, every fmt
// verb (%v, %+v, %#v, %s, %q, %x...) prints a redaction marker; unlike
// Secret it encodes its value to JSON, because the executor's 0600 state
// file is the one place it must be written (revocation needs the token,
// the next stage process needs the key). Only executor's StateStore
// encodes the structs that hold it.
type LedgerSecret string

// String implements fmt.Stringer.
func (LedgerSecret) String() string { return redacted }

// GoString implements fmt.GoStringer (%#v).
func (LedgerSecret) GoString() string { return redacted }

// Format implements fmt.Formatter, so no verb prints the value.
func (LedgerSecret) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(redacted)) }

// MarshalJSON writes the value: the state file is the ledger.
func (s LedgerSecret) MarshalJSON() ([]byte, error) { return json.Marshal(string(s)) }

// Reveal returns the value.
func (s LedgerSecret) Reveal() string { return string(s) }

// Secret is the value as a Secret, for a Provider call.
func (s LedgerSecret) Secret() Secret { return Secret(s) }

// Credential is one credential a job was granted and its ledger: what the
// policy decided (rule, mode, issuer, scopes, lifetime), what was made for
// it (a DPoP key, a job app) and every token issued for it, oldest first.
// Today's rules grant one unnamed credential (Name ""); the state holds a
// list so a rule can grant several.
type Credential struct {
	// Name is "" for a rule's single unnamed credential.
	Name     string   `json:"name,omitempty"`
	Rule     string   `json:"rule"`
	Mode     string   `json:"mode"`
	Issuer   string   `json:"issuer"`
	Scopes   []string `json:"scopes"`
	Lifetime int64    `json:"lifetime_seconds"`
	// RequestedScopes are what the job asked for (nil: its whole grant).
	RequestedScopes []string `json:"requested_scopes,omitempty"`
	// Steps and Rotate are the grant's step rules (CredentialGrant).
	Steps  []string `json:"steps,omitempty"`
	Rotate string   `json:"rotate,omitempty"`
	// DPoPKey is the PEM of the job's DPoP proof key (dpop mode only).
	DPoPKey LedgerSecret `json:"dpop_key,omitempty"`
	// App is the job's own Okta service app (app mode only): the policy's
	// decision (server, access policy, delivery) from Authorize, the app
	// itself once Issue created it.
	App *AppCredential `json:"app,omitempty"`
	// RefreshAdjusted records that the job log and the audit log were told
	// the refresh margin had to be adjusted to the lifetime Okta returns,
	// so they are told once per credential.
	RefreshAdjusted bool `json:"refresh_adjusted,omitempty"`
	// Tokens lists every token issued for the credential, oldest first.
	Tokens []LedgerEntry `json:"tokens"`
}

// AppCredential is a job's Okta service app (app mode).
type AppCredential struct {
	ID       string `json:"id,omitempty"`
	ClientID string `json:"client_id,omitempty"`
	Name     string `json:"name,omitempty"`
	KeyID    string `json:"key_id,omitempty"`
	// KeyPEM is the app's private key (PKCS#8): the job's tokens are
	// minted and revoked as the app.
	KeyPEM     LedgerSecret `json:"key_pem,omitempty"`
	AuthServer string       `json:"auth_server"`
	Policy     string       `json:"policy"`
	Deliver    string       `json:"deliver"`
	// Slot is the app-mode slot file this job holds.
	Slot    string `json:"slot,omitempty"`
	Deleted bool   `json:"deleted,omitempty"`
}

// LedgerEntry is one issued token.
type LedgerEntry struct {
	// Token is the access token itself: revocation (RFC 7009) needs it.
	Token     LedgerSecret `json:"token"`
	Issuer    string       `json:"issuer"`
	JTI       string       `json:"jti"`
	ClientID  string       `json:"client_id"`
	IssuedAt  time.Time    `json:"issued_at"`
	ExpiresAt time.Time    `json:"expires_at"`
	RequestID string       `json:"request_id"`
	Revoked   bool         `json:"revoked"`
	// RefreshAt is when the token is to be replaced (planned at issuance).
	RefreshAt time.Time `json:"refresh_at,omitzero"`
	// Step is the sub-stage the token was first delivered to ("" before
	// any): a credential rotated each step gets a fresh token in the next.
	Step string `json:"step,omitempty"`
}

// Current returns the newest unrevoked token, or nil.
func (c *Credential) Current() *LedgerEntry {
	if c == nil {
		return nil
	}
	for i := len(c.Tokens) - 1; i >= 0; i-- {
		if !c.Tokens[i].Revoked {
			return &c.Tokens[i]
		}
	}
	return nil
}

// Live counts the credential's unrevoked tokens.
func (c *Credential) Live() int {
	n := 0
	for _, t := range c.Tokens {
		if !t.Revoked {
			n++
		}
	}
	return n
}

// PresentIn reports whether the credential's file and variables exist in
// the run sub-stage subStage (identity.CredentialGrant.PresentIn).
func (c *Credential) PresentIn(subStage string) bool {
	return CredentialGrant{Name: c.Name, Steps: c.Steps}.PresentIn(subStage)
}

// RotatesEachStep reports rotate = "each_step".
func (c *Credential) RotatesEachStep() bool { return c.Rotate == RotateEachStep }

// Why a credential needs a new token for a sub-stage (Credential.Due).
const (
	NotDue = iota
	// DueExpiry: the current token is close to expiry.
	DueExpiry
	// DueRotation: rotated each step, the current token served another
	// sub-stage; this one gets a fresh token.
	DueRotation
	// DueAdopt: rotated each step, and the current token (issued at
	// prepare) was never delivered: it becomes this sub-stage's.
	DueAdopt
)

// Due says whether the credential needs a new token in the run sub-stage
// at now, with the settings' refresh margin (for tokens of a ledger
// written before refresh times were recorded), for a caller looking within
// ahead and never sooner than floor after issuance (LedgerEntry.
// RefreshPoint). A credential absent from the sub-stage is never due there.
func (c *Credential) Due(subStage string, now time.Time, margin, within, floor time.Duration) int {
	cur := c.Current()
	if cur == nil || !c.PresentIn(subStage) {
		return NotDue
	}
	if c.RotatesEachStep() && cur.Step != subStage {
		if cur.Step == "" {
			return DueAdopt
		}
		return DueRotation
	}
	if !now.Before(cur.RefreshPoint(margin, within, floor)) {
		return DueExpiry
	}
	return NotDue
}

// NextRefresh is when the credential's current token is due for refresh
// by a caller looking within ahead (see Due), false without one or when
// the credential is absent from the sub-stage.
func (c *Credential) NextRefresh(subStage string, margin, within, floor time.Duration) (time.Time, bool) {
	cur := c.Current()
	if cur == nil || !c.PresentIn(subStage) {
		return time.Time{}, false
	}
	return cur.RefreshPoint(margin, within, floor), true
}

// RefreshDue is when the token is to be refreshed: its planned time, or for
// a ledger written before plans were recorded, expiry minus margin.
func (e *LedgerEntry) RefreshDue(margin time.Duration) time.Time {
	if !e.RefreshAt.IsZero() {
		return e.RefreshAt
	}
	return e.ExpiresAt.Add(-margin)
}

// Format implements fmt.Formatter: every verb prints the credential with
// its secrets redacted. fmt prints a struct's fields without their own
// methods when a verb does not suit a field (%s of an int, %q of a
// pointer), so the structs holding secrets format themselves.
func (c Credential) Format(f fmt.State, _ rune) {
	fmt.Fprintf(f, "{Name:%v Rule:%v Mode:%v Issuer:%v Scopes:%v Lifetime:%v RequestedScopes:%v Steps:%v Rotate:%v DPoPKey:%v App:%v RefreshAdjusted:%v Tokens:%v}",
		c.Name, c.Rule, c.Mode, c.Issuer, c.Scopes, c.Lifetime, c.RequestedScopes, c.Steps, c.Rotate, c.DPoPKey, c.App, c.RefreshAdjusted, c.Tokens)
}

// Format implements fmt.Formatter with the key redacted.
func (a AppCredential) Format(f fmt.State, _ rune) {
	fmt.Fprintf(f, "{ID:%v ClientID:%v Name:%v KeyID:%v KeyPEM:%v AuthServer:%v Policy:%v Deliver:%v Slot:%v Deleted:%v}",
		a.ID, a.ClientID, a.Name, a.KeyID, a.KeyPEM, a.AuthServer, a.Policy, a.Deliver, a.Slot, a.Deleted)
}

// Format implements fmt.Formatter with the token redacted.
func (e LedgerEntry) Format(f fmt.State, _ rune) {
	fmt.Fprintf(f, "{Token:%v Issuer:%v JTI:%v ClientID:%v IssuedAt:%v ExpiresAt:%v RequestID:%v Revoked:%v RefreshAt:%v Step:%v}",
		e.Token, e.Issuer, e.JTI, e.ClientID, e.IssuedAt, e.ExpiresAt, e.RequestID, e.Revoked, e.RefreshAt, e.Step)
}
