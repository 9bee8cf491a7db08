// Command gateway is the secure WebSocket front door for MCP servers.
//
//	gateway serve [-c FILE]                      run (no file: the safe embedded default)
//	gateway check -c FILE                        validate a config, print it redacted
//	gateway token -c FILE --sub NAME [--ttl 1h]  mint an HS256 JWT from the configured secret
//	gateway audit URL [--token T] [--json]       grade any MCP WebSocket endpoint's security
//	gateway bench [flags]                        the load generator
//	gateway version                              version, revision, Go version
//
// Every command takes --help (its usage on stdout, exit 0).
//
// Exit codes: 0 ok, 1 runtime failure, 2 usage or config error.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/mcpgate/gateway/audit"
	"github.com/mcpgate/gateway/auth"
	"github.com/mcpgate/gateway/bench"
	"github.com/mcpgate/gateway/config"
)

const usage = `usage:
  gateway serve [-c FILE] [-log-format text|json] [-log-level info]
  gateway check -c FILE
  gateway token -c FILE --sub NAME [--ttl 1h]
  gateway audit URL [--token T] [--origin O] [--json]
  gateway bench [flags]      (gateway bench -h)
  gateway version
Each command takes --help.
`

// exitError carries an exit code up to main.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }

func usageErr(format string, a ...any) error {
	return &exitError{2, fmt.Errorf(format, a...)}
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "serve":
		err = cmdServe(args[1:], stdout, stderr)
	case "check":
		err = cmdCheck(args[1:], stdout)
	case "token":
		err = cmdToken(args[1:], stdout)
	case "audit":
		return audit.Main(args[1:], stdout, stderr)
	case "bench":
		return bench.Main(args[1:], stdout, stderr)
	case "version", "--version", "-version":
		err = cmdVersion(args[1:], stdout)
	case "-h", "--help", "help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "gateway: unknown command %q\n%s", args[0], usage)
		return 2
	}
	if err == nil {
		return 0
	}
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	fmt.Fprintf(stderr, "gateway: %v\n", err)
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	var ce *config.Error
	if errors.As(err, &ce) {
		return 2
	}
	return 1
}

func newFlags(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return fs
}

// commandUsage is each command's first usage line.
var commandUsage = map[string]string{
	"serve":   "gateway serve [-c FILE] [-log-format text|json] [-log-level info]\n\nRuns the gateway; without -c, on the embedded default (loopback, the builtin demo server, a token printed once).\nSIGTERM or SIGINT drains it (drain_timeout).",
	"check":   "gateway check -c FILE\n\nValidates a config file and the files it names, and prints the effective config with secrets redacted.\nExit 2 on any error, including a GATEWAY_* variable that names no setting.",
	"token":   "gateway token -c FILE --sub NAME [--ttl 1h]\n\nMints an HS256 JWT with the config's auth.jwt secret, issuer and audience.",
	"version": "gateway version\n\nPrints the version, the source revision and the Go version.",
}

// parseFlags parses a command's flags. --help prints the command's usage
// and flags to stdout and ends it with exit 0 (flag.ErrHelp).
func parseFlags(fs *flag.FlagSet, args []string, stdout io.Writer) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprintf(stdout, "usage: %s\n", commandUsage[fs.Name()])
			has := false
			fs.VisitAll(func(*flag.Flag) { has = true })
			if has {
				fmt.Fprintln(stdout, "\nflags:")
				fs.SetOutput(stdout)
				fs.PrintDefaults()
			}
			return err
		}
		return usageErr("%s: %v", fs.Name(), err)
	}
	if fs.NArg() > 0 {
		return usageErr("%s: unexpected argument %q", fs.Name(), fs.Arg(0))
	}
	return nil
}

// loadConfig reads a config file; any problem is a config error (exit 2).
func loadConfig(path string) (*config.Config, error) {
	cfg, err := config.Load(path)
	if err != nil {
		return nil, &exitError{2, err}
	}
	return cfg, nil
}

func cmdCheck(args []string, stdout io.Writer) error {
	fs := newFlags("check")
	path := fs.String("c", "", "config file")
	if err := parseFlags(fs, args, stdout); err != nil {
		return err
	}
	if *path == "" {
		return usageErr("check: -c FILE is required")
	}
	cfg, err := loadConfig(*path)
	if err != nil {
		return err
	}
	if unknown := config.UnknownEnv(os.Environ()); len(unknown) > 0 {
		// serve only warns (a stray variable must not stop a restart);
		// check is where a typo is caught before it matters.
		return &exitError{2, fmt.Errorf("check: %s: no such setting (a variable is GATEWAY_ and the setting's YAML path, upper-cased, '_' for '.': GATEWAY_LIMITS_MAX_MESSAGE_BYTES)",
			strings.Join(unknown, ", "))}
	}
	// Loading the credentials proves the files are usable, not just present.
	if _, err := auth.New(cfg.Auth); err != nil {
		return &exitError{2, err}
	}
	_, err = stdout.Write(cfg.Redacted())
	return err
}

func cmdToken(args []string, stdout io.Writer) error {
	fs := newFlags("token")
	path := fs.String("c", "", "config file")
	sub := fs.String("sub", "", "subject (principal) the token names")
	ttl := fs.Duration("ttl", time.Hour, "lifetime")
	if err := parseFlags(fs, args, stdout); err != nil {
		return err
	}
	if *path == "" || *sub == "" {
		return usageErr("token: -c FILE and --sub NAME are required")
	}
	if *ttl <= 0 {
		return usageErr("token: --ttl must be positive")
	}
	cfg, err := loadConfig(*path)
	if err != nil {
		return err
	}
	if cfg.Auth.JWT.HS256SecretFile == "" {
		return usageErr("token: auth.jwt.hs256_secret_file is not configured")
	}
	secret, err := auth.LoadHS256Secret(cfg.Auth.JWT.HS256SecretFile)
	if err != nil {
		return &exitError{2, err}
	}
	tok, err := auth.MintHS256(secret, *sub, *ttl, cfg.Auth.JWT.Issuer, cfg.Auth.JWT.Audience)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(stdout, tok)
	return err
}
