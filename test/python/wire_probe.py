#!/usr/bin/env python3
"""Wire probe on Python's `websockets` (Debian python3-websockets).

The same probe as test/node/wire-probe.mjs: it drives one WebSocket
connection (or one HTTP POST) as a JSON spec says and prints what the client
saw, one JSON event per line, for the Go e2e tests. Works with websockets 10.4
(Debian bookworm) and later (the top-level `websockets.connect`).

Usage: python3 wire_probe.py '<spec JSON>'   (see wire-probe.mjs for the spec)
A close, a refusal or the HTTP answer ends the probe with exit 0; the timeout
exits 1; a bad spec exits 2.
"""

import asyncio
import json
import ssl
import sys
import urllib.error
import urllib.request

import websockets


def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def status_of(exc):
    """The HTTP status of a refused upgrade (legacy and new exceptions)."""
    code = getattr(exc, "status_code", None)
    if code is None and getattr(exc, "response", None) is not None:
        code = exc.response.status_code
    return code


def body_of(exc):
    resp = getattr(exc, "response", None)
    body = getattr(resp, "body", None) if resp is not None else None
    if isinstance(body, bytes):
        return body.decode("utf-8", "replace")
    return ""


def post(spec, ctx):
    req = urllib.request.Request(spec["post"], data=b"", method="POST")
    if spec.get("token"):
        req.add_header("Authorization", "Bearer " + spec["token"])
    if spec.get("origin"):
        req.add_header("Origin", spec["origin"])
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=10) as resp:
            emit({"event": "http", "status": resp.status, "body": resp.read().decode(),
                  "cache_control": resp.headers.get("Cache-Control", "")})
    except urllib.error.HTTPError as e:
        emit({"event": "http", "status": e.code, "body": e.read().decode("utf-8", "replace"),
              "cache_control": e.headers.get("Cache-Control", "")})
    except Exception as e:  # no HTTP answer
        emit({"event": "error", "message": repr(e)})


def closed(exc):
    rcvd = getattr(exc, "rcvd", None)
    if rcvd is None:
        emit({"event": "close", "code": 1006, "reason": ""})
    else:
        emit({"event": "close", "code": rcvd.code, "reason": rcvd.reason})


async def connect(spec, ctx):
    kw = {"subprotocols": ["mcp"], "max_size": 16 << 20, "ping_interval": None,
          "open_timeout": 10, "close_timeout": 5}
    if ctx is not None:
        kw["ssl"] = ctx
    if spec.get("origin"):
        kw["origin"] = spec["origin"]
    try:
        ws = await websockets.connect(spec["url"], **kw)
    except websockets.exceptions.InvalidHandshake as e:
        code = status_of(e)
        if code is not None:
            emit({"event": "refused", "status": code, "body": body_of(e)})
        else:
            emit({"event": "error", "message": repr(e)})
            emit({"event": "close", "code": 1006, "reason": ""})
        return
    except (OSError, EOFError, asyncio.TimeoutError) as e:
        emit({"event": "error", "message": repr(e)})
        emit({"event": "close", "code": 1006, "reason": ""})
        return
    emit({"event": "open", "protocol": ws.subprotocol})

    queue = asyncio.Queue()
    done = asyncio.Event()

    async def reader():
        try:
            while True:
                msg = await ws.recv()
                if isinstance(msg, bytes):
                    msg = "<binary %d bytes>" % len(msg)
                emit({"event": "message", "data": msg})
                queue.put_nowait(msg)
        except websockets.exceptions.ConnectionClosed as e:
            closed(e)
        finally:
            done.set()

    task = asyncio.ensure_future(reader())
    try:
        for step in spec.get("steps", []):
            if done.is_set():
                break
            if "text" in step:
                await ws.send(step["text"])
            elif "binary" in step:
                await ws.send(step["binary"].encode())
            elif "big" in step:
                head = '{"jsonrpc":"2.0","id":"big","method":"ping","params":{"pad":"'
                await ws.send(head + "a" * max(0, step["big"] - len(head) - 3) + '"}}')
            elif "repeat" in step:
                for _ in range(step["n"]):
                    await ws.send(step["repeat"])
            elif "recv" in step:
                getter = asyncio.ensure_future(queue.get())
                ended = asyncio.ensure_future(done.wait())
                await asyncio.wait([getter, ended], return_when=asyncio.FIRST_COMPLETED)
                getter.cancel()
                ended.cancel()
            elif "ready" in step:
                emit({"event": "ready"})
            elif "close" in step:
                await ws.close(step["close"], step.get("reason", ""))
            else:
                sys.stderr.write("wire_probe: unknown step %r\n" % (step,))
                sys.exit(2)
    except websockets.exceptions.ConnectionClosed:
        pass  # the reader reports the close
    await done.wait()
    await task


def main():
    try:
        spec = json.loads(sys.argv[1])
    except (IndexError, ValueError) as e:
        sys.stderr.write("wire_probe: bad spec: %s\n" % e)
        sys.exit(2)
    ctx = None
    target = spec.get("post") or spec.get("url", "")
    if target.startswith(("https:", "wss:")):
        ctx = ssl.create_default_context(cafile=spec.get("ca"))
    if spec.get("post"):
        post(spec, ctx)
        return
    try:
        asyncio.run(asyncio.wait_for(connect(spec, ctx), spec.get("timeout_ms", 10000) / 1000))
    except asyncio.TimeoutError:
        emit({"event": "timeout"})
        sys.exit(1)


if __name__ == "__main__":
    main()
