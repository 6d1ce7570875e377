package executor

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/BurntSushi/toml"
)

// LoadPolicySettings reads a settings file for policy work only (`policy
// explain`, `policy test`): decoded and defaulted like LoadSettings, but only
// the [policy] section and unknown keys are validated. Key files are not
// read, so a policy repository's CI can test the policy without the
// runner's secrets. Stages always use LoadSettings.
func LoadPolicySettings(file string) (*Settings, error) {
	s, problems, err := decodeSettings(file)
	if err != nil {
		return nil, err
	}
	if err := s.Policy.Validate(); err != nil {
		problems = append(problems, err)
	}
	if len(s.Policy.Rules) == 0 {
		problems = append(problems, errors.New("policy: at least one [[policy.rules]] is required (default deny)"))
	}
	if err := errors.Join(problems...); err != nil {
		return nil, fmt.Errorf("invalid policy in %s: %w", file, err)
	}
	return s, nil
}

// decodeSettings reads and defaults the settings file; unknown keys are the
// first problem. The error is for a file that cannot be read or parsed.
func decodeSettings(file string) (*Settings, []error, error) {
	s := &Settings{path: file}
	raw, err := os.ReadFile(file)
	if err != nil {
		return nil, nil, fmt.Errorf("reading settings %s: %w", file, err)
	}
	sum := sha256.Sum256(raw)
	s.digest = hex.EncodeToString(sum[:])
	md, err := toml.Decode(string(raw), s)
	if err != nil {
		return nil, nil, fmt.Errorf("reading settings %s: %w", file, err)
	}
	var problems []error
	if undecoded := md.Undecoded(); len(undecoded) > 0 {
		keys := make([]string, len(undecoded))
		for i, k := range undecoded {
			keys[i] = k.String()
		}
		problems = append(problems, fmt.Errorf("unknown settings: %s", strings.Join(keys, ", ")))
	}
	s.applyDefaults()
	return s, problems, nil
}
