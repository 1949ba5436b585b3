"""What the recorder feeds VideoLLaMA3's benchmark classes: benchmark rows and answer strings.

Plain data and the stdlib only: this file is imported by the recorder inside the original's scratch
environment, and nothing in it depends on vidlab.
"""

# ---- answer strings, per answer type ------------------------------------------------------------------

# Multiple-choice answers as models write them (every letter reader gets all of them).
LETTER_ANSWERS = [
    "B", "(B)", "B.", "b", "b.", "(B), because the man runs", "C, the baby", "B) the dog", "[C]", "**B**",
    "Answer: (C)", "Answer: C", "The answer is B", "The answer is B.", "The best answer is: D",
    "The correct option is (A).", "A", "A man is walking.", "a man is walking", "Based on the video, C",
    "I think it's D.", "B and C", "(B) or (C)", "A, B", "", " ", "\n", "\uff22", "B\u200b", "\u00df", "\u00c9",
    "Option B", "option (d)", "choice: C.", "(E)", "E", "F", "B,C", " ,B", ",C", "D,", "(D),", "(A)\n",
    "C\nbecause", "the dog", "the cat runs", "cat", "none of the above", "three", "3", "B\uff09", "\uff08B\uff09",
    "\u00abB\u00bb", "B:", "B - the dog", "Answer B", "answer: b", "ANSWER: B", "The answer is: (B), the dog.",
    "CD", "ABC", "BECAUSE", "Dog", "\U0001f600 B", "B \U0001f600", "B!", "B?", "'B'", "\"C\"", "`D`", "<B>",
    "B/C", "(C) , the bird", "  (B)  ", "B\r", "B\x0b", "\u2028B",
]

# Yes/no answers (TempCompass yes_no), read against the answers "yes" and "no".
YES_NO_ANSWERS = [
    "yes", "Yes", "YES", "yes.", "Yes, the man is running.", "no", "No", "NO", "No.", "no, it is not.",
    "Nope", "Yeah", "yes and no", "not sure", "", " yes", "\nyes", "Yes\n", "It is yes", "I don't know",
    "know", "nothing", "None", "Nobody", "yesterday", "noon", "eyes", "Y", "N", "true", "false", "S\u00ed",
    "\uff39\uff25\uff33", "yes!", "(yes)", "'yes'", "Answer: yes", "The answer is no.", "Yes it is", "no yes",
    "yes; no", "Absolutely", "Not at all", "n/a", "\u2028yes", "Yes\u200b",
]

# TempCompass caption matching, read against "Caption B: ..." / "Option 2: ..." / "Sentence A: ..." answers.
CAPTION_MATCHING_ANSWERS = [
    "Caption B", "caption b", "B", "b", "Caption B: the man walks to the left", "Caption A", "Caption C",
    "Option 2", "option 2", "2", "Option 1", "Sentence A", "sentence a", "A", "Sentence B", "(B)", "Caption (B)",
    "The best option is Caption B", "Caption: B", "captions b", "Caption B.", "CAPTION B", "Caption\nB", "",
    " ", "B: the man walks", "Option 2: the clip is sped up", "2.", "Caption B\u2028", "\uff22", "Options 2",
    "Caption B and Caption A", "None", "the man walks to the left", "Caption  B", "Sentence A.", "A.", "a)",
    "option 1 or option 2", "Option two", "Caption b)",
]

# Free answers to a letter question (TempCompass multi-choice: right when the answer starts with the letter).
TEMPCOMPASS_CHOICE_ANSWERS = LETTER_ANSWERS

# Temporal grounding answers (Charades-STA).
INTERVAL_ANSWERS = [
    "0.0 - 5.2", "from 1 to 3 seconds", "The event happens between 2.5s and 7s.", "10-20", "1.5 to 3.5 and 6 to 8",
    "12.", ".5 - 1", "", "no idea", "3", "1 2 3", "1, 2, 3, 4", "00:01 - 00:05", "1e3 - 2", "-1 - 5", "5 - 1",
    "\u0663 - \u0665", "2.5 -7.25", "2.5- 7.25", "start: 2.0, end: 6.0", "[2.0, 6.0]", "(2, 6)",
    "2 seconds to 6 seconds", "2s-6s", "2.0s - 6.0s.", "The person opens the door from 4.3 to 9.8 seconds.",
    "4.3to9.8", "4.3 TO 9.8",
    "from 0 to 0", "1.2.3 - 4", "1..2", "100 - 200", "0.1 - 0.2 - 0.3", "It starts at 3 and ends at 8.",
    "3 \u2013 8", "3 \u2014 8", "\uff13 - \uff18", "\u00bd - 2", "3 -\n8", "3\n-\n8", "07.50 - 12.00",
]

# ---- benchmark rows in the published layouts --------------------------------------------------------------

# Options used by the letter readers: the fourth is a digit (Video-MME's reader also looks for "three").
READER_OPTIONS = ["the dog", "the cat runs", "a bird", "3"]

MVBENCH_ROWS = {
    # json file -> rows; awkward real ones: trailing spaces, punctuation, a numeric candidate, unicode.
    "action_sequence.json": [
        {"video": "as1.mp4", "question": "What did the person do first?", "candidates": READER_OPTIONS,
         "answer": "the cat runs", "start": 1.5, "end": 9.0, "accurate_start": 1.6, "accurate_end": 8.8},
        {"video": "as2.mp4", "question": " What happened after the person took the cup? ",
         "candidates": ["Put down the cup. ", "Opened the door.", " Sat on the sofa."], "answer": "Opened the door.",
         "start": 0, "end": 12.25, "accurate_start": 0, "accurate_end": 12},
    ],
    "object_existence.json": [
        {"video": "video_09999.mp4", "question": "Which object enters last?", "candidates": ["the cube", "the sphere",
         "the cube"], "answer": "the cube"},  # the same candidate twice: the original takes the last
        {"video": "video_10000.mp4", "question": "Are there any moving cylinders when the video ends?",
         "candidates": ["yes", "no", "not sure"], "answer": "no"},
    ],
    "action_count.json": [
        {"video": "video_10001.mp4", "question": "How many times did the person launch objects on the table?",
         "candidates": ["3", "2", "4"], "answer": "3"},
    ],
    "fine_grained_action.json": [
        {"video": "abc/d\u00e9j\u00e0_vu.mp4", "question": "What is the action performed by the person in the video?\n",
         "candidates": ["Caf\u00e9 \u2013 brewing", "Not sure", "Sweeping\t", "(B) running"], "answer": "Not sure"},
    ],
}

MLVU_ROWS = {
    "1_plotQA.json": [
        {"video": "movie101_66.mp4", "duration": 246,
         "question": "What color is the main male character in the video? ",
         "candidates": ["Yellow", "Red", "Green", "Blue"], "answer": "Yellow", "question_type": "plotQA"},
        {"video": "movie101_67.mp4", "duration": 300, "question": "Why does the girl cry?",
         "candidates": ["She lost her dog. ", "She is happy.", "She fell."], "answer": "She is happy.",
         "question_type": "plotQA"},
    ],
    "4_count.json": [
        {"video": "count_1.mp4", "duration": 480, "question": "Throughout this video, how many times does the action "
         "'jumping' occur?", "candidates": ["4", "1", "7", "2"], "answer": "1", "question_type": "count"},
    ],
    "7_topic_reasoning.json": [
        {"video": "AWA-6.mp4", "duration": 496, "question": "What is the main background of the video?",
         "candidates": ["Grassland", "Desert", "Ocean", "Forest "], "answer": "Forest ",
         "question_type": "topic_reasoning"},
    ],
}

NEXTQA_ROWS = [
    # test.csv columns; options a0..a4; answer is an index; map_vid_vidorID.json gives the video folder.
    {"video": 4010069381, "frame_count": 1612, "width": 640, "height": 480,
     "question": "why did the boy pick up one present from the group of them and move to the sofa",
     "answer": 3, "qid": 6, "type": "CW", "a0": "share with the girl", "a1": "approach lady sitting there",
     "a2": "unwrap it", "a3": "playing with toy train", "a4": "gesture something"},
    {"video": 4882821564, "frame_count": 1200, "width": 640, "height": 360,
     "question": "what does the man do after putting the cup down ", "answer": 0, "qid": 2, "type": "TN",
     "a0": "walks away ", "a1": "drinks", "a2": "sits.", "a3": "claps", "a4": "nothing"},
]
NEXTQA_MAP = {"4010069381": "1106/4010069381", "4882821564": "0001/4882821564"}

VIDEOMME_ROWS = [
    {"video_id": "001", "duration": "short", "domain": "Knowledge", "sub_category": "Humanity & History",
     "url": "https://www.youtube.com/watch?v=fFjv93ACGo8", "videoID": "fFjv93ACGo8", "question_id": "001-1",
     "task_type": "Counting Problem",
     "question": "When demonstrating the Germany modern Christmas tree is initially decorated with apples, candles "
                 "and berries, which kind of the decoration has the largest number?",
     "options": ["A. Apples.", "B. Candles.", "C. Berries.", "D. The three kinds are of the same number."],
     "answer": "C"},
    {"video_id": "001", "duration": "short", "domain": "Knowledge", "sub_category": "Humanity & History",
     "url": "https://www.youtube.com/watch?v=fFjv93ACGo8", "videoID": "fFjv93ACGo8", "question_id": "001-2",
     "task_type": "Information Synopsis", "question": "What is the genre of this video? ",
     "options": ["A. It is a news report that introduces the history behind Christmas decorations.",
                 "B. It is a documentary on the evolution of Christmas holiday recipes.",
                 "C. It is a travel vlog exploring Christmas markets around the world.",
                 "D. It is a tutorial on DIY Christmas ornament crafting."], "answer": "A"},
    {"video_id": "002", "duration": "medium", "domain": "Sports Competition", "sub_category": "Basketball",
     "url": "https://www.youtube.com/watch?v=x", "videoID": "xYz_-12", "question_id": "002-1",
     "task_type": "Counting Problem", "question": "How many points were scored?\n",
     "options": ["A. 3", "B. 2", "C. 1 ", "D. 0"], "answer": "A"},
]
# Subtitles of the first video (the second has none: its block is still added, empty).
VIDEOMME_SRT = {"fFjv93ACGo8": "1\n00:00:00,000 --> 00:00:01,000\nFirst line\\Nsecond part\n\n"
                "2\n00:00:01,200 --> 00:00:02,600\n  \n\n3\n00:00:02,600 --> 00:00:04,000\nLast <i>line</i>\n"}

EGOSCHEMA_ROWS = [
    {"q_uid": "0074f737-11cb-497d-8d07-77c3a8127391", "google_drive_id": "1", "question":
     "Taking into account all the actions performed by c, what can you deduce about the primary objective?",
     "option 0": "C is cooking.", "option 1": "C is doing laundry. ", "option 2": "C is cleaning the kitchen.",
     "option 3": "C is cleaning dishes.", "option 4": "C is cleaning the bathroom."},
    {"q_uid": "00b9a0de-c59e-49cb-a127-6081e2fb8c8e", "google_drive_id": "2", "question": "What is c doing? ",
     "option 0": "reading", "option 1": "writing", "option 2": "drawing", "option 3": "3", "option 4": "\u00e9tude"},
]

PERCEPTION_ROWS = {
    "video_10909": {"mc_question": [
        {"id": 0, "question": "Is the camera moving or static?",
         "options": ["I don't know", "moving", "static or shaking"],
         "answer_id": 2, "area": "physics", "reasoning": "descriptive", "tag": ["motion"]},
        {"id": 1, "question": "What is the person doing? ", "options": ["cooking ", "cleaning", "3"],
         "answer_id": 0, "area": "semantics", "reasoning": "descriptive", "tag": ["action"]},
    ], "metadata": {"video_id": "video_10909", "num_frames": 600, "resolution": [1080, 1920]}},
}

LONGVIDEOBENCH_ROWS = [
    {"video_id": "86CxyhFV9MI", "question": "In the video, which subtitles appear at the same time as the man?",
     "question_wo_referring_query": "Which subtitles appear?", "candidates": ["the dog", "the cat runs", "a bird", "3"],
     "correct_choice": 1, "position": [3, 7], "topic_category": "NP-News-Programs",
     "question_category": "TOS", "level": "L2-Relation", "id": "86CxyhFV9MI_0", "video_path": "86CxyhFV9MI.mp4",
     "subtitle_path": "86CxyhFV9MI_en.json", "duration_group": 600, "starting_timestamp_for_subtitles": 0,
     "duration": 521.0, "view_count": 1000},
    {"video_id": "abcd", "question": "What happens first? ", "question_wo_referring_query": "What happens first?",
     "candidates": ["Opening credits ", "A song.", "Nothing", "2", "the end"], "correct_choice": 4, "position": [1],
     "topic_category": "KC-Knowledge", "question_category": "E3E", "level": "L1-Perception", "id": "abcd_1",
     "video_path": "abcd.mkv", "subtitle_path": "abcd_en.json", "duration_group": 15,
     "starting_timestamp_for_subtitles": 0, "duration": 12.0, "view_count": 1},
]
LONGVIDEOBENCH_SUBTITLES = {"86CxyhFV9MI_en.json": [], "abcd_en.json": []}

LVBENCH_ROWS = [
    {"key": "Cm73ma6Ibcs", "type": "sport", "qa": [
        {"uid": "5", "question": "What year appears in the opening caption of the video?\n(A) 1636\n(B) 1366\n(C) 1363"
         "\n(D) 1633", "answer": "B", "question_type": ["key information retrieval"], "time_reference": "00:15-00:19"},
        {"uid": "6", "question": "Why does the man run? \n(A) late\n(B) chased\n(C) training\n(D) 3", "answer": "C",
         "question_type": ["reasoning", "event understanding"], "time_reference": ""},
    ]},
]

ACTIVITYNET_QUESTIONS = [
    {"video_name": "--tFD65KaK4", "question": "what is the person in white doing ", "question_id": "v_--tFD65KaK4_1"},
    {"video_name": "-5KAycAQlC4", "question": "is the person in the video indoors", "question_id": "v_-5KAycAQlC4_3"},
]
ACTIVITYNET_ANSWERS = [
    {"answer": "running", "type": 0, "question_id": "v_--tFD65KaK4_1"},
    {"answer": "yes", "type": 3, "question_id": "v_-5KAycAQlC4_3"},
]

TEMPCOMPASS_ROWS = {
    "multi-choice": [
        {"video_id": "1004227795", "question": "What is the direction of the car?\nA. left\nB. right\nC. up\nD. down",
         "answer": "B. right", "dim": "direction"},
    ],
    "yes_no": [
        {"video_id": "1004227796", "question": "Is the car moving to the left? ", "answer": "no", "dim": "direction"},
        {"video_id": "1004227797", "question": "Is the car moving to the right?", "answer": "yes", "dim": "direction"},
    ],
    "caption_matching": [
        {"video_id": "1004227798", "question": "Which caption matches the video?\nCaption A: the car goes left\n"
         "Caption B: the car goes right", "answer": "Caption B: the car goes right", "dim": "direction"},
        {"video_id": "1004227799", "question": "Which sentence matches?\nOption 1: slow\nOption 2: fast",
         "answer": "Option 2: fast", "dim": "speed"},
        {"video_id": "1004227800", "question": "Which sentence matches?\nSentence A: up\nSentence B: down",
         "answer": "Sentence A: up", "dim": "direction"},
    ],
    "captioning": [
        {"video_id": "1004227801", "question": "Generate a caption.\nGenerated Caption:",
         "answer": "A. the car goes left",
         "dim": "direction"},
    ],
}

CHARADES_ROWS = [
    {"question_id": "3MSZA_0", "video": "3MSZA.mp4", "timestamps": [[24.3, 30.4]],
     "conversation": [{"role": "user", "content": "<video>\nperson turn a light on. "}]},
    {"question_id": "3MSZA_1", "video": "3MSZA.mp4", "timestamps": [[0.0, 6.9]],
     "conversation": [{"role": "user", "content": "Find the moment: a person opens a door"}]},
]

# Timestamps the prompts are made for (Video-MME chooses its subtitle lines by them).
TIMESTAMPS = [0.5, 1.5, 2.5, 3.5]

# Rows with a field missing or wrong, one benchmark folder each: (benchmark, what is wrong, the rows).
LOAD_CASES = [
    ("mvbench", "a cut task's row without start/end",
     {"action_sequence.json": [{"video": "x.mp4", "question": "q?", "candidates": ["a", "b"], "answer": "a"}]}),
    ("mvbench", "the answer is none of the candidates",
     {"object_existence.json": [{"video": "y.mp4", "question": "q?", "candidates": ["a", "b"], "answer": "c"}]}),
    ("mvbench", "a row without question",
     {"object_existence.json": [{"video": "z.mp4", "candidates": ["a", "b"], "answer": "a"}]}),
    ("mlvu", "a row without candidates",
     {"1_plotQA.json": [{"video": "m.mp4", "question": "q?", "answer": "a", "question_type": "plotQA"}]}),
    ("egoschema", "a question with four options",
     [{"q_uid": "e1", "question": "q?", "option 0": "a", "option 1": "b", "option 2": "c", "option 3": "d"}]),
    ("activitynet_qa", "a question without an answer",
     ([{"video_name": "n1", "question": "what ", "question_id": "v_n1_0"}], [])),
    ("lvbench", "a question without uid", [{"key": "k1", "qa": [{"question": "q?\n(A) a\n(B) b", "answer": "A",
                                                                  "question_type": ["reasoning"]}]}]),
]

# Task files and their video folders, as the releases lay them out (every file must be there).
MVBENCH_FOLDERS = {
    "action_sequence.json": "star/Charades_v1_480/", "action_prediction.json": "star/Charades_v1_480/",
    "action_antonym.json": "ssv2_video/", "fine_grained_action.json": "Moments_in_Time_Raw/videos/",
    "unexpected_action.json": "FunQA_test/test/", "object_existence.json": "clevrer/video_validation/",
    "object_interaction.json": "star/Charades_v1_480/", "object_shuffle.json": "perception/videos/",
    "moving_direction.json": "clevrer/video_validation/", "action_localization.json": "sta/sta_video/",
    "scene_transition.json": "scene_qa/video/", "action_count.json": "perception/videos/",
    "moving_count.json": "clevrer/video_validation/", "moving_attribute.json": "clevrer/video_validation/",
    "state_change.json": "perception/videos/", "fine_grained_pose.json": "nturgbd/",
    "character_order.json": "perception/videos/", "egocentric_navigation.json": "vlnqa/",
    "episodic_reasoning.json": "tvqa/frames_fps3_hq/", "counterfactual_inference.json": "clevrer/video_validation/",
}
MLVU_FOLDERS = {f"{stem}.json": f"{stem}/" for stem in (
    "1_plotQA", "2_needle", "3_ego", "4_count", "5_order", "6_anomaly_reco", "7_topic_reasoning")}
