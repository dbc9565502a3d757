"""Streaming readers: format detection, line numbers, encodings, incremental JSON arrays."""

import codecs
import json

import pytest

from caretune.basics.errors import UserError
from converters import reader
from converters.jsoncodec import InvalidJson
from converters.reader import JSON_ARRAY, JSONL, RawFile


def rows_of(path):
    return list(RawFile(path).rows())


def test_jsonl_rows_with_line_numbers_blank_lines_and_invalid_json(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_text('{"a": 1}\n\n{"a": 2}\n{broken\n   \n[3]\n', encoding="utf-8")
    raw = RawFile(path)
    assert raw.format == JSONL
    rows = list(raw.rows())
    assert [line for line, _ in rows] == [1, 3, 4, 6]
    assert rows[0][1] == {"a": 1} and rows[3][1] == [3]
    assert isinstance(rows[2][1], InvalidJson)


def test_rows_orjson_rejects_are_the_standard_librarys_to_judge(tmp_path):
    path = tmp_path / "in.jsonl"
    lines = ['{"a": NaN}', '{"a": "头疼"}', '{"a": "\\ud800"}', '{"a": 1,}']
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    rows = rows_of(path)
    assert rows[0][1]["a"] != rows[0][1]["a"]  # NaN
    assert rows[1:3] == [(2, {"a": "头疼"}), (3, {"a": "\ud800"})]
    with pytest.raises(json.JSONDecodeError) as err:
        json.loads(lines[3])
    assert rows[3] == (4, f"{err.value.msg} (column {err.value.colno})") and isinstance(rows[3][1], InvalidJson)


def test_bom_and_crlf_accepted(tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(codecs.BOM_UTF8 + '{"q": "你好"}\r\n{"q": "再见"}\r\n'.encode())
    assert rows_of(path) == [(1, {"q": "你好"}), (2, {"q": "再见"})]
    array = tmp_path / "bom.json"
    array.write_bytes(codecs.BOM_UTF8 + b'[{"q": 1}]')
    assert rows_of(array) == [(1, {"q": 1})]


def test_sha256_covers_the_whole_file(tmp_path):
    import hashlib

    path = tmp_path / "in.jsonl"
    path.write_bytes(b'{"a": 1}\n' * 1000)
    raw = RawFile(path)
    list(raw.rows())
    assert raw.sha256.hexdigest() == hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("encoding", ["gbk", "utf-16"])
def test_other_encodings_are_a_clear_error_naming_the_line(tmp_path, encoding):
    path = tmp_path / f"{encoding}.jsonl"
    path.write_bytes('{"query": "ok"}\n'.encode() + '{"query": "头疼怎么办"}\n'.encode(encoding))
    with pytest.raises(UserError, match=rf"{encoding}\.jsonl:(1|2): not (UTF-8 text|JSON)"):
        rows_of(path)


def test_gbk_line_in_the_middle_names_that_line(tmp_path):
    path = tmp_path / "mixed.jsonl"
    lines = ['{"query": "好"}'.encode()] * 5 + ['{"query": "头疼"}'.encode("gbk")] + [b'{"query": "x"}']
    path.write_bytes(b"\n".join(lines) + b"\n")
    with pytest.raises(UserError, match=r"mixed\.jsonl:6: not UTF-8"):
        rows_of(path)


@pytest.mark.parametrize("content, line", [("query,response\n头疼,休息\n", 1), ("\n\n  hello", 3), ("", 1)])
def test_not_json_at_all(tmp_path, content, line):
    path = tmp_path / "data.csv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(UserError, match=rf"data\.csv:{line}: "):
        RawFile(path)


def test_array_parsed_incrementally_across_tiny_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr(reader, "CHUNK_BYTES", 7)  # every element straddles chunk boundaries
    items = [{"id": i, "text": "中文" * i, "nested": {"list": [1, 2, {"x": "]"}]}} for i in range(40)]
    path = tmp_path / "arr.json"
    path.write_text(json.dumps(items, ensure_ascii=False, indent=2), encoding="utf-8")
    rows = rows_of(path)
    assert [value for _, value in rows] == items
    text = path.read_text(encoding="utf-8").split("\n")
    for line, value in rows:  # each reported line is where that element starts
        assert text[line - 1].strip() == "{"
    assert RawFile(path).format == JSON_ARRAY


def test_empty_array_and_one_line_array(tmp_path):
    empty = tmp_path / "empty.json"
    empty.write_text(" [ ] ", encoding="utf-8")
    assert rows_of(empty) == []
    one_line = tmp_path / "one.json"
    one_line.write_text('[{"a":1},{"a":2}, "x"]', encoding="utf-8")
    assert rows_of(one_line) == [(1, {"a": 1}), (1, {"a": 2}), (1, "x")]


@pytest.mark.parametrize(
    "content, line, message",
    [
        ('[\n{"a": 1},\n{"a": 2\n', 3, "invalid JSON in array"),
        ('[\n{"a": 1},\n{"a": 2}\n', 4, "expected ',' or ']', found end of file"),
        ('[\n{"a": 1}\n{"a": 2}\n]', 3, "expected ',' or ']'"),
        ('[\n{"a": 1},\n{"a": tru}\n]', 3, "invalid JSON in array"),
        ('[{"a": 1}]\nextra', 2, "unexpected data after"),
    ],
)
def test_broken_array_is_an_error_naming_the_line(tmp_path, monkeypatch, content, line, message):
    monkeypatch.setattr(reader, "CHUNK_BYTES", 5)
    path = tmp_path / "broken.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(UserError, match=rf"broken\.json:{line}: .*{message}"):
        rows_of(path)


def test_array_in_gbk_is_an_error(tmp_path):
    path = tmp_path / "gbk.json"
    path.write_bytes('[\n{"q": "ok"},\n{"q": "头疼"}\n]'.encode("gbk"))
    with pytest.raises(UserError, match=r"gbk\.json:3: not UTF-8"):
        rows_of(path)
