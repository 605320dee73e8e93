import { test } from "node:test";
import assert from "node:assert/strict";
import { backoffDelay, nextStep, retryAfterFromReason } from "../dist/index.js";

test("backoff: full jitter between 0 and the capped exponential", () => {
  const backoff = { initialMs: 100, maxMs: 5000 };
  for (let attempt = 0; attempt < 40; attempt++) {
    const ceiling = Math.min(5000, 100 * 2 ** attempt);
    assert.equal(backoffDelay(attempt, backoff, () => 0), 0);
    const top = backoffDelay(attempt, backoff, () => 0.999999);
    assert.ok(top < ceiling && top >= ceiling - 1, `attempt ${attempt}: ${top} vs ${ceiling}`);
    for (let i = 0; i < 50; i++) {
      const d = backoffDelay(attempt, backoff);
      assert.ok(d >= 0 && d < ceiling, `attempt ${attempt}: ${d}`);
    }
  }
  // Defaults: 250 ms doubling up to 10 s.
  assert.ok(backoffDelay(0, undefined, () => 0.999) < 250);
  assert.ok(backoffDelay(100, undefined, () => 0.999) < 10_000);
  assert.ok(backoffDelay(100, undefined, () => 0.999) > 9_000);
});

test("close codes: 1012 at once, 1013 after its reason's time, refusals never", () => {
  assert.deepEqual(nextStep({ code: 1012 }), { action: "now" });
  assert.deepEqual(nextStep({ code: 1013, reason: "document is crash-looping; retry in 7s" }), { action: "after", ms: 7000 });
  assert.deepEqual(nextStep({ code: 1013, reason: "server busy" }), { action: "backoff" });
  for (const code of [1006, 1011, 1001, 1005]) assert.deepEqual(nextStep({ code }), { action: "backoff" }, String(code));
  for (const code of [1008, 1000, 4000, 4403, 4999]) {
    assert.deepEqual(nextStep({ code }), { action: "stop" }, String(code));
    assert.deepEqual(nextStep({ code }, true), { action: "backoff" }, `${code} with retryRefusals`);
  }
});

test("refused handshakes: 401/403 never, 429/503 after Retry-After", () => {
  assert.deepEqual(nextStep({ status: 401 }), { action: "stop" });
  assert.deepEqual(nextStep({ status: 403 }), { action: "stop" });
  assert.deepEqual(nextStep({ status: 401 }, true), { action: "backoff" });
  assert.deepEqual(nextStep({ status: 429, retryAfter: 3 }), { action: "after", ms: 3000 });
  assert.deepEqual(nextStep({ status: 503 }), { action: "backoff" });
  assert.deepEqual(nextStep({ status: 500 }), { action: "backoff" });
  assert.equal(retryAfterFromReason("too many new documents from this address; retry in 12s"), 12);
  assert.equal(retryAfterFromReason(""), undefined);
});
