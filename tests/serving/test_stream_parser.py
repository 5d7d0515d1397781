"""StreamScanner and scan_body: recorded streams, every way of splitting them, and edge cases.

The oracle below is deliberately naive (whole body, ``bytes.find``, ``json.loads`` on every
event) so that it shares no code or tricks with the scanner's incremental fast path.
"""

from __future__ import annotations

import itertools
import json
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.serving.stream_parser import Api, ScanResult, StreamScanner, scan_body
from tests.support.paths import DATA

STREAMS = DATA / "streams"
QUOTA = (
    "You exceeded your current quota, please check your plan and billing details. For more "
    "information on this error, read the docs: "
    "https://platform.openai.com/docs/guides/error-codes/api-errors."
)

# file -> (api, prompt_tokens, completion_tokens, tokens_estimated, output_events, error)
EXPECTED: dict[str, tuple[Api, int | None, int | None, bool, int, str | None]] = {
    "deepseek__chat_reasoning_tool_calls.sse": (Api.CHAT, 374, 61, False, 28, None),
    "llama-cpp-python__chat_stream.sse": (Api.CHAT, None, 5, True, 5, None),
    # an excerpt cut before its finish chunk: counts from the last `timings` that was parsed
    "llama-server__chat_reasoning_excerpt.sse": (Api.CHAT, 17, 8, False, 2, None),
    # no include_usage: exact counts from the finish chunk's `timings` (1 + 29 cached prompt)
    "llama-server__chat_stream_plain.sse": (Api.CHAT, 30, 6, False, 6, None),
    "llama-server__chat_stream_usage.sse": (Api.CHAT, 32, 6, False, 6, None),
    "llama-server__compl_stream.sse": (Api.COMPLETIONS, 5, 5, False, 5, None),
    "llama-server__compl_stream_usage.sse": (Api.COMPLETIONS, 5, 5, False, 5, None),
    "lmstudio__chat_reasoning_excerpt.sse": (Api.CHAT, None, 3, True, 3, None),
    "ollama__api_chat.ndjson": (Api.OLLAMA_CHAT, 10, 17, False, 2, None),
    "ollama__api_generate.ndjson": (Api.OLLAMA_GENERATE, 26, 259, False, 1, None),
    "ollama__api_generate_nocounts.ndjson": (Api.OLLAMA_GENERATE, None, 7, True, 7, None),
    "ollama__v1_chat_tool_calls.sse": (Api.CHAT, None, 2, True, 2, None),
    "ollama__v1_completions_include_usage.sse": (Api.COMPLETIONS, 30, 5, False, 4, None),
    "openai__chat_include_usage_excerpt.sse": (Api.CHAT, 16, 300, False, 7, None),
    "openai__completions_include_usage.sse": (Api.COMPLETIONS, 14, 16, False, 16, None),
    "openai__responses_error.sse": (Api.RESPONSES, None, 0, True, 0, QUOTA),
    "openai__responses_function_call.sse": (Api.RESPONSES, 45, 25, False, 6, None),
    "xai__responses_text.sse": (Api.RESPONSES, 28, 21, False, 13, None),
    # Anthropic Messages: input tokens from message_start, output from message_delta; after
    # the first text delta every delta counts (two empty input_json_deltas included)
    "anthropic__messages_tool_use.sse": (Api.MESSAGES, 472, 89, False, 23, None),
    # llama-server's /v1/messages: input_tokens 49 (none cached), 8 text deltas
    "llama-server__messages_stream.sse": (Api.MESSAGES, 49, 8, False, 8, None),
    # its mid-stream error event is llama's own error object, not Anthropic's: still an error
    "llama-server__messages_error.sse": (
        Api.MESSAGES,
        49,
        2,
        True,
        2,
        "Context size has been exceeded.",
    ),
}
NDJSON = {Api.OLLAMA_CHAT, Api.OLLAMA_GENERATE}


def _load(name: str) -> bytes:
    return (STREAMS / name).read_bytes()


def _expected(name: str) -> ScanResult:
    _, prompt, completion, estimated, events, error = EXPECTED[name]
    return ScanResult(prompt, completion, estimated, events, error)


# -- oracle -----------------------------------------------------------------------------------


def _oracle_payload(api: Api, event: bytes) -> Any:
    if api in NDJSON:
        text = event.strip()
    else:
        lines = [line.rstrip(b"\r") for line in event.split(b"\n")]
        text = b"\n".join(line[5:].lstrip(b" ") for line in lines if line.startswith(b"data:"))
    try:
        return json.loads(text)
    except ValueError:
        return None


def _oracle_is_output(api: Api, obj: Any) -> bool:
    if not isinstance(obj, dict):
        return False
    if api is Api.RESPONSES:
        return str(obj.get("type", "")).endswith(".delta") and bool(obj.get("delta"))
    if api is Api.OLLAMA_CHAT:
        msg = obj.get("message") or {}
        return bool(msg.get("content") or msg.get("thinking") or msg.get("tool_calls"))
    if api is Api.OLLAMA_GENERATE:
        return bool(obj.get("response") or obj.get("thinking"))
    if api is Api.MESSAGES:
        delta = obj.get("delta") or {}
        keys = ("text", "partial_json", "thinking")
        return obj.get("type") == "content_block_delta" and any(delta.get(k) for k in keys)
    for choice in obj.get("choices") or []:
        delta = choice.get("delta") or {}
        keys = ("content", "reasoning_content", "reasoning", "tool_calls")
        if choice.get("text") or any(delta.get(key) for key in keys):
            return True
    return False


def _oracle_first_output_end(api: Api, body: bytes) -> int | None:
    """Offset just past the delimiter of the first output event (None: none terminated)."""
    if api in NDJSON:
        delim = b"\n"
    else:
        newline = body.find(b"\n")
        delim = b"\r\n\r\n" if newline > 0 and body[newline - 1 : newline] == b"\r" else b"\n\n"
    pos = 0
    while (end := body.find(delim, pos)) >= 0:
        event, pos = body[pos:end], end + len(delim)
        if _oracle_is_output(api, _oracle_payload(api, event)):
            return pos
    return None


# -- drivers ----------------------------------------------------------------------------------


def _run(api: Api, chunks: list[bytes]) -> tuple[ScanResult, list[bool], bool]:
    scanner = StreamScanner(api)
    flags = [scanner.feed(chunk) for chunk in chunks]
    closed = scanner.close()
    return scanner.result(), flags, closed


def _split(body: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, len(body), *(c % (len(body) + 1) for c in cuts)})
    return [body[a:b] for a, b in itertools.pairwise(points)]


def _assert_true_once_on_completing_chunk(api: Api, body: bytes, chunks: list[bytes]) -> None:
    _, flags, closed = _run(api, chunks)
    end = _oracle_first_output_end(api, body)
    if end is None:
        assert not any(flags)
        return
    assert flags.count(True) == 1 and not closed
    offset = 0
    for chunk, flag in zip(chunks, flags, strict=True):
        assert flag == (offset < end <= offset + len(chunk))
        offset += len(chunk)


# -- recordings -------------------------------------------------------------------------------


def test_every_recording_has_an_expectation() -> None:
    on_disk = {p.name for p in STREAMS.iterdir() if p.suffix in (".sse", ".ndjson")}
    assert on_disk == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_recording_fed_whole(name: str) -> None:
    api = EXPECTED[name][0]
    body = _load(name)
    result, flags, closed = _run(api, [body])
    assert result == _expected(name)
    assert flags == [_oracle_first_output_end(api, body) is not None]
    assert not closed


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_recording_fed_byte_by_byte(name: str) -> None:
    api = EXPECTED[name][0]
    body = _load(name)
    chunks = [body[i : i + 1] for i in range(len(body))]
    assert _run(api, chunks)[0] == _expected(name)
    _assert_true_once_on_completing_chunk(api, body, chunks)


@pytest.mark.parametrize("name", sorted(EXPECTED))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cuts=st.lists(st.integers(min_value=0, max_value=20_000), max_size=40))
def test_recording_in_random_splits(name: str, cuts: list[int]) -> None:
    api = EXPECTED[name][0]
    body = _load(name)
    chunks = _split(body, cuts)
    assert _run(api, chunks)[0] == _expected(name)
    _assert_true_once_on_completing_chunk(api, body, chunks)


@pytest.mark.parametrize("name", sorted(EXPECTED))
@settings(max_examples=15, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=20_000), max_size=40))
def test_recording_with_crlf_line_endings(name: str, cuts: list[int]) -> None:
    api = EXPECTED[name][0]
    body = _load(name).replace(b"\n", b"\r\n")  # JSON escapes newlines: only line ends change
    chunks = _split(body, cuts)
    assert _run(api, chunks)[0] == _expected(name)
    _assert_true_once_on_completing_chunk(api, body, chunks)


def test_recordings_concatenated_per_event_chunks() -> None:
    """The relay's usual case: one event per chunk, which takes the scanner's hot path."""
    body = _load("openai__chat_include_usage_excerpt.sse")
    events = [event + b"\n\n" for event in body.split(b"\n\n") if event]
    assert _run(Api.CHAT, events)[0] == _expected("openai__chat_include_usage_excerpt.sse")
    _assert_true_once_on_completing_chunk(Api.CHAT, body, events)


# -- output detection -------------------------------------------------------------------------


def _sse(*objects: Any, done: bool = True) -> bytes:
    events = [b"data: " + json.dumps(obj).encode() + b"\n\n" for obj in objects]
    return b"".join(events) + (b"data: [DONE]\n\n" if done else b"")


def _delta(**delta: Any) -> dict[str, Any]:
    return {"choices": [{"index": 0, "delta": delta, "finish_reason": None}]}


@pytest.mark.parametrize(
    "delta",
    [
        {"role": "assistant", "content": None},
        {"role": "assistant", "content": ""},
        {"role": "assistant"},
        {"content": "", "reasoning_content": None},
        {"tool_calls": []},
        {},
    ],
)
def test_role_only_and_empty_deltas_are_not_output(delta: dict[str, Any]) -> None:
    scanner = StreamScanner(Api.CHAT)
    assert scanner.feed(_sse(_delta(**delta), done=False)) is False
    assert not scanner.first_output_seen


@pytest.mark.parametrize(
    "delta",
    [
        {"content": "Hi"},
        {"reasoning_content": "hmm"},
        {"reasoning": "hmm"},
        {"refusal": "no"},
        {"tool_calls": [{"index": 0, "function": {"arguments": ""}}]},
        {"function_call": {"name": "f"}},
    ],
)
def test_each_kind_of_chat_output_counts(delta: dict[str, Any]) -> None:
    scanner = StreamScanner(Api.CHAT)
    assert scanner.feed(_sse(_delta(role="assistant"), _delta(**delta))) is True
    assert scanner.first_output_seen
    assert scanner.result().output_events == 1


def test_second_choice_output_counts() -> None:
    chunk = {"choices": [{"index": 0, "delta": {}}, {"index": 1, "delta": {"content": "x"}}]}
    assert StreamScanner(Api.CHAT).feed(_sse(chunk)) is True


@pytest.mark.parametrize(
    ("api", "line", "is_output"),
    [
        (Api.OLLAMA_CHAT, {"message": {"role": "assistant", "content": ""}}, False),
        (Api.OLLAMA_CHAT, {"message": {"role": "assistant", "content": "", "thinking": "t"}}, True),
        (Api.OLLAMA_CHAT, {"message": {"content": "", "tool_calls": [{"function": {}}]}}, True),
        (Api.OLLAMA_GENERATE, {"response": "", "thinking": ""}, False),
        (Api.OLLAMA_GENERATE, {"response": "", "thinking": "t"}, True),
        (Api.OLLAMA_GENERATE, {"response": "x"}, True),
    ],
)
def test_ollama_output(api: Api, line: dict[str, Any], is_output: bool) -> None:
    line = {"model": "m", **line, "done": False}
    assert StreamScanner(api).feed(json.dumps(line).encode() + b"\n") is is_output


@pytest.mark.parametrize(
    ("kind", "delta", "is_output"),
    [
        ("response.output_text.delta", "x", True),
        ("response.reasoning_summary_text.delta", "x", True),
        ("response.reasoning_text.delta", "x", True),
        ("response.function_call_arguments.delta", "{", True),
        ("response.output_text.delta", "", False),
        ("response.output_text.done", None, False),
        ("response.created", None, False),
    ],
)
def test_responses_output(kind: str, delta: str | None, is_output: bool) -> None:
    event = {"type": kind, **({} if delta is None else {"delta": delta})}
    body = f"event: {kind}\ndata: {json.dumps(event)}\n\n".encode()
    assert StreamScanner(Api.RESPONSES).feed(body) is is_output


def test_responses_event_name_used_when_data_has_no_type() -> None:
    body = b'event: response.output_text.delta\ndata: {"delta":"x"}\n\n'
    assert StreamScanner(Api.RESPONSES).feed(body) is True


def test_data_field_without_space_and_comments() -> None:
    body = b': keep-alive\n\ndata:{"choices":[{"delta":{"content":"x"}}]}\n\n: ping\n\n'
    scanner = StreamScanner(Api.CHAT)
    assert scanner.feed(body) is True
    assert scanner.result().output_events == 1


def test_keepalive_comments_after_first_output_are_not_counted() -> None:
    scanner = StreamScanner(Api.CHAT)
    scanner.feed(_sse(_delta(content="a"), done=False))
    for _ in range(3):
        scanner.feed(b": keep-alive while the model thinks hard about it\n\n")
    assert scanner.result().output_events == 1


def test_estimate_counts_empty_mid_stream_events_after_first_output() -> None:
    """The documented approximation: after first output, unparsed data events count."""
    padding = "x" * 60  # beyond the small-event threshold, so the fast path decides
    empty = {**_delta(content=""), "id": padding}
    before = StreamScanner(Api.CHAT)
    before.feed(_sse(empty, _delta(content="a"), done=False))
    assert before.result().output_events == 1
    after = StreamScanner(Api.CHAT)
    after.feed(_sse(_delta(content="a"), empty, done=False))
    assert after.result().output_events == 2


# -- usage ------------------------------------------------------------------------------------


def _usage(prompt: int, completion: int) -> dict[str, Any]:
    total = prompt + completion
    usage = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": total}
    return {"choices": [], "usage": usage}


def test_last_usage_wins_and_zero_placeholders_are_ignored() -> None:
    chunks = [
        {**_delta(content="a"), "usage": _usage(0, 0)["usage"]},
        {**_delta(content="b"), "usage": _usage(3, 1)["usage"]},
        {**_delta(content="c"), "usage": _usage(0, 0)["usage"]},
        _usage(9, 4),
        {**_delta(content="d"), "usage": _usage(0, 0)["usage"]},
    ]
    result = scan_body(Api.CHAT, _sse(*chunks))
    assert (result.prompt_tokens, result.completion_tokens) == (9, 4)
    assert not result.tokens_estimated and result.output_events == 4


def test_usage_with_details_first_is_not_taken_for_a_placeholder() -> None:
    usage = {"prompt_tokens_details": {"cached_tokens": 0}, "prompt_tokens": 7}
    chunk = {"choices": [], "usage": {**usage, "completion_tokens": 2, "total_tokens": 9}}
    result = scan_body(Api.CHAT, _sse(_delta(content="a"), chunk))
    assert (result.prompt_tokens, result.completion_tokens) == (7, 2)


def test_python_style_spacing_is_recognised() -> None:
    """llama-cpp-python serialises with ``": "``; markers must still be found."""
    lines = [
        json.dumps(_delta(content="a")),
        json.dumps({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}),
        json.dumps({"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 2}}),
    ]
    result = scan_body(Api.CHAT, b"".join(b"data: %s\n\n" % x.encode() for x in lines))
    assert result == ScanResult(5, 2, False, 1, None)


def test_ollama_done_with_spaces_and_missing_prompt_count() -> None:
    body = b'{"response":"a","done":false}\n{"response":"", "done": true, "eval_count": 12}\n'
    result = scan_body(Api.OLLAMA_GENERATE, body)
    assert result == ScanResult(None, 12, False, 1, None)


def test_no_usage_estimates_from_output_events() -> None:
    result = scan_body(Api.CHAT, _sse(_delta(role="assistant"), *[_delta(content="x")] * 3))
    assert result == ScanResult(None, 3, True, 3, None)


# -- errors -----------------------------------------------------------------------------------

ERROR_BODIES = [
    (Api.CHAT, b'data: {"error":{"message":"boom","type":"server_error"}}\n\n'),
    (Api.CHAT, b'data: {"error":{"code":500,"message":"boom","type":"server_error"}}\n\n'),
    (Api.CHAT, b'error: {"code":500,"message":"boom","type":"server_error"}\n\n'),
    (Api.COMPLETIONS, b'data: {"error":"boom"}\n\n'),
    (Api.OLLAMA_CHAT, b'{"error":"boom"}\n'),
    (Api.OLLAMA_GENERATE, b'{"error":"boom"}\n'),
    (Api.RESPONSES, b'event: error\ndata: {"type":"error","code":"x","message":"boom"}\n\n'),
    (Api.RESPONSES, b'data: {"type":"error","error":{"message":"boom"}}\n\n'),
    (
        Api.RESPONSES,
        b'data: {"type":"response.failed","response":{"error":{"message":"boom"}}}\n\n',
    ),
]


@pytest.mark.parametrize(("api", "error"), ERROR_BODIES)
@pytest.mark.parametrize("after_output", [False, True])
def test_in_stream_errors(api: Api, error: bytes, after_output: bool) -> None:
    first = {
        Api.CHAT: _sse(_delta(content="a"), done=False),
        Api.COMPLETIONS: _sse({"choices": [{"text": "a"}]}, done=False),
        Api.OLLAMA_CHAT: b'{"message":{"content":"a"},"done":false}\n',
        Api.OLLAMA_GENERATE: b'{"response":"a","done":false}\n',
        Api.RESPONSES: b'data: {"type":"response.output_text.delta","delta":"a"}\n\n',
    }[api]
    body = first + error if after_output else error
    assert scan_body(api, body).error == "boom"
    assert _run(api, [body[i : i + 1] for i in range(len(body))])[0].error == "boom"


def test_first_error_is_kept() -> None:
    body = b'data: {"error":{"message":"first"}}\n\ndata: {"error":{"message":"second"}}\n\n'
    assert scan_body(Api.CHAT, body).error == "first"


def test_plain_json_error_body_where_a_stream_was_expected() -> None:
    scanner = StreamScanner(Api.CHAT)
    assert scanner.feed(b'{"error":{"message":"model not found","type":"api_error"}}') is False
    assert scanner.close() is False
    assert scanner.result().error == "model not found"


# -- framing edge cases -----------------------------------------------------------------------


def test_unterminated_last_event_counts_at_close() -> None:
    scanner = StreamScanner(Api.OLLAMA_GENERATE)
    assert scanner.feed(b'{"response":"hi","done":false}') is False
    assert scanner.close() is True
    assert scanner.result().output_events == 1


def test_empty_chunks_and_garbage_are_harmless() -> None:
    scanner = StreamScanner(Api.CHAT)
    for chunk in (b"", b"data: {not json\n\n", b"data: \xff\xfe\n\n", b"\n\n\n", b"id: 7\n\n"):
        assert scanner.feed(chunk) is False
    assert scanner.result() == ScanResult(None, 0, True, 0, None)


def test_oversized_event_is_dropped_whatever_the_splitting() -> None:
    big = _sse(_delta(content="y" * 500), done=False)
    body = _sse(_delta(role="assistant"), done=False) + big + _sse(_delta(content="z"))
    results = set()
    for size in (1, 7, 64, 300, len(body)):
        scanner = StreamScanner(Api.CHAT, max_event_bytes=256)
        for i in range(0, len(body), size):
            scanner.feed(body[i : i + size])
        scanner.close()
        results.add(scanner.result())
    assert results == {ScanResult(None, 1, True, 1, None)}


def test_pending_tail_stays_bounded() -> None:
    scanner = StreamScanner(Api.CHAT, max_event_bytes=1024)
    for _ in range(1000):
        scanner.feed(b"x" * 100)  # a never-ending line
    assert len(scanner._buf) <= 1024  # white-box: the only state that could grow


# -- generated streams ------------------------------------------------------------------------

_WORDS = [*'ab "\\\n\t:{}[]é😀', "error", '"usage"', "data: ", "[DONE]", '"done":true']
_TEXT = st.lists(st.sampled_from(_WORDS), max_size=8).map("".join)
_CHAT_EVENTS = st.one_of(
    st.builds(lambda: _delta(role="assistant", content=None)),
    st.builds(lambda t: _delta(content=t), _TEXT),
    st.builds(lambda t: _delta(reasoning_content=t), _TEXT),
    st.builds(lambda: _delta(tool_calls=[{"index": 0, "function": {"arguments": "{"}}])),
    st.builds(lambda: {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}),
    st.builds(_usage, st.integers(0, 3), st.integers(0, 3)),
    st.builds(lambda: {"error": {"message": "boom"}}),
    st.just(": ping"),
    st.just("[DONE]"),
)


def _frame(event: Any, crlf: bool) -> bytes:
    if event == ": ping":
        text = event
    else:
        text = "data: " + (event if event == "[DONE]" else json.dumps(event))
    return (text + "\n\n").replace("\n", "\r\n" if crlf else "\n").encode()


@settings(max_examples=150, deadline=None)
@given(
    events=st.lists(_CHAT_EVENTS, max_size=12),
    crlf=st.booleans(),
    cuts=st.lists(st.integers(0, 5000), max_size=30),
)
def test_generated_chat_streams_are_split_invariant(
    events: list[Any], crlf: bool, cuts: list[int]
) -> None:
    body = b"".join(_frame(event, crlf) for event in events)
    whole = _run(Api.CHAT, [body])
    split = _run(Api.CHAT, _split(body, cuts))
    per_byte = _run(Api.CHAT, [body[i : i + 1] for i in range(len(body))])
    assert whole[0] == split[0] == per_byte[0]
    _assert_true_once_on_completing_chunk(Api.CHAT, body, _split(body, cuts))


_OLLAMA_LINES = st.one_of(
    st.builds(lambda t: {"message": {"role": "assistant", "content": t}, "done": False}, _TEXT),
    st.builds(lambda t: {"message": {"content": "", "thinking": t}, "done": False}, _TEXT),
    st.builds(
        lambda p, c: {
            "message": {"content": ""},
            "done": True,
            "prompt_eval_count": p,
            "eval_count": c,
        },
        st.integers(0, 50),
        st.integers(0, 50),
    ),
    st.builds(lambda: {"error": "boom"}),
    st.just(""),
)


@settings(max_examples=100, deadline=None)
@given(
    lines=st.lists(_OLLAMA_LINES, max_size=10),
    spaced=st.booleans(),
    cuts=st.lists(st.integers(0, 3000), max_size=20),
)
def test_generated_ollama_streams_are_split_invariant(
    lines: list[Any], spaced: bool, cuts: list[int]
) -> None:
    separators = (", ", ": ") if spaced else (",", ":")
    body = b"".join(
        (json.dumps(line, separators=separators) if line else "").encode() + b"\n" for line in lines
    )
    whole = _run(Api.OLLAMA_CHAT, [body])
    assert whole[0] == _run(Api.OLLAMA_CHAT, _split(body, cuts))[0]
    assert whole[0] == _run(Api.OLLAMA_CHAT, [body[i : i + 1] for i in range(len(body))])[0]
    _assert_true_once_on_completing_chunk(Api.OLLAMA_CHAT, body, _split(body, cuts))
    done = [line for line in lines if line and line.get("done")]
    if done and (done[-1]["prompt_eval_count"] or done[-1]["eval_count"]):
        assert whole[0].completion_tokens == done[-1]["eval_count"]


@settings(max_examples=150, deadline=None)
@given(body=st.binary(max_size=400), cuts=st.lists(st.integers(0, 500), max_size=10))
@pytest.mark.parametrize("api", list(Api))
def test_arbitrary_bytes_never_raise_and_are_split_invariant(
    api: Api, body: bytes, cuts: list[int]
) -> None:
    assert _run(api, [body])[0] == _run(api, _split(body, cuts))[0]


# -- non-streamed bodies ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("api", "body", "expected"),
    [
        (
            Api.CHAT,
            _load("llama-server__chat_nonstream.json"),
            ScanResult(30, 8, False, 1, None),
        ),
        (
            Api.CHAT,
            _load("llama-cpp-python__chat_nonstream.json"),
            ScanResult(28, 8, False, 1, None),
        ),
        (
            Api.OLLAMA_CHAT,
            b'{"model":"llama3.2","message":{"role":"assistant","content":"Hello!"},"done":true,'
            b'"prompt_eval_count":26,"eval_count":298}',
            ScanResult(26, 298, False, 1, None),
        ),
        (
            Api.OLLAMA_GENERATE,
            b'{"response":"The sky","done":true,"prompt_eval_count":26,"eval_count":290}',
            ScanResult(26, 290, False, 1, None),
        ),
        (
            Api.RESPONSES,
            b'{"object":"response","output":[{"type":"message"}],'
            b'"usage":{"input_tokens":5,"output_tokens":9,"total_tokens":14}}',
            ScanResult(5, 9, False, 1, None),
        ),
        (
            Api.COMPLETIONS,
            b'{"choices":[{"text":"x"}],"usage":{"prompt_tokens":1,"completion_tokens":1}}',
            ScanResult(1, 1, False, 1, None),
        ),
        (
            Api.CHAT,
            b'{"error":{"message":"bad","type":"invalid_request_error"}}',
            ScanResult(None, None, False, 0, "bad"),
        ),
        (Api.CHAT, b"", ScanResult(None, 0, True, 0, None)),
    ],
)
def test_scan_body(api: Api, body: bytes, expected: ScanResult) -> None:
    assert scan_body(api, body) == expected


def test_scan_body_of_a_stream_scans_it() -> None:
    name = "llama-server__chat_stream_usage.sse"
    assert scan_body(Api.CHAT, _load(name)) == _expected(name)
    name = "ollama__api_chat.ndjson"
    assert scan_body(Api.OLLAMA_CHAT, _load(name)) == _expected(name)


# -- benchmark (make bench / pytest -m bench) -------------------------------------------------


def _per_chunk_us(api: Api, first: bytes, chunks: list[bytes], rounds: int = 5) -> float:
    best = float("inf")
    for _ in range(rounds):
        scanner = StreamScanner(api)
        scanner.feed(first)
        start = time.perf_counter()
        for chunk in chunks:
            scanner.feed(chunk)
        best = min(best, time.perf_counter() - start)
    return best / len(chunks) * 1e6


def _events(name: str, delim: bytes) -> list[bytes]:
    return [event + delim for event in _load(name).split(delim) if event]


@pytest.mark.bench
def test_bench_per_chunk_cost() -> None:
    """Prints µs per chunk; deliberately asserts nothing about speed."""
    cases = {
        "llama-server chat": (Api.CHAT, "llama-server__chat_stream_plain.sse", b"\n\n", 2),
        "openai chat include_usage": (
            Api.CHAT,
            "openai__chat_include_usage_excerpt.sse",
            b"\n\n",
            2,
        ),
        "ollama /api/chat ndjson": (Api.OLLAMA_CHAT, "ollama__api_chat.ndjson", b"\n", 1),
        "responses text": (Api.RESPONSES, "xai__responses_text.sse", b"\n\n", 3),
    }
    print()
    for label, (api, name, delim, mid) in cases.items():
        events = _events(name, delim)
        first, body_event = b"".join(events[:mid]), events[mid]
        steady = [body_event] * 5000
        split = [part for ev in steady[:2000] for part in (ev[:40], ev[40:])]
        batched = [b"".join(steady[i : i + 4]) for i in range(0, 2000, 4)]
        role = events[0]
        one = _per_chunk_us(api, first, steady)
        halves = _per_chunk_us(api, first, split) * 2
        four = _per_chunk_us(api, first, batched) / 4
        print(
            f"{label:26s} after first output, us per event: 1 event/chunk {one:5.2f}"
            f" | each event split in 2 chunks {halves:5.2f} | 4 events/chunk {four:5.2f}"
        )
        start = time.perf_counter()
        for _ in range(2000):
            StreamScanner(api).feed(role)
        before = (time.perf_counter() - start) / 2000 * 1e6
        print(f"{'':26s} before first output: new scanner + 1 parsed event {before:5.2f} us")
