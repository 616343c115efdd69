import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { SyncError, getConnectionManager } from "../src/connection-manager.js";
import { harness } from "./fakes.js";

describe("send()", () => {
  it("over WebSocket: resolves with the ack matched by correlation", async () => {
    const h = harness();
    void h.manager.connect();
    const socket = h.lastSocket();
    socket.welcome();
    const first = h.manager.send({ type: "chat.message", payload: { text: "a" } });
    const second = h.manager.send({
      type: "chat.message",
      payload: { text: "b" },
      correlationId: "mine",
    });
    const [a, b] = socket.sentOf("chat.message");
    assert.equal(typeof a.id, "string");
    assert.equal(b.correlationId, "mine");
    socket.frame({ type: "ack", payload: { messageId: "m2", timestamp: 2 }, correlationId: "mine" });
    socket.frame({ type: "ack", payload: { messageId: "m1", timestamp: 1 }, correlationId: a.id });
    assert.deepEqual(await first, { messageId: "m1", timestamp: 1, via: "websocket" });
    assert.deepEqual(await second, { messageId: "m2", timestamp: 2, via: "websocket" });
    assert.equal(h.http.calls.length, 0);
  });

  it("over WebSocket: rejects with the error frame's code", async () => {
    const h = harness();
    void h.manager.connect();
    const socket = h.lastSocket();
    socket.welcome();
    const sent = h.manager.send({ type: "data.updated", payload: {} });
    const frame = socket.sentOf("data.updated")[0];
    socket.frame({
      type: "error",
      payload: { code: "reserved_type", message: "Reserved." },
      correlationId: frame.id,
    });
    await assert.rejects(sent, (error: SyncError) => {
      return error instanceof SyncError && error.code === "reserved_type";
    });
    assert.equal(h.manager.getState(), "connected", "the connection stays open");
  });

  it("over WebSocket: rejects with connection_lost when the socket closes first, or timeout", async () => {
    const h = harness({ requestTimeout: 5000 });
    void h.manager.connect();
    h.lastSocket().welcome();
    const late = assert.rejects(
      h.manager.send({ type: "chat.message", payload: {} }),
      (error: SyncError) => error.code === "timeout",
    );
    await h.clock.advance(5000);
    await late;
    const lost = h.manager.send({ type: "chat.message", payload: {} });
    h.lastSocket().end(1009);
    await assert.rejects(lost, (error: SyncError) => error.code === "connection_lost");
  });

  it("without WebSocket: POST /send with CSRF, resolving with the answer", async () => {
    const h = harness({ websocket: false, csrfToken: "csrf-value" });
    void h.manager.connect();
    const sent = h.manager.send({
      type: "chat.message",
      payload: { text: "hi" },
      id: "ignored-over-http",
      timestamp: 5,
    });
    const post = h.http.last("/send");
    assert.equal(post.method, "POST");
    assert.equal(post.url.pathname, "/api/sync/send");
    assert.equal(post.headers["X-CSRFToken"], "csrf-value");
    assert.equal(post.headers["Content-Type"], "application/json");
    assert.deepEqual(post.body, { type: "chat.message", payload: { text: "hi" } });
    post.answer(201, { success: true, messageId: "m9", timestamp: 9 });
    assert.deepEqual(await sent, { messageId: "m9", timestamp: 9, via: "http" });
  });

  it("same-origin: reads Django's csrftoken cookie for X-CSRFToken", async () => {
    const scope = globalThis as { document?: { cookie: string } };
    scope.document = { cookie: "theme=dark; csrftoken=from%20cookie; other=1" };
    try {
      const h = harness({ websocket: false });
      const sent = h.manager.send({ type: "chat.message", payload: {} });
      assert.equal(h.http.last("/send").headers["X-CSRFToken"], "from cookie");
      h.http.last("/send").answer(201, { success: true, messageId: "m", timestamp: 1 });
      await sent;
    } finally {
      delete scope.document;
    }
  });

  it("without WebSocket: rejects with the error envelope's code and status", async () => {
    const h = harness({ websocket: false, token: "t0k" });
    void h.manager.connect();
    const sent = h.manager.send({ type: "x", payload: {} });
    const post = h.http.last("/send");
    assert.equal(post.headers.Authorization, "Token t0k");
    assert.equal(post.headers["X-CSRFToken"], undefined, "no CSRF with a token");
    post.answer(
      429,
      { success: false, error: { code: "throttled", message: "Slow down.", details: {} } },
      { "Retry-After": "3" },
    );
    await assert.rejects(sent, (error: SyncError) => {
      assert.equal(error.code, "throttled");
      assert.equal(error.status, 429);
      assert.equal(error.retryAfterMs, 3000);
      return true;
    });
  });

  it("names a foreign error page by its status", async () => {
    const h = harness({ websocket: false });
    const sent = h.manager.send({ type: "x", payload: {} });
    h.http.last("/send").answer(502, "<html>Bad gateway</html>");
    await assert.rejects(sent, (error: SyncError) => error.code === "http_502");
  });
});

describe("getConnectionManager()", () => {
  it("returns one shared manager", () => {
    const manager = getConnectionManager({ websocket: false, environment: null });
    assert.equal(getConnectionManager(), manager);
    assert.equal(manager.getState(), "disconnected");
  });
});
