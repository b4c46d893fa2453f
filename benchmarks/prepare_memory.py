"""Peak memory (RSS) of `prepare` next to the alternatives, on the same rows, each in a fresh process.

On `--rows` rows (default 200,000) resampled with a fixed seed from the real 1,000-row Alpaca-GPT4 sample in
`shared/` and made distinct (each instruction ends with its row number: the duplicate check keeps them all),
with the Llama 2 tokenizer and `max_seq_len` 1,024 (bfd packing, W&B off), this runs one after the other, each
in its own Python process so that each peak is its own:

- bare: read the JSONL 1,000 lines at a time and run the fast tokenizer over their templated texts, keeping
  nothing -- the least any preparation holds (the tokenizer and one batch);
- ours: `alpaca_ft.prepare.prepare_dataset(...)` of this checkout, end to end (written to a folder);
- before: the same call with the code of each `--before REV` (default: `e0001cc`, the in-memory path that
  held every token id as a Python int, and `10def74`, which streamed token ids but held every row as a Python
  dict), extracted with `git archive` into a temporary folder (skip with `--before`, no revision);
- trl: TRL's `SFTTrainer` preparing the same rows (prompt/completion, completion-only loss, `packing_strategy
  ='bfd'`, `max_length` 1,024) with a one-layer model, when `trl` is installed; its Arrow cache goes to the
  temporary folder.

`prepare` runs with its defaults (duplicates dropped: there are none). It prints peak RSS (`ru_maxrss`) and
seconds for each, and the ratios to `bare`. This is a measurement, not a test: nothing asserts a number.
Run it (niced; it takes several minutes at 200,000 rows) with

    nice -n 10 python benchmarks/prepare_memory.py [--rows 200000] [--skip trl] [--before REV ...]

`shared/` is `$ALPACA_FT_SHARED`, else `../shared`; without it the script says so and exits 0.
"""
from __future__ import annotations
import argparse, json, os, random, resource, subprocess, sys, tempfile, time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLE_REL, TOKENIZER_REL, MAX_LEN = 'data/alpaca_gpt4_sample1k.jsonl', 'assets/llama-2-tokenizer', 1024
BEFORE = ['e0001cc', '10def74']  # in-memory prepare (before issue 16); rows in memory, token ids streamed


def shared_dir() -> Path:
    env = os.environ.get('ALPACA_FT_SHARED')
    return Path(env) if env else REPO.parent/'shared'


def resample(sample:Path, n:int, path:Path):
    with open(sample, encoding='utf-8') as f: src = [json.loads(l) for l in f if l.strip()]
    with open(path, 'w', encoding='utf-8', newline='\n') as f:
        for i, r in enumerate(random.Random(0).choices(src, k=n)):  # distinct rows: the number ends each
            r = {**r, 'instruction': f"{r['instruction']} (#{i})"}
            f.write(json.dumps(r, ensure_ascii=False) + '\n')


# ---------------------------------------------------------------- the contenders (run in a child process)

def bare(data:Path, tok_dir:Path, work:Path) -> dict:
    from transformers import AutoTokenizer
    from alpaca_ft.prompts import alpaca_prompt
    tok = AutoTokenizer.from_pretrained(str(tok_dir))
    n, batch = 0, []
    with open(data, encoding='utf-8') as f:
        for line in f:
            batch.append(json.loads(line))
            if len(batch) == 1000:
                n += sum(map(len, tok([alpaca_prompt(r) + r['output'] for r in batch])['input_ids']))
                batch = []
    if batch: n += sum(map(len, tok([alpaca_prompt(r) + r['output'] for r in batch])['input_ids']))
    return {'tokens': n}


def ours(data:Path, tok_dir:Path, work:Path) -> dict:
    from alpaca_ft.prepare import prepare_dataset
    m = prepare_dataset(str(data), work/'out', str(tok_dir), max_seq_len=MAX_LEN, wandb='disabled',
                        progress=False, verbose=False)
    return {'duplicates': m['rows'].get('duplicates'),
            'tokens': m['splits']['train']['tokens'] + m['splits']['eval']['tokens'],
            'sequences': m['splits']['train']['sequences'] + m['splits']['eval']['sequences'],
            'fingerprint': m['fingerprint'][:16]}


def trl(data:Path, tok_dir:Path, work:Path) -> dict:
    import datasets, torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM
    from trl import SFTConfig, SFTTrainer
    from alpaca_ft.prompts import alpaca_prompt
    tok = AutoTokenizer.from_pretrained(str(tok_dir))
    tok.pad_token = tok.eos_token
    ds = datasets.load_dataset('json', data_files=str(data), split='train', cache_dir=str(work/'hf_cache'))
    ds = ds.map(lambda r: {'prompt': alpaca_prompt(dict(r)), 'completion': r['output'] + tok.eos_token},
                remove_columns=ds.column_names)
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32,
                                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2))
    args = SFTConfig(output_dir=str(work/'trl'), max_length=MAX_LEN, packing=True, packing_strategy='bfd',
                     completion_only_loss=True, report_to='none', use_cpu=True)
    trainer = SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tok)
    packed = trainer.train_dataset
    import pyarrow.compute as pc
    lengths = pc.list_value_length(packed.data.column('input_ids'))
    return {'sequences': len(packed), 'tokens': int(pc.sum(lengths).as_py())}


CHILDREN = {'bare': bare, 'ours': ours, 'before': ours, 'trl': trl}  # 'before' runs once per --before REV


def child(name:str, data:Path, tok_dir:Path, work:Path):
    t = time.perf_counter()
    res = CHILDREN[name](data, tok_dir, work)
    res.update(seconds=round(time.perf_counter() - t, 1),
               peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))
    print('RESULT ' + json.dumps(res))


# ---------------------------------------------------------------- the parent

def run_child(name, data, tok_dir, work:Path, pythonpath:str, timeout:int) -> dict:
    work.mkdir()
    env = dict(os.environ, PYTHONPATH=pythonpath, TOKENIZERS_PARALLELISM='true',
               HF_DATASETS_CACHE=str(work/'hf'),
               HF_HUB_OFFLINE='1', HF_DATASETS_OFFLINE='1', WANDB_MODE='disabled', TMPDIR=str(work))
    cmd = [sys.executable, __file__, '--child', name, '--data', str(data), '--tokenizer', str(tok_dir),
           '--work', str(work)]
    with open(work/'stdout', 'w+') as out, open(work/'stderr', 'w+') as err:
        p, peak, start = subprocess.Popen(cmd, env=env, stdout=out, stderr=err), 0, time.monotonic()
        while p.poll() is None:  # the child's peak so far, from the kernel: known even if it is cut off
            peak = max(peak, _hwm_mb(p.pid))
            if time.monotonic() - start > timeout:
                p.kill()
                p.wait()
                return {'error': f'over {timeout} s', 'peak_rss_mb': peak, 'seconds': timeout}
            time.sleep(1)
        out.seek(0), err.seek(0)
        stdout, stderr = out.read(), err.read()
    line = next((l for l in reversed(stdout.splitlines()) if l.startswith('RESULT ')), None)
    if p.returncode or line is None: return {'error': (stderr.strip().splitlines() or ['?'])[-1][:200]}
    return json.loads(line[len('RESULT '):])


def _hwm_mb(pid:int) -> int:
    "The peak resident memory (VmHWM) of process `pid` so far, in MB; 0 once it is gone."
    try:
        with open(f'/proc/{pid}/status') as f:
            return next((int(l.split()[1]) // 1024 for l in f if l.startswith('VmHWM:')), 0)
    except OSError: return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--rows', type=int, default=200_000)
    ap.add_argument('--skip', nargs='*', default=[], choices=list(CHILDREN))
    ap.add_argument('--before', nargs='*', default=BEFORE, 
                    help="git revisions of the 'before' code (none: skip)")
    ap.add_argument('--timeout', type=int, default=400, help='seconds each contender may take')
    ap.add_argument('--child', help=argparse.SUPPRESS)
    ap.add_argument('--data', help=argparse.SUPPRESS)
    ap.add_argument('--tokenizer', help=argparse.SUPPRESS)
    ap.add_argument('--work', help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child: return child(a.child.split('@')[0], Path(a.data), Path(a.tokenizer), Path(a.work)) or 0
    sample, tok_dir = shared_dir()/SAMPLE_REL, shared_dir()/TOKENIZER_REL
    if not (sample.exists() and tok_dir.exists()):
        print(f'skipped: {shared_dir()} has no {SAMPLE_REL} or {TOKENIZER_REL} (set ALPACA_FT_SHARED)')
        return 0
    names = [n for n in CHILDREN if n not in a.skip and n != 'before']
    if 'before' not in a.skip: names[2:2] = [f'before@{rev}' for rev in a.before]
    try: import trl as _  # noqa: F401
    except ImportError: names = [n for n in names if n != 'trl']
    with tempfile.TemporaryDirectory(prefix='prepare_memory-') as tmp:
        tmp = Path(tmp)
        data = tmp/'rows.jsonl'
        resample(sample, a.rows, data)
        paths = {n: str(REPO) for n in names}
        for n in names:
            if not n.startswith('before@'): continue
            old = tmp/f'code_{n[7:]}'
            old.mkdir()
            arch = subprocess.run(['git', '-C', str(REPO), 'archive', n[7:]], capture_output=True, check=True)
            subprocess.run(['tar', '-x', '-C', str(old)], input=arch.stdout, check=True)
            paths[n] = str(old)
        results = {}
        for n in names:
            results[n] = run_child(n, data, tok_dir, tmp/n.replace('@', '_'), paths[n], a.timeout)
            print(n, results[n], flush=True)
    base = results.get('bare', {}).get('peak_rss_mb')
    print(f'\n{a.rows:,} rows, max_seq_len {MAX_LEN}, bfd; peak RSS of each in its own process')
    print(f"{'':16} {'peak RSS MB':>12} {'x bare':>8} {'seconds':>8} {'x bare':>8}")
    for n, r in results.items():
        if 'error' in r:
            so_far = f' (peak RSS {r["peak_rss_mb"]:,} MB when cut off)' if r.get('peak_rss_mb') else ''
            print(f'{n:16} error: {r["error"]}{so_far}')
            continue
        ratio = f"{r['peak_rss_mb'] / base:.2f}" if base else '-'
        t_base = results.get('bare', {}).get('seconds')
        t_ratio = f"{r['seconds'] / t_base:.2f}" if t_base else '-'
        print(f"{n:16} {r['peak_rss_mb']:>12,} {ratio:>8} {r['seconds']:>8} {t_ratio:>8}")
    return 0


if __name__ == '__main__':
    sys.exit(main())
