// The design of the seed note (shared/seed/websocket-transport-security.txt),
// reproduced faithfully with the `ws` package, so that `gateway audit` can be
// tested against it and `make bench` can measure it next to the gateway. Its
// pieces are the note's code, joined as the note says:
//   - Origin allowlist on the upgrade; an absent Origin is allowed
//     (non-browser clients); 403 and destroy otherwise.
//   - First-message auth {type:'auth', token} within 5 s; close 1008
//     "Authentication timeout", 1008 "Invalid credentials", 1007
//     "Invalid message format"; answer {type:'auth_ok'}.
//   - maxPayload 1 MB at the parser (ws closes 1009).
//   - A per-connection limiter, 100 messages per 10 s (fixed window), in its
//     own 'connection' handler, closing 1008 "Rate limit exceeded".
// The note leaves verifyToken and handleMcpMessage open: verifyToken compares
// with SEED_TOKEN (constant time), and handleMcpMessage is a small JSON-RPC
// responder: initialize, ping, tools/call echo as the gateway's builtin
// server answers it ({"message": s} -> text content "Echo: " + s), and an
// echo of the method and params for anything else.
//
// Benchmark settings (environment), so that the load is not refused, as the
// gateway's own limits are raised for the same runs: SEED_RATE_MAX (messages
// per window, default 100, the note's) and SEED_RATE_WINDOW_MS (default
// 10000, the note's). The limiter still runs on every message.
//
// Usage: SEED_TOKEN=secret [SEED_ERROR_HANDLER=1] node seed-server.mjs [port]
// (port 0 or none: any free port; it listens on 127.0.0.1 only)
// Prints "listening <port>" on stdout once it accepts connections.
import { createServer } from 'node:http';
import { timingSafeEqual, createHash } from 'node:crypto';
import { WebSocketServer } from 'ws';

const TOKEN = process.env.SEED_TOKEN || '';
if (!TOKEN) {
  console.error('SEED_TOKEN is required');
  process.exit(2);
}

const RATE_MAX = Number(process.env.SEED_RATE_MAX || 100);
const RATE_WINDOW_MS = Number(process.env.SEED_RATE_WINDOW_MS || 10_000);

const ALLOWED_ORIGINS = new Set([
  'https://claude.ai',
  'https://app.yourdomain.com',
  // Allow absent Origin for non-browser MCP clients (SDK, CLI tools)
]);

function isOriginAllowed(req) {
  const origin = req.headers['origin'];
  // No origin header = non-browser client (MCP SDK, curl, etc.) — allow
  if (!origin) return true;
  return ALLOWED_ORIGINS.has(origin);
}

function digest(s) {
  return createHash('sha256').update(String(s)).digest();
}

const tokenDigest = digest(TOKEN);

function verifyToken(token) {
  if (typeof token !== 'string') return false;
  return timingSafeEqual(digest(token), tokenDigest);
}

function handleMcpMessage(ws, data) {
  let msg;
  try {
    msg = JSON.parse(data.toString());
  } catch {
    ws.send(JSON.stringify({ jsonrpc: '2.0', id: null, error: { code: -32700, message: 'Parse error' } }));
    return;
  }
  if (msg === null || typeof msg !== 'object' || msg.id === undefined || typeof msg.method !== 'string') {
    return; // a notification or a response: nothing to answer
  }
  let result;
  switch (msg.method) {
    case 'initialize':
      result = {
        protocolVersion: msg.params?.protocolVersion ?? '2025-06-18',
        capabilities: { tools: {} },
        serverInfo: { name: 'seed-server', version: '0.0.0' },
      };
      break;
    case 'ping':
      result = {};
      break;
    case 'tools/call': {
      const name = msg.params?.name;
      const message = msg.params?.arguments?.message;
      if (name !== 'echo' || typeof message !== 'string') {
        const why = name !== 'echo' ? `Unknown tool: ${name}` : 'Invalid arguments for tool echo: message must be a string';
        ws.send(JSON.stringify({ jsonrpc: '2.0', id: msg.id, error: { code: -32602, message: why } }));
        return;
      }
      result = { content: [{ type: 'text', text: 'Echo: ' + message }] };
      break;
    }
    default:
      result = { echo: { method: msg.method, params: msg.params ?? null } };
  }
  ws.send(JSON.stringify({ jsonrpc: '2.0', id: msg.id, result }));
}

const httpServer = createServer((req, res) => {
  res.writeHead(426, { 'Content-Type': 'text/plain' });
  res.end('WebSocket only\n');
});

const wss = new WebSocketServer({
  noServer: true,
  // Reject messages larger than 1MB at the parser level
  // The ws library closes the connection with code 1009 (message too large)
  maxPayload: 1 * 1024 * 1024, // 1 MB
});

// Attach to an existing HTTP/HTTPS server to share port and TLS config
httpServer.on('upgrade', (req, socket, head) => {
  if (!isOriginAllowed(req)) {
    // Reject the upgrade — send 403 and destroy the socket
    socket.write('HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n');
    socket.destroy();
    return;
  }

  wss.handleUpgrade(req, socket, head, (ws) => {
    wss.emit('connection', ws, req);
  });
});

wss.on('connection', (ws, req) => {
  // Require authentication on the first message within 5 seconds
  let authenticated = false;
  const authTimeout = setTimeout(() => {
    if (!authenticated) {
      ws.close(1008, 'Authentication timeout');
    }
  }, 5000);

  ws.on('message', (data) => {
    if (!authenticated) {
      // First message must be an auth frame: { type: 'auth', token: '...' }
      try {
        const msg = JSON.parse(data.toString());
        if (msg.type === 'auth' && verifyToken(msg.token)) {
          authenticated = true;
          clearTimeout(authTimeout);
          ws.send(JSON.stringify({ type: 'auth_ok' }));
        } else {
          ws.close(1008, 'Invalid credentials');
        }
      } catch {
        ws.close(1007, 'Invalid message format');
      }
      return;
    }
    handleMcpMessage(ws, data);
  });
  // The note registers no 'error' listener, so ws's 1009 on maxPayload (or
  // any other protocol error) is an unhandled 'error' event, and the whole
  // process exits: one oversized message takes the server down.
  // SEED_ERROR_HANDLER=1 adds the missing listener (not in the note).
  if (process.env.SEED_ERROR_HANDLER === '1') ws.on('error', () => {});
});

// Also enforce a per-connection rate limit to prevent message flooding
function makeRateLimiter(maxMessages, windowMs) {
  const counts = new Map();
  return (ws) => {
    const now = Date.now();
    const entry = counts.get(ws) ?? { count: 0, resetAt: now + windowMs };
    if (now > entry.resetAt) {
      entry.count = 0;
      entry.resetAt = now + windowMs;
    }
    entry.count++;
    counts.set(ws, entry);
    return entry.count <= maxMessages;
  };
}

const checkRate = makeRateLimiter(RATE_MAX, RATE_WINDOW_MS); // the note: 100 messages per 10 seconds

wss.on('connection', (ws) => {
  ws.on('message', (data) => {
    if (!checkRate(ws)) {
      ws.close(1008, 'Rate limit exceeded');
      return;
    }
    // ... handle message
  });
});

const port = Number(process.argv[2] ?? process.env.PORT ?? 0);
httpServer.listen(port, '127.0.0.1', () => {
  console.log(`listening ${httpServer.address().port}`);
});

for (const sig of ['SIGTERM', 'SIGINT']) {
  process.on(sig, () => {
    for (const ws of wss.clients) ws.terminate();
    httpServer.close(() => process.exit(0));
    setTimeout(() => process.exit(0), 1000).unref();
  });
}
