"""The training config: one YAML file, typed and checked before anything is loaded.

The pydantic models below are the schema and their field descriptions are the documentation
(docs/train.md lists them). `load_config` reads the YAML, applies `--set section.key=value`
overrides and reports every problem at once: unknown keys (with the nearest known key), wrong
types, missing files.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from vidlab.errors import VidlabError
from vidlab.settings import DECODE_WORKERS, MediaSettings, VideoCompressor
from vidlab.validation import describe_errors

PARTS = ("vision", "projector", "compressor", "llm")
SFT_METHODS = ("lora", "qlora", "full")
Weights = Literal["lora", "qlora", "full"]


class ConfigError(VidlabError):
    """A training config that cannot be used as it is."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelSection(_Section):
    path: str = Field(description="Native VideoLLaMA3 checkpoint: a folder or a hub id (convert originals first).")
    adapter: str | None = Field(None, description="PEFT adapter folder to start from (LoRA continues training it).")
    attn_implementation: str | None = Field(
        None, description="eager, sdpa or flash_attention_2; null lets transformers pick."
    )
    video_compressor: VideoCompressor | None = Field(
        None, description="Put this video compressor between the projector and the LLM ({kind: llamavid, "
        "group_resampler or pool, ...}; docs/compressors.md); null keeps the model's own (none unless it has one).",
    )


class DataSection(MediaSettings):
    """The media settings (fps, max_frames, ..., compression: `vidlab.settings.MediaSettings`) plus what
    only training has: the files, the sample length limit, bad-sample handling and data workers."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)

    train: list[str] = Field(min_length=1, description="Annotation files (JSON list or JSONL) to train on.")
    val: list[str] = Field(default_factory=list, description="Annotation files for validation loss (optional).")
    data_root: str | None = Field(None, description="Folder media paths are relative to (default: each file's folder).")
    model_max_length: int = Field(16384, ge=16, description="Tokens per sample (text + visual); longer ones shrink.")
    strict: bool = Field(False, description="Stop at the first bad sample instead of skipping it.")
    check: str | None = Field(
        None, description="check.json of `vidlab data check` on data.train: the records it found bad are left out, "
        "so steps per epoch count usable records (as `vidlab data plan` does).",
    )
    workers: int = Field(
        DECODE_WORKERS, ge=0, description="DataLoader worker processes decoding videos (0: in the main process).",
        json_schema_extra={"shown_default": "one per core, at most 8"},  # the machine's count, not a fixed number
    )
    worker_timeout: float = Field(
        600, gt=0, allow_inf_nan=False, description="Seconds a worker may take for a batch before the run stops."
    )
    feature_cache: str | None = Field(
        None, description="Folder for the videos' vision features, extracted once (sharded, resumable) and read "
        "instead of decoding and encoding (SFT with the vision encoder and projector frozen); null: decode each time.",
    )

    @field_validator("train", "val", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


class LoraSection(_Section):
    r: int = Field(64, ge=1, description="LoRA rank.")
    alpha: float = Field(16, gt=0, description="LoRA scaling numerator (scale = alpha / r).")
    dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the LoRA input.")
    target_modules: list[str] | Literal["all-linear"] = Field(
        "all-linear", description="LLM Linear layers to adapt: all-linear, or names such as [q_proj, v_proj]."
    )
    modules_to_save: list[str] = Field(
        [], description="LLM modules trained in full beside the adapters and saved with them, at the llm rate: "
        "[lm_head] (and embed_tokens) when the new answers use tokens the base model never learnt to predict."
    )
    bits: Literal[4, 8] = Field(4, description="QLoRA only: 4-bit (nf4, double quantisation) or 8-bit base weights.")


class LearningRates(_Section):
    """A part trains only when it has a learning rate (the original VideoLLaMA3 rule)."""

    vision: float | None = Field(None, gt=0, description="Vision encoder (trained fully).")
    projector: float | None = Field(None, gt=0, description="Projector (trained fully).")
    compressor: float | None = Field(
        None, gt=0, description="Video compressor (trained fully; llamavid and group_resampler have weights)."
    )
    llm: float | None = Field(None, gt=0, description="LLM: its LoRA adapters, or all its weights for method full.")

    def trained(self) -> dict[str, float]:
        return {part: rate for part in PARTS if (rate := getattr(self, part)) is not None}


class OptimSection(_Section):
    name: Literal["adamw", "sgd"] = Field("adamw", description="Optimiser (torch.optim).")
    weight_decay: float = Field(0.0, ge=0, description="Decoupled weight decay (not on biases and norms).")
    betas: tuple[float, float] = Field((0.9, 0.999), description="AdamW betas.")
    eps: float = Field(1e-8, gt=0, description="AdamW epsilon.")
    momentum: float = Field(0.9, ge=0, description="SGD momentum.")
    scheduler: Literal["cosine", "linear", "constant"] = Field(
        "cosine", description="Learning-rate schedule after the linear warmup: down to 0 (cosine, linear) or flat."
    )
    warmup_ratio: float = Field(0.03, ge=0, lt=1, description="Share of the optimiser steps spent warming up.")
    max_grad_norm: float | None = Field(1.0, gt=0, description="Clip the gradient norm to this (null: no clipping).")


class TrainSection(_Section):
    batch_size: int = Field(1, ge=1, description="Samples per step on each process.")
    grad_accum: int = Field(1, ge=1, description="Steps whose gradients add up before the optimiser steps.")
    epochs: int = Field(1, ge=1, description="Passes over the training data (unless max_steps ends the run first).")
    max_steps: int | None = Field(None, ge=1, description="Stop after this many optimiser steps.")
    precision: Literal["auto", "bf16", "fp16", "fp32"] = Field(
        "auto", description="auto: bf16 on a GPU that has it, fp16 on other GPUs, fp32 on the CPU."
    )
    gradient_checkpointing: bool = Field(False, description="Recompute activations in backward to save memory.")
    seed: int = Field(42, description="Seeds weights of new layers, data order, dropout.")


class OutputSection(_Section):
    dir: str = Field(description="Run folder: checkpoints, the final adapter or model, logs, skipped.jsonl.")
    save_steps: int = Field(500, ge=1, description="Save a checkpoint every N optimiser steps.")
    save_total_limit: int | None = Field(2, ge=1, description="Keep only the newest N checkpoints (null: all).")
    log_steps: int = Field(10, ge=1, description="Write loss and learning rate to log.jsonl every N steps.")
    eval_steps: int | None = Field(None, ge=1, description="Validation loss every N steps (needs data.val).")
    eval_generate: bool = Field(
        True, description="At each evaluation also answer the validation records and score BLEU-4 and exact match."
    )
    eval_max_new_tokens: int = Field(64, ge=1, description="Longest generated answer at evaluation, in tokens.")
    tensorboard: bool = Field(True, description="Also log to OUTPUT/tensorboard (when tensorboard is installed).")
    progress: bool = Field(True, description="Show a progress bar.")


class GrpoSection(_Section):
    """GRPO with verifiable rewards (method grpo); option names are TRL's GRPOConfig's."""

    weights: Weights = Field("lora", description="What trains in the LLM: lora, qlora or full (as for SFT).")
    num_generations: int = Field(8, ge=2, description="Answers sampled per prompt (the group G).")
    rewards: list[Literal["accuracy", "format", "soft_overlong"]] = Field(
        ["accuracy"], min_length=1, description="Reward functions, added up: accuracy (by the record's answer_type), "
        "format (the answer matches format_pattern) and soft_overlong (DAPO's length penalty: 0 up to "
        "max_completion_length - soft_punish_cache tokens, then down to -1 at max_completion_length).",
    )
    reward_weights: list[float] | None = Field(None, description="Weight of each reward (null: 1 each).")
    format_pattern: str = Field(
        r"<think>.*?</think>\s*<answer>.*?</answer>", description="Regular expression the whole answer must match "
        "for the format reward.",
    )
    beta: float = Field(0.04, ge=0, description="Weight of the KL term to the reference model (0: no reference).")
    epsilon: float = Field(0.2, gt=0, lt=1, description="Clip range of the probability ratio (lower side).")
    epsilon_high: float | None = Field(None, gt=0, description="Upper clip range (null: epsilon; DAPO uses 0.28).")
    loss_type: Literal["grpo", "dr_grpo"] = Field(
        "grpo", description="grpo: each answer's mean over its tokens; dr_grpo: the token sum over "
        "max_completion_length (Dr. GRPO: no length bias).",
    )
    scale_rewards: Literal["group", "none"] = Field(
        "group", description="Divide advantages by the group's reward std (group) or not (none, as Dr. GRPO).",
    )
    temperature: float = Field(1.0, gt=0, description="Sampling temperature of the answers.")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling mass of the answers.")
    top_k: int | None = Field(None, ge=1, description="Sample among this many most likely tokens (null: all).")
    max_completion_length: int = Field(
        256, ge=1, description="Longest sampled answer, in tokens (TRL's name for max_new_tokens).",
    )
    soft_punish_cache: int = Field(
        64, ge=1, description="soft_overlong: the last tokens before max_completion_length over which the penalty "
        "grows from 0 to -1.",
    )
    mask_truncated_completions: bool = Field(
        False, description="Leave answers cut at max_completion_length (no end token) out of the loss (DAPO).",
    )
    num_iterations: int = Field(
        1, ge=1, description="Optimisation passes over each step's sampled answers (mu); from the second on, the "
        "ratio to the sampling policy moves and epsilon clips it.",
    )
    temporal: bool = Field(
        False, description="T-GRPO (Video-R1): also sample answers with the frames shuffled; when the ordered "
        "frames are answered right at least temporal_ratio as often, right answers get temporal_bonus more.",
    )
    shuffled_num_generations: int | None = Field(
        None, ge=1, description="temporal: answers sampled with shuffled frames per prompt "
        "(null: num_generations // 2).",
    )
    temporal_bonus: float = Field(0.3, ge=0, description="temporal: the reward added to right answers (alpha).")
    temporal_ratio: float = Field(
        0.8, ge=0, description="temporal: the bonus applies when ordered accuracy >= this x shuffled accuracy (mu).",
    )
    log_completions: bool = Field(True, description="Write each step's prompts, answers and rewards to samples/.")


class DpoSection(_Section):
    """DPO on chosen/rejected answer pairs (method dpo); option names are TRL's DPOConfig's."""

    weights: Weights = Field("lora", description="What trains in the LLM: lora, qlora or full (as for SFT).")
    beta: float = Field(0.1, gt=0, description="Strength of the pull towards the reference model.")
    loss_type: Literal["sigmoid", "ipo"] = Field("sigmoid", description="sigmoid (DPO) or ipo (IPO's squared loss).")
    label_smoothing: float = Field(
        0.0, ge=0, lt=0.5, description="Assumed share of flipped pairs (conservative DPO; sigmoid only).",
    )


class TrainConfig(_Section):
    model: ModelSection
    data: DataSection
    method: Literal["lora", "qlora", "full", "grpo", "dpo"] = Field(
        "lora", description="Supervised fine-tuning that trains LoRA adapters, QLoRA adapters or all LLM weights; "
        "or reinforcement (grpo) or preference (dpo) tuning, whose weights key says what trains.",
    )
    lora: LoraSection = Field(default_factory=LoraSection)
    learning_rates: LearningRates = Field(default_factory=LearningRates)
    grpo: GrpoSection = Field(default_factory=GrpoSection)
    dpo: DpoSection = Field(default_factory=DpoSection)
    optim: OptimSection = Field(default_factory=OptimSection)
    train: TrainSection = Field(default_factory=TrainSection)
    output: OutputSection
    resume: bool | Literal["auto"] = Field(
        False, description="true: continue from the newest checkpoint (error if none); auto: if there is one."
    )

    @property
    def weights(self) -> str:
        """What trains in the LLM: the method for SFT, the grpo/dpo section's weights otherwise."""
        if self.method in SFT_METHODS:
            return self.method
        return self.grpo.weights if self.method == "grpo" else self.dpo.weights

    def as_weights_config(self) -> TrainConfig:
        """This config with method set to its weights (lora, qlora, full), for the model set-up SFT shares."""
        return self.model_copy(update={"method": self.weights})

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        problems = []
        rates = self.learning_rates.trained()
        method = self.weights
        if not rates:
            problems.append("learning_rates: no part has a learning rate, so nothing would train. "
                            "Give learning_rates.llm (e.g. 2e-4 for LoRA, 1e-5 for full).")
        if method in ("lora", "qlora") and "llm" not in rates:
            problems.append(f"learning_rates.llm: method {method} trains LoRA adapters in the LLM, which need a "
                            "learning rate. Set learning_rates.llm (e.g. 2e-4).")
        if method == "full" and self.lora.modules_to_save:
            problems.append("lora.modules_to_save: method full already trains every LLM weight. Remove it.")
        if method == "full" and self.model.adapter is not None:
            problems.append("model.adapter: method full trains the weights themselves. Merge the adapter first "
                            "(vidlab model merge) and point model.path at the merged model.")
        compressor = self.model.video_compressor
        if "compressor" in rates and compressor is not None and not compressor.has_weights:
            problems.append(f"learning_rates.compressor: video compressor {compressor.kind} has no weights to train. "
                            "Remove learning_rates.compressor.")
        if self.output.eval_steps is not None and not self.data.val:
            problems.append("output.eval_steps: set, but data.val lists no validation files. Add data.val or "
                            "remove eval_steps.")
        if self.data.feature_cache is not None:
            trained = [part for part in ("vision", "projector") if part in rates]
            if trained:
                problems.append(f"data.feature_cache: cached features are the frozen vision encoder's and projector's "
                                f"output, but learning_rates.{trained[0]} trains them. Remove learning_rates."
                                f"{', learning_rates.'.join(trained)} or data.feature_cache.")
            if self.method in ("grpo", "dpo"):
                problems.append(f"data.feature_cache: method {self.method} encodes each prompt's video itself. "
                                "Remove data.feature_cache.")
        if self.method in ("grpo", "dpo"):
            frozen = [part for part in rates if part != "llm"]
            if frozen:
                problems.append(f"learning_rates: method {self.method} trains the LLM only (the video is encoded once "
                                f"per group and shared with the reference). Remove learning_rates."
                                f"{', learning_rates.'.join(frozen)}.")
            grpo = self.grpo
            if grpo.reward_weights is not None and len(grpo.reward_weights) != len(grpo.rewards):
                problems.append(f"grpo.reward_weights: {len(grpo.reward_weights)} weights for {len(grpo.rewards)} "
                                "rewards. Give one weight per reward, or remove reward_weights.")
            if grpo.soft_punish_cache > grpo.max_completion_length and "soft_overlong" in grpo.rewards:
                problems.append(f"grpo.soft_punish_cache: {grpo.soft_punish_cache} is longer than "
                                f"max_completion_length ({grpo.max_completion_length}). Lower it.")
            if grpo.temporal and "accuracy" not in grpo.rewards:
                problems.append("grpo.temporal: T-GRPO compares the accuracy reward on ordered and shuffled frames. "
                                "Add accuracy to grpo.rewards, or set temporal to false.")
            if self.output.eval_steps is not None:
                problems.append(f"output.eval_steps: method {self.method} has no validation loss yet. Remove it.")
        if problems:
            raise ValueError("\n".join(problems))
        return self

    def to_yaml(self) -> str:
        # The grpo/dpo sections only when the method uses them: SFT configs (and their checkpoints) stay as they were.
        exclude: dict = {name: True for name in ("grpo", "dpo") if self.method != name}
        if self.data.feature_cache is None:  # likewise data.feature_cache, an opt-in
            exclude["data"] = {"feature_cache"}
        return yaml.safe_dump(self.model_dump(mode="json", exclude=exclude), sort_keys=False)


def parse_override(text: str) -> tuple[list[str], Any]:
    """`section.key=value` -> (["section", "key"], value); the value is read as YAML (2e-4, true, [a, b])."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {text!r}: expected section.key=value, e.g. --set train.max_steps=100.")
    return key.strip().split("."), yaml.safe_load(value) if value.strip() else None


def apply_overrides(raw: dict, overrides: list[str] | dict[str, Any]) -> dict:
    """Set keys in the raw config: `section.key=value` strings (values read as YAML), or a mapping
    of dotted keys to values."""
    pairs = overrides.items() if isinstance(overrides, dict) else [(text, None) for text in overrides]
    for text, given in pairs:
        keys, value = (text.split("."), given) if isinstance(overrides, dict) else parse_override(text)
        node = raw
        for key in keys[:-1]:
            child = node.setdefault(key, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {text!r}: {key} is not a section. Set a key inside a section.")
            node = child
        node[keys[-1]] = value
    return raw


def _problems(label: str, lines: list[str]) -> ConfigError:
    """One error naming every problem; its first line says which settings (the first words of each line)."""
    if len(lines) == 1:
        return ConfigError(f"{label}: {lines[0]}")
    settings = ", ".join(line.split(": ")[0] for line in lines)
    return ConfigError(f"{label}: {len(lines)} problems in the config ({settings}):\n  " + "\n  ".join(lines))


def check_files(config: TrainConfig) -> list[str]:
    """Problems with the files the config names (data files, a local model folder, an adapter)."""
    problems = []
    for section, files in (("data.train", config.data.train), ("data.val", config.data.val)):
        for name in files:
            if not Path(name).expanduser().is_file():
                problems.append(f"{section}: {name}: no such annotation file. Fix the path (relative paths are "
                                "relative to the folder you run vidlab in).")
    if config.data.data_root is not None and not Path(config.data.data_root).expanduser().is_dir():
        problems.append(f"data.data_root: {config.data.data_root}: no such folder.")
    from vidlab.models.load import looks_local

    model_path = Path(config.model.path).expanduser()
    if looks_local(config.model.path) and not model_path.exists():
        problems.append(f"model.path: {config.model.path}: no such model folder. Build one with `vidlab model tiny` "
                        "or convert a checkpoint with `vidlab model convert`.")
    adapter = config.model.adapter
    if adapter is not None and not (Path(adapter).expanduser() / "adapter_config.json").is_file():
        problems.append(f"model.adapter: {config.model.adapter}: not a PEFT adapter folder (no adapter_config.json).")
    if config.data.check is not None and not Path(config.data.check).expanduser().is_file():
        problems.append(f"data.check: {config.data.check}: no such file. Run `vidlab data check --config CONFIG "
                        "--out FOLDER` and give FOLDER/check.json.")
    return problems


def load_config(
    path: str | Path | dict | TrainConfig | None,
    overrides: list[str] | dict[str, Any] = (),
    *,
    check_paths: bool = True,
) -> TrainConfig:
    """Read, override and validate a training config; one ConfigError lists every problem.

    Args:
        path: the YAML file, or the config as a mapping or a TrainConfig (None: only the overrides).
        overrides: `section.key=value` strings applied in order after the file (values read as YAML),
            or a mapping of dotted keys to values.
        check_paths: also check that the data files and a local model folder exist.
    """
    label = str(path) if isinstance(path, (str, Path)) else "--set"
    raw: Any = {}
    if isinstance(path, TrainConfig):
        raw = path.model_dump(mode="json")
    elif isinstance(path, dict):
        raw = copy.deepcopy(path)
    elif path is not None:
        path = Path(path).expanduser()
        if not path.is_file():
            raise ConfigError(f"{path}: no such config file. Copy one from configs/ (see docs/train.md).")
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML ({err}). Fix the file.") from err
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: the config must be a mapping of sections (model:, data:, ...).")
    raw = apply_overrides(raw, overrides if isinstance(overrides, dict) else list(overrides))
    try:
        config = TrainConfig.model_validate(raw)
    except ValidationError as err:
        raise _problems(label, describe_errors(err, model=TrainConfig)) from None
    problems = check_files(config) if check_paths else []
    if problems:
        raise _problems(label, problems)
    return config


def recipes_folder() -> Path:
    """The recipes shipped with vidlab (configs/ of a checkout links here)."""
    return Path(__file__).resolve().parents[1] / "configs"
