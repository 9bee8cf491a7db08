// Package pool owns what the process (stdio) and network (Streamable HTTP)
// upstreams share about MCP worker pools (SPEC 4.5):
//
//   - deciding a connection's mode from its first message (Detect): session
//     mode for a connection that starts with initialize (revisions up to
//     2025-11-25), request mode otherwise (stateless revision 2026-07-28);
//   - rewriting request ids and progress tokens to unique gateway ids on the
//     way to a worker and restoring the client's exact bytes on the way back
//     (Prepare, Table.FromWorker), so replies and request-scoped
//     notifications reach the connection that asked and no other;
//   - the table of requests in flight on a worker, with request_timeout
//     (Table), and the per-connection end of it (Route) that delivers to the
//     connection's Sink only while the connection and the upstream are open;
//   - reassembling the replies to a batch (Batch), and the per-upstream
//     metrics (Stats).
//
// It starts no goroutine and does no I/O of its own.
package pool
