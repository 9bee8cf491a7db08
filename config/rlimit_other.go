//go:build !unix

package config

// softNOFILE is unknown off Unix; EffectiveMaxConnections then assumes 1024.
func softNOFILE() (uint64, bool) { return 0, false }
