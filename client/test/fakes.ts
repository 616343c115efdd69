/**
 * Test doubles injected through the manager's options: a clock whose time
 * only moves when a test says so, a WebSocket the test drives from the
 * server's side, and a fetch whose answers the test gives one by one.
 */
import {
  ConnectionManager,
  type Clock,
  type ConnectionOptions,
  type ConnectionState,
  type PageEnvironment,
  type ResponseLike,
  type StateChange,
  type SyncMessage,
  type WebSocketLike,
} from "../src/connection-manager.js";

/** Let pending promise callbacks and I/O callbacks run. */
export function settle(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

interface Timer {
  at: number;
  order: number;
  callback: () => void;
}

export class FakeClock implements Clock {
  time = 1_800_000_000_000;
  private readonly timers = new Map<number, Timer>();
  private nextHandle = 1;

  now(): number {
    return this.time;
  }

  setTimeout(callback: () => void, ms: number): unknown {
    const handle = this.nextHandle++;
    this.timers.set(handle, { at: this.time + Math.max(0, ms), order: handle, callback });
    return handle;
  }

  clearTimeout(handle: unknown): void {
    this.timers.delete(handle as number);
  }

  /** Move time forward by `ms`, firing due timers in order. */
  async advance(ms: number): Promise<void> {
    const end = this.time + ms;
    for (;;) {
      await settle();
      const due = [...this.timers.entries()]
        .filter(([, timer]) => timer.at <= end)
        .sort(([, a], [, b]) => a.at - b.at || a.order - b.order)[0];
      if (due === undefined) break;
      this.timers.delete(due[0]);
      this.time = due[1].at;
      due[1].callback();
    }
    this.time = end;
    await settle();
  }
}

export class FakeSocket implements WebSocketLike {
  readyState = 0;
  readonly sent: Array<Record<string, unknown>> = [];
  closedByClient: number | null = null;
  onopen: ((event: unknown) => void) | null = null;
  onmessage: ((event: { data: unknown }) => void) | null = null;
  onclose: ((event: { code: number; reason?: string }) => void) | null = null;
  onerror: ((event: unknown) => void) | null = null;

  constructor(readonly url: string) {}

  get query(): URLSearchParams {
    return new URL(this.url).searchParams;
  }

  send(data: string): void {
    if (this.readyState !== 1) throw new Error("send on a socket that is not open");
    this.sent.push(JSON.parse(data) as Record<string, unknown>);
  }

  close(code?: number): void {
    this.closedByClient = code ?? 1000;
    this.readyState = 3;
  }

  /** The handshake succeeds and the server says connection.established. */
  welcome(payload: Record<string, unknown> = {}): void {
    this.readyState = 1;
    this.onopen?.({});
    this.frame({
      type: "connection.established",
      payload: {
        connectionId: "conn",
        userId: "1",
        heartbeatInterval: 30000,
        cursor: "head",
        recovered: null,
        ...payload,
      },
    });
  }

  frame(frame: Record<string, unknown>): void {
    this.onmessage?.({ data: JSON.stringify(frame) });
  }

  /** The server (or the network) ends the connection with `code`; as in
   * browsers, an abnormal end (1006) fires `error` first. */
  end(code: number): void {
    this.readyState = 3;
    if (code === 1006) this.onerror?.({});
    this.onclose?.({ code });
  }

  /** Frames the client sent of one type. */
  sentOf(type: string): Array<Record<string, unknown>> {
    return this.sent.filter((frame) => frame.type === type);
  }
}

export interface FetchCall {
  url: URL;
  method: string;
  headers: Record<string, string>;
  body: unknown;
  aborted: boolean;
  answer(status: number, body: unknown, headers?: Record<string, string>): void;
  fail(error: Error): void;
}

/** A fetch that records each call and leaves it pending until answered. */
export class FakeFetch {
  readonly calls: FetchCall[] = [];

  readonly fetch = (url: string, init: RequestInit): Promise<ResponseLike> =>
    new Promise((resolve, reject) => {
      const call: FetchCall = {
        url: new URL(url, "http://testserver"),
        method: init.method ?? "GET",
        headers: (init.headers ?? {}) as Record<string, string>,
        body: typeof init.body === "string" ? JSON.parse(init.body) : null,
        aborted: false,
        answer: (status, body, headers = {}) =>
          resolve({
            status,
            ok: status >= 200 && status < 300,
            headers: { get: (name) => headers[name] ?? null },
            text: () => Promise.resolve(JSON.stringify(body)),
          }),
        fail: (error) => reject(error),
      };
      init.signal?.addEventListener("abort", () => {
        call.aborted = true;
        reject(new Error("aborted"));
      });
      this.calls.push(call);
    });

  /** Calls not yet aborted, of a path ending with `suffix`. */
  open(suffix = "/poll"): FetchCall[] {
    return this.calls.filter((call) => !call.aborted && call.url.pathname.endsWith(suffix));
  }

  last(suffix = "/poll"): FetchCall {
    const calls = this.calls.filter((call) => call.url.pathname.endsWith(suffix));
    const call = calls[calls.length - 1];
    if (call === undefined) throw new Error(`no call to ${suffix}`);
    return call;
  }
}

export class FakeEnvironment implements PageEnvironment {
  online = true;
  private readonly listeners = new Map<string, Set<() => void>>();

  isOnline(): boolean {
    return this.online;
  }

  listen(event: string, listener: () => void): () => void {
    const set = this.listeners.get(event) ?? new Set();
    set.add(listener);
    this.listeners.set(event, set);
    return () => set.delete(listener);
  }

  fire(event: "online" | "offline" | "visible"): void {
    if (event === "online") this.online = true;
    if (event === "offline") this.online = false;
    for (const listener of this.listeners.get(event) ?? []) listener();
  }
}

export function message(n: number, extra: Partial<SyncMessage> = {}): SyncMessage {
  return {
    id: `msg_${n}`,
    type: "data.updated",
    payload: { section: "orders", data: { n } },
    timestamp: 1_800_000_000_000 + n,
    userId: "1",
    topics: [],
    cursor: `cursor-${n}`,
    correlationId: null,
    ...extra,
  };
}

/** The clock of the latest harness: the fake server's clock agrees with the
 * client's unless a test says otherwise (a poll answer's `timestamp`). */
let serverClock: FakeClock | null = null;

export function pollAnswer(messages: SyncMessage[], extra: Record<string, unknown> = {}) {
  const last = messages[messages.length - 1];
  return {
    success: true,
    messages,
    // The server's watermark: its clock minus 1 ms (sync/services/paging.py).
    timestamp: (serverClock?.now() ?? 1_800_000_000_000) - 1,
    count: messages.length,
    cursor: last ? last.cursor : "poll-head",
    hasMore: false,
    gap: false,
    ...extra,
  };
}

/** A manager wired to fakes, with everything it reports recorded. */
export function harness(options: Partial<ConnectionOptions> = {}) {
  const clock = new FakeClock();
  serverClock = clock;
  const sockets: FakeSocket[] = [];
  class Socket extends FakeSocket {
    constructor(url: string) {
      super(url);
      sockets.push(this);
    }
  }
  const http = new FakeFetch();
  const environment = new FakeEnvironment();
  const manager = new ConnectionManager({
    websocketUrl: "ws://testserver/ws",
    pollingUrl: "http://testserver/api/sync/poll",
    WebSocketImpl: Socket,
    fetchImpl: http.fetch,
    clock,
    random: () => 0.5,
    environment,
    pingInterval: 0,
    ...options,
  });
  const received: SyncMessage[] = [];
  const states: Array<{ state: ConnectionState } & StateChange> = [];
  const resyncs: string[] = [];
  const errors: string[] = [];
  manager.onMessage((m) => received.push(m));
  manager.onStateChange((state, change) => states.push({ ...change, state }));
  manager.onResync((event) => resyncs.push(event.reason));
  manager.onError((error) => errors.push(error.code));
  const lastSocket = () => {
    const socket = sockets[sockets.length - 1];
    if (socket === undefined) throw new Error("no socket was opened");
    return socket;
  };
  return { manager, clock, sockets, lastSocket, http, environment, received, states, resyncs, errors };
}
