// Package admin owns the operator-facing HTTP listener: /healthz (the process
// is alive), /readyz (it accepts connections; 503 while draining),
// /metrics (Prometheus text), POST /admin/revoke and GET/DELETE
// /admin/connections (guarded by the admin token). It runs on net/http, off the event loops, and
// should listen on loopback or a private network.
package admin

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/mcpgate/gateway/fdbudget"
	"github.com/mcpgate/gateway/metrics"
	"github.com/mcpgate/gateway/session"
)

// Server is the admin HTTP server.
type Server struct {
	srv *http.Server
	ln  net.Listener
}

// Options configures the admin listener beyond its address.
type Options struct {
	Metrics *metrics.Metrics
	Ready   func() bool // /readyz
	// NotReady, when set, is used by /readyz instead of Ready: "" when
	// ready, else why not (the 503's body).
	NotReady func() string
	// Token guards /admin/*; empty disables those endpoints (404).
	Token string
	// Revoke closes a subject's connections on every node and refuses its
	// tokens for ttl (0: the longest token lifetime).
	Revoke func(ctx context.Context, subject string, ttl time.Duration) error
	Log    *slog.Logger
	// Pprof mounts net/http/pprof under /debug/pprof/.
	Pprof bool
	// Descriptors counts each admin connection against the descriptor
	// budget; one that does not fit is closed at once. nil: not counted.
	Descriptors *fdbudget.Budget
	// Connections lists the open connections (of one subject when not
	// empty); complete is false when it ran out of time. Close closes one
	// by its session id (1008 "Closed by operator") and reports whether it
	// was open. Both nil: GET and DELETE /admin/connections answer 404.
	Connections func(ctx context.Context, subject string) (list []session.Info, complete bool)
	// Reload re-reads the config file (POST /admin/reload) and returns the
	// outcome to answer as JSON, and false when the file was refused (422).
	Reload func() (outcome any, valid bool)
	Close  func(id session.ID) bool
}

// listTimeout bounds GET /admin/connections: every event loop answers for
// its connections, and a loop busy for longer yields a partial list.
const listTimeout = 2 * time.Second

// New binds addr.
func New(addr string, o Options) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	ln = o.Descriptors.Listener(fdbudget.Admin, ln)
	m, ready := o.Metrics, o.Ready
	mux := http.NewServeMux()
	if o.Token != "" && o.Revoke != nil {
		mux.HandleFunc("POST /admin/revoke", func(w http.ResponseWriter, r *http.Request) {
			if !bearerMatches(r.Header.Get("Authorization"), o.Token) {
				w.Header().Set("WWW-Authenticate", "Bearer")
				http.Error(w, "unauthorized", http.StatusUnauthorized)
				return
			}
			var req struct {
				Subject string `json:"subject"`
				TTL     string `json:"ttl"`
			}
			dec := json.NewDecoder(io.LimitReader(r.Body, 4<<10))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&req); err != nil || req.Subject == "" {
				http.Error(w, `want {"subject": "...", "ttl": "24h" (optional)}`, http.StatusBadRequest)
				return
			}
			var ttl time.Duration
			if req.TTL != "" {
				d, err := time.ParseDuration(req.TTL)
				if err != nil || d <= 0 {
					http.Error(w, "ttl: want a positive Go duration", http.StatusBadRequest)
					return
				}
				ttl = d
			}
			if err := o.Revoke(r.Context(), req.Subject, ttl); err != nil {
				if o.Log != nil {
					o.Log.Error("revoke failed", "subject", req.Subject, "error", err.Error())
				}
				http.Error(w, "revocation not propagated: "+err.Error(), http.StatusServiceUnavailable)
				return
			}
			if o.Log != nil {
				o.Log.Info("subject revoked", "subject", req.Subject)
			}
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(`{"revoked":true}` + "\n"))
		})
	}
	if o.Token != "" && o.Connections != nil && o.Close != nil {
		mux.HandleFunc("GET /admin/connections", func(w http.ResponseWriter, r *http.Request) {
			if !authorized(w, r, o.Token) {
				return
			}
			ctx, cancel := context.WithTimeout(r.Context(), listTimeout)
			defer cancel()
			list, complete := o.Connections(ctx, r.URL.Query().Get("subject"))
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(struct {
				Connections []session.Info `json:"connections"`
				Complete    bool           `json:"complete"`
			}{list, complete})
		})
		mux.HandleFunc("DELETE /admin/connections/{session}", func(w http.ResponseWriter, r *http.Request) {
			if !authorized(w, r, o.Token) {
				return
			}
			id, err := session.ParseID(r.PathValue("session"))
			if err != nil {
				http.Error(w, "session: want the 16 hex digits of auth_ok or GET /admin/connections", http.StatusBadRequest)
				return
			}
			if !o.Close(id) {
				http.Error(w, "no such connection", http.StatusNotFound)
				return
			}
			if o.Log != nil {
				o.Log.Info("connection closed by operator", "session", id)
			}
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(`{"closed":true}` + "\n"))
		})
	}
	if o.Token != "" && o.Reload != nil {
		mux.HandleFunc("POST /admin/reload", func(w http.ResponseWriter, r *http.Request) {
			if !authorized(w, r, o.Token) {
				return
			}
			res, valid := o.Reload()
			b, _ := json.Marshal(res)
			w.Header().Set("Content-Type", "application/json")
			if !valid {
				w.WriteHeader(http.StatusUnprocessableEntity)
			}
			_, _ = w.Write(append(b, '\n'))
		})
	}
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if o.NotReady != nil {
			if why := o.NotReady(); why != "" {
				http.Error(w, why, http.StatusServiceUnavailable)
				return
			}
		} else if !ready() {
			http.Error(w, "draining", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ready\n"))
	})
	if o.Pprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{}))
	return &Server{
		ln: ln,
		srv: &http.Server{
			Handler:           mux,
			ReadHeaderTimeout: 5 * time.Second,
			MaxHeaderBytes:    8 << 10,
		},
	}, nil
}

// bearerMatches compares in constant time, so response timing says nothing
// about how much of the admin token a guess got right.
// authorized checks the admin token and answers 401 when it does not match.
func authorized(w http.ResponseWriter, r *http.Request, token string) bool {
	if bearerMatches(r.Header.Get("Authorization"), token) {
		return true
	}
	w.Header().Set("WWW-Authenticate", "Bearer")
	http.Error(w, "unauthorized", http.StatusUnauthorized)
	return false
}

func bearerMatches(header, token string) bool {
	const p = "Bearer "
	if len(header) <= len(p) || !strings.EqualFold(header[:len(p)], p) {
		return false
	}
	a := sha256.Sum256([]byte(strings.TrimSpace(header[len(p):])))
	b := sha256.Sum256([]byte(token))
	return subtle.ConstantTimeCompare(a[:], b[:]) == 1
}

// Addr is the bound address.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Serve blocks until Shutdown.
func (s *Server) Serve() error {
	err := s.srv.Serve(s.ln)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Shutdown stops the listener and waits for requests in progress.
func (s *Server) Shutdown(ctx context.Context) error { return s.srv.Shutdown(ctx) }
