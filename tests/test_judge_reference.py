"""The authors' verdict rule (medix_r1.judge.reference) and the judge-name check against a server's models.

The request and the reading of the reply are checked against the oracle's restatement of their code
(tests/oracle.py) over HTTP with a scripted server; the real-model comparison is in test_reference_diff.py.
The name check runs against `medix judge serve` with the tiny GGUF judge and a server that, like
llama-cpp-python's, answers whatever model name it is sent.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest
from medix_r1.errors import BackendError, ConfigError
from medix_r1.judge import JudgeConfig, ReferenceJudge, make_judge
from medix_r1.judge import reference as ref
from medix_r1.judge.reference import REFERENCE_PROMPT, reply_says_yes, request_body
from medix_r1.llm import OpenAIChat
from medix_r1.rewards import CompositeReward, RewardConfig
from oracle import TEST_TEMPLATE, TEST_TEMPLATE_MARKER, reference_judge_prompt, reference_judge_request

TEMPLATES = pytest.mark.parametrize("template", [REFERENCE_PROMPT, TEST_TEMPLATE], ids=["default", "test"])

PAIRS = [
    ("Macular oedema", "Macular edema"),
    ("  spaced answer ", ""),  # sent as is: no trimming, and an empty ground truth is asked about too
    ("T2/FLAIR {ground_truth} {0}", "a\nb"),  # braces and line breaks stay literal
    ("Ground Truth:YES", "x"),
]


class _Scripted(BaseHTTPRequestHandler):
    """Records every chat request body and answers with the next scripted reply; lists ``served``."""

    bodies: ClassVar[list[dict]] = []
    replies: ClassVar[list[str]] = []
    served: ClassVar[list[str] | None] = None
    gets = 0

    def log_message(self, *a):
        pass

    def _send(self, status: int, payload: dict) -> None:
        raw = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def do_GET(self):
        type(self).gets += 1
        if self.path == "/v1/models" and self.served is not None:
            self._send(200, {"object": "list", "data": [{"id": m, "object": "model"} for m in self.served]})
        else:
            self._send(404, {"error": {"message": "no such route"}})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        cls = type(self)
        cls.bodies.append(body)
        text = cls.replies[(len(cls.bodies) - 1) % len(cls.replies)]
        self._send(200, {"choices": [{"message": {"role": "assistant", "content": text}}]})


@pytest.fixture()
def scripted():
    handler = type("H", (_Scripted,), {"bodies": [], "replies": ["YES"], "served": None, "gets": 0})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield handler, f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    httpd.shutdown()
    httpd.server_close()


@TEMPLATES
def test_request_body_is_theirs(template):
    for p, g in PAIRS:
        body = request_body(p, g, template=template)
        assert {"model": "m", **body} == reference_judge_request(p, g, "m", template)
        assert body["messages"][0]["content"] == reference_judge_prompt(p, g, template)
    assert request_body("a", "b") == request_body("a", "b", template=REFERENCE_PROMPT)
    soft = request_body("a", "b", logprobs=True)
    assert soft["logprobs"] is True and soft["top_logprobs"] == 20
    assert {k: v for k, v in soft.items() if "logprobs" not in k} == request_body("a", "b")


@pytest.mark.parametrize(
    ("reply", "yes"),
    [
        ("YES", True),
        ("yes.", True),
        ("  Yes\n\n", True),
        ("NO", False),
        ("Macular oedema", False),  # the judge repeated the answer: no YES, so NO
        ("No, yes", True),  # their rule: YES anywhere
        ("EYES", True),
        ("", False),
    ],
)
def test_reply_reading_is_theirs(reply, yes):
    assert reply_says_yes(reply) is yes
    assert reply_says_yes(reply) == ("YES" in reply.strip().upper())


@TEMPLATES
def test_remote_reference_judge_sends_their_request_and_reads_their_way(scripted, template):
    handler, url = scripted
    handler.replies = ["Macular oedema", "YES", "no", "yes, it matches"]
    judge = ReferenceJudge(OpenAIChat(url, "judge-x"), prompt=template)
    verdicts = judge.judge(PAIRS)
    assert sorted(map(json.dumps, handler.bodies)) == sorted(
        json.dumps(reference_judge_request(p, g, "judge-x", template)) for p, g in PAIRS
    )
    by_pred = {b["messages"][0]["content"]: i for i, b in enumerate(handler.bodies)}
    for (p, g), v in zip(PAIRS, verdicts):
        reply = handler.replies[by_pred[reference_judge_prompt(p, g, template)] % len(handler.replies)]
        assert v.match is reply_says_yes(reply) and v.p_yes is None and v.source == "judge"
    # cached: the same pairs again make no request
    n = len(handler.bodies)
    assert [v.match for v in judge.judge(PAIRS)] == [v.match for v in verdicts]
    assert len(handler.bodies) == n


def test_reference_mode_reward_builds_the_reference_judge(scripted):
    handler, url = scripted
    handler.served = ["judge-x"]
    handler.replies = ["The answer is Macular oedema"]
    cfg = RewardConfig(mode="reference", judge={"url": url, "name": "judge-x"})
    reward = CompositeReward(cfg)
    [s] = reward.score(
        ["<OCT_SCAN><thinking>r</thinking><answer>Macular oedema</answer>"], ["<OCT_SCAN> Macular edema"]
    )
    assert isinstance(reward.judge, ReferenceJudge)
    assert handler.bodies == [
        reference_judge_request("Macular oedema", "Macular edema", "judge-x", REFERENCE_PROMPT)
    ]
    assert s["accuracy_llm"] == 0.0 and s["errors"] == []
    # strict mode keeps its own question (one token, log-probs)
    handler.bodies.clear()
    strict = CompositeReward(RewardConfig(judge={"url": url, "name": "judge-x"}, max_unscorable_fraction=1))
    strict.score(["<OCT_SCAN><think>r</think><answer>Macular oedema</answer>"], ["<OCT_SCAN> Macular edema"])
    assert handler.bodies[0]["max_tokens"] == 1 and handler.bodies[0]["logprobs"] is True


def test_soft_reference_judge_asks_for_logprobs(scripted):
    handler, url = scripted
    cfg = RewardConfig(mode="reference", soft_judge=True, judge={"url": url, "name": "judge-x"})
    CompositeReward(cfg).score(["<X_RAY><thinking>r</thinking><answer>ab</answer>"], ["<X_RAY> cd"])
    assert handler.bodies[0]["logprobs"] is True and handler.bodies[0]["max_tokens"] == 4


# -- judge.reference_prompt: the user's template file (e.g. a copy of the authors' prompt) ------------------


def _cfg(url: str, prompt) -> dict:
    return {"url": url, "name": "judge-x", "reference_prompt": str(prompt)}


def test_reference_prompt_file_reaches_the_judge(scripted, tmp_path):
    handler, url = scripted
    handler.served = ["judge-x"]
    f = tmp_path / "prompt.txt"
    f.write_bytes(TEST_TEMPLATE.encode("utf-8"))  # kept exactly: no trailing newline added, none stripped
    reward = CompositeReward(RewardConfig(mode="reference", judge=_cfg(url, f)))
    reward.score(["<X_RAY><thinking>r</thinking><answer>ab {0}</answer>"], ["<X_RAY> cd"])
    [body] = handler.bodies
    assert TEST_TEMPLATE_MARKER in body["messages"][0]["content"]
    assert body == reference_judge_request("ab {0}", "cd", "judge-x", TEST_TEMPLATE)
    # the same through the CLI flag and the EasyR1 environment variable
    from medix_r1.cli import build_parser
    from medix_r1.commands.reward import build_config
    from medix_r1.integrations import easyr1

    args = build_parser().parse_args(
        ["reward", "score", "--input", "x", "--output", "y", "--judge-url", url, "--judge-name", "judge-x",
         "--judge-reference-prompt", str(f)]
    )  # fmt: skip
    assert build_config(args).judge.reference_prompt == str(f)
    env = {"MEDIX_JUDGE_URL": url, "MEDIX_JUDGE_NAME": "judge-x", "MEDIX_REFERENCE_PROMPT": str(f)}
    assert easyr1.config_from_env(environ=env).judge.reference_prompt == str(f)
    assert (
        easyr1.config_from_env(environ={**env, "MEDIX_REFERENCE_PROMPT": ""}).judge.reference_prompt is None
    )


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("no placeholders at all", "{predicted} exactly once, found it 0 times"),
        ("P={predicted}", "{ground_truth} exactly once, found it 0 times"),
        ("{predicted} {ground_truth} {predicted}", "{predicted} exactly once, found it 2 times"),
        ("{predicted} {ground_truth} {ground_truth}", "{ground_truth} exactly once, found it 2 times"),
    ],
)
def test_reference_prompt_placeholders_are_checked_on_load(tmp_path, text, says):
    f = tmp_path / "prompt.txt"
    f.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as e:
        RewardConfig(mode="reference", judge=_cfg("http://127.0.0.1:9/v1", f))
    assert says in str(e.value) and str(f) in str(e.value) and "reference_prompt" in str(e.value)


def test_reference_prompt_missing_or_unreadable_file(tmp_path, capsys):
    missing = tmp_path / "nope.txt"
    with pytest.raises(ConfigError, match=r"reference_prompt: .*nope\.txt: no such file"):
        JudgeConfig(url="http://127.0.0.1:9/v1", name="judge-x", reference_prompt=str(missing))
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("{predicted} {ground_truth} caf\xe9".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin1\.txt: cannot read it as UTF-8"):
        JudgeConfig(url="http://127.0.0.1:9/v1", name="judge-x", reference_prompt=str(bad))
    from medix_r1.cli import main

    inp = tmp_path / "in.jsonl"
    inp.write_text(json.dumps({"response": "x", "ground_truth": "<X_RAY> y"}) + "\n")
    out = str(tmp_path / "o.jsonl")
    rc = main(
        ["reward", "score", "--input", str(inp), "--output", out, "--mode", "reference",
         "--judge-url", "http://127.0.0.1:9/v1", "--judge-name", "j",
         "--judge-reference-prompt", str(missing)]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2 and "nope.txt: no such file" in err and len(err.strip().splitlines()) == 1, err


def test_default_wording_warns_once_per_process(scripted, monkeypatch, caplog, tmp_path):
    handler, url = scripted
    monkeypatch.setattr(ref, "_warned", False)
    with caplog.at_level("WARNING", logger="medix_r1.judge"):
        ReferenceJudge(OpenAIChat(url, "judge-x"))
        ReferenceJudge(OpenAIChat(url, "judge-x"))
    warned = [r.getMessage() for r in caplog.records if "own prompt wording" in r.getMessage()]
    assert len(warned) == 1 and "--judge-reference-prompt FILE" in warned[0]
    monkeypatch.setattr(ref, "_warned", False)
    caplog.clear()
    f = tmp_path / "p.txt"
    f.write_text(TEST_TEMPLATE, encoding="utf-8")
    handler.served = ["judge-x"]
    with caplog.at_level("WARNING", logger="medix_r1.judge"):
        make_judge(JudgeConfig(**_cfg(url, f)), rule="reference")
    assert not [r for r in caplog.records if "own prompt wording" in r.getMessage()]


# -- the judge name is checked against GET /v1/models --------------------------------------------------------


def test_wrong_name_on_a_server_that_answers_any_name(scripted):
    handler, url = scripted
    handler.served = ["qwen3-4b-instruct"]
    for rule in ("strict", "reference"):
        with pytest.raises(BackendError) as e:
            make_judge(JudgeConfig(url=url, name="qwen3-4b-instruc"), rule=rule)
        assert "'qwen3-4b-instruc'" in str(e.value) and "'qwen3-4b-instruct'" in str(e.value)
    assert handler.bodies == []  # caught before any request
    make_judge(JudgeConfig(url=url, name="qwen3-4b-instruct"))  # the right one passes


def test_servers_without_a_model_list_or_down_are_not_checked(scripted):
    handler, url = scripted  # /v1/models answers 404
    make_judge(JudgeConfig(url=url, name="anything"))
    assert handler.gets == 1
    down = OpenAIChat("http://127.0.0.1:9/v1", "x", timeout=2)
    down.check_model()  # unreachable: the requests report it


@pytest.mark.slow
def test_wrong_judge_name_against_medix_judge_serve(gguf_path, tmp_path, capsys):
    from medix_r1.cli import main
    from medix_r1.llm.server import serve

    srv = serve(gguf_path, port=0, block=False, n_ctx=1024, name="tiny-judge")
    try:
        with pytest.raises(BackendError, match=r"'tiny-jugde' is not served there; it serves 'tiny-judge'"):
            make_judge(JudgeConfig(url=srv.url, name="tiny-jugde"), rule="reference")
        assert srv.served == 0
        inp = tmp_path / "in.jsonl"
        inp.write_text(
            json.dumps(
                {"response": "<X_RAY><think>r</think><answer>ab</answer>", "ground_truth": "<X_RAY> cd"}
            )
            + "\n"
        )
        args = ["reward", "score", "--input", str(inp), "--output", str(tmp_path / "out.jsonl")]
        rc = main([*args, "--judge-url", srv.url, "--judge-name", "tiny-jugde"])
        err = capsys.readouterr().err
        assert rc == 2 and "'tiny-jugde'" in err and "'tiny-judge'" in err, err
        assert main([*args, "--judge-url", srv.url, "--judge-name", "tiny-judge", "--mode", "reference"]) == 0
        assert srv.served == 1
    finally:
        srv.close()
