"""The one page ``expblip serve`` answers at ``/``: pick or drop a photo, see its faces.

Plain HTML and JavaScript, no external files (the server may run offline). The page posts the
photo to ``/v1/describe`` and draws the boxes, the 5 landmarks and each face's number on a
canvas; the descriptions are listed under it. Text from the server is inserted with
``textContent`` only.
"""

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Exp-BLIP: describe the faces in a photo</title>
<style>
  body { font-family: system-ui, sans-serif; margin: 1.5rem auto; max-width: 60rem;
         padding: 0 1rem; color: #222; }
  h1 { font-size: 1.4rem; margin-bottom: .3rem; }
  #drop { border: 2px dashed #888; border-radius: 8px; padding: 1.2rem; text-align: center;
          background: #f6f6f6; }
  #drop.over { background: #e0f0ff; border-color: #3a7bd5; }
  #key-row { margin-top: .6rem; font-size: .9rem; }
  #status { margin: .8rem 0; min-height: 1.2em; }
  #status.error { color: #b00020; }
  canvas { max-width: 100%; border: 1px solid #ccc; display: none; }
  #faces li { margin: .4rem 0; }
  .caption { font-weight: 600; }
  .meta { color: #555; font-size: .9rem; }
</style>
</head>
<body>
<h1>Describe the faces in a photo</h1>
<div id="drop">
  <p>Drop a photo here, or <label><input id="file" type="file" accept="image/*"></label></p>
</div>
<div id="key-row" hidden><label>API key <input id="key" type="password" size="30"></label></div>
<p id="status"></p>
<canvas id="canvas"></canvas>
<ol id="faces"></ol>
<script>
const colors = ["#ff4040", "#40c8ff", "#ffc800", "#78ff78", "#ff78ff", "#ffa03c"];
const statusLine = document.getElementById("status");
const list = document.getElementById("faces");
const canvas = document.getElementById("canvas");

function say(text, isError) {
  statusLine.textContent = text;
  statusLine.className = isError ? "error" : "";
}

fetch("health").then(r => r.json()).then(h => {
  if (h.auth) document.getElementById("key-row").hidden = false;
  say("Model " + h.model + ", detector " + h.detector + ". Choose a photo.", false);
}).catch(() => say("The server did not answer /health.", true));

function draw(bitmap, faces) {
  canvas.width = bitmap.width; canvas.height = bitmap.height;
  canvas.style.display = "block";
  const ctx = canvas.getContext("2d");
  ctx.drawImage(bitmap, 0, 0);
  const unit = Math.max(bitmap.width, bitmap.height) / 512;
  faces.forEach((face, i) => {
    const [x, y, w, h] = face.box;
    ctx.strokeStyle = ctx.fillStyle = colors[i % colors.length];
    ctx.lineWidth = Math.max(2, 2 * unit);
    ctx.strokeRect(x, y, w, h);
    (face.landmarks || []).forEach(([px, py]) => {
      ctx.beginPath(); ctx.arc(px, py, Math.max(2, 2.5 * unit), 0, 2 * Math.PI); ctx.fill();
    });
    ctx.font = Math.round(16 * unit) + "px sans-serif";
    ctx.fillText(String(i + 1), x + 3 * unit, y - 4 * unit > 10 ? y - 4 * unit : y + 16 * unit);
  });
}

function listFaces(faces) {
  list.replaceChildren();
  faces.forEach((face, i) => {
    const item = document.createElement("li");
    const caption = document.createElement("div");
    caption.className = "caption";
    caption.style.color = colors[i % colors.length];
    caption.textContent = face.caption;
    const meta = document.createElement("div");
    meta.className = "meta";
    const conf = face.confidence == null ? "n/a" : face.confidence.toFixed(3);
    meta.textContent = "confidence " + conf +
      "; AUs: " + (face.aus.length ? face.aus.join(", ") : "none named") +
      "; emotions: " + (face.emotions.length ? face.emotions.join(", ") : "none named");
    item.append(caption, meta);
    list.append(item);
  });
}

async function describe(file) {
  if (!file) return;
  list.replaceChildren();
  say("Describing " + file.name + " ...", false);
  let bitmap;
  try { bitmap = await createImageBitmap(file); }
  catch (e) { say("This browser cannot show " + file.name + "; sending it anyway.", false); }
  const form = new FormData();
  form.append("image", file, file.name);
  const headers = {};
  const key = document.getElementById("key").value;
  if (key) headers["X-API-Key"] = key;
  let reply, body;
  try {
    reply = await fetch("v1/describe", {method: "POST", body: form, headers: headers});
    body = await reply.json();
  } catch (e) { say("The request failed: " + e, true); return; }
  if (!reply.ok) { say("Error " + reply.status + ": " + body.error, true); return; }
  if (bitmap) draw(bitmap, body.faces);
  listFaces(body.faces);
  const n = body.faces.length;
  say(n + (n === 1 ? " face" : " faces") + " described in " + body.timing_ms.total +
      " ms (model " + body.model + ", detector " + body.detector + ").", false);
}

document.getElementById("file").addEventListener("change", e => describe(e.target.files[0]));
const drop = document.getElementById("drop");
["dragenter", "dragover"].forEach(t => drop.addEventListener(t, e => {
  e.preventDefault(); drop.classList.add("over"); }));
["dragleave", "drop"].forEach(t => drop.addEventListener(t, e => {
  e.preventDefault(); drop.classList.remove("over"); }));
drop.addEventListener("drop", e => describe(e.dataTransfer.files[0]));
</script>
</body>
</html>
"""
