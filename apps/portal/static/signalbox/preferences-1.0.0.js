/*
 * <signalbox-preferences>: the recipient's preference centre, for a product's own settings page.
 *
 *   <script type="module" src="https://signalbox.example.com/static/signalbox/preferences-1.0.0.js"></script>
 *   <signalbox-preferences token="RECIPIENT_TOKEN" recipient="user-42" api-base="https://signalbox.example.com"></signalbox-preferences>
 *
 * The same choices as the hosted page: categories × channels (critical ones shown locked on),
 * digest frequency, quiet hours, time zone and language, and unsubscribe from everything. Saving
 * replaces the recipient's layers (`PUT /api/v1/recipients/<id>/preferences/`), keeping what the
 * component does not show (a category's own digest or quiet hours, webhook choices).
 * Events: signalbox-preferences:saved {preferences}, signalbox-preferences:error {code, message}.
 * Theming: the --sbx-* custom properties, ::part(form|save).
 */

const VERSION = "1.0.0";
const CHANNELS = [["email", "Email"], ["sms", "SMS"], ["push", "Push"], ["chat", "Chat"], ["in_app", "In-app"]];
const DIGESTS = [["", "As the sender chooses"], ["immediate", "Immediately"], ["hourly", "Hourly"], ["daily", "Daily"], ["weekly", "Weekly"]];

const STYLES = `
:host { --sbx-accent: #2457d6; --sbx-text: #1d2330; --sbx-muted: #5b6475; --sbx-border: #d9dde5;
  --sbx-font: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; --sbx-radius: 8px;
  display: block; font-family: var(--sbx-font); color: var(--sbx-text); }
fieldset { border: 1px solid var(--sbx-border); border-radius: var(--sbx-radius); margin: 0 0 1rem; padding: .75rem 1rem; }
legend { font-weight: 600; }
table { border-collapse: collapse; width: 100%; }
th, td { padding: .35rem; border-bottom: 1px solid var(--sbx-border); text-align: center; }
th[scope=row] { text-align: left; font-weight: 500; }
.lock { color: var(--sbx-muted); font-size: .85em; }
label { display: inline-block; margin: .25rem 1rem .25rem 0; }
button { font: inherit; background: var(--sbx-accent); color: #fff; border: 0; border-radius: 6px; padding: .5rem 1rem; cursor: pointer; }
button:focus-visible, input:focus-visible, select:focus-visible { outline: 2px solid var(--sbx-accent); outline-offset: 2px; }
.status { margin: .5rem 0; min-height: 1.5em; }
.status.error { color: #b3261e; }
`;

function el(tag, attrs = {}, text) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value !== undefined && value !== null && value !== false) node.setAttribute(name, value === true ? "" : String(value));
  }
  if (text !== undefined) node.textContent = String(text);
  return node;
}

export class SignalboxPreferences extends HTMLElement {
  static get observedAttributes() { return ["token", "recipient"]; }

  constructor() {
    super();
    this.tokenProvider = null;
    this._state = null;
    const root = this.attachShadow({ mode: "open" });
    const sheet = new CSSStyleSheet();
    sheet.replaceSync(STYLES);
    root.adoptedStyleSheets = [sheet];
    this._form = el("form", { part: "form", novalidate: true });
    this._status = el("div", { class: "status", role: "status", "aria-live": "polite" });
    root.append(this._form, this._status);
    this._form.addEventListener("submit", (event) => { event.preventDefault(); this.save(); });
  }

  get token() { return this._token || this.getAttribute("token") || ""; }
  set token(value) { this._token = value; }
  get apiBase() { return (this.getAttribute("api-base") || "").replace(/\/$/, ""); }
  get url() { return `${this.apiBase}/api/v1/recipients/${encodeURIComponent(this.getAttribute("recipient") || "")}/preferences/`; }
  static get version() { return VERSION; }

  connectedCallback() { this.load(); }
  attributeChangedCallback(name, oldValue, newValue) { if (this.isConnected && oldValue !== newValue) this.load(); }

  async _fetch(method, body) {
    const send = () => fetch(this.url, {
      method,
      headers: { Authorization: `Recipient ${this.token}`, Accept: "application/json", ...(body ? { "Content-Type": "application/json" } : {}) },
      body: body ? JSON.stringify(body) : undefined,
      credentials: "omit",
      cache: "no-store",
    });
    let response = await send();
    if (response.status === 401 && typeof this.tokenProvider === "function") {
      this._token = await this.tokenProvider();
      response = await send();
    }
    const data = await response.json().catch(() => ({}));
    if (!response.ok) {
      const error = new Error(data.message || `answered ${response.status}`);
      error.code = data.code;
      throw error;
    }
    return data;
  }

  async load() {
    if (!this.token || !this.getAttribute("recipient")) return;
    try {
      this._state = await this._fetch("GET");
      this._render();
    } catch (error) {
      this._say(`Could not load your preferences: ${error.message}`, true);
    }
  }

  _say(text, isError = false) {
    this._status.className = `status${isError ? " error" : ""}`;
    this._status.textContent = text;
  }

  _render() {
    const state = this._state;
    const rows = [{ key: "*", name: "Everything else", critical: false }, ...state.categories];
    const table = el("table");
    const head = el("tr");
    head.append(el("th", { scope: "col" }, "Topic"), ...CHANNELS.map(([, label]) => el("th", { scope: "col" }, label)));
    const thead = el("thead");
    thead.append(head);
    table.append(thead);
    const body = el("tbody");
    for (const row of rows) {
      const tr = el("tr", { "data-category": row.key });
      const th = el("th", { scope: "row" }, row.name);
      if (row.critical) th.append(" ", el("span", { class: "lock" }, "(required)"));
      tr.append(th);
      const merged = state.effective[row.key] || state.effective["*"];
      for (const [channel, label] of CHANNELS) {
        const on = row.critical || merged.channels[channel] !== false;
        const box = el("input", { type: "checkbox", name: `c:${row.key}:${channel}`, "aria-label": `${row.name}: ${label}`, checked: on, disabled: row.critical });
        const td = el("td");
        td.append(box);
        tr.append(td);
      }
      body.append(tr);
    }
    table.append(body);
    const what = el("fieldset");
    what.append(el("legend", {}, "What reaches you, and where"), table);

    const general = state.preferences.find((l) => l.category === null) || {};
    const when = el("fieldset");
    when.append(el("legend", {}, "When"));
    const digest = el("select", { name: "digest" });
    for (const [value, label] of DIGESTS) digest.append(el("option", { value, selected: (general.digest || "") === value }, label));
    const labelled = (text, control) => { const l = el("label", {}, `${text} `); l.append(control); return l; };
    when.append(
      labelled("Digest", digest),
      labelled("Quiet hours from", el("input", { type: "time", name: "quiet_start", value: general.quiet_hours?.start || "" })),
      labelled("to", el("input", { type: "time", name: "quiet_end", value: general.quiet_hours?.end || "" })),
      labelled("Time zone", el("input", { type: "text", name: "timezone", value: state.timezone || "", placeholder: "Europe/Paris" })),
      labelled("Language", el("input", { type: "text", name: "locale", value: state.locale || "", placeholder: "en-GB" })),
    );
    const all = el("fieldset");
    all.append(el("legend", {}, "Everything"));
    const unsub = el("label");
    unsub.append(el("input", { type: "checkbox", name: "unsubscribed", checked: state.unsubscribed }), " Unsubscribe from everything that is not required");
    all.append(unsub);
    this._form.replaceChildren(what, when, all, el("button", { type: "submit", part: "save" }, "Save preferences"));
  }

  /** The layers the form asks for: every shown channel explicit, what is not shown kept. */
  _layers() {
    const form = this._form;
    const state = this._state;
    const kept = new Map(state.preferences.map((l) => [l.category, l]));
    const keys = [null, ...state.categories.filter((c) => !c.critical || kept.has(c.key)).map((c) => c.key)];
    const critical = new Set(state.categories.filter((c) => c.critical).map((c) => c.key));
    return keys.map((key) => {
      const old = kept.get(key) || {};
      const layer = { category: key, channels: { ...(old.channels || {}) }, digest: old.digest || "", quiet_hours: old.quiet_hours || null };
      if (!critical.has(key)) {
        for (const [channel] of CHANNELS) layer.channels[channel] = form.elements[`c:${key ?? "*"}:${channel}`].checked;
      }
      if (key === null) {
        layer.digest = form.elements.digest.value;
        const start = form.elements.quiet_start.value;
        const end = form.elements.quiet_end.value;
        layer.quiet_hours = start || end ? { start, end } : null;
      }
      return layer;
    });
  }

  async save() {
    const form = this._form;
    try {
      this._state = await this._fetch("PUT", {
        preferences: this._layers(),
        timezone: form.elements.timezone.value.trim(),
        locale: form.elements.locale.value.trim(),
        unsubscribed: form.elements.unsubscribed.checked,
      });
      this._render();
      this._say("Your preferences are saved.");
      this.dispatchEvent(new CustomEvent("signalbox-preferences:saved", { detail: { preferences: this._state } }));
    } catch (error) {
      this._say(`Nothing was saved: ${error.message}`, true);
      this.dispatchEvent(new CustomEvent("signalbox-preferences:error", { detail: { code: error.code, message: error.message } }));
    }
  }
}

if (!customElements.get("signalbox-preferences")) customElements.define("signalbox-preferences", SignalboxPreferences);
