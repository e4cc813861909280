"""The web page of ``emofuse serve``: upload a file or record in the browser, see the probabilities.

Plain HTML and JavaScript, no external assets (the service runs offline). Recording captures PCM with the Web Audio
API and encodes a 16-bit WAV in the page, so the server decodes it like any upload. ``/?selftest`` posts a
synthetic one-second tone on load (used by the headless-browser test).
"""

from __future__ import annotations

__all__ = ["PAGE"]

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>emofuse</title>
<style>
 body { font-family: system-ui, sans-serif; max-width: 46rem; margin: 2rem auto; padding: 0 1rem; color: #222; }
 h1 { font-size: 1.4rem; } .muted { color: #666; font-size: .9rem; }
 fieldset { border: 1px solid #ccc; border-radius: 6px; margin: 1rem 0; }
 input[type=text] { width: 100%; box-sizing: border-box; padding: .4rem; }
 button { padding: .4rem 1rem; margin: .4rem .4rem 0 0; }
 .row { display: flex; align-items: center; margin: .25rem 0; }
 .row .name { width: 8rem; } .row .track { flex: 1; background: #eee; height: 1.1rem; border-radius: 3px; }
 .row .fill { background: #3a7bd5; height: 100%; border-radius: 3px; } .row .p { width: 4rem; text-align: right; }
 .best .fill { background: #d5573a; } #error { color: #b00; }
</style>
</head>
<body data-state="idle">
<h1>emofuse <span id="model" class="muted"></span></h1>
<p class="muted" id="about">Loading the model card…</p>
<fieldset>
 <legend>Audio</legend>
 <input type="file" id="file" accept="audio/*,video/*">
 <div><button id="rec">Record</button><button id="stop" disabled>Stop</button>
 <span id="recinfo" class="muted"></span></div>
</fieldset>
<fieldset>
 <legend>Transcript (optional: without it the model transcribes, if it reads text)</legend>
 <input type="text" id="text" placeholder="what was said">
</fieldset>
<button id="go">Predict</button>
<p id="error"></p>
<div id="result"></div>
<script>
"use strict";
let recorded = null, ctx = null, node = null, stream = null, chunks = [];
const $ = (id) => document.getElementById(id);

function encodeWav(samples, rate) {
  const buf = new ArrayBuffer(44 + samples.length * 2), v = new DataView(buf);
  const str = (o, s) => { for (let i = 0; i < s.length; i++) v.setUint8(o + i, s.charCodeAt(i)); };
  str(0, "RIFF"); v.setUint32(4, 36 + samples.length * 2, true); str(8, "WAVE"); str(12, "fmt ");
  v.setUint32(16, 16, true); v.setUint16(20, 1, true); v.setUint16(22, 1, true); v.setUint32(24, rate, true);
  v.setUint32(28, rate * 2, true); v.setUint16(32, 2, true); v.setUint16(34, 16, true); str(36, "data");
  v.setUint32(40, samples.length * 2, true);
  for (let i = 0; i < samples.length; i++) {
    const s = Math.max(-1, Math.min(1, samples[i])); v.setInt16(44 + i * 2, s < 0 ? s * 0x8000 : s * 0x7fff, true);
  }
  return new Blob([buf], { type: "audio/wav" });
}

function show(res) {
  const out = $("result"); out.innerHTML = "";
  const head = document.createElement("h2");
  head.id = "label"; head.textContent = res.label !== null ? res.label : "values: " + (res.values || []).join(", ");
  out.appendChild(head);
  const probs = res.probabilities || {};
  for (const [name, p] of Object.entries(probs)) {
    const row = document.createElement("div");
    row.className = "row" + (name === res.label ? " best" : ""); row.dataset.cls = name;
    row.innerHTML = '<span class="name"></span><span class="track"><div class="fill"></div></span>' +
      '<span class="p"></span>';
    row.querySelector(".name").textContent = name;
    row.querySelector(".fill").style.width = (100 * p).toFixed(1) + "%";
    row.querySelector(".p").textContent = p.toFixed(3);
    out.appendChild(row);
  }
  if (res.transcript) {
    const t = document.createElement("p"); t.className = "muted";
    t.textContent = (res.from_asr ? "transcript (speech recognition): " : "transcript: ") + res.transcript;
    out.appendChild(t);
  }
  document.body.dataset.state = "done";
}

async function send(blob, name) {
  $("error").textContent = ""; document.body.dataset.state = "busy";
  const form = new FormData(); form.append("audio", blob, name);
  const text = $("text").value.trim(); if (text) form.append("text", text);
  try {
    const r = await fetch("/predict", { method: "POST", body: form });
    const body = await r.json();
    if (!r.ok) {
      $("error").textContent = "error " + r.status + ": " + body.detail; document.body.dataset.state = "error"; return;
    }
    show(body);
  } catch (e) { $("error").textContent = String(e); document.body.dataset.state = "error"; }
}

$("go").onclick = () => {
  const f = $("file").files[0];
  if (recorded) send(recorded, "recording.wav"); else if (f) send(f, f.name);
  else $("error").textContent = "choose a file or record first";
};
$("file").onchange = () => { recorded = null; $("recinfo").textContent = ""; };
$("rec").onclick = async () => {
  try { stream = await navigator.mediaDevices.getUserMedia({ audio: true }); }
  catch (e) { $("error").textContent = "no microphone: " + e; return; }
  ctx = new AudioContext(); chunks = [];
  const src = ctx.createMediaStreamSource(stream); node = ctx.createScriptProcessor(4096, 1, 1);
  node.onaudioprocess = (e) => chunks.push(new Float32Array(e.inputBuffer.getChannelData(0)));
  src.connect(node); node.connect(ctx.destination);
  $("rec").disabled = true; $("stop").disabled = false; $("recinfo").textContent = "recording…";
};
$("stop").onclick = () => {
  node.disconnect(); stream.getTracks().forEach((t) => t.stop());
  const n = chunks.reduce((a, c) => a + c.length, 0), all = new Float32Array(n); let o = 0;
  for (const c of chunks) { all.set(c, o); o += c.length; }
  recorded = encodeWav(all, ctx.sampleRate); ctx.close();
  $("rec").disabled = false; $("stop").disabled = true;
  $("recinfo").textContent = "recorded " + (n / ctx.sampleRate).toFixed(1) + " s";
};

fetch("/card").then((r) => r.json()).then((c) => {
  $("model").textContent = c.model_name;
  const caps = c.capabilities || {};
  $("about").textContent = "reads " + (caps.modalities || []).join(" + ") + "; classes: " +
    ((c.classes || []).join(", ") || "(regression)") + "; limits: " + (c.limits.max_bytes / 1048576).toFixed(0) +
    " MB, " + c.limits.max_seconds + " s";
}).then(() => {
  if (location.search.includes("selftest")) {
    const rate = 16000, x = new Float32Array(rate);
    for (let i = 0; i < rate; i++) x[i] = 0.3 * Math.sin(2 * Math.PI * 220 * i / rate);
    $("text").value = "this is a self test";
    send(encodeWav(x, rate), "selftest.wav");
  }
});
</script>
</body>
</html>
"""
