import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { SyncError } from "../src/connection-manager.js";
import { harness, message, settle } from "./fakes.js";

function lastRetryIn(h: ReturnType<typeof harness>): number {
  return h.states[h.states.length - 1].retryInMs ?? 0;
}

describe("WebSocket connection", () => {
  it("goes connecting, then connected once the server says established", async () => {
    const h = harness({ topics: ["ops"], token: "t0k" });
    const connected = h.manager.connect();
    assert.equal(h.manager.getState(), "connecting");
    const socket = h.lastSocket();
    assert.equal(socket.query.get("topics"), "ops");
    assert.equal(socket.query.get("token"), "t0k");
    assert.equal(socket.query.get("cursor"), null, "a fresh start has no cursor");
    socket.welcome();
    await connected;
    assert.deepEqual(
      h.states.map((s) => [s.state, s.transport]),
      [
        ["connecting", "websocket"],
        ["connected", "websocket"],
      ],
    );
    assert.equal(h.manager.getQuality().transport, "websocket");
    assert.equal(h.http.calls.length, 0, "no polling while WebSocket is up");
  });

  it("resolves relative URLs against the page, ws: for http: and wss: for https:", async () => {
    const scope = globalThis as { location?: { href: string } };
    scope.location = { href: "https://example.test/app/page" };
    try {
      const h = harness({ websocketUrl: "/ws" });
      h.manager.connect().catch(() => {});
      assert.equal(h.lastSocket().url, "wss://example.test/ws");
      h.manager.disconnect();
    } finally {
      delete scope.location;
    }
  });

  it("delivers each message once, in order, and counts them", async () => {
    const h = harness();
    void h.manager.connect();
    const socket = h.lastSocket();
    socket.welcome();
    for (const n of [1, 2, 2, 3, 1]) socket.frame({ ...message(n) });
    assert.deepEqual(
      h.received.map((m) => m.id),
      ["msg_1", "msg_2", "msg_3"],
    );
    const quality = h.manager.getQuality();
    assert.equal(quality.messagesReceived, 3);
    assert.equal(quality.lastMessageAt, h.clock.now());
  });

  it("treats a message of a protocol type (a staff broadcast) as a message", async () => {
    const h = harness();
    void h.manager.connect();
    h.lastSocket().welcome();
    h.lastSocket().frame({ ...message(1, { type: "pong", userId: null }) });
    assert.deepEqual(
      h.received.map((m) => m.type),
      ["pong"],
    );
  });

  it("reconnects with the cursor of the last message and the current topics", async () => {
    const h = harness({ topics: ["ops"] });
    void h.manager.connect();
    const first = h.lastSocket();
    first.welcome({ cursor: "head-0" });
    first.frame({ ...message(1) });
    first.frame({ ...message(2) });
    first.end(1001); // server shutting down
    const retry = h.states[h.states.length - 1];
    assert.equal(retry.state, "disconnected");
    assert.equal(retry.reason, "connection_lost");
    assert.ok(retry.retryInMs !== null && retry.retryInMs < 1000);
    await h.clock.advance(retry.retryInMs ?? 0);
    const second = h.lastSocket();
    assert.notEqual(second, first);
    assert.equal(second.query.get("cursor"), "cursor-2");
    assert.equal(second.query.get("topics"), "ops");
    // The replay repeats message 2 (already seen), then brings 3.
    second.welcome({ cursor: "cursor-3", recovered: true });
    second.frame({ ...message(2) });
    second.frame({ ...message(3) });
    assert.deepEqual(
      h.received.map((m) => m.id),
      ["msg_1", "msg_2", "msg_3"],
    );
    assert.deepEqual(h.resyncs, []);
    assert.equal(h.manager.getCursor(), "cursor-3");
  });

  it("takes the welcome's cursor on a fresh start, so a reconnect resumes from it", async () => {
    const h = harness();
    void h.manager.connect();
    h.lastSocket().welcome({ cursor: "head-7" });
    h.lastSocket().end(1006);
    await h.clock.advance(60_000);
    assert.equal(h.lastSocket().query.get("cursor"), "head-7");
  });

  it("raises the resync event on recovered: false and resumes from the server's cursor", async () => {
    const h = harness({ cursor: "old-epoch" });
    void h.manager.connect();
    assert.equal(h.lastSocket().query.get("cursor"), "old-epoch");
    h.lastSocket().welcome({ cursor: "new-head", recovered: false });
    assert.deepEqual(h.resyncs, ["recovered_false"]);
    assert.equal(h.manager.getCursor(), "new-head");
  });

  it("drops a cursor the server refuses (4400 invalid_cursor), raises resync, retries without it", async () => {
    const h = harness({ cursor: "garbage" });
    void h.manager.connect();
    const socket = h.lastSocket();
    socket.readyState = 1;
    socket.frame({ type: "error", payload: { code: "invalid_cursor", message: "bad" } });
    socket.end(4400);
    assert.deepEqual(h.resyncs, ["invalid_cursor"]);
    await h.clock.advance(60_000);
    assert.equal(h.lastSocket().query.get("cursor"), null);
    assert.notEqual(h.manager.getState(), "failed");
  });

  it("stops on 4401: state failed (auth), connect() rejects, no retry", async () => {
    const h = harness();
    const connected = h.manager.connect();
    h.lastSocket().readyState = 1;
    h.lastSocket().end(4401);
    await assert.rejects(connected, (error: SyncError) => error.code === "auth");
    assert.equal(h.manager.getState(), "failed");
    assert.equal(h.states[h.states.length - 1].reason, "auth");
    await h.clock.advance(10 * 60_000);
    h.environment.fire("online");
    h.environment.fire("visible");
    await settle();
    assert.equal(h.sockets.length, 1, "never retried");
    assert.equal(h.http.calls.length, 0);
  });

  it("stops on 4403 (a topic refused on the connect URL)", async () => {
    const h = harness({ topics: ["secret"] });
    const connected = h.manager.connect().catch((error: SyncError) => error.code);
    h.lastSocket().readyState = 1;
    h.lastSocket().frame({ type: "error", payload: { code: "forbidden_topic", message: "no" } });
    h.lastSocket().end(4403);
    assert.equal(await connected, "forbidden_topic");
    assert.equal(h.states[h.states.length - 1].reason, "forbidden");
    await h.clock.advance(10 * 60_000);
    assert.equal(h.sockets.length, 1);
  });

  it("answers the server's ping, measures latency with its own, and keeps working", async () => {
    const h = harness({ pingInterval: 5000 });
    void h.manager.connect();
    const socket = h.lastSocket();
    socket.welcome();
    socket.frame({ type: "ping", timestamp: 1 });
    assert.equal(socket.sentOf("pong").length, 1);
    const ping = socket.sentOf("ping")[0];
    assert.ok(ping, "a ping at once after the welcome");
    await h.clock.advance(42);
    socket.frame({ type: "pong", correlationId: ping.id, timestamp: 2 });
    assert.equal(h.manager.getQuality().latencyMs, 42);
    await h.clock.advance(5000);
    assert.equal(socket.sentOf("ping").length, 2, "then one every pingInterval");
  });

  it("replaces a socket whose server pings stop (watchdog)", async () => {
    const h = harness();
    void h.manager.connect();
    const socket = h.lastSocket();
    socket.welcome({ heartbeatInterval: 1000 });
    for (let i = 0; i < 5; i += 1) {
      await h.clock.advance(1000);
      socket.frame({ type: "ping", timestamp: i });
    }
    assert.equal(socket.closedByClient, null, "pings keep it alive");
    await h.clock.advance(2000);
    assert.equal(socket.closedByClient, 4000, "2 intervals of silence: closed");
    const change = h.states[h.states.length - 1];
    assert.equal(change.state, "disconnected");
    assert.equal(change.reason, "heartbeat_timeout");
    await h.clock.advance(change.retryInMs ?? 0);
    assert.equal(h.sockets.length, 2, "and replaced");
  });

  it("gives up on a handshake that never completes (connectTimeout)", async () => {
    const h = harness({ connectTimeout: 3000 });
    void h.manager.connect();
    await h.clock.advance(3000);
    assert.equal(h.sockets[0].closedByClient, 4000);
    assert.equal(h.manager.getState(), "disconnected");
  });

  it("subscribe() sends a subscribe frame and resolves with the server's topics", async () => {
    const h = harness({ topics: ["a"] });
    void h.manager.connect();
    const socket = h.lastSocket();
    socket.welcome();
    const done = h.manager.subscribe(["b"]);
    const frame = socket.sentOf("subscribe")[0];
    assert.deepEqual(frame.payload, { topics: ["b"] });
    socket.frame({ type: "subscribed", payload: { topics: ["a", "b"] }, correlationId: frame.id });
    assert.deepEqual(await done, ["a", "b"]);
    const refused = h.manager.subscribe(["secret"]);
    const second = socket.sentOf("subscribe")[1];
    socket.frame({
      type: "error",
      payload: { code: "forbidden_topic", message: "no" },
      correlationId: second.id,
    });
    await assert.rejects(refused, (error: SyncError) => error.code === "forbidden_topic");
    assert.deepEqual(await h.manager.unsubscribe([]), ["a", "b"], "a refused topic is dropped");
  });

  it("sends subscription changes made while connecting once established", async () => {
    const h = harness({ topics: ["a"] });
    void h.manager.connect();
    const socket = h.lastSocket();
    assert.deepEqual(await h.manager.subscribe(["b"]), ["a", "b"]);
    socket.welcome();
    assert.deepEqual(socket.sentOf("subscribe")[0].payload, { topics: ["b"] });
  });

  it("disconnect() closes with 1000, stops every timer, and reports the client as the reason", async () => {
    const h = harness();
    void h.manager.connect();
    const socket = h.lastSocket();
    socket.welcome();
    h.manager.disconnect();
    assert.equal(socket.closedByClient, 1000);
    assert.equal(h.manager.getState(), "disconnected");
    assert.equal(h.states[h.states.length - 1].reason, "client");
    await h.clock.advance(10 * 60_000);
    assert.equal(h.sockets.length, 1);
    assert.equal(h.http.calls.length, 0);
  });
});

describe("Listeners", () => {
  it("one that throws stops neither the others nor the connection", async () => {
    const thrown: unknown[] = [];
    const realSetTimeout = globalThis.setTimeout;
    // The client rethrows a listener's error from a timer, for the console.
    globalThis.setTimeout = ((callback: () => void) => {
      try {
        callback();
      } catch (error) {
        thrown.push(error);
      }
    }) as typeof setTimeout;
    try {
      const h = harness();
      h.manager.onMessage(() => {
        throw new Error("a bug in the page");
      });
      const after: string[] = [];
      h.manager.onMessage((m) => after.push(m.id));
      void h.manager.connect();
      h.lastSocket().welcome();
      h.lastSocket().frame({ ...message(1) });
      h.lastSocket().frame({ ...message(2) });
      assert.deepEqual(after, ["msg_1", "msg_2"]);
      assert.equal(thrown.length, 2);
      assert.equal(h.manager.getState(), "connected");
    } finally {
      globalThis.setTimeout = realSetTimeout;
    }
  });

  it("each on…() returns a function that removes the listener", async () => {
    const h = harness();
    const seen: string[] = [];
    const stop = h.manager.onMessage((m) => seen.push(m.id));
    void h.manager.connect();
    h.lastSocket().welcome();
    h.lastSocket().frame({ ...message(1) });
    stop();
    h.lastSocket().frame({ ...message(2) });
    assert.deepEqual(seen, ["msg_1"]);
  });
});

describe("Starting again", () => {
  it("connect() after disconnect() resumes from the last cursor, with no duplicate", async () => {
    const h = harness();
    void h.manager.connect();
    h.lastSocket().welcome();
    h.lastSocket().frame({ ...message(1) });
    h.manager.disconnect();
    const again = h.manager.connect();
    assert.equal(h.lastSocket().query.get("cursor"), "cursor-1");
    h.lastSocket().welcome({ recovered: true });
    await again;
    h.lastSocket().frame({ ...message(1) });
    h.lastSocket().frame({ ...message(2) });
    assert.deepEqual(
      h.received.map((m) => m.id),
      ["msg_1", "msg_2"],
    );
  });
});

describe("WebSocket failures", () => {
  it("counts a WebSocket the browser refuses to create as a failed attempt", async () => {
    const h = harness({
      WebSocketImpl: class {
        constructor() {
          throw new Error("SecurityError: insecure WebSocket from an https page");
        }
      } as never,
    });
    void h.manager.connect();
    await h.clock.advance(0);
    assert.deepEqual(h.errors, ["websocket_error"]);
    assert.equal(h.manager.getState(), "disconnected");
    await h.clock.advance(60_000);
    await h.clock.advance(60_000);
    assert.equal(h.manager.getQuality().transport, null);
    assert.ok(h.http.calls.length >= 1, "fell back to polling");
  });

  it("fails at once on an error event, even when no close event follows", async () => {
    const h = harness();
    void h.manager.connect();
    h.lastSocket().onerror?.({}); // Node's WebSocket on a refused handshake
    assert.equal(h.manager.getState(), "disconnected");
    await h.clock.advance(lastRetryIn(h));
    assert.equal(h.sockets.length, 2);
    h.lastSocket().onerror?.({});
    h.lastSocket().onclose?.({ code: 1006 }); // a browser's close, after: ignored
    assert.equal(h.states.filter((s) => s.state === "disconnected").length, 2);
  });

  it("when the network returns, replaces a connected socket that no longer answers", async () => {
    const h = harness({ requestTimeout: 3000 });
    void h.manager.connect();
    const socket = h.lastSocket();
    socket.welcome();
    h.environment.fire("online");
    const ping = socket.sentOf("ping")[0];
    assert.ok(ping, "a ping checks the socket");
    await h.clock.advance(3000);
    assert.equal(socket.closedByClient, 4000);
    assert.equal(h.states[h.states.length - 1].reason, "heartbeat_timeout");
  });

  it("keeps a connected socket that answers the check", async () => {
    const h = harness({ requestTimeout: 3000 });
    void h.manager.connect();
    const socket = h.lastSocket();
    socket.welcome();
    h.environment.fire("visible");
    const ping = socket.sentOf("ping")[0];
    socket.frame({ type: "pong", correlationId: ping.id, timestamp: 1 });
    await h.clock.advance(3000);
    assert.equal(socket.closedByClient, null);
    assert.equal(h.manager.getState(), "connected");
  });
});
