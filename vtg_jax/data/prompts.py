"""Prompt templates of the papers, and the Qwen chat templates (Jinja) of the tiny test tokenizer.

Every paper template below is copied from the paper's text (each template's citation names the paper and figure);
only the query slot is turned into `{query}`. Typography is kept as printed: Video-OPD Fig. 7 prints
curly quotes “…”, TempSamp-R1 Fig. 8 straight quotes, and LongVTG-R1 App. C is a code listing whose
`\\rightarrow` marks a wrapped line (those wraps are re-joined with a space; its three logical lines are
joined with "\\n").

TVG-R1 is the exception: its §3.1 says "the prompt template used for CoT generation is provided below",
but the template is a figure that the stored text does not contain. The paper does fix the answer format
(§3.3.1, format reward: `<think>…</think>` and `<answer>…</answer>` must appear), so `tvg_r1` is OUR
wording of that format, built on the shared grounding instruction, and is marked `verbatim=False`.
"""
from __future__ import annotations

import dataclasses
import string
from typing import Optional, Sequence

_GROUND = ("To accurately pinpoint the event \"{query}\" in the video, determine the precise time period of "
           "the event.")


@dataclasses.dataclass(frozen=True)
class PromptTemplate:
    """A system instruction (None: the chat family's default) and a user instruction with slots.

    Slots: `{query}` always; `{duration}` (seconds, formatted `.1f`) and `{options}` where used.
    """

    name: str
    user: str
    citation: str
    system: Optional[str] = None
    verbatim: bool = True

    @property
    def fields(self) -> frozenset[str]:
        return frozenset(f for _, f, _, _ in string.Formatter().parse(self.user) if f)

    def format(self, query: str, duration: Optional[float] = None, options: Sequence[str] = ()) -> str:
        """The user instruction for one query; raises ValueError on a missing slot value."""
        if not isinstance(query, str) or not query.strip():
            raise ValueError(f"template {self.name!r}: query must be a non-empty string, got {query!r}")
        values: dict[str, str] = {"query": query}
        if "duration" in self.fields:
            if duration is None or not duration > 0:
                raise ValueError(f"template {self.name!r} needs the video duration (> 0 s), got {duration!r}")
            values["duration"] = f"{float(duration):.1f}"
        if "options" in self.fields:
            values["options"] = "".join(f" {chr(65 + i)}. {o}" for i, o in enumerate(options))
        return self.user.format(**values)


TEMPLATES: dict[str, PromptTemplate] = {
    t.name: t
    for t in [
        PromptTemplate(
            name="default",
            user=("Find the start and end time (in seconds) of the event \"{query}\" in the video. Answer in the "
                  "format \"start time to end time\"."),
            citation="vtg_jax plain default (not from a paper)",
            verbatim=False,
        ),
        PromptTemplate(
            name="default_duration",
            user=("The video is {duration} seconds long. Find the start and end time (in seconds) of the event "
                  "\"{query}\" in the video. Answer in the format \"start time to end time\"."),
            citation="vtg_jax plain default with the video duration (not from a paper)",
            verbatim=False,
        ),
        PromptTemplate(
            name="synthetic_short",
            system="Find the event in the video.",
            user="\"{query}\": start time to end time in seconds.",
            citation=("vtg_jax's own short template for the synthetic benchmark (not from a paper): words the tiny "
                      "tokenizer knows, few tokens, so that tiny models train faster on CPU (bench/learnability.py)"),
            verbatim=False,
        ),
        PromptTemplate(
            name="video_opd",
            system="You are a video analysis expert.",
            user=("To accurately pinpoint the event “{query}” in the video, determine the precise time period of "
                  "the event. Provide the start and end times (in seconds, precise to two decimal places) in the "
                  "format “start time to end time”. For example: “12.54 to 17.83”."),
            citation="Video-OPD App. D.7, Fig. 7 (training and evaluation prompt; system + user instruction)",
        ),
        PromptTemplate(
            name="tempsamp_r1",
            user=(_GROUND + " Provide the start and end times (in seconds, precise to two decimal places) in the "
                  "format \"start time to end time\" within the <answer> </answer> tags. For example: "
                  "\"12.54 to 17.83\"."),
            citation="TempSamp-R1 App. E, Fig. 8, 'Temporal video grounding (Non-CoT)'",
        ),
        PromptTemplate(
            name="tempsamp_r1_cot",
            user=(_GROUND + " Output your thought process within the <think> </think> tags, including analysis "
                  "with either specific timestamps (xx.xx) or time ranges (xx.xx to xx.xx) in <timestep> "
                  "</timestep> tags. Then, provide the start and end times (in seconds, precise to two decimal "
                  "places) in the format \"start time to end time\" within the <answer> </answer> tags. For "
                  "example: \"12.54 to 17.83\"."),
            citation="TempSamp-R1 App. E, Fig. 8, 'Temporal video grounding (CoT)'",
        ),
        PromptTemplate(
            name="tempsamp_r1_highlight",
            user=("Please find the highlight contents in the video described by a sentence query, determining "
                  "the highlight timestamps and its saliency score on a scale from 1 to 5. Provide the highlight "
                  "timestamps and its saliency score within the <answer> </answer> tags. The output format should "
                  "be like: 'The highlight timestamps are in the 82, 84, 86, 88, 90, 92, 94, 96, 98, 100 seconds. "
                  "Their saliency scores are 1.3, 1.7, 1.7, 1.7, 1.3, 1.7, 2.3, 2.3, 2.3'. Now I will give you "
                  "the sentence query: '{query}'. Please return the query-based highlight timestamps and salient "
                  "scores."),
            citation="TempSamp-R1 App. E, Fig. 8, 'Video highlight detection (Non-CoT)'",
        ),
        PromptTemplate(
            name="tempsamp_r1_highlight_cot",
            user=("Please find the highlight contents in the video described by a sentence query, determining "
                  "the highlight timestamps and its saliency score on a scale from 1 to 5. Output your thought "
                  "process within the <think> </think> tags, including analysis with either highlight "
                  "timestamps. Then, provide the highlight timestamps and its saliency score within the <answer> "
                  "</answer> tags. The output format should be like: 'The highlight timestamps are in the 82, "
                  "84, 86, 88, 90, 92, 94, 96, 98, 100 seconds. Their saliency scores are 1.3, 1.7, 1.7, 1.7, "
                  "1.7, 1.3, 1.7, 2.3, 2.3, 2.3'. Now I will give you the sentence query: '{query}'. Please "
                  "return the query-based highlight timestamps and salient scores."),
            citation="TempSamp-R1 App. E, Fig. 8, 'Video highlight detection (CoT)'",
        ),
        PromptTemplate(
            name="tvg_r1",
            user=(_GROUND + " Output your thought process within the <think> </think> tags. Then, provide the "
                  "start and end times (in seconds, precise to two decimal places) in the format \"start time to "
                  "end time\" within the <answer> </answer> tags. For example: \"12.54 to 17.83\"."),
            citation=("TVG-R1 §3.3.1 answer format (<think>…</think> + <answer>…</answer>); the paper's own "
                      "template (§3.1) is a figure absent from the text, so this wording is ours"),
            verbatim=False,
        ),
        PromptTemplate(
            name="longvtg_r1",
            user=("To accurately pinpoint the event \"{query}\" in the video, determine the precise time period "
                  "of the event.\nOutput your thought process within the <think> </think> tags.\nThen, provide "
                  "the start and end times (in seconds, precise to one decimal places) in the format \"start "
                  "time to end time\" within the <timestamp> </timestamp> tags."),
            citation="LongVTG-R1 App. C, 'Evaluation Prompt for Charades-STA, ActivityNet, QVHighlight, and TaCoS'",
        ),
        PromptTemplate(
            name="longvtg_r1_qa",
            user=("Locate the video clip that is relevant to the question: \"{query}{options}\"\nOutput your "
                  "thought process within the <think> </think> tags and a capital letter indicating the best "
                  "option within the <answer> </answer> tags.\nThen, provide the timestamp of video clip that "
                  "support your answer in the format \"start time to end time\" (in seconds, precise to one "
                  "decimal places) within the <timestamp> </timestamp> tags."),
            citation=("LongVTG-R1 App. C, 'Evaluation Prompt for NextGQA, ReXTime, CG-Bench, and Ego4D-NLQ' "
                      "([QUESTION][OPTIONS (if applicable)] -> {query}{options}, options as ' A. x B. y')"),
        ),
    ]
}


def get_template(name: str) -> PromptTemplate:
    try:
        return TEMPLATES[name]
    except KeyError:
        raise ValueError(f"unknown prompt template {name!r}; known: {sorted(TEMPLATES)}") from None


# ---------------------------------------------------------------------------------------------------
# Chat templates written into the tiny tokenizer, so that `apply_chat_template`
# renders what the released checkpoints' tokenizer_config.json does for text + image/video messages.

# Qwen2-VL / Qwen2.5-VL: a default system turn when the first message is not a system message.
QWEN2_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}Picture {{ image_count.value }}: "
    "{% endif %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}Video {{ video_count.value }}: "
    "{% endif %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Qwen3-VL style (content rendered by a macro; no default system turn). Tools and reasoning_content of
# the released template are left out: grounding prompts use neither.
QWEN3_VL_CHAT_TEMPLATE = (
    "{%- set image_count = namespace(value=0) %}{%- set video_count = namespace(value=0) %}"
    "{%- macro render_content(content) %}{%- if content is string %}{{- content }}{%- else %}"
    "{%- for item in content %}"
    "{%- if 'image' in item or 'image_url' in item or item.type == 'image' %}"
    "{%- set image_count.value = image_count.value + 1 %}"
    "{%- if add_vision_id %}Picture {{ image_count.value }}: {% endif -%}<|vision_start|><|image_pad|><|vision_end|>"
    "{%- elif 'video' in item or item.type == 'video' %}{%- set video_count.value = video_count.value + 1 %}"
    "{%- if add_vision_id %}Video {{ video_count.value }}: {% endif -%}<|vision_start|><|video_pad|><|vision_end|>"
    "{%- elif 'text' in item %}{{- item.text }}{%- endif %}{%- endfor %}{%- endif %}{%- endmacro %}"
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message.role + '\\n' + render_content(message.content) + '<|im_end|>\\n' }}"
    "{%- endfor %}{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

CHAT_TEMPLATES = {"qwen2_5_vl": QWEN2_VL_CHAT_TEMPLATE, "qwen3_vl": QWEN3_VL_CHAT_TEMPLATE}
# The system turn each family's template inserts when the conversation has none.
DEFAULT_SYSTEM = {"qwen2_5_vl": "You are a helpful assistant.", "qwen3_vl": None}
