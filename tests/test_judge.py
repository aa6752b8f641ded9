"""The LLM judge against a real HTTP server on 127.0.0.1 that speaks OpenAI's chat-completions format."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

from visrl_bench.core.config import load_config
from visrl_bench.core.errors import VisrlError
from visrl_bench.metrics.judge import PROMPT_SHA256, Judge, JudgeConfig, JudgeError


class _Handler(BaseHTTPRequestHandler):
    """Grades by the candidate answer's text: 'good' -> correct, 'bad' -> incorrect, 'slow' sleeps past the
    client's timeout, 'garbled' is not JSON, 'rambling' says neither word, 'broken' is HTTP 500, 'refused'
    HTTP 400."""

    hits: ClassVar[list[dict]] = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).hits.append({"body": body, "auth": self.headers.get("Authorization")})
        answer = body["messages"][0]["content"].split("Candidate answer: ")[1].split("\n")[0]
        if answer == "slow":
            time.sleep(1.0)
        if answer in ("broken", "refused"):
            self.send_response(500 if answer == "broken" else 400)
            self.end_headers()
            return
        content = {"good": "Correct.", "bad": "incorrect", "rambling": "Well, it depends."}.get(answer, "")
        reply = (
            b"{not json"
            if answer == "garbled"
            else json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]}).encode()
        )
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args):  # keep the test output clean
        pass


@pytest.fixture
def server():
    _Handler.hits = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1/chat/completions"
    httpd.shutdown()
    httpd.server_close()


def _judge(url, **kw):
    return Judge(JudgeConfig(url=url, model="grader", timeout=0.3, retries=1, backoff=0.01, **kw))


def test_good_and_bad_answers_and_the_cache(server, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    cache = tmp_path / "judge.jsonl"
    judge = _judge(server, cache=str(cache))
    assert judge.score("What colour?", "red", "good") == 1.0
    assert judge.score("What colour?", "red", "bad") == 0.0
    assert judge.score("What colour?", "red", "good") == 1.0  # cached: not asked again
    assert len(_Handler.hits) == 2 and _Handler.hits[0]["auth"] == "Bearer sk-test"
    sent = _Handler.hits[0]["body"]
    assert sent["model"] == "grader" and "Reference answer: red" in sent["messages"][0]["content"]
    again = _judge(server, cache=str(cache))  # a later run reads the verdicts back
    assert again.score("What colour?", "red", "bad") == 0.0 and len(_Handler.hits) == 2
    assert judge.provenance()["prompt_sha256"] == PROMPT_SHA256 and len(PROMPT_SHA256) == 64
    with cache.open("a") as f:
        f.write('{"key": "torn')  # a write cut short: read past, that verdict is asked again
    assert _judge(server, cache=str(cache)).score("What colour?", "red", "good") == 1.0
    cache.write_text('not json\n{"key": "k", "verdict": 1.0}\n')
    with pytest.raises(JudgeError, match=r"judge\.jsonl:1: not a judge cache line"):
        _judge(server, cache=str(cache))


@pytest.mark.parametrize(
    ("answer", "attempts", "message"),
    [
        ("slow", 2, "no verdict after 2 attempt"),  # timed out, retried once
        ("broken", 2, "HTTP 500"),
        ("refused", 1, "HTTP 400"),  # not retried
        ("garbled", 1, "not JSON"),
        ("rambling", 1, "neither 'correct' nor 'incorrect'"),
    ],
)
def test_a_judge_that_fails_raises_and_is_not_cached(server, tmp_path, answer, attempts, message):
    judge = _judge(server, cache=str(tmp_path / "judge.jsonl"))
    with pytest.raises(JudgeError, match=message):
        judge.score("q", "ref", answer)
    assert judge.requests == attempts
    assert not (tmp_path / "judge.jsonl").exists()  # no verdict, nothing stored


def test_an_unreachable_judge_is_an_error(tmp_path):
    judge = _judge("http://127.0.0.1:9/v1/chat/completions")  # the discard port: connection refused
    with pytest.raises(JudgeError, match="no verdict after 2 attempt"):
        judge.score("q", "ref", "good")


def test_judge_options_are_checked():
    with pytest.raises(VisrlError, match=r"judge\.url needs judge\.model"):
        Judge(JudgeConfig(url="http://127.0.0.1:1/v1/chat/completions"))
    with pytest.raises(VisrlError, match=r"judge\.model needs judge\.url"):
        JudgeConfig(model="m")
    with pytest.raises(VisrlError, match=r"option judge\.url takes an http\(s\) URL .* got 'notaurl'"):
        JudgeConfig(url="notaurl", model="m")
    with pytest.raises(VisrlError, match=r"option judge\.timeout must be at least"):
        load_config(JudgeConfig, overrides=["timeout=0"])
    assert not JudgeConfig().enabled
