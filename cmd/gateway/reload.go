package main

import (
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mcpgate/gateway/auth"
	"github.com/mcpgate/gateway/config"
	"github.com/mcpgate/gateway/metrics"
	"github.com/mcpgate/gateway/reactor"
	"github.com/mcpgate/gateway/upstream"
)

// swapVerifier is the reactor's Verifier: the current authenticator, which
// a reload replaces whole (tokens, JWT secret and keys re-read).
type swapVerifier struct {
	p atomic.Pointer[auth.Authenticator]
}

func (v *swapVerifier) Verify(token string) (auth.Principal, error) { return v.p.Load().Verify(token) }

// reloader re-reads the config file on SIGHUP and POST /admin/reload
// (SPEC 12). Validated first, an invalid file changes nothing. Applied
// without dropping a connection: the credentials (token files, JWT secret
// and JWKS file, re-read even when the file names the same paths) and the
// origins. Every other setting that differs from the running one is named
// in the answer and the log as needing a restart, and stays as it runs.
type reloader struct {
	mu       sync.Mutex // one reload at a time
	path     string     // "" on the embedded default: nothing to re-read
	cur      *config.Config
	verifier *swapVerifier
	revoked  func(subject string) bool
	srv      *reactor.Server
	m        *metrics.Metrics
	log      *slog.Logger
	// The -log-format and -log-level flags, which override the file's log
	// section at start and again in every reloaded file.
	logFormat, logLevel string
	ups                 *upstreamSet
	build               func(config.Upstream) (upstream.Upstream, error)
}

// retireGrace bounds how long a retired upstream waits for its drained
// connections before it is closed anyway (the drain's own bound).
func (r *reloader) retireGrace() time.Duration {
	return max(time.Duration(r.cur.DrainTimeout), time.Second)
}

// reloadResult is what POST /admin/reload answers.
type reloadResult struct {
	Result          string   `json:"result"` // ok, partial (some changes need a restart) or invalid
	Applied         []string `json:"applied,omitempty"`
	RestartRequired []string `json:"restart_required,omitempty"`
	Error           string   `json:"error,omitempty"`
}

var errNoConfigFile = errors.New("running on the embedded default: no config file to re-read")

func (r *reloader) reload(source string) reloadResult {
	r.mu.Lock()
	defer r.mu.Unlock()
	res := r.apply()
	r.m.ConfigReloads.WithLabelValues(res.Result).Inc()
	if res.Result == "invalid" {
		r.log.Error("config reload refused; the running config stays", "source", source, "error", res.Error)
	} else {
		r.log.Info("config reloaded", "source", source, "result", res.Result,
			"applied", res.Applied, "restart_required", res.RestartRequired)
	}
	return res
}

func (r *reloader) apply() reloadResult {
	if r.path == "" {
		return reloadResult{Result: "invalid", Error: errNoConfigFile.Error()}
	}
	next, err := config.Load(r.path)
	if err != nil {
		return reloadResult{Result: "invalid", Error: err.Error()}
	}
	if r.logFormat != "" {
		next.Log.Format = r.logFormat
	}
	if r.logLevel != "" {
		next.Log.Level = r.logLevel
	}
	a, err := auth.New(next.Auth)
	if err != nil {
		return reloadResult{Result: "invalid", Error: err.Error()}
	}
	// Upstreams new or changed since the running config are started now: one
	// that cannot start refuses the reload (and what was started is closed).
	routesChanged := !reflect.DeepEqual(next.Upstreams, r.cur.Upstreams) || !reflect.DeepEqual(next.Routes, r.cur.Routes)
	var started []upstream.Upstream
	byName := map[string]upstream.Upstream{}
	if routesChanged {
		for _, u := range next.Upstreams {
			if r.ups.same(u) {
				byName[u.Name] = r.ups.byName[u.Name]
				continue
			}
			up, err := r.build(u)
			if err != nil {
				for _, s := range started {
					_ = s.Close()
				}
				return reloadResult{Result: "invalid", Error: fmt.Sprintf("upstreams: %q: %v", u.Name, err)}
			}
			started = append(started, up)
			byName[u.Name] = up
		}
		routes := make([]reactor.Route, 0, len(next.Routes))
		for _, rt := range next.Routes {
			routes = append(routes, reactor.Route{Path: rt.Path, Upstream: byName[rt.Upstream]})
		}
		retired, err := r.srv.SetRoutes(routes)
		if err != nil {
			for _, s := range started {
				_ = s.Close()
			}
			return reloadResult{Result: "invalid", Error: err.Error()}
		}
		r.ups.mu.Lock()
		for name, u := range r.ups.byName { // not kept (dropped or rebuilt) and not returned by SetRoutes (no route used it)
			if byName[name] != u && !containsUpstream(retired, u) {
				retired = append(retired, u)
			}
		}
		for _, u := range retired {
			r.ups.retired[u] = true
		}
		r.ups.byName, r.ups.cfg = byName, map[string]config.Upstream{}
		for _, u := range next.Upstreams {
			r.ups.cfg[u.Name] = u
		}
		r.ups.mu.Unlock()
		grace := r.retireGrace() // read under r.mu, not from the goroutines
		for _, u := range retired {
			go r.closeWhenDrained(u, grace)
		}
		r.cur.Upstreams, r.cur.Routes = next.Upstreams, next.Routes
		r.cur.Path = next.Path // the default route's path
	}
	// Valid: from here on nothing can fail.
	if r.revoked != nil {
		a.SetRevoked(r.revoked)
	}
	r.verifier.p.Store(a)
	res := reloadResult{Result: "ok", Applied: []string{"auth.static_tokens_file", "auth.jwt"}}
	if routesChanged {
		res.Applied = append(res.Applied, "upstreams", "routes")
	}
	r.cur.Auth.StaticTokensFile, r.cur.Auth.JWT = next.Auth.StaticTokensFile, next.Auth.JWT
	if !reflect.DeepEqual(next.Origins, r.cur.Origins) {
		r.srv.SetOrigins(next.Origins)
		r.cur.Origins = next.Origins
		res.Applied = append(res.Applied, "origins")
	}
	var limits []string
	for _, p := range reloadableLimits {
		if setting(r.cur, p).Interface() != setting(next, p).Interface() {
			setting(r.cur, p).Set(setting(next, p))
			limits = append(limits, p)
		}
	}
	if len(limits) > 0 {
		r.srv.SetLimits(r.cur)
		res.Applied = append(res.Applied, limits...)
	}
	res.RestartRequired = differing(r.cur, next)
	if len(res.RestartRequired) > 0 {
		res.Result = "partial"
	}
	return res
}

// reloadableLimits are the limits a reload applies to the running reactor
// (reactor.Server.SetLimits): per message and per deadline on every
// connection at once, and to new ones. The others sized buffers and
// structures at start (message, header and buffer sizes, prefixes, the
// handshake and per-subject limiters).
var reloadableLimits = []string{
	"auth.timeout", "auth.header",
	"limits.handshake_timeout", "limits.idle_timeout", "limits.ping_interval", "limits.message_timeout",
	"limits.write_buffer_bytes", "limits.max_connections", "limits.max_connections_per_ip", "limits.max_pending_auth",
	"ratelimit.per_connection", "ratelimit.frames_per_connection",
}

// setting is the field of c at a YAML path of two parts ("limits.idle_timeout").
func setting(c *config.Config, path string) reflect.Value {
	v := reflect.ValueOf(c).Elem()
	for _, key := range strings.Split(path, ".") {
		v = fieldByTag(v, key)
	}
	return v
}

func fieldByTag(v reflect.Value, key string) reflect.Value {
	t := v.Type()
	for i := range t.NumField() {
		if t.Field(i).Tag.Get("yaml") == key {
			return v.Field(i)
		}
	}
	panic("reload: no setting " + key) // reloadableLimits names only real settings (TestReloadableLimitsExist)
}

// sectioned are the sections whose settings are compared one by one, as
// some of them are reloadable and the others are not.
var sectioned = map[string]bool{"auth": true, "limits": true, "ratelimit": true}

// differing names the settings (top-level sections, and the settings of
// auth, limits and ratelimit) whose new value is not the running one.
func differing(cur, next *config.Config) []string {
	var out []string
	cv, nv := reflect.ValueOf(cur).Elem(), reflect.ValueOf(next).Elem()
	t := cv.Type()
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("yaml")
		if !f.IsExported() || tag == "" || tag == "-" {
			continue
		}
		if sectioned[tag] {
			st := f.Type
			for j := range st.NumField() {
				stag := st.Field(j).Tag.Get("yaml")
				if stag == "" || stag == "-" {
					continue
				}
				if !reflect.DeepEqual(cv.Field(i).Field(j).Interface(), nv.Field(i).Field(j).Interface()) {
					out = append(out, tag+"."+stag)
				}
			}
			continue
		}
		if !reflect.DeepEqual(cv.Field(i).Interface(), nv.Field(i).Interface()) {
			out = append(out, tag)
		}
	}
	return out
}

// closeWhenDrained closes an upstream no route uses any more once its
// connections (asked to reconnect by SetRoutes) are gone, or after the
// drain's bound.
func (r *reloader) closeWhenDrained(u upstream.Upstream, grace time.Duration) {
	deadline := time.Now().Add(grace + 2*time.Second)
	for r.srv.UsesUpstream(u) > 0 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	r.ups.mu.Lock()
	delete(r.ups.retired, u)
	r.ups.mu.Unlock()
	_ = u.Close()
	r.log.Info("upstream retired by reload", "upstream", u.Name())
}

func containsUpstream(list []upstream.Upstream, u upstream.Upstream) bool {
	for _, x := range list {
		if x == u {
			return true
		}
	}
	return false
}
