#!/usr/bin/env python3
"""Writes the seed corpus of every fuzz target into tests/fuzz/corpus/<target>/.

Seeds are small and meaningful: valid inputs, edge cases and known-bad shapes. Each
target's input layout is described at the top of its fuzz_<target>.cpp. Re-run after
changing a layout; crash inputs kept as regression seeds (crash-*) are never touched.
The receipt seeds are signed with receipt_fuzz_key.pem (needs python3-cryptography).
"""
import base64, hashlib, json, os, pathlib, shutil

HERE = pathlib.Path(__file__).resolve().parent
CORPUS = HERE / "corpus"


def write(target, name, data):
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    (d / name).write_bytes(data)


def clean(target):
    d = CORPUS / target
    if d.exists():
        for f in d.iterdir():
            if not f.name.startswith("crash-"):
                f.unlink()


def plan(*sizes):
    return bytes([len(sizes)]) + bytes(sizes)


# ---- chat_request: the body --------------------------------------------------------
def chat():
    t = "chat_request"
    clean(t)
    msg = [{"role": "user", "content": "Hello"}]
    seeds = {
        "minimal": {"model": "eu/privatemode/gpt-oss-120b", "messages": msg},
        "bare_key_hints": {"model": "gpt-oss-120b", "region": "eu", "provider": "tinfoil", "messages": msg},
        "auto_region": {"model": "auto/auto/gpt-oss-120b", "messages": msg},
        "stream_usage": {"model": "global/chutes/kimi-k2.6", "messages": msg, "stream": True,
                         "stream_options": {"include_usage": True}},
        "failover_list": {"model": "eu/privatemode/Kimi-Big", "messages": msg,
                          "failover": ["global/chutes/kimi-k2.6", "auto/tinfoil/gpt-oss-120b"]},
        "failover_string": {"model": "gpt-oss-120b", "messages": msg, "failover": "global/tinfoil/dual"},
        "failover_too_many": {"model": "gpt-oss-120b", "messages": msg, "failover": ["a/b/c"] * 6},
        "failover_bad_entry": {"model": "gpt-oss-120b", "messages": msg, "failover": ["a/b"]},
        "params": {"model": "gpt-oss-120b", "messages": msg, "temperature": 0.7, "max_tokens": 64,
                   "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]},
        "temperature_out_of_range": {"model": "gpt-oss-120b", "messages": msg, "temperature": 2.5},
        "max_tokens_float": {"model": "gpt-oss-120b", "messages": msg, "max_tokens": 1.0},
        "stream_not_bool": {"model": "gpt-oss-120b", "messages": msg, "stream": "yes"},
        "no_model": {"messages": msg},
        "no_messages": {"model": "gpt-oss-120b"},
        "empty_model": {"model": "", "messages": msg},
        "transcription_route": {"model": "eu/privatemode/whisper-large-v3", "messages": msg},
        "unknown_model": {"model": "nowhere/none/none", "messages": msg},
        "messages_multi": {"model": "gpt-oss-120b", "messages": [
            {"role": "system", "content": "be brief"}, {"role": "user", "content": [{"type": "text", "text": "hi"}]},
            {"role": "assistant", "content": None, "tool_calls": []}]},
    }
    for name, v in seeds.items():
        write(t, name + ".json", json.dumps(v))
    write(t, "duplicate_model.json", '{"model":"a","model":"eu/privatemode/gpt-oss-120b","messages":[]}')
    write(t, "invalid_utf8.json", b'{"model":"gpt-oss-120b","messages":[{"role":"user","content":"\xff\xfe"}]}')
    write(t, "deep.json", '{"model":"gpt-oss-120b","messages":[],"x":' + "[" * 200 + "]" * 200 + "}")
    write(t, "big_number.json", '{"model":"gpt-oss-120b","messages":[],"n":1e400}')
    write(t, "not_object.json", '["model"]')
    write(t, "truncated.json", '{"model":"gpt-oss-120b","messages":[')
    write(t, "escaped_keys.json", '{"mod\\u0065l":"gpt-oss-120b","messages":[{"role":"user","content":"\\ud83d\\ude00"}]}')
    write(t, "empty", "")


# ---- sse_parser: limit byte, split plan, stream ---------------------------------
def sse():
    t = "sse_parser"
    clean(t)
    stream = ('data: {"choices":[{"delta":{"content":"Hel"}}]}\n\n'
              'data: {"choices":[{"delta":{"content":"lo"}}]}\n\n'
              ": keep-alive\n\n"
              "data: [DONE]\n\n")
    write(t, "openai_stream", b"\x00" + plan(7, 1, 0) + stream.encode())
    write(t, "crlf", b"\x00" + plan(1) + b"data: a\r\ndata: b\r\n\r\nevent: x\r\nid: 1\r\nretry: 5\r\n\r\n")
    write(t, "cr_only", b"\x00" + plan(2, 3) + b"data: a\rdata:b\r\rdata:c\r")
    write(t, "multiline", b"\x00" + plan() + b"data: line1\ndata: line2\ndata\n\n")
    write(t, "limit_hit", b"\x10" + plan(3) + b"data: 0123456789abcdef0123456789\n\n")
    write(t, "limit_by_joined_lines", b"\x08" + plan(1) + b"data:\ndata:\ndata:\ndata:\ndata:\ndata:\n\n")
    write(t, "partial_at_end", b"\x00" + plan(5) + b"data: {\"cut\":")
    write(t, "comment_only", b"\x00" + plan() + b":\n:\n\n")
    write(t, "no_space", b"\x00" + plan(4, 4) + b"data:x\nfield-without-colon\n\n")
    write(t, "empty", b"")
    write(t, "bom", b"\x00" + plan(1, 2) + b"\xef\xbb\xbfdata: a\n\n\xef\xbb\xbfdata: b\n\n")
    write(t, "partial_bom", b"\x00" + plan(1) + b"\xef\xbb")
    write(t, "cr_lf_split", b"\x00" + plan(8) + b"data: a\r\ndata: b\r\n\r\n")
    write(t, "id_retry_event", b"\x00" + plan(3) + b"id: 1\x00x\nretry: never\nevent\ndata:x\ndata\n\n")


# ---- chat_stream_decoder: flags byte, split plan, stream -------------------------
def chat_stream():
    t = "chat_stream_decoder"
    clean(t)

    def ev(obj):
        return "data: " + (obj if isinstance(obj, str) else json.dumps(obj, separators=(",", ":"))) + "\n\n"

    head = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m"}

    def chunk(choices, **extra):
        return ev({**head, "choices": choices, **extra})

    usage = {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
    openai = (chunk([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]) +
              chunk([{"index": 0, "delta": {"content": "Hi"}, "finish_reason": None}]) +
              chunk([{"index": 0, "delta": {}, "finish_reason": "stop"}]) +
              chunk([], usage=usage) + "data: [DONE]\n\n")
    write(t, "openai_usage_asked", b"\x01" + plan(9, 1) + openai.encode())
    write(t, "openai_usage_not_asked", b"\x00" + plan() + openai.encode())
    n2 = (chunk([{"index": 0, "delta": {"content": "a"}}]) + chunk([{"index": 1, "delta": {"content": "b"}}]) +
          chunk([{"index": 1, "delta": {}}, {"index": 0, "delta": {"content": "c"}}]) +
          chunk([{"index": 0, "delta": {}, "finish_reason": "stop"}]) +
          chunk([{"index": 1, "delta": {}, "finish_reason": "length"}]) + chunk([], usage=usage))
    write(t, "n2_no_done", b"\x01" + plan(17) + n2.encode())
    fill = (ev({"choices": [{"delta": {"role": "assistant"}}]}) +
            ev({"id": "up", "created": 5, "choices": [{"index": 0, "delta": {"content": "x"}}]}) +
            ev({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "usage": usage}) +
            ev({"usage": usage}))
    write(t, "fill_in", b"\x01" + plan(4) + fill.encode())
    write(t, "error_mid_stream", b"\x00" + plan(6) +
          (chunk([{"index": 0, "delta": {"content": "a"}}]) + ev({"error": {"message": "overloaded"}}) +
           chunk([{"index": 0, "delta": {"content": "b"}}])).encode())
    write(t, "error_null", b"\x00" + plan() + chunk([{"index": 0, "delta": {}}], error=None).encode())
    write(t, "multiline_crlf", b"\x00" + plan(2, 5) +
          b'\xef\xbb\xbf: hi\r\n\r\ndata: {"choices":\r\ndata: [{"index":0,"delta":{"content":"a\\nb"}}]}\r\n\r\n')
    write(t, "not_json", b"\x00" + plan(1) + b"data: hello\n\ndata: [1]\n\ndata\n\ndata: {\"a\":\n\n")
    write(t, "oversized", b"\x10" + plan(3) + (chunk([{"index": 0, "delta": {"content": "x" * 40}}])).encode())
    write(t, "azure_filter_first", b"\x01" + plan() +
          (ev({"choices": [], "created": 0, "id": "", "model": "", "object": "", "prompt_filter_results": []}) +
           chunk([{"index": 0, "delta": {"content": "a"}, "finish_reason": "stop"}])).encode())
    write(t, "duplicates", b"\x00" + plan(7) +
          b'data: {"choices":[{"delta":{},"index":1,"index":0}],"choices":[],"id":1,"id":null,"usage":null,"usage":{}}\n\n')
    write(t, "empty", b"")


# ---- multipart_parser: split plan, limits byte, Content-Type '\n' body ---------------
def multipart():
    t = "multipart_parser"
    clean(t)
    b = "XyZ123"
    ct = f"multipart/form-data; boundary={b}"
    body = (f"--{b}\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper-1\r\n"
            f"--{b}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n"
            f"Content-Type: audio/wav\r\n\r\nRIFF....WAVEfmt \r\n--{b}--\r\n")
    write(t, "two_parts", plan() + b"\x00" + (ct + "\n" + body).encode())
    write(t, "two_parts_split", plan(1, 7, 0) + b"\x00" + (ct + "\n" + body).encode())
    write(t, "quoted_boundary", plan(3) + b"\x00" + ('multipart/form-data; boundary="a b:c"\n'
          '--a b:c\r\nContent-Disposition: form-data; name="x"\r\n\r\n1\r\n--a b:c--').encode())
    write(t, "preamble_epilogue", plan(2) + b"\x00" + (ct + "\npreamble\r\n--" + b + "\r\n"
          "Content-Disposition: form-data; name=\"a\"\r\n\r\nv\r\n--" + b + "--\r\n\r\n").encode())
    write(t, "data_after_close", plan() + b"\x00" + (ct + "\n--" + b + "--\r\ngarbage").encode())
    write(t, "truncated", plan(5) + b"\x00" + (ct + "\n--" + b + "\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nhal").encode())
    write(t, "no_disposition", plan() + b"\x00" + (ct + "\n--" + b + "\r\nContent-Type: text/plain\r\n\r\nx\r\n--" + b + "--").encode())
    write(t, "no_name", plan() + b"\x00" + (ct + "\n--" + b + "\r\nContent-Disposition: form-data; filename=\"a\"\r\n\r\nx\r\n--" + b + "--").encode())
    write(t, "escaped_filename", plan() + b"\x00" + (ct + "\n--" + b + "\r\nContent-Disposition: form-data; name=\"f\"; filename=\"a\\\"b.wav\"\r\n\r\nx\r\n--" + b + "--").encode())
    write(t, "small_limits", plan(4) + b"\x0b" + (ct + "\n" + body).encode())
    write(t, "too_many_parts", plan() + b"\x01" + (ct + "\n" + ("--" + b + "\r\nContent-Disposition: form-data; name=\"p\"\r\n\r\nv\r\n") * 4 + "--" + b + "--").encode())
    write(t, "padding_after_delimiter", plan() + b"\x00" + (ct + "\n--" + b + " \t\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nv\r\n--" + b + "--").encode())
    write(t, "bad_after_delimiter", plan() + b"\x00" + (ct + "\n--" + b + "x\r\n").encode())
    write(t, "near_delimiter_in_data", plan(9) + b"\x00" + (ct + "\n--" + b + "\r\nContent-Disposition: form-data; name=\"f\"; filename=\"a\"\r\n\r\n\r\n--XyZ12\r\n-\r\n--" + b + "--").encode())
    write(t, "two_boundaries", plan() + b"\x00" + b"multipart/form-data; boundary=a; boundary=b\n--a--")
    write(t, "not_multipart", plan() + b"\x00" + b"application/json\n{}")
    write(t, "uppercase_type", plan() + b"\x00" + ("MULTIPART/Form-Data;BOUNDARY=" + b + "\n--" + b + "--").encode())


# ---- config_loader: YAML text ---------------------------------------------------------
def config():
    t = "config_loader"
    clean(t)
    root = HERE.parent.parent
    for f in ["deploy/examples/providers.yaml", "deploy/examples/demo.yaml", "deploy/compose/config.yaml"]:
        p = root / f
        if p.exists():
            write(t, f.replace("/", "_"), p.read_bytes())
    write(t, "minimal.yaml", "providers:\n  p: {base_url: \"http://127.0.0.1:9/v1\"}\nroutes:\n"
          "  - {id: \"eu/p/m\", provider: p, upstream_model: m}\n")
    write(t, "route_unknown_provider.yaml", "providers:\n  p: {base_url: \"http://x/v1\"}\nroutes:\n"
          "  - {id: \"eu/q/m\", provider: q, upstream_model: m}\n")
    write(t, "route_auto_segment.yaml", "providers:\n  p: {base_url: \"http://x/v1\"}\nroutes:\n"
          "  - {id: \"auto/p/m\", provider: p, upstream_model: m}\n")
    write(t, "duplicate_route.yaml", "providers:\n  p: {base_url: \"http://x/v1\"}\nroutes:\n"
          "  - {id: \"eu/p/m\", provider: p, upstream_model: m}\n  - {id: \"EU/P/m\", provider: p, upstream_model: n}\n")
    write(t, "env_missing.yaml", "providers:\n  p: {base_url: \"http://x/v1\", api_key: \"${TRESOR_FUZZ_UNSET_VAR}\"}\n")
    write(t, "bad_types.yaml", "server:\n  listen: [1, 2]\n  threads: -1\n  max_body_bytes: 1e99\ntimeouts: {default_seconds: 700, max_seconds: 600}\n")
    write(t, "map_key_map.yaml", "? {a: b}\n: c\n")
    write(t, "anchors.yaml", "a: &x {b: *x}\nproviders: *x\n")
    write(t, "pricing.yaml", "providers:\n  p: {base_url: \"https://x/v1\"}\nroutes:\n"
          "  - {id: \"eu/p/w\", provider: p, upstream_model: w, type: transcription,"
          " pricing: {billing_unit: audio_minute, unit_amount: 0.006, currency: usd}}\n"
          "receipts: {durability: async, signing: at_issue, ttl_seconds: 60, retired_keys: [{kid: old, public_key_file: /nonexistent}]}\n"
          "store: \"redis://127.0.0.1:6379\"\nattestation: {mode: dev, max_age_seconds: 1}\n"
          "auth:\n  keys:\n    - {sha256: \"" + "a" * 64 + "\", customer: c, limits: {per_minute: 1}}\n"
          "  customers: {c: {credit: 1.5, currency: usd}}\n")
    head = "providers:\n  p: {base_url: \"https://x/v1\"}\nroutes:\n"
    key = "auth:\n  keys:\n    - {sha256: \"" + "b" * 64 + "\", customer: c, limits: %s}\n  customers: {c: {credit: %s, currency: eur}}\n"
    write(t, "money_limits.yaml", head +
          "  - {id: \"eu/p/m\", provider: p, upstream_model: m, max_output_tokens: 8192,"
          " pricing: {input_per_mtok: 0.000000001, output_per_mtok: 1e9, currency: eur}}\n"
          "  - {id: \"eu/p/w\", provider: p, upstream_model: w, type: transcription, max_audio_seconds: 600,"
          " pricing: {billing_unit: request, unit_amount: 0.003, currency: eur}}\n" +
          key % ("{per_minute: 60, per_day: 1000, tokens_per_minute: 100000, tokens_per_day: 1000000}", "9223372036.854775807"))
    write(t, "money_too_fine.yaml", head + "  - {id: \"eu/p/m\", provider: p, upstream_model: m,"
          " pricing: {input_per_mtok: 0.0000000001, currency: usd}}\n")
    write(t, "money_too_big.yaml", head + "  - {id: \"eu/p/m\", provider: p, upstream_model: m}\n" +
          key % ("{tokens_per_day: 1}", "9.3e9"))
    write(t, "limits_out_of_range.yaml", head +
          "  - {id: \"eu/p/m\", provider: p, upstream_model: m, max_output_tokens: 0, max_audio_seconds: 1e9}\n" +
          key % ("{tokens_per_minute: -1, tokens_per_day: 1000000000001}", "1e9"))
    write(t, "tabs_and_garbage.yaml", "server:\n\tlisten: x\n")
    write(t, "empty.yaml", "")


# ---- money: decimal text '\n', then 8-byte LE integers ----------------------------------
def money():
    t = "money"
    clean(t)

    def ints(*values):
        return b"".join(v.to_bytes(8, "little") for v in values)

    m = 2**63 - 1
    # name: (text, output price nanos/Mtok, prompt, completion, step, body bytes/audio s)
    seeds = {
        "typical": ("0.15", 600_000_000, 1200, 350, 1, 4096),
        "nine_decimals": ("0.000000001", 1, 1, 1, 1, 1),
        "too_fine": ("0.0000000001", 0, 0, 0, 0, 0),
        "zeros_beyond_nine": ("1.50000000000000000000", 2_000_000_000, 3, 4, 5, 60),
        "exponent": ("1e9", 9_300_000_000 * 10**9, 7, 0, 1, 61),
        "exponent_too_big": ("9.3e9", 0, 0, 0, 0, 0),
        "max": ("9223372036.854775807", m, 10**6, 10**6, 1, 3600),
        "max_plus_one": ("9223372036.854775808", 0, 0, 0, 0, 0),
        "negative_exponent": ("1500E-3", 3, 999_999, 500_000, 1, 30),
        "half_up": ("0.5", 1, 1, 0, 0, 90),  # 0.5 nano rounds up to 1
        "huge_counts": ("9223372036.854775807", m, m, m, m, 2**64 - 1),
        "leading_point": (".25", 0, 2, 2, 2, 2),
        "trailing_point": ("7.", 0, 0, 0, 0, 1),
        "signed": ("-1", 5, 5, 5, 5, 5),
        "plus_exponent": ("2.5e+3", 0, 10, 10, 10, 10),
        "bad_exponent": ("1e+-5", 0, 0, 0, 0, 0),
        "no_digits": (".e5", 0, 0, 0, 0, 0),
        "space": (" 1", 0, 0, 0, 0, 0),
        "unpriced_input": ("", 250_000_000, 100, 100, 100, 2**62),
        "big_max_tokens": ("1", 1, 0, m, 0, 10),
    }
    for name, (text, *values) in seeds.items():
        write(t, name, text.encode() + b"\n" + ints(*values))


# ---- timeout_override: max byte, values by line --------------------------------------
def timeout():
    t = "timeout_override"
    clean(t)
    for name, v in {"plain": b"\x0030", "spaces": b"\x00 \t42\t ", "clamped": b"\x0a99999999999999999999",
                    "zero": b"\x00000", "fraction": b"\x001.5", "signed": b"\x00+5", "negative": b"\x00-1",
                    "hex": b"\x000x10", "exp": b"\x001e3", "empty_value": b"\x00", "duplicate": b"\x0010\n10",
                    "comma_joined": b"\x0010, 20", "absent": b"", "nul": b"\x001\x002"}.items():
        write(t, name, v)


# ---- trace_context: traceparent '\n' tracestate ('\n' more traceparents) -----------------
def trace_context():
    t = "trace_context"
    clean(t)
    tid, sid = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    for name, v in {
        "w3c_example": f"00-{tid}-{sid}-01\ncongo=t61rcWkgMzE,rojo=00f067aa0ba902b7",
        "not_sampled": f"00-{tid}-{sid}-00\n",
        "uppercase": f"00-{tid.upper()}-{sid}-01\na=b",
        "version_ff": f"ff-{tid}-{sid}-01\na=b",
        "future_version": f"cc-{tid}-{sid}-01-what-the-future-holds\na=b",
        "zero_trace": f"00-{'0' * 32}-{sid}-01\n",
        "zero_parent": f"00-{tid}-{'0' * 16}-01\n",
        "v00_too_long": f"00-{tid}-{sid}-01-x\n",
        "twice": f"00-{tid}-{sid}-01\na=b\n00-{tid}-{sid}-01",
        "long_state": f"00-{tid}-{sid}-01\n" + ",".join(f"k{i}=v{i}" for i in range(200)),
        "control_in_state": f"00-{tid}-{sid}-01\na=b\x01c",
        "empty": "",
    }.items():
        write(t, name, v.encode())


# ---- route_id: mode byte, model '\n' region '\n' provider ('\n' failover)* ------------
def route():
    t = "route_id"
    clean(t)
    seeds = {
        "compound": (0, ["eu/privatemode/gpt-oss-120b"]),
        "uppercase": (0, ["EU/PrivateMode/Kimi-Big"]),
        "auto_all": (0, ["auto/auto/gpt-oss-120b"]),
        "bare_hints": (6, ["gpt-oss-120b", "eu", "tinfoil"]),
        "bare_hint_region": (2, ["gpt-oss-120b", "global", ""]),
        "failover": (0, ["eu/privatemode/Kimi-Big", "", "", "global/chutes/kimi-k2.6", "auto/auto/gpt-oss-120b", "bad"]),
        "failover_duplicates": (0, ["auto/auto/gpt-oss-120b", "", "", "eu/privatemode/gpt-oss-120b", "EU/PrivateMode/gpt-oss-120b"]),
        "transcription": (1, ["whisper-large-v3"]),
        "wrong_type": (1, ["global/tinfoil/gpt-oss-120b"]),
        "dual": (1, ["dual"]),
        "two_segments": (0, ["eu/gpt-oss-120b"]),
        "four_segments": (0, ["eu/privatemode/gpt/oss"]),
        "empty_segment": (0, ["eu//gpt-oss-120b"]),
        "empty": (0, [""]),
        "slash_only": (0, ["//"]),
    }
    for name, (mode, lines) in seeds.items():
        write(t, name, bytes([mode]) + "\n".join(lines).encode())


# ---- receipt_jws: JWS [\0 JWKS] ---------------------------------------------------------
def b64u(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def receipts():
    t = "receipt_jws"
    clean(t)
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
    key = serialization.load_pem_private_key((HERE / "receipt_fuzz_key.pem").read_bytes(), None)
    other = ec.generate_private_key(ec.SECP256R1())

    def jwk(k, kid):
        n = k.public_key().public_numbers()
        return {"kty": "EC", "crv": "P-256", "x": b64u(n.x.to_bytes(32, "big")), "y": b64u(n.y.to_bytes(32, "big")),
                "kid": kid, "use": "sig", "alg": "ES256"}

    def sign(k, kid, claims, alg="ES256"):
        h = b64u(json.dumps({"alg": alg, "kid": kid}, separators=(",", ":")).encode())
        p = b64u(json.dumps(claims, separators=(",", ":")).encode())
        r, s = decode_dss_signature(k.sign(f"{h}.{p}".encode(), ec.ECDSA(hashes.SHA256())))
        return f"{h}.{p}.{b64u(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"

    claims = {"iss": "tresor-router", "sub": "acme", "jti": "rcpt_0123", "iat": 1764000000, "exp": 1764604800,
              "model": "eu/privatemode/gpt-oss-120b", "request_sha256": hashlib.sha256(b"{}").hexdigest(),
              "usage": {"prompt_tokens": 3, "completion_tokens": 5}}
    jwks = json.dumps({"keys": [jwk(key, "router-receipt-1")]})
    jwks2 = json.dumps({"keys": [jwk(other, "old"), jwk(key, "router-receipt-1")]})
    good = sign(key, "router-receipt-1", claims)
    write(t, "valid_own_jwks", good)
    write(t, "valid_explicit_jwks", good + "\0" + jwks)
    write(t, "valid_retired", sign(other, "old", claims) + "\0" + jwks2)
    write(t, "unknown_kid", sign(key, "nope", claims) + "\0" + jwks)
    write(t, "wrong_key", sign(other, "router-receipt-1", claims))
    parts = good.split(".")
    write(t, "payload_swapped", parts[0] + "." + b64u(b'{"sub":"evil"}') + "." + parts[2])
    write(t, "alg_none", b64u(b'{"alg":"none","kid":"router-receipt-1"}') + "." + parts[1] + ".")
    write(t, "alg_hs256", sign(key, "router-receipt-1", claims, alg="HS256"))
    write(t, "short_signature", parts[0] + "." + parts[1] + "." + parts[2][:20])
    write(t, "two_segments", parts[0] + "." + parts[1])
    write(t, "padding_chars", good + "==")
    write(t, "jwks_not_json", good + "\0{keys:")
    write(t, "jwks_bad_point", good + "\0" + json.dumps({"keys": [dict(jwk(key, "router-receipt-1"), x=b64u(b"\x01" * 32))]}))
    write(t, "jwks_wrong_curve", good + "\0" + json.dumps({"keys": [dict(jwk(key, "router-receipt-1"), crv="P-384")]}))
    write(t, "empty", "")


# ---- request_head: limit byte, split plan, raw head -------------------------------------
def head():
    t = "request_head"
    clean(t)
    key = "tr-" + "ab" * 48
    get = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    chat = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n"
            "Content-Type: application/json\r\nContent-Length: 42\r\nX-Request-Id: req-1.2:3_4\r\n"
            "X-Tresor-Timeout-Seconds: 30\r\nX-Tresor-Receipt: false\r\n\r\n").encode()
    write(t, "get", b"\x00" + plan() + get)
    write(t, "chat", b"\x00" + plan(5, 1) + chat)
    write(t, "chat_split_everywhere", b"\x00" + plan(1) + chat)
    write(t, "upload", b"\x00" + plan(16) + (f"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: x\r\nAuthorization: bearer  {key}  \r\n"
          "Content-Type: multipart/form-data; boundary=abc\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n").encode())
    write(t, "cl_and_te", b"\x00" + plan() + b"POST /v1/chat/completions HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n")
    write(t, "two_content_lengths", b"\x00" + plan() + b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n")
    write(t, "te_not_chunked_last", b"\x00" + plan() + b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n")
    write(t, "huge_content_length", b"\x00" + plan() + b"POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n")
    write(t, "header_limit", b"\x01" + plan() + b"GET / HTTP/1.1\r\nX-Pad: " + b"a" * 200 + b"\r\n\r\n")
    write(t, "obs_fold", b"\x00" + plan() + b"GET / HTTP/1.1\r\nX-A: 1\r\n folded\r\n\r\n")
    write(t, "bad_header_name", b"\x00" + plan() + b"GET / HTTP/1.1\r\nX A: 1\r\n\r\n")
    write(t, "ctl_in_value", b"\x00" + plan() + b"GET / HTTP/1.1\r\nX-A: a\x01b\r\n\r\n")
    write(t, "bare_lf", b"\x00" + plan() + b"GET / HTTP/1.1\nHost: x\n\n")
    write(t, "absolute_form", b"\x00" + plan() + b"GET http://evil.example:81/v1/models HTTP/1.1\r\nHost: evil\r\n\r\n")
    write(t, "http10", b"\x00" + plan() + b"POST /v1/chat/completions HTTP/1.0\r\nContent-Length: 2\r\n\r\n")
    write(t, "bad_request_id", b"\x00" + plan() + b"GET / HTTP/1.1\r\nX-Request-Id: a b<script>\r\n\r\n")
    write(t, "long_request_id", b"\x00" + plan() + b"GET / HTTP/1.1\r\nX-Request-Id: " + b"a" * 129 + b"\r\n\r\n")
    write(t, "duplicate_timeout", b"\x00" + plan() + b"GET / HTTP/1.1\r\nX-Tresor-Timeout-Seconds: 5\r\nx-tresor-timeout-seconds: 6\r\n\r\n")
    write(t, "no_host", b"\x00" + plan() + b"GET /healthz HTTP/1.1\r\n\r\n")
    write(t, "two_hosts", b"\x00" + plan(3) + b"GET /healthz HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n")
    write(t, "host_url", b"\x00" + plan() + b"GET /healthz HTTP/1.1\r\nHost: http://evil/x\r\n\r\n")
    write(t, "host_ipv6", b"\x00" + plan() + b"GET /healthz HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n")
    write(t, "bad_version", b"\x00" + plan() + b"GET / HTTP/9.9\r\n\r\n")
    write(t, "garbage", b"\x00" + plan() + b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
    write(t, "empty", b"")


# ---- transcription_request: split plan, flags byte, Content-Type '\n' body --------------
def transcription():
    t = "transcription_request"
    clean(t)
    b = "Bnd01"
    ct = f"multipart/form-data; boundary={b}"

    def form(fields, file=("a.wav", "audio/wav", "RIFF....WAVE")):
        out = ""
        for name, value in fields:
            out += f"--{b}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
        if file:
            fn, ctype, data = file
            out += f"--{b}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{fn}\"\r\n"
            if ctype:
                out += f"Content-Type: {ctype}\r\n"
            out += f"\r\n{data}\r\n"
        return (ct + "\n" + out + f"--{b}--\r\n").encode()

    write(t, "valid", plan() + b"\x01" + form([("model", "whisper-large-v3")]))
    write(t, "valid_split", plan(1, 9, 0) + b"\x01" + form([("model", "eu/privatemode/whisper-large-v3"),
          ("language", "de"), ("response_format", "verbose_json"), ("timestamp_granularities[]", "word")]))
    write(t, "hints", plan(4) + b"\x00" + form([("model", "whisper-large-v3"), ("region", "eu"), ("provider", "privatemode")]))
    write(t, "type_from_extension", plan() + b"\x01" + form([("model", "m")], ("x.mp3", "application/octet-stream", "ID3")))
    write(t, "no_content_type", plan() + b"\x01" + form([("model", "m")], ("x.flac", None, "fLaC")))
    write(t, "unsupported_type", plan() + b"\x01" + form([("model", "m")], ("x.exe", "application/x-msdownload", "MZ")))
    write(t, "no_file", plan() + b"\x01" + form([("model", "m")], None))
    write(t, "empty_file", plan() + b"\x01" + form([("model", "m")], ("a.wav", "audio/wav", "")))
    write(t, "no_model", plan() + b"\x01" + form([("language", "en")]))
    write(t, "duplicate_model", plan() + b"\x01" + form([("model", "a"), ("model", "b")]))
    write(t, "failover_field", plan() + b"\x01" + form([("model", "a"), ("failover[]", "eu/x/y")]))
    write(t, "bad_format", plan() + b"\x01" + form([("model", "a"), ("response_format", "srt")]))
    write(t, "non_utf8_field", plan() + b"\x01" + form([("model", "a"), ("prompt", "@bad@")]).replace(b"@bad@", b"\xff\xfe"))
    write(t, "file_over_max", plan() + b"\x04" + form([("model", "a")], ("a.wav", "audio/wav", "x" * 64)))
    write(t, "two_files", plan() + b"\x01" + form([("model", "a")]).replace(f"--{b}--".encode(),
          f"--{b}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"b.wav\"\r\n\r\nx\r\n--{b}--".encode()))
    write(t, "field_with_filename", plan() + b"\x01" + (ct + f"\n--{b}\r\nContent-Disposition: form-data; name=\"model\"; filename=\"m\"\r\n\r\nm\r\n--{b}--").encode())
    write(t, "truncated", plan(3) + b"\x01" + form([("model", "a")])[:-12])


# ---- upstream_exchange: plan 1, plan 2, split point (3 bytes), response 1 + response 2 -
def upstream():
    t = "upstream_exchange"
    clean(t)

    def ok(body, extra=""):
        return f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n{extra}Content-Length: {len(body)}\r\n\r\n{body}"

    def chunked(*pieces):
        out = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
        for p in pieces:
            out += f"{len(p):x}\r\n{p}\r\n"
        return out + "0\r\n\r\n"

    def seed(name, first, second, p1=(), p2=()):
        first, second = first.encode(), second.encode()
        write(t, name, plan(*p1) + plan(*p2) + len(first).to_bytes(3, "big") + first + second)

    early = "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"
    cont = "HTTP/1.1 100 Continue\r\n\r\n"
    second = ok('{"SECOND":2}')
    seed("keep_alive_twice", ok('{"first":1}'), second)
    seed("early_hints", early + ok('{"first":1}'), second)
    seed("continue_and_early_hints_split", cont + early + ok('{"first":1}'), second, (1, 7, 30), (5,))
    seed("interim_then_chunked", early + chunked("data: first\n\n", "data: [DONE]\n\n"), second, (9,))
    seed("many_interim", early * 20 + ok("{}"), second)
    seed("switching_protocols", "HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n", second)
    seed("extra_after_length", ok("first") + ok("SMUGGLED"), second)
    seed("extra_after_chunked", chunked("first") + "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nBAD", second, (40,))
    seed("short_content_length", ok("first").replace("Content-Length: 5", "Content-Length: 3"), second)
    seed("close_delimited", "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{\"eof\":1}", second)
    seed("http10_keep_alive", "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok", second)
    seed("http10_default_close", "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", second)
    seed("connection_close", ok("first", "Connection: close\r\n"), second)
    seed("cut_body", ok("first-and-more")[:-6], second, (3,))
    seed("cut_chunked", chunked("first", "more")[:-9], second)
    seed("cut_head", ok("first")[:20], second)
    seed("stale_second", ok("first"), "")
    seed("second_cut_head", ok("first"), "HTTP/1.1 200 O")
    seed("no_content_then_extra", "HTTP/1.1 204 No Content\r\n\r\nX", second)
    seed("huge_head", "HTTP/1.1 200 OK\r\nX-Big: " + "a" * 66000 + "\r\nContent-Length: 0\r\n\r\n", second)
    seed("huge_interim_heads", ("HTTP/1.1 103 Early Hints\r\nLink: " + "b" * 9000 + "\r\n\r\n") * 8 + ok("{}"), second)
    seed("gzip_answer", ok("first", "Content-Encoding: gzip\r\n"), second)


# ---- stream_seam: flags byte, split plan, delivered pieces \0 replay pieces ----------
# A piece is a field byte (0 content, 1 reasoning_content, 2 refusal, 3/4 tool call 0/1
# arguments) and its text; pieces are separated by \x1e. Flags: 1 prefill, 2 the client
# has its finish, 4 usage-only chunk at the end, 8 the replay finishes, 16 the replay
# re-sends the delivered text cut by the split plan first.
def stream_seam():
    t = "stream_seam"
    clean(t)

    def pieces(*ps):
        # Field bytes 'A'..'E' (65..69, % 5 = 0..4): a 0 byte would end the section.
        return b"\x1e".join(bytes([65 + f]) + (x.encode() if isinstance(x, str) else x) for f, x in ps)

    def seed(name, flags, split, had, new):
        write(t, name, bytes([flags]) + split + pieces(*had) + b"\0" + pieces(*new))

    hello = [(0, "Hel"), (0, "lo wo")]
    seed("replay_straddle", 16 | 8 | 4, plan(2, 3), hello, [(0, "rld!")])
    seed("replay_exact_boundary", 16 | 8, plan(8), hello, [(0, " and more")])
    seed("replay_one_chunk", 16 | 8, plan(), hello, [(0, "!")])
    seed("replay_diverged", 8, plan(), hello, [(0, "Help")])
    seed("replay_short_finish", 8, plan(), hello, [(0, "Hello")])
    seed("replay_no_finish", 16, plan(1), hello, [(0, "x")])
    seed("utf8_escapes", 16 | 8, plan(1, 2, 3), [(0, b'caf\x80 "q"\n\\ \x01'), (0, b"\x83\x81")],
         [(0, b"\x82 end\t")])
    seed("utf8_same_first_byte", 8, plan(), [(0, b"caf\x80")], [(0, b"caf\x81 noir")])
    seed("reasoning_then_content", 16 | 8, plan(4), [(1, "Let me think"), (0, "Ans")], [(0, "wer")])
    seed("reasoning_not_covered", 8, plan(), [(1, "Let me think")], [(1, "Let me"), (0, "Answer")])
    seed("refusal", 16 | 8, plan(2), [(2, "I can't")], [(2, " help")])
    seed("tool_calls", 16 | 8 | 4, plan(3, 1), [(3, '{"city":'), (3, '"Par')], [(3, 'is"}'), (4, "{}")])
    seed("tool_call_diverged", 8, plan(), [(3, '{"city":"Par')], [(3, '{"city":"Lon')])
    seed("finish_delivered", 2 | 16 | 8 | 4, plan(5), [(0, "Hi")], [])
    seed("finish_delivered_more", 2 | 16 | 8, plan(), [(0, "Hi")], [(0, " there")])
    seed("prefill", 1 | 8 | 4, plan(), [(0, "Once upon")], [(0, " a time"), (0, ", the end")])
    seed("prefill_resends", 1 | 16 | 8, plan(2), [(0, "Once")], [(0, " more")])
    seed("nothing_delivered", 8 | 4, plan(), [], [(0, "Hi")])
    write(t, "empty", b"")


def log_surface():
    t = "log_surface"
    clean(t)
    for name, target in [
        ("checkpoint", "/v1/log/checkpoint"), ("key", "/v1/log/key"),
        ("tile0_full", "/v1/log/tile/0/001"), ("tile0_partial", "/v1/log/tile/0/002.p/188"),
        ("tile1_partial", "/v1/log/tile/1/000.p/2"), ("tile_grouped", "/v1/log/tile/0/x000/x000/001"),
        ("tile_bad_width", "/v1/log/tile/0/002.p/0"), ("tile_past_end", "/v1/log/tile/0/003"),
        ("tile_level_63", "/v1/log/tile/63/000.p/1"), ("tile_huge_index", "/v1/log/tile/0/x999/x999/x999/x999/x999/x999/x999/999"),
        ("entries", "/v1/log/tile/entries/000"), ("entries_partial", "/v1/log/tile/entries/002.p/188"),
        ("consistency", "/v1/log/proof/consistency?old=300&new=700"),
        ("consistency_zero", "/v1/log/proof/consistency?old=0&new=0"),
        ("consistency_reversed", "/v1/log/proof/consistency?old=700&new=3"),
        ("consistency_overflow", "/v1/log/proof/consistency?old=1&new=18446744073709551616"),
        ("inclusion", "/v1/log/proof/inclusion?index=699&size=700"),
        ("inclusion_duplicate_params", "/v1/log/proof/inclusion?index=1&index=2&size=3"),
    ]:
        write(t, name, target)
    write(t, "note_unsigned", "/v1/log/checkpoint\0fuzz.example/log\n700\nAAAA\n\n\u2014 fuzz.example/log AAAAAAAA\n")
    write(t, "cosignature_garbage", "/v1/log/cosignature\0not a note")
    write(t, "cosignature_line", "/v1/log/cosignature\0fuzz.example/log\n700\nAAAA\n\n\u2014 witness.example/w1 obLD1AAAAAA=\n")
    write(t, "note_no_blank", "/v1/log/key\0fuzz.example/log\n1\n")
    write(t, "empty", b"")


if __name__ == "__main__":
    log_surface(); trace_context()
    chat(); sse(); chat_stream(); multipart(); transcription(); config(); money(); timeout(); route(); receipts(); head(); upstream(); stream_seam()
    for d in sorted(CORPUS.iterdir()):
        print(d.name, len(list(d.iterdir())))
