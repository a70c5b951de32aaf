// Tests of sss.js with a scripted WebSocket, for what a correct server
// never does (frames before the SYNC reply that repeat its records) and
// for the timing rules (backoff with full jitter, heartbeat loss).
import { test } from "node:test";
import assert from "node:assert/strict";
import { connect } from "../../../server/sssjs/sss.js";

// FakeSocket records what the client sends; the test plays the server.
class FakeSocket {
  static all = [];
  constructor(url) {
    this.url = url;
    this.readyState = 0;
    this.sent = [];
    this.closed = null;
    FakeSocket.all.push(this);
  }
  send(data) {
    this.sent.push(data);
  }
  close(code, reason) {
    this.closed = { code, reason };
  }
  open() {
    this.readyState = 1;
    this.onopen && this.onopen({});
  }
  frame(obj) {
    this.onmessage && this.onmessage({ data: typeof obj === "string" ? obj : JSON.stringify(obj) });
  }
  end(code, reason = "") {
    this.readyState = 3;
    this.onclose && this.onclose({ code, reason });
  }
  json(i) {
    return JSON.parse(this.sent[i]);
  }
}

const until = async (cond, what) => {
  for (let i = 0; i < 500; i++) {
    if (cond()) return;
    await new Promise((r) => setTimeout(r, 5));
  }
  throw new Error("timed out waiting for " + what);
};

function fakeClient(t, options = {}) {
  FakeSocket.all = [];
  const c = connect("ws://fake.invalid/ws", { WebSocket: FakeSocket, logger: null, reconnectBase: 5, reconnectCap: 20, ...options });
  t.after(() => {
    const ws = FakeSocket.all.at(-1);
    c.close();
    if (ws && ws.readyState !== 3) ws.end(4000);
  });
  return c;
}

test("frames queued before the SYNC reply are de-duplicated by uid", async (t) => {
  const c = fakeClient(t, { user: "alice" });
  const ws = FakeSocket.all[0];
  assert.equal(ws.url, "ws://fake.invalid/ws?user=alice");
  ws.open();
  assert.deepEqual(ws.json(0), { sys: 3 });
  ws.frame({ sys: 3, prot: { v: 1 }, channel: "_user.alice", lastUid: "u.0" });
  await c.ready;
  const p = c.subscribe("room", { query: { q: 1 } });
  assert.deepEqual(ws.json(1), { sys: 1, channel: "room", query: { q: 1 }, id: 1 });
  ws.frame({ sys: 1, result: true, channel: "room", id: 1, lastUid: "e.5" });
  const sub = await p;
  const got = [];
  sub.on("*", (msg, uid) => got.push(uid));
  ws.frame({ sys: 8, channel: "room", topic: "m", msg: 1, uid: "e.6" });
  ws.end(1006);
  await until(() => FakeSocket.all.length === 2, "the reconnection");
  const ws2 = FakeSocket.all[1];
  ws2.open();
  assert.deepEqual(ws2.json(0), {
    sys: 4,
    subscriptions: [
      { channel: "_user.alice", lastUid: "u.0", query: null },
      { channel: "room", lastUid: "e.6", query: { q: 1 } },
    ],
  });
  // Before the reply: a FEED the records repeat, and one after them.
  ws2.frame({ sys: 8, channel: "room", topic: "m", msg: 8, uid: "e.8" });
  ws2.frame({ sys: 8, channel: "room", topic: "m", msg: 9, uid: "e.9" });
  assert.deepEqual(got, ["e.6"], "delivered before the SYNC reply");
  ws2.frame({
    sys: 4,
    result: { "_user.alice": true, room: true },
    errors: {},
    records: [
      { sys: 8, channel: "room", topic: "m", msg: 7, uid: "e.7" },
      { sys: 8, channel: "room", topic: "m", msg: 8, uid: "e.8" },
    ],
  });
  assert.deepEqual(got, ["e.6", "e.7", "e.8", "e.9"]);
  assert.equal(c.stats.duplicates, 1);
  ws2.frame({ sys: 8, channel: "room", topic: "m", msg: 9, uid: "e.9" });
  ws2.frame({ sys: 12, channel: "room", uid: "e.12" });
  ws2.frame({ sys: 8, channel: "room", topic: "m", msg: 11, uid: "e.11" });
  ws2.frame({ sys: 8, channel: "room", topic: "m", msg: 13, uid: "e.13" });
  assert.deepEqual(got, ["e.6", "e.7", "e.8", "e.9", "e.13"]);
  assert.equal(sub.lastUid, "e.13");
});

test("reconnection waits are exponential with full jitter, within their bounds", async (t) => {
  const c = fakeClient(t, { reconnectBase: 4, reconnectCap: 32 });
  const waits = [];
  c.onStatus((s, old, info) => s === "retry_interval" && waits.push(info.retryIn));
  for (let i = 0; i < 8; i++) {
    await until(() => FakeSocket.all.length === i + 1, "attempt " + (i + 1));
    FakeSocket.all[i].end(1006);
  }
  // connect's attempt n (from 1) waits in [1, min(cap, base * 2^(n-1))].
  assert.ok(waits.length >= 7);
  waits.forEach((w, n) => assert.ok(w >= 1 && w <= Math.min(32, 4 * 2 ** n), `wait ${n}: ${w}`));
  assert.ok(["retry_interval", "start_retrying"].includes(c.status), c.status);
});

test("no heartbeat for interval + threshold: close 4100, then reconnect", async (t) => {
  const c = fakeClient(t);
  const ws = FakeSocket.all[0];
  ws.open();
  ws.frame({ sys: 3, prot: { v: 1, hb: true, hbInterval: 60, hbThreshold: 40 } });
  await c.ready;
  ws.frame("h");
  assert.equal(ws.sent.at(-1), "h", "the heartbeat was not answered");
  await until(() => ws.closed, "the close");
  assert.deepEqual(ws.closed, { code: 4100, reason: "The socket did not receive a heartbeat" });
  await until(() => FakeSocket.all.length === 2, "the reconnection");
  FakeSocket.all[1].open();
  assert.equal(FakeSocket.all[1].json(0).sys, 4, "the reconnection does not SYNC");
});

test("BOOT: close 4001 with the reason, then booted when the server echoes", async (t) => {
  const c = fakeClient(t);
  const ws = FakeSocket.all[0];
  ws.open();
  ws.frame({ sys: 3, prot: { v: 1 } });
  await c.ready;
  const reasons = [];
  c.onBoot((r) => reasons.push(r));
  ws.frame({ sys: 9, reason: "bye now" });
  assert.deepEqual(ws.closed, { code: 4001, reason: "bye now" });
  ws.end(4001, "bye now");
  assert.equal(c.status, "booted");
  assert.deepEqual(reasons, ["bye now"]);
  await new Promise((r) => setTimeout(r, 50));
  assert.equal(FakeSocket.all.length, 1, "reconnected after a boot");
});
