package main

import (
	"errors"
	"log/slog"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/mcpgate/gateway/auth"
	"github.com/mcpgate/gateway/config"
	"github.com/mcpgate/gateway/metrics"
	"github.com/mcpgate/gateway/reactor"
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
	// Valid: from here on nothing can fail.
	if r.revoked != nil {
		a.SetRevoked(r.revoked)
	}
	r.verifier.p.Store(a)
	res := reloadResult{Result: "ok", Applied: []string{"auth.static_tokens_file", "auth.jwt"}}
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
