// Cầu join page: a browser joins a room over WHIP (RFC 9725) on this same origin.
// Plain JavaScript, no build step, nothing from another site.
"use strict";

const T = {
  vi: {
    title: "Vào phòng họp", room: "Số phòng", pin: "Mã PIN (nếu có)", name: "Tên hiển thị", camera: "Camera",
    mic: "Micrô", join: "Vào phòng", mutemic: "Tắt micrô", unmutemic: "Bật micrô", mutecam: "Tắt camera",
    unmutecam: "Bật camera", leave: "Rời phòng", tapsound: "Chạm để bật âm thanh", lang: "English",
    nodevices: "Không dùng được camera hoặc micrô: ", connecting: "Đang kết nối…", connected: "Đã kết nối",
    disconnected: "Mất kết nối, đang chờ kết nối lại…", failed: "Kết nối thất bại", left: "Đã rời phòng",
    needpin: "Phòng này cần mã PIN.", wrongpin: "Sai mã PIN.", noroom: "Không có phòng số này.",
    full: "Phòng đã đầy.", toomany: "Nhập sai PIN quá nhiều lần, hãy đợi một phút.", codec: "Trình duyệt không có mã hoá chung với máy chủ: ",
    server: "Máy chủ từ chối: ", network: "Không kết nối được máy chủ.", nocam: "(không có camera)",
    nomic: "(không có micrô)", good: "Tốt", fair: "Trung bình", poor: "Kém", insecure: "Trang cần HTTPS để dùng camera và micrô."
  },
  en: {
    title: "Join a meeting", room: "Room number", pin: "PIN (if any)", name: "Your name", camera: "Camera",
    mic: "Microphone", join: "Join", mutemic: "Mute mic", unmutemic: "Unmute mic", mutecam: "Stop camera",
    unmutecam: "Start camera", leave: "Leave", tapsound: "Tap to turn the sound on", lang: "Tiếng Việt",
    nodevices: "Cannot use the camera or microphone: ", connecting: "Connecting…", connected: "Connected",
    disconnected: "Connection lost, waiting for it to come back…", failed: "Connection failed", left: "You left the meeting",
    needpin: "This room needs a PIN.", wrongpin: "Wrong PIN.", noroom: "There is no room with this number.",
    full: "The room is full.", toomany: "Too many wrong PINs: wait a minute.", codec: "Your browser and the server share no codec: ",
    server: "The server refused: ", network: "Cannot reach the server.", nocam: "(no camera)",
    nomic: "(no microphone)", good: "Good", fair: "Fair", poor: "Poor", insecure: "This page needs HTTPS for the camera and microphone."
  }
};
let lang = localStorage.getItem("cau-lang") || "vi";
const $ = (id) => document.getElementById(id);
const t = (k) => (T[lang] && T[lang][k]) || T.vi[k] || k;

function applyLang() {
  document.documentElement.lang = lang;
  document.querySelectorAll("[data-t]").forEach((el) => { el.textContent = t(el.dataset.t); });
  $("lang").textContent = t("lang");
  document.title = "Cầu — " + t("title");
  if (micTrack()) $("mute-mic").textContent = micTrack().enabled ? t("mutemic") : t("unmutemic");
  if (camTrack()) $("mute-cam").textContent = camTrack().enabled ? t("mutecam") : t("unmutecam");
}
$("lang").onclick = () => { lang = lang === "vi" ? "en" : "vi"; localStorage.setItem("cau-lang", lang); applyLang(); };

let local = null;        // MediaStream from the camera and microphone
let pc = null;
let resource = null;     // WHIP session URL
let etag = null;
let token = null;
let statsTimer = null;
const micTrack = () => local && local.getAudioTracks()[0];
const camTrack = () => local && local.getVideoTracks()[0];

function showError(msg) { const e = $("error"); e.textContent = msg; e.hidden = !msg; }
function setState(key) { $("state").textContent = key ? t(key) : ""; }

// -- devices and preview ---------------------------------------------------------------------
async function openDevices() {
  if (!window.isSecureContext || !navigator.mediaDevices) { showError(t("insecure")); return; }
  const cam = $("camera").value, mic = $("mic").value;
  const want = {
    audio: mic ? { deviceId: { exact: mic } } : true,
    video: cam ? { deviceId: { exact: cam }, width: { ideal: 1280 }, height: { ideal: 720 } }
               : { width: { ideal: 1280 }, height: { ideal: 720 } },
  };
  if (local) local.getTracks().forEach((tr) => tr.stop());
  try {
    local = await navigator.mediaDevices.getUserMedia(want);
  } catch (err) {
    try { local = await navigator.mediaDevices.getUserMedia({ audio: true }); }   // no camera: sound only
    catch (err2) { showError(t("nodevices") + (err2.message || err2.name)); local = null; return; }
  }
  showError("");
  $("preview").srcObject = local;
  $("preview").play().catch(() => {});
  await listDevices();
}

async function listDevices() {
  const devices = await navigator.mediaDevices.enumerateDevices();
  for (const [kind, sel, none] of [["videoinput", "camera", "nocam"], ["audioinput", "mic", "nomic"]]) {
    const el = $(sel);
    const current = (kind === "videoinput" ? camTrack() : micTrack());
    const chosen = current ? current.getSettings().deviceId : "";
    el.textContent = "";
    const list = devices.filter((d) => d.kind === kind);
    if (!list.length) { el.add(new Option(t(none), "")); continue; }
    list.forEach((d, i) => el.add(new Option(d.label || `${kind} ${i + 1}`, d.deviceId, false, d.deviceId === chosen)));
  }
}
$("camera").onchange = openDevices;
$("mic").onchange = openDevices;

// -- codecs: H.264 first on Safari (hardware decoding, battery), VP8 first elsewhere ---------------
const isSafari = /^((?!chrome|chromium|crios|fxios|android).)*safari/i.test(navigator.userAgent);

function preferCodecs(transceiver) {
  if (!window.RTCRtpReceiver || !RTCRtpReceiver.getCapabilities || !transceiver.setCodecPreferences) return;
  const caps = RTCRtpReceiver.getCapabilities("video");
  if (!caps) return;
  const first = isSafari ? "video/h264" : "video/vp8";
  const isH264cb = (c) => c.mimeType.toLowerCase() === "video/h264" && /packetization-mode=1/.test(c.sdpFmtpLine || "")
    && /profile-level-id=42/i.test(c.sdpFmtpLine || "");
  const ranked = [
    ...caps.codecs.filter((c) => c.mimeType.toLowerCase() === first && (first !== "video/h264" || isH264cb(c))),
    ...caps.codecs.filter((c) => c.mimeType.toLowerCase() !== first && (c.mimeType.toLowerCase() === "video/vp8" || isH264cb(c))),
    ...caps.codecs.filter((c) => c.mimeType.toLowerCase() === "video/rtx"),
  ];
  try { if (ranked.length) transceiver.setCodecPreferences(ranked); } catch (e) { /* keep the browser's order */ }
}

// -- joining ---------------------------------------------------------------------------------
function refusal(status, body) {
  if (status === 401) return t("needpin");
  if (status === 403) return t("wrongpin");
  if (status === 404) return t("noroom");
  if (status === 409) return t("full");
  if (status === 429) return t("toomany");
  if (status === 406) return t("codec") + body;
  return t("server") + `${status} ${body}`;
}

function gathered(pc, ms) {
  return new Promise((resolve) => {
    if (pc.iceGatheringState === "complete") return resolve();
    const done = () => { if (pc.iceGatheringState === "complete") resolve(); };
    pc.addEventListener("icegatheringstatechange", done);
    setTimeout(resolve, ms);
  });
}

async function join(ev) {
  ev.preventDefault();
  showError("");
  const room = $("room").value.trim();
  const name = $("name").value.trim();
  token = $("pin").value.trim() || null;
  localStorage.setItem("cau-name", name);
  if (!local) await openDevices();
  $("join").disabled = true;
  setState("connecting");
  let iceServers = [];
  try { iceServers = (await (await fetch("/webrtc-config.json")).json()).iceServers || []; } catch (e) { /* none */ }
  pc = new RTCPeerConnection({ iceServers, bundlePolicy: "max-bundle" });
  const pending = [];
  pc.onicecandidate = (e) => { if (resource) trickle(e.candidate); else pending.push(e.candidate); };
  const mic = micTrack(), cam = camTrack();
  pc.addTransceiver(mic || "audio", { direction: mic ? "sendrecv" : "recvonly" });
  const vt = pc.addTransceiver(cam || "video", { direction: cam ? "sendrecv" : "recvonly" });
  preferCodecs(vt);
  const remote = new MediaStream();
  pc.ontrack = (e) => {
    remote.addTrack(e.track);
    const v = $("remote");
    if (v.srcObject !== remote) v.srcObject = remote;
    v.play().catch(() => { $("unmute-audio").hidden = false; });   // iOS without a gesture: ask for one
  };
  pc.onconnectionstatechange = () => {
    const s = pc.connectionState;
    if (s === "connected") setState("connected");
    else if (s === "disconnected") setState("disconnected");   // ICE may come back by itself
    else if (s === "failed") { setState("failed"); showError(t("failed")); }
  };
  await pc.setLocalDescription(await pc.createOffer());
  await gathered(pc, 1500);
  let res;
  try {
    res = await fetch(`/whip/${encodeURIComponent(room)}?name=${encodeURIComponent(name)}`, {
      method: "POST", body: pc.localDescription.sdp,
      headers: Object.assign({ "Content-Type": "application/sdp" }, token ? { Authorization: `Bearer ${token}` } : {}),
    });
  } catch (e) { fail(t("network")); return; }
  const body = await res.text();
  if (res.status !== 201) { fail(refusal(res.status, body.trim())); return; }
  resource = new URL(res.headers.get("Location"), location.href).href;
  etag = res.headers.get("ETag");
  await pc.setRemoteDescription({ type: "answer", sdp: body });
  pending.forEach(trickle);
  history.replaceState(null, "", `/join/${encodeURIComponent(room)}`);
  $("setup").hidden = true;
  $("call").hidden = false;
  applyLang();
  statsTimer = setInterval(showQuality, 2000);
}

function fail(msg) {
  showError(msg);
  setState("");
  $("join").disabled = false;
  if (pc) { pc.close(); pc = null; }
}

let trickleBatch = [];
let trickleTimer = null;
function trickle(candidate) {
  trickleBatch.push(candidate);
  if (!trickleTimer) trickleTimer = setTimeout(sendTrickle, 100);
}
async function sendTrickle() {
  trickleTimer = null;
  const batch = trickleBatch.splice(0);
  if (!resource || !batch.length || !pc) return;
  const sdp = pc.localDescription.sdp;
  const ufrag = (sdp.match(/a=ice-ufrag:(.*)/) || [])[1];
  const pwd = (sdp.match(/a=ice-pwd:(.*)/) || [])[1];
  let frag = `a=ice-ufrag:${ufrag}\r\na=ice-pwd:${pwd}\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\n`;
  for (const c of batch) frag += c && c.candidate ? `a=${c.candidate}\r\n` : "a=end-of-candidates\r\n";
  try {
    await fetch(resource, { method: "PATCH", body: frag, headers: Object.assign(
      { "Content-Type": "application/trickle-ice-sdpfrag", "If-Match": etag || "*" },
      token ? { Authorization: `Bearer ${token}` } : {}) });
  } catch (e) { /* candidates are a bonus: the ones in the offer usually do */ }
}

async function leave() {
  clearInterval(statsTimer);
  if (resource) {
    try { await fetch(resource, { method: "DELETE", headers: token ? { Authorization: `Bearer ${token}` } : {} }); }
    catch (e) { /* the server ends the session when ICE goes away */ }
  }
  resource = null;
  if (pc) { pc.close(); pc = null; }
  $("call").hidden = true;
  $("setup").hidden = false;
  $("join").disabled = false;
  setState("left");
}
$("leave").onclick = leave;
window.addEventListener("pagehide", () => {
  if (resource) fetch(resource, { method: "DELETE", keepalive: true,
    headers: token ? { Authorization: `Bearer ${token}` } : {} });
});

$("mute-mic").onclick = () => {
  const m = micTrack(); if (!m) return;
  m.enabled = !m.enabled;
  $("mute-mic").classList.toggle("off", !m.enabled);
  applyLang();
};
$("mute-cam").onclick = () => {
  const c = camTrack(); if (!c) return;
  c.enabled = !c.enabled;
  $("mute-cam").classList.toggle("off", !c.enabled);
  applyLang();
};
$("unmute-audio").onclick = () => { $("remote").play(); $("unmute-audio").hidden = true; };

// -- quality from getStats: loss and jitter of what we receive, round-trip time -------------------
const last = {};
async function showQuality() {
  if (!pc) return;
  const stats = await pc.getStats();
  let lost = 0, got = 0, jitter = 0, rtt = null, fps = 0, size = "";
  stats.forEach((s) => {
    if (s.type === "inbound-rtp") {
      const prev = last[s.id] || { packetsLost: 0, packetsReceived: 0 };
      lost += Math.max(0, s.packetsLost - prev.packetsLost);
      got += Math.max(0, s.packetsReceived - prev.packetsReceived);
      last[s.id] = { packetsLost: s.packetsLost, packetsReceived: s.packetsReceived };
      if (s.kind === "audio" && s.jitter) jitter = s.jitter * 1000;
      if (s.kind === "video") { fps = s.framesPerSecond || 0; size = s.frameWidth ? `${s.frameWidth}×${s.frameHeight}` : ""; }
    }
    if (s.type === "candidate-pair" && s.nominated && s.currentRoundTripTime !== undefined) rtt = s.currentRoundTripTime * 1000;
  });
  const loss = got + lost ? (100 * lost) / (got + lost) : 0;
  const grade = loss < 1 && jitter < 30 && (rtt === null || rtt < 250) ? "good" : loss < 5 && jitter < 60 ? "fair" : "poor";
  const q = $("quality");
  q.className = "quality " + grade;
  q.textContent = `${t(grade)} · ${loss.toFixed(1)} % · ${jitter.toFixed(0)} ms${rtt !== null ? ` · RTT ${rtt.toFixed(0)} ms` : ""}${size ? ` · ${size} ${fps.toFixed(0)} fps` : ""}`;
  q.dataset.loss = loss.toFixed(2);
}

// -- start ---------------------------------------------------------------------------------------
(function start() {
  const m = location.pathname.match(/^\/join\/([^/]+)/);
  let fromLink = new URLSearchParams(location.search).get("room");
  if (m) { try { fromLink = decodeURIComponent(m[1]); } catch (e) { fromLink = ""; } }
  if (fromLink) $("room").value = fromLink;
  $("name").value = localStorage.getItem("cau-name") || "";
  $("form").addEventListener("submit", join);
  applyLang();
  openDevices();
})();
