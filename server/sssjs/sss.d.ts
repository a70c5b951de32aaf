// Type declarations of sss.js, the browser client of sss (wire protocol v1).

/** Any JSON value. */
export type JSONValue = string | number | boolean | null | JSONValue[] | { [key: string]: JSONValue };

/** Client states, as the Go client's (in the SSS client's order). */
export declare const Status: {
  readonly INIT: "init";
  readonly STARTING: "starting";
  readonly START_RETRYING: "start_retrying";
  readonly DROPPED_RETRYING: "dropped_retrying";
  readonly START_FAILED: "start_failed";
  readonly RETRY_INTERVAL: "retry_interval";
  readonly RECONNECT_FAILED: "reconnect_failed";
  readonly READY: "ready";
  readonly SYNCING: "syncing";
  readonly BEGINNING: "beginning";
  readonly BOOTED: "booted";
  readonly CLOSED: "closed";
};
export type Status = (typeof Status)[keyof typeof Status];

/** Subscription states; "refused" and "not_recoverable" are the SSS client's SYNC_FAILED. */
export declare const SubStatus: {
  readonly ACTIVE: "active";
  readonly DROPPED: "dropped";
  readonly SYNCING: "syncing";
  readonly REFUSED: "refused";
  readonly NOT_RECOVERABLE: "not_recoverable";
  readonly UNSUBSCRIBED: "unsubscribed";
  readonly BOOTED: "booted";
  readonly CLOSED: "closed";
  readonly RECONNECT_FAILED: "reconnect_failed";
};
export type SubStatus = (typeof SubStatus)[keyof typeof SubStatus];

/** Close codes that matter to a client. */
export declare const CloseCode: {
  readonly GOING_AWAY: 1001;
  readonly SERVICE_RESTART: 1012;
  readonly TRY_AGAIN_LATER: 1013;
  readonly BY_CLIENT: 4000;
  readonly BOOTED: 4001;
  readonly SLOW_CONSUMER: 4002;
  readonly HEARTBEAT_TIMEOUT: 4003;
  readonly HEARTBEAT_LOST: 4100;
};

/** The client's own error codes (server errors carry the server's code). */
export type LocalErrorCode =
  | "not_connected"
  | "timeout"
  | "connection_lost"
  | "closed"
  | "booted"
  | "refused"
  | "reserved_channel"
  | "start_failed"
  | "reconnect_failed";

/** Every error the client reports. */
export declare class SSSError extends Error {
  constructor(code: string, message: string, serverName?: string);
  readonly name: "SSSError";
  /** Machine-readable: a LocalErrorCode, or the server's code (e.g. "forbidden", "not_recoverable"). */
  readonly code: LocalErrorCode | (string & {});
  /** The `name` of the server's error object, when the server sent it. */
  readonly serverName?: string;
}

/** What a status listener gets besides the statuses. */
export interface StatusInfo {
  /** The close code of the connection that ended (dropped_retrying, retry_interval). */
  code?: number;
  /** Its close reason. */
  reason?: string;
  /** retry_interval: milliseconds until the next attempt. */
  retryIn?: number;
  /** retry_interval: when the next attempt starts (Date.now() based). */
  retryAt?: number;
  /** start_retrying, dropped_retrying: the attempt number since the last ready. */
  attempt?: number;
  /** dropped_retrying after pagehide: waiting for pageshow. */
  suspended?: boolean;
  /** Final statuses: why the client stopped. */
  error?: SSSError;
}

/** A presence event (server tell on topic "_presence"). */
export interface PresenceEvent {
  channel: string;
  event: "join" | "leave";
  member: { user?: string; info?: JSONValue };
}

/** Options of connect. Every field is optional; defaults in brackets. */
export interface ClientOptions {
  /** Adds `user=<user>` to the URL's query (the server's session parser reads it). */
  user?: string;
  /** More query parameters for the URL. */
  params?: Record<string, string | number | boolean>;
  /** Base of the exponential backoff in ms [500]. */
  reconnectBase?: number;
  /** Cap of the backoff in ms [30000]. */
  reconnectCap?: number;
  /** Attempts of a reconnection; connect makes one more [0 = no limit]. */
  reconnectAttempts?: number;
  /** Reconnect after a drop [true]. */
  autoReconnect?: boolean;
  /** Default timeout of ask in ms [10000]; 0 = none. */
  askTimeout?: number;
  /** Default timeout of subscribe in ms, retries included [30000]; 0 = none. */
  subscribeTimeout?: number;
  /** Bound of one attempt: upgrade plus BEGIN or SYNC reply, in ms [10000]. */
  handshakeTimeout?: number;
  /** How long close waits for the server to end the connection, in ms [5000]. */
  closeTimeout?: number;
  /** Close on pagehide and reconnect (SYNC) on pageshow [true]. */
  pageLifecycle?: boolean;
  /** The WebSocket constructor [globalThis.WebSocket]. */
  WebSocket?: new (url: string) => WebSocket;
  /** Where warnings and errors go [console]; null for none. */
  logger?: Pick<Console, "warn" | "error"> & Partial<Pick<Console, "info" | "debug">> | null;
  /** Also log debug messages through logger.debug [false]. */
  debug?: boolean;
}

/** Options of subscribe. */
export interface SubscribeOptions<Q = JSONValue> {
  /** Sent to the server's subscription parser, and again on each SYNC. */
  query?: Q;
  /** Subscribe from this uid: what was published after it is delivered first. */
  fromUid?: string;
  /** Topic listeners registered before anything is delivered ("*": other topics). */
  on?: Record<string, PublicationListener>;
  /** A status listener registered at once. */
  onStatus?: SubStatusListener;
  /** A presence listener registered at once. */
  onPresence?: (event: PresenceEvent) => void;
  /** Bound of the subscribe, retries of "unavailable" included, in ms. */
  timeout?: number;
}

export type PublicationListener = (msg: any, uid: string, subscription: Subscription) => void;
export type SubStatusListener = (status: SubStatus, previous: SubStatus, error: SSSError | null) => void;
/** Removes the listener it was returned for. */
export type Off = () => void;

/** One subscription to a channel. */
export declare class Subscription {
  private constructor();
  readonly channel: string;
  readonly status: SubStatus;
  readonly error: SSSError | null;
  /** The last uid applied (or the position the server gave); null when none. */
  readonly lastUid: string | null;
  readonly isUserChannel: boolean;
  /** Publications on topic, in uid order, each once ("*": topics with no listener). */
  on(topic: string, fn: PublicationListener): Off;
  onStatus(fn: SubStatusListener): Off;
  onPresence(fn: (event: PresenceEvent) => void): Off;
  unsubscribe(): void;
}

/** A client: one logical connection that reconnects and recovers. */
export declare class Client {
  constructor(url?: string, options?: ClientOptions);
  readonly status: Status;
  readonly url: string;
  /** The user channel granted by BEGIN, or null. */
  readonly userChannel: Subscription | null;
  /** Why the client stopped, once its status is final. */
  readonly error: SSSError | null;
  /** Resolves at the first ready; rejects if the client stops first. */
  readonly ready: Promise<Client>;
  /** Counters, for diagnostics. */
  readonly stats: {
    reconnects: number;
    recovered: number;
    duplicates: number;
    notRecoverable: number;
    refused: number;
    feeds: number;
  };
  whenReady(): Promise<Client>;
  onStatus(fn: (status: Status, previous: Status, info: StatusInfo) => void): Off;
  onTell(topic: string, fn: (msg: any, topic: string) => void): Off;
  onBroadcast(topic: string, fn: (msg: any, topic: string) => void): Off;
  onUser(topic: string, fn: PublicationListener): Off;
  onPresence(fn: (event: PresenceEvent) => void): Off;
  onBoot(fn: (reason: string) => void): Off;
  onError(fn: (error: SSSError) => void): Off;
  /** Rejects with SSSError: the server's code, or timeout, connection_lost, not_connected. */
  ask<R = any>(topic: string, msg?: JSONValue | object, options?: { timeout?: number }): Promise<R>;
  /** Throws SSSError "not_connected" when the client is not connected (nothing is queued). */
  tell(topic: string, msg?: JSONValue | object): void;
  subscribe<Q = JSONValue>(channel: string, options?: SubscribeOptions<Q>): Promise<Subscription>;
  close(): Promise<void>;
}

/** Creates a client and starts connecting; url defaults to "/ws" in a browser. */
export declare function connect(url?: string, options?: ClientOptions): Client;

/** Orders two uids of one channel; null when not comparable (other epochs). */
export declare function compareUids(a: string, b: string): number | null;

declare const sss: {
  connect: typeof connect;
  Client: typeof Client;
  Subscription: typeof Subscription;
  SSSError: typeof SSSError;
  Status: typeof Status;
  SubStatus: typeof SubStatus;
  CloseCode: typeof CloseCode;
  compareUids: typeof compareUids;
};
export default sss;
