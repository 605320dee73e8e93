// wasmroom's official client: sessions that survive reconnects.
export { connect, Room, SendError } from "./room.js";
export type { ConnectOptions, SocketConstructor, SocketLike, Status } from "./room.js";
export { SessionWebSocket, SESSION_LOST } from "./websocket.js";
export type { SessionCloseEvent, SessionEvent, SessionMessageEvent } from "./websocket.js";
export { backoffDelay, nextStep, retryAfterFromReason } from "./policy.js";
export type { Backoff, Ending, Next } from "./policy.js";
export { SUBPROTOCOL } from "./framing.js";
