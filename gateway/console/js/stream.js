// One live alert stream for the whole console (Server-Sent Events): pages subscribe to it
// rather than each opening their own, since the gateway caps concurrent streams.
// EventSource reconnects by itself with the last id it saw (the gateway resumes from its
// store); a refusal (the cap, a signed-out session) closes it, and we retry later.

const STREAM = "/api/v1/console/alerts/stream";
const RETRY_MS = 5000;
const rowListeners = new Set();
const statusListeners = new Set();
let source = null;
let retry = null;
let status = "closed";

function setStatus(next) {
  status = next;
  for (const listener of statusListeners) listener(status);
}

export function openStream() {
  if (source) return;
  clearTimeout(retry);
  source = new EventSource(STREAM, { withCredentials: true });
  source.onopen = () => setStatus("live");
  source.addEventListener("alert", (event) => {
    const row = JSON.parse(event.data);
    for (const listener of rowListeners) listener(row);
  });
  source.addEventListener("gap", () => {
    for (const listener of rowListeners) listener({ gap: true });
  });
  source.onerror = () => {
    if (source && source.readyState === EventSource.CLOSED) {
      source = null;
      setStatus("closed");
      retry = setTimeout(openStream, RETRY_MS);
    } else {
      setStatus("reconnecting");
    }
  };
}

export function closeStream() {
  clearTimeout(retry);
  if (source) source.close();
  source = null;
  setStatus("closed");
}

// listener(row) for each new alert row ({gap: true} when rows were missed); returns the
// function that unsubscribes.
export function onAlert(listener) {
  rowListeners.add(listener);
  return () => rowListeners.delete(listener);
}

export function onStatus(listener) {
  statusListeners.add(listener);
  listener(status);
  return () => statusListeners.delete(listener);
}
