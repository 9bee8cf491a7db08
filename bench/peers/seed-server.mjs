// The seed's design (shared/seed/websocket-transport-security.txt) on `ws`,
// as a benchmark peer for `make bench`. Its pieces are the note's code, joined
// as the note says, with the same checks as the seed:
//   - Origin allowlist on the upgrade; an absent Origin is allowed
//     (non-browser clients); 403 and destroy otherwise.
//   - First-message auth {type:'auth', token} within 5 s; close 1008
//     "Authentication timeout", 1008 "Invalid credentials", 1007
//     "Invalid message format"; answer {type:'auth_ok'}.
//   - maxPayload 1 MB at the parser (ws closes 1009).
//   - A per-connection limiter, 100 messages per 10 s (fixed window), in its
//     own 'connection' handler, closing 1008 "Rate limit exceeded".
// The note leaves verifyToken and handleMcpMessage open: verifyToken compares
// with SEED_TOKEN (constant time), and handleMcpMessage is a JSON-RPC
// responder that answers like the gateway's builtin server: initialize, ping,
// and tools/call echo ({"message": s} -> text content "Echo: " + s).
//
// Benchmark settings (environment), so that the load is not refused, as the
// gateway's own limits are raised for the same runs:
//   SEED_RATE_MAX        messages per window (default 100, the note's)
//   SEED_RATE_WINDOW_MS  window in ms (default 10000, the note's)
// The limiter still runs on every message, as in the note; only its
// numbers change. SEED_ERROR_HANDLER=1 adds the 'error' listener the note
// lacks (without it, one protocol error such as an oversized message ends
// the process, as in the note).
//
// Usage: SEED_TOKEN=secret node seed-server.mjs [port]
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

const tokenDigest = createHash('sha256').update(TOKEN).digest();

function verifyToken(token) {
  if (typeof token !== 'string') return false;
  return timingSafeEqual(createHash('sha256').update(token).digest(), tokenDigest);
}

function reply(ws, id, result) {
  ws.send(JSON.stringify({ jsonrpc: '2.0', id, result }));
}

function replyError(ws, id, code, message) {
  ws.send(JSON.stringify({ jsonrpc: '2.0', id, error: { code, message } }));
}

// handleMcpMessage: the part the note leaves open. A JSON-RPC responder that
// answers as the gateway's builtin server does.
function handleMcpMessage(ws, data) {
  let msg;
  try {
    msg = JSON.parse(data.toString());
  } catch {
    replyError(ws, null, -32700, 'Parse error');
    return;
  }
  if (msg === null || typeof msg !== 'object' || msg.id === undefined || typeof msg.method !== 'string') {
    return; // a notification or a response: nothing to answer
  }
  switch (msg.method) {
    case 'initialize':
      reply(ws, msg.id, {
        protocolVersion: msg.params?.protocolVersion ?? '2025-06-18',
        capabilities: { tools: {} },
        serverInfo: { name: 'seed-server', version: '0.0.0' },
      });
      return;
    case 'ping':
      reply(ws, msg.id, {});
      return;
    case 'tools/call': {
      const name = msg.params?.name;
      const message = msg.params?.arguments?.message;
      if (name !== 'echo') {
        replyError(ws, msg.id, -32602, `Unknown tool: ${name}`);
        return;
      }
      if (typeof message !== 'string') {
        replyError(ws, msg.id, -32602, 'Invalid arguments for tool echo: message must be a string');
        return;
      }
      reply(ws, msg.id, { content: [{ type: 'text', text: 'Echo: ' + message }] });
      return;
    }
    default:
      replyError(ws, msg.id, -32601, 'Method not found');
  }
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
