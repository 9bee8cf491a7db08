package bench

import (
	"errors"
	"strconv"
)

// response is what the load client needs from a JSON-RPC message: a full
// json.Unmarshal per answer would make the generator, which shares the
// machine with the server, cost more CPU than the call it measures.
type response struct {
	id        int64
	idNumeric bool  // "id" was present and an integer
	hasID     bool  // "id" was present (any type, including null)
	isError   bool  // an "error" member
	errCode   int64 // error.code when isError
	hasResult bool
	hasMethod bool // a request or notification from the server
}

var errScan = errors.New("malformed JSON")

// scanResponse reads the top-level members of one JSON-RPC message.
func scanResponse(b []byte) (r response, err error) {
	i := skipWS(b, 0)
	if i >= len(b) || b[i] != '{' {
		return r, errScan
	}
	i++
	for {
		i = skipWS(b, i)
		if i < len(b) && b[i] == '}' {
			return r, nil
		}
		ks, ke, ni, err := scanString(b, i)
		if err != nil {
			return r, err
		}
		i = skipWS(b, ni)
		if i >= len(b) || b[i] != ':' {
			return r, errScan
		}
		i = skipWS(b, i+1)
		vs := i
		if i, err = skipValue(b, i); err != nil {
			return r, err
		}
		v := b[vs:i]
		switch string(b[ks:ke]) {
		case "id":
			r.hasID = true
			if n, e := strconv.ParseInt(string(v), 10, 64); e == nil {
				r.id, r.idNumeric = n, true
			}
		case "error":
			r.isError = true
			r.errCode = errorCode(v)
		case "result":
			r.hasResult = true
		case "method":
			r.hasMethod = true
		}
		i = skipWS(b, i)
		if i >= len(b) {
			return r, errScan
		}
		switch b[i] {
		case ',':
			i++
		case '}':
			return r, nil
		default:
			return r, errScan
		}
	}
}

// errorCode returns error.code from an error object, 0 when absent.
func errorCode(v []byte) int64 {
	i := skipWS(v, 0)
	if i >= len(v) || v[i] != '{' {
		return 0
	}
	i++
	for {
		i = skipWS(v, i)
		ks, ke, ni, err := scanString(v, i)
		if err != nil {
			return 0
		}
		i = skipWS(v, ni)
		if i >= len(v) || v[i] != ':' {
			return 0
		}
		i = skipWS(v, i+1)
		vs := i
		if i, err = skipValue(v, i); err != nil {
			return 0
		}
		if string(v[ks:ke]) == "code" {
			n, _ := strconv.ParseInt(string(v[vs:i]), 10, 64)
			return n
		}
		i = skipWS(v, i)
		if i >= len(v) || v[i] != ',' {
			return 0
		}
		i++
	}
}

func skipWS(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// scanString expects a string at b[i]; it returns the raw contents' bounds
// (escapes left as they are) and the index after the closing quote.
func scanString(b []byte, i int) (start, end, next int, err error) {
	if i >= len(b) || b[i] != '"' {
		return 0, 0, 0, errScan
	}
	start = i + 1
	for j := start; j < len(b); j++ {
		switch b[j] {
		case '\\':
			j++
		case '"':
			return start, j, j + 1, nil
		}
	}
	return 0, 0, 0, errScan
}

// skipValue returns the index just after the JSON value starting at b[i].
func skipValue(b []byte, i int) (int, error) {
	if i >= len(b) {
		return 0, errScan
	}
	switch b[i] {
	case '"':
		_, _, n, err := scanString(b, i)
		return n, err
	case '{', '[':
		depth := 0
		for j := i; j < len(b); j++ {
			switch b[j] {
			case '"':
				_, _, n, err := scanString(b, j)
				if err != nil {
					return 0, err
				}
				j = n - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return j + 1, nil
				}
			}
		}
		return 0, errScan
	default:
		j := i
		for j < len(b) {
			c := b[j]
			if c == ',' || c == '}' || c == ']' || c == ' ' || c == '\t' || c == '\n' || c == '\r' {
				break
			}
			j++
		}
		if j == i {
			return 0, errScan
		}
		return j, nil
	}
}
