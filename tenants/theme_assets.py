"""Theme assets, pure (no database, no request): colour and logo-URL values, the custom-CSS
policy, logo files (PNG, JPEG, SVG) and the generated stylesheet.

Custom CSS is refused, never rewritten: the tenant sees why and fixes it. What is checked is
the CSS as a browser would read it: comments removed and CSS escapes (`\\3c`, `\\65`) decoded,
in both orders, each also with all whitespace removed. It is refused when it holds `<` (which
could end a <style> element), `expression(`, `javascript:`, `vbscript:`, `behavior:`,
`-moz-binding`, any `@import`, a `url()`/`src()`/`image-set()` target whose scheme is not http
or https, control characters, or more than CUSTOM_CSS_MAX_CHARS characters. On output the
stylesheet checks it again (a row written before a rule existed, or behind the services' back,
is left out) and escapes `<`, so it stays safe even when inlined in a <style> element.

Logos are recognised by their content, never by their name or declared type: PNG and JPEG are
opened by Pillow (only those two decoders), their size checked from the header before any
pixel is decoded, then verified and fully decoded; the stored bytes are the uploaded ones.
SVG is parsed with defusedxml (no DTD, no entities, no external references) and refused when it
holds anything active or external: elements outside an allow-list of drawing elements
(<script>, <foreignObject>, <a>, <image>, animation, XHTML...), event-handler attributes,
references (`href`, `url()`) other than to a fragment of the same file, `javascript:`
anywhere, processing instructions, or a <style> that fails the CSS policy. Comments, <metadata>
and editor (Inkscape, Sodipodi) markup are dropped, and the stored file is the re-serialised
tree, so nothing the checks did not see is kept.
"""

import hashlib
import io
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import DefusedXMLParser
from django.core.exceptions import ValidationError
from django.core.validators import URLValidator
from django.utils.cache import parse_etags
from PIL import Image

CUSTOM_CSS_MAX_CHARS = 20_000
LOGO_URL_MAX_CHARS = 500
LOGO_MAX_SIDE_PX = 2048
CSS_URL_SCHEMES = frozenset({"http", "https"})


class ThemeAssetError(ValueError):
    """A value or file refused; the message is for the client."""


# Colours -------------------------------------------------------------------------------------

_HEX_COLOR = re.compile(r"#([0-9a-fA-F]{3}|[0-9a-fA-F]{6})")


def normalize_color(value) -> str:
    """`#rrggbb` or `#rgb`, any case -> lowercase `#rrggbb`; anything else is refused."""
    text = value.strip() if isinstance(value, str) else ""
    match = _HEX_COLOR.fullmatch(text)
    if match is None:
        raise ThemeAssetError("Enter a hex colour: #rrggbb or #rgb, e.g. #2563eb.")
    digits = match.group(1).lower()
    if len(digits) == 3:
        digits = "".join(digit * 2 for digit in digits)
    return f"#{digits}"


def hex_to_rgb(color: str) -> tuple[int, int, int]:
    color = normalize_color(color)
    return int(color[1:3], 16), int(color[3:5], 16), int(color[5:7], 16)


# Logo URL ------------------------------------------------------------------------------------

_url_validator = URLValidator(schemes=sorted(CSS_URL_SCHEMES))


def normalize_logo_url(value) -> str:
    """An absolute http(s) URL without credentials, or "" (no external logo)."""
    text = value.strip() if isinstance(value, str) else ""
    if not text:
        return ""
    if len(text) > LOGO_URL_MAX_CHARS:
        raise ThemeAssetError(f"The logo URL is longer than {LOGO_URL_MAX_CHARS} characters.")
    try:
        _url_validator(text)
    except ValidationError:
        raise ThemeAssetError("Enter an absolute http or https URL for the logo.") from None
    if "@" in urlsplit(text).netloc:
        raise ThemeAssetError("The logo URL must not carry a user name or password.")
    return text


# Custom CSS ----------------------------------------------------------------------------------

_COMMENT = re.compile(r"/\*.*?(?:\*/|\Z)", re.S)
# A CSS escape: up to six hex digits and one optional whitespace, an escaped newline (a line
# continuation, removed), or any other escaped character (itself).
_ESCAPE = re.compile(r"\\(?:([0-9a-fA-F]{1,6})(?:\r\n|[ \t\n\r\f])?|(\r\n|[\n\r\f])|(.))", re.S)
_WHITESPACE = re.compile(r"\s+")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f]")
_URL_FUNCTION = re.compile(r"(?:url|src)\(")
_IMAGE_SET = re.compile(r"image-set\(")
_QUOTED = re.compile(r"\"([^\"]*)\"|'([^']*)'")
_SCHEME = re.compile(r"([a-z][a-z0-9+.\-]*):")
_FORBIDDEN = (
    ("expression(", "expression() is not allowed."),
    ("javascript:", "javascript: URLs are not allowed."),
    ("vbscript:", "vbscript: URLs are not allowed."),
    ("livescript:", "livescript: URLs are not allowed."),
    ("behavior:", "behavior: is not allowed."),
    ("-moz-binding", "-moz-binding is not allowed."),
    ("@import", "@import is not allowed; put the rules in the custom CSS itself."),
)


def _decode_escape(match: re.Match) -> str:
    hex_digits, _newline, char = match.groups()
    if hex_digits is not None:
        code = int(hex_digits, 16)
        if code == 0 or code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
            return "\ufffd"
        return chr(code)
    return char or ""


def decode_css_escapes(css: str) -> str:
    return _ESCAPE.sub(_decode_escape, css)


def strip_css_comments(css: str) -> str:
    return _COMMENT.sub("", css)


def _readings(css: str) -> Iterator[str]:
    """The ways a browser could read `css`, lowercased: as written, comments out then escapes
    decoded, escapes decoded then comments out; each also with every whitespace removed (URL
    parsers drop tabs and newlines: `java\\9script:` is `javascript:`)."""
    for text in (
        css,
        decode_css_escapes(strip_css_comments(css)),
        strip_css_comments(decode_css_escapes(css)),
    ):
        lowered = text.lower()
        yield lowered
        yield _WHITESPACE.sub("", lowered)


def _call_arguments(text: str, opening: re.Pattern) -> Iterator[str]:
    """The argument text of every call of a function matched by `opening` (nesting-aware)."""
    for match in opening.finditer(text):
        depth, start = 1, match.end()
        position = start
        while position < len(text) and depth:
            depth += {"(": 1, ")": -1}.get(text[position], 0)
            position += 1
        yield text[start : position - 1 if depth == 0 else position]


def _unquote(argument: str) -> str:
    argument = argument.strip()
    if len(argument) >= 2 and argument[0] == argument[-1] and argument[0] in "\"'":
        return argument[1:-1].strip()
    return argument


def _refused_reference(target: str, *, fragments_only: bool) -> str | None:
    """Why a url() target is refused, or None. Relative and http(s) targets pass (only
    same-file `#fragment` targets when `fragments_only`)."""
    if fragments_only:
        return None if target.startswith("#") else f"the reference {target[:60]!r} is external"
    scheme = _SCHEME.match(target)
    if scheme and scheme.group(1) not in CSS_URL_SCHEMES:
        return f"{scheme.group(1)}: URLs are not allowed (only http, https and relative)"
    return None


def _url_targets(reading: str) -> Iterator[str]:
    for argument in _call_arguments(reading, _URL_FUNCTION):
        yield _unquote(argument)
    for argument in _call_arguments(reading, _IMAGE_SET):
        for double, single in _QUOTED.findall(argument):
            yield (double or single).strip()


def css_problems(css: str, *, fragments_only: bool = False) -> list[str]:
    """Every reason to refuse `css` (empty when it is acceptable)."""
    problems: list[str] = []

    def add(message: str) -> None:
        if message not in problems:
            problems.append(message)

    if len(css) > CUSTOM_CSS_MAX_CHARS:
        add(f"Custom CSS is limited to {CUSTOM_CSS_MAX_CHARS} characters (got {len(css)}).")
    if _CONTROL.search(css):
        add("Control characters are not allowed.")
    for reading in _readings(css):
        if "<" in reading:
            add("'<' is not allowed (it could close the <style> element, e.g. </style>).")
        for needle, message in _FORBIDDEN:
            if needle in reading:
                add(message)
        for target in _url_targets(reading):
            reason = _refused_reference(target, fragments_only=fragments_only)
            if reason:
                add(f"url(): {reason}.")
    return problems


def validate_custom_css(css: str) -> str:
    """`css` when it passes the custom-CSS policy; else ThemeAssetError naming what was refused."""
    if not isinstance(css, str):
        raise ThemeAssetError("Custom CSS must be text.")
    problems = css_problems(css)
    if problems:
        raise ThemeAssetError("Custom CSS refused: " + " ".join(problems))
    return css


def escape_for_style_element(css: str) -> str:
    """Defence in depth for CSS that may be inlined in HTML: `<` as the CSS escape `\\3c `."""
    return css.replace("<", "\\3c ")


# Stylesheet ----------------------------------------------------------------------------------


def _css_string(value: str) -> str:
    """A double-quoted CSS string holding `value`, with quotes, backslashes, `<` and line breaks
    escaped."""
    escaped = "".join(
        f"\\{ord(char):x} " if char in '"\\<\n\r\f' or ord(char) < 0x20 else char for char in value
    )
    return f'"{escaped}"'


@dataclass(frozen=True)
class StylesheetInput:
    """What the stylesheet is made of; the view fills it from the theme (or the defaults)."""

    slug: str
    primary_color: str
    secondary_color: str
    accent_color: str
    default_colors: tuple[str, str, str]
    logo_url: str = ""
    custom_css: str = ""


def render_stylesheet(theme: StylesheetInput) -> str:
    """The tenant's stylesheet: `:root` custom properties, then the custom CSS (last, so an
    unterminated comment or block in it can swallow nothing of ours)."""
    lines = [
        f"/* Theme of {theme.slug}: generated by the control plane. */",
        ":root {",
    ]
    colors = zip(
        ("primary", "secondary", "accent"),
        (theme.primary_color, theme.secondary_color, theme.accent_color),
        theme.default_colors,
        strict=True,
    )
    for role, color, default in colors:
        try:
            color = normalize_color(color)
        except ThemeAssetError:
            color = default
        red, green, blue = hex_to_rgb(color)
        lines.append(f"  --cp-{role}-color: {color};")
        lines.append(f"  --cp-{role}-color-rgb: {red}, {green}, {blue};")
    if urlsplit(theme.logo_url).scheme.lower() in CSS_URL_SCHEMES:
        lines.append(f"  --cp-logo-url: url({_css_string(theme.logo_url)});")
    else:
        lines.append("  --cp-logo-url: none;")
    lines.append("}")
    if theme.custom_css.strip():
        if css_problems(theme.custom_css):
            lines.append("/* Custom CSS left out: it does not pass the custom-CSS policy. */")
        else:
            lines.append("/* Custom CSS */")
            lines.append(escape_for_style_element(theme.custom_css))
    return "\n".join(lines) + "\n"


def stylesheet_etag(body: str) -> str:
    """A strong ETag: a hash of the exact body."""
    return '"' + hashlib.sha256(body.encode()).hexdigest()[:32] + '"'


def etag_matches(if_none_match: str, etag: str) -> bool:
    """Whether an If-None-Match header value matches `etag` (weak comparison, RFC 9110:
    `W/"x"` matches `"x"`; `*` matches any current representation; lists are comma-separated)."""
    tags = parse_etags(if_none_match or "")
    if tags == ["*"]:
        return True
    return etag.removeprefix("W/") in {tag.removeprefix("W/") for tag in tags}


# Logos ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Logo:
    """A logo that passed inspection: what to store and what it is."""

    format: str  # png, jpeg, svg
    extension: str
    content_type: str
    content: bytes
    width: int | None = None
    height: int | None = None


_RASTER = {
    "PNG": ("png", "png", "image/png"),
    "JPEG": ("jpeg", "jpg", "image/jpeg"),
}
_KNOWN_SIGNATURES = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff")
_ACCEPTED = "The logo must be a PNG, JPEG or SVG image."


def inspect_logo(data: bytes, *, max_bytes: int) -> Logo:
    """The logo in `data`, recognised by its content; ThemeAssetError when refused."""
    if not data:
        raise ThemeAssetError("The logo file is empty.")
    if len(data) > max_bytes:
        raise ThemeAssetError(logo_too_large_message(max_bytes))
    if data.startswith(_KNOWN_SIGNATURES):
        return _inspect_raster(data)
    if data.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"<"):
        return _inspect_svg(data)
    raise ThemeAssetError(_ACCEPTED)


def logo_too_large_message(max_bytes: int) -> str:
    size = f"{max_bytes // 1024} KiB" if max_bytes % 1024 == 0 else f"{max_bytes} bytes"
    return f"The logo is larger than {size}."


def _inspect_raster(data: bytes) -> Logo:
    formats = tuple(_RASTER)
    try:
        with Image.open(io.BytesIO(data), formats=formats) as image:
            found, (width, height) = image.format, image.size
            # From the header, before any pixel is decoded: no decompression bombs.
            if max(width, height) > LOGO_MAX_SIDE_PX or min(width, height) < 1:
                raise ThemeAssetError(
                    f"The logo must be at most {LOGO_MAX_SIDE_PX}x{LOGO_MAX_SIDE_PX} pixels "
                    f"(got {width}x{height})."
                )
            image.verify()
        with Image.open(io.BytesIO(data), formats=formats) as image:
            image.load()
    except ThemeAssetError:
        raise
    except Exception:  # any decoder failure on untrusted bytes is a refusal, whatever its type
        raise ThemeAssetError(f"{_ACCEPTED} This file is damaged or not an image.") from None
    fmt, extension, content_type = _RASTER[found]
    return Logo(fmt, extension, content_type, data, width, height)


SVG_NS = "http://www.w3.org/2000/svg"
XLINK_NS = "http://www.w3.org/1999/xlink"
XML_NS = "http://www.w3.org/XML/1998/namespace"
# Editor bookkeeping, dropped (elements with their content, and attributes).
_EDITOR_NAMESPACES = frozenset(
    {
        "http://www.inkscape.org/namespaces/inkscape",
        "http://sodipodi.sourceforge.net/DTD/sodipodi-0.dtd",
    }
)
# Static drawing elements only: no scripting, links, embedding, external images or animation.
SVG_ELEMENTS = frozenset(
    {
        *("svg", "g", "defs", "symbol", "use", "title", "desc", "style"),
        *("path", "rect", "circle", "ellipse", "line", "polyline", "polygon"),
        *("text", "tspan", "textPath"),
        *("linearGradient", "radialGradient", "stop", "pattern", "clipPath", "mask", "marker"),
        *("filter", "feBlend", "feColorMatrix", "feComponentTransfer", "feComposite"),
        *("feConvolveMatrix", "feDiffuseLighting", "feDisplacementMap", "feDistantLight"),
        *("feDropShadow", "feFlood", "feFuncA", "feFuncB", "feFuncG", "feFuncR"),
        *("feGaussianBlur", "feMerge", "feMergeNode", "feMorphology", "feOffset"),
        *("fePointLight", "feSpecularLighting", "feSpotLight", "feTile", "feTurbulence"),
    }
)
_DROPPED_ELEMENTS = frozenset({"metadata"})
_XLINK_ATTRIBUTES = frozenset({"href", "title", "type", "role", "arcrole", "show", "actuate"})


def _split(name: str) -> tuple[str, str]:
    if name.startswith("{"):
        namespace, _, local = name[1:].partition("}")
        return namespace, local
    return "", name


def _check_attribute(element: str, name: str, value: str) -> None:
    namespace, local = _split(name)
    compact = _WHITESPACE.sub("", value).lower()
    where = f"attribute {local!r} of <{element}>"
    if namespace not in ("", XLINK_NS, XML_NS):
        raise ThemeAssetError(f"SVG {where} is in a namespace that is not allowed.")
    if namespace == XLINK_NS and local not in _XLINK_ATTRIBUTES:
        raise ThemeAssetError(f"SVG {where} is not allowed.")
    if local.lower().startswith("on"):
        raise ThemeAssetError(f"SVG event-handler attributes are not allowed ({local}).")
    if local == "href" and not value.strip().startswith("#"):
        raise ThemeAssetError(
            f"SVG {where} must point inside the file (#id); external and script references "
            "are not allowed."
        )
    for needle in ("javascript:", "vbscript:"):
        if needle in compact:
            raise ThemeAssetError(f"SVG {where}: {needle} is not allowed.")
    if local == "style":
        _check_svg_css(value, where)
    elif "url(" in compact:
        for target in _call_arguments(compact, _URL_FUNCTION):
            if not _unquote(target).startswith("#"):
                raise ThemeAssetError(f"SVG {where}: url() must point inside the file (#id).")


def _check_svg_css(css: str, where: str) -> None:
    problems = css_problems(css, fragments_only=True)
    if problems:
        raise ThemeAssetError(f"SVG {where}: " + " ".join(problems))


def _sanitise_svg_tree(parent: ET.Element) -> None:
    for child in list(parent):
        if child.tag is ET.Comment:
            parent.remove(child)
            continue
        if child.tag is ET.ProcessingInstruction:
            raise ThemeAssetError("SVG processing instructions are not allowed.")
        namespace, local = _split(child.tag)
        if namespace in _EDITOR_NAMESPACES or (namespace == SVG_NS and local in _DROPPED_ELEMENTS):
            parent.remove(child)
            continue
        if namespace != SVG_NS or local not in SVG_ELEMENTS:
            raise ThemeAssetError(f"SVG element <{local}> is not allowed.")
        _sanitise_svg_element(child, local)
        _sanitise_svg_tree(child)


def _sanitise_svg_element(element: ET.Element, local: str) -> None:
    for name in list(element.attrib):
        if _split(name)[0] in _EDITOR_NAMESPACES:
            del element.attrib[name]
        else:
            _check_attribute(local, name, element.attrib[name])
    if local == "style":
        _check_svg_css(element.text or "", "<style>")


def _inspect_svg(data: bytes) -> Logo:
    parser = DefusedXMLParser(
        target=ET.TreeBuilder(insert_comments=True, insert_pis=True),
        forbid_dtd=True,
        forbid_entities=True,
        forbid_external=True,
    )
    try:
        parser.feed(data)
        root = parser.close()
    except DefusedXmlException:
        raise ThemeAssetError(
            "SVG with a DOCTYPE, entities or external references is not allowed."
        ) from None
    except (ET.ParseError, ValueError, LookupError):
        raise ThemeAssetError(f"{_ACCEPTED} This SVG is not well-formed XML.") from None
    if root.tag != f"{{{SVG_NS}}}svg":
        raise ThemeAssetError(
            f'{_ACCEPTED} An SVG logo\'s root element must be <svg xmlns="{SVG_NS}">.'
        )
    _sanitise_svg_element(root, "svg")
    _sanitise_svg_tree(root)
    # Every element left is in the SVG namespace: write it as the default namespace.
    for element in root.iter():
        element.tag = _split(element.tag)[1]
    root.set("xmlns", SVG_NS)
    body = ET.tostring(root, encoding="unicode")
    content = ('<?xml version="1.0" encoding="UTF-8"?>\n' + body).encode()
    return Logo("svg", "svg", "image/svg+xml", content)
