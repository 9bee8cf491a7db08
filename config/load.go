package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// MaxFileBytes bounds the size of a configuration file read by Load.
const MaxFileBytes = 4 << 20

// Load reads the YAML file at path and returns the effective configuration:
// the file decoded strictly over Default (Parse), relative file paths in it
// resolved against the file's directory, then GATEWAY_* environment overrides
// (ApplyEnv with os.LookupEnv), then Validate. Every error names the setting
// (and, for the file, the line); see Error.
func Load(path string) (*Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxFileBytes+1))
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	if len(data) > MaxFileBytes {
		return nil, &Error{Source: path, Msg: fmt.Sprintf("file larger than %d bytes", MaxFileBytes)}
	}
	c, err := Parse(data, path)
	if err != nil {
		return nil, err
	}
	c.resolveFiles(filepath.Dir(path))
	if err := c.ApplyEnv(os.LookupEnv); err != nil {
		return nil, err
	}
	if err := c.Validate(); err != nil {
		return nil, c.locate(path, err)
	}
	return c, nil
}

// locate points Validate's errors at their source: the GATEWAY_* variable
// that set the setting, or the file and the line of its key (or of the
// nearest enclosing key the file gave: "upstreams[0]" for
// "upstreams[0].command" left at its default).
func (c *Config) locate(path string, err error) error {
	var list []error
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		list = j.Unwrap()
	} else {
		list = []error{err}
	}
	for _, e := range list {
		ce, ok := e.(*Error)
		if !ok || ce.Source != "" || ce.Setting == "" {
			continue
		}
		if env, ok := c.envSet[ce.Setting]; ok {
			ce.Source = env
			continue
		}
		for p := ce.Setting; p != ""; p = parentPath(p) {
			if line, ok := c.keyLines[p]; ok {
				ce.Source, ce.Line = path, line
				break
			}
		}
	}
	return err
}

// parentPath is the enclosing setting of p: "a.b[2].c" -> "a.b[2]" ->
// "a.b" -> "a" -> "".
func parentPath(p string) string {
	if strings.HasSuffix(p, "]") {
		if i := strings.LastIndexByte(p, '['); i > 0 {
			return p[:i]
		}
	}
	if i := strings.LastIndexByte(p, '.'); i > 0 {
		return p[:i]
	}
	return ""
}

// Parse decodes YAML data strictly over Default. name is the file name used in
// error messages. An unknown key is an error naming the key and its line;
// upstreams and routes the data does not set keep their defaults, and a
// defaulted route follows path. Parse neither reads the environment nor
// validates; Load does both. It never panics, whatever data holds.
func Parse(data []byte, name string) (*Config, error) {
	if name == "" {
		name = "config"
	}
	c := Default()
	var root yaml.Node
	if err := safeDecode(data, &root, false); err != nil {
		if errors.Is(err, io.EOF) {
			return c, nil // empty file: the defaults
		}
		return nil, convertErrors(name, err, nil)
	}
	doc := &root
	if doc.Kind == yaml.DocumentNode && len(doc.Content) == 1 {
		doc = doc.Content[0]
	}
	if doc.Kind == yaml.ScalarNode && doc.ShortTag() == "!!null" {
		return c, nil
	}
	if doc.Kind != yaml.MappingNode {
		return nil, &Error{Source: name, Line: doc.Line, Msg: "the configuration must be a mapping of settings (key: value)"}
	}

	w := walker{lines: map[int][]lineEntry{}, keys: map[string]int{}}
	w.walk(doc, reflect.TypeOf(Config{}), "")
	if len(w.errs) > 0 {
		// Unknown or repeated keys: report them without the strict decode,
		// which would only repeat them (and checks repeated keys pairwise).
		return nil, joinSorted(name, w.errs)
	}
	if err := safeDecode(data, c, true); err != nil {
		return nil, joinSorted(name, []error{convertErrors(name, err, &w)})
	}

	c.keyLines = w.keys
	given := map[string]bool{}
	for i := 0; i+1 < len(doc.Content); i += 2 {
		if doc.Content[i+1].ShortTag() != "!!null" {
			given[doc.Content[i].Value] = true
		}
	}
	for i := range c.Upstreams {
		c.Upstreams[i] = defaultUpstream(c.Upstreams[i])
	}
	if !given["routes"] {
		c.Routes = nil
		c.defaultRoute = false
		if len(c.Upstreams) > 0 {
			c.Routes = []Route{{Path: c.Path, Upstream: c.Upstreams[0].Name}}
			c.defaultRoute = true
		}
	} else {
		c.defaultRoute = false
	}
	return c, nil
}

// safeDecode decodes the first YAML document of data into out (strictly when
// known is true) and refuses a second document. A panic inside the YAML
// library is turned into an error so that a hostile file cannot crash us.
func safeDecode(data []byte, out any, known bool) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("yaml: internal error decoding the file: %v", r)
		}
	}()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(known)
	if err := dec.Decode(out); err != nil {
		return err
	}
	var extra yaml.Node
	switch err := dec.Decode(&extra); {
	case errors.Is(err, io.EOF):
		return nil
	case err != nil:
		return err
	default:
		return fmt.Errorf("yaml: line %d: only one YAML document is allowed", extra.Line)
	}
}

// lineEntry records which setting a YAML value on a given line belongs to.
type lineEntry struct {
	path  string
	value string
}

// walker checks every mapping key against the yaml tags of the struct it
// decodes into, so that an unknown key is reported with its full path and a
// suggestion, and records the setting on each line for other decode errors.
type walker struct {
	errs  []error
	lines map[int][]lineEntry
	keys  map[string]int // setting path -> line of its key (or list item)
}

func (w *walker) key(path string, line int) {
	if _, ok := w.keys[path]; !ok {
		w.keys[path] = line
	}
}

func (w *walker) walk(n *yaml.Node, t reflect.Type, path string) {
	switch n.Kind {
	case yaml.AliasNode:
		return // its anchor was walked where it was defined; never expand here
	case yaml.ScalarNode:
		return
	case yaml.MappingNode:
		if t != nil && t.Kind() == reflect.Map {
			w.walkMap(n, t, path)
			return
		}
		if t == nil || t.Kind() != reflect.Struct {
			// Every mapping the strict decoder will see is a struct's, with
			// known, unique keys: yaml.v3 checks keys pairwise (quadratic).
			if t != nil {
				w.mismatch(n, t, path, "a mapping")
			}
			for _, c := range n.Content {
				w.walk(c, nil, path)
			}
			return
		}
		w.walkStruct(n, t, path)
	case yaml.SequenceNode:
		if t == nil || t.Kind() != reflect.Slice {
			if t != nil {
				w.mismatch(n, t, path, "a list")
			}
			for _, c := range n.Content {
				w.walk(c, nil, path)
			}
			return
		}
		for i, item := range n.Content {
			p := fmt.Sprintf("%s[%d]", path, i)
			w.key(p, item.Line)
			w.lines[item.Line] = append(w.lines[item.Line], lineEntry{p, item.Value})
			w.walk(item, t.Elem(), p)
		}
	default: // a document node inside a value cannot happen; be safe
		for _, c := range n.Content {
			w.walk(c, nil, path)
		}
	}
}

func (w *walker) walkStruct(n *yaml.Node, t reflect.Type, path string) {
	fields := yamlFields(t)
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind == yaml.ScalarNode && k.ShortTag() == "!!merge" {
			if v.Kind == yaml.SequenceNode {
				for _, m := range v.Content {
					w.walk(m, t, path)
				}
			} else {
				w.walk(v, t, path)
			}
			continue
		}
		f, ok := fields[k.Value]
		if !ok || k.Kind != yaml.ScalarNode {
			w.errs = append(w.errs, unknownKey(k, path, fields))
			w.walk(k, nil, path)
			w.walk(v, nil, path)
			continue
		}
		p := join(path, k.Value)
		if first, dup := seen[k.Value]; dup {
			w.errs = append(w.errs, &Error{Line: k.Line, Setting: p,
				Msg: fmt.Sprintf("set twice (first at line %d)", first)})
			w.walk(v, nil, path)
			continue
		}
		seen[k.Value] = k.Line
		w.key(p, k.Line)
		w.lines[v.Line] = append(w.lines[v.Line], lineEntry{p, v.Value})
		w.walk(v, f.Type, p)
	}
}

// maxMapEntries bounds a map setting (upstreams[].env): yaml.v3 checks the
// keys of a mapping pairwise, so an unbounded one is quadratic to decode.
const maxMapEntries = 256

// walkMap checks a map of strings (upstreams[].env): scalar keys and values,
// each key once, at most maxMapEntries of them.
func (w *walker) walkMap(n *yaml.Node, t reflect.Type, path string) {
	if len(n.Content)/2 > maxMapEntries {
		w.errs = append(w.errs, &Error{Line: n.Line, Setting: path,
			Msg: fmt.Sprintf("%d entries; at most %d", len(n.Content)/2, maxMapEntries)})
		return
	}
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		p := join(path, k.Value)
		if k.Kind != yaml.ScalarNode || v.Kind != yaml.ScalarNode {
			w.errs = append(w.errs, &Error{Line: k.Line, Setting: path,
				Msg: "want a mapping of names to strings"})
			continue
		}
		if first, dup := seen[k.Value]; dup {
			w.errs = append(w.errs, &Error{Line: k.Line, Setting: p,
				Msg: fmt.Sprintf("set twice (first at line %d)", first)})
			continue
		}
		seen[k.Value] = k.Line
		w.key(p, k.Line)
		w.lines[v.Line] = append(w.lines[v.Line], lineEntry{p, v.Value})
	}
}

// mismatch reports a mapping or list where the setting wants something else.
func (w *walker) mismatch(n *yaml.Node, t reflect.Type, path, got string) {
	if t == listenersType && n.Kind == yaml.SequenceNode {
		return
	}
	w.errs = append(w.errs, &Error{Line: n.Line, Setting: path,
		Msg: fmt.Sprintf("got %s, want %s", got, describeGo(t))})
}

// yamlFields maps YAML keys to the struct fields of t.
func yamlFields(t reflect.Type) map[string]reflect.StructField {
	m := map[string]reflect.StructField{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "-" {
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		m[name] = f
	}
	return m
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func unknownKey(k *yaml.Node, path string, fields map[string]reflect.StructField) error {
	msg := fmt.Sprintf("unknown key %q", k.Value)
	if path != "" {
		msg += fmt.Sprintf(" in %q", path)
	}
	best, bestD := "", 3
	for name := range fields {
		if d := editDistance(strings.ToLower(k.Value), name); d < bestD || (d == bestD && name < best) {
			best, bestD = name, d
		}
	}
	if best != "" {
		msg += fmt.Sprintf(" (did you mean %q?)", best)
	}
	return &Error{Line: k.Line, Msg: msg}
}

// editDistance is the Levenshtein distance, for "did you mean" suggestions.
func editDistance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return 1 << 30
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

var (
	lineRe     = regexp.MustCompile(`^line (\d+): (.*)$`)
	notFoundRe = regexp.MustCompile(`^field (.+) not found in type \S+$`)
	cannotRe   = regexp.MustCompile("^cannot unmarshal !!(\\w+)(?: `(.*)`)? into (.+)$")
)

// convertErrors turns a yaml.v3 error into *Error values carrying the file
// name, the line and (when the walker knows it) the setting.
func convertErrors(name string, err error, w *walker) error {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		msg := strings.TrimPrefix(err.Error(), "yaml: ")
		line := 0
		if m := lineRe.FindStringSubmatch(msg); m != nil {
			line, _ = strconv.Atoi(m[1])
			msg = m[2]
		}
		return &Error{Source: name, Line: line, Msg: msg}
	}
	var errs []error
	for _, s := range te.Errors {
		e := &Error{Source: name, Msg: s}
		if m := lineRe.FindStringSubmatch(s); m != nil {
			e.Line, _ = strconv.Atoi(m[1])
			e.Msg = m[2]
		}
		if m := notFoundRe.FindStringSubmatch(e.Msg); m != nil {
			if w != nil && w.reported(e.Line) {
				continue // the walker already named this key, with its path
			}
			e.Msg = fmt.Sprintf("unknown key %q", m[1])
		} else if w != nil {
			e.Setting = w.setting(e.Line, e.Msg)
			if m := cannotRe.FindStringSubmatch(e.Msg); m != nil {
				e.Msg = fmt.Sprintf("got %s, want %s", describeYAML(m[1], m[2]), describeGo(m[3]))
			}
		}
		errs = append(errs, e)
	}
	return errors.Join(errs...)
}

func (w *walker) reported(line int) bool {
	for _, err := range w.errs {
		if e, ok := err.(*Error); ok && e.Line == line {
			return true
		}
	}
	return false
}

// setting guesses the setting a decode error on line is about: the only value
// on that line, or the one whose text the message quotes.
func (w *walker) setting(line int, msg string) string {
	entries := w.lines[line]
	if len(entries) == 1 {
		return entries[0].path
	}
	for _, e := range entries {
		v := e.value
		if len(v) > 7 {
			v = v[:7]
		}
		if v != "" && (strings.Contains(msg, "`"+v) || strings.Contains(msg, strconv.Quote(e.value))) {
			return e.path
		}
	}
	return ""
}

func describeYAML(tag, value string) string {
	switch tag {
	case "map":
		return "a mapping"
	case "seq":
		return "a list"
	case "str":
		return fmt.Sprintf("the string %q", value)
	}
	return fmt.Sprintf("%s %q", tag, value)
}

func describeGo(t any) string {
	if rt, ok := t.(reflect.Type); ok {
		switch rt {
		case durationType:
			return "a duration such as \"5s\""
		case sizeType:
			return "a size such as \"1MiB\" or a byte count"
		case listenersType:
			return "\"host:port\" or a list of them"
		}
		t = rt.String()
	}
	switch s := t.(string); {
	case strings.HasPrefix(s, "[]"):
		return "a list"
	case strings.HasPrefix(s, "int"), strings.HasPrefix(s, "uint"):
		return "an integer"
	case s == "bool":
		return "true or false"
	case s == "string":
		return "a string"
	case strings.HasPrefix(s, "config."):
		return "a mapping"
	default:
		return s
	}
}

// maxReported bounds the errors reported for one file.
const maxReported = 20

// joinSorted returns the errors ordered by line, each carrying the file name.
func joinSorted(name string, errs []error) error {
	var flat []*Error
	for _, err := range errs {
		if err == nil {
			continue
		}
		if j, ok := err.(interface{ Unwrap() []error }); ok {
			for _, e := range j.Unwrap() {
				if e != nil {
					flat = append(flat, asError(name, e))
				}
			}
			continue
		}
		flat = append(flat, asError(name, err))
	}
	sort.SliceStable(flat, func(i, j int) bool { return flat[i].Line < flat[j].Line })
	if len(flat) > maxReported {
		more := len(flat) - maxReported
		flat = append(flat[:maxReported], &Error{Source: name, Msg: fmt.Sprintf("... and %d more errors", more)})
	}
	if len(flat) == 1 {
		return flat[0]
	}
	out := make([]error, len(flat))
	for i, e := range flat {
		out[i] = e
	}
	return errors.Join(out...)
}

func asError(name string, err error) *Error {
	e, ok := err.(*Error)
	if !ok {
		e = &Error{Msg: err.Error()}
	}
	if e.Source == "" {
		e.Source = name
	}
	return e
}

// resolveFiles makes the relative file paths of the configuration relative
// to dir (the configuration file's directory).
func (c *Config) resolveFiles(dir string) {
	for _, p := range []*string{
		&c.TLS.CertFile, &c.TLS.KeyFile,
		&c.Auth.StaticTokensFile, &c.Auth.JWT.HS256SecretFile, &c.Auth.JWT.JWKSFile,
		&c.Admin.TokenFile,
	} {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(dir, *p)
		}
	}
}
