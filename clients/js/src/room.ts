// A room: one session with a wasmroom document, kept across reconnects.

import { ackFrame, dataFrame, readBinary, readText, resumeUrl, SUBPROTOCOL } from "./framing.js";
import { backoffDelay, nextStep, type Backoff, type Ending } from "./policy.js";

/** The part of the WebSocket API the client uses (browsers', Node 22's, the `ws` package's). */
export interface SocketLike {
  binaryType: string;
  readonly readyState: number;
  send(data: string | Uint8Array): void;
  close(code?: number, reason?: string): void;
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
}

export type SocketConstructor = new (url: string, protocols: string[]) => SocketLike;

export interface ConnectOptions {
  /** Called before every connect and reconnect; its token (if any) is sent as the
   * `wasmroom.token.<JWT>` subprotocol, so an expired token is replaced. */
  getToken?: () => string | undefined | null | Promise<string | undefined | null>;
  /** The WebSocket constructor; default: the global `WebSocket` (browsers, Node 22+). */
  WebSocket?: SocketConstructor;
  /** Further subprotocols to offer, after the session's and the token's (the consumer
   * sees them in `on-connect`). */
  protocols?: string[];
  backoff?: Backoff;
  /** Retry after 1000, 1008, 4000-4999 and HTTP 4xx (401/403...) too. Default false. */
  retryRefusals?: boolean;
  /** At most this many messages not yet acknowledged (sent or waiting to be): `send`
   * rejects beyond. Default 1000. */
  maxBuffered?: number;
  /** At most this many bytes of them (a string counts its UTF-8 length). Default 1 MiB. */
  maxBufferedBytes?: number;
  /** Acknowledge the host's messages after this many, or this long after the first one
   * not yet acknowledged. Defaults 32 and 100 ms. */
  ackEvery?: number;
  ackDelayMs?: number;
  /** For tests: the random source of the jitter. */
  random?: () => number;
}

export type Status = "connecting" | "open" | "reconnecting" | "closed";

/** Why a `send` was rejected. */
export class SendError extends Error {
  constructor(
    message: string,
    readonly reason: "buffer-full" | "reset" | "closed",
  ) {
    super(message);
    this.name = "SendError";
  }
}

interface Pending {
  seq: number;
  data: string | Uint8Array;
  bytes: number;
  /** Sent on the current session (a reset rejects it: it may or may not have applied). */
  sent: boolean;
  resolve: () => void;
  reject: (e: Error) => void;
}

type Listener = (...args: any[]) => void;

const encoder = new TextEncoder();

/** A session with one document. Events: `open` ({ resumed }), `message` (data),
 * `reset` (the session was lost: resync), `status` (Status), `close` ({ code, reason }:
 * for good). */
export class Room {
  private listeners = new Map<string, Set<Listener>>();
  private socket: SocketLike | undefined;
  private session: string | undefined;
  /** The last data message received from the host. */
  private received = 0;
  private acked = 0;
  private ackTimer: ReturnType<typeof setTimeout> | undefined;
  private nextSeq = 1;
  private pending: Pending[] = [];
  private pendingBytes = 0;
  private attempt = 0;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private stopped = false;
  private helloSeen = false;
  status: Status = "connecting";

  constructor(
    readonly url: string,
    private readonly options: ConnectOptions = {},
  ) {
    void this.open();
  }

  on(event: "open" | "message" | "reset" | "status" | "close", listener: Listener): this {
    let set = this.listeners.get(event);
    if (!set) this.listeners.set(event, (set = new Set()));
    set.add(listener);
    return this;
  }

  off(event: string, listener: Listener): this {
    this.listeners.get(event)?.delete(listener);
    return this;
  }

  private emit(event: string, ...args: unknown[]): void {
    for (const l of this.listeners.get(event) ?? []) l(...args);
  }

  private setStatus(status: Status): void {
    if (this.status !== status) {
      this.status = status;
      this.emit("status", status);
    }
  }

  /** Bytes of the messages not yet acknowledged (sent or waiting to be). */
  get bufferedBytes(): number {
    return this.pendingBytes;
  }

  /** Sends `data`; resolves once the host acknowledged it (applied it; in journal mode,
   * made it durable). Rejects when the buffer is full, the session was reset before the
   * acknowledgement, or the room closed. */
  send(data: string | Uint8Array | ArrayBuffer): Promise<void> {
    if (this.stopped) return Promise.reject(new SendError("room closed", "closed"));
    const payload = data instanceof ArrayBuffer ? new Uint8Array(data) : data;
    const bytes = typeof payload === "string" ? encoder.encode(payload).length : payload.length;
    const maxCount = this.options.maxBuffered ?? 1000;
    const maxBytes = this.options.maxBufferedBytes ?? 1 << 20;
    if (this.pending.length >= maxCount || this.pendingBytes + bytes > maxBytes) {
      return Promise.reject(new SendError("send buffer full", "buffer-full"));
    }
    return new Promise((resolve, reject) => {
      const item: Pending = { seq: this.nextSeq++, data: payload, bytes, sent: false, resolve, reject };
      this.pending.push(item);
      this.pendingBytes += bytes;
      if (this.helloSeen) this.transmit(item);
    });
  }

  /** Ends the room for good: pending sends are rejected. */
  close(code = 1000, reason = ""): void {
    if (this.stopped) return;
    this.socket?.close(code, reason);
    this.finish(code, reason);
  }

  private finish(code: number, reason: string): void {
    this.stopped = true;
    clearTimeout(this.timer);
    clearTimeout(this.ackTimer);
    this.rejectWhere(() => true, new SendError("room closed", "closed"));
    this.setStatus("closed");
    this.emit("close", { code, reason });
  }

  private rejectWhere(which: (p: Pending) => boolean, error: Error): void {
    const keep: Pending[] = [];
    for (const p of this.pending) {
      if (which(p)) {
        this.pendingBytes -= p.bytes;
        p.reject(error);
      } else keep.push(p);
    }
    this.pending = keep;
  }

  private transmit(item: Pending): void {
    item.sent = true;
    try {
      this.socket?.send(dataFrame(item.seq, item.data));
    } catch {
      // The socket is closing: resent after the resume.
    }
  }

  private async open(): Promise<void> {
    if (this.stopped) return;
    let token: string | undefined | null;
    try {
      token = await this.options.getToken?.();
    } catch {
      token = undefined;
    }
    if (this.stopped) return;
    const Ctor = this.options.WebSocket ?? (globalThis as { WebSocket?: SocketConstructor }).WebSocket;
    if (!Ctor) throw new Error("no WebSocket: pass one in the options (Node 20: the `ws` package)");
    const protocols = [SUBPROTOCOL];
    if (token) protocols.push(`wasmroom.token.${token}`);
    protocols.push(...(this.options.protocols ?? []));
    const url = this.session ? resumeUrl(this.url, this.session, this.received) : this.url;
    this.helloSeen = false;
    let status: number | undefined;
    let socket: SocketLike;
    try {
      socket = new Ctor(url, protocols);
    } catch {
      this.ended({});
      return;
    }
    this.socket = socket;
    socket.binaryType = "arraybuffer";
    socket.onmessage = (ev) => this.onData(ev.data);
    socket.onerror = (ev) => {
      // The `ws` package says which status refused the handshake; browsers do not.
      const m = /Unexpected server response: (\d+)/.exec(String((ev as { message?: string })?.message ?? ""));
      if (m) status = Number(m[1]);
    };
    socket.onclose = (ev) => {
      if (this.socket !== socket) return;
      this.socket = undefined;
      this.ended(status !== undefined && !this.helloSeen ? { status } : { code: ev.code, reason: ev.reason });
    };
  }

  private ended(ending: Ending): void {
    clearTimeout(this.ackTimer);
    this.ackTimer = undefined;
    if (this.stopped) return;
    const next = nextStep(ending, this.options.retryRefusals);
    if (next.action === "stop") {
      this.finish(ending.code ?? ending.status ?? 1006, ending.reason ?? "");
      return;
    }
    this.setStatus("reconnecting");
    let delay: number;
    if (next.action === "now" && this.attempt === 0) delay = 0;
    else if (next.action === "after") delay = next.ms;
    else delay = backoffDelay(this.attempt, this.options.backoff, this.options.random);
    this.attempt++;
    this.timer = setTimeout(() => void this.open(), delay);
  }

  private onData(raw: unknown): void {
    const frame =
      typeof raw === "string"
        ? readText(raw)
        : readBinary(raw instanceof ArrayBuffer ? new Uint8Array(raw) : (raw as Uint8Array));
    switch (frame.kind) {
      case "hello":
        return this.onHello(frame.session, frame.resumed);
      case "ack": {
        const done = this.pending.filter((p) => p.seq <= frame.seq);
        this.pending = this.pending.filter((p) => p.seq > frame.seq);
        for (const p of done) {
          this.pendingBytes -= p.bytes;
          p.resolve();
        }
        return;
      }
      case "data":
        if (frame.seq <= this.received) return; // already delivered
        this.received = frame.seq;
        this.emit("message", frame.data);
        this.scheduleAck();
        return;
      case "malformed":
        this.socket?.close(1002, "malformed session frame");
        return;
    }
  }

  private onHello(session: string, resumed: boolean): void {
    const lost = this.session !== undefined && !resumed;
    this.session = session;
    this.helloSeen = true;
    this.attempt = 0;
    if (lost) {
      // The host could not resume: what the old session did not acknowledge may or may
      // not have been applied, so it is not sent again; the rest is renumbered.
      this.rejectWhere((p) => p.sent, new SendError("session reset before acknowledgement", "reset"));
      this.received = 0;
      this.acked = 0;
      this.nextSeq = 1;
      for (const p of this.pending) p.seq = this.nextSeq++;
    }
    if (!resumed) {
      this.received = 0;
      this.acked = 0;
    }
    this.setStatus("open");
    this.emit("open", { resumed });
    if (lost) this.emit("reset");
    for (const p of this.pending) this.transmit(p);
  }

  private scheduleAck(): void {
    if (this.received - this.acked >= (this.options.ackEvery ?? 32)) {
      this.sendAck();
    } else if (this.ackTimer === undefined) {
      this.ackTimer = setTimeout(() => this.sendAck(), this.options.ackDelayMs ?? 100);
    }
  }

  private sendAck(): void {
    clearTimeout(this.ackTimer);
    this.ackTimer = undefined;
    if (this.received > this.acked && this.socket) {
      try {
        this.socket.send(ackFrame(this.received));
        this.acked = this.received;
      } catch {
        // Closing: the resume's `last` tells the host instead.
      }
    }
  }
}

/** Opens a room at `url` (`ws(s)://host/ws/{plugin}/{document}`). */
export function connect(url: string, options: ConnectOptions = {}): Room {
  return new Room(url, options);
}
