"""The shipped configs: every training recipe parses, the stage recipes match the original
VideoLLaMA3 numbers, every accelerate launch config loads with accelerate's own code, and
docs/train.md documents every key of the training config schema."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from vidlab.training.config import TrainConfig, load_config

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
ACCELERATE = CONFIGS / "accelerate"
DOCS = ROOT / "docs" / "train.md"

# Every training recipe under configs/, at any depth, except configs/accelerate/. The test below
# compares this list with what rglob finds, so a YAML that is not listed here (in a new subfolder
# too) fails instead of going unchecked: adding a recipe means adding its path here.
RECIPES = [
    "compressors/align_videollama3_2b.yaml",
    "compressors/align_videollama3_7b.yaml",
    "compressors/lora_videollama3_2b.yaml",
    "compressors/lora_videollama3_7b.yaml",
    "dpo_videollama3_2b.yaml",
    "grpo_videollama3_2b.yaml",
    "lora_videollama3_2b.yaml",
    "lora_videollama3_7b.yaml",
    "qlora_videollama3_7b.yaml",
    "quickstart/base.yaml",
    "quickstart/lora.yaml",
    "stage1.yaml",
    "stage2.yaml",
    "stage3.yaml",
    "stage4.yaml",
]

# accelerate launch configs and the distributed type each one names; same rule as RECIPES.
ACCELERATE_CONFIGS = {
    "ddp.yaml": "MULTI_GPU",
    "deepspeed_zero2.yaml": "DEEPSPEED",
    "deepspeed_zero3.yaml": "DEEPSPEED",
    "fsdp.yaml": "FSDP",
}

# The original VideoLLaMA3-2B stages (../shared/REFERENCE.md and the original's scripts/train/stage*_2b.sh).
STAGE_RATES = {
    1: {"projector": 1e-3, "vision": 1e-5},  # LLM frozen: no llm rate
    2: {"llm": 1e-5, "projector": 1e-5, "vision": 2e-6},
    3: {"llm": 1e-5, "projector": 1e-5, "vision": 2e-6},
    4: {"llm": 1e-5, "projector": 1e-5, "vision": 2e-6},
}
STAGE_COMPRESSION = {1: False, 2: False, 3: True, 4: True}
STAGE_IMAGE_MERGE = {1: 1, 2: 1, 3: 1, 4: 2}
STAGE_GPUS, STAGE_GLOBAL_BATCH = 8, 128


def _yaml_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in (".yaml", ".yml"))


def _load(name: str) -> TrainConfig:
    return load_config(CONFIGS / name, check_paths=False)


# ---------------------------------------------------------------- training recipes


def test_every_recipe_is_listed():
    found = [p.relative_to(CONFIGS).as_posix() for p in _yaml_files(CONFIGS) if ACCELERATE not in p.parents]
    assert found == sorted(RECIPES), "a YAML under configs/ was added or removed: update RECIPES in this test"


@pytest.mark.parametrize("name", RECIPES)
def test_recipe_parses(name):
    config = _load(name)
    assert config.learning_rates.trained(), "a recipe must train something"
    assert config.train.gradient_checkpointing


@pytest.mark.parametrize("name", RECIPES)
def test_recipe_header_says_how_to_run_it(name):
    text = (CONFIGS / name).read_text(encoding="utf-8")
    assert text.startswith("# "), "each recipe starts with a comment saying what it is for"
    # The run command in the header names this very file (copy-paste between recipes goes wrong otherwise).
    assert f"configs/{name}" in text
    for other in RECIPES:
        if other != name:
            assert f"train configs/{other}" not in text


def test_overrides_apply_to_a_recipe():
    config = load_config(
        CONFIGS / "lora_videollama3_2b.yaml",
        ["model.path=elsewhere/model", "data.train=[a.jsonl, b.jsonl]", "output.dir=runs/x", "train.grad_accum=2"],
        check_paths=False,
    )
    assert (config.model.path, config.data.train) == ("elsewhere/model", ["a.jsonl", "b.jsonl"])
    assert (config.output.dir, config.train.grad_accum) == ("runs/x", 2)


@pytest.mark.parametrize("name", ["lora_videollama3_2b.yaml", "lora_videollama3_7b.yaml", "qlora_videollama3_7b.yaml"])
def test_lora_recipes_use_the_original_lora(name):
    config = _load(name)
    assert config.method == ("qlora" if name.startswith("qlora") else "lora")
    assert (config.lora.r, config.lora.alpha, config.lora.dropout) == (64, 16, 0.05)
    assert config.lora.target_modules == "all-linear"
    assert set(config.learning_rates.trained()) == {"llm"}
    assert config.train.batch_size == 1
    # The video budget fits the sample cap, with room for text.
    assert config.data.max_visual_tokens < config.data.model_max_length
    assert config.output.eval_steps is not None and config.data.val
    if config.method == "qlora":
        assert config.lora.bits == 4


@pytest.mark.parametrize("stage", [1, 2, 3, 4])
def test_stage_matches_the_original(stage):
    config = _load(f"stage{stage}.yaml")
    assert config.method == "full"
    assert config.learning_rates.trained() == STAGE_RATES[stage]
    assert config.data.compression is STAGE_COMPRESSION[stage]
    assert config.data.image_merge_size == STAGE_IMAGE_MERGE[stage]
    data = config.data
    assert (data.fps, data.max_frames, data.num_frames) == (1, 180, None)
    assert (data.model_max_length, data.max_visual_tokens) == (16384, 10240)
    optim = config.optim
    assert (optim.name, optim.scheduler, optim.warmup_ratio, optim.weight_decay) == ("adamw", "cosine", 0.03, 0.0)
    train = config.train
    assert train.batch_size * train.grad_accum * STAGE_GPUS == STAGE_GLOBAL_BATCH
    assert (train.epochs, train.max_steps, train.precision) == (1, None, "bf16")
    assert train.gradient_checkpointing


def test_stage1_freezes_the_llm():
    rates = _load("stage1.yaml").learning_rates
    assert rates.llm is None
    assert (rates.projector, rates.vision) == (1e-3, 1e-5)


def test_stages_chain():
    configs = {n: _load(f"stage{n}.yaml") for n in (1, 2, 3, 4)}
    for n in (2, 3, 4):
        assert configs[n].model.path == configs[n - 1].output.dir
    assert len({c.output.dir for c in configs.values()}) == 4


def test_module_launch_works():
    # The recipes' headers launch `accelerate launch ... -m vidlab.cli train ...`.
    result = subprocess.run(
        [sys.executable, "-m", "vidlab.cli", "--help"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "vidlab" in result.stdout


# ---------------------------------------------------------------- accelerate launch configs


def test_every_accelerate_config_is_listed():
    found = [p.relative_to(ACCELERATE).as_posix() for p in _yaml_files(ACCELERATE)]
    assert found == sorted(ACCELERATE_CONFIGS), "update ACCELERATE_CONFIGS in this test"


def _launch_args(name: str):
    """What `accelerate launch --config_file NAME -m vidlab.cli train X.yaml` works out, without launching."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser

    parser = launch_command_parser()
    args = parser.parse_args(["--config_file", str(ACCELERATE / name), "-m", "vidlab.cli", "train", "recipe.yaml"])
    known = set(vars(parser.parse_args(["-m", "vidlab.cli"])))
    args, defaults, _ = _validate_launch_command(args)
    return args, defaults, known


@pytest.mark.parametrize("name", sorted(ACCELERATE_CONFIGS))
def test_accelerate_config_loads(name):
    from accelerate.commands.config.config_args import ClusterConfig, load_config_from_file

    config = load_config_from_file(str(ACCELERATE / name))
    assert isinstance(config, ClusterConfig)
    assert config.distributed_type.value == ACCELERATE_CONFIGS[name]
    assert (config.num_machines, config.num_processes, config.mixed_precision) == (1, 8, "bf16")

    # accelerate copies the keys of these blocks onto its launch options without checking them,
    # so a misspelt key would be ignored silently: each must be a real `accelerate launch` option.
    args, _, known = _launch_args(name)
    assert args.module and args.training_script == "vidlab.cli"
    for key in config.deepspeed_config:
        assert key in known, f"{name}: deepspeed_config.{key} is not an accelerate launch option"
    for key in config.fsdp_config:
        assert key in known and key.startswith("fsdp_"), f"{name}: fsdp_config.{key} is not an accelerate option"


def test_ddp_config():
    args, _, _ = _launch_args("ddp.yaml")
    assert args.multi_gpu and args.num_processes == 8


@pytest.mark.parametrize("name,stage", [("deepspeed_zero2.yaml", 2), ("deepspeed_zero3.yaml", 3)])
def test_deepspeed_config_builds_the_plugin(name, stage):
    from accelerate.utils import DeepSpeedPlugin
    from accelerate.utils.launch import prepare_deepspeed_cmd_env

    args, defaults, _ = _launch_args(name)
    assert args.use_deepspeed
    # as accelerate's launch_command does before handing over to the DeepSpeed launcher
    args.deepspeed_fields_from_accelerate_config = ",".join(defaults.deepspeed_config)
    _, env = prepare_deepspeed_cmd_env(args)
    # Accumulation and clipping are left to vidlab's config: were they set in the file, accelerate
    # would export ACCELERATE_GRADIENT_ACCUMULATION_STEPS, which overrides the Accelerator's own value.
    assert "ACCELERATE_GRADIENT_ACCUMULATION_STEPS" not in env
    assert "ACCELERATE_GRADIENT_CLIPPING" not in env
    with mock.patch.dict(os.environ, env):
        plugin = DeepSpeedPlugin()
    ds = plugin.deepspeed_config
    assert ds["zero_optimization"]["stage"] == stage
    assert ds["gradient_accumulation_steps"] == "auto"
    assert ds["gradient_clipping"] == "auto"
    assert ds["zero_optimization"]["offload_optimizer"]["device"] == "none"
    assert ds["zero_optimization"]["offload_param"]["device"] == "none"
    assert plugin.zero3_init_flag is (stage == 3)
    if stage == 3:
        assert ds["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True


def test_fsdp_config_builds_the_plugin():
    from accelerate.utils import FullyShardedDataParallelPlugin
    from accelerate.utils.launch import prepare_multi_gpu_env
    from torch.distributed.fsdp import StateDictType

    args, _, _ = _launch_args("fsdp.yaml")
    assert args.use_fsdp
    env = prepare_multi_gpu_env(args)
    with mock.patch.dict(os.environ, env):
        plugin = FullyShardedDataParallelPlugin()
    assert plugin.fsdp_version == 2
    assert plugin.reshard_after_forward is True
    assert plugin.state_dict_type == StateDictType.FULL_STATE_DICT
    assert plugin.cpu_ram_efficient_loading and not plugin.activation_checkpointing
    assert set(plugin.transformer_cls_names_to_wrap) == {"Qwen2DecoderLayer", "VideoLlama3VisionEncoderLayer"}


def test_fsdp_wraps_layers_that_exist(tiny_model_dir):
    # accelerate looks the names up among the model's modules and stops when one is missing.
    import transformers
    import yaml

    wrap = yaml.safe_load((ACCELERATE / "fsdp.yaml").read_text())["fsdp_config"]["fsdp_transformer_layer_cls_to_wrap"]
    model = transformers.VideoLlama3ForConditionalGeneration.from_pretrained(tiny_model_dir)
    present = {type(module).__name__ for module in model.modules()}
    assert set(wrap.split(",")) <= present


# ---------------------------------------------------------------- docs/train.md


def _schema_rows(model: type[BaseModel] = TrainConfig, prefix: str = "") -> dict[str, tuple[str, str]]:
    """`section.key` -> (default as the docs write it, description) for every leaf of the schema."""
    rows = {}
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            rows.update(_schema_rows(annotation, f"{prefix}{name}."))
        else:
            rows[prefix + name] = (_render_default(field), field.description or "")
    return rows


def _render_default(field) -> str:
    if isinstance(field.json_schema_extra, dict) and "shown_default" in field.json_schema_extra:
        return field.json_schema_extra["shown_default"]  # a default that depends on the machine
    if field.default_factory is not None:
        value = field.default_factory()
    elif field.default is PydanticUndefined:
        return "required"
    else:
        value = field.default
    if isinstance(value, str):
        return value
    text = json.dumps(list(value) if isinstance(value, tuple) else value)
    return re.sub(r"e([+-])0+(\d)", r"e\1\2", text)  # 1e-08 -> 1e-8


def _documented_rows() -> dict[str, tuple[str, str]]:
    text = DOCS.read_text(encoding="utf-8")
    match = re.search(r"^## Config reference$(.*?)(?=^## )", text, re.S | re.M)
    assert match, "docs/train.md has no '## Config reference' section followed by another section"
    rows = {}
    for line in match.group(1).splitlines():
        cells = re.fullmatch(r"\|\s*`([^`]+)`\s*\|(.*)\|(.*)\|", line.strip())
        if cells:
            key, default, meaning = cells.group(1), cells.group(2).strip(), cells.group(3).strip()
            assert key not in rows, f"docs/train.md documents {key} twice"
            rows[key] = (default.strip("`"), meaning)
    return rows


def test_docs_document_every_config_key():
    schema, documented = _schema_rows(), _documented_rows()
    missing = sorted(set(schema) - set(documented))
    stale = sorted(set(documented) - set(schema))
    assert not missing, f"docs/train.md Config reference lacks {missing}"
    assert not stale, f"docs/train.md Config reference documents keys the schema does not have: {stale}"


def test_docs_defaults_and_meanings_match_the_schema():
    schema, documented = _schema_rows(), _documented_rows()
    for key, (default, description) in schema.items():
        assert documented[key][0] == default, f"{key}: docs say default {documented[key][0]!r}, config.py {default!r}"
        assert documented[key][1] == description, f"{key}: docs meaning differs from config.py's description"


def test_docs_describe_every_shipped_config():
    text = DOCS.read_text(encoding="utf-8")
    recipes = text[text.index("## Recipes"):]
    for name in RECIPES:
        assert f"configs/{name}" in recipes
    for name in ACCELERATE_CONFIGS:
        assert f"configs/accelerate/{name}" in recipes
