"""Duplicates, eval leakage and weighted mixing in `prepare` (issue 16, items 2 and 3), through the library."""
from __future__ import annotations
import json, math, random

import pytest

from alpaca_ft.data import SAMPLE_DATA


def sample_rows() -> list[dict]:
    return [{k: r.get(k) or '' for k in ('instruction', 'input', 'output')}
            for r in json.loads(SAMPLE_DATA.read_text(encoding='utf-8'))]


def prompt(r): return (' '.join(r['instruction'].split()), ' '.join(r['input'].split()))


def test_distinct_rows_split_exactly_as_before():
    "Rows without a repeated prompt: the prompt-group split is the old row shuffle (any size, seed, eval size)."
    from alpaca_ft.split import split_groups, split_indices
    for n, eval_size, seed in ((130, None, 42), (1000, 0.1, 7), (57, 5, 0), (2, None, 3)):
        assert split_groups([f'k{i}' for i in range(n)], eval_size, seed) == split_indices(n, eval_size, seed)


def test_old_split_leaks_copies_new_one_does_not():
    "The same rows given twice: the row shuffle puts copies of eval rows in train; select_rows never does."
    from alpaca_ft.split import split_indices
    from alpaca_ft.prepare import select_rows, split_rows
    rows = sample_rows()
    twice = rows + [dict(r) for r in rows]
    tr, ev = split_indices(len(twice), seed=42)
    assert {prompt(twice[i]) for i in tr} & {prompt(twice[i]) for i in ev}  # what the old code did
    splits, origin, counts, per = select_rows([rows, [dict(r) for r in rows]], seed=42)
    assert counts['duplicates'] == len(rows) and counts['eval_prompts_in_train'] == 0
    assert splits == split_rows(rows, seed=42)
    assert [p['duplicates'] for p in per] == [0, len(rows)] and [p['kept'] for p in per] == [len(rows), 0]
    kept, _, counts, _ = select_rows([rows, [dict(r) for r in rows]], seed=42, dedup=False)
    assert len(kept['train']) + len(kept['eval']) == 2 * len(rows)
    assert not {prompt(r) for r in kept['train']} & {prompt(r) for r in kept['eval']}
    assert counts['duplicates'] == len(rows) and counts['eval_prompts_in_train'] == 0


def test_normalisation_finds_whitespace_and_unicode_variants_only():
    from alpaca_ft.prepare import select_rows
    base = {'instruction': 'Name a colour.', 'input': '', 'output': 'Blue, café.'}
    same = {'instruction': '  Name   a\ncolour. ', 'input': '', 'output': 'Blue,\tcafe\u0301.'}
    other = {'instruction': 'name a colour.', 'input': '', 'output': 'Blue, café.'}  # case counts
    rows = [base, same, other] + [{'instruction': f'q{i}', 'input': '', 'output': 'a'} for i in range(20)]
    _, _, counts, _ = select_rows([rows], eval_size=2, seed=0)
    assert counts['duplicates'] == 1


def test_same_prompt_other_answer_stays_on_one_side():
    from alpaca_ft.prepare import select_rows
    rows = [{'instruction': f'q{i % 7}', 'input': '', 'output': f'answer {i}'} for i in range(70)]
    for seed in range(5):
        splits, _, counts, _ = select_rows([rows], eval_size=10, seed=seed)
        assert counts['duplicates'] == 0 and counts['repeated_prompts'] == 63
        assert not {r['instruction'] for r in splits['train']} & {r['instruction'] for r in splits['eval']}
        assert len(splits['eval']) == 10  # one prompt group of 10 rows


def test_chat_rows_are_deduplicated_by_their_messages():
    from alpaca_ft.prepare import select_rows
    chat = lambda q, a: {'messages': [{'role': 'user', 'content': q}, {'role': 'assistant', 'content': a}]}
    rows = [chat('hi', 'hello'), chat(' hi ', 'hello'), chat('hi', 'hey')]
    rows += [chat(f'q{i}', 'a') for i in range(20)]
    splits, _, counts, _ = select_rows([rows], eval_size=3, seed=1)
    assert counts['duplicates'] == 1 and counts['repeated_prompts'] == 1
    assert counts['eval_prompts_in_train'] == 0


def test_weights_share_the_train_rows_and_draw_with_replacement():
    from alpaca_ft.prepare import select_rows
    rows = sample_rows()
    a, b = rows[:20], rows[20:]
    splits, origin, counts, per = select_rows([a, b], eval_size=10, seed=3, weights=[0.5, 0.5])
    n = len(splits['train'])
    assert n == len(rows) - 10 and origin['train'].count(0) == n // 2 == per[0]['train_rows']
    distinct0 = {json.dumps(r) for r, i in zip(splits['train'], origin['train']) if i == 0}
    assert per[0]['upsampled'] == per[0]['train_rows'] - len(distinct0)
    assert per[0]['upsampled'] > 0 and per[1]['upsampled'] == 0 and counts['upsampled'] == per[0]['upsampled']
    # every distinct train row of the small source is drawn at least once (whole passes, then a sample)
    dumped = lambda rs: {json.dumps(r) for r in rs}
    assert dumped(a) - dumped(splits['eval']) <= dumped(splits['train'])
    # eval: untouched by the mix, no copies, no prompt shared with train
    plain, _, _, _ = select_rows([a, b], eval_size=10, seed=3)
    assert splits['eval'] == plain['eval']
    assert not {prompt(r) for r in splits['train']} & {prompt(r) for r in splits['eval']}
    again = select_rows([a, b], eval_size=10, seed=3, weights=[0.5, 0.5])
    assert again[0] == splits and select_rows([a, b], eval_size=10, seed=4, weights=[0.5, 0.5])[0] != splits


def test_a_zero_weight_leaves_a_source_out_of_train():
    from alpaca_ft.prepare import select_rows
    rows = sample_rows()
    splits, origin, _, per = select_rows([rows[:50], rows[50:]], eval_size=10, seed=0, weights=[0, 1])
    assert 0 not in origin['train'] and per[0]['train_rows'] == 0 and per[0]['eval_rows'] > 0


@pytest.mark.parametrize('weights, msg', [
    ([1], 'one number per source'), ([1, -0.5], '>= 0'), ([0, 0], 'not all be zero'), ([1, math.nan], '>= 0'),
    ([1, math.inf], '>= 0'), ([True, 1], '>= 0'), ('0.7 0.3', 'list of numbers'), (0.7, 'list of numbers')])
def test_bad_weights_raise_before_any_work(tmp_path, monkeypatch, weights, msg):
    import alpaca_ft.prepare as P
    def no_work(*a, **k): raise AssertionError('rows were loaded before the weights were checked')
    monkeypatch.setattr(P, 'iter_rows', no_work)
    rows = sample_rows()
    with pytest.raises(ValueError, match=msg) as e:
        P.prepare_dataset([rows[:50], rows[50:]], out=tmp_path/'out', weights=weights, wandb='disabled',
                          progress=False, verbose=False)
    assert 'weights' in str(e.value)
    assert not (tmp_path/'out').exists()


def test_prepare_records_each_source(tmp_path):
    from alpaca_ft.prepare import prepare_dataset, read_manifest
    rows = sample_rows()
    random.Random(0).shuffle(rows)
    m = prepare_dataset([rows[:40], rows[40:] + rows[:10]], out=tmp_path/'out', max_seq_len=256,
                        weights=[0.25, 0.75], eval_size=13, wandb='disabled', progress=False, verbose=False)
    assert read_manifest(tmp_path/'out')['per_source'] == m['per_source']
    s0, s1 = m['per_source']
    assert (s0['read'], s1['read'], s0['kept'], s1['kept'], s1['duplicates']) == (40, 100, 40, 90, 10)
    assert m['rows']['duplicates'] == 10 and m['rows']['eval_prompts_in_train'] == 0
    assert (s0['weight'], s1['weight']) == (0.25, 0.75) and m['weights'] == [0.25, 0.75]
    train_lines = (tmp_path/'out'/'train.jsonl').read_text(encoding='utf-8').splitlines()
    assert s0['train_rows'] + s1['train_rows'] == len(train_lines) == 130 - 13
    assert s0['train_rows'] == round(0.25 * 117) and s0['upsampled'] == 0 and s1['upsampled'] > 0
    for split in ('train', 'eval'):
        assert abs(s0[f'{split}_tokens'] + s1[f'{split}_tokens'] - 1) < 1e-5


@pytest.mark.parametrize('empty', [[], ()])
def test_an_empty_list_of_data_is_refused_not_read_as_the_sample(tmp_path, empty):
    "`data=[]` is not `data=None`: it names `data`, and nothing is written."
    with pytest.raises(ValueError, match='data is empty'):
        from alpaca_ft.prepare import prepare_dataset
        prepare_dataset(empty, out=tmp_path/'o', progress=False)
    assert not (tmp_path/'o').exists()


def _short_and_long(n:int=120):
    "Two sources: one-word answers, and answers of about sixty words."
    short = [{'instruction': f'Say yes to question {i}.', 'input': '', 'output': 'Yes.'} for i in range(n)]
    long = [{'instruction': f'Describe item {i}.', 'input': '',
             'output': ' '.join(f'word{(i * 7 + j) % 50}' for j in range(60))} for i in range(n)]
    return short, long


def test_weight_by_tokens_shares_out_tokens_not_rows(tmp_path):
    "Half the weight each: by rows the short source gets half the rows and few tokens; by tokens, half the tokens."
    from alpaca_ft.prepare import prepare_dataset
    short, long = _short_and_long()
    common = dict(max_seq_len=256, eval_size=20, weights=[1, 1], wandb='disabled', progress=False, verbose=False)
    by_rows = prepare_dataset([short, long], out=tmp_path/'rows', **common)
    by_tokens = prepare_dataset([short, long], out=tmp_path/'tokens', weight_by='tokens', **common)
    r0, r1 = by_rows['per_source']
    t0, t1 = by_tokens['per_source']
    assert r0['train_rows'] == r1['train_rows'] and r0['train_tokens'] < 0.3  # rows are shared, tokens not
    assert abs(t0['train_tokens'] - 0.5) < 0.03, (t0, t1)  # the sample is every row here: close to exact
    assert t0['train_rows'] > 2 * t1['train_rows'] and t0['upsampled'] > 0  # short rows drawn again
    assert t0['mean_tokens'] < t1['mean_tokens'] and 'mean_tokens' not in r0
    assert by_tokens['weight_by'] == 'tokens' and by_rows['weight_by'] == 'rows'
    # as many tokens as the distinct train rows hold, within one row's worth of rounding per source
    tokens = lambda m: m['splits']['train']['tokens']
    assert abs(tokens(by_tokens) - tokens(by_rows)) < 0.1 * tokens(by_rows)
    again = prepare_dataset([short, long], out=tmp_path/'again', weight_by='tokens', **common)
    assert again['fingerprint'] == by_tokens['fingerprint']


@pytest.mark.parametrize('kw, msg', [(dict(weight_by='tokens'), "weight_by='tokens' needs weights"),
                                     (dict(weights=[1, 1], weight_by='bytes'), 'weight_by must be one of')])
def test_bad_weight_by_is_refused_before_any_work(tmp_path, monkeypatch, kw, msg):
    import alpaca_ft.prepare as P
    def no_work(*a, **k): raise AssertionError('rows were loaded before the options were checked')
    monkeypatch.setattr(P, 'iter_rows', no_work)
    short, long = _short_and_long(10)
    with pytest.raises(ValueError, match=msg):
        P.prepare_dataset([short, long], out=tmp_path/'out', wandb='disabled', progress=False, **kw)
    assert not (tmp_path/'out').exists()


def test_cli_weight_by_tokens(tmp_path):
    "The command line's --weight-by: a summary line per source says the weight is of tokens; bad use exits 2."
    import subprocess, sys
    short, long = _short_and_long()
    files = []
    for name, rows in (('short', short), ('long', long)):
        files.append(tmp_path/f'{name}.jsonl')
        files[-1].write_text(''.join(json.dumps(r) + '\n' for r in rows), encoding='utf-8')
    cli = [sys.executable, '-c', 'import sys; from alpaca_ft.cli import main; sys.exit(main())']
    run = lambda *a: subprocess.run([*cli, 'prepare', *map(str, files),
                                     '--max-seq-len', '256', '--wandb', 'disabled', '--no-progress', *a],
                                    capture_output=True, text=True)
    ok = run('--out', tmp_path/'out', '--weights', '1', '1', '--weight-by', 'tokens')
    assert ok.returncode == 0, ok.stderr
    assert 'weight 1 of tokens' in ok.stderr + ok.stdout
    bad = run('--out', tmp_path/'bad', '--weight-by', 'tokens')
    assert bad.returncode == 2 and '--weight-by tokens needs weights' in bad.stderr
    assert 'Traceback' not in bad.stderr and not (tmp_path/'bad').exists()


def test_weight_by_tokens_counts_what_the_length_limit_leaves(tmp_path):
    "Truncated examples count as truncated, dropped ones as nothing: a source of long rows keeps its share."
    from alpaca_ft.prepare import prepare_dataset
    short, long = _short_and_long(240)
    mixed = [r for pair in zip(short[120:180], long[:60]) for r in pair]  # half short rows, half long ones
    short = short[:120]
    common = dict(eval_size=20, weights=[1, 1], weight_by='tokens', wandb='disabled', progress=False,
                  verbose=False)
    m = prepare_dataset([short, mixed], out=tmp_path/'drop', max_seq_len=64, overlong='drop', **common)
    assert abs(m['per_source'][0]['train_tokens'] - 0.5) < 0.05, m['per_source']
    with pytest.raises(Exception, match=r'rows in memory\): its rows leave no token to train on'):
        prepare_dataset([short, long], out=tmp_path/'none', max_seq_len=32, overlong='drop', **common)
    assert not (tmp_path/'none').exists()


def test_a_source_with_nothing_to_draw_is_named_with_the_reason(tmp_path):
    from alpaca_ft.prepare import prepare_dataset
    short, _ = _short_and_long()
    a, b = tmp_path/'a.jsonl', tmp_path/'b.jsonl'
    a.write_text(''.join(json.dumps(r) + '\n' for r in short), encoding='utf-8')
    b.write_text(''.join(json.dumps(r) + '\n' for r in short[:50]), encoding='utf-8')  # all copies of a's
    for weight_by in ('rows', 'tokens'):
        with pytest.raises(Exception) as e:
            prepare_dataset([str(a), str(b)], out=tmp_path/'out', eval_size=20, weights=[1, 1], weight_by=weight_by,
                            wandb='disabled', progress=False, verbose=False)
        assert str(e.value) == (f'{b}: no train rows to draw from (50 read, 50 exact duplicates dropped, 0 in '
                                'eval), but weights gives it 1'), str(e.value)
        assert not (tmp_path/'out').exists()


def test_weights_may_be_numpy_numbers_but_not_overflow(tmp_path):
    import numpy as np
    from alpaca_ft.prepare import check_weights
    check_weights(np.array([1, 3]), 2)
    check_weights([np.float32(0.5), np.int64(2)], 2)
    with pytest.raises(ValueError, match='weights must have a finite sum'):
        check_weights([1e308, 1e308], 2)
    with pytest.raises(ValueError, match='weights must be finite numbers'):
        check_weights([np.bool_(True), 1], 2)
