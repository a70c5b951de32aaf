// Helpers of the JavaScript tests: the fixture's control API, clients
// closed after each test, and waiting for state the test does not control.
import { connect } from "../../../server/sssjs/sss.js";

export const BASE = process.env.SSS_FIXTURE;
if (!BASE) throw new Error("SSS_FIXTURE is not set: run these tests through go test (TestJSClient)");
export const WS_URL = BASE.replace(/^http/, "ws") + "/ws";

let seq = 0;
/** uniq returns a name no other test uses. */
export const uniq = (prefix) => `${prefix}${++seq}x${process.pid}`;

/** ctl calls the fixture's control API. */
export async function ctl(op, body = {}) {
  const r = await fetch(`${BASE}/ctl/${op}`, { method: "POST", body: JSON.stringify(body) });
  if (!r.ok) throw new Error(`ctl ${op}: ${r.status} ${await r.text()}`);
  return r.json();
}

/** publish publishes {n} for each n in ns on channel, topic t; returns the uids. */
export function publish(channel, ns, topic = "t") {
  return ctl("publish", { channel, topic, msgs: ns.map((n) => ({ n })) });
}

/** range returns [from, ..., to]. */
export const range = (from, to) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

/** client connects as user, closed when the test ends. */
export function client(t, user, options = {}) {
  const c = connect(WS_URL, { user, reconnectBase: 50, reconnectCap: 400, logger: null, ...options });
  t.after(() => c.close());
  return c;
}

/** until polls cond until it is true; it throws after ms. */
export async function until(cond, what, ms = 15000) {
  const end = Date.now() + ms;
  for (let wait = 2; ; wait = Math.min(wait * 2, 50)) {
    if (await cond()) return;
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, wait));
  }
}

/** statuses records a client's status changes. */
export function statuses(c) {
  const log = [];
  c.onStatus((status, previous, info) => log.push({ status, previous, info }));
  return log;
}

/** collect records a subscription's publications on topic ("*": all). */
export function collect(sub, topic = "*") {
  const got = [];
  sub.on(topic, (msg, uid) => got.push({ n: msg && msg.n, uid }));
  return got;
}

/** ns returns the numbers a collector got. */
export const ns = (got) => got.map((g) => g.n);

/**
 * drop closes user's sockets with code and keeps the user's reconnections
 * out until release is called; it resolves once c has noticed.
 */
export async function drop(c, user, code = 1001) {
  await ctl("block", { user, on: true });
  await ctl("close", { user, code, reason: "test drop" });
  await until(() => c.status !== "ready", "the client to notice the drop");
  return () => ctl("block", { user, on: false });
}

/** sleep waits ms: only to check that something does NOT happen. */
export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
