package incident

import (
	"os"
	"os/user"
	"strconv"
)

// Operator is who ran a kill-switch command: the OS user of the process
// and, when it runs under sudo, the user who invoked sudo.
type Operator struct {
	User     string `json:"user"`
	SudoUser string `json:"sudo_user,omitempty"`
}

// CurrentOperator reads the process's user and SUDO_USER. The user name
// falls back to the numeric uid when the user database has no entry.
func CurrentOperator(getenv func(string) string) Operator {
	op := Operator{User: "uid " + strconv.Itoa(os.Getuid()), SudoUser: getenv("SUDO_USER")}
	if u, err := user.Current(); err == nil && u.Username != "" {
		op.User = u.Username
	}
	return op
}

// String is "alice", or "root (sudo by alice)".
func (o Operator) String() string {
	if o.SudoUser != "" && o.SudoUser != o.User {
		return o.User + " (sudo by " + o.SudoUser + ")"
	}
	return o.User
}
