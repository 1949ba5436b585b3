"""The Chat tab: choose a video or images, see the frames and tokens the model gets, ask, follow up."""

from __future__ import annotations

import gradio as gr

from vidlab.errors import VidlabError
from vidlab.web.backend import Backend, MediaChoice
from vidlab.web.controls import (
    SettingsControls,
    chosen_media,
    error_text,
    media_controls,
    read_settings,
    strip_value,
    tokens_text,
)
from vidlab.web.options import WebOptions
from vidlab.web.sessions import Sessions, TabState


def preview_for(backend: Backend, state: TabState, media: MediaChoice, settings) -> None:
    """Make the tab's preview for this media and these settings, unless it has it already."""
    key = (media, settings.media)
    if state.preview_key != key:
        state.preview, state.preview_key = None, None
        if not media.empty:
            state.preview = backend.preview(media, settings.media)
        state.preview_key = key


def chat_tab(backend: Backend, options: WebOptions, sessions: Sessions, controls: SettingsControls) -> None:
    names = backend.model_names()
    with gr.Row():
        with gr.Column(scale=1, min_width=280):
            media = media_controls(options, "chat")
            model = gr.Dropdown(names, value=names[-1], label="model", elem_id="chat-model",
                                info="the base model, or the base model with one of its adapters")
        with gr.Column(scale=2):
            strip = gr.Gallery(label="frames the model gets", columns=8, height=170, object_fit="contain",
                               elem_id="chat-strip", allow_preview=True)
            tokens = gr.Markdown(tokens_text(None), elem_id="chat-tokens")
            answers = gr.Chatbot(label="conversation", height=340, elem_id="chat-answers")
            with gr.Row():
                question = gr.Textbox(placeholder="Ask about the video, then follow up", show_label=False, scale=5,
                                      elem_id="chat-question")
                ask = gr.Button("Ask", variant="primary", scale=1, elem_id="chat-ask")
                new = gr.Button("New conversation", scale=1, elem_id="chat-new")
            status = gr.Markdown("", elem_id="chat-status")

    media_inputs = [media.upload, *([media.pick] if media.pick else [])]

    def _chosen(values: list, state: TabState):
        uploaded = values[0]
        picked = values[1] if media.pick else None
        settings = read_settings(*values[len(media_inputs):], base=options.media)
        return chosen_media(options, uploaded, picked, settings), settings

    def show(request: gr.Request, *values):
        state = sessions.get(request)
        try:
            with state.lock:
                choice, settings = _chosen(list(values), state)
                preview_for(backend, state, choice, settings)
                state.media = choice
                return (str(choice.video) if choice.video else None, strip_value(state.preview),
                        tokens_text(state.preview), "")
        except Exception as err:  # shown on the page, never as a traceback
            state.media, state.preview, state.preview_key = MediaChoice(), None, None
            return None, [], tokens_text(None), error_text(err)

    def start_over(request: gr.Request):
        state = sessions.get(request)
        state.talk, state.talk_key = None, None
        return [], "New conversation: the next question starts from the chosen media."

    def answer(request: gr.Request, question_text: str, history: list, model_name: str, *values):
        state = sessions.get(request)
        history = list(history or [])
        if not state.lock.acquire(blocking=False):
            yield history, question_text, gr.skip(), gr.skip(), "⚠ this tab is still answering. Wait for it to finish."
            return
        try:
            try:
                choice, settings = _chosen(list(values), state)
                if not (question_text or "").strip():
                    raise VidlabError("type a question first.")
                preview_for(backend, state, choice, settings)
                state.media = choice
                key = (model_name, choice, settings.media, settings.system)
                note = ""
                media_now = None
                if state.talk is None or state.talk_key != key:
                    if state.talk is not None:
                        history = []
                        note = "New conversation (the model, media or settings changed). "
                    state.talk = backend.conversation(model_name, settings.system, settings.media, settings.generation)
                    state.talk_key = key
                    media_now = choice
                state.talk.set_generation(settings.generation)
            except Exception as err:  # shown on the page, never as a traceback
                yield history, question_text, gr.skip(), gr.skip(), error_text(err)
                return
            history += [{"role": "user", "content": question_text}, {"role": "assistant", "content": ""}]
            waiting = "waiting for the model (another answer is being generated), then answering…" \
                if getattr(backend, "lock", None) is not None and backend.lock.locked() else "answering…"
            yield history, "", strip_value(state.preview), tokens_text(state.preview), note + waiting
            try:
                for piece in state.talk.stream(question_text, media_now):
                    history[-1]["content"] += piece
                    yield history, "", gr.skip(), gr.skip(), note + "answering…"
            except Exception as err:  # shown on the page, never as a traceback
                history = history[:-2]
                state.talk, state.talk_key = (None, None) if media_now is not None else (state.talk, state.talk_key)
                yield history, question_text, gr.skip(), gr.skip(), error_text(err)
                return
            yield history, "", gr.skip(), tokens_text(state.preview, state.talk.last), note + "Ask a follow-up " \
                "question: the video is not decoded again."
        finally:
            state.lock.release()

    settings_inputs = controls.inputs
    for trigger in [media.upload.change, *([media.pick.change] if media.pick else []), controls.fps.submit,
                    controls.frame_mode.change, controls.frames.submit, controls.start.submit, controls.end.submit,
                    controls.compression.change]:
        trigger(show, [*media_inputs, *settings_inputs], [media.player, strip, tokens, status])
    outputs = [answers, question, strip, tokens, status]
    inputs = [question, answers, model, *media_inputs, *settings_inputs]
    ask.click(answer, inputs, outputs)
    question.submit(answer, inputs, outputs)
    new.click(start_over, None, [answers, status])
