"""How long `alpaca_ft prepare` takes next to a bare fast-tokenizer pass over the same texts.

On `--rows` rows (default 52,000, the size of Alpaca-GPT4) resampled with a fixed seed from the real
1,000-row sample in `shared/`, with the Llama 2 tokenizer, this times in one run, alternating:

- baseline: one call of the fast tokenizer over all templated texts (`alpaca_prompt(row) + output`),
  in batches of 1,000 -- the least any pipeline that tokenizes these texts has to spend;
- ours: `alpaca_ft.prepare.prepare(...)` in-process, end to end (load, validate, split, template,
  tokenize with the prompt masked, pack, write the folder with its plots and manifest);

and prints the best of each with the ratio ours/baseline (the aim is at most 1.3). It also times the
`alpaca_ft prepare` command once as a subprocess (interpreter and import start-up included), and breaks
prepare's time down by stage by calling its building blocks one after the other.

This is a measurement, not a test: nothing here asserts a timing. Run it with

    python benchmarks/prepare.py [--rows 52000] [--repeats 2] [--num-proc N] [--no-cli] [--no-breakdown] [--cprofile]

`shared/` is found by `alpaca_ft.data.shared_dir()` (`$ALPACA_FT_SHARED`, else `../shared`); without it the
script says so and exits 0.
"""
from __future__ import annotations
import argparse, gc, json, os, platform, random, resource, shutil, subprocess, sys, tempfile, time
from pathlib import Path

SAMPLE_REL, TOKENIZER_REL, BATCH = 'data/alpaca_gpt4_sample1k.jsonl', 'assets/llama-2-tokenizer', 1000


def busy_cpu() -> float:
    "CPU seconds the whole machine has been busy since boot (Linux `/proc/stat`; 0 elsewhere)."
    try:
        with open('/proc/stat') as f: v = [int(x) for x in f.readline().split()[1:9]]
    except (OSError, ValueError): return 0.0
    return (sum(v) - v[3] - v[4]) / os.sysconf('SC_CLK_TCK')  # all but idle and iowait


def own_cpu() -> float:
    "CPU seconds of this process (all threads) and of its finished children."
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + r.ru_utime + r.ru_stime


def timed(fn, *args, **kwargs):
    """`(seconds, result)` of one call of `fn`, after a garbage collection so one run's garbage doesn't bill the next.
    Leaves `timed.cpu`, CPU seconds of this process and its children, and `timed.others`, CPU seconds the rest of the
    machine used meanwhile (anything well above 0 means the wall time is not to be trusted)."""
    gc.collect()
    t, c, m = time.perf_counter(), own_cpu(), busy_cpu()
    res = fn(*args, **kwargs)
    timed.cpu = own_cpu() - c
    timed.others = max(0.0, busy_cpu() - m - timed.cpu)
    return time.perf_counter() - t, res


def resample(sample:Path, n:int, path:Path) -> list[dict]:
    "Write `n` rows drawn with replacement (`random.Random(0).choices`) from the JSONL `sample` to `path`."
    with open(sample, encoding='utf-8') as f: src = [json.loads(l) for l in f if l.strip()]
    rows = random.Random(0).choices(src, k=n)
    with open(path, 'w', encoding='utf-8', newline='\n') as f:
        for r in rows: f.write(json.dumps(r, ensure_ascii=False) + '\n')
    return rows


def bare_tokenize(tok, texts:list[str]) -> int:
    "The baseline: the fast tokenizer over `texts` in batches of 1,000; returns the number of tokens."
    n = 0
    for i in range(0, len(texts), BATCH): n += sum(map(len, tok(texts[i:i+BATCH])['input_ids']))
    return n


def run_prepare(data:Path, out:Path, tok_path:str, max_seq_len:int, num_proc) -> dict:
    from alpaca_ft.prepare import prepare
    return prepare([str(data)], out, tok_path, max_seq_len=max_seq_len, pack_strategy='bfd', num_proc=num_proc,
                   wandb='disabled', overwrite=True, progress=False, verbose=False,
                   dedup=False)  # resampled rows repeat: keep them all, the point is the volume


def time_verify(out:Path, repeats:int=3) -> tuple[float, int]:
    "Best of `repeats` of `read_manifest` + `verify_fingerprint` on the prepare output `out`, and the bytes it hashes."
    from alpaca_ft.prepare import read_manifest, verify_fingerprint
    best = float('inf')
    for _ in range(repeats):
        t0 = time.perf_counter()
        verify_fingerprint(out, read_manifest(out))
        best = min(best, time.perf_counter() - t0)
    size = sum(f.stat().st_size for part in ('train', 'eval') for f in (out/part).rglob('*') if f.is_file())
    return best, size


def cli_cmd(data:Path, out:Path, tok_path:str, max_seq_len:int, num_proc) -> list[str]:
    exe = Path(sys.executable).parent/'alpaca_ft'
    head = [str(exe)] if exe.exists() else [sys.executable, '-c', 'import sys; from alpaca_ft.cli import main; sys.exit(main())']
    cmd = head + ['prepare', str(data), '--out', str(out), '--tokenizer', tok_path, '--max-seq-len', str(max_seq_len),
                  '--pack', 'bfd', '--wandb', 'disabled', '--overwrite', '--keep-duplicates']
    return cmd + (['--num-proc', str(num_proc)] if num_proc else [])


def breakdown(data:Path, work:Path, tok_path:str, max_seq_len:int, num_proc, repeats:int=1) -> list[tuple]:
    "Time prepare's stages one after the other with its building blocks: `(stage, seconds, top_level, others)` rows."
    import datasets
    from alpaca_ft import prepare as P
    from alpaca_ft.data import load_rows
    from alpaca_ft.packing import bfd_groups, limit_length, pack, pack_stats
    from alpaca_ft.prompts import render
    from alpaca_ft.split import split_indices, write_jsonl
    from alpaca_ft.tokenization import load_tokenizer, tokenize_examples
    st = []  # (stage, seconds, top level?, CPU seconds others used meanwhile or None for a difference)
    def run(name, fn, *args, top=True, n=1):
        "Time `fn(*args)` (best of `n`), record it as stage `name`, return `(seconds, result)`."
        def once(): return (*timed(fn, *args), timed.others)
        s, res, oth = min((once() for _ in range(n)), key=lambda x: x[0])
        st.append((name, s, top, oth))
        return s, res
    diff = lambda name, s: st.append((name, s, False, None))

    _, rows = run('load_rows (read + validate JSONL)', load_rows, str(data))
    _, tok = run('load_tokenizer', load_tokenizer, tok_path)
    def split():
        tr, ev = split_indices(len(rows), None, 42)
        return len(tr), {'train': [rows[i] for i in tr], 'eval': [rows[i] for i in ev]}
    _, (n_train, splits) = run('split_indices + split lists', split)
    ordered = splits['train'] + splits['eval']
    # tokenizing dominates and some rows below are differences of its timings: best of `repeats` for these
    s_tok, ex = run('tokenize_rows (total)', P.tokenize_rows, ordered, tok, 'alpaca', False, num_proc, False, n=repeats)
    # what tokenize_rows is made of, measured apart (each re-runs that part on its own, in this process)
    s_render, pairs = run('  render templates', lambda: [render(r, 'alpaca', tok) for r in ordered], top=False)
    prompts, responses = [p for p, _ in pairs], [r for _, r in pairs]
    s_bare, _ = run('  fast tokenizer on prompt+response (bare)', bare_tokenize, tok, [p + r for p, r in pairs], top=False, n=repeats)
    def direct():
        for i in range(0, len(prompts), BATCH): tokenize_examples(prompts[i:i+BATCH], responses[i:i+BATCH], tok, False)
    s_direct, _ = run('  tokenize_examples, no datasets (bare + boundary + labels)', direct, top=False, n=repeats)
    diff('    prompt boundary + labels (difference)', s_direct - s_bare)
    diff('  batching, joining lists (difference: the rest)', s_tok - s_render - s_direct)

    def limit():
        out = {}
        for name, sl in (('train', slice(0, n_train)), ('eval', slice(n_train, None))):
            out[name] = limit_length({k: v[sl] for k, v in ex.items()}, max_seq_len, 'truncate')[0]
        return out
    _, examples = run('limit_length (slice + truncate)', limit)
    s_pack, packed = run('pack bfd (total)', lambda: {k: pack(e, max_seq_len, 'bfd', False) for k, e in examples.items()})
    s_groups, _ = run('  bfd_groups (bin packing)', lambda: [bfd_groups([len(x) for x in e['input_ids']], max_seq_len)
                                                              for e in examples.values()], top=False)
    diff('  assemble packs into Arrow (difference)', s_pack - s_groups)
    run('pack_stats (manifest)', lambda: {k: pack_stats(v, max_seq_len) for k, v in packed.items()})

    tmp = work/'breakdown'; shutil.rmtree(tmp, ignore_errors=True); tmp.mkdir()
    datasets.disable_progress_bars()
    try:
        run('save: save_to_disk', lambda: [d.save_to_disk(str(tmp/k)) for k, d in packed.items()])
    finally: datasets.enable_progress_bars()
    run('save: write_jsonl splits', lambda: [write_jsonl(splits[k], tmp/f'{k}.jsonl') for k in splits])
    run('save: plots (_save_plots)', P._save_plots, tmp/'plots', examples['train'], packed['train'], max_seq_len, tok)
    run('save: fingerprint (sha256)', P.fingerprint, tmp)
    shutil.rmtree(tmp, ignore_errors=True)
    return st


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--rows', type=int, default=52_000, help='rows to resample from the 1k sample (default 52000)')
    ap.add_argument('--repeats', type=int, default=2, help='alternating runs of each (default 2); the best is reported')
    ap.add_argument('--num-proc', type=int, default=None, help="passed to prepare's --num-proc (default: none)")
    ap.add_argument('--max-seq-len', type=int, default=1024)
    ap.add_argument('--no-cli', action='store_true', help='skip timing the CLI as a subprocess')
    ap.add_argument('--no-breakdown', action='store_true', help='skip the per-stage breakdown')
    ap.add_argument('--cprofile', action='store_true', help='also print the top functions of one prepare() under cProfile')
    a = ap.parse_args(argv)

    from alpaca_ft.data import shared_dir
    shared = shared_dir()
    if shared is None or not (shared/SAMPLE_REL).exists() or not (shared/TOKENIZER_REL).exists():
        print(f'skipped: needs {SAMPLE_REL} and {TOKENIZER_REL} in the shared folder '
              f'($ALPACA_FT_SHARED or ../shared), found {shared}')
        return 0
    from alpaca_ft.prompts import alpaca_prompt
    from alpaca_ft.tokenization import load_tokenizer
    tok_path = str(shared/TOKENIZER_REL)
    work = Path(tempfile.mkdtemp(prefix='alpaca_ft-bench-'))
    try:
        data = work/'rows.jsonl'
        rows = resample(shared/SAMPLE_REL, a.rows, data)
        texts = [alpaca_prompt(r) + r['output'] for r in rows]
        tok = load_tokenizer(tok_path)
        print(f'{a.rows:,} rows resampled (seed 0) from {shared/SAMPLE_REL} -> {data} ({data.stat().st_size/2**20:.1f} MiB)')
        print(f'tokenizer {tok_path}; max_seq_len {a.max_seq_len}, pack bfd, num_proc {a.num_proc}; '
              f'{os.cpu_count()} CPU cores, Python {platform.python_version()}, {platform.machine()}')

        print(f'load average at start: {" ".join(f"{x:.2f}" for x in os.getloadavg())} (other work on the machine skews wall times)')

        base, ours, cpu_b, cpu_o, oth_bs, oth_os, manifest, n_base = [], [], [], [], [], [], None, 0
        for i in range(a.repeats):
            s, n_base = timed(bare_tokenize, tok, texts); base.append(s); cpu_b.append(timed.cpu); oth_b = timed.others; oth_bs.append(oth_b)
            out = work/f'out{i}'
            s, manifest = timed(run_prepare, data, out, tok_path, a.max_seq_len, a.num_proc); ours.append(s); cpu_o.append(timed.cpu)
            oth_o = timed.others; oth_os.append(oth_o)
            if i == 0: verify_s, verify_size = time_verify(out)
            shutil.rmtree(out, ignore_errors=True)
            print(f'  run {i+1}: baseline {base[-1]:.2f} s (cpu {cpu_b[-1]:.2f} s, others {oth_b:.2f}), '
                  f'prepare() {ours[-1]:.2f} s (cpu {cpu_o[-1]:.2f} s, others {oth_o:.2f})')

        cli = startup = None
        if not a.no_cli:
            out = work/'out_cli'
            cli, p = timed(subprocess.run, cli_cmd(data, out, tok_path, a.max_seq_len, a.num_proc), capture_output=True, text=True)
            cpu_cli, oth_cli = timed.cpu, timed.others
            if p.returncode: print(f'CLI failed ({p.returncode}):\n{p.stderr[-2000:]}'); cli = None
            shutil.rmtree(out, ignore_errors=True)
            startup, _ = timed(subprocess.run, [sys.executable, '-c', 'import alpaca_ft.cli, alpaca_ft.prepare'], check=True)

        b, o = min(base), min(ours)
        s = manifest['splits']
        tokens, seqs = sum(v['tokens'] for v in s.values()), sum(v['sequences'] for v in s.values())
        print(f'load average at end: {" ".join(f"{x:.2f}" for x in os.getloadavg())}')
        print(f'\n{"":<38}{"seconds":>9}{"ratio":>7}{"rows/s":>9}{"tokens/s":>11}{"tokens":>12}{"sequences":>11}{"cpu s":>8}{"others":>8}')
        line = lambda name, sec, tk, sq, cpu, oth: print(f'{name:<38}{sec:>9.2f}{sec/b:>7.2f}{a.rows/sec:>9,.0f}{tk/sec:>11,.0f}{tk:>12,}{sq:>11}{cpu:>8.2f}{oth:>8.2f}')
        line('baseline: bare fast tokenizer', b, n_base, '-', cpu_b[base.index(b)], oth_bs[base.index(b)])
        line('ours: prepare() in-process', o, tokens, f'{seqs:,}', cpu_o[ours.index(o)], oth_os[ours.index(o)])
        if cli is not None:
            line('ours: `alpaca_ft prepare` subprocess', cli, tokens, f'{seqs:,}', cpu_cli, oth_cli)
            print(f'{"  of which start-up (python + imports)":<38}{startup:>9.2f}')
        print(f'best of {a.repeats} for baseline and prepare() (all: baseline {", ".join(f"{x:.2f}" for x in base)}; '
              f'prepare() {", ".join(f"{x:.2f}" for x in ours)}); the CLI once')
        print(f'ratio ours/baseline = {o/b:.2f} (aim: at most 1.3)')
        print(f'verify_fingerprint (what train checks before step 1): {verify_s:.3f} s, best of 3, over '
              f'{verify_size/2**20:.1f} MiB of train/eval files = {verify_s/o:.1%} of prepare()')
        print('cpu s: CPU seconds of the process, its threads (the fast tokenizer runs on all cores) and its children; '
              'others: CPU seconds the rest of the machine used meanwhile (well above 0: the wall time was disturbed)')
        print(f'baseline tokens: BOS + text; prepare tokens: as written (+ EOS per row, after truncating '
              f'{manifest["rows"]["truncated"]} rows to {a.max_seq_len}); train fill {s["train"]["fill"]:.1%}')

        if not a.no_breakdown:
            from alpaca_ft.prepare import gc_paused
            with gc_paused():  # as in prepare(), which runs with the cycle collector paused
                st = breakdown(data, work, tok_path, a.max_seq_len, a.num_proc, a.repeats)
            total = sum(x for _, x, top, _ in st if top)
            print(f'\nwhere prepare() spends its time (stages run one by one with its building blocks)')
            print(f'{"stage":<60}{"seconds":>9}{"share":>8}{"others":>8}')
            for name, x, top, oth in st: print(f'{name:<60}{x:>9.2f}{x/total:>8.1%}{"" if oth is None else f"{oth:.2f}":>8}')
            print(f'{"sum of stages":<60}{total:>9.2f}{1:>8.1%}')
            print(f'{"prepare() end to end, best":<60}{o:>9.2f}')
            print(f'{"baseline (bare tokenizer on the same texts), best":<60}{b:>9.2f}')
            print(f'indented rows are parts of the row above; tokenize_rows, the bare pass and tokenize_examples are the best of '
                  f'{a.repeats}, the rest one run; "difference" rows are subtractions (noise can make them small or negative); '
                  f'others: CPU seconds the rest of the machine used meanwhile')

        if a.cprofile:
            import cProfile, pstats
            pr = cProfile.Profile()
            pr.runcall(run_prepare, data, work/'out_prof', tok_path, a.max_seq_len, a.num_proc)
            print('\ncProfile of one prepare() (top 25 by own time)')
            pstats.Stats(pr, stream=sys.stdout).sort_stats('tottime').print_stats(25)
    finally: shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == '__main__': sys.exit(main())
