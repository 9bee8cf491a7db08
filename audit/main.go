package audit

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"strings"
	"time"
)

const usage = `usage: gateway audit URL [--token T] [--origin O] [--json] [--timeout 30s]
                     [--auth-deadline 30s] [--cacert FILE]

Probes the MCP WebSocket endpoint at URL (ws:// or wss://) for the common
transport failures and grades it from A to F. Exit 0 for grade A or B,
1 otherwise, 2 on a usage error. See audit/README.md for the checks and the
rubric.
`

// Options configure one audit run.
type Options struct {
	URL          string
	Token        string        // credential for the checks that need one; never printed
	Origin       string        // Origin sent by the legitimate probes (empty: none)
	Timeout      time.Duration // bound of each probe
	AuthDeadline time.Duration // an idle unauthenticated connection must be closed within this
	RootCAs      *x509.CertPool
	Progress     io.Writer // one line per check as it starts; nil for none
}

// Main runs `gateway audit` with args (after the command name).
func Main(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("audit", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {} // --help prints it to stdout below; errors name the flag
	var opt Options
	var asJSON bool
	var caFile string
	fs.StringVar(&opt.Token, "token", "", "token for the checks that need an authenticated connection")
	fs.StringVar(&opt.Origin, "origin", "", "an allowed Origin to send on the legitimate probes")
	fs.BoolVar(&asJSON, "json", false, "print machine-readable results")
	fs.DurationVar(&opt.Timeout, "timeout", 30*time.Second, "bound of each probe")
	fs.DurationVar(&opt.AuthDeadline, "auth-deadline", 30*time.Second, "an unauthenticated idle connection must be closed within this")
	fs.StringVar(&caFile, "cacert", "", "PEM file of extra CA certificates to trust (private CAs)")

	// Accept flags before and after the URL, as operators type them.
	var pos []string
	rest := args
	for {
		if err := fs.Parse(rest); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				fmt.Fprint(stdout, usage)
				fs.SetOutput(stdout)
				fs.PrintDefaults()
				return 0
			}
			return 2
		}
		if fs.NArg() == 0 {
			break
		}
		pos = append(pos, fs.Arg(0))
		rest = fs.Args()[1:]
	}
	if len(pos) != 1 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	opt.URL = pos[0]
	if opt.Timeout <= 0 || opt.AuthDeadline <= 0 {
		fmt.Fprintln(stderr, "gateway audit: --timeout and --auth-deadline must be positive")
		return 2
	}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			fmt.Fprintf(stderr, "gateway audit: --cacert: %v\n", err)
			return 2
		}
		opt.RootCAs, _ = x509.SystemCertPool()
		if opt.RootCAs == nil {
			opt.RootCAs = x509.NewCertPool()
		}
		if !opt.RootCAs.AppendCertsFromPEM(pem) {
			fmt.Fprintf(stderr, "gateway audit: --cacert: no certificate in %s\n", caFile)
			return 2
		}
	}
	if isTerminal(stderr) {
		opt.Progress = stderr
	}
	rep, err := Run(context.Background(), opt)
	if err != nil {
		fmt.Fprintf(stderr, "gateway audit: %v\n", err)
		return 2
	}
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(rep)
	} else {
		rep.WriteTable(stdout)
	}
	if rep.Grade == "A" || rep.Grade == "B" {
		return 0
	}
	return 1
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// parseTarget validates the URL: ws or wss, a host, no user info.
func parseTarget(raw string) (*url.URL, string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, "", fmt.Errorf("bad URL: %v", err)
	}
	switch u.Scheme {
	case "ws", "wss":
	default:
		return nil, "", fmt.Errorf("URL scheme must be ws or wss, not %q", u.Scheme)
	}
	if u.Hostname() == "" {
		return nil, "", errors.New("URL has no host")
	}
	if u.User != nil {
		return nil, "", errors.New("URL must not carry user info; use --token")
	}
	if u.Fragment != "" {
		return nil, "", errors.New("URL must not carry a #fragment")
	}
	if u.Path == "" {
		u.Path = "/"
	}
	port := u.Port()
	if port == "" {
		port = "80"
		if u.Scheme == "wss" {
			port = "443"
		}
	}
	return u, net.JoinHostPort(u.Hostname(), port), nil
}

// isLoopback reports whether every address of host is a loopback address.
func isLoopback(ctx context.Context, host string) bool {
	if strings.EqualFold(host, "localhost") || strings.HasSuffix(strings.ToLower(host), ".localhost") {
		return true
	}
	if ip := net.ParseIP(host); ip != nil {
		return ip.IsLoopback()
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	addrs, err := net.DefaultResolver.LookupIPAddr(ctx, host)
	if err != nil || len(addrs) == 0 {
		return false
	}
	for _, a := range addrs {
		if !a.IP.IsLoopback() {
			return false
		}
	}
	return true
}

// WriteTable prints the report for people.
func (r *Report) WriteTable(w io.Writer) {
	fmt.Fprintf(w, "gateway audit %s\n", r.URL)
	fmt.Fprintf(w, "target %s (%s), auth mode: %s\n", r.Target, map[bool]string{true: "loopback", false: "network"}[r.Loopback], r.AuthMode)
	for _, e := range r.AuthEvidence {
		if e.Sent != "" {
			fmt.Fprintf(w, "  > %s\n", e.Sent)
		}
		if e.Received != "" {
			fmt.Fprintf(w, "  < %s\n", e.Received)
		}
	}
	fmt.Fprintln(w)
	width := len("CHECK")
	for _, c := range r.Checks {
		width = max(width, len(c.ID))
	}
	fmt.Fprintf(w, "%-*s  %-6s  %s\n", width, "CHECK", "RESULT", "SUMMARY")
	for _, c := range r.Checks {
		fmt.Fprintf(w, "%-*s  %-6s  %s\n", width, c.ID, strings.ToUpper(string(c.Status)), c.Summary)
		for _, e := range c.Evidence {
			if e.Sent != "" {
				fmt.Fprintf(w, "%-*s    > %s\n", width, "", e.Sent)
			}
			if e.Received != "" {
				fmt.Fprintf(w, "%-*s    < %s\n", width, "", e.Received)
			}
		}
	}
	fmt.Fprintf(w, "\nGrade: %s\n", r.Grade)
	for _, why := range r.GradeReasons {
		fmt.Fprintf(w, "  - %s\n", why)
	}
	fmt.Fprintf(w, "\n%d connections (at most %d at once), %d bytes sent, %d received, %s\n",
		r.Stats.Connections, r.Stats.MaxConcurrent, r.Stats.BytesSent, r.Stats.BytesReceived, dur(time.Duration(r.DurationMS)*time.Millisecond))
}
