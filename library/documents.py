"""A team's documents as passages: Markdown, plain text, HTML and PDF, split on headings and paragraphs.

Each passage is a context (C) whose id is :func:`library.datasets.context_id_for` of its title and text,
so the same text gets the same id whoever splits it: ``seal adapt`` splits the documents for the
teacher, the auditor splits them again for itself, and the two meet only through that id.

    >>> found = read_documents([Path("docs/")], max_tokens=200, count_tokens=approx_tokens)
    >>> found.passages[0].context().context_id, found.problems
    ('3f0c...', ['docs/logo.png: unsupported file type .png (supported: .htm .html .markdown .md .pdf .txt)'])

A file that cannot be used (missing, empty, binary, unsupported, a PDF without a text layer) is one line
in ``problems`` and the other documents go on; so is a paragraph longer than the budget (split on its
sentences) or a sentence longer than it (cut between words).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from library.datasets import context_id_for
from library.sentences import split_sentences
from protocol.messages import Context

TokenCounter = Callable[[str], int]

MARKDOWN_SUFFIXES = (".md", ".markdown")
TEXT_SUFFIXES = (".txt",)
HTML_SUFFIXES = (".html", ".htm")
PDF_SUFFIXES = (".pdf",)
SUPPORTED = tuple(sorted(MARKDOWN_SUFFIXES + TEXT_SUFFIXES + HTML_SUFFIXES + PDF_SUFFIXES))

_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")


class DocumentError(Exception):
    """One document that cannot be used; the message names the file and why."""


@dataclass(frozen=True)
class Passage:
    """One passage of a document: a context for the teacher, and what the auditor writes τ from."""

    document: str  # the document it came from, as named in messages and the ledger
    title: str
    text: str

    @property
    def context_id(self) -> str:
        """The content id: the same title and text give the same id in every role and run."""
        return context_id_for(self.title, self.text)

    def context(self) -> Context:
        """The passage as the teacher and the student see it (no questions)."""
        return Context(context_id=self.context_id, title=self.title, text=self.text)


@dataclass
class DocumentSet:
    """What was read: the passages in document order, the documents' passage ids, and one line per problem."""

    passages: list[Passage] = field(default_factory=list)
    documents: dict[str, list[str]] = field(default_factory=dict)  # document -> its passages' ids, in order
    problems: list[str] = field(default_factory=list)


def approx_tokens(text: str) -> int:
    """A tokenizer-free estimate: about 4 characters per token, as BPE tokenizers give on English prose."""
    return math.ceil(len(text) / 4)


def token_counter(model: str | None) -> TokenCounter:
    """Count tokens with ``model``'s tokenizer (no special tokens); :func:`approx_tokens` when ``model`` is None."""
    if model is None:
        return approx_tokens
    from library.models import load_tokenizer  # transformers only when a tokenizer is wanted

    tokenizer = load_tokenizer(model)
    return lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])


def read_documents(paths: Iterable[Path], max_tokens: int, count_tokens: TokenCounter = approx_tokens) -> DocumentSet:
    """Every supported file under ``paths`` (files, or folders walked in name order) as passages.

    A passage holds whole paragraphs of one section (a heading and what follows it) up to ``max_tokens``;
    a passage that repeats an earlier one (same title and text) is left out with a line.
    """
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be at least 1, got {max_tokens}")
    found = DocumentSet()
    seen: dict[str, str] = {}
    for path in _files(paths, found.problems):
        try:
            title, sections = parse_document(path)
        except DocumentError as exc:
            found.problems.append(str(exc))
            continue
        name = str(path)
        ids = []
        for heading, paragraphs in sections:
            passage_title = title if not heading or heading == title else f"{title}: {heading}"
            for text in _pack(paragraphs, max_tokens, count_tokens, f"{name} ({heading or title})", found.problems):
                passage = Passage(name, passage_title, text)
                if passage.context_id in seen:
                    earlier = seen[passage.context_id]
                    found.problems.append(f"{name}: a passage of '{passage_title}' repeats one of {earlier}, left out")
                    continue
                seen[passage.context_id] = name
                found.passages.append(passage)
                ids.append(passage.context_id)
        if ids:
            found.documents[name] = ids
        else:
            found.problems.append(f"{name}: no text to learn, skipped")
    return found


def parse_document(path: Path) -> tuple[str, list[tuple[str, list[str]]]]:
    """The document's title (its first heading, else its file name) and its sections as (heading, paragraphs)."""
    suffix = path.suffix.lower()
    if suffix in PDF_SUFFIXES:
        text, markdown = _pdf_text(path), False
    elif suffix in HTML_SUFFIXES:
        text, markdown = _html_markdown(_read_text(path)), True
    elif suffix in MARKDOWN_SUFFIXES + TEXT_SUFFIXES:
        text, markdown = _read_text(path), suffix in MARKDOWN_SUFFIXES
    else:
        raise DocumentError(f"{path}: unsupported file type {suffix or '(none)'} (supported: {' '.join(SUPPORTED)})")
    sections = _sections(text, markdown)
    headings = [h for h, _ in sections if h]
    return (headings[0] if headings else path.stem.replace("_", " ")), sections


# --------------------------------------------------------------------------- reading each format


def _files(paths: Iterable[Path], problems: list[str]) -> list[Path]:
    """The files named, and those under the folders named (hidden ones skipped), each once."""
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            files.extend(p for p in sorted(path.rglob("*")) if p.is_file() and not _hidden(p.relative_to(path)))
        elif path.is_file():
            files.append(path)
        else:
            problems.append(f"{path}: no such file or folder")
    return list(dict.fromkeys(files))


def _hidden(relative: Path) -> bool:
    return any(part.startswith(".") for part in relative.parts)


def _read_text(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DocumentError(f"{path}: cannot be read ({exc.strerror or exc}), skipped") from None
    if not data.strip():
        raise DocumentError(f"{path}: empty, skipped")
    if b"\0" in data:
        raise DocumentError(f"{path}: binary, not text (it holds NUL bytes), skipped")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DocumentError(f"{path}: not UTF-8 text (byte {exc.start}), skipped") from None


def _html_markdown(html: str) -> str:
    import html2text

    converter = html2text.HTML2Text()
    converter.ignore_links = converter.ignore_images = converter.ignore_emphasis = True
    converter.body_width = 0  # no hard wrapping: a paragraph stays one line
    return converter.handle(html)


def _pdf_text(path: Path) -> str:
    import logging

    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    try:
        empty = path.stat().st_size == 0
    except OSError as exc:
        raise DocumentError(f"{path}: cannot be read ({exc.strerror or exc}), skipped") from None
    if empty:
        raise DocumentError(f"{path}: empty, skipped")
    logging.getLogger("pypdf").setLevel(logging.ERROR)  # its warnings about odd files are not ours to print
    try:
        pages = [page.extract_text() or "" for page in PdfReader(path).pages]
    except (PyPdfError, ValueError, KeyError, OSError) as exc:
        raise DocumentError(f"{path}: not a readable PDF ({exc}), skipped") from None
    if not any(p.strip() for p in pages):
        raise DocumentError(f"{path}: PDF without a text layer (scanned pages?), skipped: run OCR on it first")
    return "\n\n".join(pages)


# --------------------------------------------------------------------------- splitting


def _sections(text: str, markdown: bool) -> list[tuple[str, list[str]]]:
    """(heading, paragraphs) in order; text before the first heading has the heading ''."""
    sections: list[tuple[str, list[str]]] = [("", [])]
    lines: list[str] = []

    def end_paragraph() -> None:
        if lines:
            sections[-1][1].append(("\n" if markdown else " ").join(lines))
            lines.clear()

    for raw in text.splitlines():
        line = raw.strip()
        heading = _HEADING.match(line) if markdown else None
        if heading:
            end_paragraph()
            sections.append((heading.group(2).strip(), []))
        elif line:
            lines.append(line if markdown else " ".join(line.split()))
        else:
            end_paragraph()
    end_paragraph()
    return [(h, ps) for h, ps in sections if ps]


def _pack(paragraphs: list[str], budget: int, count: TokenCounter, where: str, problems: list[str]) -> list[str]:
    """Whole paragraphs joined into passages of at most ``budget`` tokens; longer paragraphs split on sentences."""
    pieces: list[str] = []
    for paragraph in paragraphs:
        size = count(paragraph)
        if size <= budget:
            pieces.append(paragraph)
            continue
        problems.append(f"{where}: a paragraph of {size} tokens is over the budget of {budget}: split on its sentences")
        for sentence in split_sentences(paragraph):
            if count(sentence) <= budget:
                pieces.append(sentence)
            else:
                problems.append(
                    f"{where}: a sentence of {count(sentence)} tokens is over the budget: cut between words"
                )
                pieces.extend(_cut_words(sentence, budget, count))
    return _join(pieces, budget, count)


def _join(pieces: list[str], budget: int, count: TokenCounter) -> list[str]:
    passages: list[str] = []
    current: list[str] = []
    for piece in pieces:
        if current and count("\n\n".join([*current, piece])) > budget:
            passages.append("\n\n".join(current))
            current = []
        current.append(piece)
    if current:
        passages.append("\n\n".join(current))
    return passages


def _cut_words(sentence: str, budget: int, count: TokenCounter) -> list[str]:
    chunks: list[str] = []
    words: list[str] = []
    for word in sentence.split():
        if words and count(" ".join([*words, word])) > budget:
            chunks.append(" ".join(words))
            words = []
        words.append(word)
    if words:
        chunks.append(" ".join(words))
    return chunks
