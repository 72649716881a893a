"""`expblip rate` as a real process: kill -9 while a rater works, restart, resume; the page in
headless Chromium with two raters at once (rate, reload, resume)."""
import json
import signal
import sqlite3
import urllib.request

from lavis_ext.cli import build_parser, main
from lavis_ext.rate.cli import open_kit
from lavis_ext.serve.load import ServerProcess
from support.chromium import Chromium, chromium_binary
from support.rating_kit import write_kit


def get(url):
    with urllib.request.urlopen(url, timeout=30) as reply:
        return json.load(reply)


def post(url, body):
    request = urllib.request.Request(url, json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as reply:
        return json.load(reply)


def kit_args(kit_files, out):
    return [*(f"--pred={p}" for p in kit_files.preds.values()), "--ann", str(kit_files.ann),
            "--images", str(kit_files.images), "--out", str(out)]


def test_kill_9_loses_no_submitted_rating(kit_files, tmp_path, capsys):
    out = tmp_path / "ratings.sqlite"
    server = ServerProcess(kit_args(kit_files, out), log_path=str(tmp_path / "1.log"),
                           command="rate")
    submitted = []
    try:
        server.wait_ready(60)
        for _ in range(3):
            item = get(server.url + "/api/next?rater=ana")["item"]
            for caption, score in zip(item["captions"], (3, 8)):
                post(server.url + "/api/ratings", {
                    "rater": "ana", "item": item["item"], "caption": caption["caption"],
                    "correctness": score, "complete": "most" if score == 8 else "least"})
                submitted.append((item["item"], caption["caption"], score))
        half = get(server.url + "/api/next?rater=ana")["item"]  # ana is on her 4th face
        post(server.url + "/api/ratings", {"rater": "ana", "item": half["item"],
                                           "caption": half["captions"][0]["caption"],
                                           "correctness": 6, "complete": None})
        submitted.append((half["item"], half["captions"][0]["caption"], 6))
        server.process.send_signal(signal.SIGKILL)
        assert server.process.wait(30) == -signal.SIGKILL
    finally:
        server.stop()
    # Every rating answered 200 is in the file (a fresh reader, the WAL not checkpointed).
    with sqlite3.connect(out) as conn:
        stored = conn.execute("SELECT COUNT(*) FROM ratings WHERE rater='ana'").fetchone()[0]
    assert stored == len(submitted) == 7
    # The same command again: the same kit; ana resumes on the half-rated face.
    again = ServerProcess(kit_args(kit_files, out), log_path=str(tmp_path / "2.log"),
                          command="rate")
    try:
        again.wait_ready(60)
        resumed = get(again.url + "/api/next?rater=ana")
        assert resumed["done"] == 3 and resumed["item"]["item"] == half["item"]
        scores = {c["caption"]: c["correctness"] for c in resumed["item"]["captions"]}
        assert scores[half["captions"][0]["caption"]] == 6
        assert list(scores.values()).count(None) == 1
    finally:
        again.stop()
    assert "ratings by 1 raters so far" in (tmp_path / "2.log").read_text()
    capsys.readouterr()
    assert main(["rate", "--report", "--out", str(out)]) == 0
    report = capsys.readouterr().out
    assert report.startswith("7 ratings by 1 raters on 4 of 12 items; 3 most- and 3 "
                             "least-complete picks")


def test_restart_with_other_inputs_is_refused(kit_files, tmp_path, capsys):
    out = tmp_path / "ratings.sqlite"
    args = build_parser("rate").parse_args(["rate", *kit_args(kit_files, out)])
    open_kit(args)
    assert "12 items from 2 models (bp4d 6, disfa 3, rafdb 3); skipped 3 records" in \
        capsys.readouterr().out
    assert main(["rate", "--out", str(out), "--port", "70000"]) == 2
    assert "--port 70000: expected 0-65535" in capsys.readouterr().err
    assert main(["rate", "--out", str(out), "--ann", str(kit_files.ann)]) == 2
    assert "--pred, --ann and --images go together" in capsys.readouterr().err
    code = main(["rate", *kit_args(kit_files, out), "--sample", "5"])
    err = capsys.readouterr().err
    assert code == 2 and "holds a kit built from other" in err


def test_two_raters_in_headless_chromium_rate_reload_and_resume(tmp_path):
    binary = chromium_binary()
    kit_files = write_kit(tmp_path / "kit", models=("mix", "cat", "exp"))
    out = tmp_path / "ratings.sqlite"
    server = ServerProcess([*kit_args(kit_files, out), "--sample", "4"],
                           log_path=str(tmp_path / "server.log"), command="rate")
    browsers = []
    try:
        server.wait_ready(60)
        for name in ("ana", "bea"):
            browser = Chromium(binary, tmp_path / f"profile-{name}")
            browsers.append(browser)
            browser.call("Page.navigate", url=server.url + "/")
            browser.wait_for("document.readyState === 'complete' && "
                             "document.getElementById('status').textContent"
                             ".includes('Sign in')")
            browser.evaluate(f"document.getElementById('name').value = '{name}';"
                             "document.getElementById('start').click()")
        seen = {}
        for browser, name, score in ((browsers[0], "ana", "7"), (browsers[1], "bea", "4")):
            browser.wait_for("document.getElementById('progress').textContent === "
                             "'0 of 4 faces rated' && document.getElementById('face').complete"
                             " && document.getElementById('face').naturalWidth === 48")
            seen[name] = browser.evaluate("document.querySelector('#captions li')"
                                          ".dataset.caption")
            # Saving without both picks is refused on the page, nothing is posted.
            browser.evaluate(f"document.querySelectorAll('.score').forEach(s => "
                             f"s.value = '{score}'); document.getElementById('save').click()")
            browser.wait_for("document.getElementById('status').textContent"
                             ".includes('Pick the most complete')")
            browser.evaluate("document.querySelectorAll('.most')[1].checked = true;"
                             "document.getElementById('save').click()")
            browser.wait_for("document.getElementById('status').textContent"
                             ".includes('Pick the least complete')")
            browser.evaluate("document.querySelectorAll('.least')[2].checked = true;"
                             "document.getElementById('save').click()")
            browser.wait_for("document.getElementById('progress').textContent === "
                             "'1 of 4 faces rated'")
        # A reload signs the rater in again from the browser and resumes at face 2.
        for browser, name in zip(browsers, ("ana", "bea")):
            browser.call("Page.reload")
            browser.wait_for("document.getElementById('progress').textContent === "
                             "'1 of 4 faces rated'")
            assert browser.evaluate("document.getElementById('who').textContent") == \
                f"Rater {name}"
            shown = browser.evaluate("Array.from(document.querySelectorAll('#captions li'))"
                                     ".map(li => li.dataset.caption)")
            assert seen[name] not in shown
    finally:
        for browser in browsers:
            browser.close()
        server.stop()
    with sqlite3.connect(out) as conn:
        rows = conn.execute("SELECT rater, correctness, complete FROM ratings ORDER BY rater"
                            ).fetchall()
    assert sorted(rows, key=str) == sorted([
        ("ana", 7, None), ("ana", 7, "most"), ("ana", 7, "least"),
        ("bea", 4, None), ("bea", 4, "most"), ("bea", 4, "least")], key=str)
