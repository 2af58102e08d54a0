"""Theme assets, pure (no database, no request): colour and logo-URL values, the custom-CSS
policy, logo files (PNG, JPEG, SVG) and the generated stylesheet.

Custom CSS is refused, never rewritten: the tenant sees why and fixes it. It is tokenized with
tinycss2, which decodes CSS escapes (`\\3c`, `\\65`) in names, strings and URLs as browsers do,
and the whole token tree is walked (blocks, function arguments, at-rule preludes); so is the
CSS with comments and line continuations removed, which lenient parsers read through
(`expr/**/ession(`). It is refused when it holds `<` anywhere (which could end a <style>
element), the function `expression()`, the at-rule `@import`, the properties `behavior` and
`-moz-binding` (vendor prefixes aside), a url()/src()/image-set()/image() target whose scheme is
not http or https or that var() would supply, a script URL (`javascript:`...) even in a string,
a string broken by a line break, a malformed url(), an unmatched `)`, `]` or `}`, anything left
open at its end, control characters, or more than CUSTOM_CSS_MAX_CHARS characters. On output
the stylesheet checks it again (a row written before a rule existed, or behind the services'
back, is left out) and escapes `<`, so it stays safe even when inlined in a <style> element.

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
from itertools import groupby
from urllib.parse import urlsplit

import tinycss2
from defusedxml import DefusedXmlException
from defusedxml.ElementTree import DefusedXMLParser
from django.core.exceptions import ValidationError
from django.core.validators import URLValidator
from django.utils.cache import parse_etags
from PIL import Image

CUSTOM_CSS_MAX_CHARS = 20_000
LOGO_URL_MAX_CHARS = 500
LOGO_MAX_SIDE_PX = 2048
# How deep an SVG logo's elements may nest (drawings exported by editors stay within a dozen or
# two levels).
SVG_MAX_DEPTH = 64
CSS_URL_SCHEMES = frozenset({"http", "https"})


class ThemeAssetError(ValueError):
    """A value or file refused; the message is for the client."""


# Colours -------------------------------------------------------------------------------------

_HEX_COLOR = re.compile(r"#([0-9a-fA-F]{3}|[0-9a-fA-F]{6})")
# What the API's schema states (the canonical spelling; surrounding spaces are trimmed too).
HEX_COLOR_PATTERN = f"^{_HEX_COLOR.pattern}$"


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

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f]")

_LESS_THAN = "'<' is not allowed (it could close the <style> element, e.g. </style>)."
# @import loads another stylesheet, past every check. @charset and @namespace pass: neither loads
# nor runs anything (a namespace URL is a name, never fetched; a url() in it is checked like any
# other), and after the generated :root rule, where the custom CSS goes, browsers ignore both.
# Sass writes `@charset "UTF-8";` first in its output.
_IMPORT = "@import is not allowed; put the rules in the custom CSS itself."
_EXPRESSION = "expression() is not allowed."
_BROKEN_STRING = "A string is broken by a line break"
# Functions whose arguments are fetched as URLs, vendor prefixes aside: url() with a quoted
# target (an unquoted one is a single URL token), src(), image-set() and image().
_URL_FUNCTIONS = frozenset({"url", "src", "image-set", "image"})
# Functions replaced by a value only when the page is styled. As an argument of a URL function
# they would hide its target from the check: `--u: "data:..."; image: image-set(var(--u) 1x)`.
_SUBSTITUTIONS = frozenset({"var", "env", "attr", "if", "inherit"})
_SCRIPT_SCHEMES = ("javascript:", "vbscript:", "livescript:")
# Properties that run script, by their name without a vendor prefix: IE behaviours
# (`behavior: url(x.htc)`, `-ms-behavior`) and Mozilla's XBL bindings (`-moz-binding`).
_SCRIPT_PROPERTIES = {"behavior": "IE behaviours run script", "binding": "XBL bindings run script"}
_CLOSERS = {"() block": "')'", "[] block": "']'", "{} block": "'}'", "function": "')'"}
_UNMATCHED = frozenset({")", "]", "}"})
# Appended to the CSS as written before tokenizing it: tinycss2, like a browser, closes whatever
# is open at the end without a word, so the CSS ends inside a comment, string, url() or block
# exactly when this `;` does not come out at the top level. Anywhere else it is inert.
_END_PROBE = " ;"
# What a URL parser strips from both ends of a URL: C0 controls and space.
_URL_TRIM = "".join(chr(code) for code in range(0x21))


@dataclass(frozen=True)
class _Reading:
    """One way of reading the CSS: its text, as tinycss2 preprocesses it (line breaks as `\\n`,
    so lines and columns of tokens point into it), and its component values."""

    text: str
    tokens: list


# Python refuses to turn a string of more than 4,300 digits into an integer, which tinycss2 does
# for every integer token: such CSS cannot be read, so it is refused (no stylesheet needs it).
_UNREADABLE = "The CSS holds a number too long to read."


class _UnreadableCSS(Exception):
    pass


def _read(css: str) -> _Reading:
    text = css.replace("\r\n", "\n").replace("\r", "\n").replace("\f", "\n")
    try:
        return _Reading(text, tinycss2.parse_component_value_list(text))
    except ValueError:
        raise _UnreadableCSS(_UNREADABLE) from None


def strip_css_comments(css: str) -> str:
    """`css` without its `/* ... */` comments (an unterminated one runs to the end), removed as
    text wherever they are, inside strings and url() too: how a lenient parser that ignores
    comments between the characters of a name reads `expr/**/ession(` or `@im/**/port`."""
    kept, position = [], 0
    while (start := css.find("/*", position)) != -1:
        kept.append(css[position:start])
        end = css.find("*/", start + 2)
        if end == -1:
            return "".join(kept)
        position = end + 2
    kept.append(css[position:])
    return "".join(kept)


def _walk(tokens: list) -> Iterator[tuple]:
    """Every component value of `tokens` in source order, recursing into blocks and function
    arguments (rule and at-rule preludes, their contents and declarations are all made of them),
    each as (the function or block it is in or None, its siblings, its index). Iterative: how
    deep blocks nest is the tenant's choice. Component values rather than tinycss2's rules and
    declarations: its rule parser drops what it cannot make one of (a prelude with no block at
    the end, an invalid declaration), which a browser's recovery may read differently."""
    stack = [(None, tokens, 0)]
    while stack:
        parent, siblings, index = stack.pop()
        if index == len(siblings):
            continue
        stack.append((parent, siblings, index + 1))
        token = siblings[index]
        yield parent, siblings, index
        if token.type == "function":
            stack.append((token, token.arguments, 0))
        elif token.type in _CLOSERS:
            stack.append((token, token.content, 0))


def _next_significant(siblings: list, index: int):
    for following in range(index + 1, len(siblings)):
        if siblings[following].type not in ("whitespace", "comment"):
            return siblings[following]
    return None


def _unprefixed(name: str) -> str:
    """`name` without a vendor prefix: `-webkit-image-set` -> `image-set`. Custom properties and
    functions (`--x`) are left as they are."""
    if name.startswith("-") and not name.startswith("--"):
        return name[1:].partition("-")[2]
    return name


def _is_url_function(token) -> bool:
    return (
        token is not None
        and token.type == "function"
        and _unprefixed(token.lower_name) in _URL_FUNCTIONS
    )


def _decoded(token) -> str:
    """The text of `token` with its CSS escapes decoded by the tokenizer (`\\3c` is `<`)."""
    if token.type == "function":
        return token.name
    if token.type == "dimension":
        return token.unit
    if token.type in ("ident", "at-keyword", "hash", "string", "url"):
        return token.value
    return ""


def _url_scheme(target: str) -> str | None:
    """The scheme of `target`, lowercased, or None when it is relative: as URL parsers read it,
    an ASCII letter then letters, digits, `+`, `-` or `.` up to the first `:`."""
    head, colon, _ = target.partition(":")
    starts_with_letter = head[:1].isascii() and head[:1].isalpha()
    scheme_chars = all(char.isascii() and (char.isalnum() or char in "+-.") for char in head)
    if colon and starts_with_letter and scheme_chars:
        return head.lower()
    return None


def _script_scheme(text: str) -> str | None:
    compact = "".join(text.split()).lower()
    return next((scheme for scheme in _SCRIPT_SCHEMES if scheme in compact), None)


def _target_problem(where: str, target: str, *, fragments_only: bool) -> str | None:
    """Why the URL `target` (escapes decoded) of `where` is refused, or None. Relative and
    http(s) targets pass; only same-file `#fragment` targets when `fragments_only`. URL parsers
    drop tabs and line breaks anywhere (`java\\9script:` is `javascript:`) and controls and
    spaces at the ends; every whitespace is dropped here, to stay on the safe side."""
    compact = "".join(target.split()).strip(_URL_TRIM)
    scheme = _url_scheme(compact)
    if scheme is not None and scheme not in CSS_URL_SCHEMES:
        return f"{where}: {scheme}: URLs are not allowed (only http, https and relative URLs)."
    if fragments_only and not compact.startswith("#"):
        return f"{where}: the reference {target[:60]!r} is external (only #id in the same file)."
    script = _script_scheme(compact)
    if script:
        return f"{where}: {script} is not allowed anywhere in a URL."
    return None


def _bad_url_target(reading: _Reading, error, line_starts: list[int]) -> str:
    """The target a lenient parser would take from the bad url() that `error` reports (an
    unquoted URL holding a space, quote or parenthesis: `url(javascript:alert(1))`, which old
    IE ran): its source up to the first unescaped `)`, quoted and decoded by the tokenizer as a
    string. The CSS is refused as malformed anyway; this names what it would have loaded."""
    text = reading.text
    start = text.index("(", line_starts[error.source_line - 1] + error.source_column - 1) + 1
    body, escaped = [], False
    for char in text[start:]:
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ")":
            break
        elif char == '"':
            char = '\\"'
        elif char == "\n":
            char = " "
        body.append(char)
    if escaped:
        body.append(" ")
    string = tinycss2.parse_component_value_list('"' + "".join(body) + '"')[0]
    return string.value if string.type == "string" else ""


def _forbidden(reading: _Reading, *, fragments_only: bool) -> Iterator[str]:
    """What the policy refuses in one reading of the CSS, token by token."""
    line_starts: list[int] = []
    for parent, siblings, index in _walk(reading.tokens):
        token = siblings[index]
        kind = token.type
        if "<" in _decoded(token):
            yield _LESS_THAN
        if kind == "at-keyword" and token.lower_value == "import":
            yield _IMPORT
        elif kind == "function":
            if token.lower_name == "expression":
                yield _EXPRESSION
            if _is_url_function(token):
                yield from _hidden_targets(token)
        elif kind == "ident":
            following = _next_significant(siblings, index)
            # IE also ran `expression (...)`, with a space before the parenthesis.
            if token.lower_value == "expression" and getattr(following, "type", "") == "() block":
                yield _EXPRESSION
            why = _SCRIPT_PROPERTIES.get(_unprefixed(token.lower_value))
            if why and following == ":":
                yield f"{token.lower_value}: is not allowed ({why})."
        elif kind == "url" or (kind == "error" and token.kind == "bad-url"):
            if kind == "url":
                target = token.value
            else:
                if not line_starts:
                    line_starts = [0] + [at + 1 for at, c in enumerate(reading.text) if c == "\n"]
                target = _bad_url_target(reading, token, line_starts)
            problem = _target_problem("url()", target, fragments_only=fragments_only)
            if problem:
                yield problem
        elif kind == "string" and _is_url_function(parent):
            where = f"{parent.lower_name}()"
            problem = _target_problem(where, token.value, fragments_only=fragments_only)
            if problem:
                yield problem
        elif kind == "string":
            # A string elsewhere is text (content, font names), but a script URL in one has no
            # use but to end up as a URL (legacy IE filters, a custom property fed to var()).
            script = _script_scheme(token.value)
            if script:
                yield f"{script} is not allowed, even in a string."


def _hidden_targets(function) -> Iterator[str]:
    for argument in function.arguments:
        if argument.type == "function" and (
            argument.lower_name in _SUBSTITUTIONS or argument.lower_name.startswith("--")
        ):
            yield (
                f"{function.lower_name}(): {argument.lower_name}() is not allowed in it (the URL "
                "it would give cannot be checked); write the URL itself."
            )


def _syntax_problems(tokens: list) -> Iterator[str]:
    """The parse errors refused, in the CSS as written (tokenized with _END_PROBE after it): a
    token the tokenizer had to drop (bad string, bad url) cannot be checked as it is, and parsers
    recover from it differently; unmatched closers and whatever is left open at the end would,
    were the CSS ever wrapped (in @layer, say) or followed by other CSS, close or swallow what is
    not the tenant's."""
    closers = []
    node = tokens[-1]
    while node != ";":
        if node.type == "comment":
            closers.append("'*/'")
            break
        if node.type == "error":
            closers.append("a closing quote" if node.kind == "eof-in-string" else "')'")
            break
        closers.append(_CLOSERS[node.type])
        node = (node.arguments if node.type == "function" else node.content)[-1]
    lines: dict[str, list[int]] = {}
    for _parent, siblings, index in _walk(tokens):
        token = siblings[index]
        # The error the end is open in is named with the closers below.
        if token.type == "error" and token is not node:
            lines.setdefault(token.kind, []).append(token.source_line)
    for kind, found in lines.items():
        # The first one, and how many there are: one message each, however many.
        where = f"line {found[0]}" + (f" and {len(found) - 1} more" if len(found) > 1 else "")
        if kind == "bad-string":
            yield f"{_BROKEN_STRING} ({where}); write \\a for one in a string."
        elif kind == "bad-url":
            yield (
                f"A malformed url() ({where}): a space, quote, parenthesis or control character "
                "in an unquoted URL; put the URL in quotes."
            )
        elif kind in _UNMATCHED:
            yield f"An unmatched {kind!r} is not allowed ({where})."
    if closers:
        runs = [(closer, len(list(run))) for closer, run in groupby(reversed(closers))]
        needed = " then ".join(f"{closer} x{n}" if n > 1 else closer for closer, n in runs)
        yield f"The CSS ends with something left open: it needs {needed} at the end."


def css_problems(css: str, *, fragments_only: bool = False) -> list[str]:
    """Every reason to refuse `css` (empty when it is acceptable).

    The CSS is tokenized by tinycss2, which decodes escapes in names, strings and URLs as
    browsers do, and its token tree walked. So is the CSS without comments and line
    continuations (`expr/**/ession(`, `exp\\<newline>ression(`: lenient parsers joined them), and,
    when a string is broken by a line break, that CSS without line breaks (a lenient parser
    keeps the string and URL parsers drop line breaks: the CSS is refused for the break anyway,
    this names what the string holds). `<` is refused in the text itself too, wherever it is:
    an HTML parser ends a <style> element at `</style>` whatever a CSS tokenizer makes of it."""
    return _css_problems(css, fragments_only=fragments_only, syntax=True)


def _css_problems(css: str, *, fragments_only: bool, syntax: bool) -> list[str]:
    """css_problems(), without the parse errors (_syntax_problems) unless `syntax`."""
    problems: list[str] = []

    def add(message: str) -> None:
        if message not in problems:
            problems.append(message)

    if len(css) > CUSTOM_CSS_MAX_CHARS:
        # Refused whatever it holds: not worth tokenizing.
        return [f"Custom CSS is limited to {CUSTOM_CSS_MAX_CHARS} characters (got {len(css)})."]
    if _CONTROL.search(css):
        add("Control characters are not allowed.")
    if "<" in css:
        add(_LESS_THAN)
    try:
        as_written = _read(css + _END_PROBE)
        parse_errors = list(_syntax_problems(as_written.tokens))
        readings = [as_written]
        joined = strip_css_comments(as_written.text).replace("\\\n", "")
        if joined != as_written.text:
            readings.append(_read(joined))
        if any(problem.startswith(_BROKEN_STRING) for problem in parse_errors):
            readings.append(_read(joined.replace("\n", "")))
    except _UnreadableCSS as unreadable:
        add(str(unreadable))
        return problems
    for reading in readings:
        for message in _forbidden(reading, fragments_only=fragments_only):
            add(message)
    if syntax:
        for message in parse_errors:
            add(message)
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
        # What makes it unsafe leaves it out; a parse error alone (a row stored before those
        # were refused: a last `}` missing, say) does not: it comes last and can swallow nothing.
        if _css_problems(theme.custom_css, fragments_only=False, syntax=False):
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


# Presentation attributes (`fill="url(#g)"`) are checked as text: every url() in them must point
# inside the file.
_URL_FUNCTION = re.compile(r"(?:url|src)\(")
_WHITESPACE = re.compile(r"\s+")


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


def _deeper_than(root: ET.Element, limit: int) -> bool:
    """Whether elements nest more than `limit` deep under `root`. Iterative: the sanitising
    walk and ElementTree's serializer recurse once per level, and a logo of nested `<g>`
    within the size limit is tens of thousands deep."""
    stack = [(root, 1)]
    while stack:
        element, depth = stack.pop()
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in element)
    return False


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
    if _deeper_than(root, SVG_MAX_DEPTH):
        raise ThemeAssetError(f"An SVG logo may nest its elements at most {SVG_MAX_DEPTH} deep.")
    _sanitise_svg_element(root, "svg")
    _sanitise_svg_tree(root)
    # Every element left is in the SVG namespace: write it as the default namespace.
    for element in root.iter():
        element.tag = _split(element.tag)[1]
    root.set("xmlns", SVG_NS)
    body = ET.tostring(root, encoding="unicode")
    content = ('<?xml version="1.0" encoding="UTF-8"?>\n' + body).encode()
    return Logo("svg", "svg", "image/svg+xml", content)
