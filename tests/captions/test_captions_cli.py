import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from captions_testlib import SECRET, au_records, emotion_records
from support.llm_server import request_key
from lavis_ext.cli import main
from lavis_ext.data.records import load_records, save_records

ROOT = Path(__file__).resolve().parents[2]


def _cli(tmp_path, server, *extra):
    return [sys.executable, "-m", "lavis_ext", "synthesize", "--kind", "au-llm",
            "--ann", str(tmp_path / "in.json"), "--out", str(tmp_path / "out.json"),
            "--cache", str(tmp_path / "cache.sqlite"), "--base-url", server.base_url,
            "--concurrency", "2", "--save-every", "2", "--no-progress",
            "--backoff-base", "0.01", *extra]


def _cached_request_keys(path):
    db = sqlite3.connect(path)
    try:
        rows = db.execute("SELECT model, request FROM answers").fetchall()
    finally:
        db.close()
    keys = set()
    for model, request in rows:
        request = json.loads(request)
        keys.add(request_key({"model": model, "messages": request["messages"],
                              **request["params"]}))
    return keys


def test_kill_midway_then_rerun_repeats_no_finished_call(make_server, tmp_path):
    server = make_server(latency=0.15)
    records = au_records(30)
    save_records(records, tmp_path / "in.json")
    env = {**os.environ, "OPENAI_API_KEY": SECRET}
    env.pop("OPENAI_BASE_URL", None)
    proc = subprocess.Popen(_cli(tmp_path, server, "--log", str(tmp_path / "run1.log")),
                            cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 90
    while server.chat_requests < 8 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    first_output = proc.communicate()[0].decode()
    assert proc.returncode == -signal.SIGKILL, first_output
    finished = _cached_request_keys(tmp_path / "cache.sqlite")
    assert 6 <= len(finished) < 30
    partial = load_records(tmp_path / "out.json")  # the kill left a valid file
    assert 0 < sum(bool(r.get("captions")) for r in partial) < 30
    seen_in_first_run = dict(server.chat_counts)

    rerun = subprocess.run(_cli(tmp_path, server, "--log", str(tmp_path / "run2.log")),
                           cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert "resuming from" in rerun.stderr
    repeated = set(server.repeated_requests())
    assert not repeated & finished  # nothing finished before the kill was asked again
    assert len(repeated) <= 2  # at most the requests in flight at the kill
    assert len(server.chat_counts) == 30  # one distinct request per record, no more
    assert server.chat_requests == 30 + sum(n - 1 for n in server.repeated_requests().values())
    assert len(seen_in_first_run) < 30
    out = load_records(tmp_path / "out.json")
    assert all(len(r["captions"]["au-llm"]) == 1 and not r.get("failures") for r in out)
    assert "calls made" in rerun.stdout and "cache hits" in rerun.stdout
    for path in tmp_path.iterdir():
        assert SECRET.encode() not in path.read_bytes(), path
    assert SECRET not in first_output + rerun.stdout + rerun.stderr


def test_cli_rule_kinds_and_dry_run_in_process(server, tmp_path, capsys):
    records = au_records(3) + emotion_records(3)
    save_records(records, tmp_path / "in.json")
    out = tmp_path / "out.json"
    assert main(["synthesize", "--kind", "au-rule", "--ann", str(tmp_path / "in.json"),
                 "--out", str(out), "--no-progress"]) == 0
    assert main(["synthesize", "--kind", "emotion-rule", "--ann", str(out), "--out", str(out),
                 "--no-progress"]) == 0
    result = load_records(out)
    assert all(len(r["caption"]) == 1 for r in result)
    assert not (tmp_path / "llm_cache.sqlite").exists()
    capsys.readouterr()
    assert main(["synthesize", "--kind", "au-llm", "--ann", str(out), "--out",
                 str(tmp_path / "dry.json"), "--base-url", server.base_url, "--dry-run",
                 "--llm-model", "gpt-4o-mini", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "calls needed         3" in printed and "$" in printed
    assert not (tmp_path / "dry.json").exists() and server.chat_requests == 0


def test_cli_reports_bad_input(tmp_path, capsys):
    (tmp_path / "in.json").write_text('[{"image": "a.jpg"}]')
    code = main(["synthesize", "--kind", "au-rule", "--ann", str(tmp_path / "in.json"),
                 "--out", str(tmp_path / "o.json")])
    err = capsys.readouterr().err
    assert code == 2 and "in.json[0]: missing field 'image_id'" in err
    code = main(["synthesize", "--kind", "au-llm", "--ann", str(tmp_path / "x.json"),
                 "--out", str(tmp_path / "o.json"), "--price", "gpt=cheap"])
    assert code == 2 and "MODEL=IN,OUT" in capsys.readouterr().err
    code = main(["synthesize", "--kind", "au-rule", "--ann", str(tmp_path / "in.json"),
                 "--out", str(tmp_path / "o.json"), "--template", "The person {emotions}."])
    assert code == 2 and "does not fit --kind au-rule" in capsys.readouterr().err
