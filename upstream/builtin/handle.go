package builtin

import (
	"github.com/mcpgate/gateway/fault"
	"github.com/mcpgate/gateway/mcp"
)

// Protocol revisions.
const (
	latestSessionVersion = "2025-11-25"
	statelessVersion     = "2026-07-28"
	metaVersionKey       = "io.modelcontextprotocol/protocolVersion"
)

// sessionVersions are the revisions that start with initialize.
var sessionVersions = []string{"2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"}

const (
	serverInfoJSON   = `{"name":"mcp-gateway-builtin","version":"0.1.0"}`
	capabilitiesJSON = `{"tools":{}}`
	supportedJSON    = `["2026-07-28","2025-11-25","2025-06-18","2025-03-26","2024-11-05"]`
)

var paramKeys = [3]string{"_meta", "name", "arguments"}

// Handle appends the reply to one message or batch to dst and returns it. It
// appends nothing for a notification, a response, or a batch of only those.
// It keeps no state and is safe for concurrent use; with enough room in dst,
// the echo and get-sum paths do not allocate.
func (s *Server) Handle(dst []byte, msg []byte) []byte {
	env, err := mcp.Scan(msg)
	if err == mcp.ErrParse {
		return mcp.AppendError(dst, nil, mcp.CodeParseError, "Parse error", nil)
	}
	return s.handleScanned(dst, msg, &env, err)
}

// handleScanned answers msg from its scan (env, err).
func (s *Server) handleScanned(dst, msg []byte, env *mcp.Envelope, err error) []byte {
	fault.Hit("builtin.handle")
	if err == nil && env.Kind == mcp.KindBatch {
		return s.handleBatch(dst, msg)
	}
	return s.handleOne(dst, env, err)
}

// handleBatch answers each element in order and omits the ones that need no
// reply. An empty batch is itself an invalid request.
func (s *Server) handleBatch(dst, msg []byte) []byte {
	start := len(dst)
	dst = append(dst, '[')
	it := mcp.NewBatch(msg)
	elems, replies := 0, 0
	for {
		elem, ok := it.Next()
		if !ok {
			break
		}
		elems++
		mark := len(dst)
		if replies > 0 {
			dst = append(dst, ',')
		}
		body := len(dst)
		env, err := mcp.Scan(elem)
		if err == nil && env.Kind == mcp.KindBatch {
			err = mcp.ErrInvalidRequest // no batches inside batches
		}
		dst = s.handleOne(dst, &env, err)
		if len(dst) == body {
			dst = dst[:mark]
			continue
		}
		replies++
	}
	switch {
	case elems == 0:
		return mcp.AppendError(dst[:start], nil, mcp.CodeInvalidRequest, "Invalid Request", nil)
	case replies == 0:
		return dst[:start]
	}
	return append(dst, ']')
}

func (s *Server) handleOne(dst []byte, env *mcp.Envelope, err error) []byte {
	if err != nil {
		if err == mcp.ErrParse {
			return mcp.AppendError(dst, nil, mcp.CodeParseError, "Parse error", nil)
		}
		return mcp.AppendError(dst, env.ID, mcp.CodeInvalidRequest, "Invalid Request", nil)
	}
	if env.Kind != mcp.KindRequest {
		// Notifications (notifications/initialized and the rest) and
		// responses need no reply: this server sends no requests.
		return dst
	}
	id := env.ID
	// One pass over params for what any method here needs.
	var p [3][]byte
	mcp.Members(env.Params, paramKeys[:], p[:])
	meta, name, args := p[0], p[1], p[2]

	// Stateless revision: the version travels with each request.
	stateless := false
	if meta != nil {
		if v, ok := mcp.Lookup(meta, metaVersionKey); ok {
			switch {
			case v[0] != '"':
				return mcp.AppendError(dst, id, mcp.CodeInvalidParams, "Invalid params: _meta protocol version must be a string", nil)
			case mcp.StringEquals(v, statelessVersion):
				stateless = true
			case !isSessionVersion(v):
				return appendUnsupportedVersion(dst, id, v)
			}
		}
	}

	m := env.Method
	if env.MethodEscaped {
		var buf [32]byte
		u, ok := mcp.AppendUnquote(buf[:0], env.Method)
		if !ok {
			return mcp.AppendError(dst, id, mcp.CodeMethodNotFound, "Method not found", nil)
		}
		m = u
	}
	switch string(m) {
	case "tools/call":
		return s.toolsCall(dst, id, name, args, stateless)
	case "ping":
		return endResult(startResult(dst, id, stateless))
	case "tools/list":
		dst = startResult(dst, id, stateless)
		dst = append(dst, toolsListBody...)
		return endResult(dst)
	case "initialize":
		return initialize(dst, id, env.Params)
	case "server/discover":
		dst = startResult(dst, id, stateless)
		dst = append(dst, `"supportedVersions":`+supportedJSON+`,"capabilities":`+capabilitiesJSON+`,"serverInfo":`+serverInfoJSON...)
		return endResult(dst)
	}
	return mcp.AppendError(dst, id, mcp.CodeMethodNotFound, "Method not found", nil)
}

// initialize answers with the client's revision when it is a session
// revision this server speaks, else with the latest one (the client then
// decides whether it can go on).
func initialize(dst, id, params []byte) []byte {
	v, ok := mcp.Lookup(params, "protocolVersion")
	if !ok || v[0] != '"' {
		return mcp.AppendError(dst, id, mcp.CodeInvalidParams, "Invalid params: protocolVersion must be a string", nil)
	}
	version := latestSessionVersion
	for _, sv := range sessionVersions {
		if mcp.StringEquals(v, sv) {
			version = sv
			break
		}
	}
	dst = startResult(dst, id, false)
	dst = append(dst, `"protocolVersion":"`...)
	dst = append(dst, version...)
	dst = append(dst, `","capabilities":`+capabilitiesJSON+`,"serverInfo":`+serverInfoJSON...)
	return endResult(dst)
}

func isSessionVersion(v []byte) bool {
	for _, sv := range sessionVersions {
		if mcp.StringEquals(v, sv) {
			return true
		}
	}
	return false
}

// appendUnsupportedVersion answers MCP 2026-07-28's UnsupportedProtocolVersion
// error, whose data lets the client pick a version and retry.
func appendUnsupportedVersion(dst, id, requested []byte) []byte {
	var data [256]byte
	d := append(data[:0], `{"requested":`...)
	d = append(d, requested...) // a valid JSON string, from the scanned message
	d = append(d, `,"supported":`+supportedJSON+`}`...)
	return mcp.AppendError(dst, id, mcp.CodeUnsupportedVersion, "Unsupported protocol version", d)
}

// startResult opens a success response and its result object; in the
// stateless revision every result says it is complete (as opposed to a
// multi round-trip "input_required" result).
func startResult(dst, id []byte, stateless bool) []byte {
	dst = mcp.AppendResponseStart(dst, id)
	if stateless {
		return append(dst, `{"resultType":"complete",`...)
	}
	return append(dst, '{')
}

// endResult closes what startResult opened, dropping a trailing comma left
// when the result has no other member.
func endResult(dst []byte) []byte {
	if dst[len(dst)-1] == ',' {
		dst = dst[:len(dst)-1]
	}
	return append(dst, '}', '}')
}
