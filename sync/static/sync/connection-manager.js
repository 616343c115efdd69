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
/** The defaults of every option (documented in `ConnectionOptions`). */
export const DEFAULTS = Object.freeze({
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
});
// Close codes of the server (SPEC §5) and of this client.
const CLOSE_NORMAL = 1000;
const CLOSE_UNAUTHENTICATED = 4401;
const CLOSE_BAD_REQUEST = 4400;
const CLOSE_FORBIDDEN_TOPIC = 4403;
/** Used by this client when it gives up on a socket (no answer, no pings). */
const CLOSE_CLIENT_TIMEOUT = 4000;
/** Codes the server closes with on purpose: the socket itself worked. */
const SERVER_CLOSE_CODES = new Set([1001, 1009, 1011, 4408, 4409, 4413, 4429]);
const realClock = {
    now: () => Date.now(),
    setTimeout: (callback, ms) => globalThis.setTimeout(callback, ms),
    clearTimeout: (handle) => globalThis.clearTimeout(handle),
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
    constructor(code, message, extra = {}) {
        super(message);
        this.name = "SyncError";
        this.code = code;
        this.status = extra.status ?? null;
        this.details = extra.details ?? {};
        this.retryAfterMs = extra.retryAfterMs ?? null;
    }
}
function asSyncError(error) {
    if (error instanceof SyncError)
        return error;
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
    constructor(base, max, random = Math.random) {
        this.base = base;
        this.max = max;
        this.random = random;
        this.attempts = 0;
    }
    /** The wait before the next attempt, in ms; counts one more attempt. */
    next() {
        // 2 ** 30 already exceeds any sensible max: no overflow to Infinity.
        const ceiling = Math.min(this.max, this.base * 2 ** Math.min(this.attempts, 30));
        this.attempts += 1;
        return Math.floor(this.random() * ceiling);
    }
    reset() {
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
    constructor(capacity) {
        this.capacity = capacity;
        this.ids = new Set();
    }
    /** True the first time `id` is seen; false for a duplicate. */
    add(id) {
        if (this.ids.has(id))
            return false;
        this.ids.add(id);
        if (this.ids.size > this.capacity) {
            // A Set iterates in insertion order: the first value is the oldest.
            this.ids.delete(this.ids.values().next().value);
        }
        return true;
    }
}
// Listeners ------------------------------------------------------------------
/** A set of callbacks; one that throws never stops the others or the client. */
class Listeners {
    constructor() {
        this.callbacks = new Set();
    }
    add(callback) {
        this.callbacks.add(callback);
        return () => {
            this.callbacks.delete(callback);
        };
    }
    emit(...args) {
        for (const callback of [...this.callbacks]) {
            try {
                callback(...args);
            }
            catch (error) {
                // Rethrown outside the client so it shows in the console as usual.
                globalThis.setTimeout(() => {
                    throw error;
                }, 0);
            }
        }
    }
}
/** The two endpoints, from `pollingUrl` being either one or the API base. */
function apiUrls(pollingUrl, sendUrl) {
    const base = pollingUrl.replace(/\/+$/, "");
    const poll = /\/poll$/.test(base) ? base : `${base}/poll`;
    return { poll, send: sendUrl ?? poll.replace(/\/poll$/, "/send") };
}
function withQuery(url, params) {
    const query = new URLSearchParams();
    for (const [name, value] of Object.entries(params)) {
        if (value !== null && value !== "")
            query.set(name, value);
    }
    const text = query.toString();
    if (!text)
        return url;
    return url + (url.includes("?") ? "&" : "?") + text;
}
/** `Retry-After` in ms: delta-seconds or an HTTP date. */
export function parseRetryAfter(value, now) {
    if (value === null || value.trim() === "")
        return null;
    const seconds = Number(value);
    if (Number.isFinite(seconds))
        return Math.max(0, seconds * 1000);
    const date = Date.parse(value);
    return Number.isNaN(date) ? null : Math.max(0, date - now);
}
function readCookie(name) {
    const doc = globalThis.document;
    if (!doc || typeof doc.cookie !== "string")
        return null;
    for (const part of doc.cookie.split(";")) {
        const [key, ...rest] = part.trim().split("=");
        if (key === name)
            return decodeURIComponent(rest.join("="));
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
    constructor(clock) {
        this.clock = clock;
        this.offset = null;
        this.baseError = Infinity;
        this.takenAt = 0;
    }
    get error() {
        return this.baseError + Math.max(0, Math.floor((this.clock.now() - this.takenAt) / 1000));
    }
    observe(serverMs, resolution, sentAt, receivedAt) {
        if (!Number.isFinite(serverMs))
            return;
        const error = Math.ceil((receivedAt - sentAt) / 2 + resolution);
        if (error > this.error)
            return;
        this.offset = Math.round(serverMs - (sentAt + receivedAt) / 2);
        this.baseError = error;
        this.takenAt = receivedAt;
    }
    /** The `Date` header: the server's time truncated to the second. */
    observeDate(value, sentAt, receivedAt) {
        const date = value === null ? NaN : Date.parse(value);
        // The true time lies in [date, date + 1000): its middle, ± 500 ms.
        this.observe(date + 500, 500, sentAt, receivedAt);
    }
}
/** GET /api/sync/poll and POST /api/sync/send, with auth and time limits. */
class HttpApi {
    constructor(options, fetchImpl, clock, serverClock) {
        this.options = options;
        this.fetchImpl = fetchImpl;
        this.clock = clock;
        this.serverClock = serverClock;
        this.urls = apiUrls(options.pollingUrl, options.sendUrl);
    }
    /** One page after the request's position; `signal` aborts it. */
    async poll(request, signal) {
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
        return body;
    }
    /** POST /send: resolves with the stored message's id and timestamp. */
    async send(message) {
        const body = { type: message.type, payload: message.payload ?? {} };
        if (message.correlationId != null)
            body.correlationId = message.correlationId;
        const init = { method: "POST", body: JSON.stringify(body) };
        const { body: answer } = await this.call(this.urls.send, init, this.options.requestTimeout);
        if (!isRecord(answer) || typeof answer.messageId !== "string") {
            throw new SyncError("invalid_response", "The send answer lacks messageId.");
        }
        return { messageId: answer.messageId, timestamp: Number(answer.timestamp), via: "http" };
    }
    async call(url, init, timeoutMs, signal) {
        const controller = new AbortController();
        const abort = () => controller.abort();
        signal?.addEventListener("abort", abort);
        let timedOut = false;
        const timer = this.clock.setTimeout(() => {
            timedOut = true;
            controller.abort();
        }, timeoutMs);
        let response;
        let text;
        const sentAt = this.clock.now();
        try {
            response = await this.fetchImpl(url, {
                ...init,
                headers: this.headers(init.method !== "GET"),
                credentials: this.options.credentials,
                signal: controller.signal,
            });
            text = await response.text();
        }
        catch (error) {
            if (timedOut)
                throw new SyncError("timeout", `No answer within ${timeoutMs} ms.`);
            if (signal?.aborted)
                throw new SyncError("aborted", "The request was aborted.");
            throw asSyncError(error);
        }
        finally {
            this.clock.clearTimeout(timer);
            signal?.removeEventListener("abort", abort);
        }
        const receivedAt = this.clock.now();
        this.serverClock.observeDate(response.headers.get("Date"), sentAt, receivedAt);
        const body = parseJson(text);
        if (!response.ok)
            throw this.errorFrom(response, body);
        return { body, sentAt, receivedAt };
    }
    headers(unsafe) {
        const headers = { Accept: "application/json" };
        if (unsafe)
            headers["Content-Type"] = "application/json";
        if (this.options.token) {
            headers.Authorization = `Token ${this.options.token}`;
        }
        else if (unsafe) {
            // Django refuses a session POST without it (403 csrf_failed).
            const csrf = this.options.csrfToken ?? readCookie(this.options.csrfCookieName);
            if (csrf)
                headers["X-CSRFToken"] = csrf;
        }
        return headers;
    }
    /** The error envelope's code, or `http_<status>` for a foreign answer. */
    errorFrom(response, body) {
        const retryAfterMs = response.status === 429 || response.status === 503
            ? parseRetryAfter(response.headers.get("Retry-After"), this.clock.now())
            : null;
        const error = isRecord(body) && isRecord(body.error) ? body.error : null;
        const code = error && typeof error.code === "string" ? error.code : `http_${response.status}`;
        const message = error && typeof error.message === "string" ? error.message : `HTTP ${response.status}`;
        const details = error && isRecord(error.details) ? error.details : {};
        return new SyncError(code, message, { status: response.status, details, retryAfterMs });
    }
}
function parseJson(text) {
    try {
        return JSON.parse(text);
    }
    catch {
        return null;
    }
}
function isRecord(value) {
    return typeof value === "object" && value !== null && !Array.isArray(value);
}
function isMessage(frame) {
    // Protocol frames carry no id and no cursor; every stored message has both.
    return typeof frame.id === "string" && typeof frame.cursor === "string";
}
/**
 * One WebSocket: the handshake, frames in and out, answers matched by
 * correlationId, the heartbeat watchdog and the latency pings.
 */
class WebSocketTransport {
    constructor(url, topics, impl, settings, clock, events) {
        this.url = url;
        this.impl = impl;
        this.settings = settings;
        this.clock = clock;
        this.events = events;
        /** Client time the server's welcome arrived, `null` before. */
        this.upSince = null;
        this.latencyMs = null;
        /** Code of an error frame received before the welcome (why it will close). */
        this.earlyErrorCode = null;
        this.socket = null;
        this.pending = new Map();
        this.lastFrameAt = 0;
        this.framesReceived = 0;
        this.silenceLimit = null;
        this.watchdog = null;
        this.pingTimer = null;
        this.connectTimer = null;
        this.frameCount = 0;
        this.topics = new Set(topics);
    }
    get isUp() {
        return this.upSince !== null && this.socket !== null;
    }
    open() {
        let socket;
        try {
            socket = new this.impl(this.url);
        }
        catch (error) {
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
        this.connectTimer = this.clock.setTimeout(() => this.giveUp("closed"), this.settings.connectTimeout);
    }
    /** Close on the client's initiative; no `closed` event follows. */
    close(code = CLOSE_NORMAL, reason = "") {
        const socket = this.detach();
        this.failPending(new SyncError("disconnected", "The connection was closed."));
        if (socket !== null)
            safeClose(socket, code, reason);
    }
    /** Send a ping now; no frame at all within requestTimeout: the socket is dead. */
    checkAlive() {
        if (!this.isUp)
            return;
        const id = this.nextId("ping");
        const sentAt = this.clock.now();
        this.pending.set(id, [
            {
                resolve: () => {
                    this.latencyMs = this.clock.now() - sentAt;
                },
                reject: () => { },
                timer: null,
            },
        ]);
        const framesBefore = this.framesReceived;
        this.sendFrame({ type: "ping", id });
        this.clock.setTimeout(() => {
            this.pending.delete(id);
            if (this.isUp && this.framesReceived === framesBefore)
                this.giveUp("heartbeat_timeout");
        }, this.settings.requestTimeout);
    }
    /** Send a frame and wait for its answer (matched by correlationId). */
    request(frame) {
        const correlation = String(frame.correlationId ?? frame.id);
        return new Promise((resolve, reject) => {
            const entry = { resolve, reject, timer: null };
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
    nextId(prefix) {
        this.frameCount += 1;
        return `${prefix}-${this.frameCount}-${Math.random().toString(36).slice(2, 8)}`;
    }
    sendFrame(frame) {
        if (this.socket === null || this.socket.readyState !== 1)
            return false;
        this.socket.send(JSON.stringify(frame));
        return true;
    }
    receive(data) {
        if (this.socket === null || typeof data !== "string")
            return;
        this.lastFrameAt = this.clock.now();
        this.framesReceived += 1;
        const frame = parseJson(data);
        if (!isRecord(frame))
            return;
        if (isMessage(frame)) {
            this.events.message(this, frame);
        }
        else if (frame.type === "connection.established") {
            this.welcome(isRecord(frame.payload) ? frame.payload : {});
        }
        else if (frame.type === "ping") {
            this.sendFrame({ type: "pong" });
        }
        else {
            this.answer(frame);
        }
    }
    welcome(payload) {
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
    answer(frame) {
        const correlation = frame.correlationId == null ? null : String(frame.correlationId);
        const entry = correlation === null ? undefined : this.pending.get(correlation)?.[0];
        const error = frame.type === "error" ? errorOfFrame(frame) : null;
        if (entry === undefined) {
            if (error === null)
                return;
            if (this.upSince === null)
                this.earlyErrorCode = error.code;
            this.events.error(error);
            return;
        }
        this.forget(correlation, entry);
        this.clock.clearTimeout(entry.timer);
        if (error !== null)
            entry.reject(error);
        else
            entry.resolve(frame);
    }
    forget(correlation, entry) {
        const queue = this.pending.get(correlation);
        if (!queue)
            return;
        const rest = queue.filter((other) => other !== entry);
        if (rest.length)
            this.pending.set(correlation, rest);
        else
            this.pending.delete(correlation);
    }
    /** Watchdog: checks at the deadline whether a frame came since. */
    armWatchdog(limit) {
        if (limit === null)
            return;
        const due = this.lastFrameAt + limit - this.clock.now();
        this.watchdog = this.clock.setTimeout(() => {
            if (this.socket === null)
                return;
            if (this.clock.now() - this.lastFrameAt >= limit)
                this.giveUp("heartbeat_timeout");
            else
                this.armWatchdog(limit);
        }, Math.max(0, due));
    }
    schedulePing() {
        if (this.settings.pingInterval <= 0)
            return;
        this.pingTimer = this.clock.setTimeout(() => {
            this.checkAlive();
            if (this.isUp)
                this.schedulePing();
        }, this.settings.pingInterval);
    }
    /** The client cuts a socket that does not answer; reported as closed. */
    giveUp(cause) {
        const socket = this.socket;
        if (socket === null)
            return;
        safeClose(socket, CLOSE_CLIENT_TIMEOUT, "no answer");
        this.ended(CLOSE_CLIENT_TIMEOUT, cause);
    }
    ended(code, cause) {
        if (this.detach() === null)
            return;
        this.failPending(new SyncError("connection_lost", `The WebSocket closed (${code}).`));
        this.events.closed(this, code, cause);
    }
    detach() {
        const socket = this.socket;
        if (socket === null)
            return null;
        this.socket = null;
        socket.onmessage = socket.onclose = socket.onopen = null;
        socket.onerror = () => { };
        for (const timer of [this.connectTimer, this.watchdog, this.pingTimer]) {
            this.clock.clearTimeout(timer);
        }
        return socket;
    }
    failPending(error) {
        const queues = [...this.pending.values()];
        this.pending.clear();
        for (const entry of queues.flat()) {
            this.clock.clearTimeout(entry.timer);
            entry.reject(error);
        }
    }
}
function errorOfFrame(frame) {
    const payload = isRecord(frame.payload) ? frame.payload : {};
    const code = typeof payload.code === "string" ? payload.code : "error";
    const message = typeof payload.message === "string" ? payload.message : code;
    return new SyncError(code, message, { details: isRecord(payload.details) ? payload.details : {} });
}
function safeClose(socket, code, reason) {
    try {
        socket.close(code, reason);
    }
    catch {
        // Already closing, or a code the implementation refuses: nothing to do.
    }
}
/** `url` as a ws:/wss: URL (relative ones against the page) with its query. */
function websocketAddress(url, params) {
    const page = globalThis.location;
    const address = new URL(url, page?.href);
    if (address.protocol === "http:")
        address.protocol = "ws:";
    if (address.protocol === "https:")
        address.protocol = "wss:";
    return withQuery(address.href, params);
}
/**
 * The long-poll loop: one request at a time, the next one starting at least
 * `interval` ms after the previous one started (or at once while the server
 * says `hasMore`). The first poll does not wait, so the connection is known
 * to work at once. `stop()` aborts the request in flight.
 */
class PollingTransport {
    constructor(http, clock, interval, events) {
        this.http = http;
        this.clock = clock;
        this.interval = interval;
        this.events = events;
        this.stopped = false;
        this.restarting = false;
        this.controller = null;
        this.sleepTimer = null;
        this.wake = null;
    }
    start() {
        void this.run();
    }
    stop() {
        this.stopped = true;
        this.controller?.abort();
        this.endSleep();
    }
    /** Poll again now with fresh parameters (the topics changed). */
    restart() {
        this.restarting = true;
        this.controller?.abort();
        this.endSleep();
    }
    async run() {
        let first = true;
        while (!this.stopped) {
            this.restarting = false;
            const request = this.events.request(first);
            const startedAt = this.clock.now();
            const controller = (this.controller = new AbortController());
            let page;
            try {
                page = await this.http.poll(request, controller.signal);
            }
            catch (error) {
                if (this.stopped)
                    return;
                if (this.restarting)
                    continue;
                if (this.events.failed(this, request, asSyncError(error)))
                    continue;
                this.stopped = true;
                return;
            }
            finally {
                this.controller = null;
            }
            if (this.stopped)
                return;
            const latency = request.wait === 0 ? this.clock.now() - startedAt : null;
            this.events.page(this, request, page, latency);
            first = false;
            if (!page.hasMore && !this.restarting) {
                await this.sleep(startedAt + this.interval - this.clock.now());
            }
        }
    }
    sleep(ms) {
        if (ms <= 0 || this.stopped)
            return Promise.resolve();
        return new Promise((resolve) => {
            this.wake = resolve;
            this.sleepTimer = this.clock.setTimeout(() => this.endSleep(), ms);
        });
    }
    endSleep() {
        this.clock.clearTimeout(this.sleepTimer);
        const wake = this.wake;
        this.wake = null;
        wake?.();
    }
}
// Page environment -----------------------------------------------------------
/** `window` and `document` events, or `null` outside a browser (Node). */
function browserEnvironment() {
    const scope = globalThis;
    const { window: win, document: doc } = scope;
    if (!win || typeof win.addEventListener !== "function")
        return null;
    return {
        isOnline: () => scope.navigator?.onLine !== false,
        listen(event, listener) {
            if (event !== "visible") {
                win.addEventListener(event, listener);
                return () => win.removeEventListener(event, listener);
            }
            if (!doc)
                return () => { };
            const onChange = () => {
                if (doc.visibilityState === "visible")
                    listener();
            };
            doc.addEventListener("visibilitychange", onChange);
            return () => doc.removeEventListener("visibilitychange", onChange);
        },
    };
}
// The manager ----------------------------------------------------------------
/** Failures that retrying cannot fix: the state becomes `failed`. */
function permanentReason(code, errorCode) {
    if (code === CLOSE_UNAUTHENTICATED)
        return "auth";
    if (code === CLOSE_FORBIDDEN_TOPIC)
        return "forbidden";
    if (code === CLOSE_BAD_REQUEST && errorCode !== "invalid_cursor")
        return "bad_request";
    return null;
}
/** Poll errors that refuse the topics asked for. */
const TOPIC_REFUSALS = new Set(["forbidden_topic", "invalid_topics"]);
function httpPermanentReason(error) {
    if (error.status === 401)
        return "auth";
    if (error.code === "forbidden_topic")
        return "forbidden";
    if (error.code === "invalid_topics" || error.code === "invalid_limit")
        return "bad_request";
    return null;
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
    constructor(options = {}) {
        this.http = null;
        this.messageListeners = new Listeners();
        this.stateListeners = new Listeners();
        this.resyncListeners = new Listeners();
        this.errorListeners = new Listeners();
        this.state = "disconnected";
        this.transport = null;
        this.reason = null;
        /** Between connect() and disconnect(), even while failed. */
        this.running = false;
        this.socket = null;
        /** A WebSocket tried in the background while polling. */
        this.probe = null;
        this.poller = null;
        this.pollingUp = false;
        this.retryTimer = null;
        this.probeTimer = null;
        this.stableTimer = null;
        this.websocketFailures = 0;
        /** Client time of connect() without a cursor: polling starts from this
         * moment, translated to the server's clock; 0: from the oldest message. */
        this.since = null;
        /** The first since-based page was checked against the server's clock. */
        this.sinceChecked = false;
        /** Bumped by every subscribe() that adds topics. */
        this.topicGeneration = 0;
        /** Subscriptions up to this generation were accepted by a poll. */
        this.verifiedGeneration = 0;
        /** subscribe() calls made while polling, settled by the next poll answer. */
        this.topicChecks = [];
        this.pollLatencyMs = null;
        this.lastMessageAt = null;
        this.messagesReceived = 0;
        this.waiters = [];
        this.unlisten = [];
        this.options = { ...DEFAULTS, ...definedOnly(options) };
        this.clock = this.options.clock ?? realClock;
        this.serverClock = new ServerClock(this.clock);
        this.backoff = new Backoff(this.options.reconnectDelay, this.options.maxReconnectDelay, this.options.random ?? Math.random);
        this.seen = new RecentIds(this.options.dedupCacheSize);
        this.topics = new Set(this.options.topics);
        this.cursor = this.options.cursor;
        this.webSocketImpl =
            this.options.WebSocketImpl ??
                (globalThis.WebSocket || null);
        const fetchImpl = this.options.fetchImpl ?? globalThis.fetch;
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
    connect() {
        if (this.running && this.state === "connected")
            return Promise.resolve();
        const connected = new Promise((resolve, reject) => {
            this.waiters.push({ resolve, reject });
        });
        if (!this.running || this.state === "failed") {
            // Without a cursor, polling (if it comes to that) starts from now, the
            // moment the page asked, not from when WebSocket had failed.
            if (this.cursor === null && this.since === null)
                this.startFromNow();
            this.running = true;
            this.listenToPage();
            this.restart();
        }
        return connected;
    }
    /** Close every connection and stop retrying; `connect()` starts again. */
    disconnect() {
        this.running = false;
        this.stopTransports();
        for (const stop of this.unlisten.splice(0))
            stop();
        this.setState("disconnected", null, "client");
        const error = new SyncError("disconnected", "disconnect() was called.");
        this.settleWaiters(error);
        this.settleTopicChecks(Infinity, error);
    }
    /** Call `listener` with every new message (never twice). Returns an unsubscriber. */
    onMessage(listener) {
        return this.messageListeners.add(listener);
    }
    /** Call `listener` on every change of state or transport. Returns an unsubscriber. */
    onStateChange(listener) {
        return this.stateListeners.add(listener);
    }
    /** Call `listener` when messages were lost: reload the page's state then. */
    onResync(listener) {
        return this.resyncListeners.add(listener);
    }
    /** Call `listener` with errors no promise reports (error frames, poll failures). */
    onError(listener) {
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
    async send(message) {
        const socket = this.socket;
        if (socket !== null && socket.isUp) {
            const frame = {
                type: message.type,
                payload: message.payload ?? {},
                id: message.id ?? socket.nextId("send"),
            };
            if (message.correlationId != null)
                frame.correlationId = message.correlationId;
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
        }
        catch (error) {
            const failure = asSyncError(error);
            if (failure.status === 401 && this.running)
                this.fail("auth", failure);
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
    subscribe(topics) {
        const added = topics.filter((topic) => !this.topics.has(topic));
        for (const topic of added)
            this.topics.add(topic);
        if (added.length)
            this.topicGeneration += 1;
        return this.changeTopics("subscribe", added);
    }
    /** Remove topics. Resolves with all topics now. */
    unsubscribe(topics) {
        const removed = topics.filter((topic) => this.topics.has(topic));
        for (const topic of removed)
            this.topics.delete(topic);
        return this.changeTopics("unsubscribe", removed);
    }
    /** Transport, state, latency, retries and message figures, for a status bar. */
    getQuality() {
        const latencyMs = this.transport === "websocket" ? (this.socket?.latencyMs ?? null) : this.pollLatencyMs;
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
    getState() {
        return this.state;
    }
    /** The position after the last message received: pass it as `cursor` later. */
    getCursor() {
        return this.cursor;
    }
    // Attempts and retries -------------------------------------------------------
    restart() {
        this.stopTransports();
        this.backoff.reset();
        this.websocketFailures = 0;
        this.attempt();
    }
    /** One attempt: WebSocket unless it failed too often in a row; else polling. */
    attempt() {
        this.retryTimer = null;
        const useWebSocket = this.options.websocket &&
            this.webSocketImpl !== null &&
            this.websocketFailures < this.options.fallbackAfterFailures;
        if (useWebSocket)
            this.openSocket();
        else
            this.startPolling();
    }
    /** After a failure: wait (backoff, at least Retry-After), then attempt again. */
    retry(reason, retryAfterMs = null) {
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
    fail(reason, error) {
        this.stopTransports();
        this.setState("failed", null, reason);
        this.settleWaiters(error);
        this.settleTopicChecks(Infinity, error);
        this.errorListeners.emit(error);
    }
    stopTransports() {
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
    openSocket() {
        this.setState("connecting", "websocket", null);
        this.socket = this.createSocket();
        this.socket.open();
    }
    createSocket() {
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
        return new WebSocketTransport(url, topics, this.webSocketImpl, settings, this.clock, {
            welcomed: (socket, welcome) => this.socketWelcomed(socket, welcome),
            message: (socket, message) => {
                if (socket === this.socket)
                    this.receive(message);
            },
            closed: (socket, code, cause) => this.socketClosed(socket, code, cause),
            error: (error) => this.errorListeners.emit(error),
        });
    }
    socketWelcomed(socket, welcome) {
        if (socket === this.probe) {
            // WebSocket works again: switch over; never poll while it is up.
            this.probe = null;
            this.poller?.stop();
            this.poller = null;
            this.pollingUp = false;
            this.socket = socket;
        }
        if (socket !== this.socket)
            return;
        this.adoptWelcome(welcome);
        this.stableTimer = this.clock.setTimeout(() => {
            this.backoff.reset();
            this.websocketFailures = 0;
        }, this.options.stableConnectionTime);
        // subscribe() calls waiting for a poll: the socket checks them now.
        const checks = this.topicChecks.splice(0);
        this.verifiedGeneration = this.topicGeneration;
        void this.reconcileTopics(socket).then((topics) => checks.forEach((check) => check.resolve(topics)), (error) => checks.forEach((check) => check.reject(error)));
        this.setState("connected", "websocket", null);
        this.settleWaiters(null);
    }
    /** The cursor after the welcome, and the resync event if history was lost. */
    adoptWelcome(welcome) {
        if (welcome.recovered === false) {
            // The replay that follows starts from what the server still holds.
            this.cursor = welcome.cursor || null;
            this.resyncListeners.emit({ reason: "recovered_false", transport: "websocket" });
        }
        else if (this.cursor === null) {
            this.cursor = welcome.cursor || null;
        }
        // recovered: true keeps the cursor sent: the replay moves it forward.
    }
    socketClosed(socket, code, cause) {
        if (socket === this.probe) {
            this.probe = null;
            this.scheduleProbe();
            return;
        }
        if (socket !== this.socket)
            return;
        this.socket = null;
        const permanent = permanentReason(code, socket.earlyErrorCode);
        if (permanent !== null) {
            const error = new SyncError(socket.earlyErrorCode ?? permanent, `Closed with ${code}.`);
            this.fail(permanent, error);
            return;
        }
        if (socket.earlyErrorCode === "invalid_cursor")
            this.dropCursor("websocket");
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
    reconcileTopics(socket) {
        const added = [...this.topics].filter((topic) => !socket.topics.has(topic));
        const removed = [...socket.topics].filter((topic) => !this.topics.has(topic));
        const subscribed = added.length
            ? this.changeTopics("subscribe", added)
            : Promise.resolve([...this.topics].sort());
        if (removed.length)
            void this.changeTopics("unsubscribe", removed).catch(() => { });
        return subscribed;
    }
    async changeTopics(kind, topics) {
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
            }
            catch (error) {
                const failure = asSyncError(error);
                if (kind === "subscribe" && failure.code !== "connection_lost") {
                    for (const topic of topics)
                        this.topics.delete(topic);
                }
                throw failure;
            }
        }
        else if (topics.length && kind === "subscribe") {
            // No socket up: the next poll carries the new topics and its answer
            // says whether the server accepts them (pollPage, pollFailed); a
            // socket's welcome checks them too (socketWelcomed).
            const poller = this.poller;
            if (poller !== null) {
                const checked = new Promise((resolve, reject) => {
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
                resolve: () => { },
                reject: (error) => this.errorListeners.emit(error),
            });
        }
        else if (topics.length) {
            this.poller?.restart();
        }
        return [...this.topics].sort();
    }
    /** Settle the subscribe() calls up to `generation`: `error` or the topics now. */
    settleTopicChecks(generation, error) {
        const due = this.topicChecks.filter((check) => check.generation <= generation);
        this.topicChecks = this.topicChecks.filter((check) => check.generation > generation);
        for (const check of due) {
            if (error === null)
                check.resolve([...this.topics].sort());
            else
                check.reject(error);
        }
    }
    // Polling --------------------------------------------------------------------
    startPolling() {
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
    pollRequest(first) {
        if (this.cursor === null && this.since === null)
            this.startFromNow();
        const offset = this.serverClock.offset;
        const corrected = this.cursor === null && offset !== null && this.since !== 0;
        return {
            cursor: this.cursor,
            // No position: from the moment of connect() by the server's clock,
            // as far as it is known yet (pollPage checks it on the answer).
            since: corrected ? this.since + offset : this.since,
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
    sinceIsRight(request) {
        if (request.cursor !== null || request.since === 0 || this.sinceChecked)
            return true;
        this.sinceChecked = true;
        const offset = this.serverClock.offset;
        if (offset === null || request.since === null || this.since === null)
            return true;
        return Math.abs(this.since + offset - request.since) <= this.serverClock.error;
    }
    pollPage(poller, request, page, latencyMs) {
        if (poller !== this.poller)
            return;
        if (!this.sinceIsRight(request)) {
            poller.restart();
            return;
        }
        if (latencyMs !== null)
            this.pollLatencyMs = latencyMs;
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
            if (poller !== this.poller)
                return; // a listener switched or stopped
            this.receive(message);
        }
        if (poller === this.poller)
            this.cursor = page.cursor;
        this.settleTopicChecks(request.topicGeneration, null);
    }
    /** A poll failed: true when the next poll can go at once, fixed. */
    pollFailed(poller, request, error) {
        if (poller !== this.poller)
            return false;
        if (TOPIC_REFUSALS.has(error.code) &&
            request.topicGeneration > this.verifiedGeneration &&
            this.refuseTopics(request.topicGeneration, error)) {
            return true;
        }
        if (error.code === "invalid_since" && request.cursor === null && !request.corrected) {
            // The client's clock is over a minute ahead of the server's. The
            // answer's Date header told the server's time (to the second): ask
            // again from connect() by that clock; without it (a cross-origin page
            // cannot read Date), from the oldest message the server holds.
            if (this.serverClock.offset === null)
                this.since = 0;
            return true;
        }
        this.poller = null;
        const permanent = httpPermanentReason(error);
        if (permanent !== null) {
            this.fail(permanent, error);
            return false;
        }
        if (error.code === "invalid_cursor")
            this.dropCursor("polling");
        if (error.code === "invalid_since")
            this.since = 0;
        // Polling never worked either: the server is out of reach, not only its
        // WebSocket, so the next attempt tries WebSocket first again.
        if (!this.pollingUp)
            this.websocketFailures = 0;
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
    refuseTopics(generation, error) {
        const named = typeof error.details.topic === "string" ? error.details.topic : null;
        const unchecked = this.topicChecks.filter((check) => check.generation <= generation);
        const blamed = unchecked.filter((check) => named === null || check.added.includes(named));
        if (blamed.length === 0)
            return false;
        this.topicChecks = this.topicChecks.filter((check) => !blamed.includes(check));
        if (blamed.length === unchecked.length)
            this.verifiedGeneration = generation;
        for (const check of blamed) {
            for (const topic of check.added)
                this.topics.delete(topic);
            check.reject(error);
        }
        return true;
    }
    /** While polling, try WebSocket again every fallbackRetryInterval. */
    scheduleProbe() {
        if (!this.options.websocket || this.webSocketImpl === null || this.poller === null)
            return;
        this.clock.clearTimeout(this.probeTimer);
        this.probeTimer = this.clock.setTimeout(() => {
            this.probeTimer = null;
            if (this.poller === null || this.probe !== null)
                return;
            this.probe = this.createSocket();
            this.probe.open();
        }, this.options.fallbackRetryInterval);
    }
    // Messages and state ---------------------------------------------------------
    /** Every message from either transport: move the cursor, drop duplicates. */
    receive(message) {
        if (typeof message.cursor === "string")
            this.cursor = message.cursor;
        if (typeof message.id !== "string" || !this.seen.add(message.id))
            return;
        this.messagesReceived += 1;
        this.lastMessageAt = this.clock.now();
        this.messageListeners.emit(message);
    }
    /** No position: polling will start from this moment (see sinceIsRight). */
    startFromNow() {
        this.since = this.clock.now();
        this.sinceChecked = false;
    }
    dropCursor(transport) {
        this.cursor = null;
        this.since = null;
        this.resyncListeners.emit({ reason: "invalid_cursor", transport });
    }
    setState(state, transport, reason, retryInMs = null) {
        const previous = this.state;
        const same = previous === state && this.transport === transport && this.reason === reason;
        this.state = state;
        this.transport = transport;
        this.reason = reason;
        if (same && retryInMs === null)
            return;
        this.stateListeners.emit(state, { state, previous, transport, reason, retryInMs });
    }
    settleWaiters(error) {
        for (const waiter of this.waiters.splice(0)) {
            if (error === null)
                waiter.resolve();
            else
                waiter.reject(error);
        }
    }
    httpApi() {
        if (this.http === null) {
            if (this.fetchImpl === null) {
                throw new SyncError("network_error", "No fetch: pass the fetchImpl option.");
            }
            this.http = new HttpApi(this.options, this.fetchImpl, this.clock, this.serverClock);
        }
        return this.http;
    }
    // Page events ----------------------------------------------------------------
    listenToPage() {
        const environment = this.environment;
        if (environment === null || this.unlisten.length)
            return;
        this.unlisten = [
            environment.listen("online", () => this.wake()),
            environment.listen("visible", () => this.wake()),
            environment.listen("offline", () => this.socket?.checkAlive()),
        ];
    }
    /** The network is back or the page is visible again: reconnect now if down. */
    wake() {
        if (!this.running || this.state === "connecting")
            return;
        if (this.state === "connected") {
            this.socket?.checkAlive(); // a socket that died meanwhile is replaced
            return;
        }
        if (this.state === "failed" && this.reason !== "unreachable")
            return;
        this.restart();
    }
}
/** `options` without its `undefined` values, so defaults fill them in. */
function definedOnly(options) {
    const result = {};
    for (const [key, value] of Object.entries(options)) {
        if (value !== undefined)
            result[key] = value;
    }
    return result;
}
let shared = null;
/**
 * The page's shared manager (the original design's entry point). The first
 * call creates it with `options`; later calls return the same manager and
 * ignore their options. Use `new ConnectionManager(options)` for another one.
 */
export function getConnectionManager(options = {}) {
    if (shared === null)
        shared = new ConnectionManager(options);
    return shared;
}
