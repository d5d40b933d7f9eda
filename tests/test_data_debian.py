"""HTML extraction and the English-fallback filter of the debian-docs source, on hand-written pages.

No apt in the fast tests: the source runs end to end on .deb files built here with dpkg-deb, with
apt-get replaced by a stub. The real download is the slow test at the end.
"""

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from plasticlm.config import DataConfig, load_config
from plasticlm.data.corpus import build_corpus, corpus_info, iter_documents
from plasticlm.data.sources import debian
from plasticlm.data.text import blank_line_paragraphs, collapse_ws, decode_utf8, filter_paragraphs, html_paragraphs
from plasticlm.errors import DataError

PAGE = """<!DOCTYPE html><html><head><title>Title is chrome</title>
<script>var x = "no";</script><style>p {{ color: red }}</style></head>
<body><header><a>LibreOffice Help</a></header><aside><div>Contents</div></aside>
<div id="DisplayArea"><h1>{title}</h1>
<p>{p1}</p>
<div><p>{p2}<br>after&nbsp;break</p></div>
<ul><li>item <b>bold</b>  one</li><li>{common}</li></ul>
</div><footer><p>This page is: debug</p></footer></body></html>
"""


def _help_tree(root: Path, langdir: str, pages: dict[str, dict[str, str]]) -> Path:
    for rel, fields in pages.items():
        p = root / "usr/share/libreoffice/help" / langdir / "text" / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(PAGE.format(**fields), encoding="utf-8")
    return root


EN = {
    "shared/01/a.html": dict(title="Rows", p1="Sets the row height.", p2="Hides rows.", common="Choose Format - Rows."),
    "scalc/01/b.html": dict(title="Columns", p1="Sets the width.", p2="Hides rows.", common="Choose Format - Rows."),
}
# Vietnamese (escaped: ASCII-only sources): "Hang" (row), "Dat chieu cao cua hang." (set the row
# height), "Cot" (column), "An cot." (hide column), "Chon Dinh dang." (choose Format).
HANG, DAT, COT, AN, CHON = ("H\u00e0ng", "\u0110\u1eb7t chi\u1ec1u cao c\u1ee7a h\u00e0ng.", "C\u1ed9t",
                            "\u1ea8n c\u1ed9t.", "Ch\u1ecdn \u0110\u1ecbnh d\u1ea1ng.")
VI = {
    "shared/01/a.html": dict(title=HANG, p1=DAT, p2="Hides rows.", common="Choose Format - Rows."),
    "scalc/01/b.html": dict(title=COT, p1=DAT, p2=AN, common=CHON),
}


def test_html_paragraphs_drop_chrome_and_split_on_blocks():
    html = PAGE.format(title="T  i t l e", p1="one\n   two", p2="x", common="c")
    assert html_paragraphs(html) == ["T i t l e", "one two", "x", "after break", "item bold one", "c"]


def test_collapse_ws_unicode_spaces():
    assert collapse_ws("a\u00a0\u3000b \n\t c") == "a b c"


def test_filter_drops_reference_and_repeats():
    pages = [["a", "b", "a"], ["b", "c"], ["x"]]
    assert list(filter_paragraphs(pages, {"x"})) == [["a", "b"], ["c"], []]


def test_decode_utf8_counts_only_invalid_sequences():
    text, bad = decode_utf8("ok \ufffd ".encode() + b"\xff\xfe" + "\u00e9".encode())
    assert bad == 2 and text.count("\ufffd") == 3
    assert decode_utf8(b"fine") == ("fine", 0)


def test_blank_line_paragraphs():
    assert blank_line_paragraphs("a\nb\n\n  \n c \n\n\n") == ["a\nb", "c"]


def test_help_pages_sorted_and_english_fallback_filtered(tmp_path):
    en_pages = debian.help_pages(_help_tree(tmp_path / "en", "en-US", EN), workers=1)
    vi_pages = debian.help_pages(_help_tree(tmp_path / "vi", "vi", VI), workers=1)
    # sorted by path: scalc/... before shared/...
    assert en_pages[0][0] == "Columns" and vi_pages[0][0] == COT
    reference = frozenset(p for page in en_pages for p in page)
    stats: dict = {}
    docs = list(debian.page_documents(vi_pages, reference, stats))
    # "Hides rows." and "Choose Format - Rows." are untranslated (in English): dropped; the repeated
    # Vietnamese paragraph and "after break" / "item bold one" (also English) appear once or never.
    assert docs == ["\n".join([COT, DAT, AN, CHON]), HANG]
    assert stats["english_fallback_paragraphs"] == 2 * 2 + 1 + 1 and stats["pages"] == 2


def test_help_pages_errors_name_the_problem(tmp_path):
    with pytest.raises(DataError, match="expected one"):
        debian.help_pages(tmp_path, "language 'xx'")
    (tmp_path / "usr/share/libreoffice/help/xx/text").mkdir(parents=True)
    with pytest.raises(DataError, match="no help pages"):
        debian.help_pages(tmp_path, "language 'xx'")


def _deb(tmp_path: Path, name: str, langdir: str, pages: dict) -> Path:
    root = _help_tree(tmp_path / "build" / name, langdir, pages)
    (root / "DEBIAN").mkdir()
    (root / "DEBIAN/control").write_text(
        f"Package: {name}\nVersion: 1:1.0-1\nArchitecture: all\nMaintainer: t <t@example.org>\nDescription: test\n"
    )
    out = tmp_path / f"{name}.deb"
    subprocess.run(["dpkg-deb", "-Zgzip", "--build", str(root), str(out)], check=True, capture_output=True)
    return out


@pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="needs dpkg-deb")
def test_debian_source_end_to_end_with_stub_apt(tmp_path, home, monkeypatch):
    debs = {
        "libreoffice-help-en-us": _deb(tmp_path, "libreoffice-help-en-us", "en-US", EN),
        "libreoffice-help-vi": _deb(tmp_path, "libreoffice-help-vi", "vi", VI),
    }
    downloads = []
    monkeypatch.setattr(debian.DebianDocsSource, "_check_tools", lambda self: None)
    monkeypatch.setattr(debian.DebianDocsSource, "_resolve", lambda self, langs: {x: debian.candidates(x)[0]
                                                                                 for x in langs})

    def fake_download(self, packages):
        downloads.append(list(packages))
        return {p: debs[p] for p in packages}

    monkeypatch.setattr(debian.DebianDocsSource, "_download", fake_download)
    data = DataConfig(workers=1)
    m = build_corpus(data, ["vi"], progress=False)["vi"]
    assert downloads == [["libreoffice-help-en-us", "libreoffice-help-vi"]]  # English fetched for the filter
    assert m["provenance"]["package"] == "libreoffice-help-vi" and m["provenance"]["version"] == "1:1.0-1"
    assert list(iter_documents(Path(m["path"])))[1] == HANG
    first = m["sha256"]
    # Rebuild: same sha256; with English cached, only the Vietnamese package is fetched.
    build_corpus(data, ["en"], progress=False)
    downloads.clear()
    m2 = build_corpus(data, ["vi"], force=True, progress=False)["vi"]
    assert downloads == [["libreoffice-help-vi"]] and m2["sha256"] == first
    rows = corpus_info(data, ["en", "vi", "fr"])
    assert [r["built"] for r in rows] == [True, True, False]
    assert json.loads(Path(m2["path"]).with_name("manifest.json").read_text())["sha256"] == first


def test_no_apt_get_says_to_use_local_or_hf(home, monkeypatch):
    monkeypatch.setattr(debian.shutil, "which", lambda name: None)
    with pytest.raises(DataError, match="apt-get") as e:
        build_corpus(DataConfig(), ["en"], progress=False)
    assert "--source local" in str(e.value) and "--source hf" in str(e.value)


def test_empty_apt_lists_not_root_says_run_apt_get_update(home, monkeypatch):
    monkeypatch.setattr(debian.shutil, "which", lambda name: "/usr/bin/" + name)
    monkeypatch.setattr(debian.os, "geteuid", lambda: 1000)
    monkeypatch.setattr(debian, "_run", lambda cmd, cwd=None: subprocess.CompletedProcess(cmd, 0, "", ""))
    with pytest.raises(DataError, match="sudo apt-get update"):
        build_corpus(DataConfig(), ["de"], progress=False)


def test_empty_apt_lists_as_root_runs_update_once(home, monkeypatch):
    calls = []

    def fake_run(cmd, cwd=None):
        calls.append(cmd[:2])
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(debian.shutil, "which", lambda name: "/usr/bin/" + name)
    monkeypatch.setattr(debian.os, "geteuid", lambda: 0)
    monkeypatch.setattr(debian, "_run", fake_run)
    with pytest.raises(DataError, match="no Debian package for language"):
        build_corpus(DataConfig(), ["xx"], progress=False)
    assert calls == [["apt-cache", "show"], ["apt-get", "update"], ["apt-cache", "show"]]


@pytest.mark.slow
def test_real_debian_docs_build_is_reproducible(home):
    """Downloads the nine LibreOffice help packages with apt (about 28 MB) and builds them twice."""
    if shutil.which("apt-get") is None:
        pytest.skip("needs apt-get")
    cfg = load_config(None)
    langs = [*cfg.stream.languages, cfg.probe.language]
    first = build_corpus(cfg.data, langs, progress=False)
    for lang, m in first.items():
        assert m["bytes"] >= 1_000_000, lang
        assert m["provenance"]["version"]
    vi = first["vi"]["provenance"]
    assert vi["english_fallback_paragraphs"] > 0.3 * vi["paragraphs"]  # ~58% in data-sources.md
    again = build_corpus(cfg.data, langs, force=True, progress=False)
    assert {k: m["sha256"] for k, m in again.items()} == {k: m["sha256"] for k, m in first.items()}
