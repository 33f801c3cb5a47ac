"""parse_span: every output form of the papers, tag policy, malformed input, never raises."""
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vtg_jax.rewards import count_parse_failures, parse_span, parse_spans, parse_time

FORMS = [
    # TempSamp-R1 / Video-OPD "start time to end time"
    ("12.54 to 17.83", (12.54, 17.83)),
    ("The event happens from 12.5 to 17.8 seconds.", (12.5, 17.8)),
    ("<answer>12.54 to 17.83</answer>", (12.54, 17.83)),
    ("<think>I see it at 3.0 to 4.0, no later.</think><answer>12.54 to 17.83</answer>", (12.54, 17.83)),
    ("<think>x</think>\n<answer> from 1 to 2 seconds </answer>\n", (1.0, 2.0)),
    # LongVTG-R1 <timestamp>
    ("<think>r</think><timestamp>30.5 to 41.0</timestamp>", (30.5, 41.0)),
    ("<think>r</think><answer>B</answer><timestamp>30.5 to 41.0</timestamp>", (30.5, 41.0)),
    # TVG-R1 style <time>[s, e]</time> and bare [s, e]
    ("<think>r</think><time>[3.2, 9.75]</time>", (3.2, 9.75)),
    ("[3.2, 9.75]", (3.2, 9.75)),
    ("(3, 9)", (3.0, 9.0)),
    # dash forms
    ("3.5 - 7.25", (3.5, 7.25)),
    ("3.5-7.25", (3.5, 7.25)),
    ("3.5 – 7.25", (3.5, 7.25)),
    ("3.5~7.25", (3.5, 7.25)),
    ("between 3 and 5 seconds", (3.0, 5.0)),
    # clock forms
    ("01:05 to 1:02:03.5", (65.0, 3723.5)),
    ("00:12 - 00:15", (12.0, 15.0)),
    ("1:05.5 to 2:00", (65.5, 120.0)),
    ("<answer>[00:01:10, 00:01:20]</answer>", (70.0, 80.0)),
    # unit suffixes
    ("12.5s to 17.8s", (12.5, 17.8)),
    ("12.5 sec to 17.8 secs", (12.5, 17.8)),
    ("12.5 seconds - 17.8 seconds", (12.5, 17.8)),
    ("12s-18s", (12.0, 18.0)),
    ("12. to 18.", (12.0, 18.0)),
    (".5 to 1.5", (0.5, 1.5)),
    # case-insensitive tags, integers
    ("<ANSWER>3 TO 9</ANSWER>", (3.0, 9.0)),
]


@pytest.mark.parametrize("text,expected", FORMS)
def test_forms(text, expected):
    got = parse_span(text)
    assert got is not None
    assert got == pytest.approx(expected)


def test_reversed_returned_as_written():
    assert parse_span("17.83 to 12.54") == pytest.approx((17.83, 12.54))


def test_last_answer_wins_and_answer_preferred():
    assert parse_span("<answer>1 to 2</answer> more <answer>5 to 6</answer>") == (5.0, 6.0)
    # truncated trailing answer is the last answer
    assert parse_span("<answer>1 to 2</answer><answer>5 to 6") == (5.0, 6.0)
    # without tags, the last span in the text wins (reasoning quotes candidates first)
    assert parse_span("maybe 1 to 2, but actually 3 to 4.") == (3.0, 4.0)
    # <answer> is preferred over <timestamp> when it holds a span
    assert parse_span("<timestamp>1 to 2</timestamp><answer>7 to 8</answer>") == (7.0, 8.0)


def test_no_fallback_to_reasoning_when_tagged_answer_unparsable():
    assert parse_span("<think>it is 3 to 5</think><answer>I don't know</answer>") is None
    assert parse_span("<answer>none</answer> 3 to 5") is None


def test_think_blocks_ignored_without_answer_tags():
    assert parse_span("<think>candidate 1 to 2</think>") is None
    assert parse_span("<think>candidate 1 to 2</think> final 7 to 9") == (7.0, 9.0)


MALFORMED = [
    "", "no numbers here", "12.54", "12.54 to", "to 17.83", "<answer></answer>", "<answer>abc</answer>",
    "1:75 to 2:00", "-3 to 5", "12:5x to", "<answer>3 to</answer>", "1e999 to 2", "9" * 400 + " to 2",
    "x12 to 15", None, 12.5, b"1 to 2",
]


@pytest.mark.parametrize("text", MALFORMED)
def test_malformed_is_none(text):
    assert parse_span(text) is None


def test_parse_time():
    assert parse_time("12.5") == 12.5
    assert parse_time("01:05") == 65.0
    assert parse_time("1:02:03.5") == 3723.5
    assert parse_time("1:60") is None
    assert parse_time("1:02:60") is None
    assert parse_time("1:2:3:4") is None
    assert parse_time("x") is None


def test_batch_helpers():
    texts = ["1 to 2", "junk", "<answer>3 - 4</answer>", ""]
    spans, ok = parse_spans(texts)
    assert spans.shape == (4, 2) and spans.dtype.name == "float32"
    assert ok.tolist() == [True, False, True, False]
    assert math.isnan(spans[1, 0]) and spans[2].tolist() == [3.0, 4.0]
    counts = count_parse_failures(texts)
    assert counts == {"parse_fail_count": 2.0, "parse_fail_rate": 0.5, "n": 4.0}
    assert count_parse_failures([])["parse_fail_rate"] == 0.0
    spans0, ok0 = parse_spans([])
    assert spans0.shape == (0, 2) and ok0.shape == (0,)


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_never_raises_on_arbitrary_text(text):
    out = parse_span(text)
    assert out is None or (len(out) == 2 and all(math.isfinite(x) and x >= 0 for x in out))


_ALPHABET = st.sampled_from(list("0123456789.:-, to<>/answerimestp[]s") + ["<answer>", "</answer>", " to "])


@settings(max_examples=300, deadline=None)
@given(st.lists(_ALPHABET, max_size=40).map("".join))
def test_never_raises_on_span_like_text(text):
    out = parse_span(text)
    assert out is None or all(math.isfinite(x) for x in out)


@settings(max_examples=200, deadline=None)
@given(st.floats(0, 1e5, allow_nan=False), st.floats(0, 1e5, allow_nan=False))
def test_roundtrip_two_decimals(s, e):
    text = f"<think>t</think><answer>{s:.2f} to {e:.2f}</answer>"
    assert parse_span(text) == pytest.approx((round(s, 2), round(e, 2)), abs=1e-6)


@pytest.mark.parametrize("text", ["<answer>" * 20000, "<think>" * 20000, "1" * 100000,
                                  "<think>" + "</think><answer></answer>x" * 3000])
def test_adversarial_inputs_are_linear_time(text):
    import time

    from vtg_jax.rewards import format_think_answer, format_timestamp, parse_highlight

    t0 = time.perf_counter()
    parse_span(text), format_think_answer(text), format_timestamp(text), parse_highlight(text)
    assert time.perf_counter() - t0 < 2.0  # quadratic regexes took ~35 s on the first case


# --- numbers are read whole or not at all (issue 15) -------------------------------------------------

NUMBER_FORMS = [
    # scientific notation is a number
    ("10 to 1.5e1", (10.0, 15.0)),
    ("<answer>1.5E+1 to 2e1</answer>", (15.0, 20.0)),
    ("0 to 2.5e-1", (0.0, 0.25)),
    ("0 to 1e30", (0.0, 1e30)),  # absurd but finite in float32: returned, the reward scores it ~0
    # thousands separators: a comma followed by exactly three digits inside a number
    ("1,000 to 2,000", (1000.0, 2000.0)),
    ("0 to 1,000", (0.0, 1000.0)),
    ("[1,000, 2,000]", (1000.0, 2000.0)),
    ("from 1,234.5 to 1,240 seconds", (1234.5, 1240.0)),
    ("12,345 - 12,400", (12345.0, 12400.0)),
    # otherwise a comma separates the two times (never a decimal point)
    ("12, 20", (12.0, 20.0)),
    ("12,20", (12.0, 20.0)),
    ("12, 200", (12.0, 200.0)),
    ("[3.2,9.75]", (3.2, 9.75)),
    ("12.5,200", (12.5, 200.0)),
    ("1,5", (1.0, 5.0)),
    # the Unicode minus between two times is a separator, as "-" is
    ("3.5−7.25", (3.5, 7.25)),
    ("3.5 − 7.25", (3.5, 7.25)),
]


@pytest.mark.parametrize("text,expected", NUMBER_FORMS)
def test_number_forms(text, expected):
    assert parse_span(text) == pytest.approx(expected)


NOT_A_SPAN = [
    # never a different number: these used to give (0, 1), (10, 1.5), (2, 0), (5, 3)
    "0 to 1e308", "0 to 1e39", "10 to 1.5e1:3", "1,000e5 to 3",
    # a bare comma that could group thousands or separate two times: unparsable
    "1,000", "12,200", "[12,200]", "<answer>12,200</answer>", "12,200.5", "1,000,2,000", "1,000,20",
    "1,000,0000 to 5", "x1,000 to 2",
    # bare-comma lists of three numbers, or a bare-comma pair joined to a third time
    "12,20,30", "0 to 1,5", "1,5 to 3", "5 to 1,0000", "1 to 2, 3,4",
    # a minus (ASCII, Unicode U+2212, hyphen, full-width) or dash before the first time: negative
    "−5 to 3", "<answer>−5 to 3</answer>", "[−5, 3]", "3 to −5", "\u20105 to 3", "\uff0d5 to 3", "–5 to 3",
    "—5 to 3",
    # the last candidate decides: an unparsable last span is not replaced by an earlier one
    "3 to 5 then 1:75 to 2:00", "3 to 5, then 0 to 1e308", "<answer>3 to 5 or 12,200</answer>",
]


@pytest.mark.parametrize("text", NOT_A_SPAN)
def test_not_a_span(text):
    assert parse_span(text) is None


def test_parse_time_numbers():
    assert parse_time("1,000") == 1000.0
    assert parse_time("12,345.5") == 12345.5
    assert parse_time("1.5e1") == 15.0
    assert parse_time("3e38") == 3e38
    for bad in ("1e39", "1e308", "inf", "nan", "1_000", "12,20", "1,0000", "-5", "−5", "+5", "0x10", ""):
        assert parse_time(bad) is None, bad


def test_counters_count_the_new_failures():
    texts = ["0 to 1e308", "1,000 to 2,000", "−5 to 3", "10 to 1.5e1", "12,200"]
    assert count_parse_failures(texts) == {"parse_fail_count": 3.0, "parse_fail_rate": 0.6, "n": 5.0}
    spans, ok = parse_spans(["0 to 3e38", "0 to 1e39"])
    assert ok.tolist() == [True, False] and math.isfinite(spans[0, 1]) and math.isnan(spans[1, 1])


def _styled(value: int, style: str) -> str:
    return {"plain": str(value), "grouped": f"{value:,}", "exp": f"{value:.6e}"}[style]


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 10**9), st.integers(0, 10**9), st.sampled_from(["plain", "grouped", "exp"]),
       st.sampled_from(["plain", "grouped", "exp"]), st.sampled_from([" to ", " - ", ", ", " − ", ","]))
def test_never_a_different_number(a, b, style_a, style_b, sep):
    ta, tb = _styled(a, style_a), _styled(b, style_b)
    want = (float(ta.replace(",", "")), float(tb.replace(",", "")))
    got = parse_span(f"<answer>{ta}{sep}{tb}</answer>")
    if sep == ",":  # a bare comma may be ambiguous (then unparsable), never a different number
        assert got is None or got == want
    else:
        assert got == want


def test_parse_highlight_numbers_whole_or_not_at_all():
    from vtg_jax.rewards import parse_highlight

    assert parse_highlight("<answer>1.5e1, 20 seconds. Scores: 1, 2e0</answer>") == ([15.0, 20.0], [1.0, 2.0])
    # commas separate a highlight list's entries (timestamps reach 3 digits on QVHighlights)
    assert parse_highlight("100,102,104 seconds. Scores 1,2,3") == ([100.0, 102.0, 104.0], [1.0, 2.0, 3.0])
    # a signed number is not read as its absolute value; a non-finite one is not dropped
    for text in ("-5, 10 seconds. Scores 1, 2", "−5, 10 seconds. Scores 1, 2", "82 seconds. Scores −1",
                 "9" * 400 + " seconds. Scores 1", "82, 84 seconds. Scores 1, " + "9" * 400):
        assert parse_highlight(text) is None, text
