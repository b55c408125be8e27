"""Lecture decks from the notebooks that run from disk, with no network (`make slides`).

    python scripts/slides.py                  # fetch the vendored scripts once, then every notebook -> docs/slides/
    python scripts/slides.py 02 04            # only these
    python scripts/slides.py --no-fetch ...   # write the decks; do not download (tests; the vendor folder exists)

nbconvert's reveal template loads reveal.js, MathJax, require.js and jQuery from CDNs, so a deck opened on a
classroom projector with no network is one long page of raw `$q(z\\mid x)$`. Here every script and style sheet a
deck uses comes from docs/slides/vendor/, filled once from the npm registry: pinned versions, each tarball
checked against its registry sha512 before a byte of it is unpacked (licences: reveal.js, jQuery, require.js MIT;
MathJax Apache-2.0; each package's licence file is unpacked beside it). Copy docs/slides/ as a whole to the
lecture machine.

Which cells become what (the notebooks carry no slide metadata; the rule lives here, one place):
- a markdown cell that opens with a `#` or `##` heading starts a slide; with `###`, a sub-slide below it;
- any other markdown cell continues the slide it follows;
- a code cell starts a sub-slide of its own (code and its figure fill one screen);
- text output longer than MAX_OUTPUT_LINES lines is cut to its first lines and a note that the notebook has it;
- the setup cell (the first code cell) is skipped: it is plumbing, not lecture.
"""
import argparse
import base64
import copy
import hashlib
import io
import re
import sys
import tarfile
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "slides"
VENDOR = "vendor"                      # relative to the decks, so the folder can be copied anywhere
MAX_OUTPUT_LINES = 12
TEMPLATE_DIR = Path(__file__).resolve().parent / "slides_template"

# name -> (tarball, its registry integrity (sha512), the members to unpack: prefixes inside "package/")
PACKAGES = {
    "reveal.js": ("https://registry.npmjs.org/reveal.js/-/reveal.js-4.0.2.tgz",
                  "sha512-LWZSUenufF1gpD7npxJ7KfoQQFKgc1D6XrLTFgKlwWNP1BQ74hT48KONFWMAw+8R/QUeaScCLCLrBVHDfFIEiw==",
                  ("dist/", "plugin/notes/", "LICENSE")),
    "mathjax": ("https://registry.npmjs.org/mathjax/-/mathjax-2.7.7.tgz",
                "sha512-OOl0B2/0tSJAtAZarXnQuLDBLgTNRqiI9VqHTQzPsxf4okT2iIpDrvaklK9x2QEMD1sDj4yRn11Ygci41DxMAQ==",
                ("MathJax.js", "config/", "extensions/", "jax/element/", "jax/input/TeX/", "jax/output/CommonHTML/",
                 "fonts/HTML-CSS/TeX/woff/", "localization/en/", "LICENSE")),
    "requirejs": ("https://registry.npmjs.org/requirejs/-/requirejs-2.1.10.tgz",
                  "sha512-4JqdTihK3kOnT387LxCHuJZ/9QsKg2EIl7LmaW35PIyM4LwCI2jwyy4fy6pbY/ZZH2JoY/QEcb5PzULFPP6gcQ==",
                  ("require.js", "LICENSE")),
    "jquery": ("https://registry.npmjs.org/jquery/-/jquery-2.2.4.tgz",
               "sha512-lBHj60ezci2u1v2FqnZIraShGgEXq35qCzMv4lITyHGppTnA13rwR0MgwyNJh9TnDs3aXUvd1xjAotfraMHX/Q==",
               ("dist/jquery.min.js", "LICENSE")),
}

# What the decks load, relative to the deck (nbconvert's SlidesExporter / HTMLExporter settings)
URLS = {
    "reveal_url_prefix": f"{VENDOR}/reveal.js",
    "mathjax_url": f"{VENDOR}/mathjax/MathJax.js?config=TeX-AMS_CHTML-full,Safe",
    "require_js_url": f"{VENDOR}/requirejs/require.js",
    "jquery_url": f"{VENDOR}/jquery/dist/jquery.min.js",
}


def check_integrity(data: bytes, integrity: str, name: str) -> None:
    algorithm, _, expected = integrity.partition("-")
    found = base64.b64encode(hashlib.new(algorithm, data).digest()).decode()
    if found != expected:
        raise RuntimeError(f"{name}: the downloaded tarball's {algorithm} is {found[:16]}..., not the pinned "
                           f"{expected[:16]}...; refusing to unpack it")


def unpack(data: bytes, members: tuple[str, ...], dest: Path) -> int:
    """Unpack the files of an npm tarball (all under package/) whose path starts with one of `members`."""
    count = 0
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        for member in tar.getmembers():
            path = member.name.removeprefix("package/")
            if not member.isfile() or ".." in Path(path).parts or not path.startswith(members):
                continue
            target = dest / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(tar.extractfile(member).read())
            count += 1
    return count


def fetch(out: Path = OUT) -> None:
    """Fill out/vendor/ from the npm registry, once (a package whose folder exists is kept)."""
    for name, (url, integrity, members) in PACKAGES.items():
        dest = out / VENDOR / name
        if dest.exists():
            continue
        print(f"fetching {url}")
        with urllib.request.urlopen(url, timeout=60) as response:
            data = response.read()
        check_integrity(data, integrity, name)
        print(f"  {unpack(data, members, dest)} files -> {dest.relative_to(out)}")


def slide_types(nb) -> None:
    """Give each cell its slideshow role (the rule in this file's docstring) and cut long text outputs."""
    first_code = True
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            heading = re.match(r"(#+)\s", cell.source.lstrip())
            kind = "-" if not heading else "slide" if len(heading[1]) <= 2 else "subslide"
        else:
            kind, first_code = ("skip" if first_code else "subslide"), False
            for output in cell.get("outputs", []):
                text = output.get("text") if output.get("output_type") == "stream" else None
                if text and text.count("\n") > MAX_OUTPUT_LINES:
                    lines = text.splitlines()
                    output["text"] = "\n".join(lines[:MAX_OUTPUT_LINES]) + \
                        f"\n... ({len(lines) - MAX_OUTPUT_LINES} more lines in the notebook)\n"
        cell.metadata["slideshow"] = {"slide_type": kind}


def build(path: Path, out: Path = OUT) -> Path:
    """Write the deck of the notebook at `path` to out/<name>.slides.html and return its path."""
    import nbformat
    from nbconvert import SlidesExporter
    from traitlets.config import Config

    nb = copy.deepcopy(nbformat.read(path, as_version=4))
    slide_types(nb)
    exporter = SlidesExporter(config=Config({"SlidesExporter": URLS, "HTMLExporter": URLS}),
                              extra_template_basedirs=[str(TEMPLATE_DIR.parent)], template_name=TEMPLATE_DIR.name)
    html, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": path.stem}})
    out.mkdir(parents=True, exist_ok=True)
    deck = out / f"{path.stem}.slides.html"
    deck.write_text(html, encoding="utf-8")
    return deck


def remote_references(html: str) -> list[str]:
    """Every script, style sheet or module import in `html` that points off the disk."""
    found = re.findall(r"""<(?:script|link)\b[^>]*?(?:src|href)\s*=\s*["']([^"']+)["']""", html)
    found += re.findall(r"""\bimport\b[^;'"]*?['"]([^'"]+)['"]""", html)
    found += re.findall(r"""require\(\s*\{[^}]*\}\s*,\s*\[([^\]]*)\]""", html)
    return [url for url in found if re.search(r"(https?:)?//", url)]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebooks", nargs="*", help="notebook numbers, e.g. 02 04 (default: all)")
    parser.add_argument("--no-fetch", action="store_true", help="do not download the vendored scripts")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    if not args.no_fetch:
        fetch(args.out)
    paths = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    if args.notebooks:
        paths = [p for p in paths if p.name[:2] in args.notebooks]
    for path in paths:
        deck = build(path, args.out)
        remote = remote_references(deck.read_text(encoding="utf-8"))
        if remote:
            sys.exit(f"{deck} still loads from the network: {remote}")
        print(f"wrote {deck.relative_to(ROOT) if deck.is_relative_to(ROOT) else deck}")
    if not (args.out / VENDOR).exists():
        print(f"note: {args.out / VENDOR} is missing; run without --no-fetch once, or the decks will not render")


if __name__ == "__main__":
    main()
