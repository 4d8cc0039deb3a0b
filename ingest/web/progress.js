// A batch's live progress over the notifier's WebSocket, resumed after any disconnect.
//
// The stream opens with a snapshot (no `since`) and then sends events in `seq` order. The last
// `seq` handled is remembered; after a drop (network, notifier restart, close code 1001, 1011 or
// 4008 "too slow") the stream reconnects with `since=<last seq>` and the notifier replays exactly
// what was missed. An `end` message (the batch completed) ends it for good.

const FIRST_RECONNECT_MS = 500;
const MAX_RECONNECT_MS = 10000;

export class ProgressStream {
  /**
   * @param {string} url the batch's WebSocket URL (from the create-batch answer)
   * @param {string} token the batch token
   * @param {{onMessage: (msg: object) => void, onConnection?: (up: boolean) => void}} hooks
   */
  constructor(url, token, { onMessage, onConnection }) {
    this.url = url;
    this.token = token;
    this.onMessage = onMessage;
    this.onConnection = onConnection || (() => {});
    this.lastSeq = null;
    this.ended = false;
    this.closed = false;
    this.delay = FIRST_RECONNECT_MS;
    this.socket = null;
    this.timer = null;
  }

  start() {
    this.connect();
  }

  /** Stop for good (the page no longer needs progress). */
  close() {
    this.closed = true;
    clearTimeout(this.timer);
    if (this.socket) this.socket.close(1000);
  }

  address() {
    const url = new URL(this.url);
    url.searchParams.set("token", this.token);
    if (this.lastSeq !== null) url.searchParams.set("since", String(this.lastSeq));
    return url.toString();
  }

  connect() {
    if (this.closed || this.ended) return;
    const socket = new WebSocket(this.address());
    this.socket = socket;
    socket.addEventListener("open", () => {
      this.delay = FIRST_RECONNECT_MS;
      this.onConnection(true);
    });
    socket.addEventListener("message", (event) => this.receive(event.data));
    socket.addEventListener("close", () => {
      if (this.socket !== socket) return;
      this.socket = null;
      if (this.closed || this.ended) return;
      this.onConnection(false);
      this.timer = setTimeout(() => this.connect(), this.delay);
      this.delay = Math.min(this.delay * 2, MAX_RECONNECT_MS);
    });
  }

  receive(text) {
    let message;
    try {
      message = JSON.parse(text);
    } catch (error) {
      return; // not ours to understand
    }
    if (message.kind === "snapshot") {
      this.lastSeq = message.last_seq;
    } else if (message.kind === "event") {
      if (this.lastSeq !== null && message.seq <= this.lastSeq) return; // already handled
      this.lastSeq = message.seq;
    } else if (message.kind === "end") {
      this.ended = true;
    }
    this.onMessage(message);
  }
}
