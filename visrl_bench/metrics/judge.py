"""An LLM judge for open-ended answers: any OpenAI-compatible chat-completions endpoint (`judge.url`,
`judge.model`), off unless configured.

A verdict is 1.0 (correct) or 0.0 (incorrect). Everything that can go wrong — the server unreachable, a
timeout, an HTTP error, a reply that is not JSON or says neither word — raises `JudgeError` after the
configured retries: the caller turns it into that sample's error record (a reward of None for TRL, which
then leaves the sample out of that reward), never a silent 0. Verdicts are cached per (prompt version,
question, reference, answer), in memory and, with `cache`, in a JSONL file that a later run reads back, so a
rerun or a repeated rollout does not ask again. The prompt's version and SHA-256 go into provenance.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from visrl_bench.core.errors import Bounded, Bounds, VisrlError
from visrl_bench.core.io import json_line

PROMPT_VERSION = "1"
PROMPT = (
    "You grade answers to questions about an image. Decide whether the candidate answer means the same as "
    "the reference answer.\n"
    "Question: {question}\n"
    "Reference answer: {reference}\n"
    "Candidate answer: {answer}\n"
    "Reply with exactly one word: correct or incorrect."
)
PROMPT_SHA256 = hashlib.sha256(f"{PROMPT_VERSION}\n{PROMPT}".encode()).hexdigest()
VERDICTS = {"correct": 1.0, "incorrect": 0.0}


class JudgeError(VisrlError):
    pass


@dataclass
class JudgeConfig(Bounded):
    url: str = ""  # e.g. http://127.0.0.1:8000/v1/chat/completions; empty: no judge
    model: str = ""
    timeout: float = 30.0  # seconds per request
    retries: int = 2  # further attempts after a failed one (timeouts, connection errors, HTTP 5xx / 429)
    backoff: float = 0.5  # seconds before the first retry, doubled after each
    cache: str | None = None  # JSONL of verdicts, read at start and appended to
    api_key_env: str = "OPENAI_API_KEY"  # the key is read from this variable (never stored); unset: no key
    # a training run stops (an error, not a silent 0 loss) once more than this share of its judge calls
    # failed, counted from the 8th call on: a judge that fails on every call teaches nothing
    max_failure_rate: float = 0.25

    BOUNDS: ClassVar[Bounds] = {
        "timeout": (1e-3, None),
        "retries": (0, 20),
        "backoff": (0, None),
        "max_failure_rate": (0, 1),
    }
    OPTION_PREFIX: ClassVar[str] = "judge."

    def __post_init__(self) -> None:
        super().__post_init__()
        from urllib.parse import urlparse

        if self.model and not self.url:
            raise VisrlError("option judge.model needs judge.url (the judge's chat-completions endpoint)")
        if self.url:
            parsed = urlparse(self.url)
            if parsed.scheme not in ("http", "https") or not parsed.netloc:
                raise VisrlError(
                    "option judge.url takes an http(s) URL such as "
                    f"http://127.0.0.1:8000/v1/chat/completions, got {self.url!r}"
                )
            if not self.model:
                raise VisrlError("option judge.url needs judge.model (the model the server should run)")

    @property
    def enabled(self) -> bool:
        return bool(self.url)


class Judge:
    def __init__(self, cfg: JudgeConfig):
        if not cfg.url or not cfg.model:
            raise JudgeError("a judge needs judge.url and judge.model")
        self.cfg = cfg
        self.requests = 0  # HTTP requests sent (retries included)
        self.verdicts: dict[str, float] = {}
        self.cache = Path(cfg.cache) if cfg.cache else None
        if self.cache is not None and self.cache.is_file():
            lines = self.cache.read_text().splitlines()
            for n, line in enumerate(lines, start=1):
                try:
                    row = json.loads(line)
                    self.verdicts[row["key"]] = float(row["verdict"])
                except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                    if n == len(lines):  # a write cut short by a crash: that verdict is asked again
                        continue
                    raise JudgeError(f"{self.cache}:{n}: not a judge cache line") from None

    def provenance(self) -> dict[str, Any]:
        return {
            "url": self.cfg.url,
            "model": self.cfg.model,
            "prompt_version": PROMPT_VERSION,
            "prompt_sha256": PROMPT_SHA256,
        }

    @staticmethod
    def key(question: str, reference: str, answer: str) -> str:
        text = json.dumps([PROMPT_VERSION, question, reference, answer], ensure_ascii=False)
        return hashlib.sha256(text.encode()).hexdigest()

    def score(self, question: str, reference: str, answer: str) -> float:
        """1.0 or 0.0; JudgeError when no verdict could be had."""
        key = self.key(question, reference, answer)
        if key in self.verdicts:
            return self.verdicts[key]
        content = PROMPT.format(question=question, reference=reference, answer=answer)
        reply = self._ask({"model": self.cfg.model, "messages": [{"role": "user", "content": content}]})
        verdict = _verdict(reply)
        self.verdicts[key] = verdict
        if self.cache is not None:
            self.cache.parent.mkdir(parents=True, exist_ok=True)
            with self.cache.open("a") as f:
                f.write(json_line({"key": key, "verdict": verdict, "answer": answer}))
        return verdict

    def _ask(self, payload: dict) -> dict:
        headers = {"Content-Type": "application/json"}
        if key := os.environ.get(self.cfg.api_key_env):
            headers["Authorization"] = f"Bearer {key}"
        body = json.dumps(payload).encode()
        wait, last = self.cfg.backoff, "no attempt"
        for attempt in range(self.cfg.retries + 1):
            if attempt:
                time.sleep(wait)
                wait *= 2
            self.requests += 1
            request = urllib.request.Request(self.cfg.url, data=body, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.cfg.timeout) as response:
                    text = response.read().decode("utf-8", errors="replace")
            except urllib.error.HTTPError as exc:
                last = f"HTTP {exc.code}"
                if exc.code != 429 and exc.code < 500:  # the request itself is wrong: asking again won't help
                    break
                continue
            except (urllib.error.URLError, TimeoutError, OSError) as exc:
                last = f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"
                continue
            try:
                return json.loads(text)
            except json.JSONDecodeError:
                raise JudgeError(f"judge {self.cfg.url}: reply is not JSON: {text[:200]!r}") from None
        raise JudgeError(f"judge {self.cfg.url}: no verdict after {attempt + 1} attempt(s) ({last})")


def _verdict(reply: Any) -> float:
    try:
        content = reply["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        raise JudgeError(f"judge reply has no choices[0].message.content: {str(reply)[:200]}") from None
    words = str(content).strip().lower().split()
    word = words[0].strip(".,:;!\"'") if words else ""
    if word not in VERDICTS:
        raise JudgeError(f"judge reply is neither 'correct' nor 'incorrect': {str(content)[:200]!r}")
    return VERDICTS[word]
