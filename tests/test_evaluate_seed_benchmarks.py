"""The seed systems' benchmarks: MMVU as TinyLLaVA-Video asks and scores it (and MMVU's own judge), MSVD-QA and
MSRVTT-QA in LLaMA-VID's layout under Video-ChatGPT's judge, and the Video-ChatGPT generative benchmark's five
judged aspects. Each read from files in the real field names, judged by the test judge server on 127.0.0.1."""

import json
import shutil
from pathlib import Path

import pytest
from conftest import gradient_frames
from test_evaluate_judge import JudgeServer
from typer.testing import CliRunner

from vidlab.evaluation.benchmarks import BENCHMARKS, read_letter
from vidlab.evaluation.benchmarks.mmvu import read_match
from vidlab.evaluation.cli import eval_app
from vidlab.evaluation.judge import JUDGEMENTS, JudgeOptions
from vidlab.evaluation.metrics import score_file
from vidlab.evaluation.report import write_report
from vidlab.evaluation.run import RunOptions
from vidlab.media.writer import write_video
from vidlab.settings import GenerationOptions

ASPECTS = ["judge_correctness", "judge_detail", "judge_context", "judge_temporal", "judge_consistency"]


@pytest.fixture(scope="module")
def clip_file(tmp_path_factory) -> Path:
    return write_video(tmp_path_factory.mktemp("clip") / "clip.mp4", gradient_frames(4, 32, 32), fps=4)


def put(path: Path, data) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, Path):
        shutil.copy(data, path)
    else:
        path.write_text(data if isinstance(data, str) else json.dumps(data, indent=1))
    return path


def text_of(record) -> str:
    return record.conversation.turns[-1].parts[-1].text


def predictions(data, answers: dict[str, str], folder: Path) -> Path:
    """predictions.jsonl as `vidlab eval run` writes it, with the given answers."""
    rows = []
    for r in data.records:
        if r.id not in answers:
            continue
        row = {"id": r.id, "source": r.source, "kind": r.kind, "prompt": r.question,
               "media": [p.path for p in r.conversation.media], "prediction": answers[r.id],
               "references": r.references, "meta": r.meta, "scoring": r.scoring}
        if r.kind == "choice":
            row.update(options=r.options, answer=r.answer)
        rows.append(row)
    return put(folder / "predictions.jsonl", "".join(json.dumps(r) + "\n" for r in rows))


def judge_of(server) -> JudgeOptions:
    return JudgeOptions(url=server.url, model="judge-1", retries=0, workers=2)


# ---- MMVU ---------------------------------------------------------------------------------------------

HF = "https://huggingface.co/datasets/yale-nlp/MMVU/resolve/main/"
EMPTY = {"A": "", "B": "", "C": "", "D": "", "E": ""}


def mmvu_item(number, subject, kind, question, answer, choices=EMPTY, video=None):
    return {"id": f"validation_{number}", "video": video or f"{HF}videos/{subject.replace(' ', '_')}/{number}.mp4",
            "youtube_url": "https://www.youtube.com/watch?v=VkqytRr85ao", "question_type": kind,
            "metadata": {"subject": subject, "textbook": "A Handbook", "knowledge": ["https://en.wikipedia.org/wiki/X"],
                         "rationale": "Because the video shows it."},
            "question": question, "choices": choices, "answer": answer}


@pytest.fixture
def mmvu_root(tmp_path, clip_file) -> Path:
    root = tmp_path / "mmvu"
    gases = {"A": "Oxygen", "B": "Carbon dioxide", "C": "Nitrogen", "D": "Hydrogen", "E": "Argon"}
    parts = {"A": "cell wall", "B": "nucleus", "C": "ribosome", "D": "vacuole", "E": "membrane"}
    put(root / "validation.json", [
        mmvu_item(0, "Art", "open-ended", "Which cinematic shooting technique is shown in the video?", "Dolly Zoom"),
        mmvu_item(1, "Chemistry", "multiple-choice", "Which gas is exhaled into the limewater?", "B", gases),
        mmvu_item(2, "Materials Science", "multiple-choice", "Which gas burns with a pop?", "D", gases),
        mmvu_item(3, "Chemistry", "open-ended", "What solution turns milky?", "limewater"),
        mmvu_item(4, "Biology", "multiple-choice", "Which part is stained first?", "A", parts),
        mmvu_item(5, "Art", "open-ended", "Where is it filmed?", "Paris", video="https://example.com/v.mp4"),
    ])
    for name in ("Art/0", "Chemistry/1", "Materials_Science/2", "Chemistry/3", "Biology/4"):
        put(root / f"videos/{name}.mp4", clip_file)
    return root


def test_mmvu_prompts_are_tinyllava_videos_and_videos_come_from_the_release_urls(mmvu_root):
    from vidlab.evaluation.benchmarks import load_benchmark

    data = load_benchmark("mmvu", mmvu_root)
    assert [r.id for r in data.records] == [f"validation_{n}" for n in range(5)]
    assert "https://example.com/v.mp4" in data.skipped[0].reason and data.skipped[0].id == "validation_5"
    open_one, choice = data.records[0], data.records[1]
    assert text_of(open_one) == ("Which cinematic shooting technique is shown in the video?\n"
                                 "Answer the question directly without explanation.")
    assert text_of(choice) == ("Which gas is exhaled into the limewater?\nA. Oxygen\nB. Carbon dioxide\n"
                               "C. Nitrogen\nD. Hydrogen\nE. Argon\n"
                               "Answer with the option's letter from the given choices directly.")
    assert open_one.kind == "match" and choice.kind == "choice" and choice.answer == "B"
    assert data.records[2].conversation.media[0].path == "videos/Materials_Science/2.mp4"
    assert choice.meta == {"question_type": "multiple-choice", "subject": "Chemistry"}


def test_mmvu_answer_readers_follow_tinyllava_video():
    options = ["Oxygen", "Carbon dioxide", "Nitrogen", "Hydrogen", "Argon"]
    assert read_letter("B. Carbon dioxide", options, "mmvu") == "B"          # first character
    assert read_letter("'C'.", options, "mmvu") == "C"                        # punctuation stripped first
    assert read_letter("I pick (A), not (D)", options, "mmvu") == "D"        # parenthesised: the last one found
    assert read_letter("the answer is E here", options, "mmvu") == "E"       # a letter standing alone
    assert read_letter("the gas in the video is clearly hydrogen gas", options, "mmvu") == "D"  # > 5 words: text
    assert read_letter("clearly hydrogen", options, "mmvu") is None          # text only counts past five words
    assert read_letter("no idea", options, "mmvu") is None                   # the original guesses at random here
    row = {"references": ["Dolly Zoom"]}
    assert read_match("It is a dolly zoom shot.", row) == (True, True)       # the longer contains the shorter
    assert read_match("dolly", row) == (True, True)
    assert read_match("a zoom", row) == (False, True)
    assert read_match("  ", row) == (False, False)                           # empty: wrong and listed


def test_mmvu_accuracy_per_question_type_and_mmvus_judge(mmvu_root, tmp_path):
    from vidlab.evaluation.benchmarks import load_benchmark

    data = load_benchmark("mmvu", mmvu_root)
    answers = {"validation_0": "dolly", "validation_1": "(B) Carbon dioxide", "validation_2": "C",
               "validation_3": "GARBLE", "validation_4": "I think the stain reaches the cell wall before anything"}
    path = predictions(data, answers, tmp_path / "run")
    without = score_file(path, ["accuracy", "judge_accuracy"])
    assert without["accuracy"] == 60.0 and "judge_accuracy" not in without   # 0, 1, 4 right
    table = without["benchmark"]["tables"]["question_type"]
    assert table["multiple-choice"]["correct"] == 2 and table["open-ended"] == {"accuracy": 50.0, "correct": 1,
                                                                                 "total": 2}
    assert "--judge-url" in without["notes"]["judge"]
    with JudgeServer() as server:
        judged = score_file(path, ["accuracy", "judge_accuracy"], judge=judge_of(server))
        assert len(server.requests) == 5                                    # every question, choice ones too
        choice = next(r for r in server.requests if "limewater?" in r["messages"][1]["content"])
        assert choice["messages"][1]["content"] == (
            "Question: Which gas is exhaled into the limewater?\n\nOptions:\nA: Oxygen\nB: Carbon dioxide\nC: Nitrogen"
            "\nD: Hydrogen\nE: Argon\n\nGround Truth Answer: B\n\nModel Response to the Question: (B) Carbon dioxide")
        assert choice["messages"][0]["content"].startswith("Evaluate whether the model's final answer is correct")
        assert '"extracted_answer": // str value "A" "B" "C" "D" "E"' in choice["messages"][0]["content"]
        opened = next(r for r in server.requests if "shooting technique" in r["messages"][1]["content"])
        assert opened["messages"][1]["content"] == (
            "Question: Which cinematic shooting technique is shown in the video?\n\nGround Truth Answer: Dolly Zoom"
            "\n\nModel Response to the Question: dolly")
        assert "exact same technique or concept" in opened["messages"][0]["content"]
    # Judge: 1 and 4 correct ("b", "a" are in the responses), 0 and 2 not, 3 no verdict (counts as not).
    assert judged["judge_accuracy"] == 40.0 and judged["accuracy"] == 60.0
    assert judged["benchmark"]["headline"] == {"accuracy": 60.0, "judge_accuracy": 40.0}
    assert "validation_3" in judged["unreadable"]
    assert judged["benchmark"]["tables"]["by question_type (judge)"] == {
        "multiple-choice": {"judge_accuracy": pytest.approx(200 / 3), "total": 3},
        "open-ended": {"judge_accuracy": 0.0, "total": 2}}
    rows = {json.loads(line)["id"]: json.loads(line)["scores"] for line in path.read_text().splitlines()}
    assert rows["validation_1"] == {"choice": "B", "correct": True, "judge": "yes"}
    assert rows["validation_0"] == {"correct": True, "judge": "no"}
    report = write_report(tmp_path / "run").read_text()
    assert "| Judge accuracy | 40.00 |" in report and "### By question_type (judge)" in report


# ---- MSVD-QA and MSRVTT-QA -------------------------------------------------------------------------------


def test_msvd_qa_in_llama_vids_layout_judged_yes_no_and_score(tmp_path, clip_file):
    root = tmp_path / "msvd_qa"
    put(root / "test_qa.json", [
        {"video_id": "-4wsuPCjDBc_5_15", "question": "what is a man holding?", "id": 0, "answer": "fish"},
        {"video_id": "-4wsuPCjDBc_5_15", "question": "who holds a fish?", "id": 1, "answer": "man"},
        {"video_id": "PqSZ89FqpiY_65_75", "question": "what does a dog do?", "id": 2, "answer": "run"},
        {"video_id": "missing_1_2", "question": "how many cats play?", "id": 3, "answer": "two"}])
    put(root / "video/-4wsuPCjDBc_5_15.avi", clip_file)
    put(root / "video/PqSZ89FqpiY_65_75.avi", clip_file)
    from vidlab.evaluation.benchmarks import load_benchmark

    data = load_benchmark("msvd_qa", root)
    first = data.records[0]
    assert text_of(first) == "what is a man holding?"                     # LLaMA-VID sends the bare question
    assert first.conversation.media[0].path == "video/-4wsuPCjDBc_5_15.avi"
    assert [r.meta["type"] for r in data.records] == ["what", "who", "what", "how"]
    assert first.scoring == {"benchmark": "msvd_qa", "judge": "videochatgpt_qa", "question": "what is a man holding?"}
    path = predictions(data, {"0": "Fish.", "1": "a woman", "2": "GARBLE"}, tmp_path / "run")
    with JudgeServer() as server:
        metrics = score_file(path, ["judge_accuracy", "judge_score", "exact_match"], judge=judge_of(server))
        sent = next(r for r in server.requests if "holding" in r["messages"][1]["content"])["messages"][1]["content"]
        assert "Question: what is a man holding?\nCorrect Answer: fish\nPredicted Answer: Fish.\n\n" in sent
    assert metrics["judge_accuracy"] == pytest.approx(100 / 3) and metrics["judge_score"] == pytest.approx(2.0)
    assert metrics["exact_match"] == pytest.approx(100 / 3)
    assert metrics["benchmark"]["headline"]["judge_accuracy"] == pytest.approx(100 / 3)
    by_type = metrics["benchmark"]["tables"]["by type"]
    assert by_type["what"]["judge_accuracy"] == 50.0 and by_type["who"]["judge_score"] == 1.0
    assert metrics["benchmark"]["unreadable"] == ["2"]
    assert (tmp_path / "run" / JUDGEMENTS).is_file()


def test_numeric_video_ids_of_the_original_releases_and_repeated_ids(tmp_path, clip_file):
    from vidlab.evaluation.benchmarks import load_benchmark

    msvd = tmp_path / "msvd_qa"
    put(msvd / "test_qa.json", [{"answer": "fish", "id": 30933, "question": "what is a man holding?",
                                 "video_id": 1302}])
    put(msvd / "youtube_mapping.txt", "-4wsuPCjDBc_5_15 vid1301\nPqSZ89FqpiY_65_75 vid1302\n")
    put(msvd / "YouTubeClips/PqSZ89FqpiY_65_75.avi", clip_file)
    assert load_benchmark("msvd_qa", msvd).records[0].conversation.media[0].path == "YouTubeClips/PqSZ89FqpiY_65_75.avi"
    msrvtt = tmp_path / "msrvtt_qa"
    put(msrvtt / "test_qa.json", [
        {"answer": "cook", "category_id": 9, "id": 158581, "question": "what is a man doing?", "video_id": 7010},
        {"answer": "food", "category_id": 9, "id": 158581, "question": "what is cooked?", "video_id": "video7010"}])
    put(msrvtt / "video/video7010.mp4", clip_file)
    data = load_benchmark("msrvtt_qa", msrvtt)
    assert [r.id for r in data.records] == ["158581", "158581_1"]
    assert {r.conversation.media[0].path for r in data.records} == {"video/video7010.mp4"}


# ---- Video-ChatGPT generative benchmark -----------------------------------------------------------------


@pytest.fixture
def video_chatgpt_root(tmp_path, clip_file) -> Path:
    root = tmp_path / "video_chatgpt"
    put(root / "generic_qa.json", [
        {"video_name": "v_1QIUV7WYKXg", "Q": "What is the man doing?", "A": "He is juggling balls."},
        {"video_name": "v_9eniCub7u60", "Q": "Describe the video in detail.", "A": "A girl dances on a stage."}])
    put(root / "temporal_qa.json", [
        {"video_name": "v_9eniCub7u60", "Q": "What happens after the girl bows?", "A": "She starts dancing."}])
    put(root / "consistency_qa.json", [
        {"video_name": "v_1QIUV7WYKXg", "Q1": "What is the man juggling?",
         "Q2": "What objects does the man throw in the air?", "A": "Balls."},
        {"video_name": "v_9eniCub7u60", "Q1": "Where is the girl?", "Q2": "In what place does the girl dance?",
         "A": "On a stage."}])
    put(root / "Test_Videos/v_1QIUV7WYKXg.mp4", clip_file)
    put(root / "Test_Videos/v_9eniCub7u60.mkv", clip_file)
    return root


def test_video_chatgpt_five_aspects_judged_with_its_prompts(video_chatgpt_root, tmp_path):
    from vidlab.evaluation.benchmarks import load_benchmark

    data = load_benchmark("video_chatgpt", video_chatgpt_root)
    assert [r.id for r in data.records] == ["generic/1", "generic/2", "temporal/1", "consistency/1/1",
                                            "consistency/1/2", "consistency/2/1", "consistency/2/2"]
    assert text_of(data.records[4]) == "What objects does the man throw in the air?"
    assert data.records[1].conversation.media[0].path == "Test_Videos/v_9eniCub7u60.mkv"
    assert len(load_benchmark("video_chatgpt", video_chatgpt_root, split="temporal").records) == 1
    answers = {"generic/1": "He is juggling balls.", "generic/2": "GARBLE", "temporal/1": "She starts dancing.",
               "consistency/1/1": "Balls.", "consistency/1/2": "Balls.", "consistency/2/1": "On a stage.",
               "consistency/2/2": "In a park."}
    path = predictions(data, answers, tmp_path / "run")
    without = score_file(path, ASPECTS)
    assert not any(a in without for a in ASPECTS) and "--judge-url" in without["notes"]["judge"]
    with JudgeServer() as server:
        metrics = score_file(path, ASPECTS, judge=judge_of(server))
        assert len(server.requests) == 3 * 2 + 1 + 2                       # generic x3 aspects, temporal, 2 pairs
        pair = next(r for r in server.requests if "Question 1: What is" in r["messages"][1]["content"])
        assert ("Question 1: What is the man juggling?\nQuestion 2: What objects does the man throw in the air?\n"
                "Correct Answer: Balls.\nPredicted Answer to Question 1: Balls.\nPredicted Answer to Question 2: "
                "Balls.\n\n") in pair["messages"][1]["content"]
        assert pair["messages"][0]["content"].startswith("You are an intelligent chatbot designed for evaluating the "
                                                         "consistency of generative outputs")
        again = score_file(path, ASPECTS, judge=judge_of(server))          # all cached: nothing asked again
        assert len(server.requests) == 9 and again["judge_consistency"] == metrics["judge_consistency"]
    # generic/1 matches (4.8 counts 4, detail 4, context 3); generic/2 has no score (0); temporal 2; pairs 5 and 0.
    assert {a: metrics[a] for a in ASPECTS} == {"judge_correctness": 2.0, "judge_detail": 2.0, "judge_context": 1.5,
                                               "judge_temporal": 2.0, "judge_consistency": 2.5}
    assert metrics["benchmark"]["headline"] == {a: metrics[a] for a in ASPECTS}
    assert metrics["benchmark"]["unreadable"] == ["generic/2"]
    scored = {json.loads(line)["id"]: json.loads(line)["scores"] for line in path.read_text().splitlines()}
    assert {k: v for k, v in scored["generic/1"].items() if k.startswith("judge")} == {
        "judge_correctness": 4.0, "judge_detail": 4.0, "judge_context": 3.0}
    assert scored["consistency/1/1"]["judge_consistency"] == 5.0
    assert "judge_consistency" not in scored["consistency/1/2"]
    report = write_report(tmp_path / "run").read_text()
    assert "## Video-ChatGPT" in report and "| Consistency | 2.50 |" in report
    # A pair cut in half (e.g. by --limit) is not judged, and the notes say so; cached verdicts serve without a judge.
    rows = [line for line in path.read_text().splitlines() if json.loads(line)["id"] != "consistency/2/2"]
    put(path, "\n".join(rows) + "\n")
    cut = score_file(path, ASPECTS)
    assert cut["judge_consistency"] == 5.0 and cut["judge_correctness"] == 2.0
    assert "1 of 5 answers have no verdict" in cut["notes"]["judge"]


def test_the_tiny_model_answers_video_chatgpt_and_the_judge_scores_it(tiny_model, video_chatgpt_root, tmp_path):
    import vidlab

    fast = RunOptions(generation=GenerationOptions(max_new_tokens=4), progress=False, workers=0)
    with JudgeServer() as server:
        result = vidlab.evaluate(tiny_model, video_chatgpt_root, tmp_path / "run", benchmark="video_chatgpt",
                                 options=fast, judge=judge_of(server))
        assert len(server.requests) == 9
    rows = [json.loads(line) for line in (tmp_path / "run" / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 7 and rows[3]["scoring"]["pair"] == "consistency/1"
    headline = result.metrics["benchmark"]["headline"]
    # The tiny model's words match no answer: the test judge gives 1 on each aspect; consistency is 5 or 0 per
    # pair, as the model answers a pair's two questions alike or not.
    assert {k: headline[k] for k in ASPECTS[:4]} == dict.fromkeys(ASPECTS[:4], 1.0)
    assert headline["judge_consistency"] in (0.0, 2.5, 5.0)


def test_the_new_benchmarks_are_listed():
    result = CliRunner().invoke(eval_app, ["benchmarks"])
    assert result.exit_code == 0, result.output
    for name, title in (("mmvu", "MMVU"), ("msvd_qa", "MSVD-QA"), ("msrvtt_qa", "MSRVTT-QA"),
                        ("video_chatgpt", "Video-ChatGPT")):
        assert f"{name} - {title} (" in result.output and BENCHMARKS[name].title == title
    shown = CliRunner().invoke(eval_app, ["benchmarks", "Video-ChatGPT"]).output
    assert "consistency_qa.json" in shown and "mmvu" not in shown
