// sss.js: the browser client of sss (wire protocol v1, SSS-compatible).
//
// An ES module without dependencies; the server also serves it as a
// classic script that defines the global `sss` (see sss.d.ts for the API).
//
//   import { connect } from "/sss.js";
//   const client = connect("/ws", { user: "alice" });
//   client.onStatus((s) => console.log("status", s));
//   await client.ready;
//   const room = await client.subscribe("lobby", { on: { message: show } });
//
// It reconnects by itself (exponential backoff, full jitter) and recovers
// every subscription by SYNC: each ends "active" (what was missed was
// delivered, in order, once), "not_recoverable" (live again, but the app
// must reload that channel) or "refused". While the client is not
// connected, ask and subscribe reject and tell throws at once, with an
// SSSError of code "not_connected" (nothing is queued); `whenReady()`
// waits for the next ready.

const SYS = {
  SUBSCRIBE: 1, UNSUBSCRIBE: 2, BEGIN: 3, SYNC: 4, ASK: 5, TELL: 6,
  RESPONSE: 7, FEED: 8, BOOT: 9, BROADCAST: 11, UPDATESUB: 12,
};

/** Client states, named like the Go client's (and in the SSS client's order). */
export const Status = Object.freeze({
  INIT: "init",
  STARTING: "starting",
  START_RETRYING: "start_retrying",
  DROPPED_RETRYING: "dropped_retrying",
  START_FAILED: "start_failed",
  RETRY_INTERVAL: "retry_interval",
  RECONNECT_FAILED: "reconnect_failed",
  READY: "ready",
  SYNCING: "syncing",
  BEGINNING: "beginning",
  BOOTED: "booted",
  CLOSED: "closed",
});

/** Subscription states; the SSS client's SYNC_FAILED is split in two. */
export const SubStatus = Object.freeze({
  ACTIVE: "active",
  DROPPED: "dropped",
  SYNCING: "syncing",
  REFUSED: "refused",
  NOT_RECOVERABLE: "not_recoverable",
  UNSUBSCRIBED: "unsubscribed",
  BOOTED: "booted",
  CLOSED: "closed",
  RECONNECT_FAILED: "reconnect_failed",
});

/** Close codes that matter to a client (docs/protocol.md §9). */
export const CloseCode = Object.freeze({
  GOING_AWAY: 1001,
  SERVICE_RESTART: 1012,
  TRY_AGAIN_LATER: 1013,
  BY_CLIENT: 4000,
  BOOTED: 4001,
  SLOW_CONSUMER: 4002,
  HEARTBEAT_TIMEOUT: 4003,
  HEARTBEAT_LOST: 4100,
});

const FINAL = new Set([Status.START_FAILED, Status.RECONNECT_FAILED, Status.BOOTED, Status.CLOSED]);
const SUB_FINAL = new Set([SubStatus.REFUSED, SubStatus.UNSUBSCRIBED, SubStatus.BOOTED, SubStatus.CLOSED, SubStatus.RECONNECT_FAILED]);

/**
 * SSSError is every error this client reports. `code` is machine-readable:
 * the server's code for errors the server sent (then `serverName` is the
 * error object's `name`), or one of the client's own: not_connected,
 * timeout, connection_lost, closed, booted, reserved_channel,
 * start_failed, reconnect_failed.
 */
export class SSSError extends Error {
  constructor(code, message, serverName) {
    super(message);
    this.name = "SSSError";
    this.code = code;
    if (serverName !== undefined) this.serverName = serverName;
  }
}

function serverError(e) {
  if (!e || typeof e !== "object") return new SSSError("internal", "the server sent no error object");
  return new SSSError(e.code || "app_error", e.message || e.name || "error", e.name);
}

// uids are "<epoch>.<seq>": compare seqs as decimal strings (no BigInt).
const UID_RE = /^([A-Za-z0-9]{1,32})\.([0-9]{1,20})$/;
function parseUid(uid) {
  const m = typeof uid === "string" ? UID_RE.exec(uid) : null;
  return m ? { epoch: m[1], seq: m[2].replace(/^0+(?=.)/, "") } : null;
}
function cmpSeq(a, b) {
  return a.length !== b.length ? a.length - b.length : a < b ? -1 : a > b ? 1 : 0;
}

/**
 * compareUids orders two uids of one channel: negative, 0 or positive
 * when a is before, equal to or after b; null when they are not
 * comparable (other epochs, or not uids).
 */
export function compareUids(a, b) {
  const x = parseUid(a), y = parseUid(b);
  if (!x || !y || x.epoch !== y.epoch) return null;
  return cmpSeq(x.seq, y.seq);
}

// truncate a close reason to 123 bytes of UTF-8 (browsers throw beyond).
function reason123(s) {
  s = String(s ?? "");
  if (typeof TextEncoder === "undefined") return s.slice(0, 40);
  const enc = new TextEncoder();
  while (enc.encode(s).length > 123) s = s.slice(0, -1);
  return s;
}

function safeCall(client, fn, args) {
  try {
    fn(...args);
  } catch (e) {
    client._log("error", "sss: a listener threw", e);
  }
}

function addListener(set, fn) {
  if (typeof fn !== "function") throw new TypeError("listener must be a function");
  set.add(fn);
  return () => set.delete(fn);
}

function addTopicListener(map, topic, fn) {
  if (typeof fn !== "function") throw new TypeError("listener must be a function");
  let set = map.get(topic);
  if (!set) map.set(topic, (set = new Set()));
  set.add(fn);
  return () => {
    set.delete(fn);
    if (set.size === 0 && map.get(topic) === set) map.delete(topic);
  };
}

// emitTopic calls the listeners of topic, or those of "*" when topic has none.
function emitTopic(client, map, topic, args) {
  const set = map.get(topic) || map.get("*");
  if (set) for (const fn of [...set]) safeCall(client, fn, args);
}

/**
 * Subscription is one subscription to a channel. Several Subscriptions to
 * one channel share the client's one server subscription.
 */
export class Subscription {
  constructor(client, ch) {
    this._client = client;
    this._ch = ch;
    this._status = SubStatus.ACTIVE;
    this._error = null;
    this._topics = new Map();
    this._statusFns = new Set();
    this._presenceFns = new Set();
  }
  /** The channel's name. */
  get channel() { return this._ch.name; }
  /** The subscription's status (a SubStatus value). */
  get status() { return this._status; }
  /** The error of the last status change (refused, not recoverable), or null. */
  get error() { return this._error; }
  /** The uid of the last publication applied (or the position the server gave). */
  get lastUid() { return this._ch.lastUid; }
  /** Whether this is the session's user channel. */
  get isUserChannel() { return this._ch.user; }
  /**
   * on calls fn(msg, uid, subscription) for each publication on topic, in
   * uid order; topic "*" gets the publications whose topic has no
   * listener. Returns a function that removes the listener.
   */
  on(topic, fn) { return addTopicListener(this._topics, topic, fn); }
  /** onStatus calls fn(status, previous, error) on each status change. */
  onStatus(fn) { return addListener(this._statusFns, fn); }
  /** onPresence calls fn(event) for the channel's presence events. */
  onPresence(fn) { return addListener(this._presenceFns, fn); }
  /**
   * unsubscribe ends this subscription; the client sends UNSUBSCRIBE when
   * it was the channel's last one. Idempotent.
   */
  unsubscribe() { this._client._unsubscribe(this); }

  _setStatus(status, error) {
    const old = this._status;
    if (old === status && !error) return;
    this._status = status;
    this._error = error || null;
    for (const fn of [...this._statusFns]) safeCall(this._client, fn, [status, old, this._error]);
  }
  _deliver(topic, msg, uid) {
    if (SUB_FINAL.has(this._status)) return;
    emitTopic(this._client, this._topics, topic, [msg, uid, this]);
  }
}

/**
 * connect creates a client and starts connecting at once. Listeners added
 * in the same tick miss nothing. url is the WebSocket endpoint: ws(s)://
 * or http(s):// or a path ("/ws") resolved against the page; default
 * "/ws" in a browser.
 */
export function connect(url, options) {
  return new Client(url, options);
}

/** Client is one logical connection that reconnects and recovers by itself. */
export class Client {
  constructor(url, options = {}) {
    const o = {
      reconnectBase: 500, reconnectCap: 30000, reconnectAttempts: 0, autoReconnect: true,
      askTimeout: 10000, subscribeTimeout: 30000, handshakeTimeout: 10000, closeTimeout: 5000,
      pageLifecycle: true, logger: typeof console !== "undefined" ? console : null, ...options,
    };
    if (o.reconnectCap < o.reconnectBase) o.reconnectCap = o.reconnectBase;
    this._opts = o;
    this._WS = o.WebSocket || globalThis.WebSocket;
    if (typeof this._WS !== "function") throw new SSSError("not_connected", "no WebSocket implementation (pass options.WebSocket)");
    this._url = buildUrl(url, o);
    this._status = Status.INIT;
    this._channels = new Map(); // name -> channel state
    this._ord = 0;
    this._conn = null;
    this._begun = false; // a BEGIN reply was applied: reconnections SYNC
    this._hb = null; // {total} from the BEGIN reply
    this._attempt = 0; // attempts since the last ready (backoff exponent)
    this._timer = null; // retry timer
    this._suspended = false; // page hidden
    this._closing = null; // close() promise resolver
    this._userSub = null;
    this._final = null; // the error of a final status
    this._subWait = new Map(); // channel -> pending subscribe (one per channel)
    this._statusFns = new Set();
    this._tellFns = new Map();
    this._broadcastFns = new Map();
    this._userFns = new Map();
    this._presenceFns = new Set();
    this._bootFns = new Set();
    this._errorFns = new Set();
    this._readyWaiters = [];
    this.stats = { reconnects: 0, recovered: 0, duplicates: 0, notRecoverable: 0, refused: 0, feeds: 0 };
    /** Resolves with the client at its first ready; rejects if it stops first. */
    this.ready = this.whenReady();
    this.ready.catch(() => {}); // an app that never awaits it gets no unhandled rejection
    this._lifecycle();
    this._setStatus(Status.STARTING);
    this._open();
  }

  /** The client's status (a Status value). */
  get status() { return this._status; }
  /** The URL the client connects to. */
  get url() { return this._url; }
  /** The subscription to the session's user channel, or null. */
  get userChannel() { return this._userSub; }
  /** Why the client stopped (an SSSError) once its status is final, else null. */
  get error() { return this._final; }

  /** onStatus calls fn(status, previous, info) on each status change. */
  onStatus(fn) { return addListener(this._statusFns, fn); }
  /** onTell calls fn(msg, topic) for server tells on topic ("*": any other). */
  onTell(topic, fn) { return addTopicListener(this._tellFns, topic, fn); }
  /** onBroadcast calls fn(msg, topic) for broadcasts on topic ("*": any other). */
  onBroadcast(topic, fn) { return addTopicListener(this._broadcastFns, topic, fn); }
  /**
   * onUser calls fn(msg, uid, subscription) for publications on topic of
   * the user channel ("*": any other topic), whichever BEGIN granted it.
   */
  onUser(topic, fn) { return addTopicListener(this._userFns, topic, fn); }
  /** onPresence calls fn({channel, event, member}) for every presence event. */
  onPresence(fn) { return addListener(this._presenceFns, fn); }
  /** onBoot calls fn(reason) when the server boots the client. */
  onBoot(fn) { return addListener(this._bootFns, fn); }
  /** onError calls fn(error) for error frames the server sent unasked. */
  onError(fn) { return addListener(this._errorFns, fn); }

  /**
   * whenReady resolves when the client is ready (at once if it is), and
   * rejects when it reaches a final status first.
   */
  whenReady() {
    if (this._status === Status.READY) return Promise.resolve(this);
    if (this._final) return Promise.reject(this._final);
    return new Promise((resolve, reject) => this._readyWaiters.push({ resolve, reject }));
  }

  /**
   * ask sends an ASK and resolves with the response's msg; it rejects with
   * an SSSError: the server's code, or timeout, connection_lost or
   * not_connected (the client was not connected: nothing was sent).
   */
  ask(topic, msg, options = {}) {
    const cn = this._readyConn();
    if (!cn) return Promise.reject(this._notConnected("ask " + topic));
    const timeout = options.timeout ?? this._opts.askTimeout;
    return new Promise((resolve, reject) => {
      const id = ++cn.nextId;
      const p = { resolve, reject, timer: null };
      if (timeout > 0) {
        p.timer = setTimeout(() => {
          cn.asks.delete(id);
          reject(new SSSError("timeout", `ask ${topic}: no response within ${timeout} ms`));
        }, timeout);
      }
      cn.asks.set(id, p);
      this._send(cn, { sys: SYS.ASK, topic, msg, id });
    });
  }

  /**
   * tell sends a TELL (no reply). It throws an SSSError of code
   * not_connected when the client is not connected: nothing is queued.
   */
  tell(topic, msg) {
    const cn = this._readyConn();
    if (!cn) throw this._notConnected("tell " + topic);
    this._send(cn, { sys: SYS.TELL, topic, msg });
  }

  /**
   * subscribe subscribes to channel and resolves with a Subscription.
   * options.query goes to the server's subscription parser; options.on,
   * onStatus and onPresence register listeners before anything is
   * delivered. options.fromUid subscribes from a known uid (by a SYNC
   * entry): the publications after it are delivered first, and the
   * subscription resolves "active", or "not_recoverable" (live from now;
   * reload the channel). A SUBSCRIBE answered "unavailable" is retried
   * with backoff until options.timeout (default 30 s). A channel the
   * client holds already gives a new Subscription sharing it at once.
   */
  subscribe(channel, options = {}) {
    if (typeof channel !== "string" || channel === "" || channel[0] === "_") {
      return Promise.reject(new SSSError("reserved_channel", `subscribe ${JSON.stringify(channel)}: empty or reserved channel name`));
    }
    const cn = this._readyConn();
    if (!cn) return Promise.reject(this._notConnected("subscribe " + channel));
    const ch = this._channels.get(channel);
    if (ch) return Promise.resolve(this._newSub(ch, options));
    const waiting = this._subWait.get(channel);
    if (waiting) {
      // One request per channel: share its outcome.
      return waiting.promise.then(() => this.subscribe(channel, options));
    }
    return this._startSubscribe(cn, channel, options);
  }

  /**
   * close closes the connection with 4000 and stops the client for good;
   * it resolves once the server ended the connection (or after
   * options.closeTimeout).
   */
  close() {
    if (FINAL.has(this._status)) return Promise.resolve();
    if (this._closing) return this._closing.promise;
    let resolve;
    const promise = new Promise((r) => (resolve = r));
    this._closing = { promise, resolve };
    this._clearTimer();
    const cn = this._conn;
    if (cn && cn.ws.readyState <= 1) {
      cn.closeSent = true;
      this._stopHeartbeat(cn);
      try {
        cn.ws.close(CloseCode.BY_CLIENT, "Connection closed by client");
      } catch (e) {
        this._log("debug", "sss: close", e);
      }
      cn.closeTimer = setTimeout(() => this._onClose(cn, CloseCode.BY_CLIENT, "closed by client"), this._opts.closeTimeout);
    } else {
      this._finish(Status.CLOSED, new SSSError("closed", "the client was closed"));
    }
    return promise;
  }

  // ---- connection ----

  _open() {
    this._clearTimer();
    const sync = this._begun;
    let ws;
    try {
      ws = new this._WS(this._url);
    } catch (e) {
      this._log("warn", "sss: WebSocket", e);
      this._attemptFailed(null, 1006, String(e && e.message));
      return;
    }
    const cn = {
      ws, sync, nextId: 0, asks: new Map(), subs: new Map(), pending: [],
      handshaking: true, dead: false, closeSent: false, booted: false, bootReason: "",
      hbTimer: null, closeTimer: null, entries: null,
    };
    this._conn = cn;
    cn.hsTimer = setTimeout(() => {
      this._log("warn", "sss: handshake timed out", this._url);
      this._abandon(cn, 1006, "handshake timeout");
    }, this._opts.handshakeTimeout);
    ws.onopen = () => {
      if (cn.dead) return;
      if (sync) {
        cn.entries = this._syncEntries();
        this._setStatus(Status.SYNCING);
        this._send(cn, { sys: SYS.SYNC, subscriptions: cn.entries });
      } else {
        this._setStatus(Status.BEGINNING);
        this._send(cn, { sys: SYS.BEGIN });
      }
    };
    ws.onmessage = (ev) => this._onMessage(cn, ev.data);
    ws.onclose = (ev) => this._onClose(cn, ev.code, ev.reason);
    ws.onerror = () => {
      // Browsers follow an error with a close event; Node's WebSocket
      // does not when the connection could not be made.
      setTimeout(() => {
        if (!cn.dead && ws.readyState !== 1) this._onClose(cn, 1006, "connection failed");
      }, 0);
    };
  }

  _send(cn, obj) {
    try {
      cn.ws.send(JSON.stringify(obj));
    } catch (e) {
      this._log("debug", "sss: send failed", e);
    }
  }

  _onMessage(cn, data) {
    if (cn.dead) return;
    if (data === "h") {
      this._send1(cn, "h");
      this._armHeartbeat(cn);
      return;
    }
    if (cn.closeSent) return; // closing: nothing more is delivered
    let m;
    try {
      m = JSON.parse(data);
    } catch (e) {
      this._log("warn", "sss: undecodable frame from the server", e);
      return;
    }
    if (!m || typeof m !== "object") return;
    if (cn.handshaking) {
      if (!cn.sync && m.sys === SYS.BEGIN) {
        this._handshakeDone(cn, () => this._applyBegin(m));
      } else if (cn.sync && m.sys === SYS.SYNC && m.id === undefined) {
        this._handshakeDone(cn, () => this._applySync(cn, cn.entries, m));
      } else if (m.sys === SYS.BOOT) {
        this._handle(cn, m);
      } else {
        cn.pending.push(m); // handled after the reply, de-duplicated by uid
      }
      return;
    }
    this._handle(cn, m);
  }

  _send1(cn, text) {
    try {
      cn.ws.send(text);
    } catch (e) {
      this._log("debug", "sss: send failed", e);
    }
  }

  _handshakeDone(cn, apply) {
    clearTimeout(cn.hsTimer);
    cn.handshaking = false;
    const wasSync = cn.sync;
    apply();
    this._attempt = 0;
    if (wasSync) this.stats.reconnects++;
    this._armHeartbeat(cn);
    this._setStatus(Status.READY);
    const waiters = this._readyWaiters;
    this._readyWaiters = [];
    for (const w of waiters) w.resolve(this);
    const pending = cn.pending;
    cn.pending = [];
    for (const m of pending) {
      if (cn.dead || this._conn !== cn) return;
      this._handle(cn, m);
    }
  }

  _armHeartbeat(cn) {
    if (!this._hb || cn.handshaking || cn.closeSent || cn.dead) return;
    clearTimeout(cn.hbTimer);
    cn.hbTimer = setTimeout(() => {
      // docs/protocol.md §8: none for interval + threshold.
      this._log("warn", "sss: heartbeat lost", this._url);
      this._abandon(cn, CloseCode.HEARTBEAT_LOST, "The socket did not receive a heartbeat");
    }, this._hb.total);
  }

  _stopHeartbeat(cn) {
    clearTimeout(cn.hbTimer);
    cn.hbTimer = null;
  }

  // _abandon closes cn with code and goes on at once as if it had closed:
  // its later events are ignored (a lost heartbeat, a stuck handshake).
  _abandon(cn, code, reason) {
    if (cn.dead) return;
    try {
      if (code === CloseCode.HEARTBEAT_LOST) cn.ws.close(code, reason123(reason));
      else cn.ws.close();
    } catch (e) {
      this._log("debug", "sss: close", e);
    }
    this._onClose(cn, code, reason);
  }

  _onClose(cn, code, reason) {
    if (cn.dead) return;
    cn.dead = true;
    clearTimeout(cn.hsTimer);
    clearTimeout(cn.closeTimer);
    this._stopHeartbeat(cn);
    cn.ws.onopen = cn.ws.onmessage = cn.ws.onclose = cn.ws.onerror = null;
    if (this._conn === cn) this._conn = null;
    this._failRequests(cn);
    if (this._suspended) return; // page hidden: pageshow reconnects
    if (this._closing) {
      this._finish(Status.CLOSED, new SSSError("closed", "the client was closed"));
      return;
    }
    if (cn.booted || code === CloseCode.BOOTED) {
      const why = reason || cn.bootReason;
      if (!this._begun && !cn.booted) {
        this._finish(Status.START_FAILED, new SSSError("refused", "the server refused the session: " + why));
        return;
      }
      this._finish(Status.BOOTED, new SSSError("booted", "booted by the server: " + why), why);
      return;
    }
    if (code === CloseCode.BY_CLIENT) {
      this._finish(Status.CLOSED, new SSSError("closed", "the server closed the connection with 4000"));
      return;
    }
    this._attemptFailed(cn, code, reason);
  }

  // _attemptFailed decides what follows a connection that ended (cn null:
  // one that could not even be created): a retry after a backoff, or the
  // end when reconnection is off or the attempts are used up.
  _attemptFailed(cn, code, reason) {
    const info = { code, reason: reason || "" };
    const live = cn !== null && !cn.handshaking;
    if (live) {
      this._attempt = 0;
      this._setStatus(Status.DROPPED_RETRYING, info);
    } else {
      this._attempt++;
    }
    if (this._begun) this._markDropped();
    const kind = this._begun ? "reconnect_failed" : "start_failed";
    const status = this._begun ? Status.RECONNECT_FAILED : Status.START_FAILED;
    if (!this._opts.autoReconnect) {
      this._finish(status, new SSSError(kind, `connection closed (${code} ${reason || ""}); reconnection is off`));
      return;
    }
    // connect makes 1 + reconnectAttempts attempts, a reconnection
    // reconnectAttempts; 0 means no limit.
    const limit = this._opts.reconnectAttempts;
    if (limit > 0 && this._attempt >= (this._begun ? limit : limit + 1)) {
      this._finish(status, new SSSError(kind, `gave up after ${this._attempt} attempts (last close ${code} ${reason || ""})`));
      return;
    }
    this._schedule(info, this._begun ? this._attempt : this._attempt - 1);
  }

  // _schedule waits a random time in [0, min(cap, base * 2^n)) ("full
  // jitter"), then makes the next attempt.
  _schedule(info, n) {
    const ceil = Math.min(this._opts.reconnectCap, this._opts.reconnectBase * 2 ** Math.min(n, 30));
    const delay = Math.floor(Math.random() * ceil) + 1;
    this._setStatus(Status.RETRY_INTERVAL, { ...info, retryIn: delay, retryAt: Date.now() + delay });
    this._timer = setTimeout(() => {
      this._timer = null;
      this._setStatus(this._begun ? Status.DROPPED_RETRYING : Status.START_RETRYING, { attempt: this._attempt + 1 });
      this._open();
    }, delay);
  }

  _clearTimer() {
    if (this._timer) clearTimeout(this._timer);
    this._timer = null;
  }

  _markDropped() {
    for (const ch of this._channels.values()) for (const s of ch.subs) s._setStatus(SubStatus.DROPPED);
  }

  // _failRequests fails what waited for replies on cn: nothing is re-sent.
  _failRequests(cn) {
    const lost = () => new SSSError("connection_lost", "the connection was lost before the reply");
    for (const p of cn.asks.values()) {
      clearTimeout(p.timer);
      p.reject(lost());
    }
    cn.asks.clear();
    for (const p of cn.subs.values()) this._subFailed(p, lost());
    cn.subs.clear();
  }

  _finish(status, err, bootReason) {
    this._clearTimer();
    this._final = err;
    const subStatus = {
      [Status.BOOTED]: SubStatus.BOOTED, [Status.CLOSED]: SubStatus.CLOSED,
      [Status.RECONNECT_FAILED]: SubStatus.RECONNECT_FAILED, [Status.START_FAILED]: SubStatus.CLOSED,
    }[status];
    for (const ch of this._channels.values()) for (const s of ch.subs) s._setStatus(subStatus, err);
    this._channels.clear();
    for (const p of this._subWait.values()) this._subFailed(p, err);
    this._subWait.clear();
    this._setStatus(status, { error: err });
    const waiters = this._readyWaiters;
    this._readyWaiters = [];
    for (const w of waiters) w.reject(err);
    if (status === Status.BOOTED) for (const fn of [...this._bootFns]) safeCall(this, fn, [bootReason || ""]);
    if (this._closing) this._closing.resolve();
    this._unlifecycle();
  }

  _setStatus(status, info = {}) {
    const old = this._status;
    this._status = status;
    for (const fn of [...this._statusFns]) safeCall(this, fn, [status, old, info]);
  }

  // _readyConn returns the connection requests may use: one whose BEGIN
  // or SYNC was answered (listeners called while the SYNC reply is
  // applied may already ask), and that is not closing.
  _readyConn() {
    const cn = this._conn;
    return cn && !cn.dead && !cn.handshaking && !cn.closeSent ? cn : null;
  }

  _notConnected(what) {
    if (this._final) return new SSSError(this._final.code, `${what}: ${this._final.message}`);
    return new SSSError("not_connected", `${what}: not connected (status ${this._status}); retry when ready`);
  }

  _log(level, ...args) {
    const l = this._opts.logger;
    if (l && typeof l[level] === "function" && level !== "debug") l[level](...args);
    else if (l && level === "debug" && typeof l.debug === "function" && this._opts.debug) l.debug(...args);
  }

  // ---- frames ----

  _handle(cn, m) {
    switch (m.sys) {
      case SYS.FEED:
        this._applyFeed(m, false);
        break;
      case SYS.UPDATESUB: {
        const ch = this._channels.get(m.channel);
        if (ch) accept(ch, m.uid);
        break;
      }
      case SYS.SUBSCRIBE:
        this._subscribeReply(cn, m);
        break;
      case SYS.SYNC:
        if (m.id !== undefined) this._syncSubscribeReply(cn, m);
        break;
      case SYS.RESPONSE: {
        const p = cn.asks.get(m.id);
        if (!p) break;
        cn.asks.delete(m.id);
        clearTimeout(p.timer);
        if (m.err) p.reject(serverError(m.err));
        else p.resolve(m.msg === undefined ? null : m.msg);
        break;
      }
      case SYS.TELL:
        if (m.topic === "_presence") this._presence(m.msg);
        else emitTopic(this, this._tellFns, m.topic, [m.msg, m.topic]);
        break;
      case SYS.BROADCAST:
        emitTopic(this, this._broadcastFns, m.topic, [m.msg, m.topic]);
        break;
      case SYS.BOOT:
        // Answer with close 4001 and the reason; the server echoes it.
        cn.booted = true;
        cn.bootReason = typeof m.reason === "string" ? m.reason : "";
        cn.closeSent = true;
        this._stopHeartbeat(cn);
        try {
          cn.ws.close(CloseCode.BOOTED, reason123(cn.bootReason));
        } catch (e) {
          this._log("debug", "sss: close", e);
        }
        cn.closeTimer = setTimeout(() => this._onClose(cn, CloseCode.BOOTED, cn.bootReason), this._opts.closeTimeout);
        break;
      default:
        if (m.sys === undefined && m.err) this._errorFrame(m.err);
    }
  }

  _errorFrame(e) {
    const err = serverError(e);
    // The sss server removed the socket from a channel (server.BootChannel).
    const prefix = "removed from channel ";
    if (e.code === "channel_booted" && typeof e.message === "string" && e.message.startsWith(prefix)) {
      const ch = this._channels.get(e.message.slice(prefix.length));
      if (ch) {
        this._channels.delete(ch.name);
        if (ch.user) this._userSub = null;
        for (const s of [...ch.subs]) s._setStatus(SubStatus.UNSUBSCRIBED, err);
        ch.subs.clear();
      }
    }
    if (this._errorFns.size === 0) this._log("warn", "sss: error from the server", err);
    for (const fn of [...this._errorFns]) safeCall(this, fn, [err]);
  }

  _presence(ev) {
    if (!ev || typeof ev !== "object") return;
    for (const fn of [...this._presenceFns]) safeCall(this, fn, [ev]);
    const ch = this._channels.get(ev.channel);
    if (ch) for (const s of [...ch.subs]) for (const fn of [...s._presenceFns]) safeCall(this, fn, [ev]);
  }

  _applyFeed(m, recovered) {
    const ch = this._channels.get(m.channel);
    if (!ch) return;
    if (!accept(ch, m.uid)) {
      this.stats.duplicates++;
      return;
    }
    if (recovered) this.stats.recovered++;
    else this.stats.feeds++;
    if (ch.deferred) {
      ch.deferred.push(m);
      return;
    }
    this._deliver(ch, m);
  }

  _deliver(ch, m) {
    for (const s of [...ch.subs]) s._deliver(m.topic, m.msg, m.uid);
    if (ch.user && ch.subs.size > 0) emitTopic(this, this._userFns, m.topic, [m.msg, m.uid, this._userSub]);
  }

  _applyBegin(m) {
    const p = m.prot && typeof m.prot === "object" ? m.prot : {};
    this._hb = p.hb && p.hbInterval > 0 ? { total: p.hbInterval + (p.hbThreshold > 0 ? p.hbThreshold : 1000) } : null;
    this._begun = true;
    if (typeof m.channel !== "string" || m.channel === "") return;
    let ch = this._channels.get(m.channel);
    if (!ch) {
      ch = newChannel(m.channel, undefined, ++this._ord, true);
      this._channels.set(ch.name, ch);
    }
    ch.lastUid = m.lastUid ?? null;
    if (!this._userSub) {
      this._userSub = new Subscription(this, ch);
      ch.subs.add(this._userSub);
    }
  }

  // _syncEntries lists the channels to recover: the user channel first
  // (query null), then the others in first-subscription order.
  _syncEntries() {
    const chans = [...this._channels.values()].sort((a, b) => (a.user !== b.user ? (a.user ? -1 : 1) : a.ord - b.ord));
    const entries = [];
    for (const ch of chans) {
      const e = { channel: ch.name, lastUid: ch.lastUid ?? null };
      if (ch.user) e.query = null;
      else if (ch.hasQuery) e.query = ch.query;
      entries.push(e);
      for (const s of ch.subs) s._setStatus(SubStatus.SYNCING);
    }
    return entries;
  }

  // _applySync takes the reconnection's SYNC reply: records first, in
  // order, then each channel's outcome.
  _applySync(cn, entries, m) {
    const result = m.result && typeof m.result === "object" ? m.result : {};
    const errors = m.errors && typeof m.errors === "object" ? m.errors : {};
    for (const r of Array.isArray(m.records) ? m.records : []) {
      if (r && typeof r.channel === "string") this._applyFeed(r, true);
    }
    for (const e of entries) {
      const ok = result[e.channel] === true;
      const perr = ok ? null : errors[e.channel] || { name: "Error", message: "no result for this channel", code: "internal" };
      const notRecoverable = !ok && e.channel in result && perr.code === "not_recoverable";
      const ch = this._channels.get(e.channel);
      if (!ch) {
        // Unsubscribed while syncing: the server holds it again.
        if (ok || notRecoverable) this._send(cn, { sys: SYS.UNSUBSCRIBE, channel: e.channel });
        continue;
      }
      if (ok) {
        for (const s of [...ch.subs]) s._setStatus(SubStatus.ACTIVE);
      } else if (notRecoverable) {
        this.stats.notRecoverable++;
        const err = serverError(perr);
        for (const s of [...ch.subs]) s._setStatus(SubStatus.NOT_RECOVERABLE, err);
      } else {
        this.stats.refused++;
        const err = serverError(perr);
        this._channels.delete(ch.name);
        if (ch.user) this._userSub = null;
        for (const s of [...ch.subs]) s._setStatus(SubStatus.REFUSED, err);
      }
    }
  }

  // ---- subscriptions ----

  _newSub(ch, options) {
    const s = new Subscription(this, ch);
    if (options.on) for (const [topic, fn] of Object.entries(options.on)) s.on(topic, fn);
    if (options.onStatus) s.onStatus(options.onStatus);
    if (options.onPresence) s.onPresence(options.onPresence);
    ch.subs.add(s);
    return s;
  }

  _startSubscribe(cn, channel, options) {
    const p = {
      channel, options, hasQuery: "query" in options, query: options.query, fromUid: options.fromUid,
      attempt: 0, abandoned: false, timer: null, retry: null, id: 0,
    };
    p.promise = new Promise((resolve, reject) => {
      p.resolve = resolve;
      p.reject = reject;
    });
    const timeout = options.timeout ?? this._opts.subscribeTimeout;
    if (timeout > 0) {
      p.timer = setTimeout(() => {
        p.abandoned = true;
        this._subFailed(p, new SSSError("timeout", `subscribe ${channel}: no grant within ${timeout} ms`));
      }, timeout);
    }
    this._subWait.set(channel, p);
    this._sendSubscribe(cn, p);
    p.promise.catch(() => {}); // waiters chained on it handle their own
    return p.promise;
  }

  _sendSubscribe(cn, p) {
    p.id = ++cn.nextId;
    cn.subs.set(p.id, p);
    if (p.fromUid != null) {
      const e = { channel: p.channel, lastUid: String(p.fromUid) };
      if (p.hasQuery) e.query = p.query;
      this._send(cn, { sys: SYS.SYNC, subscriptions: [e], id: p.id });
    } else {
      this._send(cn, { sys: SYS.SUBSCRIBE, channel: p.channel, query: p.query, id: p.id });
    }
  }

  _subFailed(p, err) {
    clearTimeout(p.timer);
    clearTimeout(p.retry);
    if (this._subWait.get(p.channel) === p) this._subWait.delete(p.channel);
    p.reject(err);
  }

  _takePending(cn, id) {
    const p = cn.subs.get(id);
    if (p) cn.subs.delete(id);
    return p;
  }

  _subscribeReply(cn, m) {
    const p = this._takePending(cn, m.id);
    if (!p) return;
    if (m.result !== true) {
      const e = m.err || {};
      if (e.code === "unavailable" && !p.abandoned) {
        // The backend could not answer now: retry with backoff.
        const ceil = Math.min(this._opts.reconnectCap, this._opts.reconnectBase * 2 ** Math.min(p.attempt++, 30));
        const key = "retry:" + p.channel;
        cn.subs.set(key, p); // so that a drop fails it
        p.retry = setTimeout(() => {
          cn.subs.delete(key);
          if (!p.abandoned && !cn.dead && this._conn === cn) this._sendSubscribe(cn, p);
        }, Math.floor(Math.random() * ceil) + 1);
        return;
      }
      this._subFailed(p, serverError(m.err));
      return;
    }
    this._granted(cn, p, typeof m.lastUid === "string" ? m.lastUid : null);
  }

  _granted(cn, p, lastUid) {
    clearTimeout(p.timer);
    if (this._subWait.get(p.channel) === p) this._subWait.delete(p.channel);
    if (p.abandoned) {
      this._send(cn, { sys: SYS.UNSUBSCRIBE, channel: p.channel });
      return null;
    }
    let ch = this._channels.get(p.channel);
    if (!ch) {
      ch = newChannel(p.channel, p.query, ++this._ord, false, p.hasQuery);
      ch.lastUid = lastUid;
      this._channels.set(ch.name, ch);
    }
    const sub = this._newSub(ch, p.options);
    p.resolve(sub);
    return sub;
  }

  // _syncSubscribeReply takes the reply to a subscribe from a known uid.
  _syncSubscribeReply(cn, m) {
    const p = this._takePending(cn, m.id);
    if (!p) return;
    const ok = m.result && m.result[p.channel] === true;
    const perr = m.errors && m.errors[p.channel];
    const notRecoverable = !ok && perr && perr.code === "not_recoverable";
    if (!ok && !notRecoverable) {
      this._subFailed(p, serverError(perr));
      return;
    }
    if (p.abandoned) {
      this._send(cn, { sys: SYS.UNSUBSCRIBE, channel: p.channel });
      return;
    }
    const held = this._channels.get(p.channel);
    const ch = held || newChannel(p.channel, p.query, ++this._ord, false, p.hasQuery);
    if (!held) {
      ch.lastUid = String(p.fromUid);
      ch.deferred = []; // records wait until the app holds the subscription
      this._channels.set(ch.name, ch);
    }
    for (const r of Array.isArray(m.records) ? m.records : []) {
      if (r && r.channel === p.channel) this._applyFeed(r, true);
    }
    const sub = this._granted(cn, p, null);
    if (notRecoverable && sub) {
      this.stats.notRecoverable++;
      sub._setStatus(SubStatus.NOT_RECOVERABLE, serverError(perr));
    }
    if (held) return;
    // Deliver the records right after the promise's continuation ran.
    queueMicrotask(() => {
      const list = ch.deferred || [];
      ch.deferred = null;
      for (const r of list) this._deliver(ch, r);
    });
  }

  _unsubscribe(sub) {
    if (SUB_FINAL.has(sub._status)) return;
    const ch = sub._ch;
    sub._setStatus(SubStatus.UNSUBSCRIBED);
    ch.subs.delete(sub);
    if (this._userSub === sub) this._userSub = null;
    if (ch.subs.size > 0 || this._channels.get(ch.name) !== ch) return;
    this._channels.delete(ch.name);
    const cn = this._readyConn();
    // Not ready: the SYNC reply unsubscribes the channels it finds gone.
    if (cn) this._send(cn, { sys: SYS.UNSUBSCRIBE, channel: ch.name });
  }

  // ---- page lifecycle ----

  _lifecycle() {
    if (!this._opts.pageLifecycle || typeof window === "undefined" || typeof window.addEventListener !== "function") return;
    this._win = window;
    this._onHide = () => this._pageHide();
    this._onShow = () => this._pageShow();
    this._win.addEventListener("pagehide", this._onHide);
    this._win.addEventListener("pageshow", this._onShow);
  }

  _unlifecycle() {
    if (!this._win) return;
    this._win.removeEventListener("pagehide", this._onHide);
    this._win.removeEventListener("pageshow", this._onShow);
    this._win = this._onHide = this._onShow = null;
  }

  // _pageHide closes the connection when the page is left (or goes into
  // the back/forward cache), so the server drops the socket at once.
  _pageHide() {
    if (FINAL.has(this._status) || this._closing || this._suspended) return;
    this._suspended = true;
    this._clearTimer();
    const cn = this._conn;
    if (cn) {
      try {
        cn.ws.close(CloseCode.BY_CLIENT, "page hidden");
      } catch (e) {
        this._log("debug", "sss: close", e);
      }
      this._onClose(cn, CloseCode.BY_CLIENT, "page hidden");
    }
    if (this._begun) this._markDropped();
    this._setStatus(this._begun ? Status.DROPPED_RETRYING : Status.START_RETRYING, { code: CloseCode.BY_CLIENT, reason: "page hidden", suspended: true });
  }

  // _pageShow reconnects (and SYNCs) when the page comes back.
  _pageShow() {
    if (!this._suspended || FINAL.has(this._status) || this._closing) return;
    this._suspended = false;
    this._attempt = 0;
    this._open();
  }
}

function newChannel(name, query, ord, user, hasQuery = false) {
  return { name, query, hasQuery, ord, user, lastUid: null, subs: new Set(), deferred: null };
}

// accept records uid as the channel's last applied one, unless it is at or
// before the one it has in the same epoch (a duplicate): then false.
function accept(ch, uid) {
  const u = parseUid(uid);
  const last = parseUid(ch.lastUid);
  if (u && last && u.epoch === last.epoch && cmpSeq(u.seq, last.seq) <= 0) return false;
  if (typeof uid === "string" && uid !== "") ch.lastUid = uid;
  return true;
}

function buildUrl(url, o) {
  let base;
  if (typeof location !== "undefined" && location && location.href) base = location.href;
  if (url == null || url === "") {
    if (!base) throw new SSSError("not_connected", "connect: no URL given");
    url = "/ws";
  }
  const u = base ? new URL(url, base) : new URL(url);
  if (u.protocol === "http:") u.protocol = "ws:";
  if (u.protocol === "https:") u.protocol = "wss:";
  if (u.protocol !== "ws:" && u.protocol !== "wss:") throw new SSSError("not_connected", `connect: ${url}: not a ws, wss, http or https URL`);
  if (o.user != null && o.user !== "") u.searchParams.set("user", String(o.user));
  for (const [k, v] of Object.entries(o.params || {})) u.searchParams.set(k, String(v));
  return u.toString();
}

const sss = { connect, Client, Subscription, SSSError, Status, SubStatus, CloseCode, compareUids };
export default sss;

// sss:global — the classic-script variant (served with ?global) ends here
// with `globalThis.sss = sss;` instead of the exports above.
