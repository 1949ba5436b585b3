"""LLaMA-VID (dvlab-research/LLaMA-VID) as a vidlab model family, on transformers' own parts.

    config     LlamaVidConfig: EVA-ViT-G (Blip2VisionConfig) + Q-Former (InstructBlipQFormerConfig) + Llama
    model      LlamaVidForConditionalGeneration: a context token and content token(s) per frame
    template   vicuna_v1 prompts, token ids and labels; the Q-Former's text
    processor  LlamaVidProcessor: the family's encoder behind vidlab.inputs.encode
    convert    the released checkpoint layout (+ eva_vit_g.pth) -> vidlab's folder (`vidlab model convert`)
    tiny       a tiny random model built offline, for tests
    load       `load_model` for this family
"""

from transformers import AutoConfig

from vidlab.models.llama_vid.config import MODEL_TYPE, LlamaVidConfig

AutoConfig.register(MODEL_TYPE, LlamaVidConfig, exist_ok=True)

__all__ = ["MODEL_TYPE", "LlamaVidConfig"]
