// Paygrid console: one page, no dependencies, no request leaves the control unit.
// Views are rebuilt from the JSON API every second (live), never from HTML strings:
// everything shown is set as text, so nothing a client wrote can run here.
"use strict";

const REFRESH_MS = 1000;
const state = { config: null, timer: null, view: null, pages: [""] };

// ---- small DOM helpers ----------------------------------------------------------------
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "text") el.textContent = value;
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}
const svg = (tag, attrs, ...children) => {
  const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [key, value] of Object.entries(attrs || {})) el.setAttribute(key, String(value));
  for (const child of children.flat()) if (child) el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return el;
};
const main = () => document.getElementById("main");
const time = (ms) => (ms ? new Date(Number(ms)).toLocaleString() : "—");
const duration = (from, to) => (from && to ? `${Math.max(0, to - from)} ms` : "—");
const badge = (status, extra) => h("span", { class: `badge s-${status}`, "data-testid": extra || null }, status);
const json = (value) => h("pre", {}, value === null || value === undefined ? "—" : JSON.stringify(value, null, 2));

function say(message, error) {
  const status = document.getElementById("status");
  status.textContent = message || "";
  status.className = error ? "status error" : "status";
  if (message && !error) setTimeout(() => { if (status.textContent === message) status.textContent = ""; }, 6000);
}

// ---- the API -------------------------------------------------------------------------
async function api(path, options) {
  const headers = { "content-type": "application/json" };
  const token = sessionStorage.getItem("paygrid-token");
  if (token) headers.authorization = `Bearer ${token}`;
  const response = await fetch(path, { ...(options || {}), headers });
  let body = {};
  try { body = await response.json(); } catch (_) { body = {}; }
  if (response.status === 401) {
    showSignIn(body.error);
    throw new Error(body.error || "sign in");
  }
  if (!response.ok) throw new Error(body.error || `${response.status} ${response.statusText}`);
  return body;
}
const post = (path, body) => api(path, { method: "POST", body: JSON.stringify(body || {}) });

// ---- routing -------------------------------------------------------------------------
function route() {
  clearInterval(state.timer);
  say("");
  const hash = location.hash || "#/workflows";
  const [path, search] = hash.slice(1).split("?");
  const params = new URLSearchParams(search || "");
  const parts = path.split("/").filter(Boolean);
  for (const link of document.querySelectorAll("nav a")) {
    if (link.dataset.section === (parts[0] || "workflows")) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  let view;
  if (parts[0] === "workflows" && parts[1]) view = workflowView(decodeURIComponent(parts[1]));
  else if (parts[0] === "agents") view = agentsView();
  else if (parts[0] === "reconciliation") view = reconciliationView();
  else if (parts[0] === "signin") return showSignIn();
  else view = listView(params);
  state.view = view;
  const tick = async () => {
    if (state.view !== view) return;
    try { await view.refresh(); } catch (error) { say(error.message, true); }
  };
  tick();
  state.timer = setInterval(tick, REFRESH_MS);
}

function showSignIn(reason) {
  clearInterval(state.timer);
  state.view = null;
  const field = h("textarea", { id: "token", rows: 4, cols: 60, required: true, autocomplete: "off", spellcheck: "false" });
  const form = h("form", {
    onsubmit: (event) => {
      event.preventDefault();
      sessionStorage.setItem("paygrid-token", field.value.trim());
      whoami();
      if (location.hash.startsWith("#/signin")) location.hash = "#/workflows"; else route();
    },
  },
    h("label", { for: "token" }, "Bearer token"),
    h("br"), field, h("br"),
    h("button", { type: "submit", class: "primary", "data-testid": "signin" }, "Sign in"));
  main().replaceChildren(
    h("h1", {}, "Sign in"),
    h("p", {}, reason || "The control unit needs a token for every call."),
    h("p", { class: "note" }, "Make one with: paygrid token --key TOKEN_KEY --role operator --subject YOUR_NAME. It stays in this tab only."),
    form);
  field.focus();
}

function whoami() {
  const token = sessionStorage.getItem("paygrid-token");
  let who = "";
  if (token) {
    try {
      const claims = JSON.parse(atob(token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/")));
      who = `${claims.sub} (${claims.role})`;
    } catch (_) { who = "token given"; }
  }
  document.getElementById("who").textContent = who;
  document.getElementById("signout").hidden = !token;
}

// ---- confirmation --------------------------------------------------------------------
function confirmAction(title, text, fields) {
  const dialog = document.getElementById("confirm");
  document.getElementById("confirm-title").textContent = title;
  document.getElementById("confirm-text").textContent = text;
  const holder = document.getElementById("confirm-fields");
  holder.replaceChildren(...fields.map((f) => h("div", { class: "field" },
    h("label", { for: `confirm-${f.name}` }, f.label),
    f.options
      ? h("select", { id: `confirm-${f.name}`, name: f.name }, f.options.map((o) => h("option", { value: o }, o)))
      : h("input", { id: `confirm-${f.name}`, name: f.name, value: f.value || "", autocomplete: "off" }))));
  return new Promise((resolve) => {
    const done = (ok) => {
      dialog.close();
      const values = {};
      for (const f of fields) values[f.name] = document.getElementById(`confirm-${f.name}`).value;
      resolve(ok ? values : null);
    };
    document.getElementById("confirm-form").onsubmit = (event) => { event.preventDefault(); done(true); };
    document.getElementById("confirm-cancel").onclick = () => done(false);
    // Enter confirms from any field, a list of choices included.
    holder.onkeydown = (event) => {
      if (event.key === "Enter" && event.target.tagName === "SELECT") { event.preventDefault(); done(true); }
    };
    dialog.oncancel = () => done(false);
    dialog.showModal();
    const first = holder.querySelector("input, select");
    (first || document.getElementById("confirm-ok")).focus();
  });
}

// ---- workflows list --------------------------------------------------------------------
function listView(params) {
  const filters = {
    status: params.get("status") || "", name: params.get("name") || "", label: params.get("label") || "",
    since: params.get("since") || "", until: params.get("until") || "", q: params.get("q") || "",
  };
  const page = Number(params.get("page") || 0);
  const input = (name, label, attrs) => h("label", { for: `f-${name}` }, label,
    h("input", { id: `f-${name}`, name, value: filters[name], ...(attrs || {}) }));
  const statuses = ["", "running", "pending", "succeeded", "failed", "compensating", "compensated", "cancelled"];
  const form = h("form", {
    class: "filters", role: "search",
    onsubmit: (event) => {
      event.preventDefault();
      const data = new FormData(form);
      const query = new URLSearchParams();
      for (const [key, value] of data) if (value) query.set(key, value);
      state.pages = [""];
      location.hash = `#/workflows?${query}`;
    },
  },
    input("q", "Search by id or idempotency key", { type: "search", size: 30 }),
    h("label", { for: "f-status" }, "Status",
      h("select", { id: "f-status", name: "status" },
        statuses.map((s) => h("option", { value: s, selected: s === filters.status }, s || "any")))),
    input("name", "Spec name", { size: 16 }),
    input("label", "Label (key=value)", { size: 16 }),
    input("since", "Created after", { type: "datetime-local" }),
    input("until", "Created before", { type: "datetime-local" }),
    h("button", { type: "submit", class: "primary" }, "Apply"));
  const table = h("tbody");
  const note = h("p", { class: "note" });
  const pager = h("div", { class: "pager" });
  const bulk = bulkPanel(filters);
  main().replaceChildren(h("h1", {}, "Workflows"), h("section", { class: "panel" }, form), note,
    h("table", { "aria-label": "Workflows", "data-testid": "workflow-list" },
      h("thead", {}, h("tr", {}, ["Workflow", "Spec", "Status", "Tasks", "Labels", "Created", "Updated"].map((t) => h("th", { scope: "col" }, t)))),
      table),
    pager, bulk);
  return {
    async refresh() {
      const query = new URLSearchParams();
      for (const key of ["status", "name", "q"]) if (filters[key]) query.set(key, filters[key]);
      if (filters.label) query.append("label", filters.label);
      if (filters.since) query.set("since_ms", new Date(filters.since).getTime());
      if (filters.until) query.set("until_ms", new Date(filters.until).getTime());
      query.set("page_token", state.pages[page] || "");
      const answer = await api(`/api/workflows?${query}`);
      note.textContent = answer.note || "";
      table.replaceChildren(...answer.workflows.map((w) => h("tr", {},
        h("td", {}, h("a", { href: `#/workflows/${w.workflow_id}`, class: "mono" }, w.workflow_id)),
        h("td", {}, `${w.name}@${w.version}`),
        h("td", {}, badge(w.status), w.paused ? [" ", badge("paused")] : null),
        h("td", {}, `${w.tasks_done}/${w.tasks_total}`),
        h("td", { class: "mono" }, Object.entries(w.labels || {}).map(([k, v]) => `${k}=${v}`).join(" ")),
        h("td", {}, time(w.created_at_ms)),
        h("td", {}, time(w.updated_at_ms)))));
      if (!answer.workflows.length) table.append(h("tr", {}, h("td", { colspan: 7 }, "No workflows match.")));
      state.pages[page + 1] = answer.next_page_token;
      const go = (to) => { const p = new URLSearchParams(location.hash.split("?")[1] || ""); p.set("page", to); location.hash = `#/workflows?${p}`; };
      pager.replaceChildren(
        h("button", { type: "button", disabled: page === 0, onclick: () => go(page - 1) }, "Previous page"),
        h("span", { class: "note" }, `page ${page + 1}`),
        h("button", { type: "button", disabled: !answer.next_page_token, onclick: () => go(page + 1) }, "Next page"));
    },
  };
}

function bulkPanel(filters) {
  const operation = h("select", { id: "bulk-op" }, ["pause", "resume", "retry", "cancel", "redrive"].map((o) => h("option", { value: o }, o)));
  const extra = h("input", { id: "bulk-skill", size: 14 });
  const gateway = h("input", { id: "bulk-gateway", size: 10 });
  const run = async () => {
    const body = { operation: operation.value, status: filters.status, name: filters.name, label: filters.label, skill: extra.value, gateway: gateway.value };
    try {
      const count = await post("/api/bulk", { ...body, dry_run: true });
      if (!count.matched) return say("No workflow matches: nothing to do.");
      const values = await confirmAction(`Bulk ${operation.value}`,
        `${count.matched} workflows match the filters. ${operation.value} all of them?`,
        [{ name: "reason", label: "Reason (kept in the audit log)" }]);
      if (!values) return;
      const done = await post("/api/bulk", { ...body, reason: values.reason, dry_run: false });
      say(`${operation.value}: ${done.applied} done, ${done.refused.length} refused`);
    } catch (error) { say(error.message, true); }
  };
  return h("section", { class: "panel", "aria-labelledby": "bulk-title" },
    h("h2", { id: "bulk-title" }, "Bulk operation over the filters above"),
    h("div", { class: "filters" },
      h("label", { for: "bulk-op", class: "field" }, "Operation", operation),
      h("label", { for: "bulk-skill", class: "field" }, "Waiting on skill", extra),
      h("label", { for: "bulk-gateway", class: "field" }, "Waiting on gateway", gateway),
      h("button", { type: "button", onclick: run }, "Count, then apply…")),
    h("p", { class: "note" }, "A dry run counts the matching workflows first; nothing changes until you confirm."));
}

// ---- one workflow --------------------------------------------------------------------
function workflowView(id) {
  const header = h("div");
  const ops = h("div", { class: "ops", role: "group", "aria-label": "Operations" });
  const graph = h("div", { class: "graph", "data-testid": "graph" });
  const tasks = h("tbody");
  const timeline = h("ol", { class: "timeline" });
  const input = h("div");
  main().replaceChildren(header,
    h("section", { class: "panel", "aria-labelledby": "ops-title" }, h("h2", { id: "ops-title" }, "Operations"), ops),
    h("section", { class: "panel", "aria-labelledby": "graph-title" }, h("h2", { id: "graph-title" }, "Task graph"), graph),
    h("h2", {}, "Tasks"),
    h("table", { "aria-label": "Tasks" },
      h("thead", {}, h("tr", {}, ["Task", "Skill", "Status", "Attempts", "Agent", "Duration", "Waiting / error", "Details"].map((t) => h("th", { scope: "col" }, t)))),
      tasks),
    h("h2", {}, "Input"), input,
    h("h2", {}, "Timeline"), timeline);
  let last = null;
  const operate = async (operation, title, text, fields) => {
    const values = await confirmAction(title, text, fields);
    if (!values) return;
    try {
      const answer = await post(`/api/workflows/${id}/${operation}`, values);
      say(`${operation}: workflow ${answer.status}${answer.paused ? " (paused)" : ""}${answer.tasks && answer.tasks.length ? `; running again: ${answer.tasks.join(", ")}` : ""}`);
      await view.refresh();
    } catch (error) { say(error.message, true); }
  };
  const view = {
    async refresh() {
      const w = await api(`/api/workflows/${encodeURIComponent(id)}`);
      const trace = state.config && state.config.jaeger_url && w.trace_id
        ? h("a", { href: `${state.config.jaeger_url.replace(/\/$/, "")}/trace/${w.trace_id}`, target: "_blank", rel: "noopener" }, "open in Jaeger")
        : h("span", { class: "note" }, w.trace_id ? `${w.trace_id} (set --jaeger-url for a link)` : "—");
      header.replaceChildren(
        h("h1", {}, `${w.name}@${w.version} `, badge(w.status, "workflow-status"), w.paused ? [" ", badge("paused", "workflow-paused")] : null),
        h("dl", { class: "meta" },
          h("dt", {}, "Workflow"), h("dd", { class: "mono" }, w.workflow_id),
          h("dt", {}, "Idempotency key"), h("dd", { class: "mono" }, w.idempotency_key || "—"),
          h("dt", {}, "Priority"), h("dd", {}, w.priority),
          h("dt", {}, "Labels"), h("dd", { class: "mono" }, Object.entries(w.labels || {}).map(([k, v]) => `${k}=${v}`).join(" ") || "—"),
          h("dt", {}, "Created"), h("dd", {}, time(w.created_at_ms)),
          h("dt", {}, "Updated"), h("dd", {}, time(w.updated_at_ms)),
          h("dt", {}, "Trace"), h("dd", {}, trace),
          w.paused ? [h("dt", {}, "Paused"), h("dd", {}, w.paused)] : null,
          w.error ? [h("dt", {}, "Error"), h("dd", { class: "error-text" }, w.error)] : null));
      const key = JSON.stringify([w.status, w.paused, w.tasks.map((t) => [t.status, t.history.length, t.waiting, t.compensation_status])]);
      if (key === last) return;
      last = key;
      renderOps(w);
      renderGraph(graph, w);
      tasks.replaceChildren(...w.tasks.map(taskRow));
      input.replaceChildren(json(w.input));
      timeline.replaceChildren(...timelineOf(w).map((e) => h("li", {}, h("time", { datetime: new Date(e.at).toISOString() }, time(e.at)), " — ", e.text)));
    },
  };
  function renderOps(w) {
    const running = ["running", "pending", "compensating"].includes(w.status);
    const failedTasks = w.tasks.filter((t) => t.status === "failed").map((t) => t.task_id);
    const checkpoints = w.tasks.filter((t) => t.checkpoint && t.status === "succeeded").map((t) => t.task_id);
    const reason = [{ name: "reason", label: "Reason (kept in the audit log)" }];
    ops.replaceChildren(
      h("button", { type: "button", "data-testid": "op-pause", disabled: !running || !!w.paused,
        onclick: () => operate("pause", "Pause workflow", "Nothing new of it is dispatched until resumed; running tasks finish.", reason) }, "Pause"),
      h("button", { type: "button", "data-testid": "op-resume", disabled: !w.paused,
        onclick: () => operate("resume", "Resume workflow", "Its waiting tasks go to agents again.", []) }, "Resume"),
      h("button", { type: "button", "data-testid": "op-retry", disabled: w.status !== "failed" || !failedTasks.length,
        onclick: () => operate("retry", "Retry failed task", "The workflow runs again from its failed task. Tasks that took effects keep their idempotency keys: nothing is taken twice.",
          [{ name: "task_id", label: "Failed task", options: failedTasks }]) }, "Retry failed task"),
      h("button", { type: "button", "data-testid": "op-redrive", disabled: !["failed", "succeeded"].includes(w.status) || !checkpoints.length,
        onclick: () => operate("redrive", "Re-drive from a checkpoint", "The checkpoint and every task after it run again under the same idempotency keys.",
          [{ name: "task_id", label: "Checkpoint", options: checkpoints }]) }, "Re-drive…"),
      h("button", { type: "button", class: "danger", "data-testid": "op-cancel", disabled: !running,
        onclick: () => operate("cancel", "Cancel workflow", "Running tasks are cancelled; finished ones are compensated (authorizations voided, captures refunded).", reason) }, "Cancel"));
  }
  return view;
}

function taskRow(t) {
  const status = t.compensation_status && t.compensation_status !== "blocked" ? [badge(t.status), " ↺ ", badge(t.compensation_status)] : badge(t.status);
  const details = h("details", {},
    h("summary", {}, `${t.history.length} attempt record(s)`),
    h("table", { "aria-label": `Attempts of ${t.task_id}` },
      h("thead", {}, h("tr", {}, ["#", "Agent", "Outcome", "Duration", "Error"].map((x) => h("th", { scope: "col" }, x)))),
      h("tbody", {}, t.history.map((a) => h("tr", {},
        h("td", {}, `${a.attempt}${a.lookup ? " (lookup)" : ""}${a.compensation ? " (undo)" : ""}`),
        h("td", { class: "mono" }, a.agent_id || "—"),
        h("td", {}, a.outcome),
        h("td", {}, duration(a.started_at_ms, a.finished_at_ms)),
        h("td", { class: "error-text" }, a.error || ""))))),
    h("div", {}, "Output:"), json(t.output),
    t.approval ? h("p", {}, `Approval: ${t.approval.prompt} (${t.approval.pending ? "waiting" : "decided"})`) : null);
  return h("tr", { "data-task": t.task_id, "data-status": t.status },
    h("th", { scope: "row", class: "mono" }, t.task_id),
    h("td", { class: "mono" }, t.skill || (t.checkpoint ? "checkpoint" : "")),
    h("td", {}, status),
    h("td", {}, String(t.attempts)),
    h("td", { class: "mono" }, t.agent_id || "—"),
    h("td", {}, duration(t.started_at_ms, t.finished_at_ms)),
    h("td", { class: t.error ? "error-text" : "" }, t.error || t.waiting || ""),
    h("td", {}, details));
}

// The graph: tasks in columns by depth (longest path from a root), edges from needs.
function renderGraph(holder, w) {
  const byId = new Map(w.tasks.map((t) => [t.task_id, t]));
  const depth = new Map();
  const depthOf = (t) => {
    if (depth.has(t.task_id)) return depth.get(t.task_id);
    depth.set(t.task_id, 0);
    const d = t.needs.length ? 1 + Math.max(...t.needs.map((n) => depthOf(byId.get(n)))) : 0;
    depth.set(t.task_id, d);
    return d;
  };
  w.tasks.forEach(depthOf);
  const columns = [];
  for (const t of w.tasks) (columns[depth.get(t.task_id)] ||= []).push(t);
  const [width, height, gapX, gapY] = [128, 44, 34, 16];
  const pos = new Map();
  columns.forEach((column, x) => column.forEach((t, y) => pos.set(t.task_id, { x: 10 + x * (width + gapX), y: 10 + y * (height + gapY) })));
  const totalW = 20 + columns.length * (width + gapX);
  const totalH = 20 + Math.max(...columns.map((c) => c.length)) * (height + gapY);
  const colors = { succeeded: "#1e7d3a", failed: "#b3261e", cancelled: "#b3261e", running: "#1f5fbf", dispatched: "#1f5fbf", ready: "#1f5fbf", backoff: "#9a6700", compensated: "#1e7d3a", skipped: "#6b7280", blocked: "#9aa1aa", pending: "#9aa1aa" };
  const edges = w.tasks.flatMap((t) => t.needs.map((n) => {
    const a = pos.get(n), b = pos.get(t.task_id);
    return svg("path", { class: "edge", d: `M${a.x + width},${a.y + height / 2} C${a.x + width + gapX / 2},${a.y + height / 2} ${b.x - gapX / 2},${b.y + height / 2} ${b.x},${b.y + height / 2}` });
  }));
  const nodes = w.tasks.map((t) => {
    const p = pos.get(t.task_id);
    const color = colors[t.status] || "#6b7280";
    return svg("g", { class: "node", transform: `translate(${p.x},${p.y})`, "data-task": t.task_id, "data-status": t.status, role: "img", "aria-label": `task ${t.task_id}: ${t.status}` },
      svg("title", {}, `${t.task_id}: ${t.status}${t.error ? ` — ${t.error}` : ""}`),
      svg("rect", { width, height, stroke: color, "stroke-dasharray": t.checkpoint ? "5 3" : "" }),
      svg("text", { x: 8, y: 18, "font-weight": 600 }, t.task_id.length > 16 ? `${t.task_id.slice(0, 15)}…` : t.task_id),
      svg("text", { x: 8, y: 35, fill: color }, t.status + (t.attempts > 1 ? ` ×${t.attempts}` : "")));
  });
  holder.replaceChildren(svg("svg", { width: totalW, height: totalH, viewBox: `0 0 ${totalW} ${totalH}`, role: "group", "aria-label": "Task graph" },
    svg("defs", {}, svg("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 6, markerHeight: 6, orient: "auto" }, svg("path", { d: "M0,0 L10,5 L0,10 z", fill: "#9aa1aa" }))),
    edges, nodes));
}

function timelineOf(w) {
  const events = [{ at: w.created_at_ms, text: "created" }];
  for (const t of w.tasks) {
    for (const a of t.history) {
      const what = a.compensation ? "compensation" : a.lookup ? "lookup" : "attempt";
      events.push({ at: a.finished_at_ms || a.started_at_ms, text: `${t.task_id}: ${what} ${a.attempt} on ${a.agent_id || "—"} ${a.outcome} (${duration(a.started_at_ms, a.finished_at_ms)})${a.error ? ` — ${a.error}` : ""}` });
    }
    if (t.finished_at_ms && !t.history.length) events.push({ at: t.finished_at_ms, text: `${t.task_id}: ${t.status}` });
  }
  if (!["running", "pending"].includes(w.status)) events.push({ at: w.updated_at_ms, text: `workflow ${w.status}` });
  return events.filter((e) => e.at).sort((a, b) => a.at - b.at);
}

// ---- agents, gateways, limits --------------------------------------------------------
function agentsView() {
  const agents = h("tbody"), breakers = h("tbody"), entries = h("tbody"), holds = h("ul"), members = h("ul"), limits = h("tbody");
  const holdKind = h("select", { id: "hold-kind" }, h("option", { value: "gateway" }, "gateway"), h("option", { value: "skill" }, "skill"));
  const holdName = h("input", { id: "hold-name", size: 16 });
  const hold = async (operation) => {
    if (!holdName.value) return say("Name the gateway or skill first.", true);
    const values = await confirmAction(`${operation === "pause" ? "Pause" : "Resume"} dispatch`,
      `${operation === "pause" ? "Nothing new goes" : "Tasks go again"} to ${holdKind.value} ${holdName.value}.`,
      operation === "pause" ? [{ name: "reason", label: "Reason (kept in the audit log)" }] : []);
    if (!values) return;
    try { await post(`/api/dispatch/${operation}`, { [holdKind.value]: holdName.value, reason: values.reason || "" }); say(`dispatch ${operation}d`); }
    catch (error) { say(error.message, true); }
  };
  const table = (label, heads, body) => h("table", { "aria-label": label }, h("thead", {}, h("tr", {}, heads.map((x) => h("th", { scope: "col" }, x)))), body);
  main().replaceChildren(h("h1", {}, "Agents & gateways"),
    h("h2", {}, "Gateways: circuit breakers"), table("Circuit breakers", ["Gateway", "State", "Requests", "Errors", "Slow", "Last transition"], breakers),
    h("section", { class: "panel", "aria-labelledby": "holds-title" }, h("h2", { id: "holds-title" }, "Paused dispatch"), holds,
      h("div", { class: "filters" },
        h("label", { for: "hold-kind", class: "field" }, "Kind", holdKind),
        h("label", { for: "hold-name", class: "field" }, "Name", holdName),
        h("button", { type: "button", onclick: () => hold("pause") }, "Pause dispatch…"),
        h("button", { type: "button", onclick: () => hold("resume") }, "Resume dispatch…"))),
    h("h2", {}, "Limits in use"), table("Limits", ["Rule", "Key", "Running", "Max"], limits),
    h("h2", {}, "Health (telemetry)"), table("Health", ["Kind", "Subject", "Requests", "Errors", "p99 ms", "Reported by"], entries),
    h("h2", {}, "Agents"), table("Agents", ["Agent", "Execution unit", "Skills", "Labels", "In flight", "Completed", "Connected"], agents),
    h("h2", {}, "Control units"), members);
  return {
    async refresh() {
      const [a, health, lim] = await Promise.all([api("/api/agents"), api("/api/health"), api("/api/limits")]);
      agents.replaceChildren(...a.agents.map((x) => h("tr", {},
        h("td", { class: "mono" }, x.agent_id), h("td", {}, x.execution_unit), h("td", { class: "mono" }, x.skills.join(", ")),
        h("td", { class: "mono" }, Object.entries(x.labels || {}).map(([k, v]) => `${k}=${v}`).join(" ")),
        h("td", {}, `${x.inflight}/${x.max_concurrency}`), h("td", {}, x.tasks_completed), h("td", {}, x.connected ? "yes" : "no"))));
      breakers.replaceChildren(...health.breakers.map((b) => h("tr", {},
        h("td", {}, b.gateway), h("td", {}, badge(b.state)), h("td", {}, b.requests), h("td", {}, b.errors), h("td", {}, b.slow), h("td", {}, b.last || "—"))));
      if (!health.breakers.length) breakers.append(h("tr", {}, h("td", { colspan: 6 }, "No gateway has answered yet.")));
      entries.replaceChildren(...health.entries.map((e) => h("tr", {},
        h("td", {}, e.kind), h("td", {}, e.subject), h("td", {}, e.requests), h("td", {}, e.errors), h("td", {}, e.latency_p99_ms), h("td", { class: "mono" }, e.reported_by))));
      const held = [...Object.entries(health.paused_gateways || {}).map(([g, why]) => `gateway ${g}: ${why}`), ...Object.entries(health.paused_skills || {}).map(([s, why]) => `skill ${s}: ${why}`)];
      holds.replaceChildren(...(held.length ? held : ["No dispatch is paused."]).map((t) => h("li", {}, t)));
      limits.replaceChildren(...lim.running.map((u) => h("tr", {}, h("td", {}, u.rule), h("td", {}, u.key || "—"), h("td", {}, u.running), h("td", {}, u.max))));
      if (!lim.running.length) limits.append(h("tr", {}, h("td", { colspan: 4 }, `${lim.concurrency_rules} concurrency and ${lim.rate_rules} rate rules; nothing counted now.`)));
      members.replaceChildren(...(a.cluster.members.length
        ? a.cluster.members.map((m) => h("li", {}, `${m.name} at ${m.url}: ${m.partitions} partitions${m.name === a.cluster.answered_by ? " (this one)" : ""}`))
        : [h("li", {}, "One control unit (not a cluster).")]));
    },
  };
}

// ---- settlement and reconciliation ---------------------------------------------------
function reconciliationView() {
  const body = h("tbody");
  main().replaceChildren(h("h1", {}, "Settlement & reconciliation"),
    h("p", { class: "note" }, "Settlement batches closed and reconciled against the ledger (paygrid reconcile shows each run's mismatches)."),
    h("table", { "aria-label": "Reconciliation runs" },
      h("thead", {}, h("tr", {}, ["Run", "Workflow", "Status", "Gateway", "As of", "Rows", "Matched", "Pending", "Mismatches"].map((x) => h("th", { scope: "col" }, x)))),
      body));
  return {
    async refresh() {
      const names = ["close-and-reconcile", "reconcile-gateway", "settlement-batch"];
      const pages = await Promise.all(names.map((n) => api(`/api/workflows?name=${n}&page_size=50`)));
      const runs = pages.flatMap((p) => p.workflows).sort((a, b) => b.created_at_ms - a.created_at_ms).slice(0, 25);
      const rows = [];
      for (const run of runs) {
        const w = await api(`/api/workflows/${run.workflow_id}`);
        const task = w.tasks.find((t) => t.skill === "reconcile.gateway" && t.output);
        const o = (task && task.output) || {};
        rows.push(h("tr", {},
          h("td", {}, h("a", { href: `#/workflows/${w.workflow_id}`, class: "mono" }, w.workflow_id.slice(0, 8))),
          h("td", {}, `${w.name}@${w.version}`), h("td", {}, badge(w.status)),
          h("td", {}, o.gateway || "—"), h("td", {}, o.as_of || "—"), h("td", {}, o.report_rows ?? "—"),
          h("td", {}, o.matched ?? "—"), h("td", {}, o.pending ?? "—"), h("td", {}, o.mismatch_count ?? "—")));
      }
      body.replaceChildren(...(rows.length ? rows : [h("tr", {}, h("td", { colspan: 9 }, "No settlement batch or reconciliation run yet."))]));
    },
  };
}

// ---- start ---------------------------------------------------------------------------
document.getElementById("signout").addEventListener("click", () => {
  sessionStorage.removeItem("paygrid-token");
  whoami();
  showSignIn("Signed out.");
});
window.addEventListener("hashchange", route);
(async () => {
  try { state.config = await (await fetch("/api/config")).json(); } catch (_) { state.config = {}; }
  whoami();
  if (state.config.token_required && !sessionStorage.getItem("paygrid-token")) showSignIn();
  else route();
})();
