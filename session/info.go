package session

import (
	"errors"
	"strconv"
)

// Info is one connection as the admin API lists it (SPEC 12): a snapshot
// taken on the connection's own event loop, so that no loop-owned field is
// read from another goroutine.
type Info struct {
	Session     string `json:"session"` // ID.String: as auth_ok and the logs show it
	State       string `json:"state"`
	Subject     string `json:"subject,omitempty"`
	Route       string `json:"route,omitempty"`
	Remote      string `json:"remote"`
	AgeMS       int64  `json:"age_ms"`
	MessagesIn  uint32 `json:"messages_in"`
	MessagesOut uint32 `json:"messages_out"`
}

// ErrBadID is ParseID's answer to anything but 16 hex digits.
var ErrBadID = errors.New("session: want 16 hex digits")

// ParseID reads an ID as String prints it.
func ParseID(s string) (ID, error) {
	if len(s) != 16 {
		return 0, ErrBadID
	}
	v, err := strconv.ParseUint(s, 16, 64)
	if err != nil {
		return 0, ErrBadID
	}
	return ID(v), nil
}
