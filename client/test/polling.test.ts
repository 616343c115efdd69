import assert from "node:assert/strict";
import { describe, it } from "node:test";

import type { SyncError } from "../src/connection-manager.js";
import { harness, message, pollAnswer } from "./fakes.js";

function pollingHarness(options = {}) {
  return harness({ websocket: false, ...options });
}

describe("Long polling", () => {
  it("starts from the client's clock, then follows the server's cursor", async () => {
    const h = pollingHarness({ topics: ["ops"], pollLimit: 50 });
    const connected = h.manager.connect();
    const first = h.http.last();
    assert.equal(first.url.pathname, "/api/sync/poll");
    assert.equal(first.url.searchParams.get("since"), String(h.clock.now()));
    assert.equal(first.url.searchParams.get("topics"), "ops");
    assert.equal(first.url.searchParams.get("limit"), "50");
    await h.clock.advance(30);
    first.answer(200, pollAnswer([], { cursor: "head", gap: true }));
    await connected;
    assert.deepEqual(h.resyncs, [], "a fresh start has nothing to resync");
    assert.equal(h.manager.getQuality().latencyMs, 30);
    await h.clock.advance(1000);
    const second = h.http.last();
    assert.equal(second.url.searchParams.get("cursor"), "head");
    assert.equal(second.url.searchParams.get("since"), null);
    second.answer(200, pollAnswer([message(1), message(2)]));
    await h.clock.advance(1000);
    h.http.last().answer(200, pollAnswer([message(2), message(3)], { gap: true }));
    await h.clock.advance(0);
    assert.deepEqual(
      h.received.map((m) => m.id),
      ["msg_1", "msg_2", "msg_3"],
    );
    assert.deepEqual(h.resyncs, ["gap"]);
  });

  it("after WebSocket failed, polls from when connect() was called", async () => {
    const h = harness();
    const askedAt = h.clock.now();
    void h.manager.connect();
    await h.clock.advance(10_000); // connectTimeout
    await h.clock.advance(10_000);
    await h.clock.advance(10_000);
    const poll = h.http.last();
    assert.ok(h.clock.now() > askedAt + 20_000);
    assert.equal(poll.url.searchParams.get("since"), String(askedAt));
  });

  it("asks again at once while the server says hasMore, else after pollingInterval", async () => {
    const h = pollingHarness({ pollingInterval: 1000 });
    void h.manager.connect();
    h.http.last().answer(200, pollAnswer([message(1)], { hasMore: true }));
    await h.clock.advance(0);
    assert.equal(h.http.calls.length, 2, "hasMore: the next page at once");
    await h.clock.advance(300);
    h.http.last().answer(200, pollAnswer([message(2)]));
    await h.clock.advance(699);
    assert.equal(h.http.calls.length, 2);
    await h.clock.advance(1);
    assert.equal(h.http.calls.length, 3, "a second after the previous poll started");
  });

  it("sends the token as an Authorization header", async () => {
    const h = pollingHarness({ token: "t0k" });
    void h.manager.connect();
    assert.equal(h.http.last().headers.Authorization, "Token t0k");
  });

  it("accepts the original design's base URL (…/api/sync)", async () => {
    const h = pollingHarness({ pollingUrl: "http://testserver/api/sync" });
    void h.manager.connect();
    assert.equal(h.http.last().url.pathname, "/api/sync/poll");
    const sent = h.manager.send({ type: "chat.message", payload: {} });
    assert.equal(h.http.last("/send").url.pathname, "/api/sync/send");
    h.http.last("/send").answer(201, { success: true, messageId: "m", timestamp: 1 });
    await sent;
  });

  it("honours Retry-After on 429 and 503", async () => {
    for (const status of [429, 503]) {
      const h = pollingHarness();
      void h.manager.connect();
      h.http.last().answer(200, pollAnswer([]));
      await h.clock.advance(1000);
      h.http.last().answer(
        status,
        { success: false, error: { code: "throttled", message: "slow down", details: {} } },
        { "Retry-After": "7" },
      );
      await h.clock.advance(0);
      const change = h.states[h.states.length - 1];
      assert.equal(change.state, "disconnected");
      assert.ok(change.retryInMs !== null && change.retryInMs >= 7000);
      const polls = h.http.calls.length;
      await h.clock.advance(6999);
      assert.equal(h.http.calls.length, polls, `no poll before Retry-After (${status})`);
      await h.clock.advance(1);
      assert.equal(h.http.calls.length, polls + 1);
      h.manager.disconnect();
    }
  });

  it("stops on 401: state failed (auth), no more polls", async () => {
    const h = pollingHarness();
    const connected = h.manager.connect();
    h.http.last().answer(401, {
      success: false,
      error: { code: "not_authenticated", message: "Log in.", details: {} },
    });
    await assert.rejects(connected, (error: SyncError) => error.code === "not_authenticated");
    assert.equal(h.manager.getState(), "failed");
    assert.equal(h.states[h.states.length - 1].reason, "auth");
    await h.clock.advance(10 * 60_000);
    assert.equal(h.http.calls.length, 1);
  });

  it("restarts from the server's position when its cursor is refused", async () => {
    const h = pollingHarness({ cursor: "garbage" });
    void h.manager.connect();
    assert.equal(h.http.last().url.searchParams.get("cursor"), "garbage");
    h.http.last().answer(400, {
      success: false,
      error: { code: "invalid_cursor", message: "bad", details: {} },
    });
    await h.clock.advance(0);
    assert.deepEqual(h.resyncs, ["invalid_cursor"]);
    await h.clock.advance(60_000);
    assert.equal(h.http.last().url.searchParams.get("cursor"), null);
    assert.ok(h.http.last().url.searchParams.get("since"));
  });

  it("subscribe() while polling asks again at once with the new topics", async () => {
    const h = pollingHarness({ topics: ["a"] });
    void h.manager.connect();
    h.http.last().answer(200, pollAnswer([]));
    await h.clock.advance(1000);
    const waiting = h.http.last();
    assert.deepEqual(await h.manager.subscribe(["b"]), ["a", "b"]);
    await h.clock.advance(0);
    assert.ok(waiting.aborted);
    assert.equal(h.http.last().url.searchParams.get("topics"), "a,b");
    assert.equal(h.manager.getState(), "connected", "a restart is no disconnection");
  });
});
