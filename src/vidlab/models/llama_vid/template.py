"""LLaMA-VID's vicuna_v1 template, how a conversation becomes token ids and labels, and the Q-Former's text.

    {system} USER: <image>\\n{question} ASSISTANT: {answer}</s>USER: {question} ASSISTANT:

As its evaluation and chat write it: a question with a picture gets `<image>\\n` in front (its text
otherwise as given); a prompt ends with `ASSISTANT:`. The text is cut at each picture and each
piece tokenized on its own with the LLM's tokenizer (BOS kept only on the first), as LLaVA's
`tokenizer_image_token` does; SentencePiece puts a word boundary at each piece's start, so the cut
changes the ids and vidlab cuts where the original does. Learned (labels): each answer and its
`</s>`, found by the tokens' character offsets.

The Q-Former reads a question per picture (the original's `prompts`): for a prompt the last user
turn's text (its chat re-reads the video with each new question), in training the text of the turn
that holds the picture.
"""

from __future__ import annotations

from dataclasses import dataclass

from vidlab.conversation import Conversation, MediaPart

DEFAULT_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
PICTURE = "<image>"
END = "</s>"


@dataclass(frozen=True)
class Rendered:
    text: str  # with PICTURE where each picture goes
    answers: list[tuple[int, int]]  # character spans learned (answer + END)
    questions: list[str]  # per picture, the Q-Former's text


def render(conversation: Conversation, movies: dict[int, str] | None = None) -> Rendered:
    """The conversation in vicuna_v1; a conversation ending with a user turn is a prompt (ends with ASSISTANT:).

    A system turn replaces the template's system line. `movies` maps a picture's position (0 for the
    conversation's first) to the text that stands for it instead of one PICTURE: a video with subtitles,
    as `vidlab.models.llama_vid.movie.movie_text` writes it (one PICTURE per frame, the lines between).
    """
    movies = movies or {}
    turns = list(conversation.turns)
    system = DEFAULT_SYSTEM
    if turns and turns[0].role == "system":
        system = turns.pop(0).text
    text, answers, holders = system + " ", [], []
    for i in range(0, len(turns), 2):
        turn = turns[i]
        pictures = sum(isinstance(p, MediaPart) for p in turn.parts)
        placed = "".join(movies.get(len(holders) + n, PICTURE) + "\n" for n in range(pictures))
        holders += [turn.text] * pictures
        text += "USER: " + placed + turn.text + " ASSISTANT:"
        if i + 1 < len(turns):
            text += " "
            start = len(text)
            text += turns[i + 1].text + END
            answers.append((start, len(text)))
    prompt = len(turns) % 2 == 1
    questions = [turns[-1].text] * len(holders) if prompt else holders
    return Rendered(text, answers, questions)


def tokenize(rendered: Rendered, tokenizer, picture_id: int, picture_tokens: list[int]) -> tuple[list[int], list[bool]]:
    """Token ids (picture i as `picture_tokens[i]` copies of `picture_id`) and, per token, whether it is learned."""
    ids: list[int] = []
    learned: list[bool] = []
    offset = 0
    bos = tokenizer.bos_token_id
    for n, chunk in enumerate(rendered.text.split(PICTURE)):
        if n:
            ids += [picture_id] * picture_tokens[n - 1]
            learned += [False] * picture_tokens[n - 1]
        encoded = tokenizer(chunk, return_offsets_mapping=True)
        pairs = list(zip(encoded.input_ids, encoded.offset_mapping))
        if n and pairs and pairs[0][0] == bos:  # BOS once, at the start
            pairs = pairs[1:]
        for token, (start, end) in pairs:
            ids.append(token)
            middle = offset + (start + end) / 2 if end > start else -1
            learned.append(any(a <= middle < b for a, b in rendered.answers))
        offset += len(chunk) + len(PICTURE)
    return ids, learned
