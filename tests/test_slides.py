"""`make slides`: decks that run from disk with no network (scripts/slides.py)."""
import importlib.util
import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("slides", ROOT / "scripts" / "slides.py")
slides = importlib.util.module_from_spec(spec)
spec.loader.exec_module(slides)


@pytest.fixture(scope="module")
def deck(tmp_path_factory):
    path = slides.build(ROOT / "notebooks" / "02_vae.ipynb", tmp_path_factory.mktemp("slides"))
    return path.read_text(encoding="utf-8")


def test_a_deck_loads_no_remote_script_or_stylesheet(deck):
    assert slides.remote_references(deck) == []
    sources = re.findall(r"""<(?:script|link)\b[^>]*?(?:src|href)\s*=\s*["']([^"']+)["']""", deck)
    assert sources and all(s.startswith(slides.VENDOR + "/") for s in sources), sources
    for url in slides.URLS.values():            # reveal.js, MathJax, require.js, jQuery: the vendored copies
        assert url in deck


def test_remote_references_finds_what_a_cdn_deck_loads():
    html = ('<script src="https://unpkg.com/reveal.js@4.0.2/dist/reveal.js"></script>'
            '<link rel="stylesheet" href="//cdn.example/x.css">'
            "<script type=module>import mermaid from 'https://cdn.example/m.mjs';</script>"
            '<a href="https://arxiv.org/abs/1312.6114">a link is not a load</a>')
    assert len(slides.remote_references(html)) == 3


def test_headings_make_slides_code_makes_subslides_and_long_outputs_are_cut(deck):
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("import minigen"),
        nbformat.v4.new_markdown_cell("# Title\ntext"), nbformat.v4.new_markdown_cell("more text"),
        nbformat.v4.new_markdown_cell("### Detail"),
        nbformat.v4.new_code_cell("print()", outputs=[nbformat.v4.new_output("stream", name="stdout",
                                                                             text="x\n" * 40)])])
    slides.slide_types(nb)
    assert [c.metadata["slideshow"]["slide_type"] for c in nb.cells] == ["skip", "slide", "-", "subslide", "subslide"]
    text = nb.cells[-1].outputs[0]["text"]
    assert text.count("\n") == slides.MAX_OUTPUT_LINES + 1 and "more lines in the notebook" in text
    assert deck.count("<section") > 10           # notebook 02 is a lecture of many slides, not one long page


def test_a_tampered_tarball_is_refused_before_unpacking():
    integrity = slides.PACKAGES["jquery"][1]
    with pytest.raises(RuntimeError, match="refusing to unpack"):
        slides.check_integrity(b"not the tarball", integrity, "jquery")
