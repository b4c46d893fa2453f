"""JSON arrays are read a chunk at a time (ijson), with the rows and the errors of `json` reading them whole."""
import codecs, io, json, os, tracemalloc
from pathlib import Path
import pytest

from alpaca_ft import data as D
from alpaca_ft.data import SAMPLE_DATA, DataError, iter_rows, load_rows

ROW = {'instruction': 'Add 2 and 2.', 'input': '', 'output': '4'}
R = json.dumps(ROW)
DEEP = '[' * 200_000 + ']' * 200_000
BIG = '7' * 5000

# the files of tests/test_data_io.py, tests/test_prepare.py and lesson 00, and the odd corners of JSON
FIXTURES = {
    'cut.json': b'[\n  {"instruction": "a", "output": "b"},\n  {"instruction": "c", "output": "d"},\n  '
                b'{"instruction": "e", "outp',
    'cut2.json': b'[{"instruction": "a", "output": "b"},\n {"instruction": "c"',
    'number.json': b'[{"instruction": "a", "output": "b"}, {"instruction": "c", "output": 3}]',
    'blob.json': bytes(range(256)) * 4,
    'empty.json': b'',
    'blank.json': b'  \n\n ',
    'deep.json': ('[\n{"instruction": "a", "output": "b"},\n{"instruction": "c", "output": ' + DEEP + '}\n]\n').encode(),
    'nested.json': json.dumps([{**ROW, 'meta': json.loads('[' * 50 + ']' * 50)}]).encode(),
    'nested150.json': json.dumps([{**ROW, 'meta': json.loads('[' * 150 + ']' * 150)}]).encode(),
    'big.json': ('[' + R + ',\n{"instruction": "x", "output": -' + BIG + '}]').encode(),
    'id.json': ('[' + R[:-1] + ', "id": ' + BIG + '}]').encode(),
    'u64.json': ('[' + R[:-1] + ', "id": 18446744073709551615}]').encode(),
    'nan.json': ('[' + R[:-1] + ', "score": NaN}, ' + R[:-1] + ', "score": -Infinity}]').encode(),
    'nan_output.json': b'[{"instruction": "a", "output": NaN}]',
    'huge_float.json': ('[' + R[:-1] + ', "p": 1e400}]').encode(),
    'floats.json': json.dumps([{**ROW, 'p': [0.1, -0.0, 5e-324, 1.7976931348623157e308, 2 ** 63 - 1, -2 ** 63]}]).encode(),
    'bom8.json': codecs.BOM_UTF8 + json.dumps([ROW]).encode(),
    'utf16.json': json.dumps([ROW, {'instruction': 'Übersetze: 猫', 'output': 'Katze 🐈'}], ensure_ascii=False,
                             indent=1).encode('utf-16'),
    'utf32.json': json.dumps([ROW], indent=1).encode('utf-32'),
    'latin1.json': b'[' + R.encode() + b',\n{"instruction": "caf\xe9", "output": "x"}]',
    'emoji_escaped.json': json.dumps([{**ROW, 'output': 'Katze 🐈 \U0001F600'}]).encode(),
    'lone_surrogate.json': b'[{"instruction": "a\\ud800", "output": "b"}, {"instruction": "c", "output": "\\udc00"}]',
    'control.json': b'[{"instruction": "a\tb", "output": "c"}]',
    'data.json': json.dumps({'meta': {'n': 2}, 'data': [ROW, ROW]}).encode(),
    'rows.json': json.dumps({'rows': [ROW], 'train': [{**ROW, 'output': 'train'}]}).encode(),
    'train.json': json.dumps({'train': [ROW], 'eval': [ROW]}).encode(),
    'data_last.json': json.dumps({'rows': [{**ROW, 'output': 'rows'}], 'data': [ROW]}).encode(),
    'data_not_list.json': json.dumps({'data': {'x': 1}, 'rows': [ROW]}).encode(),
    'repeated_key.json': ('{"data": [' + R + '], "data": [' + R[:-1] + ', "input": "again"}]}').encode(),
    'repeated_other.json': ('{"rows": 1, "data": [' + R + '], "rows": [2]}').encode(),
    'no_rows.json': b'{"x": 1}',
    'string.json': b'"rows"',
    'number_only.json': b'3',
    'empty_array.json': b'[]',
    'empty_object.json': b'{}',
    'trailing_garbage.json': ('[' + R + '] [1]').encode(),
    'trailing_comma.json': ('[' + R + ',]').encode(),
    'missing_comma.json': ('[' + R + '\n ' + R + ']').encode(),
    'not_object.json': ('[' + R + ', 3, "x"]').encode(),
    'wrapper_cut.json': ('{"data": [' + R + ', ' + R).encode(),
}


def outcome(read):
    "What `read()` gives: its rows, or the type and message of the error it raises."
    try: return ('rows', read())
    except (DataError, TypeError) as e: return (type(e).__name__, str(e))


@pytest.fixture
def whole(monkeypatch):
    "`load_rows` with the JSON reader as it was: `json` reading the whole file."
    def read(path, invalid=None):
        with monkeypatch.context() as m:
            m.setitem(D.READERS, '.json', D._read_json_whole)
            return load_rows(path, invalid)
    return read


@pytest.mark.parametrize('name', list(FIXTURES))
def test_rows_and_errors_are_those_of_json_reading_the_whole_file(tmp_path, whole, name):
    p = tmp_path/name
    p.write_bytes(FIXTURES[name])
    old, new = outcome(lambda: whole(p)), outcome(lambda: load_rows(p))
    assert new == old
    records = outcome(lambda: [r for r, _ in D._read_json(p)])  # the raw records too, extra fields included
    assert repr(records) == repr(outcome(lambda: [r for r, _ in D._read_json_whole(p)]))  # repr: _LongInt, NaN


def test_real_files_give_the_same_rows(whole):
    files = [SAMPLE_DATA]
    shared = D.shared_path('data/alpaca_zh_2k.json')
    if shared is not None: files.append(shared)
    for p in files:
        assert [r for r, _ in D._read_json(p)] == [r for r, _ in D._read_json_whole(p)]
        skipped, skipped_before = [], []
        assert load_rows(p, skipped) == whole(p, skipped_before) and skipped == skipped_before


@pytest.mark.parametrize('kind', ['lone', 'pair'])
def test_a_surrogate_escape_is_judged_across_chunk_boundaries(kind):
    "ijson's C parser reads a lone surrogate escape as '?': such a file goes to `json`, wherever the chunk cuts."
    escape = r'\ud83d' if kind == 'lone' else r'\ud83d\ude00'
    for k in range(80):
        text = ('["' + 'x' * k + escape + 'y' * 40 + '"]').encode()
        events = D._json_events(io.BytesIO(text), size=32)
        if kind == 'lone':
            with pytest.raises(D._ReadWhole): list(events)
        else: assert [v for e, v in events if e == 'string'] == json.loads(text)


def test_the_first_rows_come_before_the_end_of_the_file_is_read(tmp_path):
    "A JSON array is no longer read whole: a row is checked when it is reached, as in JSONL."
    p = tmp_path/'rows.json'
    p.write_text('[' + ',\n'.join([R] * 3) + ',\n{"instruction": "x", "outp', encoding='utf-8')  # cut short
    rows = iter_rows(p)
    assert [next(rows) for _ in range(3)] == [ROW] * 3
    with pytest.raises(DataError, match=r'rows\.json, line 4: invalid JSON: Unterminated string'): next(rows)


def _peak(read) -> int:
    tracemalloc.start()
    try:
        for _ in read(): pass
        return tracemalloc.get_traced_memory()[1]
    finally: tracemalloc.stop()


def test_memory_stays_bounded_while_a_large_array_is_read(tmp_path):
    "Python's allocations while reading: a chunk's parse events and a row, however long the file."
    rows = load_rows(SAMPLE_DATA)
    peaks, sizes = [], []
    for n in (20, 80):  # 2,600 and 10,400 rows: about 1.2 and 4.5 MB
        p = tmp_path/f'rows{n}.json'
        many = [dict(r, id=i) for i in range(n) for r in rows]
        p.write_text(json.dumps({'data': many}, ensure_ascii=False, indent=1), encoding='utf-8')
        peaks.append(_peak(lambda: iter_rows(p)))
        sizes.append(p.stat().st_size)
    print('peaks', peaks, 'sizes', sizes)
    assert peaks[1] < 1.3 * peaks[0] and peaks[1] < sizes[1] / 5, (peaks, sizes)
    assert _peak(lambda: D._read_json_whole(p)) > sizes[1]  # as it was: the text, then every row at once


def test_a_wrapper_key_with_a_dot_is_not_the_rows(tmp_path):
    "ijson's prefixes join keys with dots: the top-level key 'data.item' must not pass for the rows of 'data'."
    for text in ('{"data.item": {"instruction": "EVIL", "output": "x"}, "data": [{"instruction": "a", "output": "b"}]}',
                 '{"data": [{"instruction": "a", "output": "b"}], "data.item": {"instruction": "EVIL", "output": "x"}}',
                 '{"data\\u002eitem": {"instruction": "EVIL", "output": "x"}, "data": [{"instruction": "a", "output": "b"}]}'):
        p = tmp_path/'w.json'
        p.write_text(text, encoding='utf-8')
        assert [r['instruction'] for r in load_rows(p)] == ['a'], text


@pytest.mark.parametrize('suffix', ['json', 'jsonl'])
def test_a_lone_surrogate_in_a_text_field_is_named_bad_input(tmp_path, suffix):
    rows = [{'instruction': f'q{i}', 'input': '', 'output': 'a'} for i in range(6)]
    rows[4]['instruction'] = 'bad \ud800 here'
    p = tmp_path/f'lone.{suffix}'
    text = json.dumps(rows) if suffix == 'json' else ''.join(json.dumps(r) + '\n' for r in rows)
    p.write_text(text, encoding='utf-8')
    with pytest.raises(DataError) as e: load_rows(p)
    where = 'row 4' if suffix == 'json' else 'line 5'
    assert str(e.value) == f"{p}, {where}: field 'instruction' holds a lone surrogate (U+D800), which is not text"
