"""LLM-judge scoring through any OpenAI-compatible endpoint (a hosted model, vLLM, or `vidlab serve`).

The judge prompts are the benchmarks' own, word for word, so judged numbers compare with the papers:
ActivityNet-QA's (VideoLLaMA3's) is Video-ChatGPT's QA prompt (a yes/no verdict and a 0-5 score), which
LLaMA-VID also sends for MSVD-QA and MSRVTT-QA; TempCompass's captioning judge reads a caption and answers
the multiple-choice question about it; the Video-ChatGPT generative benchmark has one 0-5 prompt per
aspect (correctness, detail, context, temporal, consistency); MMVU's judge extracts the final answer and
says whether it is correct.

A row's `scoring["judge"]` names its prompt (or a list of prompts: one generic Video-ChatGPT answer is
judged on three aspects); rows with `scoring["pair"]` (Video-ChatGPT consistency: two questions about one
video) are judged together, the verdict going to the pair's first member.

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


_VCG_HEAD = "You are an intelligent chatbot designed for evaluating the {what} of generative outputs for {pairs}. "
_VCG_HOW = " Here's how you can accomplish the task:------##INSTRUCTIONS: "
_VCG_ASK = (
    "Provide your evaluation only as a {name} score where the {name} score is an integer value between 0 and 5, "
    "with 5 indicating the highest level of {top}. Please generate the response in the form of a Python dictionary "
    "string with keys 'score', where its value is {value} in INTEGER, not STRING.DO NOT PROVIDE ANY OTHER OUTPUT TEXT "
    "OR EXPLANATION. Only provide the Python dictionary string. For example, your response should look like this: "
    "{{{{''score': 4.8}}}}."  # formatted twice: here, then with the answers
)
_VCG_PAIR = ("Please evaluate the following video-based question-answer pair:\n\nQuestion: {question}\nCorrect Answer: "
             "{answer}\nPredicted Answer: {pred}\n\n")
# Video-ChatGPT's quantitative_evaluation/evaluate_benchmark_{1..5}_*.py (LLaMA-VID sends the same), per aspect:
# (system, user); the user text is formatted with question, answer, pred (consistency: question1, question2,
# answer, pred1, pred2).
VIDEO_CHATGPT_PROMPTS = {
    "correctness": (
        _VCG_HEAD.format(what="factual accuracy", pairs="video-based question-answer pairs")
        + "Your task is to compare the predicted answer with the correct answer and determine if they are factually "
        "consistent." + _VCG_HOW + "- Focus on the factual consistency between the predicted answer and the correct "
        "answer. The predicted answer should not contain any misinterpretations or misinformation.\n- The predicted "
        "answer must be factually accurate and align with the video content.\n- Consider synonyms or paraphrases as "
        "valid matches.\n- Evaluate the factual accuracy of the prediction compared to the answer.",
        _VCG_PAIR + _VCG_ASK.format(name="factual accuracy", top="factual consistency",
                                    value="the factual accuracy score"),
    ),
    "detail": (
        _VCG_HEAD.format(what="detail orientation", pairs="video-based question-answer pairs")
        + "Your task is to compare the predicted answer with the correct answer and determine its level of detail, "
        "considering both completeness and specificity." + _VCG_HOW + "- Check if the predicted answer covers all "
        "major points from the video. The response should not leave out any key aspects.\n- Evaluate whether the "
        "predicted answer includes specific details rather than just generic points. It should provide comprehensive "
        "information that is tied to specific elements of the video.\n- Consider synonyms or paraphrases as valid "
        "matches.\n- Provide a single evaluation score that reflects the level of detail orientation of the "
        "prediction, considering both completeness and specificity.",
        _VCG_PAIR + _VCG_ASK.format(name="detail orientation", top="detail orientation",
                                    value="the detail orientation score"),
    ),
    "context": (
        _VCG_HEAD.format(what="contextual understanding", pairs="video-based question-answer pairs")
        + "Your task is to compare the predicted answer with the correct answer and determine if the generated "
        "response aligns with the overall context of the video content." + _VCG_HOW + "- Evaluate whether the "
        "predicted answer aligns with the overall context of the video content. It should not provide information "
        "that is out of context or misaligned.\n- The predicted answer must capture the main themes and sentiments of "
        "the video.\n- Consider synonyms or paraphrases as valid matches.\n- Provide your evaluation of the "
        "contextual understanding of the prediction compared to the answer.",
        _VCG_PAIR + _VCG_ASK.format(name="contextual understanding", top="contextual understanding",
                                    value="contextual understanding score"),
    ),
    "temporal": (
        _VCG_HEAD.format(what="temporal understanding", pairs="video-based question-answer pairs")
        + "Your task is to compare the predicted answer with the correct answer and determine if they correctly "
        "reflect the temporal sequence of events in the video content." + _VCG_HOW + "- Focus on the temporal "
        "consistency between the predicted answer and the correct answer. The predicted answer should correctly "
        "reflect the sequence of events or details as they are presented in the video content.\n- Consider synonyms "
        "or paraphrases as valid matches, but only if the temporal order is maintained.\n- Evaluate the temporal "
        "accuracy of the prediction compared to the answer.",
        _VCG_PAIR + _VCG_ASK.format(name="temporal accuracy", top="temporal consistency",
                                    value="the temporal accuracy score"),
    ),
    "consistency": (
        _VCG_HEAD.format(what="consistency", pairs="similar video-based question-answer pairs")
        + "You will be given two very similar questions, a common answer common to both the questions and predicted "
        "answers for the two questions .Your task is to compare the predicted answers for two very similar question, "
        "with a common correct answer and determine if they are consistent." + _VCG_HOW + "- Focus on the "
        "consistency between the two predicted answers and the correct answer. Both predicted answers should "
        "correspond to the correct answer and to each other, and should not contain any contradictions or "
        "significant differences in the conveyed information.\n- Both predicted answers must be consistent with each "
        "other and the correct answer, in terms of the information they provide about the video content.\n- "
        "Consider synonyms or paraphrases as valid matches, but only if they maintain the consistency in the conveyed "
        "information.\n- Evaluate the consistency of the two predicted answers compared to the correct answer.",
        "Please evaluate the following video-based question-answer pair:\n\nQuestion 1: {question1}\nQuestion 2: "
        "{question2}\nCorrect Answer: {answer}\nPredicted Answer to Question 1: {pred1}\nPredicted Answer to Question "
        "2: {pred2}\n\n" + _VCG_ASK.format(name="consistency", top="consistency", value="the consistency score"),
    ),
}
# The judge kinds that give one 0-5 score of an aspect (metric judge_<aspect>).
ASPECT_KINDS = {f"videochatgpt_{aspect}": aspect for aspect in VIDEO_CHATGPT_PROMPTS}

# MMVU's utils/eval_utils.py (GPT-4o with a structured-output schema there; here the same messages, the
# JSON read from the reply).
_MMVU_INSTRUCTION = (
    "Evaluate whether the model's final answer is correct by comparing it to the ground-truth answer provided for "
    "the given question.\n\nYou should first extract the final answer from the model's response, and then compare "
    "the extracted answer with the ground-truth answer to determine its accuracy.\n"
)
MMVU_CHOICE_SYSTEM = _MMVU_INSTRUCTION + (
    "Output your response in the following structured format:\n{\n"
    '    "extracted_answer": // str value "A" "B" "C" "D" "E", should be a single character\n'
    '    "correct": // boolean value, True if the answer is correct, False otherwise\n}\n'
)
MMVU_OPEN_SYSTEM = _MMVU_INSTRUCTION + (
    "The final answer generated by the model does not need to match the ground-truth answer word-for-word. However, "
    "it should only be considered correct if it demonstrates the exact same technique or concept explicitly and "
    "unambiguously equivalent to the ground-truth answer.\nOutput your response in the following structured format:"
    '\n{\n    "extracted_answer": // str value, the short final answer extracted from the model\'s response, do not '
    'hallucinate one that is not present in the response\n    "correct": // boolean value, True if the answer is '
    "correct, False otherwise\n}\n"
)


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


def judge_kinds(row: dict) -> list[str]:
    """The judge prompts a row is asked under (most rows: one)."""
    kinds = (row.get("scoring") or {}).get("judge")
    return [str(k) for k in kinds] if isinstance(kinds, list) else [str(kinds)] if kinds else []


def judge_messages(row: dict, kind: str | None = None, partner: dict | None = None) -> list[dict[str, str]]:
    """The chat messages that ask the judge about one prediction row, under `kind` (default: the row's
    one judge), with the pair's second row for a paired prompt (Video-ChatGPT consistency)."""
    scoring = row.get("scoring") or {}
    kind = kind or (judge_kinds(row) or [None])[0]
    if kind in ASPECT_KINDS:
        system, user = VIDEO_CHATGPT_PROMPTS[ASPECT_KINDS[kind]]
        if kind == "videochatgpt_consistency":
            if partner is None:
                raise EvaluationError(f"{row.get('source', row.get('id'))}: a consistency answer is judged with its "
                                      "pair's second answer, which is missing.")
            user = user.format(question1=scoring.get("question", ""),
                               question2=(partner.get("scoring") or {}).get("question", ""),
                               answer=row["references"][0], pred1=row["prediction"], pred2=partner["prediction"])
        else:
            user = user.format(question=scoring.get("question", ""), answer=row["references"][0],
                               pred=row["prediction"])
        return [{"role": "system", "content": system}, {"role": "user", "content": user}]
    if kind == "mmvu":
        choices = scoring.get("choices")
        context = (f"Question: {scoring.get('question', '')}\n\nOptions:\n{choices}" if choices
                   else f"Question: {scoring.get('question', '')}")
        user = f"{context}\n\nGround Truth Answer: {scoring.get('answer', '')}\n\nModel Response to the Question: " \
               f"{row['prediction']}"
        return [{"role": "system", "content": MMVU_CHOICE_SYSTEM if choices else MMVU_OPEN_SYSTEM},
                {"role": "user", "content": user}]
    if kind in ("activitynet_qa", "videochatgpt_qa"):
        user = ACTIVITYNET_USER.format(question=scoring.get("question", ""), answer=row["references"][0],
                                       pred=row["prediction"])
        return [{"role": "system", "content": ACTIVITYNET_SYSTEM}, {"role": "user", "content": user}]
    if kind == "tempcompass_captioning":
        user = (f"{TEMPCOMPASS_INSTRUCTIONS}\nVideo Description: {row['prediction']}\nMulti-Choice Question:\n"
                f"{scoring.get('question', '')}\n")
        return [{"role": "system", "content": TEMPCOMPASS_SYSTEM}, {"role": "user", "content": user}]
    raise EvaluationError(f"{row.get('source', row.get('id'))}: no judge prompt for {kind!r}.")


def _python_dict(reply: str) -> dict:
    """The dict between the reply's first "{" and last "}" (a Python or JSON literal), or {}."""
    braces = reply[reply.find("{") : reply.rfind("}") + 1]
    for parse in (json.loads, ast.literal_eval):  # JSON true/false, or Python True/False and quotes
        try:
            value = parse(braces) if braces else None
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            continue
        if isinstance(value, dict):
            return value
    return {}


def _number(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def read_verdict(kind: str, reply: str) -> dict[str, Any]:
    """The verdict in a judge's reply; `readable` False when the reply does not give one (it then counts as
    "no" / score 0, or as no option picked)."""
    if kind in ASPECT_KINDS:
        score = _number(_python_dict(reply).get("score"))
        if score is None:  # the prompt's own example is not a valid dict ({''score': 4.8}): judges echo it
            found = re.search(r"score['\"]?\s*:\s*['\"]?(\d+(?:\.\d+)?)", reply)
            score = float(found.group(1)) if found else None
        if score is None:
            return {"score": 0.0, "readable": False}
        return {"score": float(int(score)), "readable": True}  # int(): Video-ChatGPT's scripts average int(score)
    if kind == "mmvu":
        found = _python_dict(reply)
        correct = found.get("correct")
        if isinstance(correct, str) and correct.strip().lower() in ("true", "false"):
            correct = correct.strip().lower() == "true"
        if not isinstance(correct, bool):
            match = re.search(r"['\"]correct['\"]\s*:\s*(true|false)", reply, re.I)
            correct = None if match is None else match.group(1).lower() == "true"
        if correct is None:
            return {"pred": "no", "extracted": "", "readable": False}
        return {"pred": "yes" if correct else "no", "extracted": str(found.get("extracted_answer", "")),
                "readable": True}
    if kind in ("activitynet_qa", "videochatgpt_qa"):
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
        if kind == "videochatgpt_qa":  # Video-ChatGPT's and LLaMA-VID's scripts average int(score)
            score = float(int(score))
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


@dataclass(frozen=True)
class _Ask:
    """One request to the judge: the row whose verdict it makes, under which prompt, and the messages."""

    rid: str
    kind: str
    messages: list[dict]


def _asks(rows: list[dict]) -> tuple[list[_Ask], dict[str, list[str]]]:
    """The requests these rows need, and the prompts asked for each row id. A pair (Video-ChatGPT consistency)
    is asked once, for its first member, and only when both members are among the rows."""
    members = {}
    for row in rows:
        scoring = row.get("scoring") or {}
        if scoring.get("pair") is not None:
            members[(str(scoring["pair"]), scoring.get("member"))] = row
    asks, kinds = [], {}
    for row in rows:
        scoring = row.get("scoring") or {}
        partner = None
        if scoring.get("pair") is not None:
            partner = members.get((str(scoring["pair"]), 2))
            if scoring.get("member") != 1 or partner is None:
                continue
        rid = str(row["id"])
        kinds[rid] = judge_kinds(row)
        asks += [_Ask(rid, kind, judge_messages(row, kind, partner)) for kind in kinds[rid]]
    return asks, kinds


def _combine(kinds: dict[str, list[str]], found: dict[tuple[str, str], dict]) -> dict[str, dict]:
    """One verdict per row id: the verdict itself, or for aspect prompts (Video-ChatGPT) {"aspects": {aspect:
    score}, "readable"}; a row some of whose requests have no verdict yet gets none."""
    verdicts = {}
    for rid, row_kinds in kinds.items():
        if not all((rid, kind) in found for kind in row_kinds):
            continue
        if all(kind in ASPECT_KINDS for kind in row_kinds):
            parts = [found[(rid, kind)] for kind in row_kinds]
            verdicts[rid] = {"aspects": {ASPECT_KINDS[k]: v["score"] for k, v in zip(row_kinds, parts)},
                             "readable": all(v.get("readable", True) for v in parts)}
        else:
            verdicts[rid] = found[(rid, row_kinds[0])]
    return verdicts


def cached_verdicts(rows: list[dict], run_dir: Path) -> tuple[dict[str, dict], str | None]:
    """Verdicts already in judgements.jsonl for these rows as they are now, when one judge model made them
    all (None and {} when there are none, or several models)."""
    entries = _cached(run_dir / JUDGEMENTS)
    models = {e.get("model") for e in entries}
    if len(models) != 1:
        return {}, None
    by_prompt = {e["prompt"]: e for e in entries if "prompt" in e}
    asks, kinds = _asks(rows)
    found = {}
    for ask in asks:
        entry = by_prompt.get(_prompt_hash(ask.messages))
        if entry is not None:
            found[(ask.rid, ask.kind)] = entry["verdict"]
    return _combine(kinds, found), models.pop()


def judge_rows(rows: list[dict], run_dir: Path, options: JudgeOptions) -> dict[str, dict]:
    """Verdicts for the rows that need a judge, asking the endpoint only for those not cached.

    Raises:
        EvaluationError: the endpoint cannot be reached, refuses the key, or does not serve the model;
            every judgement made before that is kept in judgements.jsonl and reused on the next run.
    """
    import openai

    path = run_dir / JUDGEMENTS
    done = {e["key"]: e for e in _cached(path) if "key" in e}
    asks, kinds = _asks(rows)
    keyed = [(ask, _key(options.model, ask.messages)) for ask in asks]
    todo = [(ask, key) for ask, key in keyed if key not in done]
    if todo:
        client = openai.OpenAI(base_url=options.url, api_key=options.key or "none", timeout=options.timeout,
                               max_retries=options.retries)
        with LineAppender(path) as out, ThreadPoolExecutor(max_workers=max(1, options.workers)) as pool:
            futures = {pool.submit(_ask, client, options, ask.messages): (ask, key) for ask, key in todo}
            for future in as_completed(futures):
                ask, key = futures[future]
                try:
                    reply = future.result()
                except openai.OpenAIError as err:
                    pool.shutdown(wait=True, cancel_futures=True)
                    raise EvaluationError(
                        f"{options.url}: the judge did not answer for {ask.rid} ({type(err).__name__}: {err}). Check "
                        "--judge-url (the endpoint's base URL, e.g. http://host:8000/v1), --judge-model and "
                        f"--judge-key; the judgements made so far are kept in {path} and reused next time."
                    ) from err
                entry = {"id": ask.rid, "judge": ask.kind, "key": key, "prompt": _prompt_hash(ask.messages),
                         "model": options.model, "reply": reply, "verdict": read_verdict(ask.kind, reply)}
                out.write(entry)
                done[key] = entry
    return _combine(kinds, {(ask.rid, ask.kind): done[key]["verdict"] for ask, key in keyed})
