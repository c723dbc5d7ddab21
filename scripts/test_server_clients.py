#!/usr/bin/env python3
"""End-to-end tests of mlx-server with real clients: the official `openai` and `ollama` Python
packages, `curl -N`, and raw HTTP (requirements pinned by hash in
scripts/requirements-server-tests.txt).

Starts the server binary (default target/release/mlx-server) on a free loopback port with the
SmolLM2 GGUF of test-data, waits for /health, runs the checks, stops the server. With
--base-url it tests a server that is already running instead (e.g. llama-server, for the
OpenAI checks: --only openai,sse,concurrency).

Checks (each small: a few dozen tokens at most; the whole run stays well under 3 minutes on
2 cores):
  openai       chat (greedy, non-empty text), streaming (chunks reassemble to the non-stream
               text, usage chunk), legacy completions, json_schema response_format (parses and
               validates with jsonschema), a tool call with tool_choice="required" (also with
               parallel_tool_calls=false: one call) and a named tool_choice (tool_calls whose
               JSON arguments validate against the tool's parameters), /v1/models
  ollama       chat, chat streaming, generate, generate streaming (the same greedy text as
               non-stream and as OpenAI's chat), tags, show, version
  sse          `curl -N`: SSE framing of /v1/chat/completions (`data: ` lines, blank-line
               separated, `[DONE]` last) and NDJSON framing of /api/generate
  concurrency  16 concurrent clients (threads), different prompts: each greedy response equals
               the same request sent alone
  memory       MLX active memory (/metrics, less the prefix cache's bytes) back near its
               baseline after the concurrent load; when this script started the server, its
               RSS back near its baseline (plus the prefix cache's growth) once the server has
               been idle for --idle-release seconds
  disconnect   a client that drops mid-stream frees its slot: /metrics running goes back to 0
               and generation stops
  metrics      /metrics is Prometheus text with the documented families; /health; with a key
               (a random one when this script starts the server): 401 without it, /health open

Prints one line per check, then `N passed, N failed`; exits 1 on any failure.
"""

import argparse
import http.client
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

# Prompts of the concurrency check: 16 different requests.
QUESTIONS = [
    "What is the capital of France?",
    "Name three primary colors.",
    "What is 2 plus 2?",
    "Give me a synonym for happy.",
    "What do bees make?",
    "Which planet is closest to the sun?",
    "What is the boiling point of water in Celsius?",
    "Name a fruit that is yellow.",
    "How many legs does a spider have?",
    "What language is spoken in Spain?",
    "What is the opposite of cold?",
    "Name an animal that can fly.",
    "What color is grass?",
    "How many days are in a week?",
    "What is frozen water called?",
    "Who wrote Romeo and Juliet?",
]


class Failure(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise Failure(msg)


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Ctx:
    def __init__(self, base, api_key, model_id, proc, log_path, timeout):
        self.base = base.rstrip("/")
        self.api_key = api_key
        self.model = model_id
        self.proc = proc
        self.log_path = log_path
        self.timeout = timeout
        self.headers = {"Content-Type": "application/json"}
        if api_key:
            self.headers["Authorization"] = f"Bearer {api_key}"
        self._openai = None
        self._ollama = None

    @property
    def openai(self):
        if self._openai is None:
            import openai

            self._openai = openai.OpenAI(
                base_url=self.base + "/v1", api_key=self.api_key or "unused", timeout=self.timeout, max_retries=0
            )
        return self._openai

    @property
    def ollama(self):
        if self._ollama is None:
            import ollama

            kw = {}
            if self.api_key:
                kw["headers"] = {"Authorization": f"Bearer {self.api_key}"}
            self._ollama = ollama.Client(host=self.base, timeout=self.timeout, **kw)
        return self._ollama

    def get(self, path, timeout=None):
        req = urllib.request.Request(self.base + path, headers=self.headers)
        with urllib.request.urlopen(req, timeout=timeout or self.timeout) as r:
            return r.status, r.headers, r.read()

    def post_json(self, path, body, timeout=None):
        req = urllib.request.Request(self.base + path, json.dumps(body).encode(), headers=self.headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=timeout or self.timeout) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode(errors="replace")

    def metrics(self):
        _, _, body = self.get("/metrics")
        out = {}
        for line in body.decode().splitlines():
            if not line or line.startswith("#"):
                continue
            m = re.match(r"^([A-Za-z_:][A-Za-z0-9_:]*)(\{[^}]*\})?\s+(\S+)", line)
            if m:
                out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
        return out


def metric(m, *names):
    for n in names:
        if n in m:
            return m[n]
    return None


RUNNING = ("mlx_server_running", "llamacpp:requests_processing")
WAITING = ("mlx_server_waiting", "llamacpp:requests_deferred")
GENERATED = ("mlx_server_generated_tokens_total", "llamacpp:tokens_predicted_total")
ACTIVE_MEM = ("mlx_server_mlx_active_memory_bytes",)
PREFIX_BYTES = ("mlx_server_prefix_cache_bytes",)


# --idle-release given to a server this script starts (seconds).
IDLE_RELEASE = 1.0


def rss_bytes(pid):
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def chat_text(ctx, messages, max_tokens, **kw):
    r = ctx.openai.chat.completions.create(
        model=ctx.model, messages=messages, max_tokens=max_tokens, temperature=0, **kw
    )
    return r


# ---------------------------------------------------------------------------------------------
# OpenAI


def t_openai_models(ctx):
    models = ctx.openai.models.list()
    ids = [m.id for m in models.data]
    check(ids, f"/v1/models listed no model: {models}")
    check(ctx.model in ids, f"model {ctx.model!r} not in /v1/models {ids}")


def t_openai_chat(ctx):
    msgs = [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}]
    r = chat_text(ctx, msgs, 24)
    check(r.object == "chat.completion", f"object {r.object!r}")
    c = r.choices[0]
    check(c.message.role == "assistant", f"role {c.message.role!r}")
    check(c.message.content and c.message.content.strip(), f"empty content: {r}")
    check(c.finish_reason in ("stop", "length"), f"finish_reason {c.finish_reason!r}")
    check(r.usage and r.usage.completion_tokens > 0 and r.usage.prompt_tokens > 0, f"usage {r.usage}")
    check(r.usage.completion_tokens <= 24, f"completion_tokens {r.usage.completion_tokens} > max_tokens 24")
    r2 = chat_text(ctx, msgs, 24)
    check(r2.choices[0].message.content == c.message.content,
          f"greedy not deterministic: {c.message.content!r} vs {r2.choices[0].message.content!r}")
    ctx.ref_chat = (msgs, c.message.content, r.usage.completion_tokens)
    return f"{r.usage.completion_tokens} tokens: {c.message.content[:60]!r}"


def t_openai_stream(ctx):
    msgs, ref, _ = ctx.ref_chat
    stream = ctx.openai.chat.completions.create(
        model=ctx.model, messages=msgs, max_tokens=24, temperature=0, stream=True,
        stream_options={"include_usage": True},
    )
    parts, finish, usage, n = [], None, None, 0
    for ch in stream:
        n += 1
        check(ch.object == "chat.completion.chunk", f"chunk object {ch.object!r}")
        if ch.usage:
            usage = ch.usage
        for c in ch.choices:
            if c.delta and c.delta.content:
                parts.append(c.delta.content)
            if c.finish_reason:
                finish = c.finish_reason
    text = "".join(parts)
    check(text == ref, f"stream reassembles to {text!r}, non-stream gave {ref!r}")
    check(finish in ("stop", "length"), f"stream finish_reason {finish!r}")
    check(usage is not None and usage.completion_tokens > 0, f"no usage chunk with include_usage (usage={usage})")
    return f"{n} chunks"


def t_openai_completions(ctx):
    r = ctx.openai.completions.create(model=ctx.model, prompt="The capital of France is", max_tokens=12, temperature=0)
    check(r.choices and r.choices[0].text, f"empty completion: {r}")
    s = ctx.openai.completions.create(model=ctx.model, prompt="The capital of France is", max_tokens=12,
                                      temperature=0, stream=True)
    text = "".join(c.choices[0].text for c in s if c.choices)
    check(text == r.choices[0].text, f"streamed completion {text!r} != {r.choices[0].text!r}")
    return repr(r.choices[0].text[:60])


SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "enum": ["Paris", "London", "Rome", "Berlin"]},
        "country": {"type": "string", "maxLength": 24},
        "is_capital": {"type": "boolean"},
        "population_millions": {"type": "integer", "minimum": 0, "maximum": 100},
    },
    "required": ["city", "country", "is_capital", "population_millions"],
    "additionalProperties": False,
}


def t_openai_json_schema(ctx):
    import jsonschema

    r = chat_text(
        ctx,
        [{"role": "user", "content": "Describe Paris as JSON with its city, country, whether it is a capital, "
                                     "and population in millions."}],
        96,
        response_format={"type": "json_schema", "json_schema": {"name": "city", "schema": SCHEMA, "strict": True}},
    )
    content = r.choices[0].message.content
    check(r.choices[0].finish_reason == "stop",
          f"finish_reason {r.choices[0].finish_reason!r} (the constrained output did not close): {content!r}")
    try:
        obj = json.loads(content)
    except Exception as e:  # noqa: BLE001
        raise Failure(f"json_schema content does not parse ({e}): {content!r}") from None
    try:
        jsonschema.validate(obj, SCHEMA)
    except jsonschema.ValidationError as e:
        raise Failure(f"json_schema content does not validate: {e.message}; content {content!r}") from None
    # json_object mode: any JSON object.
    r2 = chat_text(ctx, [{"role": "user", "content": "Give a JSON object with a key named answer."}], 48,
                   response_format={"type": "json_object"})
    c2 = r2.choices[0].message.content
    if r2.choices[0].finish_reason == "stop":
        try:
            check(isinstance(json.loads(c2), dict), f"json_object content is not an object: {c2!r}")
        except json.JSONDecodeError as e:
            raise Failure(f"json_object content does not parse ({e}): {c2!r}") from None
    return content


TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Get the current weather in a city",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string", "description": "The city name"},
                    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                },
                "required": ["city"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "get_time",
            "description": "Get the current time in a timezone",
            "parameters": {
                "type": "object",
                "properties": {"timezone": {"type": "string"}},
                "required": ["timezone"],
            },
        },
    },
]


def _check_tool_calls(r, want_name=None):
    c = r.choices[0]
    calls = c.message.tool_calls
    check(calls, f"no tool_calls (finish_reason {c.finish_reason!r}, content {c.message.content!r})")
    check(c.finish_reason == "tool_calls", f"finish_reason {c.finish_reason!r}, expected 'tool_calls'")
    for call in calls:
        check(call.type == "function", f"tool call type {call.type!r}")
        check(call.id, f"tool call without id: {call}")
        names = [t["function"]["name"] for t in TOOLS]
        check(call.function.name in names, f"unknown tool {call.function.name!r}")
        if want_name:
            check(call.function.name == want_name, f"named tool_choice {want_name!r} got {call.function.name!r}")
        try:
            args = json.loads(call.function.arguments)
        except Exception as e:  # noqa: BLE001
            raise Failure(f"tool arguments are not JSON ({e}): {call.function.arguments!r}") from None
        check(isinstance(args, dict), f"tool arguments not an object: {args!r}")
        schema = next(t for t in TOOLS if t["function"]["name"] == call.function.name)["function"]["parameters"]
        import jsonschema

        try:
            jsonschema.validate(args, schema)
        except jsonschema.ValidationError as e:
            raise Failure(f"tool arguments do not validate: {e.message}; {args!r}") from None
    return calls


def t_openai_tool_required(ctx):
    r = chat_text(ctx, [{"role": "user", "content": "What is the weather like in Paris today?"}], 96,
                  tools=TOOLS, tool_choice="required")
    calls = _check_tool_calls(r)
    # The tool's result goes back in; the model answers with text (any text: just no error).
    msgs = [
        {"role": "user", "content": "What is the weather like in Paris today?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": calls[0].id, "type": "function",
             "function": {"name": calls[0].function.name, "arguments": calls[0].function.arguments}}]},
        {"role": "tool", "tool_call_id": calls[0].id, "content": json.dumps({"temperature_c": 21, "sky": "sunny"})},
    ]
    r2 = chat_text(ctx, msgs, 24, tools=TOOLS)
    check(r2.choices[0].message.content is not None or r2.choices[0].message.tool_calls,
          f"no answer after the tool result: {r2}")
    return f"{calls[0].function.name}({calls[0].function.arguments})"


def t_openai_tool_single(ctx):
    """`parallel_tool_calls: false` with `tool_choice: "required"`: exactly one call (the tools'
    parameters closed with additionalProperties false, so that only the call count is tested)."""
    closed = json.loads(json.dumps(TOOLS))
    for t in closed:
        t["function"]["parameters"]["additionalProperties"] = False
    r = chat_text(ctx, [{"role": "user", "content": "What is the weather like in Paris today?"}], 96,
                  tools=closed, tool_choice="required", parallel_tool_calls=False)
    calls = _check_tool_calls(r)
    check(len(calls) == 1, f"parallel_tool_calls=false gave {len(calls)} calls: "
          + ", ".join(f"{c.function.name}({c.function.arguments})" for c in calls))
    return f"{calls[0].function.name}({calls[0].function.arguments})"


def t_openai_tool_named(ctx):
    r = chat_text(ctx, [{"role": "user", "content": "What time is it in Tokyo?"}], 96, tools=TOOLS,
                  tool_choice={"type": "function", "function": {"name": "get_time"}})
    calls = _check_tool_calls(r, "get_time")
    # Streaming tool calls: the deltas reassemble to a call with JSON arguments.
    s = ctx.openai.chat.completions.create(
        model=ctx.model, messages=[{"role": "user", "content": "What time is it in Tokyo?"}], max_tokens=96,
        temperature=0, tools=TOOLS, tool_choice={"type": "function", "function": {"name": "get_time"}}, stream=True)
    name, args, finish = "", "", None
    for ch in s:
        for c in ch.choices:
            for tc in c.delta.tool_calls or []:
                if tc.function and tc.function.name:
                    name += tc.function.name
                if tc.function and tc.function.arguments:
                    args += tc.function.arguments
            if c.finish_reason:
                finish = c.finish_reason
    check(name == "get_time", f"streamed tool call name {name!r}")
    check(finish == "tool_calls", f"streamed tool call finish_reason {finish!r}")
    try:
        json.loads(args)
    except Exception as e:  # noqa: BLE001
        raise Failure(f"streamed tool arguments are not JSON ({e}): {args!r}") from None
    check(args == calls[0].function.arguments or json.loads(args) == json.loads(calls[0].function.arguments),
          f"streamed arguments {args!r} != non-stream {calls[0].function.arguments!r}")
    return f"{calls[0].function.name}({calls[0].function.arguments})"


def t_openai_errors(ctx):
    import openai

    try:
        ctx.openai.chat.completions.create(model=ctx.model, messages=[], max_tokens=4)
        raise Failure("empty messages accepted")
    except openai.BadRequestError:
        pass
    st, body = ctx.post_json("/v1/chat/completions", {"model": ctx.model, "messages": "not a list"})
    check(400 <= st < 500, f"malformed body answered {st}: {body!r}")
    return "400s"


# ---------------------------------------------------------------------------------------------
# Ollama


def t_ollama_chat(ctx):
    msgs, ref, ref_tokens = ctx.ref_chat
    r = ctx.ollama.chat(model=ctx.model, messages=msgs, stream=False, options={"temperature": 0, "num_predict": 24})
    text = r.message.content
    check(text and text.strip(), f"empty ollama chat: {r}")
    check(r.done, f"done is {r.done!r}")
    check(text == ref, f"ollama chat {text!r} != openai chat {ref!r} (same messages, greedy, 24 tokens)")
    check(r.eval_count == ref_tokens, f"eval_count {r.eval_count} != openai completion_tokens {ref_tokens}")
    parts, last = [], None
    for ch in ctx.ollama.chat(model=ctx.model, messages=msgs, stream=True,
                              options={"temperature": 0, "num_predict": 24}):
        parts.append(ch.message.content or "")
        last = ch
    check("".join(parts) == text, f"ollama chat stream {''.join(parts)!r} != {text!r}")
    check(last is not None and last.done and last.done_reason in ("stop", "length"),
          f"last chunk: done {getattr(last, 'done', None)}, done_reason {getattr(last, 'done_reason', None)!r}")
    return f"{r.eval_count} tokens"


def t_ollama_generate(ctx):
    r = ctx.ollama.generate(model=ctx.model, prompt="Why is the sky blue?", stream=False,
                            options={"temperature": 0, "num_predict": 20})
    check(r.response and r.response.strip(), f"empty ollama generate: {r}")
    check(r.done and r.eval_count and r.eval_count <= 20, f"done {r.done}, eval_count {r.eval_count}")
    parts, last = [], None
    for ch in ctx.ollama.generate(model=ctx.model, prompt="Why is the sky blue?", stream=True,
                                  options={"temperature": 0, "num_predict": 20}):
        parts.append(ch.response or "")
        last = ch
    check("".join(parts) == r.response, f"generate stream {''.join(parts)!r} != {r.response!r}")
    check(last.done and last.eval_count == r.eval_count, f"last chunk done {last.done}, eval_count {last.eval_count}")
    # raw mode: the prompt goes in untemplated.
    raw = ctx.ollama.generate(model=ctx.model, prompt="The capital of France is", raw=True, stream=False,
                              options={"temperature": 0, "num_predict": 8})
    check(raw.response, f"empty raw generate: {raw}")
    return repr(r.response[:60])


def t_ollama_format_json(ctx):
    import jsonschema

    r = ctx.ollama.chat(model=ctx.model, messages=[{"role": "user", "content": "Describe Paris as JSON."}],
                        format=SCHEMA, stream=False, options={"temperature": 0, "num_predict": 96})
    try:
        obj = json.loads(r.message.content)
        jsonschema.validate(obj, SCHEMA)
    except Exception as e:  # noqa: BLE001
        raise Failure(f"ollama format=<schema> content invalid ({e}): {r.message.content!r}") from None
    return r.message.content


def t_ollama_meta(ctx):
    tags = ctx.ollama.list()
    names = [m.model for m in tags.models]
    check(names, f"/api/tags lists no model: {tags}")
    check(ctx.model in names or any(n.startswith(ctx.model) for n in names), f"{ctx.model!r} not in tags {names}")
    show = ctx.ollama.show(ctx.model)
    check(show.details is not None or show.modelinfo, f"/api/show without details: {show}")
    st, _, body = ctx.get("/api/version")
    v = json.loads(body)
    check(st == 200 and isinstance(v.get("version"), str), f"/api/version: {st} {body!r}")
    return f"tags {names}, version {v['version']}"


# ---------------------------------------------------------------------------------------------
# Framing with curl -N


def curl(ctx, path, body, timeout=60):
    exe = shutil.which("curl")
    if not exe:
        raise Failure("curl not found on PATH")
    cmd = [exe, "-sS", "-N", "-D", "-", "-X", "POST", ctx.base + path, "-H", "Content-Type: application/json",
           "--max-time", str(timeout), "-d", json.dumps(body)]
    if ctx.api_key:
        cmd += ["-H", f"Authorization: Bearer {ctx.api_key}"]
    p = subprocess.run(cmd, capture_output=True, timeout=timeout + 10)
    check(p.returncode == 0, f"curl exit {p.returncode}: {p.stderr.decode(errors='replace')}")
    raw = p.stdout.decode()
    head, _, payload = raw.partition("\r\n\r\n")
    return head, payload


def t_sse_framing(ctx):
    head, payload = curl(ctx, "/v1/chat/completions", {
        "model": ctx.model, "messages": [{"role": "user", "content": "Count from one to five."}],
        "max_tokens": 16, "temperature": 0, "stream": True})
    status = head.splitlines()[0]
    check(" 200" in status, f"status line {status!r}")
    check(re.search(r"(?im)^content-type:\s*text/event-stream", head), f"no text/event-stream content type:\n{head}")
    check(payload.endswith("\n\n"), f"SSE payload does not end with a blank line: {payload[-80:]!r}")
    events = [e for e in payload.replace("\r\n", "\n").split("\n\n") if e.strip()]
    check(len(events) >= 3, f"only {len(events)} SSE events: {payload!r}")
    datas = []
    for e in events:
        lines = [ln for ln in e.split("\n") if ln and not ln.startswith(":")]
        check(len(lines) == 1 and lines[0].startswith("data: "), f"event is not one `data: ` line: {e!r}")
        datas.append(lines[0][len("data: "):])
    check(datas[-1] == "[DONE]", f"last event is {datas[-1]!r}, not [DONE]")
    check(datas.count("[DONE]") == 1, "more than one [DONE]")
    ids = set()
    for d in datas[:-1]:
        ev = json.loads(d)
        check(ev.get("object") == "chat.completion.chunk", f"event object {ev.get('object')!r}")
        ids.add(ev.get("id"))
    check(len(ids) == 1, f"chunks carry {len(ids)} different ids")
    # An error before streaming starts is a plain JSON error, not a stream.
    head2, payload2 = curl(ctx, "/v1/chat/completions", {"model": ctx.model, "messages": [], "stream": True})
    check(" 4" in head2.splitlines()[0], f"empty messages with stream: {head2.splitlines()[0]!r} {payload2[:200]!r}")
    return f"{len(events)} events"


def t_ndjson_framing(ctx):
    head, payload = curl(ctx, "/api/generate", {
        "model": ctx.model, "prompt": "Count from one to five.", "stream": True,
        "options": {"temperature": 0, "num_predict": 12}})
    check(" 200" in head.splitlines()[0], f"status line {head.splitlines()[0]!r}")
    check(re.search(r"(?im)^content-type:\s*application/x-ndjson", head), f"no application/x-ndjson:\n{head}")
    lines = payload.split("\n")
    check(lines[-1] == "", "NDJSON payload does not end with a newline")
    objs = [json.loads(ln) for ln in lines[:-1]]
    check(all(not o["done"] for o in objs[:-1]) and objs[-1]["done"], "done must be false until the last line")
    check("eval_count" in objs[-1] and "total_duration" in objs[-1], f"final line lacks stats: {objs[-1]}")
    return f"{len(objs)} lines"


# ---------------------------------------------------------------------------------------------
# Load


def t_concurrency(ctx):
    n = 16
    max_tokens = 20
    alone = []
    for q in QUESTIONS[:n]:
        r = chat_text(ctx, [{"role": "user", "content": q}], max_tokens)
        alone.append(r.choices[0].message.content)
    together = [None] * n
    errors = []
    barrier = threading.Barrier(n)

    def worker(i):
        try:
            barrier.wait()
            r = chat_text(ctx, [{"role": "user", "content": QUESTIONS[i]}], max_tokens)
            together[i] = r.choices[0].message.content
        except Exception as e:  # noqa: BLE001
            errors.append(f"client {i}: {e!r}")

    peak = {"running": 0}
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            try:
                m = ctx.metrics()
                peak["running"] = max(peak["running"], metric(m, *RUNNING) or 0)
            except Exception:  # noqa: BLE001
                pass
            time.sleep(0.05)

    w = threading.Thread(target=watch, daemon=True)
    if ctx.has_metrics:
        w.start()
    t0 = time.time()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.time() - t0
    stop.set()
    check(not errors, f"{len(errors)} of {n} concurrent clients failed: {errors[:3]}")
    diffs = []
    for i in range(n):
        if together[i] != alone[i]:
            a, b = alone[i], together[i]
            k = next((j for j in range(min(len(a), len(b))) if a[j] != b[j]), min(len(a), len(b)))
            diffs.append(f"#{i} {QUESTIONS[i]!r}: alone {a!r} vs concurrent {b!r} (differ from char {k})")
    check(not diffs, f"{len(diffs)} of {n} concurrent greedy responses differ from the same request alone:\n    "
          + "\n    ".join(diffs))
    if ctx.has_metrics:
        check(peak["running"] > 1, f"requests never ran together (peak running {peak['running']})")
    return f"{n} clients in {wall:.1f}s, peak running {peak['running']}"


def t_memory(ctx):
    m = ctx.metrics()
    active = metric(m, *ACTIVE_MEM)
    check(active is not None, "no mlx_server_mlx_active_memory_bytes in /metrics")
    held = metric(m, *PREFIX_BYTES) or 0
    base_active, base_held = ctx.mem_baseline
    # After the load: nothing runs; wait for it to settle.
    deadline = time.time() + 10
    while True:
        m = ctx.metrics()
        if (metric(m, *RUNNING) or 0) == 0 and (metric(m, *WAITING) or 0) == 0:
            break
        check(time.time() < deadline, "requests still running 10 s after the load")
        time.sleep(0.2)
    active = metric(m, *ACTIVE_MEM)
    held = metric(m, *PREFIX_BYTES) or 0
    grown = (active - held) - (base_active - base_held)
    limit = 16 * 2**20 + 0.05 * base_active
    rss = rss_bytes(ctx.proc.pid) if ctx.proc else None
    info = (f"active {active / 2**20:.1f} MiB (baseline {base_active / 2**20:.1f}), prefix cache "
            f"{held / 2**20:.1f} MiB (baseline {base_held / 2**20:.1f})"
            + (f", RSS {rss / 2**20:.0f} MiB (baseline {ctx.rss_baseline / 2**20:.0f})" if rss and ctx.rss_baseline else ""))
    check(grown <= limit, f"active memory outside the prefix cache grew by {grown / 2**20:.1f} MiB after the load: {info}")
    if rss is None or not ctx.rss_baseline or not ctx.idle_release:
        return info
    # The server hands freed memory back after --idle-release seconds with nothing to run: its
    # RSS falls back to the baseline plus what the prefix cache now holds, and a margin for the
    # allocators' bookkeeping.
    margin = 32 * 2**20 + 0.1 * ctx.rss_baseline
    rss_limit = ctx.rss_baseline + max(held - base_held, 0) + margin
    rss = wait_rss_at_most(ctx, rss, rss_limit)
    info += f"; RSS after the idle release {rss / 2**20:.0f} MiB (limit {rss_limit / 2**20:.0f})"
    check(rss <= rss_limit, f"RSS did not fall back after the load: {info}")
    # An Ollama unload (`keep_alive: 0`) drops the prefix cache with nothing left to run: the
    # next idle spell hands that memory back too, down to the baseline.
    st, body = ctx.post_json("/api/generate", {"model": ctx.model, "keep_alive": 0})
    check(st == 200, f"unload: {st} {str(body)[:200]}")
    rss_limit = ctx.rss_baseline + margin
    rss = wait_rss_at_most(ctx, rss_bytes(ctx.proc.pid) or rss, rss_limit)
    held = metric(ctx.metrics(), *PREFIX_BYTES) or 0
    info += f"; after an unload {rss / 2**20:.0f} MiB (limit {rss_limit / 2**20:.0f}, prefix cache {held / 2**20:.1f} MiB)"
    check(held == 0, f"the unload left the prefix cache holding {held} bytes: {info}")
    check(rss <= rss_limit, f"RSS did not fall back to the baseline after an unload: {info}")
    return info


def wait_rss_at_most(ctx, rss, limit):
    """The server's RSS once it is at most `limit`, or after the idle release and 10 s more."""
    deadline = time.time() + ctx.idle_release + 10
    while rss > limit and time.time() < deadline:
        time.sleep(0.25)
        rss = rss_bytes(ctx.proc.pid) or rss
    return rss


def t_disconnect(ctx):
    m0 = ctx.metrics()
    gen0 = metric(m0, *GENERATED) or 0
    host, port = ctx.base.split("//", 1)[1].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    body = {"model": ctx.model, "stream": True, "max_tokens": 2000, "temperature": 0,
            "messages": [{"role": "user", "content": "Write a very long story about a dragon and a knight."}]}
    if ctx.ignore_eos:
        body["ignore_eos"] = True
    conn.request("POST", "/v1/chat/completions", json.dumps(body), ctx.headers)
    resp = conn.getresponse()
    check(resp.status == 200, f"stream request: HTTP {resp.status}")
    got = 0
    while got < 5:
        line = resp.readline()
        check(line, "stream ended before 5 events")
        if line.startswith(b"data: "):
            got += 1
    running = metric(ctx.metrics(), *RUNNING)
    check(running == 1, f"running is {running} mid-stream, expected 1")
    # Drop the connection without reading on.
    conn.sock.shutdown(socket.SHUT_RDWR)
    conn.close()
    t0 = time.time()
    while True:
        m = ctx.metrics()
        if metric(m, *RUNNING) == 0:
            break
        check(time.time() - t0 < 5, f"running still {metric(m, *RUNNING)} 5 s after the client left")
        time.sleep(0.05)
    freed = time.time() - t0
    time.sleep(0.5)
    gen1 = metric(ctx.metrics(), *GENERATED) or 0
    check(gen1 - gen0 < 1000, f"{gen1 - gen0} tokens generated for a stream dropped after 5 events")
    # The freed slot serves the next request.
    r = chat_text(ctx, [{"role": "user", "content": "Say hi."}], 4)
    check(r.choices[0].message.content is not None, "no answer after the disconnect")
    return f"slot freed {freed * 1000:.0f} ms after the disconnect, {gen1 - gen0:.0f} tokens generated in all"


def t_metrics(ctx):
    st, headers, body = ctx.get("/health")
    check(st == 200, f"/health: {st}")
    st, headers, body = ctx.get("/metrics")
    check(st == 200, f"/metrics: {st}")
    ctype = headers.get("Content-Type", "")
    check(ctype.startswith("text/plain"), f"/metrics content type {ctype!r}")
    text = body.decode()
    for line in text.splitlines():
        check(not line or line.startswith("#") or re.match(r"^[A-Za-z_:][A-Za-z0-9_:]*(\{[^}]*\})? \S+$", line),
              f"not a Prometheus sample line: {line!r}")
    m = ctx.metrics()
    for names in (RUNNING, WAITING, GENERATED):
        check(metric(m, *names) is not None, f"/metrics lacks {names[0]}")
    check(any(k.startswith("mlx_server_requests_total{") for k in m), "/metrics lacks mlx_server_requests_total")
    return f"{len(m)} samples"


def t_auth(ctx):
    if not ctx.api_key:
        return "skipped: the server runs without --api-key"
    base = ctx.base
    req = urllib.request.Request(base + "/health")
    with urllib.request.urlopen(req, timeout=10) as r:
        check(r.status == 200, f"/health without the key: {r.status}")
    for path, hdr in (("/v1/models", None), ("/api/tags", None), ("/v1/models", "Bearer wrong-key")):
        req = urllib.request.Request(base + path, headers={"Authorization": hdr} if hdr else {})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                raise Failure(f"{path} with {hdr or 'no key'} answered {r.status}, expected 401")
        except urllib.error.HTTPError as e:
            check(e.code == 401, f"{path} with {hdr or 'no key'} answered {e.code}, expected 401")
    import openai

    bad = openai.OpenAI(base_url=base + "/v1", api_key="wrong-key", max_retries=0, timeout=10)
    try:
        bad.models.list()
        raise Failure("openai client with a wrong key was served")
    except openai.AuthenticationError:
        pass
    return "401 without the key, /health open"


# ---------------------------------------------------------------------------------------------


GROUPS = {
    "metrics": [t_metrics, t_auth],
    "openai": [t_openai_models, t_openai_chat, t_openai_stream, t_openai_completions, t_openai_json_schema,
               t_openai_tool_required, t_openai_tool_single, t_openai_tool_named, t_openai_errors],
    "ollama": [t_ollama_chat, t_ollama_generate, t_ollama_format_json, t_ollama_meta],
    "sse": [t_sse_framing, t_ndjson_framing],
    "concurrency": [t_concurrency],
    "memory": [t_memory],
    "disconnect": [t_disconnect],
}
ORDER = ["metrics", "openai", "ollama", "sse", "concurrency", "memory", "disconnect"]


def wait_health(base, proc, timeout):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(base + "/health", timeout=2) as r:
                if r.status == 200:
                    return True
        except Exception:  # noqa: BLE001
            pass
        time.sleep(0.2)
    return False


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--server-bin", default=os.path.join(ROOT, "target", "release", "mlx-server"))
    ap.add_argument("--model", default=os.path.join(ROOT, "test-data", "smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--server-arg", action="append", default=[], help="extra argument for the server (repeatable)")
    ap.add_argument("--base-url", default=None, help="test this running server instead of starting one")
    ap.add_argument("--model-id", default=None, help="model id to request (default: the first of /v1/models)")
    ap.add_argument("--api-key", default=None,
                    help="the server's key (default when this script starts the server: a random one)")
    ap.add_argument("--no-api-key", action="store_true", help="start the server without --api-key")
    ap.add_argument("--ignore-eos", action="store_true", help="send ignore_eos in the disconnect check")
    ap.add_argument("--only", default=None, help="comma-separated groups: " + ",".join(ORDER))
    ap.add_argument("--timeout", type=float, default=60, help="seconds for one request")
    ap.add_argument("--startup-timeout", type=float, default=120)
    args = ap.parse_args()

    groups = ORDER if not args.only else [g.strip() for g in args.only.split(",")]
    for g in groups:
        if g not in GROUPS:
            sys.exit(f"unknown group {g!r}; groups: {', '.join(ORDER)}")

    proc = None
    log_path = None
    t_start = time.time()
    if args.base_url:
        base = args.base_url.rstrip("/")
        if not wait_health(base, None, 10):
            sys.exit(f"FAIL: {base}/health does not answer")
    else:
        if not os.path.exists(args.server_bin):
            sys.exit(f"FAIL: no server binary at {args.server_bin} (cargo build --release -p mlx-server)")
        if not os.path.exists(args.model):
            sys.exit(f"FAIL: no model at {args.model} (bash scripts/fetch_test_data.sh)")
        if args.api_key is None and not args.no_api_key:
            args.api_key = secrets.token_hex(16)
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        cmd = [args.server_bin, "--model", args.model, "--host", "127.0.0.1", "--port", str(port)] + args.server_arg
        if not any(a.startswith("--idle-release") for a in args.server_arg):
            cmd += ["--idle-release", str(IDLE_RELEASE)]
        env = dict(os.environ)
        if args.api_key:
            env["MLX_SERVER_API_KEY"] = args.api_key  # not on the command line
        log = tempfile.NamedTemporaryFile(prefix="mlx-server-", suffix=".log", delete=False)
        log_path = log.name
        print(f"starting: {' '.join(cmd)} (log {log_path})", flush=True)
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        if not wait_health(base, proc, args.startup_timeout):
            rc = proc.poll()
            if rc is None:
                proc.kill()
            log.flush()
            tail = open(log_path, errors="replace").read()[-4000:]
            sys.exit(f"FAIL: server did not answer /health within {args.startup_timeout:.0f} s (exit {rc}); log:\n{tail}")
        print(f"server up in {time.time() - t_start:.1f} s", flush=True)

    ctx = Ctx(base, args.api_key, None, proc, log_path, args.timeout)
    ctx.ignore_eos = args.ignore_eos
    # The server's --idle-release (seconds; 0 or None: no RSS check).
    ctx.idle_release = None
    if proc is not None:
        ctx.idle_release = IDLE_RELEASE
        for i, a in enumerate(args.server_arg):
            if a.startswith("--idle-release"):
                v = a.split("=", 1)[1] if "=" in a else args.server_arg[i + 1]
                ctx.idle_release = float(v)
    passed, failed, failures = 0, 0, []
    try:
        try:
            st, _, body = ctx.get("/v1/models")
            ctx.model = args.model_id or json.loads(body)["data"][0]["id"]
        except Exception as e:  # noqa: BLE001
            ctx.model = args.model_id or "default"
            print(f"note: /v1/models unreadable ({e!r}); model id {ctx.model!r}")
        try:
            m = ctx.metrics()
            ctx.has_metrics = metric(m, *RUNNING) is not None
        except Exception:  # noqa: BLE001
            ctx.has_metrics = False
        # Warm-up, then the memory baseline. The warm-up includes one constrained request: the
        # grammar engine's tables of the model's vocabulary are built on first use and kept
        # for the model's lifetime (measured 2026-12-08: +44 MiB of RSS for SmolLM2's 49k
        # tokens, +110 MiB for Gemma 3's 262k; a second schema adds nothing), so they belong
        # to the baseline, not to what a load leaves behind.
        try:
            chat_text(ctx, [{"role": "user", "content": "Hello"}], 4)
            chat_text(ctx, [{"role": "user", "content": "Reply with a JSON object."}], 4,
                      response_format={"type": "json_object"})
        except Exception as e:  # noqa: BLE001
            print(f"note: warm-up request failed: {e!r}")
        ctx.rss_baseline = rss_bytes(proc.pid) if proc else None
        ctx.mem_baseline = None
        if ctx.has_metrics:
            m = ctx.metrics()
            a = metric(m, *ACTIVE_MEM)
            if a is not None:
                ctx.mem_baseline = (a, metric(m, *PREFIX_BYTES) or 0)
        ctx.ref_chat = None
        for g in groups:
            for t in GROUPS[g]:
                name = t.__name__[2:]
                needs_ref = t in (t_openai_stream, t_ollama_chat)
                needs_metrics = g in ("memory", "disconnect")
                if needs_ref and ctx.ref_chat is None:
                    try:
                        t_openai_chat(ctx)
                    except Exception as e:  # noqa: BLE001
                        print(f"FAIL {name}: its reference (openai chat) failed: {e}")
                        failed += 1
                        failures.append(name)
                        continue
                if needs_metrics and (not ctx.has_metrics or (g == "memory" and ctx.mem_baseline is None)):
                    print(f"FAIL {name}: the server exposes no usable /metrics")
                    failed += 1
                    failures.append(name)
                    continue
                t0 = time.time()
                try:
                    info = t(ctx)
                    passed += 1
                    print(f"ok   {name} ({time.time() - t0:.1f}s){': ' + str(info) if info else ''}", flush=True)
                except Failure as e:
                    failed += 1
                    failures.append(name)
                    print(f"FAIL {name} ({time.time() - t0:.1f}s): {e}", flush=True)
                except Exception as e:  # noqa: BLE001
                    failed += 1
                    failures.append(name)
                    print(f"FAIL {name} ({time.time() - t0:.1f}s): {type(e).__name__}: {e}", flush=True)
                    traceback.print_exc(limit=3)
                if proc is not None and proc.poll() is not None:
                    print(f"FAIL: the server exited ({proc.returncode}) during {name}", flush=True)
                    failed += 1
                    failures.append("server-alive")
                    raise KeyboardInterrupt
    except KeyboardInterrupt:
        pass
    finally:
        if proc is not None:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            if failed:
                tail = open(log_path, errors="replace").read()[-3000:]
                print(f"--- server log (last 3000 chars of {log_path}) ---\n{tail}\n---")
            else:
                os.unlink(log_path)
    print(f"total {time.time() - t_start:.1f} s")
    if failures:
        print(f"failed: {', '.join(failures)}")
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
