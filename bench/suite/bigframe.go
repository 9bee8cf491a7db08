package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"
)

// BigframeResult is what bigframe writes.
type BigframeResult struct {
	URL            string           `json:"url"`
	Conns          int              `json:"conns"`
	Authenticated  int              `json:"authenticated"`
	DeclaredBytes  int64            `json:"declared_bytes"`
	PayloadPerConn int              `json:"payload_sent_per_conn"` // payload bytes offered after the header
	PayloadWritten int64            `json:"payload_written_bytes"` // taken by the kernel, all connections
	RSSBefore      int64            `json:"rss_before_bytes"`
	RSSMax         int64            `json:"rss_max_bytes"`
	KiBPerConn     float64          `json:"rss_growth_kib_per_conn"`
	Closes         map[string]int64 `json:"closes"`
	CloseP50MS     float64          `json:"close_p50_ms"`
	CloseMaxMS     float64          `json:"close_max_ms"`
	Errors         map[string]int64 `json:"errors,omitempty"`
}

func cmdBigframe(args []string) error {
	fs := flag.NewFlagSet("bigframe", flag.ContinueOnError)
	rawURL := fs.String("url", "", "ws:// URL of the server (loopback only)")
	tokenFile := fs.String("token-file", "", "token for the first-message auth")
	pidsArg := fs.String("pid", "", "server PID(s): RSS of these and their children")
	conns := fs.Int("conns", 500, "connections (at most 5000)")
	payload := fs.Int("payload", 64<<10, "payload bytes to send after the header (at most 1 MiB)")
	out := fs.String("out", "", "JSON output file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	u, err := url.Parse(*rawURL)
	if err != nil || u.Scheme != "ws" {
		return fmt.Errorf("-url: want a ws:// URL")
	}
	if ip := net.ParseIP(u.Hostname()); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("-url: %q is not a loopback address", u.Hostname())
	}
	if *conns < 1 || *conns > 5000 || *payload < 0 || *payload > 1<<20 {
		return fmt.Errorf("-conns must be 1..5000 and -payload 0..1MiB")
	}
	pids, err := parsePIDs(*pidsArg)
	if err != nil {
		return err
	}
	all := withDescendants(pids)
	tok, err := os.ReadFile(*tokenFile)
	if err != nil {
		return err
	}
	token := strings.TrimSpace(string(tok))

	r := &BigframeResult{URL: *rawURL, Conns: *conns, DeclaredBytes: 1 << 31, PayloadPerConn: *payload,
		Closes: map[string]int64{}, Errors: map[string]int64{}}
	var mu sync.Mutex
	count := func(m map[string]int64, k string) { mu.Lock(); m[k]++; mu.Unlock() }

	// Connect and authenticate, 50 at a time.
	cs := make([]*bfConn, *conns)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 50)
	for i := range cs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			c, err := bfDial(u.String(), token)
			if err != nil {
				count(r.Errors, "connect/auth: "+shortErr(err))
				return
			}
			cs[i] = c
		}()
	}
	wg.Wait()
	for _, c := range cs {
		if c != nil {
			r.Authenticated++
		}
	}
	defer func() {
		for _, c := range cs {
			if c != nil {
				c.nc.Close()
			}
		}
	}()
	time.Sleep(500 * time.Millisecond)
	r.RSSBefore = rssBytes(all)
	r.RSSMax = r.RSSBefore

	// Sample RSS while the frames go out.
	done := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			r.RSSMax = max(r.RSSMax, rssBytes(all))
			select {
			case <-done:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	var written atomic.Int64
	var closeMS []float64
	chunk := make([]byte, 16<<10)
	for _, c := range cs {
		if c == nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			t0 := time.Now()
			c.nc.SetDeadline(t0.Add(5 * time.Second))
			hdr := ws.Header{Fin: true, OpCode: ws.OpText, Masked: true, Mask: ws.NewMask(), Length: 1 << 31}
			if err := ws.WriteHeader(c.nc, hdr); err != nil {
				count(r.Errors, "write header: "+shortErr(err))
				return
			}
			for left := *payload; left > 0; {
				n, err := c.nc.Write(chunk[:min(left, len(chunk))])
				written.Add(int64(n))
				if err != nil {
					break // closed by the server: expected
				}
				left -= n
			}
			kind := bfAwaitClose(c)
			ms := float64(time.Since(t0)) / 1e6
			mu.Lock()
			r.Closes[kind]++
			closeMS = append(closeMS, ms)
			mu.Unlock()
		}()
	}
	wg.Wait()
	time.Sleep(200 * time.Millisecond)
	close(done)
	<-sampled
	r.PayloadWritten = written.Load()
	if r.Authenticated > 0 {
		r.KiBPerConn = round3(float64(r.RSSMax-r.RSSBefore) / 1024 / float64(r.Authenticated))
	}
	if len(closeMS) > 0 {
		slices.Sort(closeMS)
		r.CloseP50MS = round3(quantile(closeMS, 0.5))
		r.CloseMaxMS = round3(closeMS[len(closeMS)-1])
	}
	if len(r.Errors) == 0 {
		r.Errors = nil
	}
	b, _ := json.MarshalIndent(r, "", "  ")
	if *out == "" {
		_, err = os.Stdout.Write(append(b, '\n'))
		return err
	}
	return os.WriteFile(*out, append(b, '\n'), 0o644)
}

type bfConn struct {
	nc net.Conn
	br *bufio.Reader
}

func bfDial(u, token string) (*bfConn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	d := ws.Dialer{Protocols: []string{"mcp"}, Timeout: 10 * time.Second}
	nc, br, _, err := d.Dial(ctx, u)
	if err != nil {
		return nil, err
	}
	if br == nil {
		br = bufio.NewReaderSize(nc, 4096)
	}
	c := &bfConn{nc: nc, br: br}
	msg, _ := json.Marshal(map[string]string{"type": "auth", "token": token})
	f := ws.MaskFrameInPlace(ws.NewTextFrame(msg))
	if err := ws.WriteFrame(nc, f); err != nil {
		nc.Close()
		return nil, err
	}
	nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	h, err := ws.ReadHeader(br)
	if err != nil || h.OpCode != ws.OpText || h.Length > 4096 {
		nc.Close()
		return nil, errors.Join(errors.New("no auth_ok"), err)
	}
	p := make([]byte, h.Length)
	if _, err := io.ReadFull(br, p); err != nil || !strings.Contains(string(p), `"auth_ok"`) {
		nc.Close()
		return nil, errors.New("no auth_ok")
	}
	nc.SetReadDeadline(time.Time{})
	return c, nil
}

// bfAwaitClose reads until the server's close frame or the end of the
// connection, and names what happened.
func bfAwaitClose(c *bfConn) string {
	for {
		h, err := ws.ReadHeader(c.br)
		if err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				return "still open after 5 s"
			}
			return "closed without a close frame"
		}
		if h.Length > 1<<20 {
			return "oversized server frame"
		}
		p := make([]byte, h.Length)
		if _, err := io.ReadFull(c.br, p); err != nil {
			return "closed without a close frame"
		}
		if h.OpCode == ws.OpClose {
			code, reason := ws.ParseCloseFrameData(p)
			return strings.TrimSpace(fmt.Sprintf("close %d %s", code, reason))
		}
	}
}

func shortErr(err error) string {
	s := err.Error()
	if i := strings.LastIndex(s, ": "); i >= 0 {
		s = s[i+2:]
	}
	return s
}
