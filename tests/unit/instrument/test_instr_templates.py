"""URL path templates: ids become ``{id}``, never the raw path, never the query string."""

from __future__ import annotations

import pytest

from holter.instrument._common import MAX_PATH_SEGMENTS, make_path_template, path_template


@pytest.mark.parametrize(
    ("path", "template"),
    [
        ("/", "/"),
        ("", "/"),
        ("/health", "/health"),
        ("/v1/items", "/v1/items"),  # a version number inside a word is not an id
        ("/users/123", "/users/{id}"),
        ("/users/123/orders/456", "/users/{id}/orders/{id}"),
        ("/users/123/", "/users/{id}/"),
        ("users/7", "/users/{id}"),
        ("/u/550e8400-e29b-41d4-a716-446655440000", "/u/{id}"),
        ("/u/550E8400-E29B-41D4-A716-446655440000/x", "/u/{id}/x"),
        ("/blob/9f3c1a2b3c4d5e6f", "/blob/{id}"),  # 16 hex digits
        ("/blob/9f3c1a2b3c4d5e6", "/blob/9f3c1a2b3c4d5e6"),  # 15: too short to be an id
        ("/t/abcdefghijklmnopqrs1", "/t/{id}"),  # a long token with a digit
        ("/t/abcdefghijklmnopqrst", "/t/abcdefghijklmnopqrst"),  # no digit: a word
        ("/files/report-2024.pdf", "/files/report-2024.pdf"),
        ("/search?q=secret&page=2", "/search"),
        ("/users/42?token=abc123", "/users/{id}"),
        ("/users/42#section-3", "/users/{id}"),
        ("/a?b#c", "/a"),
    ],
)
def test_templates(path: str, template: str) -> None:
    assert make_path_template(path) == template
    assert path_template(path) == template  # the cached form agrees


def test_query_strings_and_fragments_never_survive() -> None:
    for path in ("/x?password=hunter2", "/x/1?password=hunter2", "/x#hunter2", "/?hunter2"):
        assert "hunter2" not in make_path_template(path)


def test_deep_paths_with_ids_are_cut() -> None:
    path = "/" + "/".join(str(i) for i in range(1, 13))
    template = make_path_template(path)
    assert template == "/" + "/".join(["{id}"] * MAX_PATH_SEGMENTS) + "/…"
    # every deeper path with ids shares the one template
    assert make_path_template(path + "/99/100") == template


def test_deep_paths_without_digits_are_cut_too() -> None:
    path = "/" + "/".join("abcdefghijklmnop")  # 16 segments, no digits
    template = make_path_template(path)
    assert template.endswith("/…")
    assert template.count("/") == MAX_PATH_SEGMENTS + 1


def test_the_cache_is_bounded_and_stays_right() -> None:
    for i in range(9000):  # more than the cache holds
        assert path_template(f"/items/{i}/x{i}y") == f"/items/{{id}}/x{i}y"
    assert path_template("/items/5") == "/items/{id}"


def test_templates_are_few_for_many_ids() -> None:
    seen = {path_template(f"/users/{i}/orders/{i * 7919:x}{'0' * 16}") for i in range(500)}
    assert seen == {"/users/{id}/orders/{id}"}
