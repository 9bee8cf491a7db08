// A tiny stand-in for the gateway's client-facing contract (SPEC 4.1, 4.2, 4.4),
// used only to self-test the client scripts. Not a reference implementation.
// Usage: node fake-gateway.mjs <token> [port]   (port 0 = any; prints {"port":N})
import { WebSocketServer } from 'ws';

const [token, port = '0'] = process.argv.slice(2);
if (!token) {
  console.error('usage: node fake-gateway.mjs <token> [port]');
  process.exit(2);
}

const wss = new WebSocketServer({
  host: '127.0.0.1',
  port: Number(port),
  path: '/mcp',
  handleProtocols: (protocols) => (protocols.has('mcp') ? 'mcp' : false),
});
wss.on('listening', () => console.log(JSON.stringify({ port: wss.address().port })));

const ECHO_TOOL = {
  name: 'echo',
  description: 'Echoes back the input',
  inputSchema: { type: 'object', properties: { message: { type: 'string' } }, required: ['message'] },
};

let sessions = 0;

// Returns the JSON-RPC response for one message, or undefined for notifications.
function handle(msg) {
  if (!msg || msg.jsonrpc !== '2.0' || typeof msg.method !== 'string') {
    return { jsonrpc: '2.0', id: msg?.id ?? null, error: { code: -32600, message: 'Invalid Request' } };
  }
  if (!('id' in msg)) return undefined; // notifications/initialized and friends
  const ok = (result) => ({ jsonrpc: '2.0', id: msg.id, result });
  const err = (code, message) => ({ jsonrpc: '2.0', id: msg.id, error: { code, message } });
  switch (msg.method) {
    case 'ping':
      return ok({});
    case 'initialize':
      return ok({
        protocolVersion: msg.params?.protocolVersion,
        capabilities: { tools: {} },
        serverInfo: { name: 'fake-gateway', version: '0.0.0' },
      });
    case 'tools/list':
      return ok({ tools: [ECHO_TOOL] });
    case 'tools/call': {
      const { name, arguments: args } = msg.params ?? {};
      if (name !== 'echo') return err(-32602, `Unknown tool: ${name}`);
      if (typeof args?.message !== 'string') return err(-32602, 'message must be a string');
      return ok({ content: [{ type: 'text', text: `Echo: ${args.message}` }] });
    }
    default:
      return err(-32601, `Method not found: ${msg.method}`);
  }
}

wss.on('connection', (ws) => {
  let authed = false;
  const authTimer = setTimeout(() => ws.close(1008, 'Authentication timeout'), 5000);

  ws.on('message', (data, isBinary) => {
    if (isBinary) return ws.close(1003, 'Binary messages not supported');
    let msg;
    try {
      msg = JSON.parse(data.toString());
    } catch {
      if (!authed) return ws.close(1007, 'Invalid message format');
      return ws.send(JSON.stringify({ jsonrpc: '2.0', id: null, error: { code: -32700, message: 'Parse error' } }));
    }
    if (!authed) {
      clearTimeout(authTimer);
      if (msg?.type !== 'auth' || msg.token !== token) return ws.close(1008, 'Invalid credentials');
      authed = true;
      return ws.send(JSON.stringify({ type: 'auth_ok', session: `fake-${++sessions}` }));
    }
    if (Array.isArray(msg)) {
      const out = msg.map(handle).filter(Boolean);
      if (out.length) ws.send(JSON.stringify(out));
      return;
    }
    const out = handle(msg);
    if (out) ws.send(JSON.stringify(out));
  });
  ws.on('close', () => clearTimeout(authTimer));
});
