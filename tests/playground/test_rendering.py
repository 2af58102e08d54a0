"""playground.rendering on its own: placeholders (bare names only), rendering with `{{`/`}}`
escapes and no second pass, and typed variable values with defaults and errors; plus property
tests (hypothesis) that any text either parses or raises TemplateError, and that rendering is
plain substitution, never attribute or index access."""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from playground.rendering import (
    MAX_RENDERED_CHARS,
    MAX_VALUE_CHARS,
    TemplateError,
    ensure_renderable,
    placeholders,
    render,
    resolve_values,
)

# Placeholders ---------------------------------------------------------------------------------


def test_placeholders_are_the_names_in_order_of_first_use():
    assert placeholders("{b} and {a}, then {b} again and {_c1}") == ["b", "a", "_c1"]


def test_text_without_placeholders_has_none():
    assert placeholders("") == []
    assert placeholders("Plain text: no braces at all.") == []


def test_doubled_braces_are_literals_not_placeholders():
    assert placeholders("{{name}} is literal, }} and {{ too") == []
    assert placeholders("{{{name}}}") == ["name"]


def test_a_name_may_have_64_characters_not_65():
    name = "n" * 64

    assert placeholders(f"{{{name}}}") == [name]
    with pytest.raises(TemplateError):
        placeholders(f"{{{name}x}}")


@pytest.mark.parametrize(
    "text",
    [
        "{a.b}",
        "{a.__class__}",
        "{a[0]}",
        "{a['key']}",
        "{a!r}",
        "{a!s}",
        "{a:>9}",
        "{a:>99999}",
        "{0}",
        "{}",
        "{ a }",
        "{a b}",
        "{1a}",
        "{a-b}",
        "{é}",
    ],
)
def test_anything_but_a_bare_name_in_braces_is_refused(text):
    with pytest.raises(TemplateError) as raised:
        placeholders(f"Hello {text}")

    assert list(raised.value.errors) == ["user_prompt_template"]
    assert text in raised.value.errors["user_prompt_template"][0]


@pytest.mark.parametrize("text", ["{", "}", "a { b", "a } b", "{a}}", "{{a}", "{a", "a}"])
def test_a_lone_brace_is_refused(text):
    with pytest.raises(TemplateError) as raised:
        placeholders(text)

    assert "lone" in raised.value.errors["user_prompt_template"][0]


def test_every_problem_is_named_at_once():
    with pytest.raises(TemplateError) as raised:
        placeholders("{ok} {a.b} {c[0]} {")

    problems = raised.value.errors["user_prompt_template"]
    assert len(problems) == 3
    assert "{a.b}" in problems[0]
    assert "{c[0]}" in problems[1]
    assert "lone" in problems[2]


def test_a_template_error_is_a_value_error_with_every_message():
    error = TemplateError({"a": ["First."], "b": ["Second.", "Third."]})

    assert isinstance(error, ValueError)
    assert str(error) == "First.; Second.; Third."
    assert error.errors == {"a": ["First."], "b": ["Second.", "Third."]}


# Render ---------------------------------------------------------------------------------------


def test_render_replaces_each_placeholder_with_its_value():
    assert render("Dear {name}, {greeting} {name}!", {"name": "Ada", "greeting": "hello"}) == (
        "Dear Ada, hello Ada!"
    )


def test_render_writes_doubled_braces_as_single_ones():
    text = 'JSON: {{"q": "{q}"}} and {{{q}}} and }}{{'

    assert render(text, {"q": "x"}) == 'JSON: {"q": "x"} and {x} and }{'


def test_adjacent_placeholders_and_empty_values():
    assert render("{a}{b}{a}", {"a": "1", "b": ""}) == "11"


def test_values_are_inserted_verbatim_without_a_second_pass():
    values = {"a": "{b}", "b": "{{0.__class__}} {a.__dict__} {", "c": "%(x)s $x"}

    assert render("{a}|{b}|{c}", values) == "{b}|{{0.__class__}} {a.__dict__} {|%(x)s $x"


def test_render_looks_up_only_the_names_the_text_uses():
    class Recording(dict):
        def __init__(self, *args):
            super().__init__(*args)
            self.asked = []

        def __getitem__(self, key):
            self.asked.append(key)
            return super().__getitem__(key)

    values = Recording({"a": "1", "b": "2", "unused": "3"})

    assert render("{b}{a}{b}", values) == "212"
    assert values.asked == ["b", "a", "b"]


# Resolve values -------------------------------------------------------------------------------

DECLARED = [
    {"name": "text", "type": "string", "required": True},
    {"name": "count", "type": "number", "default": 3},
    {"name": "flag", "type": "boolean", "default": False},
    {"name": "tone", "type": "enum", "options": ["formal", "casual"], "default": "formal"},
    {"name": "note"},
]


def test_given_values_become_text_by_their_type():
    values = resolve_values(
        DECLARED, {"text": "hi", "count": 2.5, "flag": True, "tone": "casual", "note": "n"}
    )

    assert values == {"text": "hi", "count": "2.5", "flag": "true", "tone": "casual", "note": "n"}


@pytest.mark.parametrize(
    ("number", "text"),
    [(0, "0"), (-7, "-7"), (10**20, str(10**20)), (0.1, "0.1"), (1e-07, "1e-07")],
)
def test_numbers_are_written_exactly(number, text):
    assert resolve_values(DECLARED, {"text": "t", "count": number})["count"] == text


def test_defaults_fill_what_is_not_given_and_optional_variables_default_to_empty():
    values = resolve_values(DECLARED, {"text": "hi"})

    assert values == {"text": "hi", "count": "3", "flag": "false", "tone": "formal", "note": ""}


def test_a_null_value_counts_as_not_given():
    values = resolve_values(DECLARED, {"text": "hi", "count": None, "tone": None})

    assert (values["count"], values["tone"]) == ("3", "formal")


def test_a_required_variable_with_a_default_takes_the_default():
    declared = [{"name": "q", "type": "string", "required": True, "default": "Why?"}]

    assert resolve_values(declared, {}) == {"q": "Why?"}


def test_every_missing_required_variable_is_named_in_one_error():
    declared = [
        {"name": "first", "required": True},
        {"name": "optional"},
        {"name": "second", "required": True},
    ]

    with pytest.raises(TemplateError) as raised:
        resolve_values(declared, {"optional": "x"})

    assert raised.value.errors == {"variables": ["Missing required variables: first, second."]}


def test_unknown_variables_are_named():
    with pytest.raises(TemplateError) as raised:
        resolve_values(DECLARED, {"text": "t", "zeta": 1, "alpha": 2})

    assert raised.value.errors == {"variables": ["Not declared by the template: alpha, zeta."]}


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("text", 5),
        ("text", ["a"]),
        ("text", True),
        ("count", "3"),
        ("count", True),
        ("count", [1]),
        ("flag", 1),
        ("flag", "true"),
        ("tone", "angry"),
        ("tone", 1),
        ("note", {"a": 1}),
    ],
)
def test_a_value_of_the_wrong_type_is_an_error_naming_the_variable(name, value):
    given = {"text": "t", name: value}

    with pytest.raises(TemplateError) as raised:
        resolve_values(DECLARED, given)

    assert list(raised.value.errors) == [f"variables.{name}"]
    assert raised.value.errors[f"variables.{name}"][0].startswith(name)


@pytest.mark.parametrize("name", ["count", "flag", "tone"])
def test_an_empty_string_is_not_a_number_boolean_or_enum_option(name):
    with pytest.raises(TemplateError) as raised:
        resolve_values(DECLARED, {"text": "t", name: ""})

    assert f"variables.{name}" in raised.value.errors


def test_an_empty_string_is_a_string():
    assert resolve_values(DECLARED, {"text": ""})["text"] == ""


def test_a_string_may_hold_the_maximum_and_no_more():
    assert len(resolve_values(DECLARED, {"text": "x" * MAX_VALUE_CHARS})["text"]) == (
        MAX_VALUE_CHARS
    )
    with pytest.raises(TemplateError) as raised:
        resolve_values(DECLARED, {"text": "x" * (MAX_VALUE_CHARS + 1)})

    assert "variables.text" in raised.value.errors


def test_every_kind_of_problem_is_reported_together():
    with pytest.raises(TemplateError) as raised:
        resolve_values(DECLARED, {"count": "many", "flag": "no", "ghost": 1})

    errors = raised.value.errors
    assert set(errors) == {"variables", "variables.count", "variables.flag"}
    assert errors["variables"] == [
        "Not declared by the template: ghost.",
        "Missing required variables: text.",
    ]


def test_an_enum_without_options_accepts_nothing():
    with pytest.raises(TemplateError):
        resolve_values([{"name": "e", "type": "enum"}], {"e": "anything"})


# Properties -----------------------------------------------------------------------------------

PROPERTY_SETTINGS = settings(
    max_examples=300,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
NAMES = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,10}", fullmatch=True)
# Text rich in the characters that matter to a format string.
BRACEY_TEXT = st.text(alphabet=st.sampled_from("{}{}ab_1.[]!:>0 \n\\%$é"), max_size=40)


@PROPERTY_SETTINGS
@given(st.one_of(st.text(max_size=200), BRACEY_TEXT))
def test_any_text_parses_to_bare_names_or_raises_template_error_only(text):
    try:
        names = placeholders(text)
    except TemplateError as error:
        assert error.errors and all(error.errors.values())
        return
    assert len(names) == len(set(names))
    for name in names:
        assert name.isidentifier()
        assert f"{{{name}}}" in text
    # What parses renders, with any values, and raises nothing.
    rendered = render(text, {name: "<value>" for name in names})
    assert isinstance(rendered, str)


@st.composite
def templates(draw):
    """A valid template built from pieces, with the names it uses and its expected rendering
    for `values`."""
    names = draw(st.lists(NAMES, min_size=1, max_size=4, unique=True))
    values = {
        name: draw(st.one_of(st.text(max_size=20), BRACEY_TEXT, st.just("{0.__class__}")))
        for name in names
    }
    pieces = draw(
        st.lists(
            st.one_of(
                st.text(alphabet=st.characters(blacklist_characters="{}"), max_size=10).map(
                    lambda literal: ("literal", literal)
                ),
                st.just(("open", "{{")),
                st.just(("close", "}}")),
                st.sampled_from(names).map(lambda name: ("name", name)),
            ),
            max_size=12,
        )
    )
    text, expected, used = "", "", []
    for kind, piece in pieces:
        if kind == "name":
            text += f"{{{piece}}}"
            expected += values[piece]
            if piece not in used:
                used.append(piece)
        elif kind == "literal":
            text += piece
            expected += piece
        else:
            text += piece
            expected += piece[0]
    return text, values, used, expected


@PROPERTY_SETTINGS
@given(templates())
def test_rendering_is_plain_substitution_of_the_parsed_names(template):
    text, values, used, expected = template

    assert placeholders(text) == used
    assert render(text, values) == expected


@PROPERTY_SETTINGS
@given(
    NAMES,
    st.sampled_from([".__class__", ".real", "[0]", "['k']", "!r", "!a", ":>99999", ":{x}"]),
    st.text(alphabet=st.characters(blacklist_characters="{}"), max_size=10),
)
def test_attribute_index_conversion_and_format_spec_access_is_always_refused(name, access, pad):
    with pytest.raises(TemplateError):
        placeholders(f"{pad}{{{name}{access}}}{pad}")


# The rendered size ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "texts",
    [
        ("", ""),
        ("You answer for {company}.", "{{literal}} {question} and {question} again; {{ }}"),
        ("", "{a}" * 1000),
    ],
)
def test_the_rendered_size_is_counted_without_rendering(texts):
    values = {"company": "Acme", "question": "why?" * 50, "a": "x" * 37}
    rendered = sum(len(render(text, values)) for text in texts)

    ensure_renderable(texts, values)  # within the bound: nothing raised
    tight = MAX_RENDERED_CHARS - rendered
    ensure_renderable((*texts, "p" * tight), values)
    with pytest.raises(TemplateError):
        ensure_renderable((*texts, "p" * (tight + 1)), values)


def test_a_value_repeated_at_many_placeholders_past_the_bound_is_refused_naming_the_size():
    template = "{a}" * 16_000
    value = "x" * MAX_VALUE_CHARS

    with pytest.raises(TemplateError) as raised:
        ensure_renderable(("", template), {"a": value})

    [message] = raised.value.errors["variables"]
    assert f"{16_000 * MAX_VALUE_CHARS:,} characters" in message
    assert f"at most {MAX_RENDERED_CHARS:,}" in message
