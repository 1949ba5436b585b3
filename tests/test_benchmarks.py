"""The GPU benchmark's code, run at tiny sizes on the CPU so that it keeps working where no GPU is."""

import json
import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def test_gpu_benchmark_runs_at_tiny_sizes_on_the_cpu(tmp_path):
    out = tmp_path / "gpu.json"
    result = subprocess.run([sys.executable, str(BENCHMARKS / "gpu.py"), "--tiny", "--device", "cpu", "--json",
                             str(out)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["frames"] == 4 and report["prompt_tokens"] == 64 + 4 * 2 * 2  # 4 frames of 2x2 merged tokens
    rows = report["measurements"]
    for name in ("lora step, activation checkpointing", "lora step, no checkpointing", "generate"):
        assert rows[name]["seconds"] > 0 and rows[name]["peak_gb"] > 0, name
    assert rows["generate, 4-bit"] == {"skipped": "4-bit needs a CUDA GPU (bitsandbytes)"}
    assert "lora step, activation checkpointing" in result.stdout
