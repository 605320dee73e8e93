// When and whether to reconnect: exponential backoff with full jitter, and what each
// close code (or refused handshake) means. Pure functions, so they are unit-tested alone.

/** Backoff settings. */
export interface Backoff {
  /** The first retry waits up to this long (ms). Default 250. */
  initialMs?: number;
  /** No retry waits longer than this (ms). Default 10 000. */
  maxMs?: number;
}

/** The wait before retry number `attempt` (0 for the first): full jitter, uniformly
 * between 0 and min(maxMs, initialMs * 2^attempt). `random` returns [0, 1). */
export function backoffDelay(attempt: number, backoff: Backoff = {}, random: () => number = Math.random): number {
  const initial = backoff.initialMs ?? 250;
  const max = backoff.maxMs ?? 10_000;
  const ceiling = Math.min(max, initial * 2 ** Math.min(attempt, 30));
  return Math.floor(random() * ceiling);
}

/** What to do after a socket ended. */
export type Next =
  | { action: "backoff" }
  | { action: "now" }
  | { action: "after"; ms: number }
  | { action: "stop" };

/** How a socket ended: its close code and reason, or the HTTP status of a refused
 * handshake when the WebSocket implementation reports it (browsers do not: they report
 * 1006). */
export interface Ending {
  code?: number;
  reason?: string;
  status?: number;
  /** `Retry-After` of a refused handshake, in seconds, when the WebSocket implementation
   * reports it (browsers and the `ws` package do not: backoff applies then). */
  retryAfter?: number;
}

/** Reads "retry in Ns" from a 1013's reason (the host's wording). */
export function retryAfterFromReason(reason: string | undefined): number | undefined {
  const m = /retry in (\d+)\s*s/.exec(reason ?? "");
  return m ? Number(m[1]) : undefined;
}

/** The close-code policy:
 * - 1012 (the host restarts or the document moves): at once;
 * - 1013 (try again later) and HTTP 429/503: after the reason's or `Retry-After`'s
 *   seconds, else with backoff;
 * - 1008 (policy: a limit broken), 4000-4999 (the application's own codes), 1000 (the
 *   application closed it) and HTTP 401/403: never, unless `retryRefusals`;
 * - anything else (1006: the network, 1011: a crash, 1001...): with backoff.
 */
export function nextStep(ending: Ending, retryRefusals = false): Next {
  const { code, status } = ending;
  if (status !== undefined) {
    if (status === 429 || status === 503) {
      const seconds = ending.retryAfter;
      return seconds !== undefined ? { action: "after", ms: seconds * 1000 } : { action: "backoff" };
    }
    if ((status === 401 || status === 403) && !retryRefusals) return { action: "stop" };
    if (status >= 400 && status < 500 && !retryRefusals) return { action: "stop" };
    return { action: "backoff" };
  }
  if (code === 1012) return { action: "now" };
  if (code === 1013) {
    const seconds = retryAfterFromReason(ending.reason);
    return seconds !== undefined ? { action: "after", ms: seconds * 1000 } : { action: "backoff" };
  }
  const refusal = code === 1008 || code === 1000 || (code !== undefined && code >= 4000 && code <= 4999);
  if (refusal && !retryRefusals) return { action: "stop" };
  return { action: "backoff" };
}
