package main

import (
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
)

// version is the release this binary is, set at link time
// (go build -ldflags "-X main.version=v1.2.3"). Without it the module
// version from the build info is used ("(devel)" for a build in the tree).
var version = ""

// buildInfo is what `gateway version` prints and gateway_build_info carries.
type buildInfo struct {
	Version, Revision, GoVersion string
}

func readBuildInfo() buildInfo {
	b := buildInfo{Version: version, Revision: "unknown", GoVersion: runtime.Version()}
	info, ok := debug.ReadBuildInfo()
	if !ok {
		if b.Version == "" {
			b.Version = "unknown"
		}
		return b
	}
	if b.Version == "" {
		b.Version = info.Main.Version
	}
	if b.Version == "" {
		b.Version = "(devel)"
	}
	modified := false
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			b.Revision = s.Value
		case "vcs.modified":
			modified = s.Value == "true"
		}
	}
	if modified && b.Revision != "unknown" {
		b.Revision += "-dirty"
	}
	return b
}

func cmdVersion(args []string, stdout io.Writer) error {
	fs := newFlags("version")
	if err := parseFlags(fs, args, stdout); err != nil {
		return err
	}
	b := readBuildInfo()
	_, err := fmt.Fprintf(stdout, "gateway %s (revision %s, %s)\n", b.Version, b.Revision, b.GoVersion)
	return err
}
