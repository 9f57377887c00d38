defmodule Synod.Observer.Page do
  @moduledoc false
  # The status page: one self-contained HTML document (inline CSS, JS and
  # SVG, nothing fetched but /status.json). The status at the time of the
  # request is embedded, so the page draws at once (and in a browser that
  # runs no more than its first task); it then polls /status.json every 2 s
  # and redraws. Pure: builds a string.
  #
  # What the DOM holds, for tests and for scraping by eye:
  #   .member[data-node=N]                    every node seen (hub members, voters)
  #   .group[data-group=G][data-leader=N]     one per Raft group
  #   .group .member.leader[data-node=N]      the leader in its group's picture
  #   .hub[data-hub=H] .bar[data-node=N][data-value=K]  children per node
  #   .hub .share[data-node=N]                ring ownership shares
  #   .store[data-store=S]                    revision, keys, bytes, watch lag
  #   #changes li                             recent leader changes
  #   #elections li.election[data-election=E][data-leader=L]  recent election changes

  alias Synod.Observer.JSON

  @head """
  <!DOCTYPE html>
  <html lang="en"><head><meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>Synod status</title>
  <style>
  body{font:14px/1.4 system-ui,sans-serif;margin:0;background:#f5f6f8;color:#1d2430}
  header{background:#1d2430;color:#fff;padding:10px 18px;display:flex;gap:18px;align-items:baseline}
  header h1{font-size:18px;margin:0}
  main{padding:14px 18px;display:grid;grid-template-columns:repeat(auto-fill,minmax(380px,1fr));gap:14px}
  section{background:#fff;border-radius:8px;padding:10px 14px;box-shadow:0 1px 3px #0002}
  section.wide{grid-column:1/-1}
  h2{font-size:15px;margin:4px 0 8px}
  h3{font-size:13px;margin:8px 0 4px}
  .kv{display:grid;grid-template-columns:auto 1fr;gap:0 10px;font-size:12px}
  .kv span:nth-child(odd){color:#667}
  .err{color:#b00020}
  .muted{color:#889;font-size:12px}
  svg text{font-size:11px;fill:#1d2430}
  .member circle{fill:#cfd8e3;stroke:#4a5a70}
  .member.leader circle{fill:#f2b632;stroke:#8a5d00;stroke-width:2}
  .member.self circle{stroke-width:3}
  .bar rect{fill:#4a78c2}
  .share:nth-child(7n+1) text{fill:#4a78c2}.share:nth-child(7n+2) text{fill:#b07f00}.share:nth-child(7n+3) text{fill:#3ba272}
  .lag rect{fill:#d0563b}
  ul{margin:0;padding-left:18px;font-size:12px}
  </style></head><body>
  <header><h1>Synod</h1><span id="node"></span><span id="updated" class="muted"></span></header>
  <main>
  <section class="wide"><h2>Members</h2><div id="members"></div></section>
  <section><h2>Raft groups</h2><div id="groups"></div></section>
  <section><h2>Hubs</h2><div id="hubs"></div></section>
  <section><h2>Stores</h2><div id="stores"></div></section>
  <section><h2>Recent leader changes</h2><ul id="changes"></ul><h2>Recent election changes</h2><ul id="elections"></ul><h2>C nodes</h2><div id="cnodes"></div></section>
  </main>
  """

  @script """
  <script>
  "use strict";
  const esc = v => String(v == null ? "" : v).replace(/[&<>"']/g,
    c => ({"&":"&amp;","<":"&lt;",">":"&gt;","\\"":"&quot;","'":"&#39;"})[c]);
  const short = n => String(n).split("@")[0];
  const fmtBytes = b => b == null ? "?" : b < 1024 ? b + " B" : b < 1048576 ? (b/1024).toFixed(1) + " KiB" : (b/1048576).toFixed(1) + " MiB";
  const entries = o => (o && typeof o === "object" && !Array.isArray(o)) ? Object.entries(o) : [];
  const failed = v => v && typeof v === "object" && "error" in v && Object.keys(v).length === 1;

  function memberCircles(nodes, leader, self, width) {
    const step = Math.max(90, width / Math.max(nodes.length, 1));
    let s = `<svg width="${step * nodes.length}" height="74">`;
    nodes.forEach((n, i) => {
      const cls = "member" + (n === leader ? " leader" : "") + (n === self ? " self" : "");
      const x = step * i + step / 2;
      s += `<g class="${cls}" data-node="${esc(n)}"><circle cx="${x}" cy="26" r="18"></circle>` +
           `<text x="${x}" y="30" text-anchor="middle">${esc(short(n)).slice(0, 8)}</text>` +
           `<text x="${x}" y="62" text-anchor="middle">${n === leader ? "leader" : ""}</text>` +
           `<title>${esc(n)}</title></g>`;
    });
    return s + "</svg>";
  }

  function bars(map, cls, label) {
    const rows = entries(map);
    const max = Math.max(1, ...rows.map(([, v]) => Number(v) || 0));
    let s = `<svg width="360" height="${rows.length * 20 + 4}">`;
    rows.forEach(([k, v], i) => {
      const w = Math.round(200 * (Number(v) || 0) / max);
      s += `<g class="${cls}" data-node="${esc(k)}" data-value="${esc(v)}"><text x="0" y="${i * 20 + 14}">${esc(short(k))}</text>` +
           `<rect x="100" y="${i * 20 + 3}" width="${w}" height="14"></rect>` +
           `<text x="${106 + w}" y="${i * 20 + 14}">${esc(label(v))}</text></g>`;
    });
    return s + "</svg>";
  }

  const colors = ["#4a78c2", "#f2b632", "#3ba272", "#d0563b", "#8e5ac8", "#2bb5c4", "#a0a0a0"];
  function shares(map) {
    const rows = entries(map);
    let x = 0, s = `<svg width="360" height="${24 + 16 * rows.length}">`;
    rows.forEach(([k, v], i) => {
      const w = 340 * (Number(v) || 0);
      s += `<g class="share" data-node="${esc(k)}"><rect x="${x}" y="4" width="${w}" height="16" fill="${colors[i % colors.length]}"></rect>` +
           `<text x="0" y="${36 + 16 * i}">■ ${esc(short(k))} ${(100 * v).toFixed(1)}%</text></g>`;
      x += w;
    });
    return s + "</svg>";
  }

  function kv(pairs) {
    return `<div class="kv">` + pairs.map(([k, v]) => `<span>${esc(k)}</span><span>${esc(v)}</span>`).join("") + `</div>`;
  }

  function render(st) {
    document.getElementById("node").textContent = st.node;
    document.getElementById("updated").textContent = "as of " + new Date(st.time).toLocaleTimeString();
    const all = new Set([st.node]);
    const leads = {};
    for (const [, h] of entries(st.hubs)) (h.members || []).forEach(n => all.add(n));
    for (const [g, v] of entries(st.groups)) {
      (v.voters || []).forEach(n => n && all.add(n));
      if (v.leader) (leads[v.leader] = leads[v.leader] || []).push(g);
    }
    const nodes = [...all].sort();
    let m = `<svg width="${Math.max(nodes.length * 200, 200)}" height="96">`;
    nodes.forEach((n, i) => {
      const x = 200 * i + 100, led = leads[n] || [];
      m += `<g class="member${led.length ? " leader" : ""}${n === st.node ? " self" : ""}" data-node="${esc(n)}">` +
           `<circle cx="${x}" cy="30" r="22"></circle><text x="${x}" y="34" text-anchor="middle">${esc(short(n)).slice(0, 10)}</text>` +
           `<text x="${x}" y="70" text-anchor="middle">${esc(n)}</text>` +
           `<text x="${x}" y="86" text-anchor="middle">${led.length ? "leads " + esc(led.join(", ")) : ""}</text></g>`;
    });
    document.getElementById("members").innerHTML = m + "</svg>";

    let g = "";
    for (const [name, v] of entries(st.groups)) {
      if (failed(v)) { g += `<div class="group err" data-group="${esc(name)}">${esc(name)}: ${esc(v.error)}</div>`; continue; }
      g += `<div class="group" data-group="${esc(name)}" data-leader="${esc(v.leader)}"><h3>${esc(name)}</h3>` +
           memberCircles((v.voters || []).filter(Boolean), v.leader, st.node, 360) +
           kv([["role here", v.role], ["leader", v.leader || "none"], ["term", v.term], ["commit / applied", v.commit + " / " + v.applied],
               ["log", (v.log ? v.log.entries + " entries, " + fmtBytes(v.log.bytes) : "?")], ["last snapshot", v.snapshot_index]]) + `</div>`;
    }
    document.getElementById("groups").innerHTML = g || `<p class="muted">no Raft group on this node</p>`;

    let h = "";
    for (const [name, v] of entries(st.hubs)) {
      if (failed(v)) { h += `<div class="hub err" data-hub="${esc(name)}">${esc(name)}: ${esc(v.error)}</div>`; continue; }
      h += `<div class="hub" data-hub="${esc(name)}"><h3>${esc(name)}${v.partitioned ? ' <span class="err">partitioned</span>' : ""}</h3>` +
           `<div class="muted">children per node</div>` + bars(v.children, "bar", c => c) +
           `<div class="muted">ring ownership</div>` + shares(v.ring) + `</div>`;
    }
    document.getElementById("hubs").innerHTML = h || `<p class="muted">no hub on this node</p>`;

    let s = "";
    for (const [name, v] of entries(st.stores)) {
      if (failed(v)) { s += `<div class="store err" data-store="${esc(name)}">${esc(name)}: ${esc(v.error)}</div>`; continue; }
      const w = v.watchers || {};
      s += `<div class="store" data-store="${esc(name)}"><h3>${esc(name)}</h3>` +
           kv([["revision", v.revision], ["keys", v.keys], ["history", fmtBytes(v.bytes) + ", " + v.events + " events"], ["leases", v.leases],
               ["watches", failed(w) ? w.error : w.watches + " (" + w.behind + " behind)"]]) +
           `<div class="muted">watch lag (events)</div>` + bars({[name]: failed(w) ? 0 : w.lag}, "lag", x => x) + `</div>`;
    }
    document.getElementById("stores").innerHTML = s || `<p class="muted">no store on this node</p>`;

    const ch = (st.recent_leader_changes || []).map(c =>
      `<li data-group="${esc(c.group)}">${esc(new Date(c.at).toLocaleTimeString())} ${esc(c.group)}: ` +
      `${esc(c.previous || "none")} → <b>${esc(c.leader || "none")}</b> (term ${esc(c.term)})</li>`);
    document.getElementById("changes").innerHTML = ch.join("") || `<li class="muted">none seen (they are kept while Synod.Metrics runs)</li>`;

    const el = (st.recent_election_changes || []).map(c =>
      `<li class="election" data-election="${esc(c.election)}" data-leader="${esc(c.leader)}">` +
      `${esc(new Date(c.at).toLocaleTimeString())} ${esc(c.store)}/${esc(c.election)}: ` +
      (c.leader == null ? `${esc(c.previous)} stepped down` : `<b>${esc(c.leader)}</b> elected`) + `</li>`);
    document.getElementById("elections").innerHTML = el.join("") || `<li class="muted">none seen (this node's candidates, while Synod.Metrics runs)</li>`;

    const cn = Array.isArray(st.cnodes) ? st.cnodes : [];
    document.getElementById("cnodes").innerHTML = cn.length
      ? cn.map(c => `<div class="cnode" data-node="${esc(c.node)}">${esc(c.node)} v${esc(c.version)}: connected to ${esc((c.nodes || []).join(", "))}</div>`).join("")
      : `<p class="muted">none connected</p>`;
  }

  render(JSON.parse(document.getElementById("synod-initial").textContent));

  async function poll() {
    try {
      const r = await fetch("status.json", {cache: "no-store"});
      if (r.ok) render(await r.json());
    } catch (e) { document.getElementById("updated").textContent = "status.json: " + e; }
  }
  setInterval(poll, 2000);
  </script>
  """

  @spec html(map()) :: iodata()
  def html(status) do
    [
      @head,
      ~s(<script id="synod-initial" type="application/json">),
      JSON.encode(status),
      "</script>\n",
      @script,
      "</body></html>\n"
    ]
  end
end
