// The demo dashboard at / (SPEC §7), built on the bundled client.
//
// Everything a message carries reaches the page through textContent (or
// setAttribute for ids), never innerHTML: payloads are other people's input.

import { getConnectionManager } from "./connection-manager.js";

// Entries kept on screen; the oldest go first, so a page left open stays light.
const MESSAGE_LOG_LIMIT = 500;
const NOTIFICATION_LIMIT = 50;
// How often the latency and counters are redrawn.
const QUALITY_REFRESH_MS = 1000;
// Client options a visitor may set in the page's query string (numbers, in
// ms), to watch the fallback and the reconnection at a human pace, e.g.
// /?fallbackRetryInterval=2000&maxReconnectDelay=2000 (README, Demo dashboard).
const TUNABLE_OPTIONS = [
  "reconnectDelay",
  "maxReconnectDelay",
  "fallbackRetryInterval",
  "pingInterval",
  "pollingInterval",
];

const byId = (id) => document.getElementById(id);

// Set by the server in the page (sync/pages.py), read once.
const config = JSON.parse(byId("dashboard-config").textContent);

/** The client's options: the server's, then the query string's. */
function clientOptions() {
  const options = { ...config.client, csrfToken: csrfToken() };
  const query = new URLSearchParams(location.search);
  for (const name of TUNABLE_OPTIONS) {
    const value = Number(query.get(name));
    if (query.has(name) && Number.isFinite(value) && value >= 0) {
      options[name] = value;
    }
  }
  return options;
}

/** Django's CSRF token, from the page's own form (works with HttpOnly cookies). */
function csrfToken() {
  return document.querySelector("input[name=csrfmiddlewaretoken]").value;
}

/** The state in the words of the spec, then why and when the next try is. */
function showState(state, change) {
  const element = byId("connection-state");
  element.textContent = state;
  element.dataset.state = state;
  const detail = [change?.reason];
  if (change?.retryInMs != null) {
    detail.push(`retry in ${(change.retryInMs / 1000).toFixed(1)} s`);
  }
  byId("connection-detail").textContent = detail.filter(Boolean).join(", ");
}

function showQuality(quality) {
  const latency = quality.latencyMs;
  byId("transport").textContent = quality.transport ?? "none";
  byId("latency").textContent =
    latency == null ? "not measured yet" : `${Math.round(latency)} ms`;
  byId("reconnect-attempts").textContent = String(quality.reconnectAttempts);
  byId("messages-received").textContent = String(quality.messagesReceived);
}

/** A new element with `text` as its text; `className` optional. */
function element(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = text;
  if (className) node.className = className;
  return node;
}

/** Prepend `item` to `list`, dropping the oldest past `limit`. */
function prependBounded(list, item, limit) {
  list.prepend(item);
  while (list.children.length > limit) list.lastElementChild.remove();
}

function logMessage(message) {
  const item = element("li");
  item.dataset.testid = "message";
  item.setAttribute("data-message-id", String(message.id ?? ""));
  const time = new Date(message.timestamp ?? Date.now()).toLocaleTimeString();
  item.append(
    element("span", time, "message-time"),
    element("span", String(message.type), "message-type"),
    element("code", JSON.stringify(message.payload ?? {}), "payload"),
  );
  prependBounded(byId("message-log"), item, MESSAGE_LOG_LIMIT);
}

// Orders by id, in the order they were first seen.
const orders = new Map();

function isOrder(value) {
  return value !== null && typeof value === "object" && "id" in value;
}

/** `data` is one order (upserted by id) or a list of orders (the new table). */
function updateOrders(data) {
  if (Array.isArray(data)) {
    orders.clear();
    data.filter(isOrder).forEach((order) => orders.set(String(order.id), order));
  } else if (isOrder(data)) {
    const id = String(data.id);
    orders.set(id, { ...(orders.get(id) ?? {}), ...data });
  } else {
    return;
  }
  renderOrders();
}

function renderOrders() {
  const rows = [...orders.entries()].map(([id, order]) => {
    const { id: _id, status, ...details } = order;
    const row = element("tr");
    row.dataset.testid = "order";
    row.setAttribute("data-order-id", id);
    row.append(
      element("td", id),
      element("td", status == null ? "" : String(status), "order-status"),
      element("td", JSON.stringify(details), "payload"),
    );
    return row;
  });
  byId("orders-body").replaceChildren(...rows);
  byId("orders-empty").hidden = rows.length > 0;
}

function isNotification(type) {
  return (
    type.startsWith("notification.") || type === "announcement" || type === "error"
  );
}

/** The human part of a notification: its title/message/text, else its JSON. */
function notificationText(payload) {
  const parts = [payload.title, payload.message ?? payload.text].filter(
    (part) => typeof part === "string" && part,
  );
  return parts.length ? parts.join(": ") : JSON.stringify(payload);
}

function showNotification(message) {
  const item = element("li");
  item.dataset.testid = "notification";
  item.append(
    element("span", String(message.type), "message-type"),
    element("span", notificationText(message.payload ?? {})),
  );
  prependBounded(byId("notification-list"), item, NOTIFICATION_LIMIT);
  byId("notifications-empty").hidden = true;
}

function handleMessage(message) {
  logMessage(message);
  const type = String(message.type);
  if (type === "data.updated" && message.payload?.section === "orders") {
    updateOrders(message.payload.data);
  }
  if (isNotification(type)) showNotification(message);
}

/** The form's payload field as an object, or an Error with code invalid_json. */
function parsePayload(text) {
  let payload;
  try {
    payload = JSON.parse(text.trim() || "{}");
  } catch {
    payload = undefined;
  }
  if (payload === null || typeof payload !== "object" || Array.isArray(payload)) {
    throw Object.assign(new Error("The payload must be a JSON object."), {
      code: "invalid_json",
    });
  }
  return payload;
}

function showOutcome(output, ok, text) {
  output.dataset.outcome = ok ? "ok" : "error";
  output.textContent = text;
}

function showError(output, error) {
  const code = error?.code ?? "network_error";
  const message = error?.message ? ` (${error.message})` : "";
  showOutcome(output, false, `error: ${code}${message}`);
}

/** The topics typed in a comma-separated field. */
function topicsOf(field) {
  return field.value
    .split(",")
    .map((topic) => topic.trim())
    .filter(Boolean);
}

async function submitSend(client, form) {
  const output = byId("send-result");
  try {
    const payload = parsePayload(form.elements.payload.value);
    const type = form.elements.type.value.trim();
    const ack = await client.send({ type, payload });
    showOutcome(output, true, `sent: ${ack.messageId}`);
  } catch (error) {
    showError(output, error);
  }
}

/** POST /api/sync/broadcast with the session cookie and the CSRF token. */
async function postBroadcast(type, payload, topics) {
  const response = await fetch(config.broadcastUrl, {
    method: "POST",
    credentials: "same-origin",
    headers: { "Content-Type": "application/json", "X-CSRFToken": csrfToken() },
    body: JSON.stringify({ type, payload, topics }),
  });
  const body = await response.json().catch(() => ({}));
  if (!response.ok || !body.success) {
    const error = body.error ?? { code: `http_${response.status}` };
    throw Object.assign(new Error(error.message ?? ""), { code: error.code });
  }
  return body;
}

async function submitBroadcast(form) {
  const output = byId("broadcast-result");
  try {
    const payload = parsePayload(form.elements.payload.value);
    const type = form.elements.type.value.trim();
    const topics = topicsOf(form.elements.topics);
    const answer = await postBroadcast(type, payload, topics);
    showOutcome(output, true, `broadcast: ${answer.messageId}`);
  } catch (error) {
    showError(output, error);
  }
}

/** Subscribe or unsubscribe (the button pressed), then show every topic now. */
async function submitTopics(client, form, action) {
  const output = byId("topics-result");
  try {
    const topics = topicsOf(form.elements.topics);
    const change = action === "unsubscribe" ? client.unsubscribe : client.subscribe;
    const now = await change.call(client, topics);
    const list = now.length ? `: ${now.join(", ")}` : " no topic";
    showOutcome(output, true, `Subscribed to${list}.`);
  } catch (error) {
    showError(output, error);
  }
}

function onSubmit(form, handler) {
  form?.addEventListener("submit", (event) => {
    event.preventDefault();
    handler(form, event.submitter?.value);
  });
}

function start() {
  const client = getConnectionManager(clientOptions());
  const refresh = () => showQuality(client.getQuality());
  client.onStateChange((state, change) => {
    showState(state, change);
    refresh();
  });
  client.onResync(() => {
    byId("resync-notice").hidden = false;
  });
  client.onMessage((message) => {
    handleMessage(message);
    refresh();
  });
  onSubmit(byId("send-form"), (form) => submitSend(client, form));
  onSubmit(byId("topics-form"), (form, action) =>
    submitTopics(client, form, action),
  );
  onSubmit(byId("broadcast-form"), submitBroadcast);
  setInterval(refresh, QUALITY_REFRESH_MS);
  // Failures show in the state; the promise has nothing to add.
  client.connect().catch(() => {});
}

start();
