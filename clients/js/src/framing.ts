// The session subprotocol's frames (docs/sessions.md in the wasmroom repository).

export const SUBPROTOCOL = "wasmroom.session.v1";

/** A frame from the host, read. */
export type HostFrame =
  | { kind: "hello"; session: string; resumed: boolean }
  | { kind: "ack"; seq: number }
  | { kind: "data"; seq: number; data: string | Uint8Array }
  | { kind: "malformed" };

function number(digits: string): number | undefined {
  return /^(0|[1-9][0-9]*)$/.test(digits) ? Number(digits) : undefined;
}

/** Reads a text frame from the host. */
export function readText(text: string): HostFrame {
  if (text.startsWith("!hello ")) {
    const [, session, state] = text.split(" ");
    if (session && (state === "new" || state === "resumed")) {
      return { kind: "hello", session, resumed: state === "resumed" };
    }
    return { kind: "malformed" };
  }
  if (text.startsWith("!ack ")) {
    const seq = number(text.slice(5));
    return seq === undefined ? { kind: "malformed" } : { kind: "ack", seq };
  }
  const colon = text.indexOf(":");
  const seq = colon > 0 ? number(text.slice(0, colon)) : undefined;
  if (seq === undefined || seq === 0) return { kind: "malformed" };
  return { kind: "data", seq, data: text.slice(colon + 1) };
}

/** Reads a binary frame from the host. */
export function readBinary(bytes: Uint8Array): HostFrame {
  if (bytes.length < 8) return { kind: "malformed" };
  const view = new DataView(bytes.buffer, bytes.byteOffset, 8);
  const seq = Number(view.getBigUint64(0));
  if (seq === 0) return { kind: "malformed" };
  return { kind: "data", seq, data: bytes.subarray(8) };
}

/** A data message numbered `seq`, as the frame to send. */
export function dataFrame(seq: number, data: string | Uint8Array): string | Uint8Array {
  if (typeof data === "string") return `${seq}:${data}`;
  const framed = new Uint8Array(8 + data.length);
  new DataView(framed.buffer).setBigUint64(0, BigInt(seq));
  framed.set(data, 8);
  return framed;
}

/** The acknowledgement of every data message up to `seq`. */
export function ackFrame(seq: number): string {
  return `!ack ${seq}`;
}

/** `url` with a resume's query parameters added. */
export function resumeUrl(url: string, session: string, last: number): string {
  const u = new URL(url);
  u.searchParams.set("session", session);
  u.searchParams.set("last", String(last));
  return u.toString();
}
