// A WebSocket-shaped view of a room, for libraries that open their own WebSocket and take
// its constructor as an option (y-websocket's `WebSocketPolyfill`). A network blip is
// invisible to them: the room resumes its session underneath, and the socket stays open
// with nothing lost or doubled. What a plain socket's close would have told them still
// arrives as a close: the session was lost (`reset`: code 1006, "session lost", so that
// the library resyncs as after any dropped connection), a refusal the room does not retry
// (its code), or more unacknowledged data than the room's buffer holds.

import { connect, SendError, type ConnectOptions, type Room } from "./room.js";

/** What a `close` event carries (the fields of the DOM's CloseEvent that libraries read). */
export interface SessionCloseEvent {
  type: "close";
  code: number;
  reason: string;
  wasClean: boolean;
  target: SessionWebSocket;
}

/** What a `message` event carries: a string, or binary data as `binaryType` asks. */
export interface SessionMessageEvent {
  type: "message";
  data: string | ArrayBuffer | Blob;
  target: SessionWebSocket;
}

export interface SessionEvent {
  type: "open" | "error";
  target: SessionWebSocket;
  /** For an error: why. */
  message?: string;
}

type AnyEvent = SessionCloseEvent | SessionMessageEvent | SessionEvent;
type Handler = ((ev: any) => void) | null;
type EventListenerLike = ((ev: any) => void) | { handleEvent(ev: any): void };

/** The close a lost session surfaces as: what a plain socket reports when the network
 * dropped it, so that a library reconnects and resyncs. */
export const SESSION_LOST = { code: 1006, reason: "session lost" } as const;

/**
 * `new SessionWebSocket(url, protocols?, options?)`: a room at `url` behind the WebSocket
 * API: `binaryType`, `readyState` (with the `CONNECTING`...`CLOSED` constants),
 * `onopen`/`onmessage`/`onclose`/`onerror` and `addEventListener`, `send`, `close`.
 * `protocols` are offered besides the session's. `SessionWebSocket.with(options)` makes a
 * constructor of the usual two arguments with the room's options bound (`getToken`, a
 * `WebSocket` for Node 20, backoff...), to hand to a library.
 *
 * `open` fires once the first session started; while the room reconnects the socket stays
 * `OPEN` and `send` buffers (the room's bounds apply). `bufferedAmount` counts the bytes
 * the host has not acknowledged yet.
 */
export class SessionWebSocket {
  static readonly CONNECTING = 0;
  static readonly OPEN = 1;
  static readonly CLOSING = 2;
  static readonly CLOSED = 3;
  readonly CONNECTING = 0;
  readonly OPEN = 1;
  readonly CLOSING = 2;
  readonly CLOSED = 3;

  /** A constructor `(url, protocols)` for libraries, with `options` bound. */
  static with(options: ConnectOptions): typeof SessionWebSocket {
    return class extends SessionWebSocket {
      constructor(url: string | URL, protocols?: string | string[], more: ConnectOptions = {}) {
        super(url, protocols, { ...options, ...more });
      }
    };
  }

  readonly url: string;
  /** The consumer's subprotocol is not told to a session client (docs/sessions.md). */
  readonly protocol = "";
  readonly extensions = "";
  binaryType: "blob" | "arraybuffer" = "blob";
  readyState = 0;
  onopen: Handler = null;
  onmessage: Handler = null;
  onclose: Handler = null;
  onerror: Handler = null;
  /** The room underneath: its `status` and events (`open` says whether it resumed). */
  readonly room: Room;
  private readonly listeners = new Map<string, Set<EventListenerLike>>();
  /** Why the room is being closed from here, if not by `close()`. */
  private ending: { code: number; reason: string } | undefined;

  constructor(url: string | URL, protocols?: string | string[], options: ConnectOptions = {}) {
    this.url = String(url);
    const offered = typeof protocols === "string" ? [protocols] : (protocols ?? []);
    this.room = connect(this.url, { ...options, protocols: [...(options.protocols ?? []), ...offered] });
    this.room.on("open", () => {
      if (this.readyState !== SessionWebSocket.CONNECTING) return; // a resume: invisible
      this.readyState = SessionWebSocket.OPEN;
      this.dispatch({ type: "open", target: this });
    });
    this.room.on("message", (data: string | Uint8Array) => {
      if (this.readyState !== SessionWebSocket.OPEN) return;
      this.dispatch({ type: "message", data: this.binary(data), target: this });
    });
    // The room emits `reset` after the new session's hello and before it sends anything
    // on it: closing here sends nothing to the new session.
    this.room.on("reset", () => this.lose(SESSION_LOST.code, SESSION_LOST.reason));
    this.room.on("close", ({ code, reason }: { code: number; reason: string }) => this.closed(code, reason));
  }

  get bufferedAmount(): number {
    return this.room.bufferedBytes;
  }

  /** Sends `data` on the session. Throws while `CONNECTING`, as a WebSocket does;
   * ignored once closing. */
  send(data: string | ArrayBuffer | ArrayBufferView): void {
    if (this.readyState === SessionWebSocket.CONNECTING) {
      throw new DOMException("the session is not open yet", "InvalidStateError");
    }
    if (this.readyState !== SessionWebSocket.OPEN) return;
    let payload: string | Uint8Array;
    if (typeof data === "string") payload = data;
    else if (data instanceof ArrayBuffer) payload = new Uint8Array(data.slice(0));
    else if (ArrayBuffer.isView(data)) payload = new Uint8Array(data.buffer, data.byteOffset, data.byteLength).slice();
    else throw new TypeError("SessionWebSocket sends strings, ArrayBuffers and typed arrays");
    this.room.send(payload).catch((e: unknown) => {
      // More unacknowledged data than the room holds: dropping it silently would lose it,
      // so the socket ends and the library resyncs. (`reset` and `closed` rejections come
      // with a close already.)
      if (e instanceof SendError && e.reason === "buffer-full") this.lose(1006, "send buffer full");
    });
  }

  close(code = 1000, reason = ""): void {
    if (this.readyState >= SessionWebSocket.CLOSING) return;
    this.readyState = SessionWebSocket.CLOSING;
    this.room.close(code, reason);
  }

  addEventListener(type: string, listener: EventListenerLike | null): void {
    if (!listener) return;
    let set = this.listeners.get(type);
    if (!set) this.listeners.set(type, (set = new Set()));
    set.add(listener);
  }

  removeEventListener(type: string, listener: EventListenerLike | null): void {
    if (listener) this.listeners.get(type)?.delete(listener);
  }

  /** Ends the socket from here: the room closes, and the close event says why. */
  private lose(code: number, reason: string): void {
    if (this.readyState >= SessionWebSocket.CLOSING) return;
    this.ending = { code, reason };
    this.readyState = SessionWebSocket.CLOSING;
    this.room.close(1000, reason);
  }

  private closed(code: number, reason: string): void {
    // The room reports a refused handshake by its HTTP status (where the WebSocket
    // implementation tells it): a WebSocket reports 1006.
    const refused = code < 1000 ? { code: 1006, reason: `refused: HTTP ${code}` } : undefined;
    const ending = this.ending ?? refused ?? { code, reason };
    const wasClean = ending.code !== 1006 && this.ending === undefined;
    // After the caller's turn, as a browser's close event is.
    queueMicrotask(() => {
      if (this.readyState === SessionWebSocket.CLOSED) return;
      this.readyState = SessionWebSocket.CLOSED;
      if (!wasClean) this.dispatch({ type: "error", message: ending.reason, target: this });
      this.dispatch({ type: "close", code: ending.code, reason: ending.reason, wasClean, target: this });
    });
  }

  private binary(data: string | Uint8Array): string | ArrayBuffer | Blob {
    if (typeof data === "string") return data;
    const bytes = data.slice(); // its own buffer, exactly the message
    return this.binaryType === "arraybuffer" ? bytes.buffer : new Blob([bytes]);
  }

  private dispatch(event: AnyEvent): void {
    const handler = (this as unknown as Record<string, Handler>)[`on${event.type}`];
    handler?.call(this, event);
    for (const l of [...(this.listeners.get(event.type) ?? [])]) {
      if (typeof l === "function") l.call(this, event);
      else l.handleEvent(event);
    }
  }
}
