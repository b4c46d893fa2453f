"""`prepare` in bounded memory (issue 16, item 1): token ids streamed through Arrow files on disk give the same
packs, in the same order, as the in-memory path did before, on the 1,000 real Alpaca-GPT4 rows."""
from __future__ import annotations
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_dir() -> Path:
    env = os.environ.get('ALPACA_FT_SHARED')
    return Path(env) if env else REPO.parent/'shared'


@pytest.fixture(scope='module')
def real():
    tok_dir, data = shared_dir()/'assets/llama-2-tokenizer', shared_dir()/'data/alpaca_gpt4_sample1k.jsonl'
    if not (tok_dir.exists() and data.exists()):
        pytest.skip(f'real material absent: {shared_dir()} (set ALPACA_FT_SHARED to the shared/ folder)')
    from alpaca_ft.data import load_rows
    from alpaca_ft.prepare import load_data_tokenizer, split_rows, tokenize_splits
    rows, tok = load_rows(data), load_data_tokenizer(str(tok_dir))
    splits = split_rows(rows, 0.1, seed=42)
    examples, counts = tokenize_splits(splits, tok, max_seq_len=1024, progress=False)  # the in-memory path
    return dict(rows=rows, tok=tok, splits=splits, examples=examples, counts=counts, data=data,
                tok_dir=tok_dir)


@pytest.mark.parametrize('strategy', ['bfd', 'greedy', 'none'])
def test_streamed_packs_equal_the_in_memory_ones_on_real_rows(real, strategy, tmp_path):
    "Token ids, labels, position ids, seq_lengths and the datasets fingerprint: all as before, pack for pack."
    from alpaca_ft.prepare import pack_splits
    from alpaca_ft.streaming import pack_table, tokenize_to_disk
    tables, counts = tokenize_to_disk(real['splits'], real['tok'], tmp_path, max_seq_len=1024, progress=False,
                                      batch_size=333)
    assert counts == real['counts']
    before = pack_splits(real['examples'], 1024, strategy, progress=False)
    for name, table in tables.items():
        packs = pack_table(table, 1024, strategy, tmp_path, name, progress=False, per_batch=37)
        old = before[name]
        assert len(packs) == len(old) > 0
        for col in ('input_ids', 'labels', 'position_ids', 'seq_lengths'):
            assert packs[col] == old[col], (name, col)
        assert packs._fingerprint == old._fingerprint


def test_prepare_is_byte_identical_run_to_run_and_with_num_proc(real, tmp_path, monkeypatch):
    import tempfile
    from alpaca_ft.prepare import prepare_dataset
    (tmp_path/'tmp').mkdir()
    monkeypatch.setattr(tempfile, 'tempdir', str(tmp_path/'tmp'))  # where the token files go
    kw = dict(data=str(real['data']), tokenizer=str(real['tok_dir']), max_seq_len=1024, eval_size=0.1,
              wandb='disabled', progress=False, verbose=False)
    a = prepare_dataset(out=tmp_path/'a', **kw)
    b = prepare_dataset(out=tmp_path/'b', **kw)
    c = prepare_dataset(out=tmp_path/'c', num_proc=2, **kw)
    files = lambda d: {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob('*')) if p.is_file()}
    assert files(tmp_path/'a') == files(tmp_path/'b')
    assert a['fingerprint'] == b['fingerprint'] == c['fingerprint']
    assert files(tmp_path/'a'/'train') == files(tmp_path/'c'/'train')
    assert not list((tmp_path/'tmp').iterdir())  # the token files went with their temp folder
