package preflight

// FailedError reports that a preflight command ran to the end and found
// failures, which it has already printed; main exits 1 on it (2 means the
// command itself could not run).
type FailedError struct {
	// Summary is the one-line count ("2 problems", "1 case failed").
	Summary string
}

func (e *FailedError) Error() string { return e.Summary }
