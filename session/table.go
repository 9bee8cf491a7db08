package session

import (
	"sync"
	"sync/atomic"
)

const (
	chunkBits = 12
	chunkSize = 1 << chunkBits // slots per chunk
	maxChunks = 1 << 10        // up to 4 Mi slots
)

type slot struct {
	gen atomic.Uint32
	ptr atomic.Pointer[Session]
}

// Table maps IDs to live sessions. Lookup is two array indexings and a
// generation check, with no lock; Add and Remove take a mutex for the free
// list. Slots are allocated in chunks of 4096 (16 bytes each) that are never
// freed, so the table costs 16 bytes per slot ever in use at once, plus the
// subject index.
type Table struct {
	chunks [maxChunks]atomic.Pointer[[chunkSize]slot]

	mu    sync.Mutex
	free  []uint32
	next  uint32 // first never-used slot
	count atomic.Int64

	subMu     sync.Mutex
	bySubject map[string]map[ID]struct{}
}

// NewTable makes an empty table.
func NewTable() *Table {
	return &Table{bySubject: make(map[string]map[ID]struct{})}
}

func (t *Table) slot(i uint32) *slot {
	c := t.chunks[i>>chunkBits].Load()
	if c == nil {
		return nil
	}
	return &c[i&(chunkSize-1)]
}

// Add stores s and assigns its ID. It returns false when the table is full.
func (t *Table) Add(s *Session) bool {
	t.mu.Lock()
	var i uint32
	if n := len(t.free); n > 0 {
		i = t.free[n-1]
		t.free = t.free[:n-1]
	} else {
		if t.next >= chunkSize*maxChunks {
			t.mu.Unlock()
			return false
		}
		i = t.next
		t.next++
		if t.chunks[i>>chunkBits].Load() == nil {
			t.chunks[i>>chunkBits].Store(new([chunkSize]slot))
		}
	}
	t.mu.Unlock()
	sl := t.slot(i)
	g := sl.gen.Add(1)
	s.id = ID(uint64(g)<<32 | uint64(i))
	sl.ptr.Store(s)
	t.count.Add(1)
	return true
}

// Get finds the live session with this ID, or nil.
func (t *Table) Get(id ID) *Session {
	if id == 0 {
		return nil
	}
	i := id.slot()
	if i>>chunkBits >= maxChunks {
		return nil
	}
	sl := t.slot(i)
	if sl == nil {
		return nil
	}
	s := sl.ptr.Load()
	if s == nil || sl.gen.Load() != id.gen() || s.id != id {
		return nil
	}
	return s
}

// Remove drops s from the table (and from the subject index).
func (t *Table) Remove(s *Session) {
	id := s.id
	if id == 0 {
		return
	}
	sl := t.slot(id.slot())
	if sl == nil || !sl.ptr.CompareAndSwap(s, nil) {
		return
	}
	if s.Subject != "" {
		t.unindex(s.Subject, id)
	}
	t.mu.Lock()
	t.free = append(t.free, id.slot())
	t.mu.Unlock()
	t.count.Add(-1)
}

// Len is the number of live sessions.
func (t *Table) Len() int { return int(t.count.Load()) }

// SetSubject records s's principal and indexes it for BySubject.
// Call it once, when the connection authenticates.
func (t *Table) SetSubject(s *Session, subject string) {
	s.Subject = subject
	t.subMu.Lock()
	m := t.bySubject[subject]
	if m == nil {
		m = make(map[ID]struct{}, 1)
		t.bySubject[subject] = m
	}
	m[s.id] = struct{}{}
	t.subMu.Unlock()
}

func (t *Table) unindex(subject string, id ID) {
	t.subMu.Lock()
	if m := t.bySubject[subject]; m != nil {
		delete(m, id)
		if len(m) == 0 {
			delete(t.bySubject, subject)
		}
	}
	t.subMu.Unlock()
}

// BySubject lists the live sessions of one principal (for revocation).
func (t *Table) BySubject(subject string) []*Session {
	t.subMu.Lock()
	ids := make([]ID, 0, len(t.bySubject[subject]))
	for id := range t.bySubject[subject] {
		ids = append(ids, id)
	}
	t.subMu.Unlock()
	out := make([]*Session, 0, len(ids))
	for _, id := range ids {
		if s := t.Get(id); s != nil {
			out = append(out, s)
		}
	}
	return out
}

// Range calls f for each live session until f returns false. It holds no
// lock while f runs; sessions added or removed meanwhile may or may not be seen.
func (t *Table) Range(f func(*Session) bool) {
	t.mu.Lock()
	n := t.next
	t.mu.Unlock()
	for i := uint32(0); i < n; i++ {
		sl := t.slot(i)
		if sl == nil {
			continue
		}
		if s := sl.ptr.Load(); s != nil {
			if !f(s) {
				return
			}
		}
	}
}
