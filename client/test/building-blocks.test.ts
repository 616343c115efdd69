import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { Backoff, RecentIds, parseRetryAfter } from "../src/connection-manager.js";

describe("Backoff (full jitter)", () => {
  it("draws each delay below a ceiling that doubles up to the maximum", () => {
    const almostOne = new Backoff(1000, 8000, () => 0.999999);
    const delays = Array.from({ length: 6 }, () => almostOne.next());
    assert.deepEqual(delays, [999, 1999, 3999, 7999, 7999, 7999]);
    const zero = new Backoff(1000, 8000, () => 0);
    assert.deepEqual([zero.next(), zero.next()], [0, 0]);
  });

  it("spreads delays over the whole range, never beyond the ceiling", () => {
    const backoff = new Backoff(1000, 30000);
    for (let attempt = 0; attempt < 8; attempt += 1) {
      const ceiling = Math.min(30000, 1000 * 2 ** attempt);
      backoff.attempts = attempt;
      const delays = Array.from({ length: 200 }, () => {
        backoff.attempts = attempt;
        return backoff.next();
      });
      assert.ok(delays.every((delay) => delay >= 0 && delay < ceiling));
      assert.ok(Math.min(...delays) < ceiling * 0.2, "low delays drawn");
      assert.ok(Math.max(...delays) > ceiling * 0.8, "high delays drawn");
    }
  });

  it("counts attempts and starts over after reset()", () => {
    const backoff = new Backoff(1000, 30000, () => 0.999999);
    backoff.next();
    backoff.next();
    assert.equal(backoff.attempts, 2);
    backoff.reset();
    assert.equal(backoff.attempts, 0);
    assert.equal(backoff.next(), 999);
  });
});

describe("RecentIds", () => {
  it("knows a duplicate and forgets the oldest ids past its capacity", () => {
    const ids = new RecentIds(3);
    assert.equal(ids.add("a"), true);
    assert.equal(ids.add("a"), false);
    ids.add("b");
    ids.add("c");
    ids.add("d"); // "a" goes
    assert.equal(ids.add("b"), false);
    assert.equal(ids.add("a"), true);
  });
});

describe("parseRetryAfter", () => {
  it("reads seconds and HTTP dates", () => {
    assert.equal(parseRetryAfter("7", 0), 7000);
    assert.equal(parseRetryAfter(null, 0), null);
    const now = Date.parse("Sun, 29 Nov 2026 10:00:00 GMT");
    assert.equal(parseRetryAfter("Sun, 29 Nov 2026 10:00:30 GMT", now), 30000);
    assert.equal(parseRetryAfter("soon", now), null);
  });
});
