// Command suite holds the helpers of `make bench` (bench/suite/run.sh) that a
// shell script cannot do well:
//
//	suite sockwatch -pid P[,P...] -out FILE [-interval 100ms] [-max 5m]
//	    follow the server's sockets (by inode) and RSS until SIGTERM: socket
//	    lifetimes (accept to close) and the RSS at the peak connection count
//	suite midhold -pid P[,P...] [-min N] [-after 8s] [-signal none|USR2] [-out FILE]
//	    wait until the servers' descriptor count stops growing, wait -after,
//	    record each process's share of the connections, and optionally send
//	    SIGUSR2 (the Node peers run a full GC on it; bench/peers)
//	suite bigframe -url URL -token-file F -pid P -out FILE [-conns 500] [-payload 65536]
//	    authenticated connections each send a frame header declaring 2 GiB,
//	    then some payload: what the server buffers, and how it closes
//	suite stdiofloor -script EVERYTHING_JS -out FILE [-pin "taskset -c 1"] [-calls 50000] [-runs 1] [-prof-dir DIR]
//	    the stdio worker alone: server-everything's CPU per echo call with no
//	    relay in front (initialize, then N calls written at once), and with
//	    -prof-dir its top functions by self time under node --cpu-prof
//	suite report -dir RESULTS -meta META.json -md FILE.md -html FILE.html
//	    the results table (Markdown) and one self-contained HTML report
//	suite tlsreport -dir RESULTS -meta META -md FILE.md
//	    the TLS speed report of bench/scripts/tls.sh: the gateway next to
//	    net/http (bench/tlsref), round by round, with a verdict per target
//	suite tlsprobe -addr 127.0.0.1:PORT
//	    one TLS connection as gateway bench makes it: what was negotiated
//
// Every helper is bounded in time and touches only loopback targets and the
// PIDs it is given.
package main

import (
	"fmt"
	"os"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: suite sockwatch|midhold|bigframe|stdiofloor|report|tlsreport|tlsprobe [flags]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "sockwatch":
		err = cmdSockwatch(os.Args[2:])
	case "midhold":
		err = cmdMidhold(os.Args[2:])
	case "bigframe":
		err = cmdBigframe(os.Args[2:])
	case "stdiofloor":
		err = cmdStdioFloor(os.Args[2:])
	case "report":
		err = cmdReport(os.Args[2:])
	case "tlsreport":
		err = cmdTLSReport(os.Args[2:])
	case "tlsprobe":
		err = cmdTLSProbe(os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "suite %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}
