package incident

import (
	"fmt"
	"time"
)

// Revocation is the marker `revoke` leaves in a job's state: the run stage
// stops the job's script when it appears, and no stage gives the job a
// token again.
type Revocation struct {
	By       Operator  `json:"by"`
	At       time.Time `json:"at"`
	Reason   string    `json:"reason"`
	Selector Selector  `json:"selector"`
}

// RevokedError is a job whose credentials the operator revoked: a build
// failure whose one line says who, when and why.
type RevokedError struct {
	Revocation Revocation
}

func (e *RevokedError) Error() string {
	r := e.Revocation
	line := fmt.Sprintf("credentials revoked by %s at %s", r.By, r.At.UTC().Format(time.RFC3339))
	if r.Reason != "" {
		line += ": " + r.Reason
	}
	return line
}
