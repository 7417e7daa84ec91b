"""Token heatmaps (nnxplain/visualize.py): one line per text, each token on a background coloured by
its relevance (diverging, centred at 0, each text on its own scale), as HTML (self-contained,
escaped, the value on hover) and PNG; tokens given as strings or decoded by a tokenizer.json."""
from __future__ import annotations

import html
import io
import re

import numpy as np
import pytest
from PIL import Image

from nnxplain import text, visualize as vis
from nnxplain.errors import NnxplainError

TEXTS = [["[CLS]", "the", "<b>cat</b>", " sat", "&", 'say "hi"', "$x$", "[SEP]"], ["hello", "world", "!"]]
RELEVANCE = [np.array([0.1, -0.5, 1.0, 0.2, 0.0, -1.0, 0.4, -0.05]), np.array([30.0, -10.0, 0.0])]
SPAN = re.compile(r'<span class="t" style="background:#([0-9a-f]{6});color:#[0-9a-f]{3}" title="([^"]*)">(.*?)</span>')


def spans(page: str) -> list[list[tuple]]:
    """Per text line: (rgb in 0..255, hover text, token html) of each token."""
    lines = [line for line in page.split("\n") if line.startswith('<div class="text">')]
    return [[(tuple(int(c[i:i + 2], 16) for i in (0, 2, 4)), value, token) for c, value, token in SPAN.findall(line)]
            for line in lines]


def test_the_html_holds_every_token_escaped_one_line_per_text_with_its_value_on_hover():
    page = vis.token_html(TEXTS, RELEVANCE, ["#0 predicted 1: 2.5", "#1 <b>"], title="gradient").decode()
    assert page.startswith("<!DOCTYPE html>") and "<script" not in page and "http" not in page  # self-contained
    lines = spans(page)
    assert len(lines) == 2
    for tokens, relevance, line in zip(TEXTS, RELEVANCE, lines):
        assert [html.unescape(token) for _, _, token in line] == tokens
        assert [float(value) for _, value, _ in line] == pytest.approx(relevance, rel=1e-3)
    assert "&lt;b&gt;cat&lt;/b&gt;" in page and "<b>" not in page  # the token and the label are text, not markup
    assert "say &quot;hi&quot;" in page


def redness(rgb) -> int:
    """Where a colour lies on the blue-white-red map: red minus blue (-255 .. 255)."""
    return rgb[0] - rgb[2]


def test_colours_follow_relevance_on_a_map_centred_at_zero_each_text_on_its_own_scale():
    lines = spans(vis.token_html(TEXTS, RELEVANCE).decode())
    for relevance, line in zip(RELEVANCE, lines):
        red = [redness(rgb) for rgb, _, _ in line]
        order = np.argsort(relevance, kind="stable")
        assert np.all(np.diff(np.asarray(red)[order]) > 0), (relevance, red)  # strictly: values all differ
        for value, (rgb, _, _) in zip(relevance, line):
            if value == 0:
                assert rgb == (255, 255, 255)  # white
            assert np.sign(redness(rgb)) == np.sign(value)
        # the largest |value| of the text is full colour, whatever the text's magnitude
        top = int(np.argmax(np.abs(relevance)))
        assert line[top][0] in ((255, 0, 0), (0, 0, 255))
    scaled = spans(vis.token_html(TEXTS, [RELEVANCE[0], RELEVANCE[1] / 1000]).decode())
    assert [rgb for rgb, _, _ in scaled[1]] == [rgb for rgb, _, _ in lines[1]]


def test_the_png_draws_the_tokens_in_their_colours():
    picture = Image.open(io.BytesIO(vis.token_png(TEXTS, RELEVANCE, title="gradient"))).convert("RGB")
    assert picture.width == 800 and picture.height > 100
    pixels = np.asarray(picture).reshape(-1, 3).astype(int)
    full_red = np.all(pixels == (255, 0, 0), axis=1).sum()
    full_blue = np.all(pixels == (0, 0, 255), axis=1).sum()
    assert full_red > 50 and full_blue > 50  # text 0: <b>cat</b> +1 and say "hi" -1; text 1: hello +30
    assert len(np.unique(pixels, axis=0)) > 20  # tokens in several colours, and their letters


def test_a_long_text_wraps_to_the_width():
    words = [f"word{i}" for i in range(120)]
    values = [np.linspace(-1, 1, 120)]
    narrow = Image.open(io.BytesIO(vis.token_png([words], values, width=4.0)))
    wide = Image.open(io.BytesIO(vis.token_png([words], values, width=12.0)))
    assert narrow.width == 400 and narrow.height > wide.height


def test_tokens_and_values_must_pair_up():
    with pytest.raises(NnxplainError, match="text 1 has 3 tokens but 2 relevance values"):
        vis.token_html(TEXTS, [RELEVANCE[0], np.zeros(2)])
    with pytest.raises(NnxplainError, match="2 texts but 1 explanations"):
        vis.token_png(TEXTS, RELEVANCE[:1])


def tokenizer_file(tmp_path) -> str:
    """A word-level tokenizer.json written by the tokenizers package (no download)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    vocab = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "the": 4, "cat": 5, "sat": 6, "<b>": 7}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    path = tmp_path / "tokenizer.json"
    tokenizer.save(str(path))
    return str(path)


def test_a_tokenizer_decodes_the_ids_into_its_vocabularys_tokens(tmp_path):
    tokenizer = text.load_tokenizer(tokenizer_file(tmp_path))
    feeds = {"input_ids": np.array([[2, 4, 5, 6, 3], [2, 7, 3, 0, 0]], np.int64),
             "attention_mask": np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], np.int64)}
    texts = text.token_texts(feeds, None, tokenizer, 5)
    assert texts == [["[CLS]", "the", "cat", "sat", "[SEP]"], ["[CLS]", "<b>", "[SEP]", "[PAD]", "[PAD]"]]
    shown, values = text.attended(feeds, texts, np.arange(10.0).reshape(2, 5))
    assert shown[1] == ["[CLS]", "<b>", "[SEP]"] and list(values[1]) == [5.0, 6.0, 7.0]  # padding is not drawn
    with pytest.raises(NnxplainError, match="token id 99 is not in its vocabulary of 8"):
        text.token_texts({"input_ids": np.array([[2, 99]])}, None, tokenizer, 2)


def test_a_file_that_is_no_tokenizer_is_named(tmp_path):
    bad = tmp_path / "tokenizer.json"
    bad.write_text("{}")
    with pytest.raises(NnxplainError, match=r"--tokenizer .*tokenizer.json: not a tokenizer.json"):
        text.load_tokenizer(str(bad))
    with pytest.raises(NnxplainError, match="no such file"):
        text.load_tokenizer(str(tmp_path / "missing.json"))
