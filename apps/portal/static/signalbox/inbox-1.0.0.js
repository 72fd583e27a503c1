/*
 * <signalbox-inbox>: a bell with the unread badge and a panel with the recipient's in-app inbox.
 *
 *   <script type="module" src="https://signalbox.example.com/static/signalbox/inbox-1.0.0.js"></script>
 *   <signalbox-inbox token="RECIPIENT_TOKEN" api-base="https://signalbox.example.com"></signalbox-inbox>
 *
 * Attributes: token (a recipient token your server minted), api-base (default: this origin),
 * poll-interval (seconds, default 10), stream-url (the realtime stream; polled without it or while it
 * is down), locale (default: the browser's), page-size (default 20).
 * Properties: token, tokenProvider (async () => fresh token, called on a 401).
 * Events: signalbox-inbox:count {unread, unseen}, signalbox-inbox:new {items}, signalbox-inbox:error.
 *
 * No framework, no inline script or style (the styles are a constructed stylesheet), so it runs under
 * a strict Content-Security-Policy. Every piece of content is set as text; links only http(s).
 * Theming: the --sbx-* custom properties below, and ::part(bell|badge|panel|item|action).
 */

const VERSION = "1.0.0";

const STYLES = `
:host { --sbx-accent: #2457d6; --sbx-bg: #fff; --sbx-text: #1d2330; --sbx-muted: #5b6475;
  --sbx-border: #d9dde5; --sbx-unread-bg: #eef3ff; --sbx-badge-bg: #d93025; --sbx-badge-text: #fff;
  --sbx-font: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; --sbx-radius: 8px;
  --sbx-panel-width: 24rem; --sbx-panel-height: 32rem;
  position: relative; display: inline-block; font-family: var(--sbx-font); color: var(--sbx-text); }
button { font: inherit; cursor: pointer; }
.bell { position: relative; background: none; border: 0; padding: .4rem; border-radius: 50%; color: inherit; line-height: 0; }
.bell svg { width: 1.5rem; height: 1.5rem; fill: currentColor; }
.badge { position: absolute; top: 0; right: 0; min-width: 1.1rem; height: 1.1rem; padding: 0 .25rem; box-sizing: border-box;
  border-radius: .55rem; background: var(--sbx-badge-bg); color: var(--sbx-badge-text); font-size: .7rem; line-height: 1.1rem; text-align: center; }
.badge[hidden] { display: none; }
.panel { position: absolute; right: 0; top: calc(100% + .25rem); z-index: 1000; width: var(--sbx-panel-width);
  max-height: var(--sbx-panel-height); display: flex; flex-direction: column; background: var(--sbx-bg);
  border: 1px solid var(--sbx-border); border-radius: var(--sbx-radius); box-shadow: 0 8px 24px rgba(0,0,0,.15); }
.panel[hidden] { display: none; }
.head { display: flex; align-items: center; gap: .5rem; padding: .5rem .75rem; border-bottom: 1px solid var(--sbx-border); }
.head h2 { font-size: 1rem; margin: 0; flex: 1; }
.link { background: none; border: 0; color: var(--sbx-accent); padding: .2rem .3rem; font-size: .85rem; border-radius: 4px; }
.link[aria-pressed="true"] { text-decoration: underline; font-weight: 600; }
ul { list-style: none; margin: 0; padding: 0; overflow-y: auto; flex: 1; }
li.item { padding: .6rem .75rem; border-bottom: 1px solid var(--sbx-border); outline: none; cursor: pointer; }
li.item.unread { background: var(--sbx-unread-bg); }
li.item:focus-visible, li.item.focused { box-shadow: inset 3px 0 0 var(--sbx-accent); }
.title { font-weight: 600; display: block; }
li.item.unread .title::before { content: ""; display: inline-block; width: .5rem; height: .5rem; border-radius: 50%;
  background: var(--sbx-accent); margin-right: .4rem; vertical-align: middle; }
.body { margin: .2rem 0; white-space: pre-line; overflow-wrap: anywhere; }
.meta { display: flex; flex-wrap: wrap; align-items: center; gap: .25rem; font-size: .8rem; color: var(--sbx-muted); }
.meta time { margin-right: auto; }
.action { display: inline-block; text-decoration: none; background: var(--sbx-accent); color: #fff; border-radius: 4px;
  padding: .2rem .6rem; font-size: .8rem; margin: .3rem .3rem 0 0; }
.action.secondary { background: none; color: var(--sbx-accent); border: 1px solid var(--sbx-accent); }
.empty, .status { padding: 1rem .75rem; color: var(--sbx-muted); font-size: .9rem; }
.sentinel { height: 1px; }
button:focus-visible, a:focus-visible { outline: 2px solid var(--sbx-accent); outline-offset: 2px; }
.sr-only { position: absolute; width: 1px; height: 1px; padding: 0; margin: -1px; overflow: hidden; clip: rect(0 0 0 0); white-space: nowrap; border: 0; }
`;

const BELL = "M12 22a2.5 2.5 0 0 0 2.5-2.5h-5A2.5 2.5 0 0 0 12 22zm7-6V11a7 7 0 0 0-5.5-6.84V3.5a1.5 1.5 0 0 0-3 0v.66A7 7 0 0 0 5 11v5l-2 2v1h18v-1z";

function el(tag, attrs = {}, text) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value !== undefined && value !== null && value !== false) node.setAttribute(name, value === true ? "" : String(value));
  }
  if (text !== undefined) node.textContent = String(text);
  return node;
}

/** An http(s) URL (relative ones resolve against the page), or null: never javascript: or data:. */
export function safeUrl(value) {
  if (typeof value !== "string" || !value.trim()) return null;
  try {
    const url = new URL(value, window.location.href);
    return url.protocol === "https:" || url.protocol === "http:" ? url.href : null;
  } catch {
    return null;
  }
}

/** What an item shows: a change elsewhere (seen_at) needs no re-render. */
function shown(item) {
  return JSON.stringify([item.title, item.body, item.action_url, item.data, item.read, item.archived_at]);
}

export function relativeTime(iso, locale, now = Date.now()) {
  const seconds = Math.round((new Date(iso).getTime() - now) / 1000);
  const units = [["year", 31536000], ["month", 2592000], ["week", 604800], ["day", 86400], ["hour", 3600], ["minute", 60]];
  const format = new Intl.RelativeTimeFormat(locale || undefined, { numeric: "auto" });
  for (const [unit, size] of units) {
    if (Math.abs(seconds) >= size) return format.format(Math.round(seconds / size), unit);
  }
  return format.format(0, "second");
}

export class SignalboxInbox extends HTMLElement {
  static get observedAttributes() { return ["token", "poll-interval", "stream-url"]; }

  constructor() {
    super();
    this.tokenProvider = null;
    this._items = new Map();
    this._order = [];
    this._next = null;
    this._view = "inbox";
    this._counts = { unread: 0, unseen: 0 };
    this._timer = null;
    this._stream = null;
    this._streamRetry = 1000;
    this._loaded = false;
    const root = this.attachShadow({ mode: "open" });
    const sheet = new CSSStyleSheet();
    sheet.replaceSync(STYLES);
    root.adoptedStyleSheets = [sheet];
    this._build(root);
  }

  get token() { return this._token || this.getAttribute("token") || ""; }
  set token(value) { this._token = value; }
  get apiBase() { return (this.getAttribute("api-base") || "").replace(/\/$/, ""); }
  get locale() { return this.getAttribute("locale") || navigator.language; }
  get pollInterval() { return Math.max(0.2, parseFloat(this.getAttribute("poll-interval") || "10") || 10); }
  get pageSize() { return Math.min(200, Math.max(1, parseInt(this.getAttribute("page-size") || "20", 10) || 20)); }
  get unread() { return this._counts.unread; }
  static get version() { return VERSION; }

  connectedCallback() {
    this._refresh(true);
    this._live();
  }

  disconnectedCallback() {
    this._stopPolling();
    this._stopStream();
  }

  attributeChangedCallback(name, oldValue, newValue) {
    if (!this.isConnected || oldValue === newValue) return;
    if (name === "token") this._refresh(true);
    if (name === "poll-interval" || name === "stream-url") this._live();
  }

  // --- DOM ---------------------------------------------------------------------------------------

  _build(root) {
    this._bell = el("button", { class: "bell", part: "bell", type: "button", "aria-haspopup": "dialog", "aria-expanded": "false", "aria-label": "Notifications" });
    const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
    svg.setAttribute("viewBox", "0 0 24 24");
    svg.setAttribute("aria-hidden", "true");
    const path = document.createElementNS("http://www.w3.org/2000/svg", "path");
    path.setAttribute("d", BELL);
    svg.append(path);
    this._badge = el("span", { class: "badge", part: "badge", hidden: true, "aria-hidden": "true" });
    this._bell.append(svg, this._badge);
    this._panel = el("div", { class: "panel", part: "panel", role: "dialog", "aria-label": "Notifications", hidden: true });
    const head = el("div", { class: "head" });
    this._heading = el("h2", {}, "Notifications");
    this._tabInbox = el("button", { class: "link", type: "button", "aria-pressed": "true", "data-view": "inbox" }, "Inbox");
    this._tabArchive = el("button", { class: "link", type: "button", "aria-pressed": "false", "data-view": "archived" }, "Archived");
    this._readAll = el("button", { class: "link", type: "button", "data-action": "read-all" }, "Mark all read");
    head.append(this._heading, this._tabInbox, this._tabArchive, this._readAll);
    this._list = el("ul", { role: "list", "aria-label": "Notifications" });
    this._empty = el("div", { class: "empty", hidden: true }, "Nothing here yet.");
    this._sentinel = el("div", { class: "sentinel", "aria-hidden": "true" });
    this._announcer = el("div", { class: "sr-only", role: "status", "aria-live": "polite", "aria-atomic": "true" });
    this._panel.append(head, this._list, this._empty, this._sentinel);
    root.append(this._bell, this._panel, this._announcer);

    this._bell.addEventListener("click", () => this.toggle());
    this._tabInbox.addEventListener("click", () => this._switch("inbox"));
    this._tabArchive.addEventListener("click", () => this._switch("archived"));
    this._readAll.addEventListener("click", () => this.markAllRead());
    this._panel.addEventListener("keydown", (event) => this._key(event));
    this._list.addEventListener("click", (event) => this._click(event));
    this._observer = new IntersectionObserver((entries) => {
      if (entries.some((e) => e.isIntersecting) && this._next && !this._paging) this._more();
    }, { root: this._list });
    this._observer.observe(this._sentinel);
  }

  get open() { return !this._panel.hidden; }

  toggle(force) {
    const open = force === undefined ? this._panel.hidden : force;
    this._panel.hidden = !open;
    this._bell.setAttribute("aria-expanded", String(open));
    if (open) {
      this._request("POST", "seen-all/").then(() => this._counted());
      const first = this._list.querySelector("li.item");
      (first || this._readAll).focus();
    }
  }

  _renderBadge() {
    const { unread } = this._counts;
    this._badge.hidden = unread === 0;
    this._badge.textContent = unread > 99 ? "99+" : String(unread);
    this._bell.setAttribute("aria-label", unread ? `Notifications, ${unread} unread` : "Notifications");
    this.dispatchEvent(new CustomEvent("signalbox-inbox:count", { detail: { ...this._counts } }));
  }

  _renderItem(item) {
    const li = el("li", { class: `item${item.read ? "" : " unread"}`, part: "item", tabindex: "-1", "data-id": item.id, "aria-label": `${item.read ? "" : "Unread: "}${item.title}` });
    li.append(el("span", { class: "title" }, item.title));
    if (item.body) li.append(el("p", { class: "body" }, item.body));
    const data = item.data || {};
    const primary = safeUrl(item.action_url);
    const secondary = safeUrl(data.secondary_url);
    if (primary || secondary) {
      const actions = el("div", { class: "actions" });
      if (primary) actions.append(el("a", { class: "action", part: "action", href: primary, "data-action": "open" }, data.primary_label || "Open"));
      if (secondary) actions.append(el("a", { class: "action secondary", part: "action", href: secondary, "data-action": "open" }, data.secondary_label || "More"));
      li.append(actions);
    }
    const meta = el("div", { class: "meta" });
    const when = el("time", { datetime: item.created_at, title: new Date(item.created_at).toLocaleString(this.locale) }, relativeTime(item.created_at, this.locale));
    const toggleRead = el("button", { class: "link", type: "button", "data-action": item.read ? "unread" : "read" }, item.read ? "Mark unread" : "Mark read");
    const archived = Boolean(item.archived_at);
    const archive = el("button", { class: "link", type: "button", "data-action": archived ? "unarchive" : "archive" }, archived ? "Unarchive" : "Archive");
    meta.append(when, toggleRead, archive);
    li.append(meta);
    return li;
  }

  _render() {
    const focusedId = this.shadowRoot.activeElement && this.shadowRoot.activeElement.closest && this.shadowRoot.activeElement.closest("li.item")?.dataset.id;
    this._list.replaceChildren(...this._order.map((id) => this._renderItem(this._items.get(id))));
    this._empty.hidden = this._order.length > 0 || !this._loaded;
    if (focusedId) this._list.querySelector(`li[data-id="${CSS.escape(focusedId)}"]`)?.focus();
  }

  // --- Interaction -------------------------------------------------------------------------------

  _itemsEls() { return [...this._list.querySelectorAll("li.item")]; }

  _key(event) {
    const items = this._itemsEls();
    const current = event.composedPath().find((n) => n instanceof HTMLElement && n.matches && n.matches("li.item"));
    const index = current ? items.indexOf(current) : -1;
    const move = (i) => { if (items.length) items[Math.max(0, Math.min(items.length - 1, i))].focus(); };
    if (event.key === "Escape") { event.preventDefault(); this.toggle(false); this._bell.focus(); }
    else if (event.key === "ArrowDown") { event.preventDefault(); move(index + 1); }
    else if (event.key === "ArrowUp") { event.preventDefault(); move(index - 1); }
    else if (event.key === "Home") { event.preventDefault(); move(0); }
    else if (event.key === "End") { event.preventDefault(); move(items.length - 1); }
    else if ((event.key === "Enter" || event.key === " ") && current && event.target === current) {
      event.preventDefault();
      this.markRead(current.dataset.id);
    }
  }

  _click(event) {
    const li = event.target.closest("li.item");
    if (!li) return;
    const action = event.target.closest("[data-action]")?.dataset.action;
    const id = li.dataset.id;
    if (action === "read" || action === "unread" || action === "archive" || action === "unarchive") {
      event.stopPropagation();
      this._act(id, action);
    } else {
      // A click on the item (or on one of its links, which then navigates) reads it.
      this.markRead(id);
    }
  }

  _switch(view) {
    this._view = view;
    this._tabInbox.setAttribute("aria-pressed", String(view === "inbox"));
    this._tabArchive.setAttribute("aria-pressed", String(view === "archived"));
    this._items.clear();
    this._order = [];
    this._refresh(true);
  }

  markRead(id) { const item = this._items.get(id); return item && !item.read ? this._act(id, "read") : Promise.resolve(); }
  markUnread(id) { return this._act(id, "unread"); }
  archive(id) { return this._act(id, "archive"); }
  unarchive(id) { return this._act(id, "unarchive"); }

  async markAllRead() {
    await this._request("POST", "read-all/");
    for (const item of this._items.values()) { item.read = true; }
    this._render();
    await this._counted();
  }

  async _act(id, action) {
    await this._request("POST", `${encodeURIComponent(id)}/${action}/`);
    const item = this._items.get(id);
    if (item) {
      if (action === "read" || action === "unread") item.read = action === "read";
      if (action === "archive" || action === "unarchive") {
        this._items.delete(id);
        this._order = this._order.filter((x) => x !== id);
        this._announce(action === "archive" ? "Archived." : "Moved back to the inbox.");
      }
    }
    this._render();
    await this._counted();
  }

  _announce(text) {
    this._announcer.textContent = "";
    // A fresh text node each time, so screen readers announce a repeat too.
    window.setTimeout(() => { this._announcer.textContent = text; }, 50);
  }

  // --- Data --------------------------------------------------------------------------------------

  async _request(method, path, absolute) {
    const url = absolute || `${this.apiBase}/api/v1/inbox/${path}`;
    const send = () => fetch(url, { method, headers: { Authorization: `Recipient ${this.token}`, Accept: "application/json" }, credentials: "omit", cache: "no-store" });
    let response = await send();
    if (response.status === 401 && typeof this.tokenProvider === "function") {
      this._token = await this.tokenProvider();
      response = await send();
    }
    if (!response.ok) {
      const error = new Error(`Signalbox inbox: ${method} ${path || url} answered ${response.status}`);
      this.dispatchEvent(new CustomEvent("signalbox-inbox:error", { detail: { status: response.status } }));
      throw error;
    }
    return response.json();
  }

  _listPath(cursorUrl) {
    if (cursorUrl) return cursorUrl;
    const archived = this._view === "archived" ? "true" : "false";
    return `${this.apiBase}/api/v1/inbox/?archived=${archived}&limit=${this.pageSize}`;
  }

  async _counted() {
    try {
      this._counts = await this._request("GET", "unread-count/");
      this._renderBadge();
    } catch { /* shown by the next successful poll */ }
  }

  /** The first page, merged: new items go on top and are announced; known ones are updated. */
  async _refresh(reset) {
    if (!this.token) return;
    try {
      const page = await this._request("GET", "", this._listPath());
      const fresh = [];
      let changed = Boolean(reset) || !this._loaded;
      for (const item of page.results) {
        const known = this._items.get(item.id);
        if (!known) fresh.push(item);
        // Re-render only on a change: a poll that finds nothing new leaves the DOM (and focus) alone.
        else if (shown(known) !== shown(item)) changed = true;
        this._items.set(item.id, item);
      }
      if (reset || !this._loaded) {
        this._order = page.results.map((i) => i.id).concat(this._order.filter((id) => !page.results.some((i) => i.id === id)));
        this._next = page.next;
      } else if (fresh.length) {
        this._order = fresh.map((i) => i.id).concat(this._order);
      }
      const announce = this._loaded && fresh.length && !reset;
      this._loaded = true;
      if (changed || fresh.length) this._render();
      if (announce) {
        this._announce(fresh.length === 1 ? `New notification: ${fresh[0].title}` : `${fresh.length} new notifications`);
        this.dispatchEvent(new CustomEvent("signalbox-inbox:new", { detail: { items: fresh } }));
      }
      await this._counted();
    } catch { /* the next poll tries again */ }
  }

  async _more() {
    this._paging = true;
    try {
      const page = await this._request("GET", "", this._next);
      for (const item of page.results) {
        if (!this._items.has(item.id)) this._order.push(item.id);
        this._items.set(item.id, item);
      }
      this._next = page.next;
      this._render();
    } finally {
      this._paging = false;
    }
  }

  // --- Live updates: the stream when given and up, else polling ---------------------------------

  _live() {
    this._stopStream();
    if (this.getAttribute("stream-url")) this._startStream();
    else this._startPolling();
  }

  _startPolling() {
    this._stopPolling();
    this._timer = window.setInterval(() => this._refresh(false), this.pollInterval * 1000);
  }

  _stopPolling() {
    if (this._timer) window.clearInterval(this._timer);
    this._timer = null;
  }

  _stopStream() {
    if (this._stream) this._stream.abort();
    this._stream = null;
  }

  /**
   * Server-sent events read with fetch (not EventSource), so the token goes in the Authorization
   * header, never in the URL. Polling runs until the stream answers, and again whenever it ends.
   */
  async _startStream() {
    this._startPolling();
    const controller = new AbortController();
    this._stream = controller;
    try {
      const response = await fetch(this.getAttribute("stream-url"), {
        headers: { Authorization: `Recipient ${this.token}`, Accept: "text/event-stream" },
        credentials: "omit",
        cache: "no-store",
        signal: controller.signal,
      });
      if (!response.ok || !response.body) throw new Error(`stream answered ${response.status}`);
      this._stopPolling();
      this._streamRetry = 1000;
      this.dataset.live = "stream";
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        const events = buffer.split(/\r?\n\r?\n/);
        buffer = events.pop();
        if (events.some((e) => /^(data|event):/m.test(e))) this._refresh(false);
      }
    } catch { /* fall through to polling */ }
    if (this._stream !== controller) return;  // replaced or disconnected meanwhile
    this.dataset.live = "polling";
    this._startPolling();
    window.setTimeout(() => { if (this._stream === controller && this.isConnected) this._startStream(); }, this._streamRetry);
    this._streamRetry = Math.min(this._streamRetry * 2, 60000);
  }
}

if (!customElements.get("signalbox-inbox")) customElements.define("signalbox-inbox", SignalboxInbox);
