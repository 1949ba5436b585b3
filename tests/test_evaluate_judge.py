"""LLM-judge scoring over HTTP: a small OpenAI-compatible server started here on 127.0.0.1 answers the judge's
requests (by a rule over the prompt it receives); verdicts are read, scored, cached and reused."""

import json
import re
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from vidlab.errors import EvaluationError
from vidlab.evaluation.judge import (
    ACTIVITYNET_SYSTEM,
    JUDGEMENTS,
    MMVU_CHOICE_SYSTEM,
    MMVU_OPEN_SYSTEM,
    VIDEO_CHATGPT_PROMPTS,
    JudgeOptions,
)
from vidlab.evaluation.metrics import score_file

# The Video-ChatGPT aspect the test server scores a matching answer with (the integer part is what counts).
ASPECT_SCORES = {"correctness": "4.8", "detail": "4", "context": "3", "temporal": "2"}


class JudgeServer:
    """/v1/chat/completions: ActivityNet-QA prompts get {'pred': 'yes', 'score': 5} when the predicted answer
    equals the correct one (ignoring case and a final "."), {'pred': 'no', 'score': 1} otherwise, and a
    reply without a verdict for the prediction "GARBLE"; TempCompass captioning prompts get "Answer: A" when
    the description mentions dunking, else "Answer: None". Video-ChatGPT aspect prompts: {'score': ASPECT_SCORES
    [aspect]} for a prediction equal to the answer, {'score': 1} otherwise, no score for "GARBLE"; consistency:
    5 when the two predictions are equal, else 0. MMVU: correct when the ground truth is in the response."""

    def __init__(self):
        self.requests: list[dict] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (the http.server name)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append(body)
                reply = server.verdict(body["messages"])
                payload = json.dumps({
                    "id": f"chatcmpl-{len(server.requests)}", "object": "chat.completion", "created": 0,
                    "model": body["model"], "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": reply}}],
                }).encode()
                self.send_response(200 if self.path == "/v1/chat/completions" else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @staticmethod
    def verdict(messages: list[dict]) -> str:
        user = messages[-1]["content"]
        if messages[0]["content"] == ACTIVITYNET_SYSTEM:
            answer = re.search(r"Correct Answer: (.*)\n", user).group(1)
            pred = re.search(r"Predicted Answer: (.*)\n", user).group(1)
            if pred == "GARBLE":
                return "The prediction looks fine to me."
            same = pred.lower().rstrip(".") == answer.lower()
            return "{'pred': 'yes', 'score': 5}" if same else "{'pred': 'no', 'score': 1}"
        aspect = next((a for a, (system, _) in VIDEO_CHATGPT_PROMPTS.items() if messages[0]["content"] == system), None)
        if aspect == "consistency":
            first = re.search(r"Predicted Answer to Question 1: (.*)\n", user).group(1)
            second = re.search(r"Predicted Answer to Question 2: (.*)\n", user).group(1)
            return "{'score': 5}" if first == second else "{'score': 0}"
        if aspect is not None:
            answer = re.search(r"Correct Answer: (.*)\n", user).group(1)
            pred = re.search(r"Predicted Answer: (.*)\n", user).group(1)
            if pred == "GARBLE":
                return "I cannot rate this."
            same = pred.lower().rstrip(".") == answer.lower().rstrip(".")
            return f"{{'score': {ASPECT_SCORES[aspect]}}}" if same else "{'score': 1}"
        if messages[0]["content"] in (MMVU_CHOICE_SYSTEM, MMVU_OPEN_SYSTEM):
            truth = re.search(r"Ground Truth Answer: (.*)\n", user).group(1)
            response = user.split("Model Response to the Question: ", 1)[1]
            if response == "GARBLE":
                return "Hard to say."
            correct = truth.lower() in response.lower()
            return json.dumps({"extracted_answer": response[:20], "correct": correct})
        description = re.findall(r"Video Description: (.*)\n", user)[-1]  # after the prompt's own examples
        return "Reasoning: it says so.\nAnswer: A" if "dunk" in description else "Reasoning: unclear.\nAnswer: None"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


def activitynet_row(rid, question, answer, prediction, kind):
    return {"id": rid, "source": f"test_q.json#{rid}", "kind": "open", "prompt": question, "media": ["v.mp4"],
            "prediction": prediction, "references": [answer], "meta": {"type": kind},
            "scoring": {"benchmark": "activitynet_qa", "judge": "activitynet_qa", "question": question}}


def write_rows(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


ROWS = [
    activitynet_row("q1", "what color is the ball", "red", "Red.", "Color"),
    activitynet_row("q2", "what does the girl do", "dance", "she sings", "Motion"),
    activitynet_row("q3", "is it raining", "no", "GARBLE", "Yes/No"),
]


def test_activitynet_judge_scores_caches_and_reuses(tmp_path):
    path = write_rows(tmp_path / "predictions.jsonl", ROWS)
    with JudgeServer() as server:
        judge = JudgeOptions(url=server.url, model="judge-1", retries=0, workers=2)
        metrics = score_file(path, ["judge_accuracy", "judge_score", "exact_match"], judge=judge)
        assert len(server.requests) == 3
        first = next(r for r in server.requests if "what color" in r["messages"][1]["content"])
        assert first["model"] == "judge-1" and first["temperature"] == 0.0
        assert "Question: what color is the ball\nCorrect Answer: red\nPredicted Answer: Red.\n\nProvide your " \
               "evaluation only as a yes/no" in first["messages"][1]["content"]
        assert metrics["judge_accuracy"] == pytest.approx(100 / 3)  # yes, no, and an unreadable reply (no)
        assert metrics["judge_score"] == pytest.approx(2.0)          # (5 + 1 + 0) / 3
        assert metrics["judge_model"] == "judge-1" and metrics["benchmark"]["unreadable"] == ["q3"]
        by_type = metrics["benchmark"]["tables"]["by type"]
        assert by_type["Color"] == {"strict_match": 0.0, "exact_match": 100.0, "total": 1, "judge_accuracy": 100.0,
                                    "judge_score": 5.0}
        assert metrics["benchmark"]["headline"] == {"judge_accuracy": pytest.approx(100 / 3),
                                                   "judge_score": pytest.approx(2.0),
                                                   "exact_match": pytest.approx(100 / 3)}
        lines = (tmp_path / JUDGEMENTS).read_text().splitlines()
        assert len(lines) == 3 and {json.loads(line)["id"] for line in lines} == {"q1", "q2", "q3"}
        # Again: every verdict is cached, nothing is asked.
        again = score_file(path, ["judge_accuracy", "judge_score"], judge=judge)
        assert len(server.requests) == 3 and again["judge_score"] == pytest.approx(2.0)
        # A changed prediction is judged again, alone.
        write_rows(path, [*ROWS[:2], activitynet_row("q3", "is it raining", "no", "No", "Yes/No")])
        changed = score_file(path, ["judge_accuracy"], judge=judge)
        assert len(server.requests) == 4 and changed["judge_accuracy"] == pytest.approx(200 / 3)
    # Without judge options, `vidlab eval score` reuses the cache of the one judge model (no server needed).
    cached = score_file(path, ["judge_accuracy"])
    assert cached["judge_accuracy"] == pytest.approx(200 / 3) and cached["judge_model"] == "judge-1"


def test_tempcompass_captioning_is_scored_by_the_judges_choice(tmp_path):
    def row(rid, prediction, answer):
        return {"id": rid, "source": "captioning.json", "kind": "judged", "prompt": "q", "media": ["v.mp4"],
                "prediction": prediction, "references": [answer], "meta": {"format": "captioning", "dim": "action"},
                "scoring": {"benchmark": "tempcompass", "format": "captioning", "kind": "judged", "target": "a",
                            "judge": "tempcompass_captioning",
                            "question": "Which?\nInformation A: {'action': 'dunking'}\nInformation B: {'action': 'x'}"}}

    path = write_rows(tmp_path / "predictions.jsonl", [row("c1", "A man dunks a ball.", "A. dunking"),
                                                       row("c2", "A man walks.", "A. dunking")])
    with JudgeServer() as server:
        metrics = score_file(path, ["accuracy"], judge=JudgeOptions(url=server.url, model="j", retries=0))
        content = server.requests[0]["messages"][1]["content"]
        assert "\nVideo Description: A man" in content and content.endswith(
            "Multi-Choice Question:\nWhich?\nInformation A: {'action': 'dunking'}\nInformation B: {'action': 'x'}\n")
    assert metrics["accuracy"] == 50.0
    scored = {json.loads(line)["id"]: json.loads(line)["scores"] for line in path.read_text().splitlines()}
    assert scored["c1"] == {"judge_answer": "a", "correct": True} and scored["c2"]["judge_answer"] == "none"


def test_an_unreachable_judge_names_the_url_and_keeps_what_was_judged(tmp_path):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    path = write_rows(tmp_path / "predictions.jsonl", ROWS[:1])
    url = f"http://127.0.0.1:{port}/v1"
    with pytest.raises(EvaluationError, match=rf"{re.escape(url)}: the judge did not answer for q1 .*--judge-url"):
        score_file(path, judge=JudgeOptions(url=url, model="j", retries=0, timeout=5))
