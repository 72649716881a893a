"""The one page ``expblip rate`` answers at ``/``: sign in, rate each face's captions.

Plain HTML and JavaScript, no external files (the kit may run offline). The rater's name is
kept in the browser (``localStorage``) so a reload resumes; the server keeps the progress.
Each caption gets a correctness score (1-10); one caption per face is picked as the most
complete and, with three or more captions, one as the least complete (the paper's protocol);
"Save and next" posts one rating per caption to ``/api/ratings``. Text from the
server is inserted with ``textContent`` only.
"""

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Exp-BLIP: rate the descriptions of a face</title>
<style>
  body { font-family: system-ui, sans-serif; margin: 1.5rem auto; max-width: 56rem;
         padding: 0 1rem; color: #222; }
  h1 { font-size: 1.4rem; margin-bottom: .3rem; }
  #face { max-width: 320px; max-height: 320px; border: 1px solid #ccc; display: block; }
  #captions li { margin: .8rem 0; }
  .text { margin: 0 0 .3rem; }
  #status { min-height: 1.2em; }
  #status.error { color: #b00020; }
  .help { color: #555; font-size: .9rem; }
</style>
</head>
<body>
<h1>Rate the descriptions of a face</h1>
<form id="signin">
  <p class="help">Sign in with your name; your progress is kept under it.</p>
  <label>Name <input id="name" autocomplete="username" maxlength="80" required></label>
  <button id="start" type="submit">Start</button>
</form>
<section id="rating" hidden>
  <p><span id="who"></span> &middot; <span id="progress"></span>
     &middot; <a href="#" id="signout">not you?</a></p>
  <div id="work">
    <img id="face" alt="the face to describe">
    <p class="help">Score each description for correctness (1 = wrong, 10 = fully correct),
      and pick the one that describes the face most completely, and the least completely.</p>
    <ol id="captions"></ol>
    <button id="save" type="button">Save and next</button>
  </div>
  <p id="finished" hidden>All faces are rated. Thank you.</p>
</section>
<p id="status"></p>
<script>
const KEY = "expblip-rater";
const statusLine = document.getElementById("status");
let rater = null, current = null;

function say(text, isError) {
  statusLine.textContent = text;
  statusLine.className = isError ? "error" : "";
}

function showItem(answer) {
  document.getElementById("who").textContent = "Rater " + answer.rater;
  document.getElementById("progress").textContent = answer.done + " of " + answer.total +
    " faces rated";
  current = answer.item;
  document.getElementById("work").hidden = current === null;
  document.getElementById("finished").hidden = current !== null;
  if (current === null) return;
  document.getElementById("face").src = current.image;
  const list = document.getElementById("captions");
  list.replaceChildren();
  current.captions.forEach(c => {
    const li = document.createElement("li");
    li.dataset.caption = c.caption;
    const text = document.createElement("p");
    text.className = "text";
    text.textContent = c.text;
    const score = document.createElement("select");
    score.className = "score";
    score.append(new Option("correctness...", ""));
    for (let v = 1; v <= 10; v++) score.append(new Option(String(v), String(v)));
    if (c.correctness !== null) score.value = String(c.correctness);
    li.append(text, score);
    ["most", "least"].forEach(kind => {
      const pick = document.createElement("input");
      pick.type = "radio"; pick.name = kind; pick.className = kind;
      pick.checked = c.complete === kind;
      const label = document.createElement("label");
      label.append(pick, " " + kind + " complete");
      li.append(" ", label);
    });
    list.append(li);
  });
}

async function loadNext() {
  let reply, body;
  try {
    reply = await fetch("api/next?rater=" + encodeURIComponent(rater));
    body = await reply.json();
  } catch (e) { say("The server did not answer: " + e, true); return; }
  if (!reply.ok) { say("Error " + reply.status + ": " + body.error, true); return; }
  document.getElementById("signin").hidden = true;
  document.getElementById("rating").hidden = false;
  showItem(body);
  say(body.item === null ? "" : "Face " + (body.done + 1) + " of " + body.total + ".", false);
}

async function save() {
  const rows = Array.from(document.querySelectorAll("#captions li"));
  if (rows.some(li => !li.querySelector(".score").value)) {
    say("Give every description a correctness score.", true); return;
  }
  const picked = kind => rows.findIndex(li => li.querySelector("." + kind).checked);
  if (picked("most") < 0) { say("Pick the most complete description.", true); return; }
  if (rows.length > 2 && picked("least") < 0) {
    say("Pick the least complete description.", true); return;
  }
  if (picked("most") === picked("least")) {
    say("The most and the least complete must be different descriptions.", true); return;
  }
  for (const li of rows) {
    const kind = li.querySelector(".most").checked ? "most" :
                 li.querySelector(".least").checked ? "least" : null;
    const rating = {rater: rater, item: current.item, caption: li.dataset.caption,
                    correctness: Number(li.querySelector(".score").value), complete: kind};
    let reply, body;
    try {
      reply = await fetch("api/ratings", {method: "POST", body: JSON.stringify(rating),
                                          headers: {"Content-Type": "application/json"}});
      body = await reply.json();
    } catch (e) { say("Not saved, the server did not answer: " + e, true); return; }
    if (!reply.ok) { say("Not saved: " + body.error, true); return; }
  }
  await loadNext();
}

document.getElementById("signin").addEventListener("submit", e => {
  e.preventDefault();
  const name = document.getElementById("name").value.trim();
  if (!name) return;
  rater = name;
  localStorage.setItem(KEY, name);
  loadNext();
});
document.getElementById("save").addEventListener("click", save);
document.getElementById("signout").addEventListener("click", e => {
  e.preventDefault();
  localStorage.removeItem(KEY);
  location.reload();
});
rater = localStorage.getItem(KEY);
if (rater) loadNext(); else say("Sign in to start.", false);
</script>
</body>
</html>
"""
