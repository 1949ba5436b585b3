"""LLM-judge scoring through any OpenAI-compatible endpoint (a hosted model, vLLM, or `vidlab serve`).

The judge prompts are VideoLLaMA3's, word for word, so judged numbers compare with its paper:
ActivityNet-QA's is Video-ChatGPT's correctness prompt (a yes/no verdict and a 0-5 score), and
TempCompass's captioning judge reads a caption and answers the multiple-choice question about it.

Judgements are cached in the run folder's `judgements.jsonl`, one flushed line per judged record,
keyed by the judge model and a hash of the exact messages: a rerun asks only for what is missing,
and a changed prediction (or prompt) is judged again.
"""

from __future__ import annotations

import ast
import hashlib
import json
import re
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vidlab.errors import EvaluationError
from vidlab.files import LineAppender, read_jsonl

JUDGEMENTS = "judgements.jsonl"

ACTIVITYNET_SYSTEM = (
    "You are an intelligent chatbot designed for evaluating the correctness of generative outputs for "
    "question-answer pairs. Your task is to compare the predicted answer with the correct answer and determine if "
    "they match meaningfully. Here's how you can accomplish the task:------##INSTRUCTIONS: - Focus on the "
    "meaningful match between the predicted answer and the correct answer.\n- Consider synonyms or paraphrases as "
    "valid matches.\n- Evaluate the correctness of the prediction compared to the answer."
)
ACTIVITYNET_USER = (
    "Please evaluate the following video-based question-answer pair:\n\nQuestion: {question}\nCorrect Answer: "
    "{answer}\nPredicted Answer: {pred}\n\nProvide your evaluation only as a yes/no and score where the score is an "
    "integer value between 0 and 5, with 5 indicating the highest meaningful match. Please generate the response in "
    "the form of a Python dictionary string with keys 'pred' and 'score', where value of 'pred' is  a string of "
    "'yes' or 'no' and value of 'score' is in INTEGER, not STRING.DO NOT PROVIDE ANY OTHER OUTPUT TEXT OR "
    "EXPLANATION. Only provide the Python dictionary string. For example, your response should look like this: "
    "{{'pred': 'yes', 'score': 4.8}}."
)
TEMPCOMPASS_SYSTEM = "You are an AI assistant for question answering."
TEMPCOMPASS_INSTRUCTIONS = """
You will receive a video description and a multi-choice question. Your task is to choose the correct answer and \
briefly explain the reason why you choose the answer. If none of the choice candidates are correct or the video \
description lacks enough information to answer the question, just answer "None". Please organize your response in \
this format:
```
Reasoning: [Your reason to obtain the answer]
Answer: [Your answer]
```

Here are some examples of video description, multi-choice question and the expected answer:
```
Video Description: A person is palying football.
Multi-Choice Question:
What is the person doing in the video?
Information A: {'subject': 'person', 'action': 'cooking'}
Information B: {'subject': 'person', 'action': 'palying football'} 
Information C: {'subject': 'person', 'action': 'playing basketball'} 
Information D: {'subject': 'person', 'action': 'reading book'} 
Reasoning: The video description mentions that the person is playing football.
Answer: B

Video Description: A bird is flying clockwise.
Multi-Choice Question:
In which direction is the bird flying?
Information A: {'subject': 'bird', 'action': 'backwark'}
Information B: {'subject': 'bird', 'action': 'counter-clockwise'}
Information C: {'subject': 'bird', 'action': 'clockwise'}
Information D: {'subject': 'bird', 'action': 'downward'}
Reasoning: The video description mentions that the bird is flying clockwise
Answer: C

Video Description: An air balloon is inflating.
Multi-Choice Question:
What is happening to the air balloon?
Information A: {'subject': 'air ballon', 'action': 'exploding'}
Information B: {'subject': 'air ballon', 'action': 'getting smaller'}
Information C: {'subject': 'air ballon', 'action': 'flying'}
Reasoning: The video description mentions that the air balloon is inflating, while none of the coices can be \
explained as inflating.
Answer: None
```
"""  # noqa: W291 (trailing spaces are part of the prompt as VideoLLaMA3 sends it)


@dataclass(frozen=True)
class JudgeOptions:
    """Which model judges, and how it is called.

    Attributes:
        url: the endpoint's base URL, e.g. http://localhost:8000/v1.
        model: the model name the endpoint serves.
        key: the API key (None: none needed, as with a local server).
        workers: requests in flight at once.
        timeout: seconds to wait for one answer.
        retries: tries again after a connection error, timeout, 429 or 5xx (the openai client's retries).
        temperature: sampling temperature (0: the same verdict every time; VideoLLaMA3 used 0.7).
        max_tokens: most tokens of one verdict.
    """

    url: str
    model: str
    key: str | None = None
    workers: int = 4
    timeout: float = 60.0
    retries: int = 2
    temperature: float = 0.0
    max_tokens: int = 256


def judge_messages(row: dict) -> list[dict[str, str]]:
    """The chat messages that ask the judge about one prediction row."""
    scoring = row.get("scoring") or {}
    if scoring.get("judge") == "activitynet_qa":
        user = ACTIVITYNET_USER.format(question=scoring.get("question", ""), answer=row["references"][0],
                                       pred=row["prediction"])
        return [{"role": "system", "content": ACTIVITYNET_SYSTEM}, {"role": "user", "content": user}]
    if scoring.get("judge") == "tempcompass_captioning":
        user = (f"{TEMPCOMPASS_INSTRUCTIONS}\nVideo Description: {row['prediction']}\nMulti-Choice Question:\n"
                f"{scoring.get('question', '')}\n")
        return [{"role": "system", "content": TEMPCOMPASS_SYSTEM}, {"role": "user", "content": user}]
    raise EvaluationError(f"{row.get('source', row.get('id'))}: no judge prompt for {scoring.get('judge')!r}.")


def read_verdict(kind: str, reply: str) -> dict[str, Any]:
    """The verdict in a judge's reply; `readable` False when the reply does not give one (it then counts as
    "no" / score 0, or as no option picked)."""
    if kind == "activitynet_qa":
        found: dict = {}
        braces = reply[reply.find("{") : reply.rfind("}") + 1]
        try:
            value = ast.literal_eval(braces) if braces else None  # the prompt asks for a Python dict
            found = value if isinstance(value, dict) else {}
        except (ValueError, SyntaxError):
            pred = re.search(r"['\"]pred['\"]\s*:\s*['\"](yes|no)['\"]", reply, re.I)
            score = re.search(r"['\"]score['\"]\s*:\s*['\"]?(\d+(?:\.\d+)?)", reply)
            found = {"pred": pred.group(1) if pred else None, "score": score.group(1) if score else None}
        pred = str(found.get("pred", "")).strip().lower()
        try:
            score = float(found.get("score"))
        except (TypeError, ValueError):
            score = None
        if pred not in ("yes", "no") or score is None:
            return {"pred": "no", "score": 0.0, "readable": False}
        return {"pred": pred, "score": score, "readable": True}
    answers = re.findall(r"Answer: [A-D]|Answer: None", reply)
    if not answers:
        return {"answer": "none", "readable": False}
    return {"answer": answers[0].split("Answer:")[1].strip().lower(), "readable": True}


def _key(model: str, messages: list[dict]) -> str:
    return hashlib.sha256(json.dumps([model, messages], sort_keys=True).encode()).hexdigest()


def _prompt_hash(messages: list[dict]) -> str:
    return hashlib.sha256(json.dumps(messages, sort_keys=True).encode()).hexdigest()


def _ask(client, options: JudgeOptions, messages: list[dict]) -> str:
    reply = client.chat.completions.create(
        model=options.model, messages=messages, temperature=options.temperature, max_tokens=options.max_tokens
    )
    return reply.choices[0].message.content or ""


def _cached(path: Path) -> list[dict]:
    return read_jsonl(path, torn_tail_ok=True) if path.is_file() else []


def cached_verdicts(rows: list[dict], run_dir: Path) -> tuple[dict[str, dict], str | None]:
    """Verdicts already in judgements.jsonl for these rows as they are now, when one judge model made them
    all (None and {} when there are none, or several models)."""
    entries = _cached(run_dir / JUDGEMENTS)
    models = {e.get("model") for e in entries}
    if len(models) != 1:
        return {}, None
    by_prompt = {e["prompt"]: e for e in entries if "prompt" in e}
    verdicts = {}
    for row in rows:
        entry = by_prompt.get(_prompt_hash(judge_messages(row)))
        if entry is not None:
            verdicts[str(row["id"])] = entry["verdict"]
    return verdicts, models.pop()


def judge_rows(rows: list[dict], run_dir: Path, options: JudgeOptions) -> dict[str, dict]:
    """Verdicts for the rows that need a judge, asking the endpoint only for those not cached.

    Raises:
        EvaluationError: the endpoint cannot be reached, refuses the key, or does not serve the model;
            every judgement made before that is kept in judgements.jsonl and reused on the next run.
    """
    import openai

    path = run_dir / JUDGEMENTS
    done = {e["key"]: e for e in _cached(path) if "key" in e}
    asks = {}
    for row in rows:
        messages = judge_messages(row)
        asks[str(row["id"])] = (row, messages, _key(options.model, messages))
    todo = [(rid, row, messages, key) for rid, (row, messages, key) in asks.items() if key not in done]
    if todo:
        client = openai.OpenAI(base_url=options.url, api_key=options.key or "none", timeout=options.timeout,
                               max_retries=options.retries)
        with LineAppender(path) as out, ThreadPoolExecutor(max_workers=max(1, options.workers)) as pool:
            futures = {pool.submit(_ask, client, options, messages): (rid, row, messages, key)
                       for rid, row, messages, key in todo}
            for future in as_completed(futures):
                rid, row, messages, key = futures[future]
                try:
                    reply = future.result()
                except openai.OpenAIError as err:
                    pool.shutdown(wait=True, cancel_futures=True)
                    raise EvaluationError(
                        f"{options.url}: the judge did not answer for {rid} ({type(err).__name__}: {err}). Check "
                        "--judge-url (the endpoint's base URL, e.g. http://host:8000/v1), --judge-model and "
                        f"--judge-key; the judgements made so far are kept in {path} and reused next time."
                    ) from err
                verdict = read_verdict(row["scoring"]["judge"], reply)
                entry = {"id": rid, "key": key, "prompt": _prompt_hash(messages), "model": options.model,
                         "reply": reply, "verdict": verdict}
                out.write(entry)
                done[key] = entry
    return {rid: done[key]["verdict"] for rid, (_, _, key) in asks.items()}
