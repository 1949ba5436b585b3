"""The Compare tab: one question to the base model and its adapters, the answers side by side as they grow."""

from __future__ import annotations

import gradio as gr

from vidlab.errors import VidlabError
from vidlab.web.backend import Backend
from vidlab.web.chat_tab import preview_for, wire_media
from vidlab.web.controls import (
    SettingsControls,
    chosen_media,
    error_text,
    media_controls,
    read_settings,
    strip_value,
    tokens_text,
    uploaded_paths,
)
from vidlab.web.options import WebOptions
from vidlab.web.sessions import Sessions


def _cost(info) -> str:
    if info is None:
        return ""
    parts = [f"{info.generated_tokens} tokens"] if info.generated_tokens is not None else []
    if info.visual_tokens is not None:
        parts.append(f"{info.visual_tokens} visual tokens")
    return " · ".join(parts)


def compare_tab(backend: Backend, options: WebOptions, sessions: Sessions, controls: SettingsControls,
                concurrency: int | None) -> None:
    names = backend.model_names()
    if len(names) < 2:
        gr.Markdown("Only the base model is loaded. Start the page with `--adapter NAME=DIR` (one or more) to "
                    "compare the base model with fine-tuned ones.", elem_id="compare-none")
    with gr.Row():
        with gr.Column(scale=1, min_width=280):
            media = media_controls(options, "compare")
            chosen = gr.CheckboxGroup(names, value=names, label="models", elem_id="compare-models")
        with gr.Column(scale=2):
            strip = gr.Gallery(label="frames every model gets", columns=8, height="auto", object_fit="contain",
                               elem_id="compare-strip")
            tokens = gr.Markdown(tokens_text(None), elem_id="compare-tokens")
            with gr.Row():
                question = gr.Textbox(placeholder="One question for every model (no history)", show_label=False,
                                      scale=5, elem_id="compare-question")
                ask = gr.Button("Compare", variant="primary", scale=1, elem_id="compare-ask")
            status = gr.Markdown("", elem_id="compare-status")
    boxes = []
    with gr.Row(equal_height=True):
        for i, name in enumerate(names):
            boxes.append(gr.Textbox("", label=name, lines=6, interactive=False, elem_id=f"compare-answer-{i}",
                                    buttons=["copy"]))
    media_inputs = media.inputs

    def run(request: gr.Request, question_text: str, selected: list[str], *values):
        state = sessions.get(request)
        texts = ["" for _ in names]
        try:
            uploaded, picked = values[0], values[1] if media.pick else None
            settings = read_settings(*values[len(media_inputs):], base=options.media)
            choice = chosen_media(options, uploaded, picked, settings)
            if not (question_text or "").strip():
                raise VidlabError("type a question first.")
            if not selected:
                raise VidlabError("tick at least one model.")
            preview_for(backend, state, choice, settings)
        except Exception as err:  # shown on the page, never as a traceback
            yield *texts, gr.skip(), gr.skip(), error_text(err, uploaded_paths(list(values)))
            return
        order = [n for n in names if n in selected]
        yield *texts, strip_value(state.preview), tokens_text(state.preview), f"{', '.join(order)} answering…"
        try:
            pieces = backend.compare(order, question_text, choice, settings.system, settings.media,
                                     settings.generation)
            while True:
                try:
                    index, piece = next(pieces)
                except StopIteration as stop:
                    infos = stop.value
                    break
                texts[names.index(order[index])] += piece
                yield *texts, gr.skip(), gr.skip(), f"{', '.join(order)} answering…"
        except Exception as err:  # shown on the page, never as a traceback
            yield *texts, gr.skip(), gr.skip(), error_text(err)
            return
        costs = "; ".join(f"{name}: {_cost(info)}" for name, info in zip(order, infos or []))
        yield *texts, gr.skip(), tokens_text(state.preview, infos[0] if infos else None), f"Done. {costs}"

    def show(state, values: list):
        try:
            settings = read_settings(*values[len(media_inputs):], base=options.media)
            choice = chosen_media(options, values[0], values[1] if media.pick else None, settings)
            preview_for(backend, state, choice, settings)
            return (str(choice.video) if choice.video else None, strip_value(state.preview),
                    tokens_text(state.preview), "")
        except Exception as err:  # shown on the page, never as a traceback
            return None, [], tokens_text(None), error_text(err, uploaded_paths(values))

    wire_media(media, controls, sessions, "compare", show, [media.player, strip, tokens, status],
               settings_too=False)
    outputs = [*boxes, strip, tokens, status]
    inputs = [question, chosen, *media_inputs, *controls.inputs]
    ask.click(run, inputs, outputs, concurrency_limit=concurrency)
    question.submit(run, inputs, outputs, concurrency_limit=concurrency)
