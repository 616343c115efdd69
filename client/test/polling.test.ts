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

  it("subscribe() while polling resolves once a poll with the new topics is answered", async () => {
    const h = pollingHarness({ topics: ["a"] });
    void h.manager.connect();
    h.http.last().answer(200, pollAnswer([]));
    await h.clock.advance(1000);
    const waiting = h.http.last();
    let result: string[] | null = null;
    const subscribed = h.manager.subscribe(["b"]).then((topics) => (result = topics));
    await h.clock.advance(0);
    assert.ok(waiting.aborted);
    const asked = h.http.last();
    assert.equal(asked.url.searchParams.get("topics"), "a,b");
    assert.equal(result, null, "not before the server has seen the topic");
    asked.answer(200, pollAnswer([]));
    assert.deepEqual(await subscribed, ["a", "b"]);
    assert.equal(h.manager.getState(), "connected", "a restart is no disconnection");
  });

  for (const [status, code] of [
    [403, "forbidden_topic"],
    [400, "invalid_topics"],
  ] as const) {
    it(`subscribe() refused while polling (${code}) rejects and polls on`, async () => {
      const h = pollingHarness({ topics: ["a"] });
      void h.manager.connect();
      h.http.last().answer(200, pollAnswer([]));
      await h.clock.advance(1000);
      const subscribed = h.manager.subscribe(["secret"]);
      await h.clock.advance(0);
      assert.equal(h.http.last().url.searchParams.get("topics"), "a,secret");
      h.http.last().answer(status, { success: false, error: { code, message: "no", details: {} } });
      await assert.rejects(subscribed, (error: SyncError) => error.code === code);
      await h.clock.advance(0);
      assert.equal(h.manager.getState(), "connected");
      assert.ok(!h.states.some((change) => change.state === "failed"));
      const next = h.http.last();
      assert.equal(next.url.searchParams.get("topics"), "a", "polls on with the topics it had");
      next.answer(200, pollAnswer([message(1)]));
      await h.clock.advance(0);
      assert.deepEqual(
        h.received.map((m) => m.id),
        ["msg_1"],
      );
      // Unsubscribe still works, and the manager recovers nothing it dropped.
      assert.deepEqual(await h.manager.unsubscribe(["a"]), []);
      await h.clock.advance(0);
      assert.equal(h.http.last().url.searchParams.get("topics"), null);
      assert.equal(h.manager.getState(), "connected");
    });
  }

  it("of two subscribe() calls, only the one whose topic the server names is refused", async () => {
    const h = pollingHarness({ topics: ["a"] });
    void h.manager.connect();
    h.http.last().answer(200, pollAnswer([]));
    await h.clock.advance(1000);
    const secret = h.manager.subscribe(["secret"]);
    const news = h.manager.subscribe(["news"]);
    await h.clock.advance(0);
    assert.equal(h.http.last().url.searchParams.get("topics"), "a,secret,news");
    h.http.last().answer(403, {
      success: false,
      error: { code: "forbidden_topic", message: "no", details: { topic: "secret" } },
    });
    await assert.rejects(secret, (error: SyncError) => error.code === "forbidden_topic");
    await h.clock.advance(0);
    assert.equal(h.http.last().url.searchParams.get("topics"), "a,news");
    h.http.last().answer(200, pollAnswer([]));
    assert.deepEqual(await news, ["a", "news"]);
    assert.equal(h.manager.getState(), "connected");
  });

  it("a refusal naming a topic accepted before is no subscribe() error: failed", async () => {
    const h = pollingHarness({ topics: ["a"] });
    void h.manager.connect();
    h.http.last().answer(200, pollAnswer([]));
    await h.clock.advance(1000);
    const news = h.manager.subscribe(["news"]);
    await h.clock.advance(0);
    h.http.last().answer(403, {
      success: false,
      error: { code: "forbidden_topic", message: "no", details: { topic: "a" } },
    });
    await assert.rejects(news, (error: SyncError) => error.code === "forbidden_topic");
    assert.equal(h.manager.getState(), "failed");
    assert.equal(h.states[h.states.length - 1].reason, "forbidden");
  });

  it("a topic refused from the start still fails (forbidden)", async () => {
    const h = pollingHarness({ topics: ["secret"] });
    const connected = h.manager.connect();
    h.http.last().answer(403, {
      success: false,
      error: { code: "forbidden_topic", message: "no", details: {} },
    });
    await assert.rejects(connected, (error: SyncError) => error.code === "forbidden_topic");
    assert.equal(h.manager.getState(), "failed");
    assert.equal(h.states[h.states.length - 1].reason, "forbidden");
  });
});

describe("Long polling: the start position by the server's clock", () => {
  it("a client clock ahead: asks again from connect() by the server's clock", async () => {
    const h = pollingHarness();
    const askedAt = h.clock.now();
    const ahead = 20_000; // the client's clock runs 20 s fast
    void h.manager.connect();
    const first = h.http.last();
    assert.equal(first.url.searchParams.get("since"), String(askedAt));
    assert.equal(first.url.searchParams.get("wait"), null, "answered at once");
    await h.clock.advance(20);
    // Nothing after `since` yet on the server: that moment is 20 s away.
    first.answer(200, pollAnswer([], { timestamp: h.clock.now() - ahead - 1, cursor: "late" }));
    await h.clock.advance(0);
    assert.equal(h.http.calls.length, 2, "asked again at once");
    const second = h.http.last();
    assert.equal(second.url.searchParams.get("cursor"), null);
    assert.equal(second.url.searchParams.get("wait"), null);
    const since = Number(second.url.searchParams.get("since"));
    // Measured to within half the 20 ms round trip (+1 ms).
    assert.ok(Math.abs(since - (askedAt - ahead)) <= 11, `since ${since - askedAt}`);
    second.answer(200, pollAnswer([message(1)], { timestamp: h.clock.now() - ahead - 1 }));
    await h.clock.advance(0);
    assert.deepEqual(
      h.received.map((m) => m.id),
      ["msg_1"],
      "the message published after connect() arrived",
    );
    await h.clock.advance(1000);
    assert.equal(h.http.last().url.searchParams.get("cursor"), "cursor-1");
  });

  it("a client clock behind: older messages are not delivered as new", async () => {
    const h = pollingHarness();
    const askedAt = h.clock.now();
    const behind = 20_000;
    const connected = h.manager.connect();
    const first = h.http.last();
    // From 20 s before connect() by the server's clock: an older message.
    first.answer(200, pollAnswer([message(1)], { timestamp: h.clock.now() + behind - 1 }));
    await h.clock.advance(0);
    assert.equal(h.received.length, 0, "the page from the wrong position is dropped unread");
    const second = h.http.last();
    assert.equal(second.url.searchParams.get("since"), String(askedAt + behind));
    second.answer(200, pollAnswer([message(2)], { timestamp: h.clock.now() + behind - 1 }));
    await connected;
    assert.deepEqual(
      h.received.map((m) => m.id),
      ["msg_2"],
    );
  });

  it("a clock a minute ahead (invalid_since): from connect() by the server's Date", async () => {
    const h = pollingHarness();
    const askedAt = h.clock.now(); // a whole second, as Date headers are
    const ahead = 120_000;
    void h.manager.connect();
    h.http.last().answer(
      400,
      { success: false, error: { code: "invalid_since", message: "ahead", details: {} } },
      { Date: new Date(h.clock.now() - ahead).toUTCString() },
    );
    await h.clock.advance(0);
    assert.equal(h.http.calls.length, 2, "asked again at once, not from the start");
    const second = h.http.last();
    const since = Number(second.url.searchParams.get("since"));
    // The Date header has whole seconds: within [server time, + 1 s).
    assert.ok(since >= askedAt - ahead && since < askedAt - ahead + 1000, `since ${since}`);
    assert.equal(h.manager.getState(), "connecting");
    // That answer's watermark (1 ms resolution) narrows it down.
    second.answer(200, pollAnswer([], { timestamp: h.clock.now() - ahead - 1 }));
    await h.clock.advance(0);
    assert.equal(h.http.last().url.searchParams.get("since"), String(askedAt - ahead));
    h.http.last().answer(200, pollAnswer([message(1)], { timestamp: h.clock.now() - ahead - 1 }));
    await h.clock.advance(0);
    assert.equal(h.manager.getState(), "connected");
    assert.deepEqual(
      h.received.map((m) => m.id),
      ["msg_1"],
    );
  });

  it("uses the offset learnt from an earlier answer (POST /send's Date) at once", async () => {
    const h = pollingHarness();
    const ahead = 120_000;
    const sent = h.manager.send({ type: "chat.message", payload: {} });
    h.http.last("/send").answer(
      201,
      { success: true, messageId: "m", timestamp: 1 },
      { Date: new Date(h.clock.now() - ahead).toUTCString() },
    );
    await sent;
    await h.clock.advance(5000);
    const askedAt = h.clock.now();
    void h.manager.connect();
    const since = Number(h.http.last().url.searchParams.get("since"));
    assert.ok(since >= askedAt - ahead && since < askedAt - ahead + 1000, `since ${since}`);
  });
});
