package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// parsePIDs reads "1,2,3".
func parsePIDs(s string) ([]int, error) {
	var pids []int
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p == "" {
			continue
		}
		n, err := strconv.Atoi(p)
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("bad PID %q", p)
		}
		pids = append(pids, n)
	}
	if len(pids) == 0 {
		return nil, fmt.Errorf("no PID given")
	}
	return pids, nil
}

// withDescendants returns the PIDs and every process below them.
func withDescendants(pids []int) []int {
	children := map[int][]int{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		if ppid, ok := parsePPID(b); ok {
			children[ppid] = append(children[ppid], pid)
		}
	}
	seen := map[int]bool{}
	var out []int
	var walk func(int)
	walk = func(p int) {
		if seen[p] {
			return
		}
		seen[p] = true
		out = append(out, p)
		for _, c := range children[p] {
			walk(c)
		}
	}
	for _, p := range pids {
		walk(p)
	}
	return out
}

// parsePPID reads the 4th field of /proc/PID/stat (after the command in
// parentheses, which may itself hold spaces and parentheses).
func parsePPID(b []byte) (int, bool) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 2 {
		return 0, false
	}
	n, err := strconv.Atoi(f[1])
	return n, err == nil
}

// rssBytes sums VmRSS over the processes; missing ones count 0.
func rssBytes(pids []int) int64 {
	var sum int64
	for _, p := range pids {
		f, err := os.Open(fmt.Sprintf("/proc/%d/status", p))
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
				var kb int64
				fmt.Sscan(v, &kb)
				sum += kb << 10
				break
			}
		}
		f.Close()
	}
	return sum
}

// cpuSecs sums utime+stime of the processes (USER_HZ = 100).
func cpuSecs(pids []int) float64 {
	var ticks int64
	for _, p := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p))
		if err != nil {
			continue
		}
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 13 {
			continue
		}
		ut, _ := strconv.ParseInt(f[11], 10, 64)
		st, _ := strconv.ParseInt(f[12], 10, 64)
		ticks += ut + st
	}
	return float64(ticks) / 100
}

// fdNames lists /proc/PID/fd (names only: no stat per descriptor).
func fdNames(pid int) ([]string, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return f.Readdirnames(-1)
}

// socketInodes returns the inodes of the process's sockets.
func socketInodes(pid int, into map[uint64]bool) error {
	names, err := fdNames(pid)
	if err != nil {
		return err
	}
	dir := fmt.Sprintf("/proc/%d/fd/", pid)
	for _, n := range names {
		l, err := os.Readlink(dir + n)
		if err != nil {
			continue // closed meanwhile
		}
		if s, ok := strings.CutPrefix(l, "socket:["); ok {
			if ino, err := strconv.ParseUint(strings.TrimSuffix(s, "]"), 10, 64); err == nil {
				into[ino] = true
			}
		}
	}
	return nil
}

// alive reports whether any of the processes exists.
func alive(pids []int) bool {
	for _, p := range pids {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", p)); err == nil {
			return true
		}
	}
	return false
}
