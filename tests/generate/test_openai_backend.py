"""The OpenAI backend against a real HTTP server on 127.0.0.1 speaking the chat completions
protocol (tests/fake_openai.py), with scripted behaviour per item (keyed on a marker in the
item's answer)."""

from __future__ import annotations

import base64
import socket
import threading
import time

import openai
import pytest

from fake_openai import FakeServer, completion
from vlalign.errors import UserError
from vlalign.generate.openai_backend import (
    SYSTEM_PROMPT,
    InjectRequest,
    InjectResult,
    OpenAIConfig,
    clean_reply,
    inject,
    instruction,
)

KEY_ENV = "VLALIGN_TEST_OPENAI_KEY"
SECRET = "sk-test-S3CRET-value-0123456789"


def wrong_answer(body):
    """The reply to an item with no marker: ``completion("wrong: <whole answer>")``."""
    user = body["messages"][-1]["content"]
    text = user if isinstance(user, str) else user[-1]["text"]
    answer = text.split("Correct answer:\n", 1)[1].split("\n\n", 1)[0]
    return ("json", completion(f"wrong: {answer}"))


@pytest.fixture
def server():
    s = FakeServer(default=wrong_answer)
    yield s
    s.close()


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.delenv(KEY_ENV, raising=False)


def cfg(server, **kw):
    fields = {"base_url": server.url, "model": "fake-model", "api_key_env": KEY_ENV, "concurrency": 4,
              "timeout": 5.0, "max_retries": 3, "backoff": 0.01}
    fields.update(kw)
    return OpenAIConfig(**fields)


def req(i, answer, image=None, prompt="Describe the image."):
    return InjectRequest(id=str(i), image=image, prompt=prompt, answer=answer)


def test_success_sends_model_image_question_answer_and_key(server, tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, SECRET)
    png = tmp_path / "scene.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\nnot-really-a-png")
    jpg = tmp_path / "photo.JPG"
    jpg.write_bytes(b"\xff\xd8\xffjpeg-bytes")
    server.script["ANS-A"] = [("json", completion('  "A blue cat sits under a table."\n'))]
    config = cfg(server)
    results = inject([req("a", "ANS-A: a red cat on a table.", png, prompt="What is in the picture?"),
                      req("b", "ANS-B two dogs.", jpg)], config)

    assert [r.id for r in results] == ["a", "b"]
    assert results[0] == InjectResult("a", "A blue cat sits under a table.", None, 1)  # whitespace+quotes gone
    assert results[1] == InjectResult("b", "wrong: ANS-B two dogs.", None, 1)
    assert server.hits == {"ANS-A": 1, None: 1}

    got = {r["marker"]: r for r in server.received}
    sent = got["ANS-A"]
    assert sent["headers"]["authorization"] == f"Bearer {SECRET}"
    body = sent["body"]
    assert body["model"] == "fake-model"
    assert body["max_tokens"] == config.max_tokens and body["temperature"] == config.temperature
    system, user = body["messages"]
    assert system == {"role": "system", "content": SYSTEM_PROMPT}
    assert user["role"] == "user"
    image_part, text_part = user["content"]
    assert image_part["type"] == "image_url"
    assert image_part["image_url"]["url"] == "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode()
    assert text_part["type"] == "text"
    assert "What is in the picture?" in text_part["text"] and "ANS-A: a red cat on a table." in text_part["text"]
    jpeg_url = got[None]["body"]["messages"][1]["content"][0]["image_url"]["url"]
    assert jpeg_url.startswith("data:image/jpeg;base64,")

    # The key is used on the wire and nowhere else.
    assert SECRET not in repr(config)
    assert all(SECRET not in repr(r) for r in results)


def test_429_then_success_counts_both_attempts(server):
    server.script["ANS-RL"] = [("status", 429, {}, {"error": {"message": "slow down"}}),
                               ("json", completion("a wrong answer"))]
    [result] = inject([req(0, "ANS-RL")], cfg(server, max_retries=5))
    assert result == InjectResult("0", "a wrong answer", None, 2)
    assert server.hits["ANS-RL"] == 2


def test_retry_after_header_is_honoured(server):
    server.script["ANS-RA"] = [("status", 429, {"Retry-After": "0.4"}, {"error": {"message": "wait"}}),
                               ("json", completion("a wrong answer"))]
    start = time.monotonic()
    [result] = inject([req(0, "ANS-RA")], cfg(server, backoff=0.0))
    assert time.monotonic() - start >= 0.38
    assert result.rejected == "a wrong answer" and result.attempts == 2


def test_500_every_time_fails_that_item_only(server):
    server.script["ANS-500"] = [("status", 500, {}, {"error": {"message": "boom"}})]
    seen = []
    results = inject([req(0, "ANS-OK first"), req(1, "ANS-500"), req(2, "ANS-OK second")],
                     cfg(server, max_retries=3), on_result=seen.append)
    assert results[1] == InjectResult("1", None, "HTTP 500 after 3 attempts", 3)
    assert server.hits["ANS-500"] == 3
    assert results[0] == InjectResult("0", "wrong: ANS-OK first", None, 1)
    assert results[2] == InjectResult("2", "wrong: ANS-OK second", None, 1)
    assert sorted(r.id for r in seen) == ["0", "1", "2"]


def test_4xx_is_not_retried_and_key_in_server_message_is_masked(server, monkeypatch):
    monkeypatch.setenv(KEY_ENV, SECRET)
    server.script["ANS-401"] = [("status", 401, {}, {"error": {"message": f"Incorrect API key provided: {SECRET}."}})]
    server.script["ANS-400"] = [("status", 400, {}, {"error": {"message": "image too large"}})]
    r401, r400 = inject([req(0, "ANS-401"), req(1, "ANS-400")], cfg(server, max_retries=5))
    assert r401.rejected is None and r401.attempts == 1
    assert r401.error.startswith("HTTP 401: Incorrect API key provided:") and SECRET not in r401.error
    assert r400 == InjectResult("1", None, "HTTP 400: image too large", 1)
    assert server.hits["ANS-401"] == 1 and server.hits["ANS-400"] == 1


def test_timeout_is_an_error_result(server):
    server.script["ANS-SLOW"] = [("json", completion("too late"), 1.0)]
    start = time.monotonic()
    results = inject([req(0, "ANS-SLOW"), req(1, "ANS-FAST")], cfg(server, timeout=0.3, max_retries=2))
    assert time.monotonic() - start < 1.9  # two 0.3 s attempts, not the server's 1 s each
    assert results[0] == InjectResult("0", None, "timeout after 2 attempts", 2)
    assert server.hits["ANS-SLOW"] == 2
    assert results[1] == InjectResult("1", "wrong: ANS-FAST", None, 1)


def test_connection_refused_is_retried_then_an_error_result():
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = OpenAIConfig(base_url=f"http://127.0.0.1:{port}/v1", api_key_env=KEY_ENV, max_retries=2, backoff=0.01,
                          timeout=2.0)
    [result] = inject([req(0, "anything")], config)
    assert result == InjectResult("0", None, "connection error after 2 attempts", 2)


@pytest.mark.parametrize("action, reason", [
    (("json", completion("   \n ")), "empty content"),
    (("json", {"id": "x", "object": "chat.completion", "created": 0, "model": "m", "choices": []}), "no choices"),
    (("json", {"id": "x", "object": "chat.completion", "created": 0, "model": "m"}), "no choices"),
    (("raw", b"{this is not json"), "invalid JSON"),
    (("json", completion([{"type": "text", "text": "hi"}])), "content is not a string"),
    (("json", completion(None)), "no content"),
    (("json", completion('"ANS-SAME the answer"')), "identical to the answer"),
    (("json", completion("a cut-off rewr", finish_reason="length")), "truncated at max_tokens"),
])
def test_malformed_replies_are_error_results(server, action, reason):
    server.script["ANS-SAME"] = [action]
    results = inject([req(0, "ANS-SAME the answer"), req(1, "ANS-FINE")], cfg(server, max_retries=4))
    assert results[0] == InjectResult("0", None, f"malformed reply: {reason}", 1)
    assert server.hits["ANS-SAME"] == 1  # a bad reply is not retried
    assert results[1].rejected == "wrong: ANS-FINE"


def test_concurrency_order_and_on_result(server):
    for i in range(8):
        server.script[f"ANS-C{i}|"] = [("json", completion(f"wrong {i}"), 0.2)]
    seen, threads = [], []

    def on_result(r):
        seen.append(r.id)
        threads.append(threading.current_thread())

    items = [req(f"id{i}", f"ANS-C{i}|") for i in range(8)]
    results = inject(items, cfg(server, concurrency=4), on_result=on_result)
    assert [r.id for r in results] == [f"id{i}" for i in range(8)]
    assert [r.rejected for r in results] == [f"wrong {i}" for i in range(8)]
    assert 1 < server.max_inflight <= 4
    assert sorted(seen) == sorted(r.id for r in results) and len(seen) == 8
    assert all(t is threading.main_thread() for t in threads)


def test_missing_key_with_remote_server_is_a_user_error(monkeypatch):
    config = OpenAIConfig(base_url="https://api.example.invalid/v1", api_key_env=KEY_ENV)
    with pytest.raises(UserError, match=KEY_ENV):
        inject([req(0, "x")], config)
    # Same when the remote URL comes from OPENAI_BASE_URL.
    monkeypatch.setenv("OPENAI_BASE_URL", "https://api.example.invalid/v1")
    with pytest.raises(UserError, match=KEY_ENV):
        inject([req(0, "x")], OpenAIConfig(api_key_env=KEY_ENV))


def test_local_server_without_key_uses_dummy_key(server, monkeypatch):
    [result] = inject([req(0, "ANS-LOCAL")], cfg(server))
    assert result.rejected == "wrong: ANS-LOCAL"
    assert server.received[0]["headers"]["authorization"] == "Bearer EMPTY"
    # base_url from the environment counts too
    monkeypatch.setenv("OPENAI_BASE_URL", server.url)
    [result] = inject([req(1, "ANS-LOCAL2")], cfg(server, base_url=None))
    assert result.rejected == "wrong: ANS-LOCAL2"
    assert server.hits[None] == 2


def test_unreadable_image_and_send_image_false(server, tmp_path):
    missing = tmp_path / "missing.png"
    present = tmp_path / "present.png"
    present.write_bytes(b"png")
    results = inject([req(0, "ANS-M", missing), req(1, "ANS-P", present)], cfg(server))
    assert results[0] == InjectResult("0", None, f"cannot read image {missing}", 0)
    assert results[1].rejected == "wrong: ANS-P"
    assert server.hits[None] == 1  # no request for the unreadable one

    results = inject([req(2, "ANS-NOIMG", missing)], cfg(server, send_image=False))
    assert results[0].rejected == "wrong: ANS-NOIMG"
    content = server.received[-1]["body"]["messages"][1]["content"]
    assert isinstance(content, str) and "data:image" not in content and "ANS-NOIMG" in content


def test_given_client_has_its_own_retries_turned_off(server):
    server.script["ANS-500"] = [("status", 500, {}, {"error": {"message": "boom"}})]
    client = openai.OpenAI(base_url=server.url, api_key="whatever", max_retries=4)
    [result] = inject([req(0, "ANS-500")], cfg(server, max_retries=2), client=client)
    assert result == InjectResult("0", None, "HTTP 500 after 2 attempts", 2)
    assert server.hits["ANS-500"] == 2


def test_instruction_messages(tmp_path):
    img = tmp_path / "a.webp"
    img.write_bytes(b"webp")
    system, user = instruction("Q?", "A.", img)
    assert system["role"] == "system" and "edited answer only" in system["content"]
    assert user["content"][0]["image_url"]["url"] == "data:image/webp;base64," + base64.b64encode(b"webp").decode()
    assert "Q?" in user["content"][1]["text"] and "A." in user["content"][1]["text"]
    _, user = instruction("Q?", "A.")
    assert isinstance(user["content"], str) and "Q?" in user["content"]


def test_clean_reply():
    assert clean_reply('  "quoted"  ') == "quoted"
    assert clean_reply("\u201csmart\u201d") == "smart"
    assert clean_reply('He said "hi" and left') == 'He said "hi" and left'
    assert clean_reply("'single'") == "single"
    assert clean_reply('"kept"', answer='"the original is quoted"') == '"kept"'
    assert clean_reply("plain\n") == "plain"


@pytest.mark.parametrize("field, value", [
    ("concurrency", 0), ("max_retries", 0), ("timeout", 0), ("backoff", -1), ("temperature", 3),
    ("max_tokens", 0), ("model", ""), ("base_url", "ftp://x"), ("api_key_env", "sk-abc def"),
    ("concurrency", True), ("timeout", float("nan")),
])
def test_config_validate(field, value):
    with pytest.raises(ValueError, match=field):
        OpenAIConfig(**{field: value}).validate()
    with pytest.raises(ValueError):
        inject([], OpenAIConfig(**{field: value}))


def test_on_result_error_propagates_and_stops_the_run(server):
    def explode(result):
        raise RuntimeError("caller's bug")

    # The first reply is quick; later ones take a second, so the second request is still in
    # flight when the first result raises, however loaded the machine is.
    server.script["ANS-X"] = [("json", completion("wrong X")), ("json", completion("wrong X"), 1.0)]
    with pytest.raises(RuntimeError, match="caller's bug"):
        inject([req(i, f"ANS-X{i}") for i in range(6)], cfg(server, concurrency=1), on_result=explode)
    time.sleep(1.2)
    assert server.hits["ANS-X"] <= 2  # the queued items were cancelled, not sent
