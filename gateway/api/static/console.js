// Cầu's operator console: follows /api/events (Server-Sent Events, read with fetch so that the
// API token can go in a header), and acts through the JSON API. No framework, no build step.
"use strict";

const T = {
  vi: {
    title: "Bàn điều khiển", connecting: "Đang kết nối…", live: "Trực tiếp", offline_conn: "Mất kết nối",
    token: "Mã truy cập", token_title: "Mã truy cập API", cancel: "Huỷ", save: "Lưu",
    token_help: "Các thao tác (tắt tiếng, ngắt, khoá phòng, mời) cần mã API của Cầu (in ra khi khởi động lần đầu).",
    token_wrong: "Mã không đúng.", alerts: "Cảnh báo", rooms: "Phòng họp", sites: "Điểm cầu",
    no_rooms: "Chưa có phòng nào đang họp.", offline_only: "Chỉ các điểm chưa kết nối",
    summary: "{rooms} phòng · {people} người tham gia · {online}/{total} điểm cầu đang kết nối",
    participants: "người tham gia", locked: "Đã khoá", lock: "Khoá phòng", unlock: "Mở khoá",
    end: "Kết thúc họp", end_confirm: "Kết thúc phòng {room}? Mọi người sẽ bị ngắt.",
    layout: "Bố cục", invite: "Mời", invite_ph: "số, bí danh hoặc sip:…",
    name: "Tên", protocol: "Giao thức", audio: "Âm thanh", video: "Hình ảnh", encryption: "Mã hoá",
    quality: "Chất lượng (nhận / gửi)", joined: "Tham gia", actions: "Thao tác",
    mute_in: "Tắt mic", unmute_in: "Bật mic", mute_out: "Tắt loa", unmute_out: "Bật loa",
    remove: "Ngắt", remove_confirm: "Ngắt {name} khỏi phòng?", chart: "Biểu đồ", hide_chart: "Ẩn biểu đồ",
    speaking: "đang nói", speaker: "người nói chính", muted: "tắt mic", deaf: "tắt loa",
    none: "—", in_call: "đang họp", registered: "đã đăng ký", offline: "chưa kết nối",
    group_none: "Cấp tỉnh", connected: "{n}/{total} kết nối", mos: "MOS", loss: "Mất gói %", jitter: "Jitter ms",
    done: "Xong", failed: "Không thực hiện được: {err}", inviting: "Đang gọi {to}…", invited: "{name} đã vào phòng",
    joined_ev: "{name} vào phòng {room}", left_ev: "{name} rời phòng {room}",
    vs: "chuyển theo người nói", res: "{w}×{h}", plain: "không mã hoá",
    verified: "chứng chỉ đầu xa đã được kiểm tra (tls_ca)",
  },
  en: {
    title: "Console", connecting: "Connecting…", live: "Live", offline_conn: "Disconnected",
    token: "Access token", token_title: "API token", cancel: "Cancel", save: "Save",
    token_help: "Actions (mute, remove, lock, invite) need Cầu's API token (printed at the first start).",
    token_wrong: "That token is not right.", alerts: "Alerts", rooms: "Rooms", sites: "Sites",
    no_rooms: "No room is in session.", offline_only: "Only sites not connected",
    summary: "{rooms} rooms · {people} participants · {online}/{total} sites connected",
    participants: "participants", locked: "Locked", lock: "Lock room", unlock: "Unlock",
    end: "End meeting", end_confirm: "End room {room}? Everyone is hung up.",
    layout: "Layout", invite: "Invite", invite_ph: "number, alias or sip:…",
    name: "Name", protocol: "Protocol", audio: "Audio", video: "Video", encryption: "Encryption",
    quality: "Quality (in / out)", joined: "Joined", actions: "Actions",
    mute_in: "Mute", unmute_in: "Unmute", mute_out: "Deafen", unmute_out: "Undeafen",
    remove: "Remove", remove_confirm: "Remove {name} from the room?", chart: "Chart", hide_chart: "Hide chart",
    speaking: "speaking", speaker: "active speaker", muted: "muted", deaf: "deafened",
    none: "—", in_call: "in a call", registered: "registered", offline: "offline",
    group_none: "Province", connected: "{n}/{total} connected", mos: "MOS", loss: "Loss %", jitter: "Jitter ms",
    done: "Done", failed: "Could not do it: {err}", inviting: "Calling {to}…", invited: "{name} joined",
    joined_ev: "{name} joined {room}", left_ev: "{name} left {room}",
    vs: "voice-switched", res: "{w}×{h}", plain: "not encrypted",
    verified: "the far certificate was checked (tls_ca)",
  },
};

let lang = localStorage.getItem("cau-lang") || "vi";
if (!T[lang]) lang = "vi";
let token = sessionStorage.getItem("cau-token") || "";
const state = {rooms: new Map(), endpoints: null, alerts: [], charts: new Map()};
const HOUR = 3600;

function t(key, vars) {
  let s = (T[lang] && T[lang][key]) || T.vi[key] || key;
  if (vars) for (const [k, v] of Object.entries(vars)) s = s.split("{" + k + "}").join(String(v));
  return s;
}

// a DOM element with attributes and children (text is always text: nothing from the network is HTML)
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.className = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(el.dataset, v);
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function toast(text, bad) {
  const el = document.getElementById("toast");
  el.textContent = text;
  el.className = bad ? "bad" : "";
  el.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { el.hidden = true; }, bad ? 8000 : 3000);
}

// -- the API -----------------------------------------------------------------------------------
function headers(json) {
  const hd = {};
  if (token) hd.Authorization = "Bearer " + token;
  if (json) hd["Content-Type"] = "application/json";
  return hd;
}

async function post(path, body) {
  if (!token) { askToken(); throw new Error(t("token_help")); }
  const r = await fetch("../api/" + path, {method: "POST", headers: headers(true), body: JSON.stringify(body || {})});
  let data = {};
  try { data = await r.json(); } catch (e) { /* not JSON */ }
  if (r.status === 401) { askToken(t("token_wrong")); throw new Error(t("token_wrong")); }
  if (!r.ok) throw new Error(data.error || ("HTTP " + r.status));
  return data;
}

function act(path, body, okText) {
  return post(path, body).then((d) => { toast(okText || t("done")); return d; },
                                (e) => { toast(t("failed", {err: e.message}), true); throw e; });
}

function askToken(error) {
  const dlg = document.getElementById("token-dialog");
  const err = document.getElementById("token-error");
  err.hidden = !error;
  err.textContent = error || "";
  document.getElementById("token-input").value = token;
  if (!dlg.open) dlg.showModal();
}

// -- the event stream --------------------------------------------------------------------------
let streamAbort = null;

async function follow() {
  if (streamAbort) streamAbort.abort();
  const ctl = streamAbort = new AbortController();
  setLive(false, t("connecting"));
  try {
    const r = await fetch("../api/events", {headers: headers(false), cache: "no-store", signal: ctl.signal});
    if (r.status === 401) { setLive(false, t("offline_conn")); askToken(token ? t("token_wrong") : null); return; }
    if (!r.ok || !r.body) throw new Error("HTTP " + r.status);
    setLive(true, t("live"));
    const reader = r.body.getReader();
    const dec = new TextDecoder();
    let buf = "";
    for (;;) {
      const {value, done} = await reader.read();
      if (done) break;
      buf += dec.decode(value, {stream: true}).replace(/\r\n/g, "\n");
      let i;
      while ((i = buf.indexOf("\n\n")) >= 0) {
        const block = buf.slice(0, i);
        buf = buf.slice(i + 2);
        let event = "message";
        const data = [];
        for (const line of block.split("\n")) {
          if (line.startsWith(":")) continue;
          const c = line.indexOf(":");
          const field = c < 0 ? line : line.slice(0, c);
          const val = c < 0 ? "" : line.slice(c + 1).replace(/^ /, "");
          if (field === "event") event = val;
          else if (field === "data") data.push(val);
        }
        if (data.length) {
          try { handle(event, JSON.parse(data.join("\n"))); } catch (e) { console.error("event", event, e); }
        }
      }
    }
  } catch (e) {
    if (ctl.signal.aborted) return;
  }
  if (ctl !== streamAbort) return;
  setLive(false, t("offline_conn"));
  setTimeout(follow, 2000);
}

function setLive(on, text) {
  const el = document.getElementById("live");
  el.className = "live " + (on ? "on" : "off");
  el.textContent = text;
}

function handle(event, d) {
  const room = d.room !== undefined ? state.rooms.get(typeof d.room === "string" ? d.room : d.room.id) : null;
  switch (event) {
    case "snapshot":
      state.rooms = new Map(d.rooms.map((r) => [r.id, r]));
      state.endpoints = d.endpoints;
      state.alerts = d.alerts || [];
      renderAll();
      return;
    case "room_opened":
      state.rooms.set(d.id, d);
      renderRooms();
      break;
    case "room_closed":
      state.rooms.delete(d.room);
      renderRooms();
      break;
    case "joined":
      if (room && d.participant) {
        room.roster = room.roster.filter((p) => p.id !== d.participant.id).concat([d.participant]);
        renderRoster(room);
      }
      break;
    case "left":
      if (room) {
        const p = room.roster.find((x) => x.id === d.id);
        room.roster = room.roster.filter((x) => x.id !== d.id);
        closeChart(d.id);
        renderRoster(room);
        if (p) toast(t("left_ev", {name: p.name || p.id, room: room.name || room.id}));
      }
      break;
    case "speaking":
      if (room) {
        const p = room.roster.find((x) => x.id === d.id);
        if (p) { p.speaking = d.on; markRow(room, p); }
      }
      return;
    case "dominant":
      if (room) {
        for (const p of room.roster) { const was = p.dominant; p.dominant = p.id === d.id; if (was !== p.dominant) markRow(room, p); }
      }
      return;
    case "locked":
      if (room) { room.locked = d.locked; renderRoomHead(room); }
      break;
    case "muted":
      if (room) {
        const p = room.roster.find((x) => x.id === d.id);
        if (p) { p.muted = d.muted; p.muted_out = d.muted_out; renderRoster(room); }
      }
      break;
    case "layout":
      if (room) { room.video = d.video || room.video; if (room.video) room.video.layout = d.layout; renderRoomHead(room); }
      break;
    case "quality":
      for (const [rid, members] of Object.entries(d.rooms)) {
        const r = state.rooms.get(rid);
        if (!r) continue;
        for (const p of r.roster) {
          const q = members[p.id];
          if (!q) continue;
          p.quality = q.quality; p.video_media = q.video_media; p.speaking = q.speaking;
          addPoint(p.id, d.time, q.quality);
          markRow(r, p);
        }
      }
      return;
    case "endpoints":
      if (state.endpoints) {
        const by = new Map(d.changed.map((e) => [e.alias, e]));
        for (const g of state.endpoints.groups) g.endpoints = g.endpoints.map((e) => by.get(e.alias) || e);
        state.endpoints.counts = d.counts;
        renderSites();
        renderSummary();
      }
      return;
    case "alert":
      state.alerts = state.alerts.filter((a) => a.key !== d.key).concat([d]).slice(-50);
      renderAlerts();
      for (const r of state.rooms.values()) renderRoster(r);
      return;
  }
  renderSummary();
}

// -- rendering ---------------------------------------------------------------------------------
function renderAll() {
  document.documentElement.lang = lang;
  document.title = "Cầu — " + t("title");
  for (const el of document.querySelectorAll("[data-t]")) el.textContent = t(el.dataset.t);
  const other = lang === "vi" ? "en" : "vi";
  const btn = document.getElementById("lang");
  btn.textContent = other === "en" ? "English" : "Tiếng Việt";
  btn.setAttribute("aria-label", btn.textContent);
  setLive(!!streamAbort && document.getElementById("live").classList.contains("on"),
          document.getElementById("live").classList.contains("on") ? t("live") : t("offline_conn"));
  renderRooms();
  renderSites();
  renderAlerts();
  renderSummary();
}

function renderSummary() {
  let people = 0;
  for (const r of state.rooms.values()) people += r.roster.length;
  const c = state.endpoints ? state.endpoints.counts : {in_call: 0, registered: 0, offline: 0};
  const total = state.endpoints ? state.endpoints.total : 0;
  document.getElementById("summary").textContent =
    t("summary", {rooms: state.rooms.size, people, online: c.in_call + c.registered, total});
}

function renderRooms() {
  const box = document.getElementById("rooms");
  document.getElementById("no-rooms").hidden = state.rooms.size > 0;
  const keep = new Set(state.rooms.keys());
  for (const card of [...box.children]) if (!keep.has(card.dataset.room)) card.remove();
  for (const room of state.rooms.values()) {
    let card = box.querySelector(`[data-room="${CSS.escape(room.id)}"]`);
    if (!card) {
      card = h("article", {class: "room", dataset: {room: room.id}});
      card.append(h("div", {class: "room-head"}), roomTools(room), h("table", {class: "roster"}),
                  h("div", {class: "charts"}));
      box.append(card);
    } else {
      // labels follow the language
      const tools = card.querySelector(".room-tools");
      tools.replaceWith(roomTools(room, tools));
    }
    renderRoomHead(room);
    renderRoster(room);
  }
}

function renderRoomHead(room) {
  const card = document.querySelector(`#rooms [data-room="${CSS.escape(room.id)}"]`);
  if (!card) return;
  const head = card.querySelector(".room-head");
  head.replaceChildren(...[
    h("h3", {}, room.name || room.id, " ", h("code", {}, room.id)),
    h("span", {class: "count"}, `${room.roster.length}/${room.max_participants} ${t("participants")}`),
    room.locked ? h("span", {class: "badge locked"}, t("locked")) : null,
  ].filter(Boolean));
  const sel = card.querySelector("select.layout");
  if (sel && room.video) sel.value = room.video.layout;
  const lockBtn = card.querySelector("button.lock");
  if (lockBtn) lockBtn.textContent = room.locked ? t("unlock") : t("lock");
}

function roomTools(room, old) {
  const prevInvite = old ? old.querySelector("input.invite").value : "";
  const layouts = room.layouts || ["voice-switched", "cp-2x2", "cp-3x3", "cp-1+5", "cp-1+7"];
  const sel = h("select", {class: "layout", "aria-label": t("layout"),
                           onchange: (e) => act(`rooms/${enc(room.id)}/layout`, {layout: e.target.value})},
                layouts.map((l) => h("option", {value: l}, l === "voice-switched" ? t("vs") : l)));
  if (room.video) sel.value = room.video.layout;
  const list = "invite-list-" + room.id;
  const input = h("input", {class: "invite", type: "text", list, placeholder: t("invite_ph"), value: prevInvite,
                            "aria-label": t("invite")});
  input.value = prevInvite;
  const options = h("datalist", {id: list});
  if (state.endpoints) {
    for (const g of state.endpoints.groups) for (const e of g.endpoints) {
      if (e.state !== "in_call") options.append(h("option", {value: e.alias}, e.name + (e.number ? " · " + e.number : "")));
    }
  }
  const form = h("form", {class: "invite-form", onsubmit: (e) => {
    e.preventDefault();
    const to = input.value.trim();
    if (!to) return;
    toast(t("inviting", {to}));
    post(`rooms/${enc(room.id)}/dial`, {to}).then((d) => { input.value = ""; toast(t("invited", {name: d.name || to})); },
                                                 (err) => toast(t("failed", {err: err.message}), true));
  }}, input, options, h("button", {type: "submit"}, t("invite")));
  return h("div", {class: "room-tools"},
    h("label", {}, t("layout"), " ", sel),
    h("button", {type: "button", class: "lock", onclick: () => {
      const r = state.rooms.get(room.id);
      act(`rooms/${enc(room.id)}/lock`, {locked: !(r && r.locked)});
    }}, room.locked ? t("unlock") : t("lock")),
    h("button", {type: "button", class: "end danger", onclick: () => {
      if (confirm(t("end_confirm", {room: room.name || room.id}))) act(`rooms/${enc(room.id)}/end`, {});
    }}, t("end")),
    form);
}

function enc(s) { return encodeURIComponent(s); }

function fmt(v, digits) { return v === null || v === undefined ? t("none") : Number(v).toFixed(digits); }

function mosClass(m) { return m === null || m === undefined ? "" : m >= 4.0 ? "good" : m >= 3.6 ? "fair" : "poor"; }

function alerting(id) { return state.alerts.some((a) => a.participant === id && a.active !== false); }

function codecs(p, kind) {
  const s = Object.values(p.streams || {}).filter((x) => x.kind === kind);
  if (!s.length) return t("none");
  const rx = s.map((x) => x.rx).filter(Boolean).join(", ");
  const tx = s.map((x) => x.tx).filter(Boolean).join(", ");
  return rx === tx ? rx || tx : `${rx || t("none")} ⇄ ${tx || t("none")}`;
}

function resolution(p) {
  const v = p.video_media;
  if (!v) return "";
  const part = (x) => (x && x.width ? t("res", {w: x.width, h: x.height}) : t("none"));
  return `${part(v.in)} / ${part(v.out)}`;
}

function qualityCell(p) {
  const q = p.quality;
  if (!q) return h("td", {class: "q"}, t("none"));
  const rx = q.rx || {}, tx = q.tx || {};
  return h("td", {class: "q"},
    h("span", {class: "mos " + mosClass(rx.mos), title: "MOS"}, fmt(rx.mos, 2)), " / ",
    h("span", {class: "mos " + mosClass(tx.mos)}, fmt(tx.mos, 2)),
    h("br"),
    h("small", {}, `${t("loss")} ${fmt(rx.loss_pct, 1)} / ${fmt(tx.loss_pct, 1)} · ${t("jitter")} ${fmt(rx.jitter_ms, 0)} / ${fmt(tx.jitter_ms, 0)} · RTT ${fmt(q.rtt_ms, 0)}`));
}

function since(ts) {
  if (!ts) return t("none");
  const d = new Date(ts * 1000);
  return d.toLocaleTimeString(lang === "vi" ? "vi-VN" : "en-GB", {hour: "2-digit", minute: "2-digit"});
}

function row(room, p) {
  const enc_ = p.encryption || {};
  const encCell = h("td", {class: "enc" + (enc_.media ? " on" : "")}, enc_.media || t("plain"), h("br"),
                    h("small", enc_.verified ? {title: t("verified")} : {},
                      (enc_.signalling || "") + (enc_.verified ? " ✓ " + enc_.verified : "")));
  const flags = [];
  if (p.dominant) flags.push(h("span", {class: "badge speaker", title: t("speaker")}, "★"));
  if (p.muted) flags.push(h("span", {class: "badge muted"}, t("muted")));
  if (p.muted_out) flags.push(h("span", {class: "badge muted"}, t("deaf")));
  const base = `rooms/${enc(room.id)}/participants/${enc(p.id)}`;
  const chartOpen = state.charts.has(p.id);
  return h("tr", {dataset: {id: p.id}, class: [p.speaking ? "speaking" : "", alerting(p.id) ? "alert" : ""].join(" ").trim()},
    h("td", {class: "who"}, h("span", {class: "dot", title: t("speaking")}), " ",
      h("strong", {}, p.name || p.id), " ", flags, h("br"), h("small", {}, p.identity || p.remote || "")),
    h("td", {}, p.protocol),
    h("td", {class: "audio"}, codecs(p, "audio")),
    h("td", {class: "video"}, codecs(p, "video"), h("br"), h("small", {}, resolution(p))),
    encCell,
    qualityCell(p),
    h("td", {}, since(p.joined_at)),
    h("td", {class: "acts"},
      h("button", {type: "button", class: "mute-in", onclick: () => act(base + "/mute", {direction: "in", muted: !p.muted})},
        p.muted ? t("unmute_in") : t("mute_in")),
      h("button", {type: "button", class: "mute-out", onclick: () => act(base + "/mute", {direction: "out", muted: !p.muted_out})},
        p.muted_out ? t("unmute_out") : t("mute_out")),
      h("button", {type: "button", class: "chart", onclick: () => toggleChart(room, p)}, chartOpen ? t("hide_chart") : t("chart")),
      h("button", {type: "button", class: "remove danger", onclick: () => {
        if (confirm(t("remove_confirm", {name: p.name || p.id}))) act(base + "/remove", {});
      }}, t("remove"))));
}

function renderRoster(room) {
  const card = document.querySelector(`#rooms [data-room="${CSS.escape(room.id)}"]`);
  if (!card) return;
  const table = card.querySelector("table.roster");
  table.replaceChildren(
    h("thead", {}, h("tr", {}, ["name", "protocol", "audio", "video", "encryption", "quality", "joined", "actions"]
      .map((k) => h("th", {}, t(k))))),
    h("tbody", {}, room.roster.map((p) => row(room, p))));
  renderRoomHead(room);
}

// figures and flags change often: their cells are replaced, the buttons stay where the pointer is
function markRow(room, p) {
  const tr = document.querySelector(`#rooms [data-room="${CSS.escape(room.id)}"] tr[data-id="${CSS.escape(p.id)}"]`);
  if (!tr) return;
  const fresh = [...row(room, p).children];
  tr.className = row(room, p).className;
  const old = [...tr.children];
  for (const i of [0, 3, 5]) old[i].replaceWith(fresh[i]);
}

function renderSites() {
  const box = document.getElementById("sites");
  const e = state.endpoints;
  if (!e) { box.replaceChildren(); return; }
  const offlineOnly = document.getElementById("offline-only").checked;
  const legend = document.getElementById("legend");
  legend.replaceChildren(...["in_call", "registered", "offline"].map((k) =>
    h("span", {class: "site " + k}, h("span", {class: "dot"}), " ", t(k), " ", h("strong", {}, e.counts[k]))));
  box.replaceChildren(...e.groups.map((g) => {
    const online = g.endpoints.filter((x) => x.state !== "offline").length;
    const shown = g.endpoints.filter((x) => !offlineOnly || x.state === "offline");
    if (offlineOnly && !shown.length) return null;
    return h("section", {class: "group" + (online === 0 ? " dark" : ""), dataset: {group: g.id}},
      h("h3", {}, g.name || t("group_none"), " ",
        h("span", {class: "count"}, t("connected", {n: online, total: g.endpoints.length}))),
      h("ul", {}, shown.map((x) => h("li", {class: "site " + x.state, dataset: {alias: x.alias, state: x.state},
                                           title: `${x.alias} · ${x.protocol} · ${t(x.state)}${x.registered ? " (" + x.registered + ")" : ""}`},
        h("span", {class: "dot"}), " ", x.name, x.number ? h("small", {}, " " + x.number) : null))));
  }).filter(Boolean));
}

function renderAlerts() {
  const box = document.getElementById("alerts");
  const list = document.getElementById("alert-list");
  const active = state.alerts.filter((a) => a.active !== false);
  box.hidden = active.length === 0;
  list.replaceChildren(...active.slice().reverse().map((a) =>
    h("li", {class: "alert " + (a.severity || "warning")}, h("time", {}, since(a.time)), " ", a.message)));
}

// -- charts (uPlot) ----------------------------------------------------------------------------
function addPoint(id, time, q) {
  const c = state.charts.get(id);
  if (!c || !q) return;
  const rx = q.rx || {};
  c.data[0].push(time); c.data[1].push(rx.mos ?? null); c.data[2].push(rx.loss_pct ?? null); c.data[3].push(rx.jitter_ms ?? null);
  while (c.data[0].length && c.data[0][0] < time - HOUR) for (const a of c.data) a.shift();
  c.plot.setData(c.data);
}

function closeChart(id) {
  const c = state.charts.get(id);
  if (c) { c.plot.destroy(); c.box.remove(); state.charts.delete(id); }
}

async function toggleChart(room, p) {
  if (state.charts.has(p.id)) { closeChart(p.id); renderRoster(room); return; }
  const card = document.querySelector(`#rooms [data-room="${CSS.escape(room.id)}"] .charts`);
  const box = h("figure", {class: "chart", dataset: {id: p.id}}, h("figcaption", {}, p.name || p.id));
  card.append(box);
  const data = [[], [], [], []];
  try {
    const r = await fetch(`../api/rooms/${enc(room.id)}/participants/${enc(p.id)}/quality`, {headers: headers(false)});
    if (r.ok) {
      const d = await r.json();
      for (const s of d.series) { data[0].push(s.at); data[1].push(s.mos_rx); data[2].push(s.loss_rx); data[3].push(s.jitter_rx); }
      if (d.now && d.now.rx) { data[0].push(d.time); data[1].push(d.now.rx.mos); data[2].push(d.now.rx.loss_pct); data[3].push(d.now.rx.jitter_ms); }
    }
  } catch (e) { /* the live points still come */ }
  const opts = {
    width: Math.min(720, card.clientWidth || 720), height: 200,
    scales: {x: {time: true}, mos: {range: [1, 5]}, ms: {range: (u, lo, hi) => [0, Math.max(10, hi || 0)]}},
    series: [{}, {label: t("mos"), scale: "mos", stroke: "#1b7f3b", width: 2},
             {label: t("loss"), scale: "ms", stroke: "#c0392b", width: 1.5},
             {label: t("jitter"), scale: "ms", stroke: "#2c5aa0", width: 1.5}],
    axes: [{}, {scale: "mos", label: "MOS"}, {scale: "ms", side: 1, label: "% · ms", grid: {show: false}}],
  };
  const plot = new uPlot(opts, data, box);
  state.charts.set(p.id, {plot, data, box});
  renderRoster(room);
}

// -- start ---------------------------------------------------------------------------------------
document.getElementById("lang").addEventListener("click", () => {
  lang = lang === "vi" ? "en" : "vi";
  localStorage.setItem("cau-lang", lang);
  for (const [id, c] of state.charts) {
    const room = [...state.rooms.values()].find((r) => r.roster.some((p) => p.id === id));
    closeChart(id);
    if (room) toggleChart(room, room.roster.find((p) => p.id === id));
  }
  renderAll();
});
document.getElementById("offline-only").addEventListener("change", renderSites);
document.getElementById("token-button").addEventListener("click", () => askToken());
document.getElementById("token-cancel").addEventListener("click", () => document.getElementById("token-dialog").close());
document.getElementById("token-form").addEventListener("submit", (e) => {
  token = document.getElementById("token-input").value.trim();
  sessionStorage.setItem("cau-token", token);
  follow();
});
renderAll();
follow();
