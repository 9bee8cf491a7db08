// MCP TypeScript SDK client (1.x WebSocketClientTransport) through the gateway.
// Usage: node sdk-client.mjs <url> <token> [full]
// "full" adds the steps that need @modelcontextprotocol/server-everything
// behind the gateway: a long-running tool with progress notifications and a
// resource read.
import WebSocket from 'ws';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { WebSocketClientTransport } from '@modelcontextprotocol/sdk/client/websocket.js';

// Node 20 has no global WebSocket; the SDK transport uses the global one.
globalThis.WebSocket = WebSocket;

const [url, token, mode] = process.argv.slice(2);
if (!url || !token) {
  console.error('usage: node sdk-client.mjs <url> <token>');
  process.exit(2);
}

const fail = (msg) => {
  console.error(`sdk-client: FAIL: ${msg}`);
  process.exit(1);
};
const step = (obj) => console.log(JSON.stringify(obj));
setTimeout(() => fail('timeout after 30s'), 30_000);

// The gateway's first-message auth: once the socket is open, send the auth frame
// and wait for {"type":"auth_ok"} with our own handlers, so that frame never
// reaches the SDK's JSON-RPC schema validation. start() (and so client.connect())
// resolves only after auth_ok; then the SDK's own handlers are put back.
class AuthWebSocketClientTransport extends WebSocketClientTransport {
  constructor(url, token) {
    super(new URL(url));
    this.token = token;
    this.session = undefined;
  }

  async start() {
    await super.start(); // resolves on 'open'; no message can have arrived yet
    const ws = this._socket;
    if (ws.protocol !== 'mcp') throw new Error(`server selected subprotocol ${JSON.stringify(ws.protocol)}, want "mcp"`);
    const sdk = { onmessage: ws.onmessage, onclose: ws.onclose };
    try {
      this.session = await new Promise((resolve, reject) => {
        ws.onmessage = (ev) => {
          let msg;
          try { msg = JSON.parse(ev.data); } catch { msg = undefined; }
          if (msg?.type === 'auth_ok' && typeof msg.session === 'string' && msg.session) resolve(msg.session);
          else reject(new Error(`expected auth_ok, got ${ev.data}`));
        };
        ws.onclose = (ev) => reject(new Error(`closed during auth: code=${ev.code} reason=${JSON.stringify(ev.reason)}`));
        ws.send(JSON.stringify({ type: 'auth', token: this.token }));
      });
    } finally {
      ws.onmessage = sdk.onmessage;
      ws.onclose = sdk.onclose;
    }
  }

  // Called by Client after initialize; kept only to report it.
  setProtocolVersion(version) {
    this.protocolVersion = version;
  }

  // Close with 1000 and wait for the closing handshake.
  async close() {
    const ws = this._socket;
    if (!ws || ws.readyState === WebSocket.CLOSED) return;
    const done = new Promise((resolve) => ws.addEventListener('close', (ev) => resolve(ev.code), { once: true }));
    ws.close(1000, 'done');
    this.closeCode = await done;
  }
}

try {
  const transport = new AuthWebSocketClientTransport(url, token);
  transport.onerror = (err) => console.error(`sdk-client: transport error: ${err?.message ?? err}`);
  const client = new Client({ name: 'gateway-sdk-client', version: '0.0.0' });

  await client.connect(transport); // start() incl. auth, then initialize + notifications/initialized
  step({ step: 'auth_ok', session: transport.session });
  const info = client.getServerVersion();
  step({ step: 'initialize', server: info?.name, protocolVersion: transport.protocolVersion ?? null });

  const { tools } = await client.listTools();
  const names = tools.map((t) => t.name);
  if (!names.includes('echo')) fail(`tools/list does not list echo: ${JSON.stringify(names)}`);
  step({ step: 'tools/list', tools: names });

  const res = await client.callTool({ name: 'echo', arguments: { message: 'sdk' } });
  const text = res.content?.[0]?.text;
  if (res.isError || text !== 'Echo: sdk') fail(`tools/call echo returned ${JSON.stringify(res)}, want text "Echo: sdk"`);
  step({ step: 'tools/call', text });

  if (mode === 'full') {
    const progress = [];
    const long = await client.callTool(
      { name: 'trigger-long-running-operation', arguments: { duration: 1, steps: 3 } },
      undefined,
      { onprogress: (p) => progress.push(p.progress) },
    );
    if (long.isError) fail(`long-running operation: ${JSON.stringify(long)}`);
    // The last notification may race the result, after which the SDK drops
    // it; the raw-socket test in e2e counts every one.
    if (progress.length < 2) fail(`got ${progress.length} progress notifications, want at least 2: ${JSON.stringify(progress)}`);
    step({ step: 'progress', notifications: progress.length });

    const rr = await client.readResource({ uri: 'demo://resource/static/document/architecture.md' });
    const body = rr.contents?.[0]?.text ?? '';
    if (!body) fail(`resources/read returned ${JSON.stringify(rr).slice(0, 200)}`);
    step({ step: 'resources/read', bytes: body.length });
  }

  await client.close();
  step({ step: 'closed', code: transport.closeCode });
  console.log('OK');
  process.exit(0);
} catch (err) {
  fail(err?.message ?? String(err));
}
