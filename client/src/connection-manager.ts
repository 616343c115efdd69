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

// Types and defaults ---------------------------------------------------------

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
export type StateReason =
  | "client"
  | "connection_lost"
  | "heartbeat_timeout"
  | "offline"
  | "auth"
  | "forbidden"
  | "bad_request"
  | "unreachable";

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
  onmessage: ((event: { data: unknown }) => void) | null;
  onclose: ((event: { code: number; reason?: string }) => void) | null;
  onerror: ((event: unknown) => void) | null;
}

export type WebSocketConstructor = new (url: string) => WebSocketLike;

/** The part of a fetch `Response` the client uses. */
export interface ResponseLike {
  readonly status: number;
  readonly ok: boolean;
  readonly headers: { get(name: string): string | null };
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
export const DEFAULTS: Readonly<ConnectionOptions> = Object.freeze({
  websocketUrl: "/ws",
  pollingUrl: "/api/sync/poll",
  sendUrl: null,
  token: null,
  credentials: "same-origin",
  csrfCookieName: "csrftoken",
  csrfToken: null,
  topics: [],
  cursor: null,
  websocket: true,
  pollingInterval: 1000,
  pollWait: 25,
  pollLimit: 100,
  maxReconnectAttempts: 10,
  reconnectDelay: 1000,
  maxReconnectDelay: 30000,
  stableConnectionTime: 10000,
  fallbackAfterFailures: 2,
  fallbackRetryInterval: 30000,
  connectTimeout: 10000,
  requestTimeout: 10000,
  heartbeatTimeout: null,
  pingInterval: 15000,
  dedupCacheSize: 1000,
  WebSocketImpl: null,
  fetchImpl: null,
  clock: null,
  random: null,
  environment: "browser",
} as ConnectionOptions);

// Close codes of the server (SPEC §5) and of this client.
const CLOSE_NORMAL = 1000;
const CLOSE_UNAUTHENTICATED = 4401;
const CLOSE_BAD_REQUEST = 4400;
const CLOSE_FORBIDDEN_TOPIC = 4403;
/** Used by this client when it gives up on a socket (no answer, no pings). */
const CLOSE_CLIENT_TIMEOUT = 4000;
/** Codes the server closes with on purpose: the socket itself worked. */
const SERVER_CLOSE_CODES = new Set([1001, 1009, 1011, 4408, 4409, 4413, 4429]);

const realClock: Clock = {
  now: () => Date.now(),
  setTimeout: (callback, ms) => globalThis.setTimeout(callback, ms),
  clearTimeout: (handle) =>
    globalThis.clearTimeout(handle as ReturnType<typeof setTimeout>),
};

// Errors ---------------------------------------------------------------------

/**
 * An error with the server's stable `code` (SPEC §4 error envelope, or a
 * WebSocket error frame), or one of the client's own: `network_error`,
 * `timeout`, `connection_lost` (the socket closed before the answer),
 * `disconnected` (the manager was stopped), `http_<status>` (an answer
 * without the envelope, e.g. from a proxy), `invalid_response`.
 */
export class SyncError extends Error {
  readonly code: string;
  /** HTTP status, when the error came from an HTTP answer. */
  readonly status: number | null;
  readonly details: Record<string, unknown>;
  /** From `Retry-After` on 429/503, in ms. */
  readonly retryAfterMs: number | null;

  constructor(
    code: string,
    message: string,
    extra: {
      status?: number | null;
      details?: Record<string, unknown>;
      retryAfterMs?: number | null;
    } = {},
  ) {
    super(message);
    this.name = "SyncError";
    this.code = code;
    this.status = extra.status ?? null;
    this.details = extra.details ?? {};
    this.retryAfterMs = extra.retryAfterMs ?? null;
  }
}

function asSyncError(error: unknown): SyncError {
  if (error instanceof SyncError) return error;
  const message = error instanceof Error ? error.message : String(error);
  return new SyncError("network_error", message);
}

// Backoff --------------------------------------------------------------------

/**
 * Exponential backoff with full jitter: the n-th delay is uniform in
 * [0, min(max, base * 2^n)), so clients cut off together (a server restart)
 * do not all come back at the same instant. `reset()` after a connection
 * that stayed up; `attempts` counts the failures since.
 */
export class Backoff {
  attempts = 0;

  constructor(
    private readonly base: number,
    private readonly max: number,
    private readonly random: () => number = Math.random,
  ) {}

  /** The wait before the next attempt, in ms; counts one more attempt. */
  next(): number {
    // 2 ** 30 already exceeds any sensible max: no overflow to Infinity.
    const ceiling = Math.min(this.max, this.base * 2 ** Math.min(this.attempts, 30));
    this.attempts += 1;
    return Math.floor(this.random() * ceiling);
  }

  reset(): void {
    this.attempts = 0;
  }
}

// Recent ids -----------------------------------------------------------------

/**
 * The last `capacity` message ids, to drop duplicates: a replay after a
 * reconnect or a transport switch may repeat what already arrived. Bounded:
 * the oldest id is forgotten first, long after any replay could repeat it.
 */
export class RecentIds {
  private readonly ids = new Set<string>();

  constructor(private readonly capacity: number) {}

  /** True the first time `id` is seen; false for a duplicate. */
  add(id: string): boolean {
    if (this.ids.has(id)) return false;
    this.ids.add(id);
    if (this.ids.size > this.capacity) {
      // A Set iterates in insertion order: the first value is the oldest.
      this.ids.delete(this.ids.values().next().value as string);
    }
    return true;
  }
}

// Listeners ------------------------------------------------------------------

/** A set of callbacks; one that throws never stops the others or the client. */
class Listeners<Args extends unknown[]> {
  private readonly callbacks = new Set<(...args: Args) => void>();

  add(callback: (...args: Args) => void): () => void {
    this.callbacks.add(callback);
    return () => {
      this.callbacks.delete(callback);
    };
  }

  emit(...args: Args): void {
    for (const callback of [...this.callbacks]) {
      try {
        callback(...args);
      } catch (error) {
        // Rethrown outside the client so it shows in the console as usual.
        globalThis.setTimeout(() => {
          throw error;
        }, 0);
      }
    }
  }
}

// HTTP API -------------------------------------------------------------------

interface PollRequest {
  cursor: string | null;
  since: number | null;
  topics: string[];
  limit: number;
  /** Seconds the server may wait for a message. */
  wait: number;
  /** The manager's topic generation when the request was made: the
   * subscriptions up to it are checked by this poll's answer. */
  topicGeneration: number;
  /** `since` was corrected by a measured offset to the server's clock. */
  corrected: boolean;
}

interface PollPage {
  messages: SyncMessage[];
  timestamp: number;
  cursor: string;
  hasMore: boolean;
  gap: boolean;
}

/** The two endpoints, from `pollingUrl` being either one or the API base. */
function apiUrls(pollingUrl: string, sendUrl: string | null) {
  const base = pollingUrl.replace(/\/+$/, "");
  const poll = /\/poll$/.test(base) ? base : `${base}/poll`;
  return { poll, send: sendUrl ?? poll.replace(/\/poll$/, "/send") };
}

function withQuery(url: string, params: Record<string, string | null>): string {
  const query = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) {
    if (value !== null && value !== "") query.set(name, value);
  }
  const text = query.toString();
  if (!text) return url;
  return url + (url.includes("?") ? "&" : "?") + text;
}

/** `Retry-After` in ms: delta-seconds or an HTTP date. */
export function parseRetryAfter(value: string | null, now: number): number | null {
  if (value === null || value.trim() === "") return null;
  const seconds = Number(value);
  if (Number.isFinite(seconds)) return Math.max(0, seconds * 1000);
  const date = Date.parse(value);
  return Number.isNaN(date) ? null : Math.max(0, date - now);
}

function readCookie(name: string): string | null {
  const doc = (globalThis as { document?: { cookie?: string } }).document;
  if (!doc || typeof doc.cookie !== "string") return null;
  for (const part of doc.cookie.split(";")) {
    const [key, ...rest] = part.trim().split("=");
    if (key === name) return decodeURIComponent(rest.join("="));
  }
  return null;
}

/**
 * The server's clock as seen from here: `offset` (server minus client, ms)
 * and its `error` bound. A reading the server took between the client's
 * `sentAt` and `receivedAt` gives the offset to within half that round trip,
 * plus the reading's own resolution: 1 ms for a poll's `timestamp`
 * watermark, but 1 s for a `Date` header (whole seconds; and a cross-origin
 * page cannot read it at all, as the server does not expose it). The most
 * precise reading is kept; its error grows by 1 ms per second of age, so a
 * fresh reading replaces an old one before the two clocks drift apart.
 */
class ServerClock {
  offset: number | null = null;
  private baseError = Infinity;
  private takenAt = 0;

  constructor(private readonly clock: Clock) {}

  get error(): number {
    return this.baseError + Math.max(0, Math.floor((this.clock.now() - this.takenAt) / 1000));
  }

  observe(serverMs: number, resolution: number, sentAt: number, receivedAt: number): void {
    if (!Number.isFinite(serverMs)) return;
    const error = Math.ceil((receivedAt - sentAt) / 2 + resolution);
    if (error > this.error) return;
    this.offset = Math.round(serverMs - (sentAt + receivedAt) / 2);
    this.baseError = error;
    this.takenAt = receivedAt;
  }

  /** The `Date` header: the server's time truncated to the second. */
  observeDate(value: string | null, sentAt: number, receivedAt: number): void {
    const date = value === null ? NaN : Date.parse(value);
    // The true time lies in [date, date + 1000): its middle, ± 500 ms.
    this.observe(date + 500, 500, sentAt, receivedAt);
  }
}

/** One answer of the server: its body and when it was asked and came back. */
interface Exchange {
  body: unknown;
  sentAt: number;
  receivedAt: number;
}

/** GET /api/sync/poll and POST /api/sync/send, with auth and time limits. */
class HttpApi {
  private readonly urls: { poll: string; send: string };

  constructor(
    private readonly options: ConnectionOptions,
    private readonly fetchImpl: FetchLike,
    private readonly clock: Clock,
    private readonly serverClock: ServerClock,
  ) {
    this.urls = apiUrls(options.pollingUrl, options.sendUrl);
  }

  /** One page after the request's position; `signal` aborts it. */
  async poll(request: PollRequest, signal: AbortSignal): Promise<PollPage> {
    const url = withQuery(this.urls.poll, {
      cursor: request.cursor,
      since: request.cursor === null && request.since !== null ? String(request.since) : null,
      topics: request.topics.join(","),
      limit: String(request.limit),
      wait: request.wait > 0 ? String(request.wait) : null,
    });
    const timeout = request.wait * 1000 + this.options.requestTimeout;
    const { body, sentAt, receivedAt } = await this.call(url, { method: "GET" }, timeout, signal);
    if (!isRecord(body) || !Array.isArray(body.messages) || typeof body.cursor !== "string") {
      throw new SyncError("invalid_response", "The poll answer lacks messages or cursor.");
    }
    if (body.hasMore === false && typeof body.timestamp === "number") {
      // A last page's watermark is the server's clock when it read, minus
      // 1 ms (paging.py); a page cut short stands at a message instead.
      this.serverClock.observe(body.timestamp + 1, 1, sentAt, receivedAt);
    }
    return body as unknown as PollPage;
  }

  /** POST /send: resolves with the stored message's id and timestamp. */
  async send(message: OutgoingMessage): Promise<SendResult> {
    const body: Record<string, unknown> = { type: message.type, payload: message.payload ?? {} };
    if (message.correlationId != null) body.correlationId = message.correlationId;
    const init = { method: "POST", body: JSON.stringify(body) };
    const { body: answer } = await this.call(this.urls.send, init, this.options.requestTimeout);
    if (!isRecord(answer) || typeof answer.messageId !== "string") {
      throw new SyncError("invalid_response", "The send answer lacks messageId.");
    }
    return { messageId: answer.messageId, timestamp: Number(answer.timestamp), via: "http" };
  }

  private async call(
    url: string,
    init: { method: string; body?: string },
    timeoutMs: number,
    signal?: AbortSignal,
  ): Promise<Exchange> {
    const controller = new AbortController();
    const abort = () => controller.abort();
    signal?.addEventListener("abort", abort);
    let timedOut = false;
    const timer = this.clock.setTimeout(() => {
      timedOut = true;
      controller.abort();
    }, timeoutMs);
    let response: ResponseLike;
    let text: string;
    const sentAt = this.clock.now();
    try {
      response = await this.fetchImpl(url, {
        ...init,
        headers: this.headers(init.method !== "GET"),
        credentials: this.options.credentials,
        signal: controller.signal,
      });
      text = await response.text();
    } catch (error) {
      if (timedOut) throw new SyncError("timeout", `No answer within ${timeoutMs} ms.`);
      if (signal?.aborted) throw new SyncError("aborted", "The request was aborted.");
      throw asSyncError(error);
    } finally {
      this.clock.clearTimeout(timer);
      signal?.removeEventListener("abort", abort);
    }
    const receivedAt = this.clock.now();
    this.serverClock.observeDate(response.headers.get("Date"), sentAt, receivedAt);
    const body = parseJson(text);
    if (!response.ok) throw this.errorFrom(response, body);
    return { body, sentAt, receivedAt };
  }

  private headers(unsafe: boolean): Record<string, string> {
    const headers: Record<string, string> = { Accept: "application/json" };
    if (unsafe) headers["Content-Type"] = "application/json";
    if (this.options.token) {
      headers.Authorization = `Token ${this.options.token}`;
    } else if (unsafe) {
      // Django refuses a session POST without it (403 csrf_failed).
      const csrf = this.options.csrfToken ?? readCookie(this.options.csrfCookieName);
      if (csrf) headers["X-CSRFToken"] = csrf;
    }
    return headers;
  }

  /** The error envelope's code, or `http_<status>` for a foreign answer. */
  private errorFrom(response: ResponseLike, body: unknown): SyncError {
    const retryAfterMs =
      response.status === 429 || response.status === 503
        ? parseRetryAfter(response.headers.get("Retry-After"), this.clock.now())
        : null;
    const error = isRecord(body) && isRecord(body.error) ? body.error : null;
    const code = error && typeof error.code === "string" ? error.code : `http_${response.status}`;
    const message =
      error && typeof error.message === "string" ? error.message : `HTTP ${response.status}`;
    const details = error && isRecord(error.details) ? error.details : {};
    return new SyncError(code, message, { status: response.status, details, retryAfterMs });
  }
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function isMessage(frame: Record<string, unknown>): frame is Record<string, unknown> & SyncMessage {
  // Protocol frames carry no id and no cursor; every stored message has both.
  return typeof frame.id === "string" && typeof frame.cursor === "string";
}

// WebSocket transport --------------------------------------------------------

/** The payload of the server's first frame, `connection.established`. */
interface Welcome {
  connectionId: string;
  userId: string;
  heartbeatInterval: number;
  cursor: string;
  recovered: boolean | null;
}

interface SocketEvents {
  welcomed(socket: WebSocketTransport, welcome: Welcome): void;
  message(socket: WebSocketTransport, message: SyncMessage): void;
  /** The socket ended; `cause` says when the client cut it itself. */
  closed(socket: WebSocketTransport, code: number, cause: "closed" | "heartbeat_timeout"): void;
  error(error: SyncError): void;
}

interface PendingAnswer {
  resolve(frame: Record<string, unknown>): void;
  reject(error: SyncError): void;
  timer: unknown;
}

interface SocketSettings {
  connectTimeout: number;
  requestTimeout: number;
  heartbeatTimeout: number | null;
  pingInterval: number;
}

/**
 * One WebSocket: the handshake, frames in and out, answers matched by
 * correlationId, the heartbeat watchdog and the latency pings.
 */
class WebSocketTransport {
  /** Client time the server's welcome arrived, `null` before. */
  upSince: number | null = null;
  latencyMs: number | null = null;
  /** Code of an error frame received before the welcome (why it will close). */
  earlyErrorCode: string | null = null;
  /** Topics this socket is subscribed to, as far as the client knows. */
  topics: Set<string>;
  private socket: WebSocketLike | null = null;
  private readonly pending = new Map<string, PendingAnswer[]>();
  private lastFrameAt = 0;
  private framesReceived = 0;
  private silenceLimit: number | null = null;
  private watchdog: unknown = null;
  private pingTimer: unknown = null;
  private connectTimer: unknown = null;
  private frameCount = 0;

  constructor(
    private readonly url: string,
    topics: Iterable<string>,
    private readonly impl: WebSocketConstructor,
    private readonly settings: SocketSettings,
    private readonly clock: Clock,
    private readonly events: SocketEvents,
  ) {
    this.topics = new Set(topics);
  }

  get isUp(): boolean {
    return this.upSince !== null && this.socket !== null;
  }

  open(): void {
    let socket: WebSocketLike;
    try {
      socket = new this.impl(this.url);
    } catch (error) {
      // A malformed URL, or ws: from an https: page (mixed content): a
      // failed attempt like any other, reported once the caller is done.
      this.events.error(new SyncError("websocket_error", asSyncError(error).message));
      this.clock.setTimeout(() => this.events.closed(this, 1006, "closed"), 0);
      return;
    }
    this.socket = socket;
    socket.onmessage = (event) => this.receive(event.data);
    socket.onclose = (event) => this.ended(event.code, "closed");
    // An error event only ever comes with an abnormal end (code 1006), and
    // some implementations (Node's) never send the close event after it.
    socket.onerror = () => this.ended(1006, "closed");
    this.connectTimer = this.clock.setTimeout(
      () => this.giveUp("closed"),
      this.settings.connectTimeout,
    );
  }

  /** Close on the client's initiative; no `closed` event follows. */
  close(code = CLOSE_NORMAL, reason = ""): void {
    const socket = this.detach();
    this.failPending(new SyncError("disconnected", "The connection was closed."));
    if (socket !== null) safeClose(socket, code, reason);
  }

  /** Send a ping now; no frame at all within requestTimeout: the socket is dead. */
  checkAlive(): void {
    if (!this.isUp) return;
    const id = this.nextId("ping");
    const sentAt = this.clock.now();
    this.pending.set(id, [
      {
        resolve: () => {
          this.latencyMs = this.clock.now() - sentAt;
        },
        reject: () => {},
        timer: null,
      },
    ]);
    const framesBefore = this.framesReceived;
    this.sendFrame({ type: "ping", id });
    this.clock.setTimeout(() => {
      this.pending.delete(id);
      if (this.isUp && this.framesReceived === framesBefore) this.giveUp("heartbeat_timeout");
    }, this.settings.requestTimeout);
  }

  /** Send a frame and wait for its answer (matched by correlationId). */
  request(frame: Record<string, unknown>): Promise<Record<string, unknown>> {
    const correlation = String(frame.correlationId ?? frame.id);
    return new Promise((resolve, reject) => {
      const entry: PendingAnswer = { resolve, reject, timer: null };
      entry.timer = this.clock.setTimeout(() => {
        this.forget(correlation, entry);
        reject(new SyncError("timeout", `No answer within ${this.settings.requestTimeout} ms.`));
      }, this.settings.requestTimeout);
      const queue = this.pending.get(correlation) ?? [];
      queue.push(entry);
      this.pending.set(correlation, queue);
      if (!this.sendFrame(frame)) {
        this.forget(correlation, entry);
        this.clock.clearTimeout(entry.timer);
        reject(new SyncError("connection_lost", "The WebSocket is not open."));
      }
    });
  }

  nextId(prefix: string): string {
    this.frameCount += 1;
    return `${prefix}-${this.frameCount}-${Math.random().toString(36).slice(2, 8)}`;
  }

  sendFrame(frame: Record<string, unknown>): boolean {
    if (this.socket === null || this.socket.readyState !== 1) return false;
    this.socket.send(JSON.stringify(frame));
    return true;
  }

  private receive(data: unknown): void {
    if (this.socket === null || typeof data !== "string") return;
    this.lastFrameAt = this.clock.now();
    this.framesReceived += 1;
    const frame = parseJson(data);
    if (!isRecord(frame)) return;
    if (isMessage(frame)) {
      this.events.message(this, frame);
    } else if (frame.type === "connection.established") {
      this.welcome(isRecord(frame.payload) ? frame.payload : {});
    } else if (frame.type === "ping") {
      this.sendFrame({ type: "pong" });
    } else {
      this.answer(frame);
    }
  }

  private welcome(payload: Record<string, unknown>): void {
    this.clock.clearTimeout(this.connectTimer);
    this.upSince = this.clock.now();
    const interval = Number(payload.heartbeatInterval) || 0;
    this.silenceLimit = this.settings.heartbeatTimeout ?? (interval > 0 ? 2 * interval : null);
    this.armWatchdog(this.silenceLimit);
    this.events.welcomed(this, {
      connectionId: String(payload.connectionId ?? ""),
      userId: String(payload.userId ?? ""),
      heartbeatInterval: interval,
      cursor: typeof payload.cursor === "string" ? payload.cursor : "",
      recovered: typeof payload.recovered === "boolean" ? payload.recovered : null,
    });
    // A first ping at once gives getQuality() its latency without waiting.
    if (this.isUp && this.settings.pingInterval > 0) {
      this.checkAlive();
      this.schedulePing();
    }
  }

  /** pong, ack, subscribed, unsubscribed, error: settle what they answer. */
  private answer(frame: Record<string, unknown>): void {
    const correlation = frame.correlationId == null ? null : String(frame.correlationId);
    const entry = correlation === null ? undefined : this.pending.get(correlation)?.[0];
    const error = frame.type === "error" ? errorOfFrame(frame) : null;
    if (entry === undefined) {
      if (error === null) return;
      if (this.upSince === null) this.earlyErrorCode = error.code;
      this.events.error(error);
      return;
    }
    this.forget(correlation as string, entry);
    this.clock.clearTimeout(entry.timer);
    if (error !== null) entry.reject(error);
    else entry.resolve(frame);
  }

  private forget(correlation: string, entry: PendingAnswer): void {
    const queue = this.pending.get(correlation);
    if (!queue) return;
    const rest = queue.filter((other) => other !== entry);
    if (rest.length) this.pending.set(correlation, rest);
    else this.pending.delete(correlation);
  }

  /** Watchdog: checks at the deadline whether a frame came since. */
  private armWatchdog(limit: number | null): void {
    if (limit === null) return;
    const due = this.lastFrameAt + limit - this.clock.now();
    this.watchdog = this.clock.setTimeout(() => {
      if (this.socket === null) return;
      if (this.clock.now() - this.lastFrameAt >= limit) this.giveUp("heartbeat_timeout");
      else this.armWatchdog(limit);
    }, Math.max(0, due));
  }

  private schedulePing(): void {
    if (this.settings.pingInterval <= 0) return;
    this.pingTimer = this.clock.setTimeout(() => {
      this.checkAlive();
      if (this.isUp) this.schedulePing();
    }, this.settings.pingInterval);
  }

  /** The client cuts a socket that does not answer; reported as closed. */
  private giveUp(cause: "closed" | "heartbeat_timeout"): void {
    const socket = this.socket;
    if (socket === null) return;
    safeClose(socket, CLOSE_CLIENT_TIMEOUT, "no answer");
    this.ended(CLOSE_CLIENT_TIMEOUT, cause);
  }

  private ended(code: number, cause: "closed" | "heartbeat_timeout"): void {
    if (this.detach() === null) return;
    this.failPending(new SyncError("connection_lost", `The WebSocket closed (${code}).`));
    this.events.closed(this, code, cause);
  }

  private detach(): WebSocketLike | null {
    const socket = this.socket;
    if (socket === null) return null;
    this.socket = null;
    socket.onmessage = socket.onclose = socket.onopen = null;
    socket.onerror = () => {};
    for (const timer of [this.connectTimer, this.watchdog, this.pingTimer]) {
      this.clock.clearTimeout(timer);
    }
    return socket;
  }

  private failPending(error: SyncError): void {
    const queues = [...this.pending.values()];
    this.pending.clear();
    for (const entry of queues.flat()) {
      this.clock.clearTimeout(entry.timer);
      entry.reject(error);
    }
  }
}

function errorOfFrame(frame: Record<string, unknown>): SyncError {
  const payload = isRecord(frame.payload) ? frame.payload : {};
  const code = typeof payload.code === "string" ? payload.code : "error";
  const message = typeof payload.message === "string" ? payload.message : code;
  return new SyncError(code, message, { details: isRecord(payload.details) ? payload.details : {} });
}

function safeClose(socket: WebSocketLike, code: number, reason: string): void {
  try {
    socket.close(code, reason);
  } catch {
    // Already closing, or a code the implementation refuses: nothing to do.
  }
}

/** `url` as a ws:/wss: URL (relative ones against the page) with its query. */
function websocketAddress(url: string, params: Record<string, string | null>): string {
  const page = (globalThis as { location?: { href: string } }).location;
  const address = new URL(url, page?.href);
  if (address.protocol === "http:") address.protocol = "ws:";
  if (address.protocol === "https:") address.protocol = "wss:";
  return withQuery(address.href, params);
}

// Polling transport ----------------------------------------------------------

interface PollEvents {
  /** The position and topics of the next poll; `first`: the session's first. */
  request(first: boolean): PollRequest;
  /** A page arrived; `latencyMs` for a quick (wait=0) poll, else null. */
  page(
    poller: PollingTransport,
    request: PollRequest,
    page: PollPage,
    latencyMs: number | null,
  ): void;
  /** A poll failed: true to poll on at once (the manager fixed the request),
   * false to stop the loop. */
  failed(poller: PollingTransport, request: PollRequest, error: SyncError): boolean;
}

/**
 * The long-poll loop: one request at a time, the next one starting at least
 * `interval` ms after the previous one started (or at once while the server
 * says `hasMore`). The first poll does not wait, so the connection is known
 * to work at once. `stop()` aborts the request in flight.
 */
class PollingTransport {
  private stopped = false;
  private restarting = false;
  private controller: AbortController | null = null;
  private sleepTimer: unknown = null;
  private wake: (() => void) | null = null;

  constructor(
    private readonly http: HttpApi,
    private readonly clock: Clock,
    private readonly interval: number,
    private readonly events: PollEvents,
  ) {}

  start(): void {
    void this.run();
  }

  stop(): void {
    this.stopped = true;
    this.controller?.abort();
    this.endSleep();
  }

  /** Poll again now with fresh parameters (the topics changed). */
  restart(): void {
    this.restarting = true;
    this.controller?.abort();
    this.endSleep();
  }

  private async run(): Promise<void> {
    let first = true;
    while (!this.stopped) {
      this.restarting = false;
      const request = this.events.request(first);
      const startedAt = this.clock.now();
      const controller = (this.controller = new AbortController());
      let page: PollPage;
      try {
        page = await this.http.poll(request, controller.signal);
      } catch (error) {
        if (this.stopped) return;
        if (this.restarting) continue;
        if (this.events.failed(this, request, asSyncError(error))) continue;
        this.stopped = true;
        return;
      } finally {
        this.controller = null;
      }
      if (this.stopped) return;
      const latency = request.wait === 0 ? this.clock.now() - startedAt : null;
      this.events.page(this, request, page, latency);
      first = false;
      if (!page.hasMore && !this.restarting) {
        await this.sleep(startedAt + this.interval - this.clock.now());
      }
    }
  }

  private sleep(ms: number): Promise<void> {
    if (ms <= 0 || this.stopped) return Promise.resolve();
    return new Promise((resolve) => {
      this.wake = resolve;
      this.sleepTimer = this.clock.setTimeout(() => this.endSleep(), ms);
    });
  }

  private endSleep(): void {
    this.clock.clearTimeout(this.sleepTimer);
    const wake = this.wake;
    this.wake = null;
    wake?.();
  }
}

// Page environment -----------------------------------------------------------

/** `window` and `document` events, or `null` outside a browser (Node). */
function browserEnvironment(): PageEnvironment | null {
  const scope = globalThis as {
    window?: EventTarget;
    document?: EventTarget & { visibilityState?: string };
    navigator?: { onLine?: boolean };
  };
  const { window: win, document: doc } = scope;
  if (!win || typeof win.addEventListener !== "function") return null;
  return {
    isOnline: () => scope.navigator?.onLine !== false,
    listen(event, listener) {
      if (event !== "visible") {
        win.addEventListener(event, listener);
        return () => win.removeEventListener(event, listener);
      }
      if (!doc) return () => {};
      const onChange = () => {
        if (doc.visibilityState === "visible") listener();
      };
      doc.addEventListener("visibilitychange", onChange);
      return () => doc.removeEventListener("visibilitychange", onChange);
    },
  };
}

// The manager ----------------------------------------------------------------

/** Failures that retrying cannot fix: the state becomes `failed`. */
function permanentReason(code: number, errorCode: string | null): StateReason | null {
  if (code === CLOSE_UNAUTHENTICATED) return "auth";
  if (code === CLOSE_FORBIDDEN_TOPIC) return "forbidden";
  if (code === CLOSE_BAD_REQUEST && errorCode !== "invalid_cursor") return "bad_request";
  return null;
}

/** Poll errors that refuse the topics asked for. */
const TOPIC_REFUSALS = new Set(["forbidden_topic", "invalid_topics"]);

function httpPermanentReason(error: SyncError): StateReason | null {
  if (error.status === 401) return "auth";
  if (error.code === "forbidden_topic") return "forbidden";
  if (error.code === "invalid_topics" || error.code === "invalid_limit") return "bad_request";
  return null;
}

/** A subscribe() waiting for the server's verdict on its topics. */
interface TopicCheck {
  generation: number;
  added: string[];
  resolve(topics: string[]): void;
  reject(error: SyncError): void;
}

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
export class ConnectionManager {
  private readonly options: ConnectionOptions;
  private readonly clock: Clock;
  private readonly backoff: Backoff;
  private readonly seen: RecentIds;
  private readonly topics: Set<string>;
  private readonly webSocketImpl: WebSocketConstructor | null;
  private readonly fetchImpl: FetchLike | null;
  private readonly environment: PageEnvironment | null;
  private http: HttpApi | null = null;
  private readonly messageListeners = new Listeners<[SyncMessage]>();
  private readonly stateListeners = new Listeners<[ConnectionState, StateChange]>();
  private readonly resyncListeners = new Listeners<[ResyncEvent]>();
  private readonly errorListeners = new Listeners<[SyncError]>();
  private state: ConnectionState = "disconnected";
  private transport: TransportKind | null = null;
  private reason: StateReason | null = null;
  /** Between connect() and disconnect(), even while failed. */
  private running = false;
  private socket: WebSocketTransport | null = null;
  /** A WebSocket tried in the background while polling. */
  private probe: WebSocketTransport | null = null;
  private poller: PollingTransport | null = null;
  private pollingUp = false;
  private retryTimer: unknown = null;
  private probeTimer: unknown = null;
  private stableTimer: unknown = null;
  private websocketFailures = 0;
  private cursor: string | null;
  /** Client time of connect() without a cursor: polling starts from this
   * moment, translated to the server's clock; 0: from the oldest message. */
  private since: number | null = null;
  /** The first since-based page was checked against the server's clock. */
  private sinceChecked = false;
  private readonly serverClock: ServerClock;
  /** Bumped by every subscribe() that adds topics. */
  private topicGeneration = 0;
  /** Subscriptions up to this generation were accepted by a poll. */
  private verifiedGeneration = 0;
  /** subscribe() calls made while polling, settled by the next poll answer. */
  private topicChecks: TopicCheck[] = [];
  private pollLatencyMs: number | null = null;
  private lastMessageAt: number | null = null;
  private messagesReceived = 0;
  private waiters: Array<{ resolve(): void; reject(error: SyncError): void }> = [];
  private unlisten: Array<() => void> = [];

  constructor(options: Partial<ConnectionOptions> = {}) {
    this.options = { ...DEFAULTS, ...definedOnly(options) };
    this.clock = this.options.clock ?? realClock;
    this.serverClock = new ServerClock(this.clock);
    this.backoff = new Backoff(
      this.options.reconnectDelay,
      this.options.maxReconnectDelay,
      this.options.random ?? Math.random,
    );
    this.seen = new RecentIds(this.options.dedupCacheSize);
    this.topics = new Set(this.options.topics);
    this.cursor = this.options.cursor;
    this.webSocketImpl =
      this.options.WebSocketImpl ??
      ((globalThis as { WebSocket?: WebSocketConstructor }).WebSocket || null);
    const fetchImpl = this.options.fetchImpl ?? (globalThis as { fetch?: FetchLike }).fetch;
    // Called as a plain function: `window.fetch` called as a method of
    // another object throws "Illegal invocation".
    this.fetchImpl = fetchImpl ? (url, init) => fetchImpl(url, init) : null;
    const environment = this.options.environment;
    this.environment = environment === "browser" ? browserEnvironment() : environment;
  }

  // Public API -----------------------------------------------------------------

  /**
   * Start connecting (WebSocket first). Resolves once connected by either
   * transport; rejects with a SyncError if the manager fails or is
   * disconnected first (catch it: the state events report the same). Calling
   * it again while running waits for the same connection.
   */
  connect(): Promise<void> {
    if (this.running && this.state === "connected") return Promise.resolve();
    const connected = new Promise<void>((resolve, reject) => {
      this.waiters.push({ resolve, reject });
    });
    if (!this.running || this.state === "failed") {
      // Without a cursor, polling (if it comes to that) starts from now, the
      // moment the page asked, not from when WebSocket had failed.
      if (this.cursor === null && this.since === null) this.startFromNow();
      this.running = true;
      this.listenToPage();
      this.restart();
    }
    return connected;
  }

  /** Close every connection and stop retrying; `connect()` starts again. */
  disconnect(): void {
    this.running = false;
    this.stopTransports();
    for (const stop of this.unlisten.splice(0)) stop();
    this.setState("disconnected", null, "client");
    const error = new SyncError("disconnected", "disconnect() was called.");
    this.settleWaiters(error);
    this.settleTopicChecks(Infinity, error);
  }

  /** Call `listener` with every new message (never twice). Returns an unsubscriber. */
  onMessage(listener: (message: SyncMessage) => void): () => void {
    return this.messageListeners.add(listener);
  }

  /** Call `listener` on every change of state or transport. Returns an unsubscriber. */
  onStateChange(listener: (state: ConnectionState, change: StateChange) => void): () => void {
    return this.stateListeners.add(listener);
  }

  /** Call `listener` when messages were lost: reload the page's state then. */
  onResync(listener: (event: ResyncEvent) => void): () => void {
    return this.resyncListeners.add(listener);
  }

  /** Call `listener` with errors no promise reports (error frames, poll failures). */
  onError(listener: (error: SyncError) => void): () => void {
    return this.errorListeners.add(listener);
  }

  /**
   * Send a message as the current user: over the WebSocket when it is up,
   * else by POST /send. Resolves with the message's id and timestamp; rejects
   * with a SyncError whose `code` is the server's (`reserved_type`,
   * `payload_too_large`, `throttled`, …) or the client's (`timeout`,
   * `connection_lost`: the socket closed first, so it may or may not have
   * been stored).
   */
  async send(message: OutgoingMessage): Promise<SendResult> {
    const socket = this.socket;
    if (socket !== null && socket.isUp) {
      const frame: Record<string, unknown> = {
        type: message.type,
        payload: message.payload ?? {},
        id: message.id ?? socket.nextId("send"),
      };
      if (message.correlationId != null) frame.correlationId = message.correlationId;
      const ack = await socket.request(frame);
      const payload = isRecord(ack.payload) ? ack.payload : {};
      return {
        messageId: String(payload.messageId),
        timestamp: Number(payload.timestamp),
        via: "websocket",
      };
    }
    try {
      return await this.httpApi().send(message);
    } catch (error) {
      const failure = asSyncError(error);
      if (failure.status === 401 && this.running) this.fail("auth", failure);
      throw failure;
    }
  }

  /**
   * Add topics (broadcasts with these topics arrive). Resolves with all
   * topics now, once the server has accepted the new ones: the WebSocket's
   * answer, or while polling the answer of a poll that carried them. A
   * refusal (`forbidden_topic`, `invalid_topics`) rejects with that
   * SyncError and drops the new topics; the connection goes on. Between
   * connections it resolves at once, and the next connection checks them.
   */
  subscribe(topics: string[]): Promise<string[]> {
    const added = topics.filter((topic) => !this.topics.has(topic));
    for (const topic of added) this.topics.add(topic);
    if (added.length) this.topicGeneration += 1;
    return this.changeTopics("subscribe", added);
  }

  /** Remove topics. Resolves with all topics now. */
  unsubscribe(topics: string[]): Promise<string[]> {
    const removed = topics.filter((topic) => this.topics.has(topic));
    for (const topic of removed) this.topics.delete(topic);
    return this.changeTopics("unsubscribe", removed);
  }

  /** Transport, state, latency, retries and message figures, for a status bar. */
  getQuality(): ConnectionQuality {
    const latencyMs =
      this.transport === "websocket" ? (this.socket?.latencyMs ?? null) : this.pollLatencyMs;
    return {
      transport: this.state === "connected" ? this.transport : null,
      state: this.state,
      latencyMs: this.state === "connected" ? latencyMs : null,
      reconnectAttempts: this.backoff.attempts,
      lastMessageAt: this.lastMessageAt,
      messagesReceived: this.messagesReceived,
    };
  }

  /** The current state. */
  getState(): ConnectionState {
    return this.state;
  }

  /** The position after the last message received: pass it as `cursor` later. */
  getCursor(): string | null {
    return this.cursor;
  }

  // Attempts and retries -------------------------------------------------------

  private restart(): void {
    this.stopTransports();
    this.backoff.reset();
    this.websocketFailures = 0;
    this.attempt();
  }

  /** One attempt: WebSocket unless it failed too often in a row; else polling. */
  private attempt(): void {
    this.retryTimer = null;
    const useWebSocket =
      this.options.websocket &&
      this.webSocketImpl !== null &&
      this.websocketFailures < this.options.fallbackAfterFailures;
    if (useWebSocket) this.openSocket();
    else this.startPolling();
  }

  /** After a failure: wait (backoff, at least Retry-After), then attempt again. */
  private retry(reason: StateReason, retryAfterMs: number | null = null): void {
    this.stopTransports();
    if (this.backoff.attempts >= this.options.maxReconnectAttempts) {
      const error = new SyncError("unreachable", "Gave up after repeated failures.");
      this.fail("unreachable", error);
      return;
    }
    if (this.environment !== null && !this.environment.isOnline()) {
      // Attempts would fail and use up maxReconnectAttempts: wait for "online".
      this.setState("disconnected", null, "offline");
      return;
    }
    const delay = Math.max(this.backoff.next(), retryAfterMs ?? 0);
    this.setState("disconnected", null, reason, delay);
    this.retryTimer = this.clock.setTimeout(() => this.attempt(), delay);
  }

  private fail(reason: StateReason, error: SyncError): void {
    this.stopTransports();
    this.setState("failed", null, reason);
    this.settleWaiters(error);
    this.settleTopicChecks(Infinity, error);
    this.errorListeners.emit(error);
  }

  private stopTransports(): void {
    this.socket?.close();
    this.probe?.close();
    this.poller?.stop();
    this.socket = this.probe = this.poller = null;
    this.pollingUp = false;
    for (const timer of [this.retryTimer, this.probeTimer, this.stableTimer]) {
      this.clock.clearTimeout(timer);
    }
    this.retryTimer = this.probeTimer = this.stableTimer = null;
  }

  // WebSocket ------------------------------------------------------------------

  private openSocket(): void {
    this.setState("connecting", "websocket", null);
    this.socket = this.createSocket();
    this.socket.open();
  }

  private createSocket(): WebSocketTransport {
    const topics = [...this.topics];
    const url = websocketAddress(this.options.websocketUrl, {
      cursor: this.cursor,
      topics: topics.join(","),
      // Browsers cannot set headers on the handshake: the token goes in the
      // query string (the server never logs it).
      token: this.options.token,
    });
    const settings = {
      connectTimeout: this.options.connectTimeout,
      requestTimeout: this.options.requestTimeout,
      heartbeatTimeout: this.options.heartbeatTimeout,
      pingInterval: this.options.pingInterval,
    };
    return new WebSocketTransport(url, topics, this.webSocketImpl!, settings, this.clock, {
      welcomed: (socket, welcome) => this.socketWelcomed(socket, welcome),
      message: (socket, message) => {
        if (socket === this.socket) this.receive(message);
      },
      closed: (socket, code, cause) => this.socketClosed(socket, code, cause),
      error: (error) => this.errorListeners.emit(error),
    });
  }

  private socketWelcomed(socket: WebSocketTransport, welcome: Welcome): void {
    if (socket === this.probe) {
      // WebSocket works again: switch over; never poll while it is up.
      this.probe = null;
      this.poller?.stop();
      this.poller = null;
      this.pollingUp = false;
      this.socket = socket;
    }
    if (socket !== this.socket) return;
    this.adoptWelcome(welcome);
    this.stableTimer = this.clock.setTimeout(() => {
      this.backoff.reset();
      this.websocketFailures = 0;
    }, this.options.stableConnectionTime);
    // subscribe() calls waiting for a poll: the socket checks them now.
    const checks = this.topicChecks.splice(0);
    this.verifiedGeneration = this.topicGeneration;
    void this.reconcileTopics(socket).then(
      (topics) => checks.forEach((check) => check.resolve(topics)),
      (error: SyncError) => checks.forEach((check) => check.reject(error)),
    );
    this.setState("connected", "websocket", null);
    this.settleWaiters(null);
  }

  /** The cursor after the welcome, and the resync event if history was lost. */
  private adoptWelcome(welcome: Welcome): void {
    if (welcome.recovered === false) {
      // The replay that follows starts from what the server still holds.
      this.cursor = welcome.cursor || null;
      this.resyncListeners.emit({ reason: "recovered_false", transport: "websocket" });
    } else if (this.cursor === null) {
      this.cursor = welcome.cursor || null;
    }
    // recovered: true keeps the cursor sent: the replay moves it forward.
  }

  private socketClosed(socket: WebSocketTransport, code: number, cause: string): void {
    if (socket === this.probe) {
      this.probe = null;
      this.scheduleProbe();
      return;
    }
    if (socket !== this.socket) return;
    this.socket = null;
    const permanent = permanentReason(code, socket.earlyErrorCode);
    if (permanent !== null) {
      const error = new SyncError(socket.earlyErrorCode ?? permanent, `Closed with ${code}.`);
      this.fail(permanent, error);
      return;
    }
    if (socket.earlyErrorCode === "invalid_cursor") this.dropCursor("websocket");
    const upFor = socket.upSince === null ? null : this.clock.now() - socket.upSince;
    const brief = upFor === null || upFor < this.options.stableConnectionTime;
    // Cut before the welcome, or soon after by something other than the
    // server (a proxy that kills WebSocket): a point towards polling.
    if (brief && (upFor === null || !SERVER_CLOSE_CODES.has(code))) {
      this.websocketFailures += 1;
    }
    this.retry(cause === "heartbeat_timeout" ? "heartbeat_timeout" : "connection_lost");
  }

  /** Send the subscription changes made while the socket was connecting;
   * resolves with the topics after the subscribe, or rejects with its error. */
  private reconcileTopics(socket: WebSocketTransport): Promise<string[]> {
    const added = [...this.topics].filter((topic) => !socket.topics.has(topic));
    const removed = [...socket.topics].filter((topic) => !this.topics.has(topic));
    const subscribed = added.length
      ? this.changeTopics("subscribe", added)
      : Promise.resolve([...this.topics].sort());
    if (removed.length) void this.changeTopics("unsubscribe", removed).catch(() => {});
    return subscribed;
  }

  private async changeTopics(kind: "subscribe" | "unsubscribe", topics: string[]) {
    const socket = this.socket;
    const generation = this.topicGeneration;
    if (topics.length && socket !== null && socket.isUp) {
      try {
        const id = socket.nextId(kind);
        const answer = await socket.request({ type: kind, id, payload: { topics } });
        const payload = isRecord(answer.payload) ? answer.payload : {};
        const now = Array.isArray(payload.topics) ? payload.topics.map(String) : [];
        socket.topics = new Set(now);
        if (kind === "subscribe" && generation > this.verifiedGeneration) {
          this.verifiedGeneration = generation;
        }
      } catch (error) {
        const failure = asSyncError(error);
        if (kind === "subscribe" && failure.code !== "connection_lost") {
          for (const topic of topics) this.topics.delete(topic);
        }
        throw failure;
      }
    } else if (topics.length && kind === "subscribe") {
      // No socket up: the next poll carries the new topics and its answer
      // says whether the server accepts them (pollPage, pollFailed); a
      // socket's welcome checks them too (socketWelcomed).
      const poller = this.poller;
      if (poller !== null) {
        const checked = new Promise<string[]>((resolve, reject) => {
          this.topicChecks.push({ generation, added: topics, resolve, reject });
        });
        poller.restart();
        return checked;
      }
      // Between connections: nobody waits, but a refusal still drops them
      // (and onError reports it).
      this.topicChecks.push({
        generation,
        added: topics,
        resolve: () => {},
        reject: (error) => this.errorListeners.emit(error),
      });
    } else if (topics.length) {
      this.poller?.restart();
    }
    return [...this.topics].sort();
  }

  /** Settle the subscribe() calls up to `generation`: `error` or the topics now. */
  private settleTopicChecks(generation: number, error: SyncError | null): void {
    const due = this.topicChecks.filter((check) => check.generation <= generation);
    this.topicChecks = this.topicChecks.filter((check) => check.generation > generation);
    for (const check of due) {
      if (error === null) check.resolve([...this.topics].sort());
      else check.reject(error);
    }
  }

  // Polling --------------------------------------------------------------------

  private startPolling(): void {
    if (this.fetchImpl === null) {
      this.fail("unreachable", new SyncError("unreachable", "No fetch to poll with."));
      return;
    }
    this.setState("connecting", "polling", null);
    const poller = new PollingTransport(this.httpApi(), this.clock, this.options.pollingInterval, {
      request: (first) => this.pollRequest(first),
      page: (source, request, page, latency) => this.pollPage(source, request, page, latency),
      failed: (source, request, error) => this.pollFailed(source, request, error),
    });
    this.poller = poller;
    this.pollingUp = false;
    poller.start();
    this.scheduleProbe();
  }

  private pollRequest(first: boolean): PollRequest {
    if (this.cursor === null && this.since === null) this.startFromNow();
    const offset = this.serverClock.offset;
    const corrected = this.cursor === null && offset !== null && this.since !== 0;
    return {
      cursor: this.cursor,
      // No position: from the moment of connect() by the server's clock,
      // as far as it is known yet (pollPage checks it on the answer).
      since: corrected ? (this.since as number) + (offset as number) : this.since,
      topics: [...this.topics],
      limit: this.options.pollLimit,
      // Without a cursor the answer must come at once: it is checked first.
      wait: first || this.cursor === null ? 0 : this.options.pollWait,
      topicGeneration: this.topicGeneration,
      corrected,
    };
  }

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
  private sinceIsRight(request: PollRequest): boolean {
    if (request.cursor !== null || request.since === 0 || this.sinceChecked) return true;
    this.sinceChecked = true;
    const offset = this.serverClock.offset;
    if (offset === null || request.since === null || this.since === null) return true;
    return Math.abs(this.since + offset - request.since) <= this.serverClock.error;
  }

  private pollPage(
    poller: PollingTransport,
    request: PollRequest,
    page: PollPage,
    latencyMs: number | null,
  ): void {
    if (poller !== this.poller) return;
    if (!this.sinceIsRight(request)) {
      poller.restart();
      return;
    }
    if (latencyMs !== null) this.pollLatencyMs = latencyMs;
    this.backoff.reset();
    if (request.topicGeneration > this.verifiedGeneration) {
      this.verifiedGeneration = request.topicGeneration;
    }
    if (!this.pollingUp) {
      this.pollingUp = true;
      this.setState("connected", "polling", null);
      this.settleWaiters(null);
    }
    // A gap matters behind a cursor only: from the client's own "now" (a
    // fresh start, `since`) there is no state to lose.
    if (page.gap && request.cursor !== null) {
      this.resyncListeners.emit({ reason: "gap", transport: "polling" });
    }
    for (const message of page.messages) {
      if (poller !== this.poller) return; // a listener switched or stopped
      this.receive(message);
    }
    if (poller === this.poller) this.cursor = page.cursor;
    this.settleTopicChecks(request.topicGeneration, null);
  }

  /** A poll failed: true when the next poll can go at once, fixed. */
  private pollFailed(poller: PollingTransport, request: PollRequest, error: SyncError): boolean {
    if (poller !== this.poller) return false;
    if (
      TOPIC_REFUSALS.has(error.code) &&
      request.topicGeneration > this.verifiedGeneration &&
      this.refuseTopics(request.topicGeneration, error)
    ) {
      return true;
    }
    if (error.code === "invalid_since" && request.cursor === null && !request.corrected) {
      // The client's clock is over a minute ahead of the server's. The
      // answer's Date header told the server's time (to the second): ask
      // again from connect() by that clock; without it (a cross-origin page
      // cannot read Date), from the oldest message the server holds.
      if (this.serverClock.offset === null) this.since = 0;
      return true;
    }
    this.poller = null;
    const permanent = httpPermanentReason(error);
    if (permanent !== null) {
      this.fail(permanent, error);
      return false;
    }
    if (error.code === "invalid_cursor") this.dropCursor("polling");
    if (error.code === "invalid_since") this.since = 0;
    // Polling never worked either: the server is out of reach, not only its
    // WebSocket, so the next attempt tries WebSocket first again.
    if (!this.pollingUp) this.websocketFailures = 0;
    this.errorListeners.emit(error);
    this.retry("connection_lost", error.retryAfterMs);
    return false;
  }

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
  private refuseTopics(generation: number, error: SyncError): boolean {
    const named = typeof error.details.topic === "string" ? error.details.topic : null;
    const unchecked = this.topicChecks.filter((check) => check.generation <= generation);
    const blamed = unchecked.filter((check) => named === null || check.added.includes(named));
    if (blamed.length === 0) return false;
    this.topicChecks = this.topicChecks.filter((check) => !blamed.includes(check));
    if (blamed.length === unchecked.length) this.verifiedGeneration = generation;
    for (const check of blamed) {
      for (const topic of check.added) this.topics.delete(topic);
      check.reject(error);
    }
    return true;
  }

  /** While polling, try WebSocket again every fallbackRetryInterval. */
  private scheduleProbe(): void {
    if (!this.options.websocket || this.webSocketImpl === null || this.poller === null) return;
    this.clock.clearTimeout(this.probeTimer);
    this.probeTimer = this.clock.setTimeout(() => {
      this.probeTimer = null;
      if (this.poller === null || this.probe !== null) return;
      this.probe = this.createSocket();
      this.probe.open();
    }, this.options.fallbackRetryInterval);
  }

  // Messages and state ---------------------------------------------------------

  /** Every message from either transport: move the cursor, drop duplicates. */
  private receive(message: SyncMessage): void {
    if (typeof message.cursor === "string") this.cursor = message.cursor;
    if (typeof message.id !== "string" || !this.seen.add(message.id)) return;
    this.messagesReceived += 1;
    this.lastMessageAt = this.clock.now();
    this.messageListeners.emit(message);
  }

  /** No position: polling will start from this moment (see sinceIsRight). */
  private startFromNow(): void {
    this.since = this.clock.now();
    this.sinceChecked = false;
  }

  private dropCursor(transport: TransportKind): void {
    this.cursor = null;
    this.since = null;
    this.resyncListeners.emit({ reason: "invalid_cursor", transport });
  }

  private setState(
    state: ConnectionState,
    transport: TransportKind | null,
    reason: StateReason | null,
    retryInMs: number | null = null,
  ): void {
    const previous = this.state;
    const same = previous === state && this.transport === transport && this.reason === reason;
    this.state = state;
    this.transport = transport;
    this.reason = reason;
    if (same && retryInMs === null) return;
    this.stateListeners.emit(state, { state, previous, transport, reason, retryInMs });
  }

  private settleWaiters(error: SyncError | null): void {
    for (const waiter of this.waiters.splice(0)) {
      if (error === null) waiter.resolve();
      else waiter.reject(error);
    }
  }

  private httpApi(): HttpApi {
    if (this.http === null) {
      if (this.fetchImpl === null) {
        throw new SyncError("network_error", "No fetch: pass the fetchImpl option.");
      }
      this.http = new HttpApi(this.options, this.fetchImpl, this.clock, this.serverClock);
    }
    return this.http;
  }

  // Page events ----------------------------------------------------------------

  private listenToPage(): void {
    const environment = this.environment;
    if (environment === null || this.unlisten.length) return;
    this.unlisten = [
      environment.listen("online", () => this.wake()),
      environment.listen("visible", () => this.wake()),
      environment.listen("offline", () => this.socket?.checkAlive()),
    ];
  }

  /** The network is back or the page is visible again: reconnect now if down. */
  private wake(): void {
    if (!this.running || this.state === "connecting") return;
    if (this.state === "connected") {
      this.socket?.checkAlive(); // a socket that died meanwhile is replaced
      return;
    }
    if (this.state === "failed" && this.reason !== "unreachable") return;
    this.restart();
  }
}

/** `options` without its `undefined` values, so defaults fill them in. */
function definedOnly(options: Partial<ConnectionOptions>): Partial<ConnectionOptions> {
  const result: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(options)) {
    if (value !== undefined) result[key] = value;
  }
  return result as Partial<ConnectionOptions>;
}

let shared: ConnectionManager | null = null;

/**
 * The page's shared manager (the original design's entry point). The first
 * call creates it with `options`; later calls return the same manager and
 * ignore their options. Use `new ConnectionManager(options)` for another one.
 */
export function getConnectionManager(options: Partial<ConnectionOptions> = {}): ConnectionManager {
  if (shared === null) shared = new ConnectionManager(options);
  return shared;
}
