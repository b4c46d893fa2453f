"prepare in bounded memory: rows read as a stream, digests instead of rows, errors found while streaming."
from __future__ import annotations
import json, logging, random, tempfile, tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from alpaca_ft.data import SAMPLE_DATA, DataError, iter_rows, load_rows
from alpaca_ft.split import split_groups, write_jsonl
from alpaca_ft.streaming import RowTable, rows_to_disk, split_digests, write_rows_jsonl


def sample_rows() -> list[dict]: return load_rows(SAMPLE_DATA)


def write_distinct(path: Path, n: int) -> Path:
    "`n` distinct rows (the sample's, numbered) as JSONL."
    rows = sample_rows()
    with open(path, 'w', encoding='utf-8') as f:
        for i in range(n):
            r = rows[i % len(rows)]
            f.write(json.dumps({**r, 'instruction': f"{r['instruction']} ({i})"}, ensure_ascii=False) + '\n')
    return path


@pytest.mark.parametrize('seed', [0, 1, 42])
@pytest.mark.parametrize('eval_size', [None, 5, 0.3])
def test_split_digests_gives_split_groups_indices_in_its_order(seed, eval_size):
    rng = random.Random(seed)
    words = [rng.randrange(40) for _ in range(97)]  # repeats: groups of several rows, first seen anywhere
    keys = np.array([[w * 7919 + 3, w] for w in words], np.uint64)
    train, evl = split_digests(keys, eval_size, seed)
    want = split_groups([k.tobytes() for k in keys], eval_size, seed)
    assert (train.tolist(), evl.tolist()) == want


def test_split_digests_refuses_a_split_with_no_train_rows():
    keys = np.zeros((4, 2), np.uint64)  # one prompt
    with pytest.raises(DataError) as new: split_digests(keys, 1, 0)
    with pytest.raises(DataError) as old: split_groups([b'x'] * 4, 1, 0)
    assert str(new.value) == str(old.value)


@pytest.mark.parametrize('suffix', ['.jsonl', '.csv'])
def test_rows_come_one_at_a_time_and_a_bad_line_is_named_when_reached(tmp_path, suffix):
    rows = sample_rows()[:50]
    p = tmp_path/f'rows{suffix}'
    if suffix == '.jsonl':
        p.write_text(''.join(json.dumps(r) + '\n' for r in rows) + '{"instruction": "a", "output"\n',
                     encoding='utf-8')
        reason = f'{p}, line 51: not a JSON object'
    else:
        pd.DataFrame(rows).to_csv(p, index=False)
        with open(p, 'a', encoding='utf-8') as f: f.write('a,b,c,d\n')
        reason = f'{p}, line'
    it = iter_rows(p)
    assert next(it) == rows[0]  # the first row, before the bad line at the end is read
    with pytest.raises(DataError) as e: list(it)
    assert str(e.value).startswith(reason)


def test_parquet_rows_come_a_batch_at_a_time(tmp_path):
    rows = sample_rows()
    p = tmp_path/'rows.parquet'
    pd.DataFrame(rows).to_parquet(p, row_group_size=16)
    assert list(iter_rows(p)) == rows


def test_a_bad_line_deep_in_the_file_stops_prepare_naming_it_and_leaves_nothing(tmp_path, monkeypatch):
    from alpaca_ft.prepare import prepare_dataset
    monkeypatch.setattr(tempfile, 'tempdir', str(tmp_path/'tmp'))
    (tmp_path/'tmp').mkdir()
    p = write_distinct(tmp_path/'rows.jsonl', 1500)
    with open(p, 'a', encoding='utf-8') as f: f.write('{"instruction": "x", "output": 3}\n')
    with pytest.raises(DataError) as e:
        prepare_dataset(str(p), out=tmp_path/'out', progress=False, verbose=False)
    assert str(e.value) == f"{p}, line 1501: field 'output' must be a string, got int"
    assert not (tmp_path/'out').exists() and not list((tmp_path/'tmp').iterdir())


def test_a_chat_row_without_the_chat_template_is_named(tmp_path):
    from alpaca_ft.prepare import prepare_dataset
    p = tmp_path/'rows.jsonl'
    chat = {'messages': [{'role': 'user', 'content': 'Hi'}, {'role': 'assistant', 'content': 'Hello'}]}
    p.write_text(''.join(json.dumps(r) + '\n' for r in sample_rows()[:20] + [chat]), encoding='utf-8')
    with pytest.raises(DataError, match=r"rows.jsonl, line 21: a row with 'messages' needs template='chat'"):
        prepare_dataset(str(p), out=tmp_path/'out', progress=False, verbose=False)


def test_rows_on_disk_read_back_as_written_and_write_the_same_jsonl(tmp_path):
    rows = sample_rows()
    table, origin, row_keys, prompt_keys = rows_to_disk([rows[:70], iter(rows[70:])], tmp_path, batch_size=16)
    assert len(table) == len(rows) and table[0:len(rows)] == rows and list(table) == rows
    assert origin.tolist() == [0] * 70 + [1] * (len(rows) - 70) and row_keys.shape == (len(rows), 2)
    pick = [5, 99, 0, 17, 17, 64]
    assert table.take(pick)[0:6] == [rows[i] for i in pick]
    write_rows_jsonl(table.take(pick), tmp_path/'a.jsonl')
    write_jsonl([rows[i] for i in pick], tmp_path/'b.jsonl')
    assert (tmp_path/'a.jsonl').read_bytes() == (tmp_path/'b.jsonl').read_bytes()


def _load_and_select_peak(path: Path) -> int:
    "Peak Python-traced bytes of prepare's load and select stage on `path`."
    from alpaca_ft.prepare import _checked, _Skipped, select_index
    tracemalloc.start()
    try:
        with tempfile.TemporaryDirectory() as work:
            rows = _checked(str(path), _Skipped(), 'alpaca')
            table, origin, row_keys, prompt_keys = rows_to_disk([rows], work)
            select_index(origin, row_keys, prompt_keys, 1)
            del table
        return tracemalloc.get_traced_memory()[1]
    finally: tracemalloc.stop()


def test_load_and_select_hold_a_few_bytes_a_row_not_the_rows(tmp_path):
    "Held as dicts, these rows take about a kilobyte each; as digests and indices, under 300 bytes."
    small = _load_and_select_peak(write_distinct(tmp_path/'small.jsonl', 1000))
    large = _load_and_select_peak(write_distinct(tmp_path/'large.jsonl', 8000))
    assert (large - small) / 7000 < 300, (small, large)


def test_chat_rows_give_the_same_bytes_with_num_proc(tmp_path):
    from alpaca_ft.prepare import prepare_dataset
    rows = sample_rows()
    user = lambda r: {'role': 'user', 'content': r['instruction']}
    turn = lambda r: [user(r), {'role': 'assistant', 'content': r['output']}]
    chats = [{'messages': turn(a) + turn(b)} for a, b in zip(rows[::2], rows[1::2])]
    kw = dict(template='chat', max_seq_len=256, progress=False, verbose=False)
    m1 = prepare_dataset(chats, out=tmp_path/'a', **kw)
    m2 = prepare_dataset(chats, out=tmp_path/'b', num_proc=2, **kw)
    assert m1['fingerprint'] == m2['fingerprint']
    for name in ('train.jsonl', 'eval.jsonl', 'manifest.json'):
        assert (tmp_path/'a'/name).read_bytes() == (tmp_path/'b'/name).read_bytes()


def test_wandb_tables_are_capped_and_the_summary_says_how_many_of_how_many(tmp_path, monkeypatch, caplog):
    import alpaca_ft.prepare as P
    monkeypatch.setenv('WANDB_DIR', str(tmp_path))
    monkeypatch.setattr(P, 'TABLE_ROWS', 7)
    logged = {}
    monkeypatch.setattr(P, 'log_tables', lambda run, t: logged.update({k: len(v) for k, v in t.items()}))
    with caplog.at_level(logging.INFO, logger='alpaca_ft'):
        m = P.prepare_dataset(out=tmp_path/'out', max_seq_len=256, wandb='offline', progress=False)
    n_eval = m['rows']['read'] - m['rows']['duplicates'] - len(load_rows(tmp_path/'out'/'train.jsonl'))
    assert logged == {'raw_dataset': 7, 'train_dataset': 7, 'eval_dataset': 7}
    assert (f"raw_dataset 7 of {m['rows']['read']} rows" in caplog.text
            and f'eval_dataset 7 of {n_eval} rows' in caplog.text), caplog.text


def _mapped_rss_kb(path: Path) -> int:
    "Resident kB of this process's memory maps of `path` (from /proc/self/smaps)."
    total, inside = 0, False
    for line in Path('/proc/self/smaps').read_text().splitlines():
        if line[:1].isdigit() or line[:1] in 'abcdef' and '-' in line.split()[0]:
            inside = line.rstrip().endswith(str(path))
        elif inside and line.startswith('Rss:'): total += int(line.split()[1])
    return total


@pytest.mark.skipif(not Path('/proc/self/smaps').exists(), reason='needs Linux /proc/self/smaps')
def test_pages_of_mapped_files_leave_resident_memory_and_the_data_stays(tmp_path):
    import time
    import pyarrow as pa, pyarrow.compute as pc
    from alpaca_ft.streaming import mapped_table, pages_released
    path = tmp_path/'ids.arrow'
    values = pa.array(np.arange(8_000_000, dtype=np.int32))
    with pa.ipc.new_stream(str(path), pa.schema([('x', pa.int32())])) as w:
        for i in range(0, len(values), 1_000_000):
            w.write_batch(pa.record_batch([values[i:i + 1_000_000]], ['x']))
    table = mapped_table(path)
    want = pc.sum(table.column('x')).as_py()  # reads every page: 32 MB resident
    assert _mapped_rss_kb(path) > 16_000
    with pages_released(period=0.01):
        time.sleep(0.3)
        assert _mapped_rss_kb(path) < 4_000
        assert pc.sum(table.column('x')).as_py() == want  # read back from the file
    assert table.num_rows == 8_000_000
