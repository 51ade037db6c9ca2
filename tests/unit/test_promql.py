"""PromQL text builders: escaping that no label value can break out of, and valid names."""

from __future__ import annotations

import random
import re

import pytest

from app.prometheus.promql import (
    aggregate,
    check_label_name,
    check_metric_name,
    equals_any,
    filtered_selector,
    quote,
    regex_literal,
    selector,
)

# -- an independent reader of PromQL double-quoted strings ---------------------------------

_SIMPLE_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t",
                   "v": "\v", "\\": "\\", '"': '"'}
_HEX = set("0123456789abcdefABCDEF")


def unquote(literal: str) -> str:
    """Read one whole PromQL double-quoted string literal (Go escapes), or raise ValueError.

    Written from the Go spec, not from `quote`: the literal must be one string token from its
    first to its last character, so any input that ends the string early is caught here.
    Byte escapes above 0x7F (which Go keeps as raw bytes) are refused: `quote` never needs them.
    """
    if len(literal) < 2 or literal[0] != '"' or literal[-1] != '"':
        raise ValueError(f"not a double-quoted literal: {literal!r}")
    body, out, i = literal[1:-1], [], 0
    while i < len(body):
        char = body[i]
        if char == '"':
            raise ValueError(f"unescaped quote at {i} ends the string early: {literal!r}")
        if char == "\n":
            raise ValueError(f"raw newline inside a string: {literal!r}")
        if char != "\\":
            out.append(char)
            i += 1
            continue
        if i + 1 >= len(body):
            raise ValueError(f"backslash escapes the closing quote: {literal!r}")
        kind = body[i + 1]
        if kind in _SIMPLE_ESCAPES:
            out.append(_SIMPLE_ESCAPES[kind])
            i += 2
        elif kind in "xuU":
            width = {"x": 2, "u": 4, "U": 8}[kind]
            digits = body[i + 2 : i + 2 + width]
            if len(digits) != width or not set(digits) <= _HEX:
                raise ValueError(f"bad \\{kind} escape in {literal!r}")
            code = int(digits, 16)
            if (kind == "x" and code > 0x7F) or 0xD800 <= code <= 0xDFFF or code > 0x10FFFF:
                raise ValueError(f"escape \\{kind}{digits} is not a character")
            out.append(chr(code))
            i += 2 + width
        elif kind in "01234567":
            digits = body[i + 1 : i + 4]
            if len(digits) != 3 or not set(digits) <= set("01234567") or int(digits, 8) > 0x7F:
                raise ValueError(f"bad octal escape in {literal!r}")
            out.append(chr(int(digits, 8)))
            i += 4
        else:
            raise ValueError(f"unknown escape \\{kind} in {literal!r}")
    return "".join(out)


HOSTILE = [
    '"}',
    '\\"',
    '"} or vector(1) or {"',
    '=~".*"',
    '", job=~".+',
    "\\",
    "\\\\",
    'ends with a backslash\\',
    '\\"} or vector(1) or {x="',
    "a\nb",
    '\n"} or vector(1)',
    "\r\n",
    "\t",
    "\x00",
    "\x1b[31mred\x1b[0m",
    "\x7f",
    "\u2028\u2029",
    "\\x41\\u0041\\101",  # text that looks like escapes must stay text
    "'single' and `backtick`",
    "} or up{",
    "",
    "node-01.example.com",
    "NVIDIA A100-SXM4-80GB",
    "日本語のGPU 🎉",
    "".join(chr(code) for code in range(0x80)),
]


def random_hostile_strings(count: int) -> list[str]:
    """Strings drawn (reproducibly) from characters that matter to string and regex syntax."""
    alphabet = list('"\\\n\r\t\x00\x01\x1f\x7f{}[]()|.*+?^$=~!,\'` aZ09é🎉\u2028')
    rng = random.Random(20260101)
    return ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 24)))
            for _ in range(count)]


# -- the reader itself (so that round-trips prove something) --------------------------------


@pytest.mark.parametrize(
    "broken",
    ['"a"} or vector(1) or {"b"', '"a\\"', '"a\nb"', '"a\\q"', "'a'", '"\\x4"', '"'],
)
def test_unquote_rejects_a_literal_that_is_not_one_whole_string(broken: str) -> None:
    with pytest.raises(ValueError):
        unquote(broken)


def test_unquote_reads_go_escapes() -> None:
    assert unquote(r'"a\"b\\c\n\t\x41\u00e9\101"') == 'a"b\\c\n\tAéA'


# -- quote ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("gpu-01", '"gpu-01"'),
        ('a"b', '"a\\"b"'),
        ("a\\b", '"a\\\\b"'),
        ("line\nbreak", '"line\\nbreak"'),
        ("\r\t", '"\\r\\t"'),
        ("\x00\x1f\x7f", '"\\x00\\x1f\\x7f"'),
        ("é🎉", '"é🎉"'),
        ("", '""'),
    ],
)
def test_quote_escapes_backslash_quote_newline_and_control_characters(
    value: str, expected: str
) -> None:
    assert quote(value) == expected


@pytest.mark.parametrize("value", HOSTILE)
def test_quote_round_trips_hostile_strings_so_nothing_breaks_out(value: str) -> None:
    assert unquote(quote(value)) == value


def test_quote_round_trips_many_random_hostile_strings() -> None:
    for value in random_hostile_strings(2000):
        assert unquote(quote(value)) == value, value


@pytest.mark.parametrize("value", HOSTILE)
def test_quote_output_holds_no_raw_newline_or_control_character(value: str) -> None:
    assert not any(ord(char) < 0x20 or ord(char) == 0x7F for char in quote(value))


# -- regex_literal --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "must_not_match"),
    [
        ("a.b", "axb"),
        ("a+", "aa"),
        ("a*", "aaa"),
        ("colou?r", "colour"),
        ("(a|b)", "a"),
        ("a|b", "a"),
        ("[ab]", "a"),
        ("a{2}", "aa"),
        ("^a$", "a"),
        ("\\d", "1"),
        (".*", "anything"),
        ("gpu-0.node.example", "gpu-0Xnode.example"),
    ],
)
def test_regex_literal_matches_only_the_value_itself(value: str, must_not_match: str) -> None:
    pattern = regex_literal(value)

    assert re.fullmatch(pattern, value)
    assert not re.fullmatch(pattern, must_not_match)


@pytest.mark.parametrize("value", HOSTILE + random_hostile_strings(300))
def test_regex_literal_of_any_string_matches_exactly_that_string(value: str) -> None:
    pattern = regex_literal(value)

    assert re.fullmatch(pattern, value, flags=re.DOTALL)
    assert not re.fullmatch(pattern, value + "x", flags=re.DOTALL)


def test_regex_literal_leaves_ordinary_characters_alone() -> None:
    assert regex_literal("NVIDIA A100-SXM4_80GB/é") == "NVIDIA A100-SXM4_80GB/é"


# -- equals_any -----------------------------------------------------------------------------


def test_equals_any_with_one_value_is_an_exact_match_without_regex() -> None:
    assert equals_any("node", ["gpu-01.example"]) == 'node="gpu-01.example"'


def test_equals_any_with_several_values_is_an_anchored_alternation_of_literals() -> None:
    assert equals_any("node", ["a", "b.c"]) == 'node=~"a|b\\\\.c"'


def test_equals_any_regex_matches_each_value_and_nothing_else() -> None:
    values = ["gpu-0.node", "a|b", "(x)", 'q"uote', "back\\slash", "new\nline"]
    matcher = equals_any("node", values)

    assert matcher.startswith("node=~")
    # Prometheus anchors regex matchers: fullmatch is the semantics of `=~`.
    pattern = unquote(matcher.removeprefix("node=~"))
    for value in values:
        assert re.fullmatch(pattern, value), value
    for other in ["gpu-0Xnode", "a", "b", "x", "(x", "q", "back"]:
        assert not re.fullmatch(pattern, other), other


@pytest.mark.parametrize("values", [['"} or vector(1) or {"'], ['"} or vector(1) or {"', "b"]])
def test_equals_any_keeps_injection_attempts_inside_the_string(values: list[str]) -> None:
    matcher = equals_any("node", values)
    operator = "=" if len(values) == 1 else "=~"
    literal = matcher.removeprefix(f"node{operator}")

    text = unquote(literal)
    assert text == (values[0] if len(values) == 1 else "|".join(map(regex_literal, values)))


@pytest.mark.parametrize("label", ["bad-label", "1gpu", "gpu name", 'node="x"', ""])
def test_equals_any_rejects_an_invalid_label_name(label: str) -> None:
    with pytest.raises(ValueError, match="not a valid Prometheus label name"):
        equals_any(label, ["x"])


# -- selector, filtered_selector, aggregate -------------------------------------------------


def test_selector_without_matchers_is_the_bare_metric_name() -> None:
    assert selector("up") == "up"


def test_selector_joins_matchers_in_braces() -> None:
    assert selector("up", ['job="a"', 'gpu="0"']) == 'up{job="a", gpu="0"}'


def test_filtered_selector_without_filters_is_the_bare_metric_name() -> None:
    assert filtered_selector("gpu_util", []) == "gpu_util"


def test_filtered_selector_with_one_spelling_is_a_single_selector() -> None:
    assert filtered_selector("gpu_util", [(("node",), ("a",))]) == 'gpu_util{node="a"}'


def test_filtered_selector_ors_one_selector_per_label_spelling() -> None:
    assert filtered_selector("gpu_util", [(("node", "hostname"), ("a",))]) == (
        '(gpu_util{node="a"} or gpu_util{hostname="a"})'
    )


def test_filtered_selector_combines_the_spellings_of_several_filters() -> None:
    filters = [(("node", "hostname"), ("a", "b")), (("pod", "exported_pod"), ("p",))]

    assert filtered_selector("m", filters) == (
        '(m{node=~"a|b", pod="p"} or m{node=~"a|b", exported_pod="p"} '
        'or m{hostname=~"a|b", pod="p"} or m{hostname=~"a|b", exported_pod="p"})'
    )


def test_filtered_selector_escapes_the_values() -> None:
    hostile = '"} or vector(1) or {"'

    assert filtered_selector("m", [(("node",), (hostile,))]) == f"m{{node={quote(hostile)}}}"


def test_filtered_selector_adds_fixed_matchers_to_every_selector() -> None:
    assert filtered_selector("m", [(("node", "hostname"), ("a",))], ['exported_pod!=""']) == (
        '(m{exported_pod!="", node="a"} or m{exported_pod!="", hostname="a"})'
    )


def test_filtered_selector_with_only_fixed_matchers_is_one_selector() -> None:
    assert filtered_selector("m", [], ['exported_pod=""']) == 'm{exported_pod=""}'


def test_aggregate_keeps_only_the_named_labels() -> None:
    assert aggregate("max", ["node", "gpu"], "gpu_util") == "max by (node, gpu) (gpu_util)"


@pytest.mark.parametrize(
    "label", ["gpu-id", "1gpu", "gpu id", "x) or vector(1) or (x", "", "gpu\u00e9"]
)
def test_aggregate_rejects_a_bad_label_name(label: str) -> None:
    with pytest.raises(ValueError, match="not a valid Prometheus label name"):
        aggregate("max", ["node", label], "gpu_util")


# -- name checks ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["gpu", "_gpu", "GPU_I_ID", "a1", "__name__"])
def test_check_label_name_returns_a_valid_name(name: str) -> None:
    assert check_label_name(name) == name


@pytest.mark.parametrize("name", ["1gpu", "gpu-id", "gpu:id", "gpu id", "", "ü", "gpu}"])
def test_check_label_name_rejects_an_invalid_name(name: str) -> None:
    with pytest.raises(ValueError, match=re.escape(repr(name))):
        check_label_name(name)


def test_check_label_name_rejects_a_trailing_newline() -> None:
    with pytest.raises(ValueError):
        check_label_name("gpu\n")


@pytest.mark.parametrize(
    "name", ["up", "DCGM_FI_DEV_GPU_UTIL", "job:gpu_util:avg5m", ":colon_first", "_x9"]
)
def test_check_metric_name_returns_a_valid_name(name: str) -> None:
    assert check_metric_name(name) == name


@pytest.mark.parametrize("name", ["1up", "up{}", "gpu-util", "gpu util", "", "up\x00"])
def test_check_metric_name_rejects_an_invalid_name(name: str) -> None:
    with pytest.raises(ValueError, match="not a valid Prometheus metric name"):
        check_metric_name(name)


def test_check_metric_name_rejects_a_trailing_newline() -> None:
    with pytest.raises(ValueError):
        check_metric_name("up\n")
