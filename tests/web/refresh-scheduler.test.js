// When the history table re-reads its rows (RefreshScheduler, web/js/history-model.js): at most
// one re-read in flight and one queued, whatever the event rate; a job that ends or goes quiet
// makes every loaded row catch up.

import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { QUIET_MS, REFRESH_MS, RefreshScheduler } from "../../web/js/history-model.js";
import { FakeClock } from "./clock.js";

/** A scheduler whose re-reads are recorded ("all" or "visible") and take `takesMs` each. */
function scheduler({ takesMs = 0, fails = false } = {}) {
  const clock = new FakeClock();
  /** @type {string[]} */
  const rereads = [];
  const reread = async (all) => {
    rereads.push(all ? "all" : "visible");
    if (takesMs) await new Promise((resolve) => clock.setTimeout(() => resolve(undefined), takesMs));
    if (fails) throw new Error("the gateway is unreachable");
  };
  return { clock, rereads, refresh: new RefreshScheduler(reread, clock) };
}

const job = (done, { finished = false } = {}) => ({
  job_id: "job-2",
  kind: "rescore",
  model_version: 2,
  done,
  total: 100,
  finished,
});

describe("scheduling re-reads", () => {
  test("a burst of events is one re-read", async () => {
    const { clock, rereads, refresh } = scheduler();
    for (let i = 0; i < 50; i += 1) refresh.schedule(REFRESH_MS);
    await clock.advance(REFRESH_MS - 1);
    assert.deepEqual(rereads, []);
    await clock.advance(1);
    assert.deepEqual(rereads, ["visible"]);
    await clock.advance(10 * REFRESH_MS);
    assert.deepEqual(rereads, ["visible"]);
  });

  test("events during a re-read queue exactly one more, which keeps a request for every row", async () => {
    const { clock, rereads, refresh } = scheduler({ takesMs: 2_000 });
    refresh.schedule(0);
    await clock.advance(0);
    assert.deepEqual(rereads, ["visible"]);
    for (let i = 0; i < 10; i += 1) refresh.schedule(0);
    refresh.schedule(0, { all: true });

    await clock.advance(2_000 + REFRESH_MS - 1);
    assert.deepEqual(rereads, ["visible"]);
    await clock.advance(1);
    assert.deepEqual(rereads, ["visible", "all"]);
    await clock.advance(60_000);
    assert.deepEqual(rereads, ["visible", "all"]);
  });

  test("a re-read that fails does not stop the next one", async () => {
    const { clock, rereads, refresh } = scheduler({ fails: true });
    refresh.schedule(0);
    await clock.advance(0);
    refresh.schedule(0, { all: true });
    await clock.advance(0);
    assert.deepEqual(rereads, ["visible", "all"]);
  });
});

describe("following a rescore job", () => {
  test("while it runs, the rows on screen follow it; when it finishes, every row catches up", async () => {
    const { clock, rereads, refresh } = scheduler();
    refresh.followJob(job(10), true);
    await clock.advance(REFRESH_MS);
    assert.deepEqual(rereads, ["visible"]);

    refresh.followJob(job(100, { finished: true }), false);
    await clock.advance(0);
    assert.deepEqual(rereads, ["visible", "all"]);
    await clock.advance(QUIET_MS * 2);
    assert.deepEqual(rereads, ["visible", "all"]); // no quiet timer left behind
    assert.equal(clock.pending, 0);
  });

  test("a job whose count stops moving makes every row catch up after QUIET_MS", async () => {
    const { clock, rereads, refresh } = scheduler();
    refresh.followJob(job(10), true);
    await clock.advance(REFRESH_MS);
    refresh.followJob(job(10), true); // the same count again: not moving
    await clock.advance(REFRESH_MS);
    assert.deepEqual(rereads, ["visible", "visible"]);

    await clock.advance(QUIET_MS - 2 * REFRESH_MS - 1);
    assert.deepEqual(rereads, ["visible", "visible"]);
    await clock.advance(1);
    assert.deepEqual(rereads, ["visible", "visible", "all"]);
  });

  test("a job that keeps moving never counts as quiet", async () => {
    const { clock, rereads, refresh } = scheduler();
    for (let done = 1; done <= 10; done += 1) {
      refresh.followJob(job(done), true);
      await clock.advance(QUIET_MS - 1);
    }
    assert.ok(rereads.length > 0);
    assert.ok(!rereads.includes("all"), `${rereads}`);
  });
});
