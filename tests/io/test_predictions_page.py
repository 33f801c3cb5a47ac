"""The predictions page (`vtg_jax.io.predictions_page`): its content read back with an HTML parser (every
query a row with its offsets, model output escaped, the right frames as data URIs, nothing fetched from
elsewhere, the metrics), and the page in Debian's headless chromium: bars drawn, frames decoded, sorting
by the page's own controls."""
from __future__ import annotations

import base64
import io
import json
import logging
import os
from html.parser import HTMLParser

import numpy as np
import pytest
from PIL import Image

import headless_chromium
from vtg_jax.data.frame_store import MANIFEST, FrameStore, array_spec
from vtg_jax.io.predictions_page import (GT_COLOUR, PRED_COLOUR, iou_histogram, prediction_errors,
                                         render_predictions_page, write_predictions_page)

FPS = 2.0
FRAME_HW = (32, 48)


def frame_colour(i: int) -> tuple[int, int, int]:
    """The solid colour of frame i of every test video, so a thumbnail tells which frame it shows."""
    return 12 * i, 250 - 12 * i, 128


def record(qid, video_id, gt, pred, iou, answer, duration=10.0, query=None):
    return {"qid": qid, "video_id": video_id, "query": query or f"query {qid}", "gt": gt, "duration": duration,
            "answer": answer, "pred": pred, "iou": iou, "step": 40}


RECORDS = [
    record("q0", "v0", [2.0, 4.0], [2.5, 4.5], 0.6, "2.5 to 4.5"),          # inter 1.5 / union 2.5
    record("q1", "v1", [1.0, 3.0], [5.0, 7.0], 0.0, "5 to 7", duration=8.0),
    record("q2", "v0", [6.0, 8.0], None, 0.0, '<script>alert("x")</script>', query="what & <b>why</b>"),
    record("q3", "absent", [0.0, 2.0], [0.0, 1.0], 0.5, "0 to 1", duration=5.0),
    record("q4", "v1", [2.0, 4.0], [4.5, 3.0], 0.0, "4.5 to 3", duration=8.0),  # reversed: IoU 0
]
METRICS = {"R@0.3": 0.4, "R@0.5": 0.4, "R@0.7": 0.0, "mIoU": 0.22, "n": 5, "parse_failures": 1,
           "reversed_predictions": 1, "skipped": 2}


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> FrameStore:
    """A frame store of v0 (20 frames, 10 s) and v1 (16 frames, 8 s) at 2 fps, written as `data.extract` does."""
    import tensorstore as ts

    root = str(tmp_path_factory.mktemp("store"))
    with open(os.path.join(root, MANIFEST), "w") as f:
        for vid, t in (("v0", 20), ("v1", 16)):
            frames = np.stack([np.full((*FRAME_HW, 3), frame_colour(i), np.uint8) for i in range(t)])
            ts.open(dict(array_spec(root, vid), create=True, metadata={
                "shape": list(frames.shape), "data_type": "uint8",
                "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [1, *FRAME_HW, 3]}}})
                    ).result().write(frames).result()
            f.write(json.dumps({"video_id": vid, "key": vid, "timestamps": (np.arange(t) / FPS).tolist(),
                                "shape": list(frames.shape)}) + "\n")
    return FrameStore(root)


class PageParser(HTMLParser):
    """The table's rows (their attributes, text, images) and every tag and attribute value of the page."""

    def __init__(self):
        super().__init__()
        self.rows, self.tags, self.urls, self.row_tags, self.in_rows = [], [], [], set(), False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append(tag)
        self.urls += [v for k, v in attrs if k in ("src", "href") and v]
        self.in_rows |= tag == "tbody"
        if tag == "tr" and self.in_rows:
            self.rows.append({"attrs": a, "text": "", "imgs": []})
        elif self.rows and self.in_rows:
            self.row_tags.add(tag)
            if tag == "img":
                self.rows[-1]["imgs"].append(a)

    def handle_endtag(self, tag):
        self.in_rows &= tag != "tbody"

    def handle_data(self, data):
        if self.rows and self.in_rows:
            self.rows[-1]["text"] += data


def parse(page: str) -> PageParser:
    p = PageParser()
    p.feed(page)
    return p


def test_prediction_errors_and_histogram():
    assert prediction_errors(RECORDS[0]) == {"start": 0.5, "end": 0.5, "abs": 1.0}
    assert prediction_errors(RECORDS[4]) == {"start": 2.5, "end": -1.0, "abs": 3.5}
    assert prediction_errors(RECORDS[2]) == {"start": None, "end": None, "abs": None}
    parsed, failed = iou_histogram(RECORDS + [record("q5", "v0", [0.0, 1.0], [0.0, 1.0], 1.0, "0 to 1")])
    # IoU 0.6 -> bin 6, 0.5 -> bin 5, the two parsed zeros and the unparsable one -> bin 0, IoU 1 -> the last bin
    assert parsed.tolist() == [2, 0, 0, 0, 0, 1, 1, 0, 0, 1] and failed.tolist() == [1] + [0] * 9


def test_every_query_is_a_row_with_its_values(store):
    p = parse(render_predictions_page(RECORDS, metrics=METRICS, title="val_eval", store=store))
    assert len(p.rows) == len(RECORDS)
    for row, rec in zip(p.rows, RECORDS):
        assert rec["query"] in row["text"] and rec["answer"] in row["text"] and rec["qid"] in row["text"]
    a = [row["attrs"] for row in p.rows]
    assert [r["data-index"] for r in a] == ["0", "1", "2", "3", "4"]
    assert (a[0]["data-iou"], a[0]["data-start"], a[0]["data-end"], a[0]["data-abs"]) == ("0.6", "0.5", "0.5", "1.0")
    assert (a[4]["data-start"], a[4]["data-end"], a[4]["data-abs"]) == ("2.5", "-1.0", "3.5")
    assert a[1]["data-duration"] == "8.0"
    # the unparsable answer: marked, no IoU / offsets to sort by (so it sorts last), no predicted bar
    assert a[2]["class"] == "row unparsable" and a[2]["data-iou"] == a[2]["data-start"] == a[2]["data-abs"] == ""
    assert "unparsable answer" in p.rows[2]["text"] and "unparsable" not in a[0]["class"]


def test_model_output_and_queries_are_escaped(store):
    page = render_predictions_page(RECORDS, metrics=METRICS, store=store)
    assert page.count("<script") == 1 and "alert(" in page  # only the page's own sorting script
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page and "what &amp; &lt;b&gt;why&lt;/b&gt;" in page
    p = parse(page)
    assert not {"script", "b"} & p.row_tags and p.tags.count("script") == 1


def test_thumbnails_are_the_frames_at_their_timestamps(store):
    p = parse(render_predictions_page(RECORDS, metrics=METRICS, store=store))
    row = p.rows[0]  # v0, gt [2, 4] (middle 3.0 s: frame 6), pred [2.5, 4.5] (middle 3.5 s: frame 7), then
    # frames spread over the video: linspace(0, 19, 6) rounded = 0, 4, ... -> frames 0, 4, 6, 7
    assert [img["alt"] for img in row["imgs"]] == [f"frame at {t:.1f} s" for t in (0.0, 2.0, 3.0, 3.5)]
    assert [img["class"] for img in row["imgs"]] == ["", "in-gt", "in-gt in-pred", "in-gt in-pred"]
    for img, frame in zip(row["imgs"], (0, 4, 6, 7)):
        head, data = img["src"].split(",", 1)
        assert head == "data:image/jpeg;base64"
        thumb = Image.open(io.BytesIO(base64.b64decode(data)))
        assert thumb.format == "JPEG" and thumb.size == (96, 64)
        np.testing.assert_allclose(np.asarray(thumb, np.float64).mean(axis=(0, 1)), frame_colour(frame), atol=4)
    assert len(p.rows[2]["imgs"]) == 4  # unparsable: frames around the ground truth still shown
    assert p.rows[3]["imgs"] == [] and "not in the frame store" in p.rows[3]["text"]  # video "absent"


def test_page_is_self_contained(store):
    page = render_predictions_page(RECORDS, metrics=METRICS, store=store)
    for ref in ("http://", "https://", 'src="//', 'href="//', "<link", "@import", "url("):
        assert ref not in page, ref
    urls = parse(page).urls
    assert len(urls) == 4 * 4 and all(u.startswith("data:image/jpeg;base64,") for u in urls)  # 4 rows of frames


def test_metrics_and_subtitle_shown(store):
    page = render_predictions_page(RECORDS, metrics=METRICS, title="Predictions: val_eval", subtitle="split val")
    for key, text in (("R_03", "40.0%"), ("R_07", "0.0%"), ("mIoU", "22.0%"), ("n", "5"), ("parse_failures", "1"),
                      ("skipped", "2")):
        assert f'id="metric-{key}"><div class="value">{text}</div>' in page
    assert "<h1>Predictions: val_eval</h1>" in page and "split val · step 40" in page  # shared extra key
    assert 'id="iou-histogram"' in page and "no frame store given" in page


def test_thumbnail_budget_and_missing_store(tmp_path, store):
    p = parse(render_predictions_page(RECORDS, store=store, thumb_budget=1))  # reached by the first row
    assert [len(r["imgs"]) for r in p.rows] == [4, 0, 0, 0, 0] and "budget reached" in p.rows[1]["text"]
    page = render_predictions_page(RECORDS, store=FrameStore(str(tmp_path / "no_store")))  # a store not there
    assert all(r["imgs"] == [] for r in parse(page).rows) and "3 video(s) not in the frame store" in page


def test_failed_page_is_logged_not_raised(tmp_path, store, caplog):
    from vtg_jax.run.evaluate import write_page

    jsonl = tmp_path / "val_eval.jsonl"
    with caplog.at_level(logging.WARNING):
        assert write_page(str(jsonl), METRICS, store.path, "t", "s") is None  # no jsonl to read
    assert "val_eval.html not written: FileNotFoundError" in caplog.text
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    assert write_page(str(jsonl), METRICS, store.path, "t", "s") == str(tmp_path / "val_eval.html")
    assert len(parse((tmp_path / "val_eval.html").read_text()).rows) == 5


def row_order(driver) -> list[int]:
    return driver.execute_script(
        "return Array.from(document.querySelectorAll('#rows tr')).map(r => parseInt(r.dataset.index))")


def test_page_in_headless_chromium(tmp_path, store):
    from selenium.webdriver.common.by import By

    if headless_chromium.missing():
        pytest.fail(headless_chromium.missing())  # not a skip: CI (.ci/run) installs the packages
    page = write_predictions_page(str(tmp_path / "val.html"), RECORDS, metrics=METRICS, title="val", store=store)
    with headless_chromium.chromium(1100, 900) as driver:
        driver.get(headless_chromium.file_url(page))
        gt_bars = driver.find_elements(By.CSS_SELECTOR, "rect.gt-bar")
        pred_bars = driver.find_elements(By.CSS_SELECTOR, "rect.pred-bar")
        assert len(gt_bars) == 5 and len(pred_bars) == 4  # no predicted bar for the unparsable answer
        assert all(b.size["width"] >= 2 and b.size["height"] == 12 for b in gt_bars + pred_bars)
        # the bars sit where the spans are: row 0 (axis 0..10 s) has GT [2, 4] left of the prediction [2.5, 4.5]
        assert gt_bars[0].location["x"] < pred_bars[0].location["x"] and gt_bars[0].size["width"] == pytest.approx(
            pred_bars[0].size["width"], abs=1)
        widths = driver.execute_script("return Array.from(document.images).map(i => i.complete && i.naturalWidth)")
        assert widths == [96] * 16  # every data-URI thumbnail decoded by the browser

        shot = Image.open(io.BytesIO(driver.get_screenshot_as_png())).convert("RGB")
        assert shot.size == (1100, 900) and len(shot.getcolors(1 << 20)) > 200
        pixels = np.asarray(shot).reshape(-1, 3).astype(int)
        for colour in (GT_COLOUR, PRED_COLOUR):
            rgb = np.array([int(colour[i:i + 2], 16) for i in (1, 3, 5)])
            assert np.sum(np.abs(pixels - rgb).max(axis=1) <= 2) > 300, colour

        # ious 0.6, 0, unparsable, 0.5, 0 (reversed): ties keep the evaluation's order, unparsable last
        iou_button = driver.find_element(By.ID, "sort-iou")
        iou_button.click()
        assert row_order(driver) == [1, 4, 3, 0, 2]
        assert iou_button.find_element(By.XPATH, "..").get_attribute("aria-sort") == "ascending"
        iou_button.click()
        assert row_order(driver) == [0, 3, 1, 4, 2]
        assert driver.find_element(By.ID, "sort-state").text == "iou descending"
        driver.find_element(By.ID, "sort-start").click()  # start offsets 0.5, 4.0, -, 0.0, 2.5
        assert row_order(driver) == [3, 0, 4, 1, 2]
        driver.find_element(By.ID, "sort-index").click()
        assert row_order(driver) == [0, 1, 2, 3, 4]
