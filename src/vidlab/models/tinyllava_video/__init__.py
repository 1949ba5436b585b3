"""TinyLLaVA-Video (ZhangXJ199/TinyLLaVA-Video) as a vidlab model family, on transformers' own parts.

    config     TinyLlavaVideoConfig: SigLIP + resampler (group / naive) + Qwen2.5 or Phi-2
    resampler  the Perceiver resamplers and their float16-rounded position code
    model      TinyLlavaVideoForConditionalGeneration (SiglipVisionModel, Resampler, AutoModelForCausalLM)
    template   qwen2_base / phi prompts, token ids and labels
    processor  TinyLlavaVideoProcessor: the family's encoder behind vidlab.inputs.encode
    convert    the released checkpoint layout -> vidlab's folder (`vidlab model convert`)
    tiny       a tiny random model built offline, for tests
    load       `load_model` for this family
"""

from transformers import AutoConfig

from vidlab.models.tinyllava_video.config import MODEL_TYPE, TinyLlavaVideoConfig

AutoConfig.register(MODEL_TYPE, TinyLlavaVideoConfig, exist_ok=True)

__all__ = ["MODEL_TYPE", "TinyLlavaVideoConfig"]
