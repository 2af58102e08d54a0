"""The attachment policy: what a ticket accepts, decided from a file's content, never its name.

A file's type is recognised from its first bytes (`filetype`, magic numbers); a file with no
binary signature is text when it is UTF-8 without NUL bytes, unless it reads as markup (HTML,
SVG, XML), which a browser could run. Only ALLOWED types are kept; the answer is always the
type recognised, so `invoice.pdf` holding an executable is refused as an executable, and a
PNG named `notes.txt` is a PNG. Downloads are sent as attachments with
`X-Content-Type-Options: nosniff` (support.views), never rendered inline.
"""

import re
import unicodedata

import filetype

# Content type -> a description for the error message.
ALLOWED = {
    "image/png": "PNG image",
    "image/jpeg": "JPEG image",
    "image/gif": "GIF image",
    "image/webp": "WebP image",
    "application/pdf": "PDF document",
    "text/plain": "plain text (UTF-8)",
}
# How much of a file is read to recognise it.
HEAD_BYTES = 8192
_MARKUP = re.compile(
    rb"<\s*(!doctype|html|head|body|script|iframe|svg|object|embed|\?xml|meta|style|form)\b",
    re.IGNORECASE,
)
NAME_MAX = 200


def content_type_of(head: bytes, read_all) -> str:
    """The type of a file whose first bytes are `head`; `read_all()` gives its whole content
    when a text check needs it. `application/octet-stream` when unknown binary, `text/html`
    for markup."""
    kind = filetype.guess(head)
    if kind is not None:
        return kind.mime
    content = read_all()
    if b"\x00" in content:
        return "application/octet-stream"
    try:
        content.decode("utf-8")
    except UnicodeDecodeError:
        return "application/octet-stream"
    if _MARKUP.search(content[:HEAD_BYTES]):
        return "text/html"
    return "text/plain"


def clean_name(name: str) -> str:
    """The uploaded name as shown and offered on download: its last path segment (either
    slash), no control or format characters, at most NAME_MAX characters; "attachment" when
    nothing is left."""
    name = re.split(r"[\\/]", name or "")[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C").strip(" .")
    return name[:NAME_MAX] or "attachment"
