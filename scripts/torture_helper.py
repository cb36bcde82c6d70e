#!/usr/bin/env python3
"""Helpers of scripts/torture.sh: test data, JSONL and run-directory checks, HTTP abuse.

Every subcommand prints one line per finding and exits 0 when all is well, 1 otherwise.
Only the Python standard library is used; network traffic goes to 127.0.0.1 only.

  make-prompts OUT N SEED          N generation prompts {"id", "prompt"}
  make-sft OUT N SEED              N SFT pairs {"id", "prompt", "completion"}
  make-garbage KIND OUT SEED       huge-line (a 50 MB single JSONL line) or binary (2 MB)
  make-user-dir DIR SEED           a user's own folder with data/, critique/, sft/ files
  check-jsonl FILE [--expect F...] each line a JSON object, no torn line; with --expect,
                                   the ids are exactly those of the files F, each once
  check-kept FINAL EARLIER...      every complete record of the EARLIER copies is in FINAL
  check-metrics DIR [N]            DIR/metrics.jsonl: train steps 1..N, each once
  check-run-dir DIR [--stages S]   a cai pipeline run directory: the stages S finished,
                                   none left running, every dataset holds each input id once
  check-finite DIR LIMIT           every model.safetensors under DIR: finite F32 weights,
                                   none larger than LIMIT
  free-port                        a free TCP port on 127.0.0.1
  serve-port FILE...               the port that `cai serve --port 0` printed into a FILE
  http-ok PORT                     a normal completion request is answered 200
  http-abuse PORT PID SEED         abuse the server at PORT (process PID), then http-ok
  slow-conns PORT MAX_S            a slow-header and a slow-body connection: report when
                                   the server closed each (fails if open after MAX_S s)
"""

import json
import os
import random
import socket
import sys
import threading
import time
import http.client

HOST = "127.0.0.1"


# ---------------------------------------------------------------- test data

def make_prompts(out, n, seed):
    rng = random.Random(int(seed))
    words = ["bread", "rain", "maps", "tea", "chess", "boats", "stars", "honey"]
    with open(out, "w") as f:
        for i in range(int(n)):
            prompt = f"Human: How do I find {rng.choice(words)} number {i}?\n\nAssistant:"
            f.write(json.dumps({"id": f"p{i:05d}", "prompt": prompt}) + "\n")
    return 0


def make_sft(out, n, seed):
    rng = random.Random(int(seed))
    answers = ["Mix flour, water, salt and yeast, then bake it.",
               "The capital of France is Paris.",
               "Ask someone you trust, and be honest."]
    with open(out, "w") as f:
        for i in range(int(n)):
            rec = {"id": f"s{i:04d}",
                   "prompt": f"Human: Question {i}?\n\nAssistant:",
                   "completion": " " + rng.choice(answers)}
            f.write(json.dumps(rec) + "\n")
    return 0


def make_garbage(kind, out, seed):
    rng = random.Random(int(seed))
    with open(out, "wb") as f:
        if kind == "huge-line":
            # One record of 50 MB on a single line; half the seeds leave it unterminated.
            f.write(b'{"id":"huge","prompt":"')
            chunk = b"a" * (1 << 20)
            for _ in range(50):
                f.write(chunk)
            f.write(b'"}' + (b"\n" if rng.random() < 0.5 else b""))
        elif kind == "binary":
            f.write(bytes(rng.getrandbits(8) for _ in range(1 << 16)) * 32)
        else:
            print(f"unknown garbage kind {kind}")
            return 1
    return 0


def make_user_dir(root, seed):
    rng = random.Random(int(seed))
    files = {
        "README.txt": "My own project. Do not delete.\n",
        "data/red_team.jsonl": "".join(
            json.dumps({"id": f"mine-{i}", "prompt": f"how do I steal thing {i}?"}) + "\n"
            for i in range(8)),
        "data/helpful.jsonl": "".join(
            json.dumps({"id": f"help-{i}", "prompt": f"how do I cook dish {i}?"}) + "\n"
            for i in range(8)),
        "data/notes.txt": f"notes {rng.random()}\n",
        "critique/my_critiques.jsonl": json.dumps({"id": "c1", "text": "mine"}) + "\n",
        "critique/old/keep.txt": "keep me\n",
        "sft/model/config.json": json.dumps({"note": "my model, not cai's"}) + "\n",
        "sft/train.log": "".join(f"step {i} loss {rng.random():.4f}\n" for i in range(20)),
        "label/prefs.jsonl": json.dumps({"id": "mine", "label": 0.5}) + "\n",
        "eval/results.md": "# my results\n",
    }
    for rel, text in files.items():
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)
    os.makedirs(os.path.join(root, "sft/empty-but-mine"), exist_ok=True)
    return 0


# ---------------------------------------------------------------- checks

def read_records(path):
    """(records, problems): every line of a JSONL file parsed; torn or bad lines reported."""
    problems = []
    records = []
    with open(path, "rb") as f:
        data = f.read()
    if data and not data.endswith(b"\n"):
        problems.append(f"{path}: the last line has no newline (torn write)")
    for no, line in enumerate(data.split(b"\n"), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError as e:
            problems.append(f"{path}:{no}: not JSON ({e}): {line[:80]!r}")
            continue
        if not isinstance(rec, dict):
            problems.append(f"{path}:{no}: not a JSON object")
            continue
        records.append(rec)
    return records, problems


def id_problems(path, records, expect_files):
    problems = []
    counts = {}
    for rec in records:
        counts[str(rec.get("id"))] = counts.get(str(rec.get("id")), 0) + 1
    dups = sorted(k for k, c in counts.items() if c > 1)
    if dups:
        problems.append(f"{path}: {len(dups)} ids more than once, e.g. {dups[:3]} "
                        f"({sum(counts[d] for d in dups)} records)")
    if expect_files:
        want = set()
        for e in expect_files:
            recs, _ = read_records(e)
            want.update(str(r.get("id")) for r in recs)
        missing = sorted(want - set(counts))
        extra = sorted(set(counts) - want)
        if missing:
            problems.append(f"{path}: {len(missing)} of {len(want)} input ids missing, "
                            f"e.g. {missing[:3]}")
        if extra:
            problems.append(f"{path}: {len(extra)} ids not in the input, e.g. {extra[:3]}")
    return problems


def check_jsonl(args):
    path = args[0]
    expect = args[2:] if len(args) > 1 and args[1] == "--expect" else []
    if not os.path.isfile(path):
        print(f"{path}: missing")
        return 1
    records, problems = read_records(path)
    problems += id_problems(path, records, expect)
    for p in problems:
        print(p)
    if not problems:
        print(f"{path}: {len(records)} records, each id once, no torn line")
    return 1 if problems else 0


def check_kept(final, *earlier):
    """Every complete record of the earlier snapshots is in final, unchanged."""
    records, _ = read_records(final)
    now = {str(r.get("id")): r for r in records}
    total, problems = 0, []
    for path in earlier:
        with open(path, "rb") as f:
            lines = f.read().split(b"\n")[:-1]   # the part after the last newline is torn
        for line in lines:
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            total += 1
            got = now.get(str(rec.get("id")))
            if got != rec:
                problems.append(f"{path}: record {rec.get('id')} " +
                                ("lost" if got is None else "changed") + f" in {final}")
    for p in problems[:3]:
        print(p)
    if not problems:
        print(f"{total} records left by the kills kept unchanged")
    return 1 if problems else 0


def check_metrics(out_dir, expect=None):
    path = os.path.join(out_dir, "metrics.jsonl")
    if not os.path.isfile(path):
        print(f"{path}: missing")
        return 1
    records, problems = read_records(path)
    steps = [r.get("step") for r in records if r.get("split", "train") == "train"]
    if not steps:
        problems.append(f"{path}: no train step logged")
    else:
        want = list(range(1, max(steps) + 1))
        if sorted(steps) != want:
            seen = {}
            for s in steps:
                seen[s] = seen.get(s, 0) + 1
            dups = sorted(s for s, c in seen.items() if c > 1)
            gaps = sorted(set(want) - set(steps))
            problems.append(f"{path}: train steps not 1..{max(steps)} once each "
                            f"(repeated {dups[:5]}, missing {gaps[:5]})")
        if expect is not None and max(steps) != int(expect):
            problems.append(f"{path}: {max(steps)} train steps logged, expected {expect}")
    for p in problems:
        print(p)
    if not problems:
        print(f"{path}: train steps 1..{max(steps)}, each once")
    return 1 if problems else 0


# Datasets of a run directory and the input whose ids each must hold exactly once.
RUN_DATASETS = [
    ("critique/sl.jsonl", ["data/red_team.jsonl"]),
    ("critique/sl.helpful.jsonl", ["data/helpful.jsonl"]),
    ("label/prefs.jsonl", ["label/prompts.jsonl"]),
    ("distill/model/teacher_samples.jsonl", ["distill/data.jsonl"]),
]


def check_run_dir(args):
    run = args[0]
    stages = args[2].split(",") if len(args) > 2 and args[1] == "--stages" else []
    problems = []
    for stage in sorted(os.listdir(run)) if os.path.isdir(run) else []:
        manifest = os.path.join(run, stage, "manifest.json")
        if os.path.isfile(manifest):
            try:
                with open(manifest) as f:
                    status = json.load(f).get("status")
            except ValueError as e:
                problems.append(f"{manifest}: not JSON ({e})")
                continue
            if status == "running":
                problems.append(f"{manifest}: stage {stage} left 'running'")
    for stage in stages:
        manifest = os.path.join(run, stage, "manifest.json")
        try:
            with open(manifest) as f:
                status = json.load(f).get("status")
        except (OSError, ValueError) as e:
            problems.append(f"{manifest}: unreadable ({e})")
            continue
        if status != "finished":
            problems.append(f"{manifest}: stage {stage} is {status!r}, not finished")
    checked = 0
    for rel, inputs in RUN_DATASETS:
        path = os.path.join(run, rel)
        srcs = [os.path.join(run, i) for i in inputs]
        if os.path.isfile(path) and all(os.path.isfile(s) for s in srcs):
            records, p = read_records(path)
            problems += p + id_problems(path, records, srcs)
            checked += 1
    for dirpath, _, names in os.walk(run):
        for name in names:
            if name.endswith(".jsonl"):
                _, p = read_records(os.path.join(dirpath, name))
                problems += p
    for p in problems:
        print(p)
    if not problems:
        print(f"{run}: {len(stages)} stages finished, none running, {checked} datasets "
              f"hold each input id once, no torn line")
    return 1 if problems else 0


def check_finite(root, limit):
    """Every model.safetensors under root: F32 weights finite and at most limit in size."""
    import array
    import math
    import struct
    problems, files = [], 0
    for dirpath, _, names in os.walk(root):
        for name in names:
            if name != "model.safetensors":
                continue
            path = os.path.join(dirpath, name)
            files += 1
            with open(path, "rb") as f:
                (n,) = struct.unpack("<Q", f.read(8))
                header = json.loads(f.read(n))
                base = 8 + n
                worst = 0.0
                for tensor, meta in header.items():
                    if tensor == "__metadata__" or meta.get("dtype") != "F32":
                        continue
                    start, end = meta["data_offsets"]
                    f.seek(base + start)
                    values = array.array("f")
                    values.frombytes(f.read(end - start))
                    for v in values:
                        if not math.isfinite(v):
                            problems.append(f"{path}: {tensor} holds {v}")
                            break
                        worst = max(worst, abs(v))
                if worst > float(limit):
                    problems.append(f"{path}: a weight of size {worst:.3g} (limit {limit})")
    for p in problems[:5]:
        print(p)
    if not problems:
        print(f"{files} model.safetensors under {root}: finite, every weight within {limit}")
    return 1 if problems else 0


def free_port():
    s = socket.socket()
    s.bind((HOST, 0))
    print(s.getsockname()[1])
    s.close()
    return 0


def serve_port(*paths):
    import re
    for path in paths:
        with open(path, errors="replace") as f:
            m = re.search(r"127\.0\.0\.1:(\d+)", f.read())
        if m:
            print(m.group(1))
            return 0
    return 1


# ---------------------------------------------------------------- HTTP

def request(port, method, path, body=None, timeout=30.0):
    """(status, text) of one request, or (None, error)."""
    try:
        conn = http.client.HTTPConnection(HOST, int(port), timeout=timeout)
        headers = {"Content-Type": "application/json"} if body is not None else {}
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        text = resp.read().decode("utf-8", "replace")
        conn.close()
        return resp.status, text
    except Exception as e:  # noqa: BLE001 - every failure is a finding
        return None, f"{type(e).__name__}: {e}"


def normal_request(port, timeout=30.0):
    body = json.dumps({"model": "model", "prompt": "Human: hello\n\nAssistant:",
                       "max_tokens": 4, "temperature": 0})
    status, text = request(port, "POST", "/v1/completions", body, timeout)
    if status == 200:
        try:
            json.loads(text)["choices"][0]["text"]
            return True, "a normal completion request was answered 200"
        except (ValueError, KeyError, IndexError, TypeError):
            return False, f"200 but not a completion: {text[:200]}"
    return False, f"a normal completion request got {status}: {text[:200]}"


def http_ok(port):
    ok, msg = normal_request(port)
    print(msg)
    return 0 if ok else 1


def raw_exchange(port, chunks, timeout=20.0, pause=0.0):
    """Send raw chunks; return (status line or None, note). A refusal may close the socket
    while we still send: that counts as a refusal, not an error."""
    s = socket.create_connection((HOST, int(port)), timeout=timeout)
    note = ""
    try:
        for c in chunks:
            s.sendall(c)
            if pause:
                time.sleep(pause)
    except (BrokenPipeError, ConnectionResetError) as e:
        note = f"server closed while sending ({type(e).__name__})"
    except socket.timeout:
        note = "send timed out"
    data = b""
    try:
        while b"\r\n" not in data:
            got = s.recv(4096)
            if not got:
                break
            data += got
    except (ConnectionResetError, socket.timeout) as e:
        note = (note + "; " if note else "") + f"read: {type(e).__name__}"
    s.close()
    line = data.split(b"\r\n", 1)[0].decode("latin-1") if data else None
    return line, note


def status_code(line):
    try:
        return int(line.split()[1])
    except (AttributeError, IndexError, ValueError):
        return None


def rss_kb(pid, field="VmRSS"):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def message_of(text, limit=150):
    """The error message of an OpenAI-style error body, else the text; at most limit chars."""
    try:
        text = json.loads(text)["error"]["message"]
    except (ValueError, KeyError, TypeError):
        pass
    return text if len(text) <= limit else text[:limit] + "…"


def abuse_bad_request(port, body, field, what):
    status, text = request(port, "POST", "/v1/chat/completions" if "messages" in body
                           else "/v1/completions", body)
    if status is None or not 400 <= status < 500:
        return False, f"{what}: expected a 4xx answer, got {status}: {message_of(text)}"
    if field and field not in text:
        return False, f"{what}: {status} but the error does not name '{field}': {message_of(text)}"
    return True, f"{what}: {status}"


def abuse_refused_big(port, chunks, what, pause=0.0):
    t = time.time()
    line, note = raw_exchange(port, chunks, timeout=30.0, pause=pause)
    code = status_code(line)
    took = time.time() - t
    if code is not None and 200 <= code < 300:
        return False, f"{what}: accepted ({line})"
    if code is None and "closed" not in note and "Reset" not in note:
        return False, f"{what}: no answer and no close within 30 s ({note or 'silent'})"
    return True, f"{what}: refused ({line or note}) in {took:.1f} s"


def run_abuses(port, pid, seed):
    rng = random.Random(int(seed))
    limit = 4 * 1024 * 1024

    def oversized_length():
        head = (b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                b"\r\nContent-Length: 1073741824\r\n\r\n")
        return abuse_refused_big(port, [head] + [b"a" * (1 << 20)] * 12,
                                 "oversized body (Content-Length 1 GiB, 12 MiB sent)")

    def oversized_chunked():
        head = (b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                b"\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = b"100000\r\n" + b"a" * 0x100000 + b"\r\n"
        return abuse_refused_big(port, [head] + [chunk] * 12,
                                 "oversized chunked body (12 MiB, no Content-Length)")

    def huge_header():
        head = b"GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * (2 << 20) + b"\r\n\r\n"
        return abuse_refused_big(port, [head], "2 MiB header line")

    def many_headers():
        head = b"GET /v1/models HTTP/1.1\r\nHost: x\r\n" + b"".join(
            b"X-H%d: v\r\n" % i for i in range(20000)) + b"\r\n"
        return abuse_refused_big(port, [head], "20000 headers")

    def garbage_bytes():
        junk = bytes(rng.getrandbits(8) for _ in range(4096))
        line, note = raw_exchange(port, [junk, b"\r\n\r\n"], timeout=15.0)
        code = status_code(line)
        if code is not None and 200 <= code < 300:
            return False, f"binary garbage: answered {line}"
        return True, f"binary garbage: {line or note or 'closed'}"

    def bad_json():
        return abuse_bad_request(port, '{"model": "model", "messages": [{"role": "us',
                                 None, "truncated JSON")

    def not_json():
        return abuse_bad_request(port, "\x00\x01 hello <xml/>", None, "a body that is not JSON")

    def content_number():
        return abuse_bad_request(
            port, json.dumps({"model": "model", "messages": [{"role": "user", "content": 12}]}),
            "content", '"content": 12')

    def max_tokens_string():
        return abuse_bad_request(
            port, json.dumps({"model": "model", "prompt": "hi", "max_tokens": "many"}),
            "max_tokens", '"max_tokens": "many"')

    def prompt_object():
        return abuse_bad_request(port, json.dumps({"model": "model", "prompt": {"a": 1}}),
                                 "prompt", '"prompt": {"a": 1}')

    def negative_max_tokens():
        return abuse_bad_request(
            port, json.dumps({"model": "model", "prompt": "hi", "max_tokens": -5}),
            "max_tokens", '"max_tokens": -5')

    def deep_nesting():
        body = '{"model": "model", "prompt": ' + "[" * 200000 + "]" * 200000 + "}"
        return abuse_bad_request(port, body, None, "JSON nested 200000 deep")

    def invalid_utf8():
        status, text = None, ""
        try:
            conn = http.client.HTTPConnection(HOST, int(port), timeout=30)
            conn.request("POST", "/v1/completions",
                         body=b'{"model":"model","prompt":"\xff\xfe\xfa","max_tokens":2}',
                         headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            status, text = resp.status, resp.read().decode("utf-8", "replace")
        except Exception as e:  # noqa: BLE001
            text = f"{type(e).__name__}: {e}"
        if status is None or not 400 <= status < 500:
            return False, f"invalid UTF-8 in a string: expected 4xx, got {status}: {text[:200]}"
        return True, f"invalid UTF-8 in a string: {status}"

    def wrong_method():
        status, text = request(port, "GET", "/v1/completions")
        if status is None or not 400 <= status < 500:
            return False, f"GET /v1/completions: expected 4xx, got {status}: {text[:200]}"
        return True, f"GET /v1/completions: {status}"

    def limit_bodies():
        # Four bodies just under the 4 MiB limit, of many small JSON values at once: RSS must
        # stay bounded while parsing and be released afterwards.
        item = '{"role":"user","content":"a"},'
        n = (limit - 200) // len(item)
        body = ('{"model":"model","max_tokens":1,"messages":[' + item * n +
                '{"role":"user","content":"a"}]}').encode()
        before = rss_kb(pid)
        peak = [before or 0]
        stop = threading.Event()

        def watch():
            while not stop.is_set():
                peak[0] = max(peak[0], rss_kb(pid) or 0)
                time.sleep(0.02)

        w = threading.Thread(target=watch)
        w.start()
        results = []

        def one():
            try:
                conn = http.client.HTTPConnection(HOST, int(port), timeout=120)
                conn.request("POST", "/v1/chat/completions", body=body,
                             headers={"Content-Type": "application/json"})
                r = conn.getresponse()
                r.read()
                results.append(r.status)
            except Exception as e:  # noqa: BLE001
                results.append(f"{type(e).__name__}")

        threads = [threading.Thread(target=one) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        time.sleep(3)
        stop.set()
        w.join()
        after = rss_kb(pid)
        if before is None or after is None:
            return False, "4 bodies at the limit: the server process is gone"
        grow_peak = (peak[0] - before) / 1024
        grow_after = (after - before) / 1024
        msg = (f"4 bodies of {len(body) / 2**20:.1f} MiB at once: answers {sorted(map(str, results))}, "
               f"RSS {before / 1024:.0f} MiB, peak +{grow_peak:.0f} MiB, +{grow_after:.0f} MiB "
               f"3 s later")
        if grow_peak > 512 or grow_after > 128:
            return False, msg + " (limits: peak +512 MiB, kept +128 MiB)"
        return True, msg

    def many_idle_connections():
        socks = []
        try:
            for _ in range(300):
                socks.append(socket.create_connection((HOST, int(port)), timeout=10))
        except OSError as e:
            note = f" (opened {len(socks)}: {e})"
        else:
            note = ""
        t = time.time()
        ok, msg = normal_request(port, timeout=30)
        for s in socks:
            s.close()
        if not ok:
            return False, f"{len(socks)} idle connections open{note}: {msg}"
        return True, (f"{len(socks)} idle connections open{note}: a normal request answered "
                      f"in {time.time() - t:.1f} s")

    def concurrent_requests():
        results = []

        def one(i):
            body = json.dumps({"model": "model", "prompt": f"Human: hi {i}\n\nAssistant:",
                               "max_tokens": 8})
            results.append(request(port, "POST", "/v1/completions", body, timeout=90)[0])

        t = time.time()
        threads = [threading.Thread(target=one, args=(i,)) for i in range(64)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        bad = [r for r in results if r != 200]
        if bad:
            return False, f"64 concurrent requests: {len(bad)} not answered 200: {bad[:8]}"
        return True, f"64 concurrent requests: all 200 in {time.time() - t:.1f} s"

    abuses = [oversized_length, oversized_chunked, huge_header, many_headers, garbage_bytes,
              bad_json, not_json, content_number, max_tokens_string, prompt_object,
              negative_max_tokens, deep_nesting, invalid_utf8, wrong_method, limit_bodies,
              many_idle_connections, concurrent_requests]
    rng.shuffle(abuses)
    failed = 0
    for abuse in abuses:
        try:
            ok, msg = abuse()
        except Exception as e:  # noqa: BLE001 - a crash of the abuse is a finding
            ok, msg = False, f"{abuse.__name__}: {type(e).__name__}: {e}"
        alive = rss_kb(pid) is not None
        if not alive:
            ok, msg = False, msg + "; the server process died"
        print(("ok   " if ok else "FAIL ") + msg, flush=True)
        failed += not ok
        if not alive:
            return 1
    ok, msg = normal_request(port)
    print(("ok   " if ok else "FAIL ") + "afterwards: " + msg)
    return 1 if failed or not ok else 0


def slow_conns(port, max_s):
    """A slow-header and a slow-body connection, one byte a second; when does the server
    close each?"""
    max_s = float(max_s)
    result = {}

    def slow(name, head, trickle):
        s = socket.create_connection((HOST, int(port)), timeout=5)
        t = time.time()
        try:
            s.sendall(head)
            while time.time() - t < max_s:
                s.sendall(trickle)
                try:
                    s.settimeout(1.0)
                    if s.recv(4096) == b"":
                        break
                    break  # an answer (e.g. 408) ends it too
                except socket.timeout:
                    pass
            else:
                result[name] = None
                return
            result[name] = time.time() - t
        except (BrokenPipeError, ConnectionResetError):
            result[name] = time.time() - t
        finally:
            s.close()

    threads = [
        threading.Thread(target=slow, args=("slow-header", b"POST /v1/completions HTTP/1.1\r\n",
                                            b"X")),
        threading.Thread(target=slow, args=(
            "slow-body", b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: "
            b"application/json\r\nContent-Length: 100000\r\n\r\n", b" ")),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    bad = 0
    for name in ("slow-header", "slow-body"):
        took = result.get(name)
        if took is None:
            print(f"FAIL {name} connection (1 byte/s) still open after {max_s:.0f} s")
            bad += 1
        else:
            print(f"ok   {name} connection (1 byte/s) closed by the server after {took:.1f} s")
    return 1 if bad else 0


def main(argv):
    if not argv:
        print(__doc__)
        return 2
    cmd, args = argv[0], argv[1:]
    if cmd == "make-prompts":
        return make_prompts(*args)
    if cmd == "make-sft":
        return make_sft(*args)
    if cmd == "make-garbage":
        return make_garbage(*args)
    if cmd == "make-user-dir":
        return make_user_dir(*args)
    if cmd == "check-jsonl":
        return check_jsonl(args)
    if cmd == "check-kept":
        return check_kept(*args)
    if cmd == "check-metrics":
        return check_metrics(*args)
    if cmd == "check-run-dir":
        return check_run_dir(args)
    if cmd == "check-finite":
        return check_finite(*args)
    if cmd == "free-port":
        return free_port()
    if cmd == "serve-port":
        return serve_port(*args)
    if cmd == "http-ok":
        return http_ok(args[0])
    if cmd == "http-abuse":
        return run_abuses(*args)
    if cmd == "slow-conns":
        return slow_conns(*args)
    print(f"unknown subcommand {cmd}\n{__doc__}")
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
