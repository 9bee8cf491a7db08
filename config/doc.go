// Package config owns the gateway's configuration: the Config types, the single
// source of defaults (Default, "the embedded default"), strict YAML loading
// (Load, Parse), GATEWAY_* environment overrides (ApplyEnv), the startup
// refusals (Validate) and the redacted view printed by `gateway check`
// (Redacted). The settings are documented in docs/config.md.
//
// Other packages read a *Config after Load (or Default plus ApplyEnv) and
// Validate have succeeded; they never re-parse YAML or read GATEWAY_* themselves.
package config
