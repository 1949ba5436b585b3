"""The Chat tab: choose a video or images, see the frames and tokens the model gets, ask, follow up."""

from __future__ import annotations

import time
from contextlib import closing

import gradio as gr

from vidlab.errors import VidlabError
from vidlab.web.backend import Backend, MediaChoice
from vidlab.web.controls import (
    MediaControls,
    SettingsControls,
    chosen_media,
    error_text,
    example_media,
    media_controls,
    media_message,
    read_settings,
    settle_media,
    strip_value,
    tokens_text,
    uploaded_paths,
)
from vidlab.web.options import WebOptions
from vidlab.web.sessions import Sessions, TabState

REDRAW_SECONDS = 0.05  # a streamed answer is redrawn at most this often: each redraw renders the whole message


def preview_for(backend: Backend, state: TabState, media: MediaChoice, settings) -> None:
    """Make the tab's preview for this media and these settings, unless it has it already."""
    key = (media, settings.media)
    if state.preview_key != key:
        state.preview, state.preview_key = None, None
        if not media.empty:
            state.preview = backend.preview(media, settings.media)
        state.preview_key = key


def header_text(backend: Backend | None, chatting: str | None = None) -> str:
    """The page's title line: the models loaded and (Chat) the one that answers."""
    header = "## vidlab · VideoLLaMA3"
    if backend is None:
        return header + "\nno model loaded: Results only (start with --model or --api to chat)"
    names = backend.model_names()
    adapters = f" · adapters: {', '.join(names[1:])}" if len(names) > 1 else ""
    answering = ""
    if chatting is not None:
        answering = f" · Chat answers as **{chatting}**" + (" (the base model alone)" if chatting == names[0] and
                                                          len(names) > 1 else "")
    return header + f"\nbase model {names[0]}{adapters} ({backend.mode}){answering}"


def wire_media(media: MediaControls, controls: SettingsControls, sessions: Sessions, prefix: str, show,
               outputs: list, *, settings_too: bool = True, examples: list[str] = ()) -> None:
    """Run `show(state, values)` when the user uploads, picks (or clicks one of `examples`), or (settings_too)
    changes a frame setting; its outputs follow the upload box's and the pick list's updates."""
    def handler(source: str):
        def run(request: gr.Request, *values):
            state = sessions.get(request)
            picked = values[1] if media.pick else None
            settled = settle_media(source, values[0], picked, state.uploads.get(prefix, []))
            state.uploads[prefix] = settled.uploaded
            rest = list(values[len(media.inputs):])
            shown = show(state, [settled.uploaded, *([settled.picked] if media.pick else []), *rest])
            return settled.upload_update, *([settled.pick_update] if media.pick else []), *shown
        return run

    inputs = [*media.inputs, *controls.inputs]
    full = [*media.inputs, *outputs]
    media.upload.upload(handler("upload"), inputs, full)
    for event in (media.upload.delete, media.upload.clear):
        event(handler("settings"), inputs, full)
    if media.pick:
        media.pick.input(handler("pick"), inputs, full)
    if settings_too:
        for trigger in controls.frame_triggers:
            trigger(handler("settings"), inputs, full)
    if examples and media.pick:
        shown = gr.Examples([[e] for e in examples], inputs=[media.pick], label="example videos (click one)",
                            examples_per_page=len(examples), elem_id=f"{prefix}-examples")
        shown.load_input_event.then(handler("pick"), inputs, full)


def chat_tab(backend: Backend, options: WebOptions, sessions: Sessions, controls: SettingsControls,
             header: gr.Markdown | None = None) -> None:
    names = backend.model_names()
    with gr.Row():
        with gr.Column(scale=1, min_width=280):
            media = media_controls(options, "chat")
            examples_row = gr.Column()
            model = gr.Dropdown(names, value=names[-1], label="model", elem_id="chat-model",
                                info="the base model, or the base model with one of its adapters")
        with gr.Column(scale=2):
            strip = gr.Gallery(label="frames the model gets", columns=8, height="auto", object_fit="contain",
                               elem_id="chat-strip", allow_preview=True)
            tokens = gr.Markdown(tokens_text(None), elem_id="chat-tokens")
            answers = gr.Chatbot(label="conversation", height=520, elem_id="chat-answers")
            with gr.Row():
                question = gr.Textbox(placeholder="Ask about the video, then follow up", show_label=False, scale=5,
                                      elem_id="chat-question")
                ask = gr.Button("Ask", variant="primary", scale=1, min_width=80, elem_id="chat-ask")
            with gr.Row():
                stop = gr.Button("Stop", scale=1, min_width=80, elem_id="chat-stop")
                again = gr.Button("Regenerate", scale=1, min_width=80, elem_id="chat-regenerate")
                new = gr.Button("New conversation", scale=1, min_width=80, elem_id="chat-new")
            status = gr.Markdown("", elem_id="chat-status")

    def _chosen(values: list):
        uploaded = values[0]
        picked = values[1] if media.pick else None
        settings = read_settings(*values[len(media.inputs):], base=options.media)
        return chosen_media(options, uploaded, picked, settings), settings

    def said(state: TabState, text: str) -> str:
        """The status line `text`, remembering whether it warns (for `show`, which clears only what went stale)."""
        state.warned = text.startswith("⚠")
        return text

    def show(state: TabState, values: list):
        try:
            with state.lock:
                choice, settings = _chosen(values)
                if state.preview_key == (choice, settings.media):  # a box left unchanged, or an answer (Ask right
                    state.media = choice  # after leaving the box) made this preview first: the page shows it
                    return gr.skip(), gr.skip(), gr.skip(), gr.skip()
                preview_for(backend, state, choice, settings)
                state.media = choice
                # The status is cleared of a warning or of a conversation's note only: gradio may draw these outputs
                # after those of a first question asked at once (Ask clicked straight from a settings box).
                stale = state.warned or state.talk is not None
                return (str(choice.video) if choice.video else None, strip_value(state.preview),
                        tokens_text(state.preview), said(state, "") if stale else gr.skip())
        except Exception as err:  # shown on the page, never as a traceback
            state.media, state.preview, state.preview_key = MediaChoice(), None, None
            return None, [], tokens_text(None), said(state, error_text(err, uploaded_paths(values)))

    def start_over(request: gr.Request):
        state = sessions.get(request)
        state.talk, state.talk_key, state.asked = None, None, None
        return [], said(state, "New conversation: the next question starts from the chosen media.")

    def cleared(request: gr.Request):
        start_over(request)
        return "Conversation cleared: the model forgot it too; the next question starts from the chosen media."

    def respond(state: TabState, question_text: str, history: list, model_name: str, values: list):
        """Answer `question_text` (the tab's lock held): yields (history, question box, strip, tokens, status)."""
        try:
            choice, settings = _chosen(values)
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
                    note = "New conversation (the model, media, frame settings or system prompt changed). "
                state.talk = backend.conversation(model_name, settings.system, settings.media, settings.generation)
                state.talk_key = key
                media_now = choice
            state.talk.set_generation(settings.generation)
        except Exception as err:  # shown on the page, never as a traceback
            yield history, question_text, gr.skip(), gr.skip(), said(state, error_text(err, uploaded_paths(values)))
            return
        if media_now is not None:
            history = [m for m in [media_message(media_now)] if m] if not history else history
        history += [{"role": "user", "content": question_text}, {"role": "assistant", "content": ""}]
        state.asked = (question_text, False)
        waiting = "waiting for the model (another answer is being generated), then answering…" \
            if getattr(backend, "lock", None) is not None and backend.lock.locked() else "answering…"
        yield history, "", strip_value(state.preview), tokens_text(state.preview), said(state, note + waiting)
        try:
            shown = time.monotonic()
            with closing(state.talk.stream(question_text, media_now)) as pieces:
                for piece in pieces:
                    history[-1]["content"] += piece
                    if time.monotonic() - shown >= REDRAW_SECONDS:
                        shown = time.monotonic()
                        yield history, "", gr.skip(), gr.skip(), said(state, note + "answering…")
        except GeneratorExit:  # Stop: the model keeps only finished answers, so a stopped first one starts over
            if media_now is not None:
                state.talk, state.talk_key = None, None
            raise
        except Exception as err:  # shown on the page, never as a traceback
            history = history[:-2]
            state.asked = None
            state.talk, state.talk_key = (None, None) if media_now is not None else (state.talk, state.talk_key)
            yield history, question_text, gr.skip(), gr.skip(), said(state, error_text(err, uploaded_paths(values)))
            return
        state.asked = (question_text, True)
        yield history, "", gr.skip(), tokens_text(state.preview, state.talk.last), said(
            state, note + "Ask a follow-up question: the video is not decoded again.")

    def busy(state: TabState, history, question_text):
        return history, question_text, gr.skip(), gr.skip(), said(
            state, "⚠ this tab is still answering. Wait for it to finish, or press Stop.")

    def answer(request: gr.Request, question_text: str, history: list, model_name: str, *values):
        state = sessions.get(request)
        if not state.answering.acquire(blocking=False):
            yield busy(state, history, question_text)
            return
        try:
            with state.lock:  # a preview still being made (the setting left for the question box) comes first
                yield from respond(state, question_text, list(history or []), model_name, list(values))
        finally:
            state.answering.release()

    def regenerate(request: gr.Request, history: list, model_name: str, *values):
        state = sessions.get(request)
        history = list(history or [])
        if state.asked is None or state.talk is None:
            yield history, gr.skip(), gr.skip(), gr.skip(), said(state, "⚠ nothing to regenerate yet: ask a "
                                                                 "question first.")
            return
        if not state.answering.acquire(blocking=False):
            yield busy(state, history, gr.skip())
            return
        try:
            with state.lock:  # after a preview still being made
                question_text, answered = state.asked
                if answered:
                    state.talk.forget_last()  # the model forgets the answer it gave, then answers again
                if len(history) >= 2 and history[-1].get("role") == "assistant":
                    history = history[:-2]
                if not any(m.get("role") == "assistant" for m in history):
                    state.talk = None  # the first question again: a new conversation, with the media
                yield from respond(state, question_text, history, model_name, list(values))
        finally:
            state.answering.release()

    def stopped(request: gr.Request):
        state = sessions.get(request)
        if state.asked is not None and not state.asked[1]:
            return "Stopped. The unfinished answer stays on screen but is not part of the conversation: the next " \
                "question follows the last finished answer (Regenerate asks this one again)."
        return "Nothing to stop."

    def chose_model(model_name: str):
        return header_text(backend, model_name)

    with examples_row:
        wire_media(media, controls, sessions, "chat", show, [media.player, strip, tokens, status],
                   examples=example_media(options) if media.pick else [])
    outputs = [answers, question, strip, tokens, status]
    inputs = [question, answers, model, *media.inputs, *controls.inputs]
    asked = [ask.click(answer, inputs, outputs), question.submit(answer, inputs, outputs),
             again.click(regenerate, [answers, model, *media.inputs, *controls.inputs], outputs)]
    stop.click(stopped, None, status, cancels=asked)
    new.click(start_over, None, [answers, status])
    answers.clear(cleared, None, status)
    if header is not None:
        model.change(chose_model, model, header)
