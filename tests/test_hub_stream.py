"""Hugging Face datasets are streamed (`load_dataset(..., streaming=True)`): tested offline, with a local
IterableDataset standing in for the Hub."""
import json
import datasets
import pytest

from alpaca_ft.data import SAMPLE_DATA, DataError, iter_rows, load_rows

LOAD_DATASET = datasets.load_dataset  # the real one, for the stand-ins below


def stand_in(monkeypatch, make):
    "Make `datasets.load_dataset` return `make()` (an IterableDataset) and record how it was called."
    calls = []
    def load_dataset(name, *args, **kwargs):
        calls.append((name, args, kwargs))
        return make()
    monkeypatch.setattr(datasets, 'load_dataset', load_dataset)
    return calls


def counting(rows: list[dict], read: list):
    "An IterableDataset of `rows` from a generator that notes in `read` each row it hands over."
    def gen():
        for i, r in enumerate(rows):
            read.append(i)
            yield r
    return datasets.IterableDataset.from_generator(gen)


def test_a_hub_dataset_is_streamed_and_its_first_row_comes_before_the_rest_is_read(monkeypatch):
    rows, read = load_rows(SAMPLE_DATA), []
    calls = stand_in(monkeypatch, lambda: counting(rows, read))
    got = iter_rows('someone/alpaca')
    assert next(got) == rows[0]
    assert calls == [('someone/alpaca', (), {'split': 'train', 'streaming': True})]
    assert len(read) <= 2  # not the other 129 rows
    assert [next(got) for _ in range(9)] == rows[1:10] and len(read) <= 11
    assert list(got) == rows[10:] and len(read) == len(rows)


def test_a_bad_hub_row_is_named_by_the_dataset_and_row_when_reached(monkeypatch):
    rows, read = load_rows(SAMPLE_DATA)[:20], []
    rows[7] = {'instruction': 'x'}
    stand_in(monkeypatch, lambda: counting(rows, read))
    got = iter_rows('someone/alpaca')
    assert [next(got) for _ in range(7)] == rows[:7]
    with pytest.raises(DataError, match=r"^someone/alpaca, row 7: missing field 'output'$"): next(got)
    assert len(read) == 8


def test_prepare_from_a_streamed_hub_dataset_writes_what_the_file_gives(tmp_path, monkeypatch):
    from alpaca_ft.prepare import prepare_dataset
    p = tmp_path/'rows.jsonl'
    p.write_text(''.join(json.dumps(r) + '\n' for r in load_rows(SAMPLE_DATA)), encoding='utf-8')
    calls = stand_in(monkeypatch, lambda: LOAD_DATASET('json', data_files=str(p), split='train', streaming=True))
    kw = dict(max_seq_len=256, eval_size=10, progress=False, verbose=False)
    hub = prepare_dataset('someone/alpaca', tmp_path/'hub', **kw)
    local = prepare_dataset(str(p), tmp_path/'local', **kw)
    assert [c[2]['streaming'] for c in calls] == [True]
    assert hub['sources'] == ['someone/alpaca'] and hub['rows'] == local['rows']
    assert hub['fingerprint'] == local['fingerprint']  # the same packs, byte for byte


def test_a_conversation_the_template_refuses_is_named_by_its_hub_row(tmp_path, monkeypatch):
    from alpaca_ft.prepare import prepare_dataset
    from test_chat import REFUSED, gemma_rows, templated
    rows = gemma_rows(bad=17)
    stand_in(monkeypatch, lambda: datasets.IterableDataset.from_generator(lambda: iter(rows)))
    with pytest.raises(DataError) as e:
        prepare_dataset('someone/chats', tmp_path/'out', tokenizer=templated('tiny', 'gemma'), template='chat',
                        eval_size=4, max_seq_len=256, progress=False, verbose=False)
    assert str(e.value) == f'someone/chats, row 17: {REFUSED}'
    assert not (tmp_path/'out').exists()
