"""The prompt passages of the papers that the verbatim templates of `vtg_jax.data.prompts` reproduce.

Each constant is copied as the paper prints it (its heading line included), with the paper's own
placeholders ({query}, "query", [EVENT], [QUESTION][OPTIONS (if applicable)]), its typography (Video-OPD's
curly quotes) and, for LongVTG-R1's code listing, its line breaks and the `\\rightarrow` marks of wrapped lines.
Line breaks between the string pieces below are only source wrapping, at spaces that the paper prints.
"""

# Video-OPD, App. D.7, Fig. 7 (prompt for training and evaluation).
VIDEO_OPD_FIG7 = (
    "Prompt for Video-OPD Framework Training and Evaluation\n"
    "\n"
    "System Instruction:\n"
    "\n"
    "You are a video analysis expert.\n"
    "\n"
    "User Instruction:\n"
    "\n"
    "To accurately pinpoint the event “{query}” in the video, determine the precise time period of the event. Provide "
    "the start and end times (in seconds, precise to two decimal places) in the format “start time to end time”. For "
    "example: “12.54 to 17.83”.\n"
    "\n"
    "Figure 7. Prompt used for Video-OPD framework training and evaluation."
)

# TempSamp-R1, App. E, Fig. 8, 'Temporal video grounding (Non-CoT)'.
TEMPSAMP_R1_FIG8_TVG = (
    "Temporal video grounding (Non-CoT):\n"
    "\n"
    "\"To accurately pinpoint the event \"query\" in the video, determine the precise time period of the event. "
    "Provide the start and end times (in seconds, precise to two decimal places) in the format \"start time to end "
    "time\" within the <answer> </answer> tags. For example: \"12.54 to 17.83\".\""
)

# TempSamp-R1, App. E, Fig. 8, 'Temporal video grounding (CoT)'.
TEMPSAMP_R1_FIG8_TVG_COT = (
    "Temporal video grounding (CoT):\n"
    "\n"
    "\"To accurately pinpoint the event \"query\" in the video, determine the precise time period of the event. Output "
    "your thought process within the <think> </think> tags, including analysis with either specific timestamps (xx.xx) "
    "or time ranges (xx.xx to xx.xx) in <timestep> </timestep> tags. Then, provide the start and end times (in "
    "seconds, precise to two decimal places) in the format \"start time to end time\" within the <answer> </answer> "
    "tags. For example: \"12.54 to 17.83\".\""
)

# TempSamp-R1, App. E, Fig. 8, 'Video highlight detection (Non-CoT)'.
TEMPSAMP_R1_FIG8_HIGHLIGHT = (
    "Video highlight detection (Non-CoT):\n"
    "\n"
    "\"Please find the highlight contents in the video described by a sentence query, determining the highlight "
    "timestamps and its saliency score on a scale from 1 to 5. Provide the highlight timestamps and its saliency score "
    "within the <answer> </answer> tags. The output format should be like: 'The highlight timestamps are in the 82, "
    "84, 86, 88, 90, 92, 94, 96, 98, 100 seconds. Their saliency scores are 1.3, 1.7, 1.7, 1.7, 1.3, 1.7, 2.3, 2.3, "
    "2.3'. Now I will give you the sentence query: 'query'. Please return the query-based highlight timestamps and "
    "salient scores.\""
)

# TempSamp-R1, App. E, Fig. 8, 'Video highlight detection (CoT)'.
TEMPSAMP_R1_FIG8_HIGHLIGHT_COT = (
    "Video highlight detection (CoT):\n"
    "\n"
    "\"Please find the highlight contents in the video described by a sentence query, determining the highlight "
    "timestamps and its saliency score on a scale from 1 to 5. Output your thought process within the <think> </think> "
    "tags, including analysis with either highlight timestamps. Then, provide the highlight timestamps and its "
    "saliency score within the <answer> </answer> tags. The output format should be like: 'The highlight timestamps "
    "are in the 82, 84, 86, 88, 90, 92, 94, 96, 98, 100 seconds. Their saliency scores are 1.3, 1.7, 1.7, 1.7, 1.7, "
    "1.3, 1.7, 2.3, 2.3, 2.3'. Now I will give you the sentence query: 'query'. Please return the query-based "
    "highlight timestamps and salient scores.\""
)

# LongVTG-R1, App. C, 'Evaluation Prompt for Charades-STA, ActivityNet, QVHighlight, and TaCoS'.
LONGVTG_R1_APPC_GROUNDING = (
    "Evaluation Prompt for Charades-STA, ActivityNet, QVHighlight, and TaCoS.\n"
    "\n"
    "To accurately pinpoint the event \"[EVENT]\" in the video, determine the\n"
    " \\rightarrow precise time period of the event.\n"
    "\n"
    "Output your thought process within the <think> </think> tags.\n"
    "\n"
    "Then, provide the start and end times (in seconds, precise to one decimal\n"
    " \\rightarrow places) in the format \"start time to end time\" within the <timestamp>\n"
    " \\rightarrow </timestamp> tags."
)

# LongVTG-R1, App. C, 'Evaluation Prompt for NextGQA, ReXTime, CG-Bench, and Ego4D-NLQ'.
LONGVTG_R1_APPC_QA = (
    "Evaluation Prompt for NextGQA, ReXTime, CG-Bench, and Ego4D-NLQ.\n"
    "\n"
    "Locate the video clip that is relevant to the question:\n"
    "\n"
    "\\rightarrow \"[QUESTION][OPTIONS (if applicable)]\"\n"
    "\n"
    "Output your thought process within the <think> </think> tags and a\n"
    "\n"
    "\\rightarrow capital letter indicating the best option within the <answer>\n"
    "\n"
    "\\rightarrow </answer> tags.\n"
    "\n"
    "Then, provide the timestamp of video clip that support your answer in the\n"
    "\n"
    "\\rightarrow format \"start time to end time\" (in seconds, precise to one decimal\n"
    "\n"
    "\\rightarrow places) within the <timestamp> </timestamp> tags."
)
