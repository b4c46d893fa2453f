"""End-to-end tests of `alpaca_ft prepare`, run as the real command in a subprocess.

Every CLI call costs a few seconds (mostly imports), so the runs the selected tests need are started up front, in
parallel (one per CPU, at most 8), by the module-scoped `runs` fixture; each test then waits for the runs it uses. A test says
which runs it needs with `@uses(...)`; `runs.get(name)` also starts a run on demand if it was not prefetched.
"""
from __future__ import annotations
import json, os, random, re, shutil, subprocess, sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from alpaca_ft.data import SAMPLE_DATA  # light import: no datasets/transformers

REPO = Path(__file__).resolve().parents[1]
L = 512  # --max-seq-len of the ordinary runs: small, to keep them fast
SAMPLE_ROWS = 130  # rows in the bundled sample
COMMON = ['--wandb', 'disabled', '--max-seq-len', str(L)]


# ---------------------------------------------------------------- running the command

def cli_cmd() -> list[str]:
    "The `alpaca_ft` console script of this venv (cli.py has no `__main__` guard, so `-m alpaca_ft.cli` does nothing)."
    exe = Path(sys.executable).parent/'alpaca_ft'
    if exe.exists(): return [str(exe)]
    found = shutil.which('alpaca_ft')
    if found: return [found]
    return [sys.executable, '-c', 'import sys; from alpaca_ft.cli import main; sys.exit(main())']


def cli_env(**extra) -> dict:
    env = dict(os.environ)
    env.pop('WANDB_MODE', None)  # the --wandb flag decides
    env.update(WANDB_SILENT='true', MPLBACKEND='Agg', HF_HUB_OFFLINE='1', HF_DATASETS_OFFLINE='1',
               TOKENIZERS_PARALLELISM='false')
    env.update(extra)
    return env


def run_cli(args, cwd, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(cli_cmd() + ['prepare', *map(str, args)], cwd=cwd, env=env or cli_env(),
                          capture_output=True, text=True, timeout=300)


@dataclass
class Result:
    workdir: Path
    out: Path
    proc: subprocess.CompletedProcess | None = None
    extra: dict = field(default_factory=dict)
    skip: str | None = None
    _ds: dict = field(default_factory=dict)

    def ok(self):
        "Skip when the run's material is absent; fail with the command's output when it did not exit 0."
        if self.skip: pytest.skip(self.skip)
        assert self.proc.returncode == 0, f'exit {self.proc.returncode}\nstdout:\n{self.proc.stdout}\nstderr:\n{self.proc.stderr[-4000:]}'
        return self

    @property
    def manifest(self) -> dict: return json.loads((self.out/'manifest.json').read_text(encoding='utf-8'))

    def dataset(self, split):
        if split not in self._ds:
            import datasets
            self._ds[split] = datasets.load_from_disk(str(self.out/split)).to_dict()
        return self._ds[split]

    def jsonl(self, split) -> list[dict]:
        return [json.loads(l) for l in (self.out/f'{split}.jsonl').read_text(encoding='utf-8').splitlines() if l.strip()]


# ---------------------------------------------------------------- the runs

RUNS = {}

def run_spec(name):
    def deco(fn): RUNS[name] = fn; return fn
    return deco

def simple(name, *args, leaf='prepared'):
    "A run of `prepare` on the bundled sample with `COMMON` plus `args`."
    def fn(wd):
        out = wd/leaf
        return Result(wd, out, run_cli([*COMMON, *args, '--out', out], wd))
    RUNS[name] = fn

simple('default')
simple('default_again', leaf='prepared_again')
simple('none', '--pack', 'none')
simple('greedy', '--pack', 'greedy')
simple('drop', '--overlong', 'drop')  # the default run is the --overlong truncate one
simple('eval20', '--eval-size', '20')
simple('eval025', '--eval-size', '0.25')
simple('toi', '--train-on-inputs')


def sample_rows() -> list[dict]: return json.loads(SAMPLE_DATA.read_text(encoding='utf-8'))

def write_jsonl(path, rows):
    path.write_text(''.join(json.dumps(r, ensure_ascii=False) + '\n' for r in rows), encoding='utf-8')
    return path


@run_spec('seed7')
def _seed7_over_existing_dir(wd):
    "Into an existing DIR: refused, then replaced with --overwrite (and --seed 7, so this run is also the other-seed one)."
    out = wd/'prepared'
    out.mkdir()
    (out/'keep.txt').write_text('precious', encoding='utf-8')
    refused = run_cli([*COMMON, '--seed', '7', '--out', out], wd)
    not_ours = run_cli([*COMMON, '--seed', '7', '--out', out, '--overwrite'], wd)  # no manifest.json: not ours
    after_refusal = {str(p.relative_to(out)): p.read_bytes() for p in out.rglob('*') if p.is_file()}
    siblings = sorted(p.name for p in wd.iterdir())
    # now it looks like an earlier output (a prepare manifest, not just any manifest.json): replaced
    (out/'manifest.json').write_text('{"format_version": 1, "fingerprint": "0"}', encoding='utf-8')
    forced = run_cli([*COMMON, '--seed', '7', '--out', out, '--overwrite'], wd)
    return Result(wd, out, forced, extra=dict(refused=refused, not_ours=not_ours, after_refusal=after_refusal,
                                              siblings=siblings))


@run_spec('multi')
def _multi(wd):
    rows = sample_rows()
    a, b = write_jsonl(wd/'part_a.jsonl', rows[:50]), write_jsonl(wd/'part_b.jsonl', rows[50:])
    out = wd/'prepared'
    return Result(wd, out, run_cli([a, b, *COMMON, '--out', out], wd), extra=dict(sources=[str(a), str(b)]))


@run_spec('twice')
def _twice(wd):
    "The same file given twice: its copies must not reach train from eval (they are dropped by default)."
    data, out = write_jsonl(wd/'rows.jsonl', sample_rows()), wd/'prepared'
    return Result(wd, out, run_cli([data, data, *COMMON, '--out', out], wd))


@run_spec('twice_keep')
def _twice_keep(wd):
    data, out = write_jsonl(wd/'rows.jsonl', sample_rows()), wd/'prepared'
    return Result(wd, out, run_cli([data, data, *COMMON, '--keep-duplicates', '--out', out], wd))


@run_spec('mix')
def _mix(wd):
    "Two sources, 30 and 100 rows, weighted 0.7 / 0.3: the small one is drawn with replacement."
    rows = sample_rows()
    a, b = write_jsonl(wd/'small.jsonl', rows[:30]), write_jsonl(wd/'big.jsonl', rows[30:])
    outs = [wd/'prepared', wd/'prepared_again']
    procs = [run_cli([a, b, *COMMON, '--weights', '0.7', '0.3', '--out', o], wd) for o in outs]
    return Result(wd, outs[0], procs[0],
                  extra=dict(again=procs[1], out_again=outs[1], sources=[str(a), str(b)]))


@run_spec('bad_weights')
def _bad_weights(wd):
    data = write_jsonl(wd/'rows.jsonl', sample_rows())
    procs = {w: run_cli([data, data, *COMMON, '--weights', *w.split(), '--out', wd/'prepared'], wd)
             for w in ('1', '1 -1', '0 0', '1 nan')}
    left = sorted(p.name for p in wd.iterdir())
    return Result(wd, wd/'prepared', procs['1'], extra=dict(procs=procs, left=left))


@run_spec('chat')
def _chat(wd):
    rows, chats = sample_rows(), []
    for i, r in enumerate(rows[:40]):
        user = r['instruction'] + (f"\n\n{r['input']}" if r['input'] else '')
        msgs = [{'role': 'user', 'content': user}, {'role': 'assistant', 'content': r['output']}]
        if i % 3 == 0: msgs = [{'role': 'system', 'content': 'You are a helpful assistant.'}] + msgs
        if i % 4 == 1:  # a two-turn conversation
            msgs += [{'role': 'user', 'content': 'Say that again, shorter.'}, {'role': 'assistant', 'content': r['output'][:40]}]
        chats.append({'messages': msgs})
    data, out = write_jsonl(wd/'chat.jsonl', chats), wd/'prepared'
    return Result(wd, out, run_cli([data, *COMMON, '--template', 'chat', '--out', out], wd))


@run_spec('wandb_offline')
def _wandb_offline(wd):
    wdir, out = wd/'wandb_dir', wd/'prepared'
    wdir.mkdir()
    proc = run_cli(['--wandb', 'offline', '--max-seq-len', L, '--out', out], wd, env=cli_env(WANDB_DIR=str(wdir)))
    return Result(wd, out, proc, extra=dict(wandb_dir=wdir))


# bad input: (file name, bytes to write or None for no file, reason fragment, where fragment or None)
BAD = {
    'truncated_json': ('cut.json', b'[\n  {"instruction": "a", "output": "b"},\n  {"instruction": "c", "output": "d"},\n  {"instruction": "e", "outp',
                       'invalid JSON', 'line 4'),
    'jsonl_not_json': ('notjson.jsonl', b'{"instruction": "a", "output": "b"}\nthis is not json\n{"instruction": "c", "output": "d"}\n',
                       'not a JSON object', 'line 2'),
    'missing_instruction': ('noinst.jsonl', b'{"instruction": "a", "output": "b"}\n{"instruction": "c", "output": "d"}\n{"input": "x", "output": "y"}\n',
                            "missing field 'instruction'", 'line 3'),
    'missing_output': ('noout.jsonl', b'{"instruction": "a", "output": "b"}\n{"instruction": "c", "input": "x"}\n',
                       "missing field 'output'", 'line 2'),
    'non_string_field': ('number.json', b'[{"instruction": "a", "output": "b"}, {"instruction": "c", "output": 3}]',
                         "field 'output' must be a string, got int", 'row 1'),  # JSON arrays report the 0-based row index
    'empty_file': ('empty.jsonl', b'', 'the file is empty', None),
    'binary_file': ('blob.json', bytes(random.Random(0).randrange(256) for _ in range(4096)) + b'\x00\x00' * 16,
                    'binary file', None),
    'unknown_extension': ('rows.txt', b'{"instruction": "a", "output": "b"}\n', "unknown extension '.txt'", None),
    'missing_path': ('does_not_exist.jsonl', None, 'no such file', None),
}

def _bad(case):
    def fn(wd):
        name, content, *_ = BAD[case]
        data, out = wd/name, wd/'prepared'
        if content is not None: data.write_bytes(content)
        proc = run_cli([data, *COMMON, '--out', out], wd)
        return Result(wd, out, proc, extra=dict(data=data, left=sorted(p.name for p in wd.iterdir())))
    return fn

for _case in BAD: RUNS[f'bad_{_case}'] = _bad(_case)


@run_spec('refusals')
def _refusals(wd):
    "Runs that must stop in the first second with exit 2, one line naming the cause, and nothing deleted or written."
    mydata = wd/'mydata'
    mydata.mkdir()
    data = write_jsonl(mydata/'rows.jsonl', sample_rows()[:40])
    (mydata/'notes.txt').write_text('mine', encoding='utf-8')
    inside = run_cli([data, *COMMON, '--out', mydata, '--overwrite'], wd)
    env = cli_env(HOME=str(wd), NETRC=str(wd/'no-netrc'))
    env.pop('WANDB_API_KEY', None)
    online = run_cli(['--wandb', 'online', '--max-seq-len', L, '--out', wd/'online'], wd, env=env)
    return Result(wd, mydata, inside, extra=dict(online=online, left=sorted(p.name for p in mydata.iterdir()),
                                                  siblings=sorted(p.name for p in wd.iterdir())))


# real material from the shared folder
def shared_dir() -> Path:
    env = os.environ.get('ALPACA_FT_SHARED')
    return Path(env) if env else REPO.parent/'shared'

def shared_file(rel) -> tuple[Path, str | None]:
    p = shared_dir()/rel
    return p, None if p.exists() else (f'real material absent: {p} not found (set ALPACA_FT_SHARED to the shared/ '
                                        f'folder, or place it at ../shared beside the repository)')

@run_spec('real_gpt4_1k')
def _real_gpt4(wd):
    tok, why1 = shared_file('assets/llama-2-tokenizer')
    data, why2 = shared_file('data/alpaca_gpt4_sample1k.jsonl')
    out = wd/'prepared'
    if why1 or why2: return Result(wd, out, skip=why1 or why2)
    return Result(wd, out, run_cli([data, '--tokenizer', tok, '--pack', 'greedy', '--max-seq-len', 1024,
                                    '--eval-size', 0.1, '--wandb', 'disabled', '--out', out], wd))

def _zh_rows():
    data, why = shared_file('data/alpaca_zh_2k.json')
    return data, why, (None if why else json.loads(data.read_text(encoding='utf-8')))

@run_spec('real_zh')
def _real_zh(wd):
    data, why, rows = _zh_rows()
    out = wd/'prepared'
    if why: return Result(wd, out, skip=why)
    return Result(wd, out, run_cli([data, *COMMON, '--out', out], wd), extra=dict(n=len(rows)))

# ---------------------------------------------------------------- the fixture that runs them

def uses(*names):
    "Declare the runs a test needs, so that the `runs` fixture can start them all up front."
    def deco(fn): fn._prepare_runs = names; return fn
    return deco


class Runs:
    def __init__(self, root: Path, workers: int):
        self.root, self.pool, self.futures = root, ThreadPoolExecutor(max_workers=workers), {}

    def start(self, name):
        if name not in self.futures:
            wd = self.root/name
            wd.mkdir()
            self.futures[name] = self.pool.submit(RUNS[name], wd)
        return self.futures[name]

    def get(self, name) -> Result: return self.start(name).result()


@pytest.fixture(scope='module')
def runs(request, tmp_path_factory):
    r = Runs(tmp_path_factory.mktemp('prepare_runs'), workers=min(8, max(2, os.cpu_count() or 1)))
    for item in request.session.items:  # the selected tests of this module, in order
        if getattr(item, 'module', None) is not sys.modules[__name__]: continue
        for name in getattr(item.function, '_prepare_runs', ()): r.start(name)
        case = getattr(getattr(item, 'callspec', None), 'params', {}).get('case')
        if case in BAD: r.start(f'bad_{case}')
    yield r
    r.pool.shutdown(wait=True, cancel_futures=True)


# ---------------------------------------------------------------- helpers on packs

def unpack(ds) -> list[tuple[tuple, tuple]]:
    "The examples of packed rows: each row split at every `position_ids == 0`."
    out = []
    for ids, labels, pos in zip(ds['input_ids'], ds['labels'], ds['position_ids']):
        starts = [i for i, p in enumerate(pos) if p == 0] + [len(pos)]
        out += [(tuple(ids[s:e]), tuple(labels[s:e])) for s, e in zip(starts, starts[1:])]
    return out

def check_positions(ds):
    "Every row has equal-length columns and `position_ids` counting 0, 1, ... from the start of each example."
    for ids, labels, pos in zip(ds['input_ids'], ds['labels'], ds['position_ids']):
        assert len(ids) == len(labels) == len(pos) > 0
        assert pos[0] == 0
        assert all(p == 0 or p == q + 1 for q, p in zip(pos, pos[1:]))

def norm(r: dict) -> str: return json.dumps({k: r.get(k) or '' for k in ('instruction', 'input', 'output')}, sort_keys=True)

def files_under(d: Path) -> dict: return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob('*')) if p.is_file()}


# ---------------------------------------------------------------- 1. the default run

@uses('default')
def test_default_run_writes_everything(runs):
    r = runs.get('default').ok()
    for rel in ('train', 'eval', 'train.jsonl', 'eval.jsonl', 'manifest.json', 'plots'):
        assert (r.out/rel).exists(), rel
    assert {p.name for p in (r.out/'plots').iterdir()} >= {'lengths.png', 'packing.png', 'example.html'}
    # atomic write: nothing but the output folder is left beside it
    assert sorted(p.name for p in r.workdir.iterdir()) == ['prepared']
    assert 'fingerprint' in r.proc.stdout and 'train' in r.proc.stdout


@uses('default')
def test_default_run_loads_in_a_plain_python(runs, tmp_path):
    r = runs.get('default').ok()
    code = ("import json, sys, datasets\n"
            "res = {}\n"
            "for split in ('train', 'eval'):\n"
            "    d = datasets.load_from_disk(sys.argv[1] + '/' + split)\n"
            "    res[split] = {'n': len(d), 'columns': sorted(d.column_names), 'types': {k: str(d.features[k]) for k in d.column_names},\n"
            "                  'tokens': sum(map(len, d['input_ids']))}\n"
            "res['alpaca_ft_imported'] = any(m.split('.')[0] == 'alpaca_ft' for m in sys.modules)\n"
            "print(json.dumps(res))\n")
    p = subprocess.run([sys.executable, '-c', code, str(r.out)], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-3000:]
    res = json.loads(p.stdout.strip().splitlines()[-1])
    assert res['alpaca_ft_imported'] is False
    m = r.manifest
    for split in ('train', 'eval'):
        assert res[split]['columns'] == ['input_ids', 'labels', 'position_ids', 'seq_lengths']
        assert all('int32' in t for t in res[split]['types'].values()), res[split]['types']
        assert res[split]['n'] == m['splits'][split]['sequences']
        assert res[split]['tokens'] == m['splits'][split]['tokens']


@uses('default')
def test_default_manifest(runs):
    r = runs.get('default').ok()
    m = r.manifest
    assert m['format_version'] == 1
    assert m['sources'] == ['alpaca_ft:sample_alpaca.json']
    assert m['tokenizer'] == 'alpaca_ft/tiny-bpe'
    assert (m['template'], m['max_seq_len'], m['pack'], m['train_on_inputs'], m['seed']) == ('alpaca', L, 'bfd', False, 42)
    rows = m['rows']
    assert set(rows) >= {'read', 'invalid', 'truncated', 'dropped'}
    assert rows['read'] == SAMPLE_ROWS and rows['dropped'] == 0 and rows['invalid'] == 0
    assert set(m['splits']) == {'train', 'eval'}
    assert sum(s['examples'] for s in m['splits'].values()) == rows['read'] - rows['dropped']
    assert m['splits']['eval']['examples'] == SAMPLE_ROWS // 10  # default: 1000, at most 10% of the rows
    assert isinstance(m['fingerprint'], str) and len(m['fingerprint']) == 64
    for split, s in m['splits'].items():
        ds = r.dataset(split)
        assert s['sequences'] == len(ds['input_ids'])
        assert s['tokens'] == sum(map(len, ds['input_ids']))
        assert s['label_tokens'] == sum(t != -100 for l in ds['labels'] for t in l)
        assert 0 < s['label_tokens'] < s['tokens']
        assert abs(s['fill'] - s['tokens']/(s['sequences']*L)) <= 1e-6
        assert s['examples'] == len(unpack(ds))
        assert max(map(len, ds['input_ids'])) <= L


@uses('default')
def test_default_jsonl_is_the_split(runs):
    r = runs.get('default').ok()
    train, ev = r.jsonl('train'), r.jsonl('eval')
    m = r.manifest
    assert len(train) == m['splits']['train']['examples'] and len(ev) == m['splits']['eval']['examples']
    assert Counter(map(norm, train + ev)) == Counter(map(norm, sample_rows()))
    assert not set(map(norm, train)) & set(map(norm, ev))


# ---------------------------------------------------------------- 2. reproducibility

@uses('default', 'default_again')
def test_same_args_give_byte_identical_output(runs):
    a, b = runs.get('default').ok(), runs.get('default_again').ok()
    fa, fb = files_under(a.out), files_under(b.out)
    assert sorted(fa) == sorted(fb)
    different = [k for k in fa if fa[k] != fb[k]]
    assert not different, f'files that differ between two identical runs: {different}'


@uses('default', 'seed7')
def test_other_seed_gives_other_split(runs):
    a, b = runs.get('default').ok(), runs.get('seed7').ok()
    assert b.manifest['seed'] == 7
    assert (a.out/'eval.jsonl').read_bytes() != (b.out/'eval.jsonl').read_bytes()
    assert Counter(map(norm, b.jsonl('train') + b.jsonl('eval'))) == Counter(map(norm, sample_rows()))
    assert a.manifest['fingerprint'] != b.manifest['fingerprint']


# ---------------------------------------------------------------- 3. packing keeps every example intact

@uses('default', 'none')
def test_bfd_packs_hold_exactly_the_examples(runs):
    bfd, none = runs.get('default').ok(), runs.get('none').ok()
    assert bfd.manifest['pack'] == 'bfd' and none.manifest['pack'] == 'none'
    for split in ('train', 'eval'):
        packs, rows = bfd.dataset(split), none.dataset(split)
        check_positions(packs); check_positions(rows)
        assert all(pos == list(range(len(pos))) for pos in rows['position_ids'])  # one example per row
        singles = list(zip(map(tuple, rows['input_ids']), map(tuple, rows['labels'])))
        assert Counter(unpack(packs)) == Counter(singles)
        assert max(map(len, packs['input_ids'])) <= L
        assert len(packs['input_ids']) < len(rows['input_ids'])  # packing actually packed
        assert bfd.manifest['splits'][split]['tokens'] == none.manifest['splits'][split]['tokens']
        assert bfd.manifest['splits'][split]['label_tokens'] == none.manifest['splits'][split]['label_tokens']
        assert none.manifest['splits'][split]['sequences'] == none.manifest['splits'][split]['examples']


@uses('greedy', 'none')
def test_greedy_packs_are_full_and_in_order(runs):
    greedy, none = runs.get('greedy').ok(), runs.get('none').ok()
    for split in ('train', 'eval'):
        packs, rows = greedy.dataset(split), none.dataset(split)
        assert packs['input_ids'] and all(len(x) == L for x in packs['input_ids'])
        assert all(len(x) == L for x in packs['labels']) and all(p == list(range(L)) for p in packs['position_ids'])
        flat = [t for x in rows['input_ids'] for t in x]
        kept = len(flat) // L * L
        assert [t for x in packs['input_ids'] for t in x] == flat[:kept]  # the article's concatenate-and-cut
        assert [t for x in packs['labels'] for t in x] == [t for x in rows['labels'] for t in x][:kept]
        s = greedy.manifest['splits'][split]
        assert s['fill'] == 1.0 and s['tokens'] == kept and s['sequences'] == kept // L


# ---------------------------------------------------------------- 4. over-long examples

@uses('default', 'drop')
def test_overlong_truncate_and_drop(runs):
    "The bundled sample has a few rows over 512 tokens: the default run truncates them, --overlong drop drops them."
    t, d = runs.get('default').ok(), runs.get('drop').ok()
    mt, md = t.manifest, d.manifest
    assert mt['max_seq_len'] == md['max_seq_len'] == L
    assert mt['rows']['truncated'] > 0 and mt['rows']['dropped'] == 0
    assert md['rows']['dropped'] > 0 and md['rows']['truncated'] == 0
    assert mt['rows']['truncated'] == md['rows']['dropped']  # same seed, same examples over the limit
    for m in (mt, md):
        assert m['rows']['read'] == SAMPLE_ROWS
        assert sum(s['examples'] for s in m['splits'].values()) == m['rows']['read'] - m['rows']['dropped']
    for r in (t, d):
        for split in ('train', 'eval'):
            ex = unpack(r.dataset(split))
            assert len(ex) == r.manifest['splits'][split]['examples']
            assert max(len(i) for i, _ in ex) <= L
    truncated = [i for split in ('train', 'eval') for i, _ in unpack(t.dataset(split)) if len(i) == L]
    assert len(truncated) >= mt['rows']['truncated']
    kept = Counter(i for split in ('train', 'eval') for i, _ in unpack(d.dataset(split)))
    assert not kept & Counter(truncated)  # what was truncated in one run is absent from the other
    assert md['splits']['train']['tokens'] < mt['splits']['train']['tokens']


# ---------------------------------------------------------------- 5. --eval-size

@uses('eval20', 'eval025')
@pytest.mark.parametrize('run, n_eval', [('eval20', 20), ('eval025', round(0.25*SAMPLE_ROWS))])
def test_eval_size(runs, run, n_eval):
    r = runs.get(run).ok()
    assert n_eval in (20, 32)
    assert len(r.jsonl('eval')) == n_eval and len(r.jsonl('train')) == SAMPLE_ROWS - n_eval
    assert r.manifest['splits']['eval']['examples'] == n_eval
    assert r.manifest['splits']['train']['examples'] == SAMPLE_ROWS - n_eval


# ---------------------------------------------------------------- 6. --train-on-inputs

@uses('default', 'toi')
def test_train_on_inputs_labels_more(runs):
    base, toi = runs.get('default').ok(), runs.get('toi').ok()
    assert toi.manifest['train_on_inputs'] is True
    for split in ('train', 'eval'):
        b, t = base.manifest['splits'][split], toi.manifest['splits'][split]
        assert t['tokens'] == b['tokens'] and t['label_tokens'] > b['label_tokens']
        # every token is a label except the first (BOS) of each example
        assert t['label_tokens'] == t['tokens'] - t['examples']
        for ids, labels in unpack(toi.dataset(split)):
            assert labels[0] == -100 and list(labels[1:]) == list(ids[1:])


# ---------------------------------------------------------------- 7. an existing DIR

@uses('seed7')
def test_existing_dir_needs_overwrite(runs):
    r = runs.get('seed7')
    refused = r.extra['refused']
    assert refused.returncode == 2, refused.stderr[-2000:]
    err = refused.stderr.strip().splitlines()
    assert len(err) == 1 and 'exists' in err[0] and '--overwrite' in err[0] and str(r.out) in err[0], refused.stderr
    not_ours = r.extra['not_ours']
    assert not_ours.returncode == 2, not_ours.stderr[-2000:]
    err = not_ours.stderr.strip().splitlines()
    assert len(err) == 1 and str(r.out) in err[0] and 'did not make it' in err[0], not_ours.stderr
    assert r.extra['after_refusal'] == {'keep.txt': b'precious'}  # untouched, --overwrite or not
    assert r.extra['siblings'] == ['prepared']  # no temporary folder left behind
    r.ok()
    assert not (r.out/'keep.txt').exists()
    assert (r.out/'manifest.json').exists() and (r.out/'train').is_dir()
    assert sorted(p.name for p in r.workdir.iterdir()) == ['prepared']


@uses('refusals')
def test_overwrite_refuses_the_folder_of_an_input(runs):
    "`prepare mydata/rows.jsonl --out mydata --overwrite` deleted the input and the user's notes, and exited 0."
    r = runs.get('refusals')
    assert r.proc.returncode == 2, r.proc.stderr[-2000:]
    err = r.proc.stderr.strip().splitlines()
    assert len(err) == 1 and str(r.out) in err[0] and 'holds the input' in err[0], r.proc.stderr
    assert r.extra['left'] == ['notes.txt', 'rows.jsonl']


@uses('refusals')
def test_wandb_online_without_a_key_is_refused_first(runs):
    "Failed with a traceback after the output had been written."
    p = runs.get('refusals').extra['online']
    assert p.returncode == 2, p.stderr[-2000:]
    err = p.stderr.strip().splitlines()
    assert len(err) == 1 and 'wandb online needs an API key' in err[0], p.stderr
    left = [n for n in runs.get('refusals').extra['siblings'] if n not in ('.cache', '.config')]  # HOME is wd here
    assert left == ['mydata']  # no output, no temp folder, no wandb folder


# ---------------------------------------------------------------- 8. bad input

@pytest.mark.parametrize('case', list(BAD))
def test_bad_input(runs, case):
    name, content, reason, where = BAD[case]
    r = runs.get(f'bad_{case}')
    p = r.proc
    assert p.returncode == 2, f'exit {p.returncode}\nstderr:\n{p.stderr[-3000:]}'
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    line = lines[0]
    assert line.startswith('alpaca_ft prepare: error: '), line
    assert name in line and str(r.extra['data']) in line, line
    assert reason in line, line
    if where: assert f'{name}, {where}:' in line, line
    assert not r.out.exists()
    assert r.extra['left'] == ([name] if content is not None else []), r.extra['left']  # nothing written beside it


# ---------------------------------------------------------------- 9. several files

@uses('multi')
def test_several_data_files(runs):
    r = runs.get('multi').ok()
    m = r.manifest
    assert m['sources'] == r.extra['sources']
    assert m['rows']['read'] == 50 + 80 == SAMPLE_ROWS
    assert sum(s['examples'] for s in m['splits'].values()) == m['rows']['read'] - m['rows']['dropped']
    assert Counter(map(norm, r.jsonl('train') + r.jsonl('eval'))) == Counter(map(norm, sample_rows()))


# ---------------------------------------------------------------- 10. chat rows

@uses('chat')
def test_chat_template(runs):
    r = runs.get('chat').ok()
    m = r.manifest
    assert m['template'] == 'chat' and m['rows']['read'] == 40
    assert (r.out/'train').is_dir() and (r.out/'eval').is_dir()
    assert all('messages' in row for row in r.jsonl('train') + r.jsonl('eval'))
    for split in ('train', 'eval'):
        ds, s = r.dataset(split), m['splits'][split]
        check_positions(ds)
        assert 0 < s['label_tokens'] < s['tokens']
        assert len(unpack(ds)) == s['examples']
        for ids, labels in unpack(ds):  # the prompt is masked, the answer is not
            assert labels[0] == -100 and any(t != -100 for t in labels) and labels.count(-100) > 1


# ---------------------------------------------------------------- W&B offline

@uses('wandb_offline')
def test_wandb_offline_run(runs):
    r = runs.get('wandb_offline').ok()
    wdir = r.extra['wandb_dir']
    found = sorted(wdir.rglob('offline-run-*'))
    assert found and found[0].is_dir(), sorted(str(p.relative_to(wdir)) for p in wdir.rglob('*'))
    run_dir = found[0]
    tables = {re.sub(r'_\d+_[0-9a-f]+\.table\.json$', '', p.name) for p in run_dir.rglob('*.table.json')}
    assert tables >= {'raw_dataset', 'train_dataset', 'eval_dataset'}, tables
    blob = b''.join(p.read_bytes() for p in run_dir.glob('*.wandb'))
    assert f'{r.out.name}_packed'.encode() in blob  # the dataset artifact
    assert f'{r.out.name}_raw'.encode() in blob  # and the raw rows'
    record = json.loads((r.out/'wandb_artifact.json').read_text(encoding='utf-8'))
    assert record['name'] == f'{r.out.name}_packed' and record['raw']['name'] == f'{r.out.name}_raw'
    assert not (r.workdir/'wandb').exists()  # nothing outside WANDB_DIR
    assert (r.out/'manifest.json').exists()


# ---------------------------------------------------------------- 11. real material

@uses('real_gpt4_1k')
def test_real_alpaca_gpt4_greedy_like_the_article(runs):
    r = runs.get('real_gpt4_1k').ok()
    m = r.manifest
    assert m['rows']['read'] == 1000 and m['pack'] == 'greedy' and m['max_seq_len'] == 1024
    assert m['splits']['eval']['examples'] == 100
    n = m['splits']['train']['sequences'] + m['splits']['eval']['sequences']
    assert 195 <= n <= 230, n  # the article: a little over 11k sequences for 52K rows -> ~215 for 1,000
    assert len(r.dataset('eval')['input_ids']) == m['splits']['eval']['sequences']


@uses('real_zh')
def test_real_chinese_data(runs):
    "The real Chinese rows prepare with the bundled tokenizer; the one row with a blank output is skipped and counted."
    r = runs.get('real_zh').ok()
    m = r.manifest
    assert m['rows']['read'] == r.extra['n'] and m['rows']['invalid'] == 1
    assert "row 54: field 'output' is empty" in r.proc.stdout
    assert m['rows']['no_labels'] > 0  # long Chinese prompts cut to no response at max_seq_len 512: dropped, counted
    kept = (m['rows']['read'] - m['rows']['invalid'] - m['rows'].get('duplicates', 0) - m['rows']['dropped']
            - m['rows']['no_labels'])  # exact duplicates are dropped first (issue 16)
    assert sum(s['examples'] for s in m['splits'].values()) == kept
    for split in ('train', 'eval'):
        assert m['splits'][split]['sequences'] == len(r.dataset(split)['input_ids']) > 0


# ---------------------------------------------------------------- 12. duplicates, leakage, mixing (issue 16)

def prompt_of(r: dict) -> str: return json.dumps([' '.join(r[k].split()) for k in ('instruction', 'input')])


@uses('twice', 'default')
def test_same_file_twice_drops_the_copies_and_keeps_eval_out_of_train(runs):
    "Before issue 16 the copies of eval rows went to train, silently; now they are dropped, counted and said."
    r, d = runs.get('twice').ok(), runs.get('default').ok()
    m = r.manifest
    assert m['rows']['read'] == 2 * SAMPLE_ROWS and m['rows']['duplicates'] == SAMPLE_ROWS
    assert m['rows']['eval_prompts_in_train'] == 0 and m['dedup'] is True
    train, evl = {prompt_of(x) for x in r.jsonl('train')}, [prompt_of(x) for x in r.jsonl('eval')]
    assert not train & set(evl)
    assert len(r.jsonl('train')) + len(evl) == SAMPLE_ROWS
    assert f"dropped {SAMPLE_ROWS} exact copies" in r.proc.stdout
    assert 'eval prompts also in train: 0' in r.proc.stdout
    # distinct rows split as before: the output is the once-given file's, byte for byte
    assert files_under(r.out/'train') == files_under(d.out/'train')
    assert m['fingerprint'] == d.manifest['fingerprint']
    assert [s['duplicates'] for s in m['per_source']] == [0, SAMPLE_ROWS]


@uses('twice_keep')
def test_keep_duplicates_keeps_every_copy_on_one_side(runs):
    r = runs.get('twice_keep').ok()
    m = r.manifest
    assert m['dedup'] is False and m['rows']['duplicates'] == SAMPLE_ROWS
    train, evl = r.jsonl('train'), r.jsonl('eval')
    assert len(train) + len(evl) == 2 * SAMPLE_ROWS
    assert not {prompt_of(x) for x in train} & {prompt_of(x) for x in evl}
    assert set(Counter(map(prompt_of, evl)).values()) == {2}  # both copies of each in eval
    assert m['rows']['eval_prompts_in_train'] == 0 and f'kept {SAMPLE_ROWS} exact copies' in r.proc.stdout


@uses('mix')
def test_weights_mix_the_train_rows(runs):
    r = runs.get('mix').ok()
    m = r.manifest
    assert m['weights'] == [0.7, 0.3] and [s['source'] for s in m['per_source']] == r.extra['sources']
    small, big = m['per_source']
    n_train = small['train_rows'] + big['train_rows']
    assert n_train == len(r.jsonl('train')) == SAMPLE_ROWS - len(r.jsonl('eval'))
    assert small['train_rows'] == round(0.7 * n_train) and small['upsampled'] > 0 and big['upsampled'] == 0
    assert (small['read'], big['read']) == (30, 100) and small['kept'] + big['kept'] == SAMPLE_ROWS
    assert abs(small['train_tokens'] + big['train_tokens'] - 1) < 1e-5 and small['train_tokens'] > 0.5
    assert 'drawn again, with replacement' in r.proc.stdout
    # a row drawn twice stays in train: eval has no copies and shares no prompt with train
    evl = [prompt_of(x) for x in r.jsonl('eval')]
    assert len(set(evl)) == len(evl) and not set(evl) & {prompt_of(x) for x in r.jsonl('train')}
    assert m['rows']['eval_prompts_in_train'] == 0
    assert r.extra['again'].returncode == 0
    assert files_under(r.out) == files_under(r.extra['out_again'])  # seeded: the same mix each run


@uses('bad_weights')
def test_bad_weights_are_refused_before_any_work(runs):
    r = runs.get('bad_weights')
    for w, proc in r.extra['procs'].items():
        assert proc.returncode == 2, (w, proc.stdout, proc.stderr)
        line = proc.stderr.strip()
        assert 'weights must' in line and len(line.splitlines()) == 1 and 'Traceback' not in line, (w, line)
    assert r.extra['left'] == ['rows.jsonl']


def test_near_duplicates_across_the_split_are_counted_in_the_manifest_and_summary(tmp_path, caplog):
    "Rows rephrased by one word have other prompts, so they may land on both sides: prepare counts those pairs."
    import logging
    from alpaca_ft import prepare_dataset
    from alpaca_ft.split import near_duplicates
    rows = json.loads(SAMPLE_DATA.read_text(encoding='utf-8'))
    edited = [dict(r, instruction='Please: ' + r['instruction']) for r in rows]
    src = tmp_path/'rows.jsonl'
    src.write_text(''.join(json.dumps(r) + '\n' for r in rows + edited), encoding='utf-8')
    with caplog.at_level(logging.INFO, logger='alpaca_ft'):
        m = prepare_dataset([str(src)], out=tmp_path/'out', eval_size=40, progress=False)
    read = lambda name: [json.loads(l) for l in (tmp_path/'out'/f'{name}.jsonl').open(encoding='utf-8')]
    expected = len(near_duplicates(read('eval'), read('train')))
    assert m['rows']['eval_prompts_in_train'] == 0 and m['rows']['duplicates'] == 0
    assert m['rows']['near_duplicate_eval_rows'] == expected > 5  # about half of 40 straddle the split
    assert f'near-duplicate in train (half their 8-word runs or more): {expected}' in caplog.text
