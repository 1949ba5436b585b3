"""A GRPO step against an SFT step, and a group's rollouts with the video encoded once against once per answer.

    python benchmarks/grpo.py --out runs/bench-grpo                      # CPU, tiny model, 2-minute video
    python benchmarks/grpo.py --out runs/bench-grpo --device cuda        # the same on a GPU

On the tiny VideoLLaMA3 (`vidlab.models.tiny`) and one synthetic 2-minute video, each case runs in its own
process (so its peak memory is its own), one warm-up then `--repeats` timed runs:

    sft          one SFT step: decode + encode the record with its answer, forward (logits at the label
                 positions), backward, optimiser step
    grpo         one GRPO step (vidlab's loop): decode + encode + vision encoder once, G answers sampled in
                 one batch, rewards, the reference's forward (adapters off, beta > 0), the policy's forward
                 and backward, optimiser step
    rollouts     the group's rollouts as vidlab does them: one decode, encoding and vision encoder run, G
                 answers sampled in one batch
    per_answer   the same G rollouts the naive way (what a trainer that rebuilds inputs per sample pays):
                 decode, encode and vision encoder once per answer, each answer sampled alone

Printed and written to OUT/grpo.json: seconds per step (median), rollouts per second (prompts x G
answers), and the peak memory of each case (resident MB on the CPU, CUDA MB allocated on a GPU), in
all and above what the loaded model and optimiser already held (step_peak_mb).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

CASES = ("sft", "grpo", "rollouts", "per_answer")
QUESTION = "<video>\nWhich direction does the shape move?"


def _prepare(out: Path, seconds: int) -> tuple[Path, Path]:
    from vidlab.data.synthetic import Scene, write_scene
    from vidlab.models.tiny import build_tiny_model

    model = out / "model"
    if not (model / "config.json").exists():
        build_tiny_model(model, seed=0)
    video = out / "video.mp4"
    if not video.exists():
        write_scene(video, Scene(shape="circle", colour="red", direction="left", size=56, seconds=seconds, fps=2))
    data = out / "grpo.jsonl"
    data.write_text(json.dumps({"id": "v0", "video": ["video.mp4"], "conversations": [
        {"from": "human", "value": QUESTION}, {"from": "gpt", "value": "left"}]}) + "\n")
    return model, data


def _config(model: Path, data: Path, out: Path, args, method: str):
    from vidlab.training.config import load_config

    return load_config(None, [
        f"model.path={model}", f"data.train=[{data}]", f"output.dir={out / 'run'}", f"method={method}",
        f"data.max_frames={args.max_frames}", "learning_rates.llm=1e-4", "lora.r=8", "lora.alpha=16",
        "lora.dropout=0.0", f"grpo.num_generations={args.generations}",
        f"grpo.max_completion_length={args.completion}", "grpo.beta=0.04",
    ])


def _peak_start(device) -> float:
    """Reset the peak; returns the memory held now (MB), the model and the optimiser states."""
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        return torch.cuda.memory_allocated() / 2**20
    sys.path.insert(0, str(Path(__file__).parent))
    import peak

    return peak.start()


def _peak(device) -> float:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() / 2**20
    import peak

    return peak.peak_mb()


def run_case(case: str, out: Path, args) -> dict:
    import torch

    from vidlab.training.grpo import GrpoStep, sample_answers
    from vidlab.training.model import load_for_training
    from vidlab.training.rl_records import load_prompt_records

    torch.manual_seed(0)
    device = torch.device(args.device)
    model_dir, data = _prepare(out, args.seconds)
    config = _config(model_dir, data, out, args, "lora" if case == "sft" else "grpo")
    model, processor = load_for_training(config.as_weights_config(), device, "no")
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    settings = config.data.media_settings()
    record = load_prompt_records([data], None, "grpo")[0][0]
    step = GrpoStep(config.grpo, processor, settings, config.data.model_max_length)
    G = args.generations

    def once():
        if case == "sft":
            from vidlab.training.data import TrainRecord, encode_record
            from vidlab.training.steps import label_token_loss

            sample = encode_record(TrainRecord(record.position, record.id, 0, _with_answer(record), record.data_root),
                                   processor, settings, config.data.model_max_length)
            inputs = {k: (v[None] if v.dim() == 1 and k in ("input_ids", "attention_mask", "labels") else v).to(device)
                      for k, v in sample.tensors.items()}
            labels = inputs.pop("labels")
            loss, n = label_token_loss(model, inputs, labels)
            (loss / n).backward()
        elif case == "grpo":
            prompt = step.encode(record, model, device)
            group = step.rollout(model, None, record, prompt)
            step.update(model, group, 1.0, lambda loss: loss.backward())
        elif case == "rollouts":
            sample_answers(model, processor, step.encode(record, model, device), G, step.generate_kwargs)
        else:
            for _ in range(G):
                sample_answers(model, processor, step.encode(record, model, device), 1, step.generate_kwargs)
        if case in ("sft", "grpo"):
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

    once()  # warm-up: the first call pays for lazy imports and allocator growth
    held = _peak_start(device)
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        once()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    top = _peak(device)
    result = {"case": case, "seconds": round(seconds, 4), "peak_mb": round(top, 1),
              "step_peak_mb": round(top - held, 1), "times": [round(t, 4) for t in times]}
    if case != "sft":
        result["rollouts_per_s"] = round(G / seconds, 3)
    return result


def _with_answer(record):
    from vidlab.conversation import TextPart, Turn

    turns = [*record.prompt.turns, Turn(role="assistant", parts=[TextPart(text=record.reference.answer)])]
    return record.prompt.model_copy(update={"turns": turns})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/bench-grpo"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seconds", type=int, default=120, help="length of the synthetic video")
    parser.add_argument("--max-frames", type=int, default=32)
    parser.add_argument("--generations", type=int, default=8, help="G, answers per prompt")
    parser.add_argument("--completion", type=int, default=16, help="max_completion_length")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per case (CPU)")
    parser.add_argument("--case", choices=CASES, help=argparse.SUPPRESS)  # a child process runs one case
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.case:
        import torch

        torch.set_num_threads(args.threads)
        print(json.dumps(run_case(args.case, args.out, args)))
        return
    _prepare(args.out, args.seconds)  # once, before the cases share it
    results = {}
    for case in CASES:
        child = [sys.executable, __file__, "--case", case, *sys.argv[1:]]
        done = subprocess.run(child, capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(f"{case} failed:\n{done.stderr[-3000:]}")
        results[case] = json.loads(done.stdout.strip().splitlines()[-1])
        print(json.dumps(results[case]), flush=True)
    summary = {
        "device": args.device, "video_seconds": args.seconds, "max_frames": args.max_frames, "G": args.generations,
        "max_completion_length": args.completion, "cases": results,
        "grpo_step_over_sft_step": round(results["grpo"]["seconds"] / results["sft"]["seconds"], 2),
        "grpo_peak_over_sft_peak": round(results["grpo"]["peak_mb"] / results["sft"]["peak_mb"], 2),
        "grpo_step_memory_over_sft": round(results["grpo"]["step_peak_mb"] / max(results["sft"]["step_peak_mb"], 1e-9),
                                           2),
        "rollouts_speedup_encode_once": round(results["per_answer"]["seconds"] / results["rollouts"]["seconds"], 2),
    }
    (args.out / "grpo.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps({k: v for k, v in summary.items() if k != "cases"}))


if __name__ == "__main__":
    main()
