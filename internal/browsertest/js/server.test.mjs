// Tests of sss.js against the real sss server (the fixture of TestJSClient).
import { test } from "node:test";
import assert from "node:assert/strict";
import vm from "node:vm";
import { connect, SSSError, compareUids } from "../../../server/sssjs/sss.js";
import { BASE, WS_URL, uniq, ctl, publish, range, client, until, statuses, collect, ns, drop, sleep } from "./helpers.mjs";

const isCode = (code) => (e) => {
  assert.ok(e instanceof SSSError, `want an SSSError, got ${e}`);
  assert.equal(e.code, code, e.message);
  return true;
};

test("BEGIN: the user channel of a session with a user, none without", async (t) => {
  const u = uniq("begin");
  const c = client(t, u);
  assert.equal(await c.ready, c);
  assert.equal(c.status, "ready");
  assert.equal(c.userChannel.channel, "_user." + u);
  assert.equal(c.userChannel.status, "active");
  assert.equal(await c.ask("whoami"), u);
  const anon = client(t, "");
  await anon.ready;
  assert.equal(anon.userChannel, null);
});

test("ask: the response, server errors with their code, timeout, connection lost", async (t) => {
  const u = uniq("ask");
  const c = client(t, u);
  await c.ready;
  const v = { a: [1, "x", null, { b: true }], c: 2.5 };
  assert.deepEqual(await c.ask("echo", v), v);
  assert.equal(await c.ask("echo"), null);
  await assert.rejects(c.ask("fail", 1), (e) => isCode("nope")(e) && e.serverName === "Nope");
  await assert.rejects(c.ask("no_such_topic", 1), isCode("unknown_topic"));
  await assert.rejects(c.ask("sleep", 3000, { timeout: 100 }), isCode("timeout"));
  const lost = c.ask("sleep", 10000);
  await ctl("close", { user: u, code: 1012, reason: "restart" });
  await assert.rejects(lost, isCode("connection_lost"));
  await until(() => c.status === "ready", "the reconnection");
  assert.deepEqual(await c.ask("echo", 7), 7);
});

test("tell and server tells; broadcast; the user channel", async (t) => {
  const u = uniq("tell");
  const c = client(t, u);
  await c.ready;
  const pongs = [], news = [], dms = [], any = [];
  c.onTell("pong", (msg, topic) => pongs.push([msg, topic]));
  c.onBroadcast("news", (msg) => news.push(msg));
  c.onUser("dm", (msg, uid) => dms.push([msg.n, uid]));
  c.userChannel.on("*", (msg) => any.push(msg.n));
  c.tell("ping", { x: 1 });
  await until(() => pongs.length === 1, "the pong");
  assert.deepEqual(pongs[0], [{ x: 1 }, "pong"]);
  await ctl("broadcast", { topic: "news", msgs: [{ headline: "hi" }] });
  await until(() => news.length === 1, "the broadcast");
  assert.deepEqual(news[0], { headline: "hi" });
  const uids = await publish("_user." + u, [1, 2], "dm");
  await until(() => dms.length === 2 && any.length === 2, "the user channel's publications");
  assert.deepEqual(dms, [[1, uids[0]], [2, uids[1]]]);
});

test("subscribe: per-topic listeners in order, shared subscriptions, unsubscribe, refusals", async (t) => {
  const u = uniq("sub"), ch = uniq("ch");
  const c = client(t, u);
  await c.ready;
  const sub = await c.subscribe(ch);
  assert.equal(sub.channel, ch);
  assert.equal(sub.status, "active");
  const a = collect(sub, "a"), rest = collect(sub, "*");
  const second = await c.subscribe(ch);
  const b = collect(second);
  await publish(ch, [1, 2], "a");
  const uids = await publish(ch, [3], "other");
  await until(() => a.length === 2 && rest.length === 1 && b.length === 3, "the publications");
  assert.deepEqual(ns(a), [1, 2]);
  assert.deepEqual(ns(rest), [3]);
  assert.equal(sub.lastUid, uids[0]);
  second.unsubscribe();
  assert.equal(second.status, "unsubscribed");
  await publish(ch, [4], "a");
  await until(() => a.length === 3, "publication 4");
  assert.equal(b.length, 3, "an unsubscribed subscription got a publication");

  await assert.rejects(c.subscribe("_x"), isCode("reserved_channel"));
  await assert.rejects(c.subscribe(""), isCode("reserved_channel"));
  const refused = uniq("refused");
  await ctl("refuse", { channel: refused, on: true });
  await assert.rejects(c.subscribe(refused), (e) => isCode("forbidden")(e) && e.serverName === "Forbidden");
});

test("presence events, for the client and for the subscription", async (t) => {
  const ch = uniq("pres"), u1 = uniq("p"), u2 = uniq("q");
  const c1 = client(t, u1);
  await c1.ready;
  const sub = await c1.subscribe(ch);
  const all = [], mine = [];
  c1.onPresence((ev) => ev.channel === ch && all.push(ev));
  sub.onPresence((ev) => mine.push(ev));
  const c2 = client(t, u2);
  await c2.ready;
  await c2.subscribe(ch);
  await until(() => mine.length === 1, "the join");
  assert.equal(mine[0].channel, ch);
  assert.equal(mine[0].event, "join");
  assert.equal(mine[0].member.user, u2);
  await c2.close();
  await until(() => mine.length === 2, "the leave");
  assert.equal(mine[1].event, "leave");
  assert.deepEqual(all, mine);
});

test("SYNC outcome active: the missed publications, in order, once", async (t) => {
  const u = uniq("active"), ch = uniq("ch");
  const c = client(t, u);
  await c.ready;
  const log = statuses(c);
  const sub = await c.subscribe(ch, { query: { from: "test" } });
  const subLog = [];
  sub.onStatus((s, old) => subLog.push(s));
  const got = collect(sub);
  await publish(ch, range(1, 3));
  await until(() => got.length === 3, "the live publications");
  const release = await drop(c, u, 1001);
  await publish(ch, range(4, 10));
  await release();
  await until(() => c.status === "ready" && got.length === 10, "the recovery");
  assert.deepEqual(ns(got), range(1, 10));
  assert.equal(sub.status, "active");
  assert.deepEqual(subLog, ["dropped", "syncing", "active"]);
  assert.equal(c.stats.recovered, 7);
  assert.equal(c.stats.reconnects, 1);
  const drops = log.filter((e) => e.status === "dropped_retrying" && e.info.code !== undefined);
  assert.equal(drops[0].info.code, 1001);
  assert.ok(log.some((e) => e.status === "retry_interval" && e.info.retryIn > 0), "no retry_interval status with retryIn");
  assert.ok(log.some((e) => e.status === "syncing"), "no syncing status");
  await publish(ch, [11]);
  await until(() => got.length === 11, "live again");
});

test("SYNC outcome refused: the subscription ends refused with the server's error", async (t) => {
  const u = uniq("refused"), ch = uniq("ch");
  const c = client(t, u);
  await c.ready;
  const sub = await c.subscribe(ch);
  const got = collect(sub);
  const release = await drop(c, u, 1012);
  await ctl("refuse", { channel: ch, on: true });
  await publish(ch, [1]);
  await release();
  await until(() => c.status === "ready", "the reconnection");
  assert.equal(sub.status, "refused");
  assert.equal(sub.error.code, "forbidden");
  assert.equal(c.stats.refused, 1);
  await publish(ch, [2]);
  await sleep(200);
  assert.equal(got.length, 0, "a refused subscription got publications");
  await assert.rejects(c.subscribe(ch), isCode("forbidden"));
});

test("SYNC outcome not recoverable (too many missed): reported, then live from the current position", async (t) => {
  const u = uniq("toomany"), ch = uniq("ch");
  const c = client(t, u);
  await c.ready;
  const sub = await c.subscribe(ch);
  const got = collect(sub);
  const release = await drop(c, u, 4002);
  const missed = await publish(ch, range(1, 60)); // the fixture's MaxRecovery is 50
  await release();
  await until(() => c.status === "ready", "the reconnection");
  assert.equal(sub.status, "not_recoverable");
  assert.equal(sub.error.code, "not_recoverable");
  assert.equal(got.length, 0);
  await until(() => sub.lastUid === missed[59], "the UPDATESUB to the current position");
  await publish(ch, [61]);
  await until(() => got.length === 1, "live again");
  assert.deepEqual(ns(got), [61]);
});

test("SYNC outcome not recoverable (new epoch of the channel)", async (t) => {
  const u = uniq("epoch"), ch = uniq("ch");
  const c = client(t, u);
  await c.ready;
  const sub = await c.subscribe(ch);
  const got = collect(sub);
  const before = await publish(ch, [1]);
  await until(() => got.length === 1, "publication 1");
  const release = await drop(c, u, 1013);
  await ctl("reset", { channel: ch });
  const after = await publish(ch, [2]);
  assert.equal(compareUids(before[0], after[0]), null, "the reset kept the epoch");
  await release();
  await until(() => c.status === "ready", "the reconnection");
  assert.equal(sub.status, "not_recoverable");
  await publish(ch, [3]);
  await until(() => got.length === 2, "live in the new epoch");
  assert.deepEqual(ns(got), [1, 3]);
});

test("a server restart keeps history (active) or loses it (every channel not recoverable)", async (t) => {
  const u = uniq("restart"), ch = uniq("ch");
  const c = client(t, u);
  await c.ready;
  const sub = await c.subscribe(ch);
  const got = collect(sub);
  const log = statuses(c);
  await ctl("block", { user: u, on: true });
  await ctl("restart", { newEpoch: false });
  await until(() => c.status !== "ready", "the drop");
  await publish(ch, [1, 2]);
  await ctl("block", { user: u, on: false });
  await until(() => c.status === "ready" && got.length === 2, "the recovery after the restart");
  assert.equal(sub.status, "active");
  assert.equal(log.find((e) => e.info.code !== undefined).info.code, 1012);

  await ctl("restart", { newEpoch: true });
  await until(() => c.stats.reconnects === 2 && c.status === "ready", "the reconnection to the new epoch");
  assert.equal(sub.status, "not_recoverable");
  assert.equal(c.userChannel.status, "not_recoverable");
  await publish(ch, [3]);
  await until(() => got.length === 3, "live after the new epoch");
});

for (const code of [1001, 1008, 1009, 1011, 1012, 1013, 4002, 4003]) {
  test(`close ${code} from the server: reconnect and SYNC`, async (t) => {
    const u = uniq("code" + code), ch = uniq("ch");
    const c = client(t, u);
    await c.ready;
    const log = statuses(c);
    const sub = await c.subscribe(ch);
    const got = collect(sub);
    await ctl("close", { user: u, code, reason: "test " + code });
    await until(() => c.stats.reconnects === 1 && c.status === "ready", "the reconnection");
    const dropEvent = log.find((e) => e.status === "dropped_retrying");
    assert.equal(dropEvent.info.code, code);
    assert.equal(dropEvent.info.reason, "test " + code);
    assert.equal(sub.status, "active");
    await publish(ch, [1]);
    await until(() => got.length === 1, "a publication after the reconnection");
  });
}

test("a frame over the server's size limit: close 1009, then reconnect", async (t) => {
  const u = uniq("big");
  const c = client(t, u);
  await c.ready;
  const log = statuses(c);
  const big = c.ask("echo", "x".repeat(70 * 1024));
  await assert.rejects(big, isCode("connection_lost"));
  await until(() => c.status === "ready" && c.stats.reconnects === 1, "the reconnection");
  assert.equal(log.find((e) => e.status === "dropped_retrying").info.code, 1009);
});

test("close 4000 from the server: closed, no reconnection", async (t) => {
  const u = uniq("c4000");
  const c = client(t, u);
  await c.ready;
  const sub = await c.subscribe(uniq("ch"));
  await ctl("close", { user: u, code: 4000, reason: "bye" });
  await until(() => c.status === "closed", "closed");
  assert.equal(sub.status, "closed");
  assert.equal(c.error.code, "closed");
  await sleep(300);
  assert.equal((await ctl("state", { user: u })).sockets, 0, "the client reconnected");
  await assert.rejects(c.ask("echo", 1), isCode("closed"));
});

test("boot: onBoot with the reason, booted, no reconnection (BOOT frame and close 4001)", async (t) => {
  for (const how of ["boot", "close4001"]) {
    const u = uniq(how);
    const c = client(t, u);
    await c.ready;
    const sub = await c.subscribe(uniq("ch"));
    const reasons = [];
    c.onBoot((r) => reasons.push(r));
    if (how === "boot") await ctl("boot", { user: u, reason: "you asked for it" });
    else await ctl("close", { user: u, code: 4001, reason: "you asked for it" });
    await until(() => c.status === "booted", "booted");
    assert.deepEqual(reasons, ["you asked for it"]);
    assert.equal(sub.status, "booted");
    assert.equal(c.error.code, "booted");
    await assert.rejects(c.whenReady(), isCode("booted"));
    await sleep(300);
    const st = await ctl("state", { user: u });
    assert.equal(st.sockets, 0, "the booted client reconnected");
    assert.deepEqual(st.closes, [4001]);
  }
});

test("close(): 4000 to the server, closed for good", async (t) => {
  const u = uniq("close");
  const c = client(t, u);
  await c.ready;
  const sub = await c.subscribe(uniq("ch"));
  await c.close();
  assert.equal(c.status, "closed");
  assert.equal(sub.status, "closed");
  await until(async () => (await ctl("state", { user: u })).closes.length === 1, "the server to see the close");
  assert.deepEqual((await ctl("state", { user: u })).closes, [4000]);
  assert.throws(() => c.tell("ping", 1), isCode("closed"));
});

test("heartbeats are answered: the connection stays up", async (t) => {
  const u = uniq("hb");
  const c = client(t, u);
  await c.ready;
  const log = statuses(c);
  await sleep(4500); // over two of the fixture's heartbeat intervals (2 s)
  assert.equal(c.status, "ready");
  assert.equal(log.length, 0, "status changed: " + JSON.stringify(log));
  assert.deepEqual((await ctl("state", { user: u })).closes, []);
});

test("a lost heartbeat: close 4100, reconnect and SYNC", async (t) => {
  const u = uniq("hblost"), ch = uniq("ch");
  const c = client(t, u);
  await c.ready;
  const sub = await c.subscribe(ch);
  const got = collect(sub);
  const log = statuses(c);
  assert.equal(await ctl("stall", { user: u }), 1);
  await publish(ch, [1]); // never reaches the stalled connection: recovered
  await until(() => c.stats.reconnects === 1 && c.status === "ready", "the reconnection", 10000);
  assert.equal(log.find((e) => e.status === "dropped_retrying").info.code, 4100);
  await until(async () => (await ctl("state", { user: u })).closes.includes(4100), "the server to get close 4100");
  await until(() => got.length === 1, "the recovered publication");
});

test("a SUBSCRIBE answered unavailable is retried with backoff", async (t) => {
  const u = uniq("flaky"), ch = uniq("ch");
  const c = client(t, u);
  await c.ready;
  await ctl("failsub", { channel: ch, times: 2 });
  const sub = await c.subscribe(ch);
  assert.equal(sub.status, "active");
  assert.equal((await ctl("state", { channel: ch })).subCalls, 3);
  const got = collect(sub);
  await publish(ch, [1]);
  await until(() => got.length === 1, "a publication");
  const ch2 = uniq("ch");
  await ctl("failsub", { channel: ch2, times: 1000 });
  await assert.rejects(c.subscribe(ch2, { timeout: 300 }), isCode("timeout"));
});

test("while not connected: ask, subscribe and tell fail at once with not_connected", async (t) => {
  const u = uniq("nc");
  const c = client(t, u);
  await c.ready;
  const release = await drop(c, u, 1001);
  await assert.rejects(c.ask("echo", 1), isCode("not_connected"));
  await assert.rejects(c.subscribe("room"), isCode("not_connected"));
  assert.throws(() => c.tell("ping", 1), (e) => isCode("not_connected")(e) && /not connected/.test(e.message));
  const ready = c.whenReady();
  await release();
  assert.equal(await ready, c);
  assert.equal(await c.ask("echo", 2), 2);
});

test("subscribe from a known uid: what followed it first, then live; another epoch is not recoverable", async (t) => {
  const u = uniq("from"), ch = uniq("ch");
  const c = client(t, u);
  await c.ready;
  const uids = await publish(ch, range(1, 10));
  const early = [];
  const sub = await c.subscribe(ch, { fromUid: uids[3], on: { t: (msg) => early.push(msg.n) } });
  const late = collect(sub, "t"); // registered after the promise: still gets the records
  await publish(ch, [11]);
  await until(() => early.length === 7 && late.length === 7, "the publications after uid 4");
  assert.deepEqual(early, range(5, 11));
  assert.deepEqual(ns(late), range(5, 11));
  assert.equal(sub.status, "active");

  const ch2 = uniq("ch");
  await publish(ch2, [1, 2]);
  const other = await c.subscribe(ch2, { fromUid: "zzz.1" });
  assert.equal(other.status, "not_recoverable");
  assert.equal(other.error.code, "not_recoverable");
  const got = collect(other);
  await publish(ch2, [3]);
  await until(() => got.length === 1, "live after not recoverable");
  assert.deepEqual(ns(got), [3]);

  const refused = uniq("ch");
  await ctl("refuse", { channel: refused, on: true });
  await assert.rejects(c.subscribe(refused, { fromUid: "a.1" }), isCode("forbidden"));
});

test("pagehide closes with 4000; pageshow reconnects with SYNC (back/forward cache)", async (t) => {
  globalThis.window = new EventTarget();
  t.after(() => delete globalThis.window);
  const u = uniq("page"), ch = uniq("ch");
  const c = client(t, u);
  await c.ready;
  const sub = await c.subscribe(ch);
  const got = collect(sub);
  window.dispatchEvent(new Event("pagehide"));
  assert.equal(c.status, "dropped_retrying");
  await until(async () => (await ctl("state", { user: u })).closes.includes(4000), "the server to see 4000");
  await publish(ch, [1, 2]);
  await sleep(200);
  assert.equal((await ctl("state", { user: u })).sockets, 0, "reconnected while the page was hidden");
  window.dispatchEvent(new Event("pageshow"));
  await until(() => c.status === "ready" && got.length === 2, "the recovery on pageshow");
  assert.equal(sub.status, "active");
  assert.equal(c.stats.reconnects, 1);
});

test("the classic-script variant (/sss.js?global) defines the global sss", async (t) => {
  const code = await (await fetch(BASE + "/sss.js?global")).text();
  const g = { WebSocket, URL, TextEncoder, setTimeout, clearTimeout, queueMicrotask, console, Date, Math, JSON, Promise };
  g.globalThis = g;
  vm.runInNewContext(code, g);
  assert.equal(typeof g.sss.connect, "function");
  const c = g.sss.connect(WS_URL, { user: uniq("global"), logger: null });
  t.after(() => c.close());
  await c.ready;
  assert.equal(await c.ask("echo", "hi"), "hi");
});

test("connect: a start that fails for good, and no reconnection when turned off", async (t) => {
  const c = connect("ws://127.0.0.1:1/ws", { reconnectAttempts: 2, reconnectBase: 5, logger: null });
  const log = statuses(c);
  await assert.rejects(c.ready, isCode("start_failed"));
  assert.equal(c.status, "start_failed");
  assert.equal(log.filter((e) => e.status === "start_retrying").length, 2);

  const u = uniq("noauto");
  const d = client(t, u, { autoReconnect: false });
  await d.ready;
  await ctl("close", { user: u, code: 1001, reason: "x" });
  await until(() => d.status === "reconnect_failed", "reconnect_failed");
  assert.equal(d.error.code, "reconnect_failed");
});
