package config

import (
	"fmt"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"
)

// EnvPrefix starts the name of every environment override.
const EnvPrefix = "GATEWAY_"

var (
	durationType  = reflect.TypeOf(Duration(0))
	sizeType      = reflect.TypeOf(Size(0))
	listenersType = reflect.TypeOf(Listeners(nil))
	stringsType   = reflect.TypeOf([]string(nil))
)

// envSetting is one setting that an environment variable may override.
type envSetting struct {
	env   string // GATEWAY_LIMITS_MAX_MESSAGE_BYTES
	path  string // limits.max_message_bytes
	index []int  // field index from Config
}

var envSettings = collectEnv(reflect.TypeOf(Config{}), nil, "", nil)

// collectEnv lists the overridable settings of t: every string, bool, int,
// Duration and Size field and every list of strings (listen included), found
// through nested structs but not through lists of structs (upstreams, routes).
func collectEnv(t reflect.Type, index []int, path string, out []envSetting) []envSetting {
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if !f.IsExported() || name == "-" || name == "" {
			continue
		}
		idx := append(append([]int(nil), index...), i)
		p := join(path, name)
		switch {
		case f.Type.Kind() == reflect.Struct:
			out = collectEnv(f.Type, idx, p, out)
		case f.Type == listenersType || f.Type == stringsType,
			f.Type.Kind() == reflect.String, f.Type.Kind() == reflect.Bool,
			f.Type.Kind() == reflect.Int, f.Type == durationType, f.Type == sizeType:
			env := EnvPrefix + strings.ToUpper(strings.ReplaceAll(p, ".", "_"))
			out = append(out, envSetting{env: env, path: p, index: idx})
		}
	}
	return out
}

// EnvNames returns the names of all GATEWAY_* variables ApplyEnv reads, sorted.
func EnvNames() []string {
	names := make([]string, len(envSettings))
	for i, s := range envSettings {
		names[i] = s.env
	}
	sort.Strings(names)
	return names
}

// OtherEnv are the GATEWAY_* variables that are not settings: the load
// generator's own. (The fault-injection switch is not named here: a
// release binary must not contain it, e2e TestNoFaultInjectionInRelease;
// in a release build it does nothing, so a warning about it is right.)
var OtherEnv = []string{"GATEWAY_BENCH_TOKEN", "GATEWAY_BENCH_ENGINE", "GATEWAY_BENCH_WORKER"}

// UnknownEnv returns the GATEWAY_* variables in environ (as from os.Environ)
// that name no setting. ApplyEnv ignores them; a caller may warn about them
// (a typo in a variable name otherwise goes unnoticed).
func UnknownEnv(environ []string) []string {
	known := map[string]bool{}
	for _, v := range OtherEnv {
		known[v] = true
	}
	for _, s := range envSettings {
		known[s.env] = true
	}
	var out []string
	for _, kv := range environ {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, EnvPrefix) && !known[k] {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out
}

// ApplyEnv overrides scalar settings from environment variables read through
// lookup (os.LookupEnv in production). A variable's name is GATEWAY_ followed
// by the setting's YAML path upper-cased with '_' for each '.':
// GATEWAY_PATH, GATEWAY_AUTH_TIMEOUT, GATEWAY_LIMITS_MAX_MESSAGE_BYTES,
// GATEWAY_RATELIMIT_PER_SUBJECT_MESSAGES, GATEWAY_ORIGINS_ALLOW_ABSENT...
// Strings are taken as is; booleans as strconv.ParseBool; integers in decimal;
// durations as Go durations; sizes as ParseSize; lists (GATEWAY_LISTEN,
// GATEWAY_ORIGINS_ALLOWED, GATEWAY_PROXY_TRUSTED_CIDRS) as comma-separated
// values, an empty value meaning an empty list. Upstreams and routes cannot be
// overridden. A variable set to a bad value is an *Error naming the variable;
// GATEWAY_* variables that name no setting are ignored (see UnknownEnv).
// File paths taken from the environment are used as given (relative to the
// working directory), unlike those in the file.
func (c *Config) ApplyEnv(lookup func(string) (string, bool)) error {
	root := reflect.ValueOf(c).Elem()
	oldPath := c.Path
	for _, s := range envSettings {
		raw, ok := lookup(s.env)
		if !ok {
			continue
		}
		if err := setFromString(root.FieldByIndex(s.index), raw); err != nil {
			return &Error{Source: s.env, Setting: s.path, Msg: err.Error()}
		}
		if c.envSet == nil {
			c.envSet = map[string]string{}
		}
		c.envSet[s.path] = s.env
	}
	if c.defaultRoute && c.Path != oldPath && len(c.Routes) == 1 {
		c.Routes[0].Path = c.Path
	}
	return nil
}

func setFromString(v reflect.Value, raw string) error {
	switch {
	case v.Type() == durationType:
		d, err := time.ParseDuration(strings.TrimSpace(raw))
		if err != nil {
			return fmt.Errorf("invalid duration %q (use a Go duration such as \"5s\")", raw)
		}
		v.SetInt(int64(d))
	case v.Type() == sizeType:
		n, err := ParseSize(raw)
		if err != nil {
			return err
		}
		v.SetInt(n)
	case v.Kind() == reflect.Slice:
		list := []string{}
		for _, item := range strings.Split(raw, ",") {
			if item = strings.TrimSpace(item); item != "" {
				list = append(list, item)
			}
		}
		v.Set(reflect.ValueOf(list).Convert(v.Type()))
	case v.Kind() == reflect.String:
		v.SetString(raw)
	case v.Kind() == reflect.Bool:
		b, err := strconv.ParseBool(strings.TrimSpace(raw))
		if err != nil {
			return fmt.Errorf("invalid boolean %q (use true or false)", raw)
		}
		v.SetBool(b)
	case v.Kind() == reflect.Int:
		n, err := strconv.Atoi(strings.TrimSpace(raw))
		if err != nil {
			return fmt.Errorf("invalid integer %q", raw)
		}
		v.SetInt(int64(n))
	default:
		return fmt.Errorf("cannot be set from the environment")
	}
	return nil
}
