#!/usr/bin/env python3
"""Serving benchmark against OpenAI-compatible servers (mlx-server, llama-server, ...).

Standard library only (threads + http.client; SSE parsed by hand), so it runs on a bare Python 3.

For every server given with --server NAME=BASE_URL, interleaved round by round (server A, server
B, server A, ... so that a noisy minute hits both), it measures:

  * decode throughput at 1, 4 and 16 concurrent streams (--concurrency): N streaming chat
    requests started together, each with a different prompt, greedy (temperature 0), the same
    max_tokens. Per stream: time to first token (TTFT), last-token time, generated tokens (from
    the stream's `usage` when the server sends it with stream_options.include_usage, else the
    count of content chunks). Reported:
      - aggregate decode tok/s = sum over streams of (tokens - 1) / (t_last - t_first): the
        decode rate of each stream once its first token came, added up;
      - end-to-end tok/s = all generated tokens / (last stream's end - start), prefill included;
      - mean TTFT.
  * TTFT without and with a prefix hit: a long system prompt (about --prefix-words words, ~1000
    tokens with SmolLM2's tokenizer) that no earlier request used (a fresh nonce in its first
    line) is sent once (cold), then again with another user question (warm): the second can reuse
    the first's KV state of the shared prefix (llama-server: `cache_prompt`, its default).

Servers that do not stop at EOS with `ignore_eos: true` (llama-server) get it with
--ignore-eos NAME; others get prompts that ask for long answers, and the table shows the
generated tokens actually counted, so rates stay comparable.

Writes <out>.md (Markdown tables, the machine, the commands) and <out>.json (every request's
raw timings) when --out is given; prints the Markdown to stdout.
"""

import argparse
import datetime
import http.client
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse

TOPICS = [
    "the history of the printing press",
    "how a steam engine works",
    "the life cycle of a star",
    "why the sky is blue",
    "the rules of chess",
    "how bread is baked",
    "the water cycle",
    "how vaccines train the immune system",
    "the invention of the telephone",
    "how bees make honey",
    "the causes of the seasons",
    "how a compiler turns code into machine instructions",
    "the migration of birds",
    "how a bicycle stays upright",
    "the building of the pyramids",
    "how volcanoes form",
    "the discovery of penicillin",
    "how a refrigerator keeps food cold",
    "the growth of a tree from a seed",
    "how the internet routes a message",
]


def story_prompt(i, tag):
    """A different prompt per stream; `tag` (round and stream) makes every request's prompt new,
    so only the chat template's own prefix can come from a prefix cache."""
    topic = TOPICS[i % len(TOPICS)]
    return (
        f"Request {tag}. Write a long, detailed essay of at least 600 words about {topic}. "
        "Use several paragraphs and many examples."
    )


def long_system_prompt(nonce, words):
    """~`words` words of deterministic filler; `nonce` first, so each cold prefix is new."""
    colors = ["red", "blue", "green", "yellow", "purple", "orange", "black", "white"]
    things = ["lamp", "chair", "river", "mountain", "garden", "library", "bridge", "window"]
    out = [f"Session {nonce}. You are a careful assistant. Remember the following facts."]
    n = 0
    i = 0
    while n < words:
        s = (
            f"Fact {i}: the {things[i % len(things)]} number {i} is "
            f"{colors[(i * 7) % len(colors)]} and stands next to item {(i * 13) % 97}."
        )
        out.append(s)
        n += len(s.split())
        i += 1
    out.append("Answer the user's question briefly.")
    return " ".join(out)


class Server:
    def __init__(self, name, base_url, api_key=None, ignore_eos=False, model=None):
        self.name = name
        u = urllib.parse.urlparse(base_url)
        self.host = u.hostname
        self.port = u.port or 80
        self.prefix = u.path.rstrip("/")
        if not self.prefix.endswith("/v1"):
            self.prefix += "/v1"
        self.api_key = api_key
        self.ignore_eos = ignore_eos
        self.model = model or self.first_model()

    def headers(self):
        h = {"Content-Type": "application/json"}
        if self.api_key:
            h["Authorization"] = f"Bearer {self.api_key}"
        return h

    def first_model(self):
        c = http.client.HTTPConnection(self.host, self.port, timeout=30)
        try:
            c.request("GET", self.prefix + "/models", headers=self.headers())
            r = c.getresponse()
            body = json.loads(r.read())
            return body["data"][0]["id"]
        except Exception:
            return "default"
        finally:
            c.close()

    def stream_chat(self, messages, max_tokens, timeout=600):
        """One streaming chat request; returns timings relative to time.perf_counter()."""
        body = {
            "model": self.model,
            "messages": messages,
            "max_tokens": max_tokens,
            "temperature": 0,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if self.ignore_eos:
            body["ignore_eos"] = True
        rec = {"t_start": time.perf_counter(), "t_first": None, "t_last": None, "chunks": 0}
        c = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            c.request("POST", self.prefix + "/chat/completions", json.dumps(body), self.headers())
            r = c.getresponse()
            if r.status != 200:
                rec["error"] = f"HTTP {r.status}: {r.read()[:500]!r}"
                return rec
            usage = None
            text = []
            finish = None
            while True:
                line = r.readline()
                if not line:
                    break
                line = line.strip()
                if not line.startswith(b"data:"):
                    continue
                data = line[5:].strip()
                if data == b"[DONE]":
                    break
                ev = json.loads(data)
                if ev.get("usage"):
                    usage = ev["usage"]
                for ch in ev.get("choices") or []:
                    delta = ch.get("delta") or {}
                    piece = delta.get("content") or ""
                    if ch.get("finish_reason"):
                        finish = ch["finish_reason"]
                    if piece:
                        now = time.perf_counter()
                        if rec["t_first"] is None:
                            rec["t_first"] = now
                        rec["t_last"] = now
                        rec["chunks"] += 1
                        text.append(piece)
            rec["t_end"] = time.perf_counter()
            rec["usage"] = usage
            rec["finish_reason"] = finish
            rec["text_chars"] = len("".join(text))
            if usage and usage.get("completion_tokens") is not None:
                rec["tokens"] = usage["completion_tokens"]
                rec["tokens_from"] = "usage"
            else:
                rec["tokens"] = rec["chunks"]
                rec["tokens_from"] = "chunks"
            if usage:
                rec["prompt_tokens"] = usage.get("prompt_tokens")
                det = usage.get("prompt_tokens_details") or {}
                if det.get("cached_tokens") is not None:
                    rec["cached_tokens"] = det["cached_tokens"]
            return rec
        except Exception as e:  # noqa: BLE001 - reported in the output
            rec["error"] = repr(e)
            return rec
        finally:
            c.close()


def run_concurrent(server, n, max_tokens, offset, rnd):
    results = [None] * n
    barrier = threading.Barrier(n)

    def worker(i):
        msgs = [{"role": "user", "content": story_prompt(offset + i, f"{rnd}.{n}.{i}")}]
        barrier.wait()
        results[i] = server.stream_chat(msgs, max_tokens)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    errs = [r["error"] for r in results if "error" in r]
    if errs:
        return {"n": n, "error": errs[0], "requests": results}
    t0 = min(r["t_start"] for r in results)
    t_end = max(r["t_end"] for r in results)
    decode = 0.0
    for r in results:
        if r["tokens"] > 1 and r["t_last"] > r["t_first"]:
            decode += (r["tokens"] - 1) / (r["t_last"] - r["t_first"])
    total = sum(r["tokens"] for r in results)
    ttfts = [r["t_first"] - r["t_start"] for r in results if r["t_first"]]
    for r in results:
        for k in ("t_first", "t_last", "t_end"):
            if r.get(k) is not None:
                r[k] = round(r[k] - t0, 6)
        r["t_start"] = round(r["t_start"] - t0, 6)
    return {
        "n": n,
        "aggregate_decode_tps": decode,
        "end_to_end_tps": total / (t_end - t0),
        "wall_s": t_end - t0,
        "tokens": total,
        "tokens_min": min(r["tokens"] for r in results),
        "tokens_max": max(r["tokens"] for r in results),
        "tokens_from": sorted({r["tokens_from"] for r in results}),
        "ttft_mean_s": statistics.mean(ttfts) if ttfts else None,
        "requests": results,
    }


def run_prefix(server, words, nonce, max_tokens):
    system = long_system_prompt(nonce, words)
    cold = server.stream_chat(
        [{"role": "system", "content": system}, {"role": "user", "content": "What color is lamp 8?"}],
        max_tokens,
    )
    warm = server.stream_chat(
        [{"role": "system", "content": system}, {"role": "user", "content": "What stands next to bridge 6?"}],
        max_tokens,
    )
    out = {"cold": cold, "warm": warm}
    for k, r in list(out.items()):
        if "error" in r:
            out["error"] = f"{k}: {r['error']}"
        elif r["t_first"] is None:
            out["error"] = f"{k}: no content token"
        else:
            out[f"ttft_{k}_s"] = r["t_first"] - r["t_start"]
    return out


def machine_info():
    info = {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count()}
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        for line in out.splitlines():
            key, _, val = line.partition(":")
            key = key.strip()
            if key in ("L1d cache", "L2 cache", "L3 cache", "Model name", "Thread(s) per core", "CPU(s)"):
                info["lscpu " + key] = val.strip()
    except OSError:
        pass
    try:
        info["memory"] = open("/proc/meminfo").readline().split(":", 1)[1].strip()
    except OSError:
        pass
    return info


def loadavg():
    try:
        return open("/proc/loadavg").read().split()[:3]
    except OSError:
        return None


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt(x, d=1):
    return "–" if x is None else f"{x:.{d}f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--server", action="append", required=True, metavar="NAME=BASE_URL",
                    help="an OpenAI-compatible server, e.g. ours=http://127.0.0.1:8080 (repeatable)")
    ap.add_argument("--ignore-eos", action="append", default=[], metavar="NAME",
                    help="send ignore_eos: true to this server (llama-server supports it)")
    ap.add_argument("--api-key", action="append", default=[], metavar="NAME=KEY")
    ap.add_argument("--model", default=None, help="model id to send (default: the first of /v1/models)")
    ap.add_argument("--concurrency", default="1,4,16")
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=3, help="rounds of every measurement (median reported)")
    ap.add_argument("--prefix-words", type=int, default=700, help="words of the shared system prompt")
    ap.add_argument("--prefix-max-tokens", type=int, default=8)
    ap.add_argument("--no-prefix", action="store_true", help="skip the TTFT prefix test")
    ap.add_argument("--out", default=None, help="write <out>.md and <out>.json")
    ap.add_argument("--note", action="append", default=[], help="a line for the report (commands, versions)")
    args = ap.parse_args()

    keys = dict(k.split("=", 1) for k in args.api_key)
    servers = []
    for s in args.server:
        i = s.rfind("=http")  # names may hold "=" (an environment setting)
        if i < 0:
            sys.exit(f"--server {s!r}: expected NAME=http://HOST:PORT")
        name, url = s[:i], s[i + 1:]
        servers.append(Server(name, url, keys.get(name), name in args.ignore_eos, args.model))
    levels = [int(x) for x in args.concurrency.split(",")]
    started = datetime.datetime.now(datetime.timezone.utc)
    report = {
        "started_utc": started.isoformat(timespec="seconds"),
        "machine": machine_info(),
        "loadavg_before": loadavg(),
        "settings": {
            "concurrency": levels, "max_tokens": args.max_tokens, "rounds": args.rounds,
            "prefix_words": args.prefix_words, "prefix_max_tokens": args.prefix_max_tokens,
            "temperature": 0,
        },
        "notes": args.note,
        "servers": {s.name: {"base_url": f"http://{s.host}:{s.port}{s.prefix}", "model": s.model,
                             "ignore_eos": s.ignore_eos} for s in servers},
        "runs": {s.name: {"throughput": {str(n): [] for n in levels}, "prefix": []} for s in servers},
    }

    # Warm-up: one short request per server (loads pages, JIT, allocator pools).
    for s in servers:
        r = s.stream_chat([{"role": "user", "content": "Say hello."}], 8)
        if "error" in r:
            sys.exit(f"{s.name}: warm-up request failed: {r['error']}")

    nonce = int(time.time())
    for rnd in range(args.rounds):
        for n in levels:
            for s in servers:
                res = run_concurrent(s, n, args.max_tokens, offset=rnd * 3 + n, rnd=rnd)
                report["runs"][s.name]["throughput"][str(n)].append(res)
                msg = res.get("error") or (
                    f"aggregate decode {res['aggregate_decode_tps']:.1f} tok/s, end-to-end "
                    f"{res['end_to_end_tps']:.1f} tok/s, tokens {res['tokens_min']}-{res['tokens_max']}, "
                    f"TTFT {res['ttft_mean_s'] * 1000:.0f} ms"
                )
                print(f"[round {rnd + 1}] {s.name} x{n}: {msg}", file=sys.stderr, flush=True)
        if not args.no_prefix:
            for s in servers:
                nonce += 1  # a new prefix per request pair, of the same token count for every server
                res = run_prefix(s, args.prefix_words, str(nonce), args.prefix_max_tokens)
                report["runs"][s.name]["prefix"].append(res)
                msg = res.get("error") or (
                    f"cold {res['ttft_cold_s'] * 1000:.0f} ms, warm {res['ttft_warm_s'] * 1000:.0f} ms, "
                    f"prompt tokens {res['cold'].get('prompt_tokens')}"
                )
                print(f"[round {rnd + 1}] {s.name} prefix: {msg}", file=sys.stderr, flush=True)
    report["loadavg_after"] = loadavg()
    report["finished_utc"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")

    # Summaries.
    lines = []
    m = report["machine"]
    lines.append(f"Serving benchmark, {report['started_utc']} – {report['finished_utc']} (UTC)")
    lines.append("")
    lines.append(
        f"Machine: {m.get('cpu_model', '?')}, {m.get('cpus')} CPUs, L2 {m.get('lscpu L2 cache', '?')}, "
        f"L3 {m.get('lscpu L3 cache', '?')}, memory {m.get('memory', '?')}; load average before "
        f"{' '.join(report['loadavg_before'] or [])}, after {' '.join(report['loadavg_after'] or [])}"
    )
    lines.append(
        f"Greedy (temperature 0), max_tokens {args.max_tokens}, streaming chat completions, "
        f"{args.rounds} rounds interleaved across servers, medians shown."
    )
    for note in args.note:
        lines.append(f"- {note}")
    lines.append("")
    lines.append("| server | streams | aggregate decode tok/s | end-to-end tok/s | mean TTFT ms | tokens/stream | x single-stream |")
    lines.append("|---|---:|---:|---:|---:|---:|---:|")
    summary = {}
    for s in servers:
        summary[s.name] = {}
        base = None
        for n in levels:
            runs = [r for r in report["runs"][s.name]["throughput"][str(n)] if "error" not in r]
            if not runs:
                lines.append(f"| {s.name} | {n} | error | | | | |")
                continue
            agg = median([r["aggregate_decode_tps"] for r in runs])
            e2e = median([r["end_to_end_tps"] for r in runs])
            ttft = median([r["ttft_mean_s"] for r in runs])
            tmin = min(r["tokens_min"] for r in runs)
            tmax = max(r["tokens_max"] for r in runs)
            if n == 1:
                base = agg
            summary[s.name][str(n)] = {"aggregate_decode_tps": agg, "end_to_end_tps": e2e, "ttft_mean_s": ttft,
                                       "tokens_min": tmin, "tokens_max": tmax}
            ratio = f"{agg / base:.2f}×" if base else "–"
            toks = f"{tmin}" if tmin == tmax else f"{tmin}–{tmax}"
            lines.append(f"| {s.name} | {n} | {fmt(agg)} | {fmt(e2e)} | {fmt(ttft * 1000 if ttft else None, 0)} | {toks} | {ratio} |")
    if not args.no_prefix:
        lines.append("")
        lines.append(f"Time to first token with a ~{args.prefix_words}-word system prompt, sent cold then again with another question (prefix hit):")
        lines.append("")
        lines.append("| server | prompt tokens | TTFT cold ms | TTFT warm ms | cold/warm | cached tokens (warm, if reported) |")
        lines.append("|---|---:|---:|---:|---:|---:|")
        for s in servers:
            runs = [r for r in report["runs"][s.name]["prefix"] if "error" not in r]
            if not runs:
                errs = [r.get("error") for r in report["runs"][s.name]["prefix"]]
                lines.append(f"| {s.name} | error: {errs[:1]} | | | | |")
                continue
            cold = median([r["ttft_cold_s"] for r in runs])
            warm = median([r["ttft_warm_s"] for r in runs])
            pt = runs[0]["cold"].get("prompt_tokens")
            cached = [r["warm"].get("cached_tokens") for r in runs]
            cached = "–" if all(c is None for c in cached) else ", ".join(str(c) for c in cached)
            summary[s.name]["prefix"] = {"ttft_cold_s": cold, "ttft_warm_s": warm, "prompt_tokens": pt}
            lines.append(f"| {s.name} | {pt if pt is not None else '–'} | {fmt(cold * 1000, 0)} | {fmt(warm * 1000, 0)} | {fmt(cold / warm, 2)}× | {cached} |")
    report["summary"] = summary
    md = "\n".join(lines) + "\n"
    print(md)
    if args.out:
        with open(args.out + ".md", "w") as f:
            f.write(md)
        with open(args.out + ".json", "w") as f:
            json.dump(report, f, indent=1)
        print(f"wrote {args.out}.md and {args.out}.json", file=sys.stderr)


if __name__ == "__main__":
    main()
