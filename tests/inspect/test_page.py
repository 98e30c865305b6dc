from html.parser import HTMLParser

import pytest
from PIL import Image

from vlalign.inspect.page import histogram_png, page_html, pictures_html, shade, thumbnail_html, tokens_png
from vlalign.inspect.rewards import ScoredAnswer, ScoredRecord, Word, summarize

ATTACK = "<script>document.body.setAttribute('data-pwned', 'script')</script>"
IMG_ATTACK = "<img src=x onerror=\"document.body.setAttribute('data-pwned', 'img')\">"


def _answer(text: str, edits=()) -> ScoredAnswer:
    cut = [0, len(text) // 2, len(text)]
    spans = [(cut[0], cut[1]), (cut[1], cut[2]), (len(text), len(text))]
    return ScoredAnswer(text, spans, [1.5, -2.0, 0.3], [Word(0, len(text), "present", 0.5)], list(edits))


@pytest.fixture
def page(tmp_path):
    image = tmp_path / "img.png"
    Image.new("RGB", (32, 32), "red").save(image)
    records = [ScoredRecord('a"b<i>', str(image), f"Describe {IMG_ATTACK}", _answer(f"A dog. {ATTACK}"),
                            _answer("A cat.", edits=[(2, 5)])),
               ScoredRecord("2", str(tmp_path / "missing.png"), "p", _answer("x"), _answer("y"))]
    html = page_html(records, summarize(records), {"model": ATTACK}, histogram_png(records), scale=2.0)
    path = tmp_path / "rewards.html"
    path.write_text(html, encoding="utf-8")
    return path


class _Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.text = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def test_shade_is_white_at_zero_and_saturates_at_the_scale():
    assert shade(0.0, 2.0) == (255, 255, 255)
    assert shade(2.0, 2.0) == shade(50.0, 2.0) == (85, 177, 111)  # 80% of the way to (42, 157, 75)
    assert shade(-1.0, 2.0) == (237, 182, 189)  # 40% of the way to (209, 73, 91)


def test_model_and_data_text_is_text_not_markup(page):
    parsed = _Tags()
    parsed.feed(page.read_text(encoding="utf-8"))
    assert [t for t, _ in parsed.tags].count("script") == 0
    assert not any(name.startswith("on") for _, attrs in parsed.tags for name in attrs)
    text = "".join(parsed.text)
    assert ATTACK[:20] in text and "onerror" in text
    images = [a["src"] for t, a in parsed.tags if t == "img"]
    assert len(images) == 2 and all(src.startswith("data:image/png;base64,") for src in images)  # thumbnail, histogram
    assert sum(1 for t, a in parsed.tags if a.get("class") == "edit") == 2  # both tokens of "A c|at." touch "cat"


def test_page_renders_in_a_browser_and_no_script_from_the_data_runs(page, dump_dom):
    dom = dump_dom(page)
    assert 'data-pwned="' not in dom  # the attribute was never set: it appears only as text
    assert "&lt;script&gt;document.body.setAttribute('data-pwned', 'script')&lt;/script&gt;" in dom
    assert dom.count('class="record"') == 2 and "image missing: missing.png" in dom
    assert 'class="thumb"' in dom and 'width="160" height="160"' in dom  # the 32-pixel image, enlarged 5x
    assert "<table>" in dom and "mean s" in dom


def test_tokens_png_draws_every_record(tmp_path):
    records = [ScoredRecord(str(k), "x.png", "Describe.", _answer("A dog on a mat. " * 12), _answer("A cat."))
               for k in range(3)]
    png = tmp_path / "t.png"
    png.write_bytes(tokens_png(records, scale=2.0, width=400))
    with Image.open(png) as img:
        assert img.width == 400 and img.height > 3 * 3 * 20  # three lines a record, the long one wrapped
        assert shade(-2.0, 2.0) in {c for _, c in img.getcolors(1 << 16)}  # a full-strength token


def test_thumbnail_enlarges_small_images_and_names_a_file_it_cannot_show(tmp_path):
    Image.new("RGB", (96, 64), "blue").save(tmp_path / "wide.png")
    shown = thumbnail_html(tmp_path / "wide.png", 200, 'a "quoted" <alt>')
    assert 'width="192" height="128"' in shown  # 96 x 64 fits 200 twice, by a whole factor
    assert 'alt="a &quot;quoted&quot; &lt;alt&gt;"' in shown
    Image.new("RGB", (400, 200), "blue").save(tmp_path / "big.png")
    assert 'width="100" height="50"' in thumbnail_html(tmp_path / "big.png", 100, "big")  # shrunk, not enlarged
    (tmp_path / "bad<1>.png").write_bytes(b"not a png")
    assert thumbnail_html(tmp_path / "bad<1>.png", 100, "x") == '<div class="missing">image not readable: bad&lt;1&gt;.png</div>'
    assert thumbnail_html(tmp_path / "gone.png", 100, "x") == '<div class="missing">image missing: gone.png</div>'


def test_a_record_with_several_images_shows_them_all_in_order(tmp_path):
    Image.new("RGB", (32, 32), "red").save(tmp_path / "a.png")
    Image.new("RGB", (32, 32), "blue").save(tmp_path / "b.png")
    rec = ScoredRecord('x"<y>', [str(tmp_path / "a.png"), str(tmp_path / "b.png"), str(tmp_path / "gone<.png")], "p",
                       _answer("x"), _answer("y"))
    assert rec.images == (str(tmp_path / "a.png"), str(tmp_path / "b.png"), str(tmp_path / "gone<.png"))
    assert ScoredRecord("1", "x.png", "p", _answer("x"), _answer("y")).images == ("x.png",)
    shown = pictures_html(rec)
    parsed = _Tags()
    parsed.feed(page_html([rec], summarize([rec]), {}, histogram_png([rec]), scale=2.0))
    thumbs = [attrs for tag, attrs in parsed.tags if tag == "img" and attrs.get("class") == "thumb"]
    assert [a["alt"] for a in thumbs] == ['image 1 of 3 of x"<y>', 'image 2 of 3 of x"<y>']  # escaped in the markup
    assert all(a["width"] == "64" for a in thumbs)  # half the size, the 32-pixel images enlarged 2x
    first, second = (thumbnail_html(tmp_path / f"{n}.png", 80, f'image {k} of 3 of x"<y>') for k, n in ((1, "a"), (2, "b")))
    assert shown.index(first) < shown.index(second)  # in prompt order
    assert 'title="3 images"' in shown and "image missing: gone&lt;.png" in shown and "&quot;&lt;y&gt;" in shown
