package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/mcpgate/gateway/admin"
	"github.com/redis/go-redis/v9"

	"github.com/mcpgate/gateway/auth"
	"github.com/mcpgate/gateway/cluster"
	"github.com/mcpgate/gateway/config"
	"github.com/mcpgate/gateway/fdbudget"
	"github.com/mcpgate/gateway/metrics"
	"github.com/mcpgate/gateway/ratelimit"
	"github.com/mcpgate/gateway/reactor"
	"github.com/mcpgate/gateway/session"
	"github.com/mcpgate/gateway/tlsconn"
	"github.com/mcpgate/gateway/tracing"
	"github.com/mcpgate/gateway/upstream"
	"github.com/mcpgate/gateway/upstream/builtin"
	"github.com/mcpgate/gateway/upstream/httpup"
	"github.com/mcpgate/gateway/upstream/stdio"
)

func cmdServe(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("serve")
	path := fs.String("c", "", "config file (default: the embedded default)")
	logFormat := fs.String("log-format", "", "text or json (overrides log.format)")
	logLevel := fs.String("log-level", "", "debug, info, warn or error (overrides log.level)")
	if err := parseFlags(fs, args, stdout); err != nil {
		return err
	}
	var (
		cfg      *config.Config
		err      error
		demoTokn string
	)
	if *path == "" {
		// The embedded default: loopback only, the builtin demo server, and
		// a random token printed once, like a notebook server.
		cfg = config.Default()
		if err := cfg.ApplyEnv(os.LookupEnv); err != nil {
			return &exitError{2, err}
		}
		demoTokn, err = auth.GenerateToken()
		if err != nil {
			return err
		}
		cfg.Auth.ExtraTokens = append(cfg.Auth.ExtraTokens, config.StaticToken{
			SHA256Hex: auth.HashToken(demoTokn), Subject: "local"})
		if err := cfg.Validate(); err != nil {
			return &exitError{2, err}
		}
	} else if cfg, err = loadConfig(*path); err != nil {
		return err
	}
	if *logFormat != "" {
		cfg.Log.Format = *logFormat
	}
	if *logLevel != "" {
		cfg.Log.Level = *logLevel
	}
	if os.Getenv("GOGC") == "" {
		// Idle connections are the gateway's working set and its hot path
		// barely allocates, so a tighter heap goal costs little CPU and
		// keeps RSS near the live heap (1.16 vs 1.32 KiB per idle
		// connection at 15,000). GOGC in the environment overrides it.
		debug.SetGCPercent(50)
	}
	log, err := newLogger(cfg.Log, stderr)
	if err != nil {
		return &exitError{2, err}
	}
	authn, err := auth.New(cfg.Auth)
	if err != nil {
		return &exitError{2, err}
	}
	verifier := &swapVerifier{}
	verifier.p.Store(authn)
	for _, v := range config.UnknownEnv(os.Environ()) {
		log.Warn("environment variable names no setting; ignored (gateway check refuses it)", "variable", v)
	}
	m := metrics.New()
	bi := readBuildInfo()
	m.SetBuildInfo(bi.Version, bi.Revision, bi.GoVersion)
	log.Info("starting", "version", bi.Version, "revision", bi.Revision, "go", bi.GoVersion)
	tracer, err := tracing.Start(tracing.Config{Endpoint: cfg.Tracing.OTLPEndpoint,
		SampleRatio: cfg.Tracing.SampleRatio, Version: bi.Version})
	if err != nil {
		return &exitError{2, fmt.Errorf("tracing: %w", err)}
	}
	if tracer != nil {
		log.Info("tracing", "otlp_endpoint", config.RedactURL(cfg.Tracing.OTLPEndpoint), "sample_ratio", cfg.Tracing.SampleRatio)
		defer func() { // the spans of the drain's last requests go out too
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = tracer.Shutdown(sctx)
		}()
	}
	// The descriptor budget (SPEC 10): every descriptor the process opens
	// counts against the open-file limit, so that accept() never meets
	// EMFILE (gnet would stop for good) and clients are refused with 503
	// first. Created before anything opens descriptors.
	fds := fdbudget.New(fdbudget.Options{Metrics: m, Log: log})
	fdsDone := make(chan struct{})
	defer close(fdsDone)
	go fds.Run(fdsDone)
	build := func(u config.Upstream) (upstream.Upstream, error) {
		switch u.Type {
		case "builtin":
			return builtin.New(u.Name, u.Workers, u.QueueDepth, builtin.WithMetrics(m), builtin.WithLogger(log)), nil
		case "stdio":
			return stdio.New(u, m, log, stdio.WithDescriptors(fds))
		case "http":
			return httpup.New(u, m, log, httpup.WithDescriptors(fds))
		}
		return nil, fmt.Errorf("unknown type %q", u.Type)
	}
	ups := newUpstreamSet()
	defer ups.closeAll() // reloads may have added some: all of them
	for _, u := range cfg.Upstreams {
		up, err := build(u)
		if err != nil {
			return &exitError{2, fmt.Errorf("upstreams: %q: %w", u.Name, err)}
		}
		ups.add(u, up)
	}
	routes := make([]reactor.Route, 0, len(cfg.Routes))
	for _, r := range cfg.Routes {
		routes = append(routes, reactor.Route{Path: r.Path, Upstream: ups.byName[r.Upstream]})
	}
	// Shared state: Redis when configured, else this node's memory.
	var rdb *redis.Client
	if cfg.Redis.URL != "" {
		if rdb, err = cluster.NewClient(cfg.Redis.URL, fds); err != nil {
			return &exitError{2, fmt.Errorf("redis.url: %w", err)}
		}
		defer rdb.Close()
		cluster.RouteRedisLogs(log) // go-redis logs every failed dial; keep that at debug
		log.Info("distributed mode", "redis", config.RedactURL(cfg.Redis.URL), "on_failure", cfg.Redis.OnFailure)
	}
	var subj ratelimit.SubjectLimiter
	var redisLimiter *cluster.Limiter // /readyz: 503 while it refuses everything (on_failure deny, Redis down)
	if ps := cfg.RateLimit.PerSubject; ps.Messages > 0 {
		lim := ratelimit.Limit{N: ps.Messages, Window: time.Duration(ps.Window)}
		if rdb != nil {
			cl := cluster.NewLimiter(rdb, lim, cluster.LimiterOptions{
				OnFailure: cfg.Redis.OnFailure, Nodes: cfg.Redis.Nodes, LocalShare: cfg.Redis.LocalShare}, m, log)
			defer cl.Close()
			subj, redisLimiter = cl, cl
		} else {
			subj = ratelimit.NewLocalSubjectLimiter(lim)
		}
	}
	tickets := cluster.NewTickets(rdb, time.Duration(cfg.Auth.Tickets.TTL))
	var srv *reactor.Server
	revoker := cluster.NewRevoker(rdb, revocationTTL, func(subject string) {
		if srv != nil {
			srv.CloseSubject(subject, 1008, "Revoked")
		}
	}, log)
	authn.SetRevoked(revoker.IsRevoked)
	var tlsSrv *tlsconn.Server
	if cfg.TLS.CertFile != "" {
		reloader, err := tlsconn.NewCertReloader(cfg.TLS.CertFile, cfg.TLS.KeyFile, log)
		if err != nil {
			return &exitError{2, fmt.Errorf("tls: %w", err)}
		}
		defer reloader.Close()
		tc, err := tlsconn.ServerTLSConfig(reloader, cfg.TLS.MinVersion)
		if err != nil {
			return &exitError{2, fmt.Errorf("tls.min_version: %w", err)}
		}
		tlsSrv, err = tlsconn.NewServer(tlsconn.Config{TLS: tc, HandshakeTimeout: time.Duration(cfg.Limits.HandshakeTimeout)})
		if err != nil {
			return &exitError{2, fmt.Errorf("tls: %w", err)}
		}
	}
	plaintextOff := tlsSrv == nil && cfg.InsecurePlaintext
	srv, err = reactor.New(reactor.Options{
		Config: cfg, Verifier: verifier, Routes: routes, Table: session.NewTable(),
		Metrics: m, Log: log, SubjectLimiter: subj, Tickets: tickets, Revoked: revoker.IsRevoked,
		TLS: tlsSrv, PlaintextOnlyTrusted: plaintextOff, Trusted: cfg.Proxy.TrustedPrefixes(),
		ProxyProtocol: cfg.Proxy.ProxyProtocol, Descriptors: fds,
	})
	if err != nil {
		return &exitError{2, err}
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go revoker.Run(ctx)
	if cfg.Rebalance.Enabled && rdb != nil {
		rb := cluster.NewRebalancer(rdb, srv, cluster.RebalanceOptions{
			Margin: cfg.Rebalance.Margin, Rate: cfg.Rebalance.Rate}, m.Registry, log)
		go rb.Run(ctx)
		log.Info("rebalancing", "node", rb.ID(), "margin", cfg.Rebalance.Margin, "rate", cfg.Rebalance.Rate)
	}
	// Not ready until the revocations stored in Redis are loaded, so a new
	// node never admits a revoked subject; after 5 s without Redis, serve
	// anyway (redis.on_failure governs the limits) rather than stay out.
	started := time.Now()
	revocationsKnown := func() bool {
		select {
		case <-revoker.Synced():
			return true
		default:
			return rdb == nil || time.Since(started) > 5*time.Second
		}
	}
	var adm *admin.Server
	snapshot := *cfg // what runs; reloads compare the file with it
	rl := &reloader{path: *path, cur: &snapshot, verifier: verifier, revoked: revoker.IsRevoked,
		srv: srv, m: m, log: log, logFormat: *logFormat, logLevel: *logLevel, ups: ups, build: build}
	if cfg.Admin.Listen != "" {
		var token string
		if cfg.Admin.TokenFile != "" {
			b, err := os.ReadFile(cfg.Admin.TokenFile)
			if err != nil {
				return &exitError{2, fmt.Errorf("admin.token_file: %v", err)}
			}
			token = strings.TrimSpace(string(b))
		}
		adm, err = admin.New(cfg.Admin.Listen, admin.Options{
			Metrics: m, Ready: func() bool { return !srv.Draining() && revocationsKnown() }, Token: token, Log: log, Pprof: cfg.Admin.Pprof,
			NotReady: func() string {
				switch {
				case srv.Draining():
					return "draining"
				case !revocationsKnown():
					return "loading revocations from redis"
				case redisLimiter != nil && redisLimiter.Refusing():
					return "redis unreachable (redis.on_failure: deny)"
				case srv.Full():
					return "at capacity (limits.max_connections or the descriptor budget)"
				}
				return ""
			},
			Descriptors: fds,
			Reload: func() (any, bool) {
				res := rl.reload("POST /admin/reload")
				return res, res.Result != "invalid"
			},
			Connections: srv.Connections,
			Close:       srv.CloseConnection,
			Revoke: func(ctx context.Context, subject string, ttl time.Duration) error {
				until := time.Time{}
				if ttl > 0 {
					until = time.Now().Add(ttl)
				}
				return revoker.Revoke(ctx, subject, until)
			},
		})
		if err != nil {
			return fmt.Errorf("admin.listen: %w", err)
		}
		go func() {
			if err := adm.Serve(); err != nil {
				log.Error("admin listener failed", "error", err)
			}
		}()
		log.Info("admin listening", "addr", adm.Addr())
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ctx) }()
	select {
	case <-srv.Ready():
	case err := <-serveErr:
		return fmt.Errorf("listen: %w", err)
	}
	if demoTokn != "" {
		printWelcome(stderr, cfg, demoTokn)
	}

	// SIGHUP reloads (SPEC 12); it no longer ends the process.
	hups := make(chan os.Signal, 1)
	signal.Notify(hups, syscall.SIGHUP)
	defer signal.Stop(hups)
	go func() {
		for range hups {
			rl.reload("SIGHUP")
		}
	}()
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	select {
	case sig := <-sigs:
		log.Info("draining", "signal", sig.String(), "drain_timeout", time.Duration(cfg.DrainTimeout).String())
		dctx, dcancel := context.WithTimeout(context.Background(), time.Duration(cfg.DrainTimeout))
		go func() { // a second signal skips the drain
			select {
			case <-sigs:
				dcancel()
			case <-dctx.Done():
			}
		}()
		srv.Drain(dctx)
		dcancel()
		sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = srv.Stop(sctx)
		scancel()
		<-serveErr
	case err := <-serveErr:
		if err != nil {
			return fmt.Errorf("serve: %w", err)
		}
	}
	if adm != nil {
		sctx, scancel := context.WithTimeout(context.Background(), 2*time.Second)
		_ = adm.Shutdown(sctx)
		scancel()
	}
	log.Info("stopped")
	return nil
}

// revocationTTL is how long a revocation lasts when the request names no
// ttl: at least as long as any JWT this deployment should mint.
const revocationTTL = 24 * time.Hour

func newLogger(l config.Log, w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(l.Level)); err != nil {
		return nil, fmt.Errorf("log.level: %v", err)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch l.Format {
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	case "text", "":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("log.format: %q is not text or json", l.Format)
}

// printWelcome prints the demo token once, with a client to paste.
func printWelcome(w io.Writer, cfg *config.Config, token string) {
	url := "ws://" + cfg.Listen[0] + cfg.Path
	fmt.Fprintf(w, `
  MCP gateway is running on its embedded default (loopback only, builtin demo server).
  Access token (printed once, not stored):

      %s

  Try it (Node 20; wscat is fetched from npm):

      npx -y wscat@6 -s mcp -c %s
      > {"type":"auth","token":"%s"}
      > {"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"message":"hi"}}}

  Metrics: http://%s/metrics    Stop: Ctrl-C

`, token, url, token, strings.TrimSpace(cfg.Admin.Listen))
}
