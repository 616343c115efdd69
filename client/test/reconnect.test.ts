import assert from "node:assert/strict";
import { describe, it } from "node:test";

import type { SyncError } from "../src/connection-manager.js";
import { harness, message, pollAnswer } from "./fakes.js";

/** The wait the manager announced with its last `disconnected` state. */
function lastRetry(h: ReturnType<typeof harness>): number {
  const change = [...h.states].reverse().find((s) => s.state === "disconnected");
  if (change === undefined || change.retryInMs === null) {
    throw new assert.AssertionError({ message: "no retry is scheduled" });
  }
  return change.retryInMs;
}

describe("Reconnection and backoff", () => {
  it("waits a full-jitter delay under a doubling ceiling between failed attempts", async () => {
    const h = harness({ random: () => 0.999, fallbackAfterFailures: 100 });
    void h.manager.connect();
    const waits: number[] = [];
    for (let attempt = 0; attempt < 6; attempt += 1) {
      h.lastSocket().end(1006);
      waits.push(lastRetry(h));
      await h.clock.advance(lastRetry(h));
    }
    assert.deepEqual(waits, [999, 1998, 3996, 7992, 15984, 29970]);
    assert.equal(h.manager.getQuality().reconnectAttempts, 6);
  });

  it("resets the backoff after a connection that stayed up", async () => {
    const h = harness({ random: () => 0.999, fallbackAfterFailures: 100 });
    void h.manager.connect();
    for (let attempt = 0; attempt < 3; attempt += 1) {
      h.lastSocket().end(1006);
      await h.clock.advance(lastRetry(h));
    }
    h.lastSocket().welcome();
    await h.clock.advance(2000); // up, but not long enough to count
    h.lastSocket().end(1006);
    assert.equal(lastRetry(h), 7992);
    await h.clock.advance(lastRetry(h));
    h.lastSocket().welcome();
    await h.clock.advance(10_000); // stableConnectionTime
    assert.equal(h.manager.getQuality().reconnectAttempts, 0);
    h.lastSocket().end(1006);
    assert.equal(lastRetry(h), 999);
  });

  it("fails after maxReconnectAttempts failed attempts in a row", async () => {
    const h = harness({ maxReconnectAttempts: 3, fallbackAfterFailures: 100 });
    const connected = h.manager.connect().catch((error: SyncError) => error.code);
    for (let attempt = 0; attempt < 3; attempt += 1) {
      h.lastSocket().end(1006);
      await h.clock.advance(lastRetry(h));
    }
    h.lastSocket().end(1006);
    assert.equal(await connected, "unreachable");
    assert.equal(h.sockets.length, 4, "the first attempt and 3 reconnects");
    assert.equal(h.manager.getState(), "failed");
    assert.equal(h.states[h.states.length - 1].reason, "unreachable");
  });

  it("retries at once when the network comes back or the page becomes visible", async () => {
    const h = harness({ fallbackAfterFailures: 100, reconnectDelay: 20_000 });
    void h.manager.connect();
    h.lastSocket().end(1006);
    assert.ok(lastRetry(h) >= 5000);
    h.environment.fire("online");
    assert.equal(h.sockets.length, 2, "attempted without waiting");
    assert.equal(h.manager.getQuality().reconnectAttempts, 0);
    h.lastSocket().end(1006);
    h.environment.fire("visible");
    assert.equal(h.sockets.length, 3);
  });

  it("while offline, waits for the network instead of using up attempts", async () => {
    const h = harness({ maxReconnectAttempts: 2 });
    void h.manager.connect();
    h.lastSocket().welcome();
    h.environment.fire("offline");
    h.lastSocket().end(1006);
    assert.equal(h.manager.getState(), "disconnected");
    assert.equal(h.states[h.states.length - 1].reason, "offline");
    await h.clock.advance(10 * 60_000);
    assert.equal(h.sockets.length, 1, "no attempt while offline");
    h.environment.fire("online");
    assert.equal(h.sockets.length, 2);
  });

  it("after failing for lack of network, starts again when it returns", async () => {
    const h = harness({ maxReconnectAttempts: 1, fallbackAfterFailures: 100 });
    const connected = h.manager.connect().catch(() => "failed");
    h.lastSocket().end(1006);
    await h.clock.advance(60_000);
    h.lastSocket().end(1006);
    assert.equal(await connected, "failed");
    h.environment.fire("online");
    assert.equal(h.sockets.length, 3);
    assert.equal(h.manager.getState(), "connecting");
  });
});

describe("Fallback to polling and back", () => {
  it("polls after WebSocket fails twice, resuming from the last WebSocket cursor", async () => {
    const h = harness();
    void h.manager.connect();
    const socket = h.lastSocket();
    socket.welcome({ cursor: "head" });
    socket.frame({ ...message(1) });
    socket.end(1006); // up less than stableConnectionTime, cut by no server code
    await h.clock.advance(lastRetry(h));
    h.lastSocket().end(1006); // handshake refused
    await h.clock.advance(lastRetry(h));
    assert.equal(h.sockets.length, 2, "no third WebSocket attempt");
    const poll = h.http.last();
    assert.equal(poll.url.searchParams.get("cursor"), "cursor-1");
    assert.equal(poll.url.searchParams.get("wait"), null, "the first poll answers at once");
    poll.answer(200, pollAnswer([message(1), message(2)]));
    await h.clock.advance(0);
    assert.equal(h.manager.getState(), "connected");
    assert.equal(h.manager.getQuality().transport, "polling");
    assert.deepEqual(
      h.received.map((m) => m.id),
      ["msg_1", "msg_2"],
    );
    await h.clock.advance(1000); // pollingInterval
    const longPoll = h.http.last();
    assert.equal(longPoll.url.searchParams.get("cursor"), "cursor-2");
    assert.equal(longPoll.url.searchParams.get("wait"), "25");
  });

  it("a socket closed on purpose by the server (4409, 4413) is no reason to poll", async () => {
    const h = harness();
    void h.manager.connect();
    for (const code of [4409, 4413, 4409]) {
      h.lastSocket().welcome();
      h.lastSocket().end(code);
      await h.clock.advance(lastRetry(h));
    }
    assert.equal(h.sockets.length, 4);
    assert.equal(h.http.calls.length, 0);
  });

  it("a subscribe() waiting for a poll is settled by the WebSocket that takes over", async () => {
    const h = harness({ topics: ["a"], fallbackRetryInterval: 30_000 });
    void h.manager.connect();
    h.lastSocket().end(1006);
    await h.clock.advance(lastRetry(h));
    h.lastSocket().end(1006);
    await h.clock.advance(lastRetry(h)); // polling from now on
    h.http.last().answer(200, pollAnswer([]));
    await h.clock.advance(30_000);
    const probe = h.lastSocket();
    assert.equal(h.sockets.length, 3);
    const subscribed = h.manager.subscribe(["b"]);
    await h.clock.advance(0);
    assert.equal(h.http.last().url.searchParams.get("topics"), "a,b");
    probe.welcome(); // before that poll is answered
    assert.equal(h.manager.getQuality().transport, "websocket");
    const frame = probe.sentOf("subscribe")[0];
    assert.deepEqual(frame.payload, { topics: ["b"] });
    probe.frame({
      type: "error",
      payload: { code: "forbidden_topic", message: "no" },
      correlationId: frame.id,
    });
    await assert.rejects(subscribed, (error: SyncError) => error.code === "forbidden_topic");
    assert.deepEqual(await h.manager.unsubscribe([]), ["a"]);
    assert.equal(h.manager.getState(), "connected");
  });

  it("a topic added between polls and refused by the next one is dropped, not fatal", async () => {
    const h = harness({ topics: ["a"], websocket: false });
    void h.manager.connect();
    h.http.last().answer(200, pollAnswer([]));
    await h.clock.advance(1000);
    h.http.last().fail(new Error("network down"));
    await h.clock.advance(0);
    assert.equal(h.manager.getState(), "disconnected");
    // Nobody can check it now: it resolves, and the next poll carries it.
    assert.deepEqual(await h.manager.subscribe(["secret"]), ["a", "secret"]);
    await h.clock.advance(lastRetry(h));
    assert.equal(h.http.last().url.searchParams.get("topics"), "a,secret");
    h.http.last().answer(403, {
      success: false,
      error: { code: "forbidden_topic", message: "no", details: {} },
    });
    await h.clock.advance(0);
    assert.ok(h.errors.includes("forbidden_topic"), "onError reports the refusal");
    assert.equal(h.http.last().url.searchParams.get("topics"), "a");
    h.http.last().answer(200, pollAnswer([]));
    await h.clock.advance(0);
    assert.equal(h.manager.getState(), "connected");
  });

  it("tries WebSocket again while polling, switches back, and stops polling", async () => {
    const h = harness({ fallbackRetryInterval: 30_000 });
    void h.manager.connect();
    h.lastSocket().end(1006);
    await h.clock.advance(lastRetry(h));
    h.lastSocket().end(1006);
    await h.clock.advance(lastRetry(h)); // polling from now on
    h.http.last().answer(200, pollAnswer([message(1)]));
    await h.clock.advance(1000);
    assert.equal(h.http.last().url.searchParams.get("wait"), "25");
    await h.clock.advance(25_000);
    h.http.last().answer(200, pollAnswer([], { cursor: "cursor-1" })); // nothing new
    await h.clock.advance(4000);
    // A WebSocket attempt fails: polling goes on as before.
    assert.equal(h.sockets.length, 3);
    h.lastSocket().end(1006);
    assert.equal(h.manager.getState(), "connected");
    assert.equal(h.manager.getQuality().transport, "polling");
    // The next one works: the long poll in flight is aborted.
    await h.clock.advance(30_000);
    assert.equal(h.sockets.length, 4);
    const probe = h.lastSocket();
    assert.equal(probe.query.get("cursor"), "cursor-1");
    const inFlight = h.http.last();
    assert.equal(inFlight.aborted, false);
    probe.welcome({ cursor: "cursor-1", recovered: true });
    assert.equal(h.manager.getQuality().transport, "websocket");
    assert.ok(inFlight.aborted, "the long poll in flight was aborted");
    const polls = h.http.calls.length;
    probe.frame({ ...message(1) }); // a replayed duplicate
    probe.frame({ ...message(2) });
    for (let minute = 0; minute < 10; minute += 1) {
      await h.clock.advance(30_000);
      probe.frame({ type: "ping", timestamp: minute }); // the server's heartbeat
    }
    assert.equal(h.http.calls.length, polls, "never polls while WebSocket is up");
    assert.equal(h.sockets.length, 4);
    assert.deepEqual(
      h.received.map((m) => m.id),
      ["msg_1", "msg_2"],
    );
    const changes = h.states.map((s) => `${s.state}/${s.transport}`);
    assert.equal(changes[changes.length - 1], "connected/websocket");
    assert.equal(changes.filter((c) => c === "connected/polling").length, 1);
  });

  it("goes back to WebSocket first when polling does not work either (server down)", async () => {
    const h = harness();
    void h.manager.connect();
    h.lastSocket().end(1006);
    await h.clock.advance(lastRetry(h));
    h.lastSocket().end(1006);
    await h.clock.advance(lastRetry(h));
    h.http.last().fail(new TypeError("Failed to fetch"));
    await h.clock.advance(0);
    assert.deepEqual(h.errors, ["network_error"]);
    await h.clock.advance(lastRetry(h));
    assert.equal(h.sockets.length, 3, "WebSocket tried first again");
    h.lastSocket().welcome();
    assert.equal(h.manager.getQuality().transport, "websocket");
  });
});
