// Warren's web console: polls the management API of the node that served it and draws the
// cluster, queues, exchanges, connections and live rate charts. No libraries, no build step.
"use strict";

const api = location.origin + "/api";   // absolute: a page opened as http://user:pass@host/ cannot fetch relative URLs
let auth = sessionStorage.getItem("warren-auth"); // "Basic ..." from the login form, or null (cookie)

// Opened as http://user:pass@host:15672/: browsers send no credentials until challenged, but the
// document's URL keeps them.
(function credentialsFromURL() {
  const u = new URL(document.URL);
  if (u.username) {
    auth = "Basic " + btoa(unescape(encodeURIComponent(decodeURIComponent(u.username) + ":" + decodeURIComponent(u.password))));
    sessionStorage.setItem("warren-auth", auth);
  }
})();
const history = { rates: [], depth: [] };
const keep = 90;
let timer = null;

function $(id) { return document.getElementById(id); }

async function call(method, path, body) {
  const headers = { "X-Warren-Console": "1" };
  if (auth) headers["Authorization"] = auth;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const resp = await fetch(api + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), credentials: "same-origin" });
  if (resp.status === 401) {
    const e = await resp.json().catch(() => ({}));
    throw Object.assign(new Error(e.reason || "not authorised"), { status: 401 });
  }
  if (!resp.ok) {
    const e = await resp.json().catch(() => ({}));
    throw new Error(e.reason || resp.statusText);
  }
  return resp.status === 204 || resp.status === 201 ? null : resp.json();
}

function text(v) { return v === undefined || v === null ? "" : String(v); }

function cell(tr, v, cls) {
  const td = document.createElement("td");
  td.textContent = text(v);
  if (cls) td.className = cls;
  tr.appendChild(td);
  return td;
}

function fill(tableId, rows, render) {
  const body = $(tableId).querySelector("tbody");
  body.textContent = "";
  for (const r of rows) {
    const tr = document.createElement("tr");
    render(tr, r);
    body.appendChild(tr);
  }
}

function bytes(n) {
  if (!n) return "";
  const u = ["B", "KiB", "MiB", "GiB"];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return n.toFixed(1) + " " + u[i];
}

function showLogin(message) {
  if (timer) { clearInterval(timer); timer = null; }
  $("app").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = message || "";
  $("who").textContent = "";
}

async function start() {
  try {
    const me = await call("GET", "/whoami");
    $("login").hidden = true;
    $("app").hidden = false;
    $("who").textContent = me.name + " (" + (me.tags.join(", ") || "no tags") + ") ";
    const out = document.createElement("button");
    out.id = "logout";
    out.textContent = "Log out";
    out.onclick = logout;
    $("who").appendChild(out);
    await refresh();
    timer = setInterval(refresh, 2000);
  } catch (e) {
    showLogin(e.status === 401 && auth ? e.message : "");
  }
}

async function logout() {
  sessionStorage.removeItem("warren-auth");
  auth = null;
  await fetch(api + "/logout", { method: "POST", credentials: "same-origin" }).catch(() => {});
  showLogin("");
}

$("login-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  auth = "Basic " + btoa(unescape(encodeURIComponent($("login-user").value + ":" + $("login-password").value)));
  try {
    await call("GET", "/whoami");
    sessionStorage.setItem("warren-auth", auth);
    $("login-password").value = "";
    start();
  } catch (e) {
    auth = null;
    $("login-error").textContent = e.message;
  }
});

$("declare-queue").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const vhost = $("declare-vhost").value, name = $("declare-name").value;
  try {
    await call("PUT", "/queues/" + encodeURIComponent(vhost) + "/" + encodeURIComponent(name), { durable: $("declare-durable").checked, auto_delete: false, arguments: {} });
    $("declare-result").textContent = "queue " + name + " declared";
    $("declare-name").value = "";
    refresh();
  } catch (e) {
    $("declare-result").textContent = e.message;
  }
});

async function deleteQueue(vhost, name) {
  try {
    await call("DELETE", "/queues/" + encodeURIComponent(vhost) + "/" + encodeURIComponent(name));
    $("status").textContent = "queue " + name + " deleted";
    refresh();
  } catch (e) {
    $("status").textContent = "delete " + name + ": " + e.message;
  }
}

async function refresh() {
  let nodes, overview, queues, exchanges, connections, vhosts;
  try {
    [nodes, overview, queues, exchanges, connections, vhosts] = await Promise.all([
      call("GET", "/nodes"), call("GET", "/overview"), call("GET", "/queues"),
      call("GET", "/exchanges"), call("GET", "/connections").catch(() => []), call("GET", "/vhosts"),
    ]);
  } catch (e) {
    if (e.status === 401) { showLogin(e.message); return; }
    $("status").textContent = "refresh failed: " + e.message;
    return;
  }
  $("cluster-name").textContent = overview.cluster_name + " · " + overview.product_version;
  const running = nodes.filter((n) => n.running).length;
  const alarms = nodes.filter((n) => n.mem_alarm).length;
  const healthy = running === nodes.length && overview.leader && alarms === 0;
  $("health").textContent = healthy ? "healthy" : (!overview.leader ? "no leader" : (alarms ? "memory alarm" : "degraded"));
  $("health").className = "badge " + (healthy ? "ok" : "bad");
  fill("nodes", nodes, (tr, n) => {
    tr.dataset.node = n.name;
    if (n.leader) tr.className = "leader";
    cell(tr, n.name);
    cell(tr, n.state);
    const raft = n.raft || {};
    cell(tr, raft.state || "");
    cell(tr, raft.term, "num");
    cell(tr, raft.applied_index, "num");
    cell(tr, n.queues, "num");
    cell(tr, n.connections, "num");
    cell(tr, n.message_rates ? n.message_rates.Publish.toFixed(1) : "", "num");
    cell(tr, bytes(n.mem_used), "num");
    cell(tr, n.mem_alarm ? "memory" : "");
    cell(tr, n.amqp_addr);
  });
  fill("queues", queues, (tr, q) => {
    tr.dataset.queue = q.name;
    cell(tr, q.vhost);
    cell(tr, q.name);
    cell(tr, q.node);
    cell(tr, q.messages_ready, "num");
    cell(tr, q.messages_unacknowledged, "num");
    cell(tr, q.messages_details ? q.messages_details.rate.toFixed(1) : "", "num");
    cell(tr, q.consumers, "num");
    cell(tr, q.durable ? "yes" : "no");
    const b = document.createElement("button");
    b.textContent = "Delete";
    b.className = "delete-queue";
    b.onclick = () => deleteQueue(q.vhost, q.name);
    cell(tr, "").appendChild(b);
  });
  fill("exchanges", exchanges, (tr, x) => {
    cell(tr, x.vhost);
    cell(tr, x.name === "" ? "(AMQP default)" : x.name);
    cell(tr, x.type);
    cell(tr, x.durable ? "yes" : "no");
    cell(tr, x.auto_delete ? "yes" : "no");
    cell(tr, x.internal ? "yes" : "no");
  });
  fill("connections", connections, (tr, c) => {
    cell(tr, c.name);
    cell(tr, c.node);
    cell(tr, c.user);
    cell(tr, c.vhost);
    cell(tr, c.channels, "num");
    const p = c.client_properties || {};
    cell(tr, [p.product, p.connection_name].filter(Boolean).join(" · "));
  });
  const sel = $("declare-vhost"), current = sel.value;
  sel.textContent = "";
  for (const v of vhosts) {
    const o = document.createElement("option");
    o.value = o.textContent = v.name;
    sel.appendChild(o);
  }
  if (current) sel.value = current;

  const ms = overview.message_stats || {};
  const r = (k) => (ms[k + "_details"] ? ms[k + "_details"].rate : 0);
  push(history.rates, [r("publish"), r("deliver_get"), r("ack")]);
  const qt = overview.queue_totals || {};
  push(history.depth, [qt.messages_ready || 0, qt.messages_unacknowledged || 0]);
  chart($("rates-chart"), history.rates, ["#1f77b4", "#2ca02c", "#ff7f0e"]);
  chart($("depth-chart"), history.depth, ["#9467bd", "#d62728"]);
  $("status").textContent = "updated " + new Date().toLocaleTimeString() + " from node " + overview.node;
}

function push(series, point) {
  series.push(point);
  if (series.length > keep) series.shift();
}

// chart draws one line per column of points, scaled to the largest value, with a grid.
function chart(canvas, points, colours) {
  const g = canvas.getContext("2d"), w = canvas.width, h = canvas.height, pad = 28;
  g.clearRect(0, 0, w, h);
  let top = 1;
  for (const p of points) for (const v of p) top = Math.max(top, v);
  top = niceCeil(top);
  g.strokeStyle = "#e4e6ea";
  g.fillStyle = "#888";
  g.font = "10px sans-serif";
  for (let i = 0; i <= 4; i++) {
    const y = h - pad / 2 - (h - pad) * i / 4;
    g.beginPath(); g.moveTo(pad, y); g.lineTo(w - 4, y); g.stroke();
    g.fillText(String(+(top * i / 4).toFixed(1)), 2, y + 3);
  }
  colours.forEach((c, k) => {
    g.strokeStyle = c;
    g.lineWidth = 2;
    g.beginPath();
    points.forEach((p, i) => {
      const x = pad + (w - pad - 4) * (points.length === 1 ? 1 : i / (keep - 1));
      const y = h - pad / 2 - (h - pad) * p[k] / top;
      if (i === 0) g.moveTo(x, y); else g.lineTo(x, y);
    });
    g.stroke();
  });
}

function niceCeil(v) {
  const e = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 5, 10]) if (v <= m * e) return m * e;
  return 10 * e;
}

start();
