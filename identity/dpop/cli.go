package dpop

import (
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"
)

// Environment variables the executor sets in a dpop-mode job, naming files
// on the job's tmpfs. They are the defaults of dpop-proof's --key-file and
// --token-file.
const (
	EnvKeyFile   = "OKTA_DPOP_KEY_FILE"
	EnvTokenFile = "OKTA_ACCESS_TOKEN_FILE"
)

// maxFileBytes bounds what dpop-proof reads from the key and token files: a
// PEM P-256 key is about 250 bytes and an Okta access token a few KiB.
const maxFileBytes = 64 << 10

// Exit codes of ProofCommand.
const (
	exitOK    = 0
	exitError = 1 // the proof could not be made: unreadable or invalid key or token
	exitUsage = 2 // bad flags, as the flag package uses
)

// ProofCommand runs the dpop-proof subcommand inside a job container and
// returns its exit code:
//
//	dpop-proof --url URL [--method GET] [--nonce N] [--key-file F] [--token-file F]
//
// It prints one proof JWT for a request with that method and URL, signed
// with the job's DPoP key and carrying ath for the job's access token, on a
// line of its own. --key-file defaults to $OKTA_DPOP_KEY_FILE and
// --token-file to $OKTA_ACCESS_TOKEN_FILE; both files are read on every call,
// so a refreshed token is picked up. --method is upper-cased, as HTTP
// clients send the standard methods. --nonce is the DPoP-Nonce a resource
// server asked for, if any. Errors go to stderr and never contain the key
// or the token; the exit code is 0 on success, 2 for usage errors and 1
// otherwise. See the package documentation for a curl example.
func ProofCommand(args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	return proofCommand(args, stdout, stderr, getenv, time.Now)
}

func proofCommand(args []string, stdout, stderr io.Writer, getenv func(string) string, now func() time.Time) int {
	fs := flag.NewFlagSet("dpop-proof", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: dpop-proof --url URL [--method GET] [--nonce N] [--key-file F] [--token-file F]")
		fmt.Fprintln(stderr, "prints a DPoP proof (RFC 9449) for one request; use it as the DPoP header next to")
		fmt.Fprintln(stderr, `"Authorization: DPoP <token>". Make a new proof for every request.`)
		fs.PrintDefaults()
	}
	method := fs.String("method", "GET", "HTTP method of the request")
	rawURL := fs.String("url", "", "URL the request is sent to (required)")
	nonce := fs.String("nonce", "", "DPoP-Nonce the server asked for, if any")
	keyFile := fs.String("key-file", getenv(EnvKeyFile), "PEM file of the job's DPoP key (env "+EnvKeyFile+")")
	tokenFile := fs.String("token-file", getenv(EnvTokenFile), "file holding the job's access token (env "+EnvTokenFile+")")
	if err := fs.Parse(args); err != nil {
		// The flag package has printed the problem (or the help) and the usage.
		return exitUsage
	}
	var problems []string
	if fs.NArg() > 0 {
		problems = append(problems, fmt.Sprintf("unexpected arguments %q", fs.Args()))
	}
	if *rawURL == "" {
		problems = append(problems, "--url is required")
	}
	if *keyFile == "" {
		problems = append(problems, "no key file: set --key-file or "+EnvKeyFile+" (is this a dpop-mode job?)")
	}
	if *tokenFile == "" {
		problems = append(problems, "no access token file: set --token-file or "+EnvTokenFile)
	}
	if len(problems) > 0 {
		for _, p := range problems {
			fmt.Fprintln(stderr, "dpop-proof:", p)
		}
		return exitUsage
	}

	proof, err := makeProof(strings.ToUpper(*method), *rawURL, *nonce, *keyFile, *tokenFile, now())
	if err != nil {
		fmt.Fprintln(stderr, "dpop-proof:", err)
		return exitError
	}
	if _, err := fmt.Fprintln(stdout, proof); err != nil {
		fmt.Fprintln(stderr, "dpop-proof: write proof:", err)
		return exitError
	}
	return exitOK
}

func makeProof(method, rawURL, nonce, keyFile, tokenFile string, now time.Time) (string, error) {
	pemBytes, err := readSmallFile(keyFile)
	if err != nil {
		return "", fmt.Errorf("read key file: %w", err)
	}
	key, err := ParseKey(pemBytes)
	if err != nil {
		return "", fmt.Errorf("key file %s: %w", keyFile, err)
	}
	raw, err := readSmallFile(tokenFile)
	if err != nil {
		return "", fmt.Errorf("read access token file: %w", err)
	}
	token := strings.TrimSpace(string(raw))
	if token == "" {
		return "", fmt.Errorf("access token file %s is empty", tokenFile)
	}
	if strings.ContainsFunc(token, isSpaceOrControl) {
		return "", fmt.Errorf("access token file %s does not hold a single token", tokenFile)
	}
	return key.Proof(method, rawURL, nonce, token, now)
}

// readSmallFile reads a whole file of at most maxFileBytes. Its errors name
// the path, never the content.
func readSmallFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxFileBytes+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(b) > maxFileBytes {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, maxFileBytes)
	}
	return b, nil
}
