"""Documents to passages: each format, the token budget, content ids, and one line per unusable file."""

from __future__ import annotations

from pathlib import Path

from pypdf import PdfWriter
from pypdf.generic import DecodedStreamObject, DictionaryObject, NameObject

from library.datasets import context_id_for
from library.documents import approx_tokens, read_documents, token_counter

GUIDE = """# Glasswing marten

The glasswing marten is a small mammal found only in the cloud forests of Mount Ossebrand.

Adults weigh about 640 grams.

## Protection

The species is protected inside the Ossebrand Highlands Reserve.
"""


def _pdf(path: Path, lines: list[str]) -> Path:
    """A one-page PDF with ``lines`` as real text (Helvetica); no lines: a page without a text layer."""
    writer = PdfWriter()
    page = writer.add_blank_page(612, 792)
    if lines:
        font = DictionaryObject(
            {
                NameObject("/Type"): NameObject("/Font"),
                NameObject("/Subtype"): NameObject("/Type1"),
                NameObject("/BaseFont"): NameObject("/Helvetica"),
            }
        )
        fonts = DictionaryObject({NameObject("/F1"): writer._add_object(font)})
        page[NameObject("/Resources")] = DictionaryObject({NameObject("/Font"): fonts})
        shown = " 0 -14 Td ".join(f"({line}) Tj" for line in lines)
        stream = DecodedStreamObject()
        stream.set_data(f"BT /F1 12 Tf 72 720 Td {shown} ET".encode())
        page[NameObject("/Contents")] = writer._add_object(stream)
    writer.write(path)
    return path


def test_markdown_splits_on_headings_and_ids_are_content_hashes(tmp_path):
    (tmp_path / "marten.md").write_text(GUIDE)
    found = read_documents([tmp_path], max_tokens=200)
    assert found.problems == []
    assert [(p.title, p.text) for p in found.passages] == [
        (
            "Glasswing marten",
            "The glasswing marten is a small mammal found only in the cloud forests of Mount Ossebrand.\n\n"
            "Adults weigh about 640 grams.",
        ),
        ("Glasswing marten: Protection", "The species is protected inside the Ossebrand Highlands Reserve."),
    ]
    ids = [p.context_id for p in found.passages]
    assert ids == [context_id_for(p.title, p.text) for p in found.passages]
    assert found.documents == {str(tmp_path / "marten.md"): ids}
    # The same text read again, from another folder and file name, gets the same ids.
    other = tmp_path / "copy"
    other.mkdir()
    (other / "renamed.markdown").write_text(GUIDE)
    assert [p.context_id for p in read_documents([other], max_tokens=200).passages] == ids


def test_budget_packs_paragraphs_and_splits_a_long_one_on_sentences(tmp_path):
    sentences = [f"Sentence number {n} names the town of Ostrevane." for n in range(12)]
    (tmp_path / "long.txt").write_text(" ".join(sentences) + "\n\nA short closing paragraph.\n")
    found = read_documents([tmp_path / "long.txt"], max_tokens=40, count_tokens=approx_tokens)
    assert all(approx_tokens(p.text) <= 40 for p in found.passages)
    assert " ".join(p.text.replace("\n\n", " ") for p in found.passages) == " ".join(
        [*sentences, "A short closing paragraph."]
    )
    assert any("over the budget of 40: split on its sentences" in line for line in found.problems)
    assert found.passages[0].title == "long"  # no heading in plain text: the file's name


def test_html_and_pdf_are_read_as_text(tmp_path):
    (tmp_path / "page.html").write_text(
        "<html><body><h1>Orlanite</h1><p>Orlanite is a <b>violet</b> mineral found near "
        "<a href='x'>Varn Hollow</a>.</p><script>ignored()</script></body></html>"
    )
    _pdf(tmp_path / "report.pdf", ["The glasswing marten weighs 640 grams.", "It lives on Mount Ossebrand."])
    found = read_documents([tmp_path], max_tokens=200)
    assert found.problems == []
    by_title = {p.title: p.text for p in found.passages}
    assert by_title["Orlanite"] == "Orlanite is a violet mineral found near Varn Hollow."
    assert by_title["report"] == "The glasswing marten weighs 640 grams. It lives on Mount Ossebrand."


def test_unusable_files_are_one_line_each_and_the_others_go_on(tmp_path):
    (tmp_path / "good.md").write_text(GUIDE)
    (tmp_path / "empty.md").write_text("  \n")
    (tmp_path / "blob.txt").write_bytes(b"\x00\x01\x02binary")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    (tmp_path / "slides.pptx").write_bytes(b"PK")
    (tmp_path / ".hidden.md").write_text("# Secret\n\nnot read\n")
    _pdf(tmp_path / "scan.pdf", [])
    (tmp_path / "broken.pdf").write_bytes(b"%PDF-1.4 not really")
    found = read_documents([tmp_path, tmp_path / "missing.md"], max_tokens=200)
    assert {p.document for p in found.passages} == {str(tmp_path / "good.md")}
    problems = "\n".join(found.problems)
    assert len(found.problems) == 7, problems
    for name, why in [
        ("empty.md", "empty"),
        ("blob.txt", "binary"),
        ("latin1.txt", "not UTF-8"),
        ("slides.pptx", "unsupported file type .pptx"),
        ("scan.pdf", "without a text layer"),
        ("broken.pdf", "not a readable PDF"),
        ("missing.md", "no such file"),
    ]:
        assert any(name in line and why in line for line in found.problems), (name, problems)


def test_token_counter_uses_the_models_tokenizer(tiny_model_dir):
    count = token_counter(tiny_model_dir)
    assert count("The capital of France is Paris.") > 0
    assert count("word " * 50) > count("word " * 5)
