/**
 * ConnectionManager: the browser client of Realtime Sync.
 *
 * WebSocket first (`/ws`); long polling (`GET /api/sync/poll?wait=`) when a
 * WebSocket cannot open or is cut right after it opens, and back to WebSocket
 * as soon as a background attempt succeeds. Every reconnect and transport
 * switch resumes by cursor and messages are de-duplicated by id, so a page
 * sees each message once, in order. The wire protocol is SPEC.md §2, §4, §5.
 *
 * One module, so that a page (or another origin) loads one file and a
 * frontend can vendor it as is; it reads as small pieces, in this order:
 * types and defaults · errors · backoff · recent ids · listeners · HTTP API ·
 * WebSocket transport · polling transport · page environment · the manager.
 *
 * Source: client/src/connection-manager.ts. The committed
 * sync/static/sync/connection-manager.js is its build (`cd client && npm run
 * build`); a test fails when the two differ, so edit the source only.
 */
/**
 * - `connecting`: an attempt is under way (see `transport` for which);
 * - `connected`: messages flow;
 * - `disconnected`: not connected: before `connect()`, after `disconnect()`,
 *   or waiting to retry (`retryInMs` says how long);
 * - `failed`: gave up until `connect()` is called again: authentication
 *   refused (4401 / HTTP 401), a permanent error, or `maxReconnectAttempts`
 *   failed attempts in a row.
 */
export type ConnectionState = "connecting" | "connected" | "disconnected" | "failed";
/** How messages currently flow. */
export type TransportKind = "websocket" | "polling";
/**
 * Why the state changed, when it is not simply progress:
 * `client` (disconnect() was called), `connection_lost`, `heartbeat_timeout`
 * (the server's pings stopped), `offline` (waiting for the network),
 * `auth` (credentials refused: no retry), `forbidden` (a topic was refused),
 * `bad_request` (the server refused the connection parameters),
 * `unreachable` (maxReconnectAttempts failed attempts in a row).
 */
export type StateReason = "client" | "connection_lost" | "heartbeat_timeout" | "offline" | "auth" | "forbidden" | "bad_request" | "unreachable";
/** The envelope of every message a client receives (SPEC §2). */
export interface SyncMessage<P = Record<string, unknown>> {
    id: string;
    type: string;
    payload: P;
    /** Server time in ms when published. */
    timestamp: number;
    /** The recipient's id; `null` for a broadcast. */
    userId: string | null;
    /** A broadcast's topic filter (`[]`: everyone). */
    topics: string[];
    /** Opaque position right after this message, for resuming. */
    cursor: string;
    correlationId: string | null;
}
/** What `send()` takes. `id` and `timestamp` are accepted for the original
 * design's callers: `id` names the WebSocket frame, `timestamp` is dropped
 * (the server stamps messages itself). */
export interface OutgoingMessage {
    type: string;
    payload?: Record<string, unknown>;
    correlationId?: string | null;
    id?: string;
    timestamp?: number;
}
/** What `send()` resolves with: the WebSocket `ack`, or the POST /send answer. */
export interface SendResult {
    messageId: string;
    timestamp: number;
    /** `websocket` when the ack came over the socket, `http` for POST /send. */
    via: "websocket" | "http";
}
/** Passed to `onStateChange` listeners with the new state. */
export interface StateChange {
    state: ConnectionState;
    previous: ConnectionState;
    /** The transport in use or being tried; `null` when there is none. */
    transport: TransportKind | null;
    reason: StateReason | null;
    /** While `disconnected` and waiting to retry: the wait, in ms. */
    retryInMs: number | null;
}
/**
 * Passed to `onResync` listeners: messages after the client's position were
 * lost (server-side TTL or overflow, a store restart, an unusable cursor), so
 * the page should reload its full state. Delivery then goes on from now.
 */
export interface ResyncEvent {
    reason: "recovered_false" | "gap" | "invalid_cursor";
    transport: TransportKind;
}
/** What `getQuality()` returns. */
export interface ConnectionQuality {
    transport: TransportKind | null;
    state: ConnectionState;
    /** Round trip of the last ping/pong (WebSocket) or quick poll, in ms. */
    latencyMs: number | null;
    /** Failed attempts in a row since the last connection that stayed up. */
    reconnectAttempts: number;
    /** Client time (ms) of the last new message, or `null`. */
    lastMessageAt: number | null;
    /** New messages handed to `onMessage` listeners (duplicates excluded). */
    messagesReceived: number;
}
/** The part of the browser's WebSocket the client uses (tests inject fakes). */
export interface WebSocketLike {
    readonly readyState: number;
    send(data: string): void;
    close(code?: number, reason?: string): void;
    onopen: ((event: unknown) => void) | null;
    onmessage: ((event: {
        data: unknown;
    }) => void) | null;
    onclose: ((event: {
        code: number;
        reason?: string;
    }) => void) | null;
    onerror: ((event: unknown) => void) | null;
}
export type WebSocketConstructor = new (url: string) => WebSocketLike;
/** The part of a fetch `Response` the client uses. */
export interface ResponseLike {
    readonly status: number;
    readonly ok: boolean;
    readonly headers: {
        get(name: string): string | null;
    };
    text(): Promise<string>;
}
export type FetchLike = (url: string, init: RequestInit) => Promise<ResponseLike>;
/** Time, injectable so tests control it. */
export interface Clock {
    now(): number;
    setTimeout(callback: () => void, ms: number): unknown;
    clearTimeout(handle: unknown): void;
}
/** Network and visibility events of the page (`null` outside a browser). */
export interface PageEnvironment {
    isOnline(): boolean;
    /** Call `listener` on the event; returns a function that stops listening. */
    listen(event: "online" | "offline" | "visible", listener: () => void): () => void;
}
/** Every option, with its default in `DEFAULTS`. */
export interface ConnectionOptions {
    /** WebSocket endpoint. A relative URL is resolved against the page, with
     * `ws:` for `http:` and `wss:` for `https:`. Default `"/ws"`. */
    websocketUrl: string;
    /** The poll endpoint, or the base of the sync API as in the original design
     * (`"…/api/sync"`): both work. Default `"/api/sync/poll"`. */
    pollingUrl: string;
    /** POST endpoint of `send()` when the WebSocket is not up. Default `null`:
     * next to the poll endpoint (`…/api/sync/send`). */
    sendUrl: string | null;
    /** API token (`POST /api/auth/token`) for cross-origin pages. HTTP requests
     * carry it as `Authorization: Token <token>`. A browser cannot set headers
     * on a WebSocket handshake, so the socket passes it as `?token=`, which the
     * server accepts and never writes to its logs (a proxy in front may log
     * URLs: keep such logs private). Default `null`: the session cookie. */
    token: string | null;
    /** fetch `credentials`. Default `"same-origin"`: the session cookie goes to
     * this origin only; use `"include"` for a cross-origin session. */
    credentials: RequestCredentials;
    /** Cookie holding Django's CSRF token, sent as `X-CSRFToken` on POST when
     * no `token` is set. Default `"csrftoken"`. */
    csrfCookieName: string;
    /** CSRF token to send instead of reading the cookie (a cross-origin page
     * cannot read it). Default `null`. */
    csrfToken: string | null;
    /** Topics subscribed from the start. Default `[]`. */
    topics: string[];
    /** Position to resume from, e.g. a `cursor` saved by the page. Default
     * `null`: messages from now on. */
    cursor: string | null;
    /** Try WebSocket at all. Default `true`; `false` polls only. */
    websocket: boolean;
    /** Shortest time between the starts of two polls, in ms: a burst of
     * messages is fetched in batches instead of one request each. Default
     * `1000`. */
    pollingInterval: number;
    /** Seconds the server may hold a poll open waiting for a message (`wait=`,
     * capped by the server's `SYNC_POLL_MAX_WAIT`). Default `25`. */
    pollWait: number;
    /** Messages per poll (`limit=`, 1–1000). Default `100`. */
    pollLimit: number;
    /** Failed attempts in a row before the state becomes `failed`. Default `10`
     * (`Infinity`: never give up). */
    maxReconnectAttempts: number;
    /** First backoff ceiling, in ms; it doubles per failed attempt. Default
     * `1000`. */
    reconnectDelay: number;
    /** Largest backoff ceiling, in ms. Default `30000`. */
    maxReconnectDelay: number;
    /** A connection up this long (ms) resets the backoff; a WebSocket cut
     * sooner by something other than the server counts as a WebSocket failure.
     * Default `10000`. */
    stableConnectionTime: number;
    /** WebSocket failures in a row before falling back to polling. Default
     * `2`. */
    fallbackAfterFailures: number;
    /** While polling, how often to try WebSocket again (ms). Default `30000`. */
    fallbackRetryInterval: number;
    /** A WebSocket not established within this time (ms) has failed. Default
     * `10000`. */
    connectTimeout: number;
    /** Time limit (ms) for an answer: an ack, a pong, POST /send, a quick
     * poll; a long poll gets `pollWait` on top. Default `10000`. */
    requestTimeout: number;
    /** Silence (ms) after which a WebSocket is deemed dead and replaced.
     * Default `null`: twice the server's heartbeat interval (announced in
     * `connection.established`; 60 s with the server's default 30 s). */
    heartbeatTimeout: number | null;
    /** How often (ms) to ping the server over WebSocket, which measures the
     * latency and finds a dead socket early. Default `15000`; `0`: never. */
    pingInterval: number;
    /** Message ids remembered to drop duplicates. Default `1000`. */
    dedupCacheSize: number;
    /** WebSocket class. Default `null`: the global `WebSocket` (none: polling). */
    WebSocketImpl: WebSocketConstructor | null;
    /** fetch function. Default `null`: the global `fetch`. */
    fetchImpl: FetchLike | null;
    /** Time source and timers. Default `null`: `Date.now` and global timers. */
    clock: Clock | null;
    /** Uniform random numbers in [0, 1) for the backoff jitter. Default `null`:
     * `Math.random`. */
    random: (() => number) | null;
    /** Network and visibility events. Default `"browser"`: `window` and
     * `document` when present; `null`: none. */
    environment: PageEnvironment | "browser" | null;
}
/** The defaults of every option (documented in `ConnectionOptions`). */
export declare const DEFAULTS: Readonly<ConnectionOptions>;
/**
 * An error with the server's stable `code` (SPEC §4 error envelope, or a
 * WebSocket error frame), or one of the client's own: `network_error`,
 * `timeout`, `connection_lost` (the socket closed before the answer),
 * `disconnected` (the manager was stopped), `http_<status>` (an answer
 * without the envelope, e.g. from a proxy), `invalid_response`.
 */
export declare class SyncError extends Error {
    readonly code: string;
    /** HTTP status, when the error came from an HTTP answer. */
    readonly status: number | null;
    readonly details: Record<string, unknown>;
    /** From `Retry-After` on 429/503, in ms. */
    readonly retryAfterMs: number | null;
    constructor(code: string, message: string, extra?: {
        status?: number | null;
        details?: Record<string, unknown>;
        retryAfterMs?: number | null;
    });
}
/**
 * Exponential backoff with full jitter: the n-th delay is uniform in
 * [0, min(max, base * 2^n)), so clients cut off together (a server restart)
 * do not all come back at the same instant. `reset()` after a connection
 * that stayed up; `attempts` counts the failures since.
 */
export declare class Backoff {
    private readonly base;
    private readonly max;
    private readonly random;
    attempts: number;
    constructor(base: number, max: number, random?: () => number);
    /** The wait before the next attempt, in ms; counts one more attempt. */
    next(): number;
    reset(): void;
}
/**
 * The last `capacity` message ids, to drop duplicates: a replay after a
 * reconnect or a transport switch may repeat what already arrived. Bounded:
 * the oldest id is forgotten first, long after any replay could repeat it.
 */
export declare class RecentIds {
    private readonly capacity;
    private readonly ids;
    constructor(capacity: number);
    /** True the first time `id` is seen; false for a duplicate. */
    add(id: string): boolean;
}
/** `Retry-After` in ms: delta-seconds or an HTTP date. */
export declare function parseRetryAfter(value: string | null, now: number): number | null;
/**
 * Connects a page to Realtime Sync and keeps it connected.
 *
 * ```js
 * const manager = getConnectionManager({ topics: ["ops"] });
 * manager.onMessage((message) => show(message));
 * manager.onStateChange((state, { transport }) => label(state, transport));
 * manager.onResync(() => reloadEverything());
 * await manager.connect();
 * await manager.send({ type: "chat.message", payload: { text: "hi" } });
 * ```
 */
export declare class ConnectionManager {
    private readonly options;
    private readonly clock;
    private readonly backoff;
    private readonly seen;
    private readonly topics;
    private readonly webSocketImpl;
    private readonly fetchImpl;
    private readonly environment;
    private http;
    private readonly messageListeners;
    private readonly stateListeners;
    private readonly resyncListeners;
    private readonly errorListeners;
    private state;
    private transport;
    private reason;
    /** Between connect() and disconnect(), even while failed. */
    private running;
    private socket;
    /** A WebSocket tried in the background while polling. */
    private probe;
    private poller;
    private pollingUp;
    private retryTimer;
    private probeTimer;
    private stableTimer;
    private websocketFailures;
    private cursor;
    /** Client time of connect() without a cursor: polling starts from this
     * moment, translated to the server's clock; 0: from the oldest message. */
    private since;
    /** The first since-based page was checked against the server's clock. */
    private sinceChecked;
    private readonly serverClock;
    /** Bumped by every subscribe() that adds topics. */
    private topicGeneration;
    /** Subscriptions up to this generation were accepted by a poll. */
    private verifiedGeneration;
    /** subscribe() calls made while polling, settled by the next poll answer. */
    private topicChecks;
    private pollLatencyMs;
    private lastMessageAt;
    private messagesReceived;
    private waiters;
    private unlisten;
    constructor(options?: Partial<ConnectionOptions>);
    /**
     * Start connecting (WebSocket first). Resolves once connected by either
     * transport; rejects with a SyncError if the manager fails or is
     * disconnected first (catch it: the state events report the same). Calling
     * it again while running waits for the same connection.
     */
    connect(): Promise<void>;
    /** Close every connection and stop retrying; `connect()` starts again. */
    disconnect(): void;
    /** Call `listener` with every new message (never twice). Returns an unsubscriber. */
    onMessage(listener: (message: SyncMessage) => void): () => void;
    /** Call `listener` on every change of state or transport. Returns an unsubscriber. */
    onStateChange(listener: (state: ConnectionState, change: StateChange) => void): () => void;
    /** Call `listener` when messages were lost: reload the page's state then. */
    onResync(listener: (event: ResyncEvent) => void): () => void;
    /** Call `listener` with errors no promise reports (error frames, poll failures). */
    onError(listener: (error: SyncError) => void): () => void;
    /**
     * Send a message as the current user: over the WebSocket when it is up,
     * else by POST /send. Resolves with the message's id and timestamp; rejects
     * with a SyncError whose `code` is the server's (`reserved_type`,
     * `payload_too_large`, `throttled`, …) or the client's (`timeout`,
     * `connection_lost`: the socket closed first, so it may or may not have
     * been stored).
     */
    send(message: OutgoingMessage): Promise<SendResult>;
    /**
     * Add topics (broadcasts with these topics arrive). Resolves with all
     * topics now, once the server has accepted the new ones: the WebSocket's
     * answer, or while polling the answer of a poll that carried them. A
     * refusal (`forbidden_topic`, `invalid_topics`) rejects with that
     * SyncError and drops the new topics; the connection goes on. Between
     * connections it resolves at once, and the next connection checks them.
     */
    subscribe(topics: string[]): Promise<string[]>;
    /** Remove topics. Resolves with all topics now. */
    unsubscribe(topics: string[]): Promise<string[]>;
    /** Transport, state, latency, retries and message figures, for a status bar. */
    getQuality(): ConnectionQuality;
    /** The current state. */
    getState(): ConnectionState;
    /** The position after the last message received: pass it as `cursor` later. */
    getCursor(): string | null;
    private restart;
    /** One attempt: WebSocket unless it failed too often in a row; else polling. */
    private attempt;
    /** After a failure: wait (backoff, at least Retry-After), then attempt again. */
    private retry;
    private fail;
    private stopTransports;
    private openSocket;
    private createSocket;
    private socketWelcomed;
    /** The cursor after the welcome, and the resync event if history was lost. */
    private adoptWelcome;
    private socketClosed;
    /** Send the subscription changes made while the socket was connecting;
     * resolves with the topics after the subscribe, or rejects with its error. */
    private reconcileTopics;
    private changeTopics;
    /** Settle the subscribe() calls up to `generation`: `error` or the topics now. */
    private settleTopicChecks;
    private startPolling;
    private pollRequest;
    /**
     * Whether a page read from `since` started where it should: at connect()
     * by the server's clock. A client clock ahead of the server's would skip
     * the messages published in between, one behind would replay older ones
     * as new. The page's own answer measured the offset (to within half its
     * round trip: see ServerClock); a `since` further off than that is asked
     * again once, corrected, and this page is dropped unread. A page cut short
     * by `limit` carries no clock reading: then only a Date header (to the
     * second) can correct it, or, cross-origin, nothing.
     */
    private sinceIsRight;
    private pollPage;
    /** A poll failed: true when the next poll can go at once, fixed. */
    private pollFailed;
    /**
     * A poll carrying unchecked subscriptions (those up to `generation`) was
     * refused: drop the topics of the subscribe() calls to blame and reject
     * them with the server's error; the next poll goes on without them (and
     * checks the others). To blame: the call that added the topic the error
     * names (forbidden_topic does), else all of them, as one refused topic
     * refuses the whole request. False when the named topic is none of
     * theirs: a topic the server had accepted before, which polling again
     * cannot fix.
     */
    private refuseTopics;
    /** While polling, try WebSocket again every fallbackRetryInterval. */
    private scheduleProbe;
    /** Every message from either transport: move the cursor, drop duplicates. */
    private receive;
    /** No position: polling will start from this moment (see sinceIsRight). */
    private startFromNow;
    private dropCursor;
    private setState;
    private settleWaiters;
    private httpApi;
    private listenToPage;
    /** The network is back or the page is visible again: reconnect now if down. */
    private wake;
}
/**
 * The page's shared manager (the original design's entry point). The first
 * call creates it with `options`; later calls return the same manager and
 * ignore their options. Use `new ConnectionManager(options)` for another one.
 */
export declare function getConnectionManager(options?: Partial<ConnectionOptions>): ConnectionManager;
