//go:build race

package upstream

// sync.Pool drops items at random under the race detector.
const raceEnabled = true
