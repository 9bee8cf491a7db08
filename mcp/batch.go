package mcp

// What the gateway needs of a batch before it forwards it (SPEC 10): how
// many elements it has, so that each counts against the rate limits as if
// it came alone, and, when the batch is refused as a whole (rate limit,
// busy upstream, drain), one answer per element that asks for one.

// CountBatch counts the elements of batch (a message Scan accepted with
// Kind KindBatch) and, among them, the requests. With max > 0 it stops past
// max elements: elems is then max+1 and requests counts the elements seen.
func CountBatch(batch []byte, max int) (elems, requests int) {
	it := NewBatch(batch)
	for {
		el, ok := it.Next()
		if !ok {
			return elems, requests
		}
		elems++
		if max > 0 && elems > max {
			return elems, requests
		}
		if env, err := Scan(el); err == nil && env.Kind == KindRequest {
			requests++
		}
	}
}

// AppendBatchError appends the answer to a batch the gateway refuses as a
// whole: a JSON array with, in the batch's order, an error response with
// code, message and data (raw JSON or nil) for each request, under the
// request's own id, and -32600 "Invalid Request" for each element that is
// not a JSON-RPC message (its id when one can be found, else null), which is
// what the batch would have got had it been forwarded. Notifications and
// responses get no element. When no element needs an answer it appends
// nothing: JSON-RPC never answers with an empty array. It does not allocate
// when dst has room.
func AppendBatchError(dst, batch []byte, code int, message string, data []byte) []byte {
	return appendErrors(dst, batch, KindRequest, code, message, data)
}

// AppendResponseErrors appends, for each response in msg (one message or a
// batch that Scan accepted), an error response with the same id and code,
// message and data: one object for a single response, an array for a batch
// (in order, other elements left out), nothing when msg holds no response.
// The gateway answers this way, in place of a reply it cannot deliver,
// every request that reply answered. It does not allocate when dst has room.
func AppendResponseErrors(dst, msg []byte, code int, message string, data []byte) []byte {
	env, err := Scan(msg)
	switch {
	case err != nil:
		return dst
	case env.Kind == KindResponse:
		return AppendError(dst, env.ID, code, message, data)
	case env.Kind == KindBatch:
		return appendErrors(dst, msg, KindResponse, code, message, data)
	}
	return dst
}

// appendErrors walks batch and appends an array of errors, one per element
// of kind answer; for answer KindRequest, invalid elements get -32600.
func appendErrors(dst, batch []byte, answer Kind, code int, message string, data []byte) []byte {
	start := len(dst)
	dst = append(dst, '[')
	n := 0
	it := NewBatch(batch)
	for {
		el, ok := it.Next()
		if !ok {
			break
		}
		env, err := Scan(el)
		if err == nil && env.Kind == KindBatch {
			err = ErrInvalidRequest // no batches inside batches
		}
		switch {
		case err != nil && answer == KindRequest:
			if n > 0 {
				dst = append(dst, ',')
			}
			id := env.ID
			if err == ErrParse {
				id = nil
			}
			dst = AppendError(dst, id, CodeInvalidRequest, "Invalid Request", nil)
			n++
		case err == nil && env.Kind == answer:
			if n > 0 {
				dst = append(dst, ',')
			}
			dst = AppendError(dst, env.ID, code, message, data)
			n++
		}
	}
	if n == 0 {
		return dst[:start]
	}
	return append(dst, ']')
}
