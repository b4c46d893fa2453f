"""Reading a JSON array of rows: the incremental reader (`ijson`, `alpaca_ft.data._read_json`) next to
`json` reading the whole file (`_read_json_whole`, the reader before issue 16).

On `--rows` rows (default 200,000) resampled with a fixed seed from the real 1,000-row Alpaca-GPT4 sample in
`shared/` (the bundled sample when `shared/` is absent), written as one JSON array (`indent=1`), it reads the file
`--repeats` times with each reader, alternating, each run in a fresh interpreter, and prints the best seconds
and the peak resident memory (`VmHWM` of that interpreter, Linux) of each, with the ratios ijson/json.

This is a measurement, not a test: nothing here asserts a timing. Run it with

    python benchmarks/json_array.py [--rows 200000] [--repeats 2]
"""
from __future__ import annotations
import argparse, json, random, subprocess, sys, tempfile, time
from pathlib import Path

CHILD = '''
import sys, time
from pathlib import Path
from alpaca_ft import data
read = {'ijson': data._read_json, 'json': data._read_json_whole}[sys.argv[1]]
t = time.perf_counter()
n = sum(1 for _ in read(Path(sys.argv[2])))
hwm = next(l for l in open('/proc/self/status') if l.startswith('VmHWM:'))  # ru_maxrss keeps the parent's
print(n, time.perf_counter() - t, hwm.split()[1])
'''


def rows(n: int) -> list[dict]:
    from alpaca_ft.data import SAMPLE_DATA, load_rows, shared_path
    src = shared_path('data/alpaca_gpt4_sample1k.jsonl') or SAMPLE_DATA
    base = load_rows(src)
    rng = random.Random(0)
    return [dict(rng.choice(base), id=i) for i in range(n)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--rows', type=int, default=200_000)
    ap.add_argument('--repeats', type=int, default=2)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp)/'rows.json'
        p.write_text(json.dumps(rows(a.rows), ensure_ascii=False, indent=1), encoding='utf-8')
        size = p.stat().st_size
        best = {}
        for _ in range(a.repeats):
            for kind in ('ijson', 'json'):
                out = subprocess.run([sys.executable, '-c', CHILD, kind, str(p)], capture_output=True, text=True,
                                     check=True).stdout.split()
                n, secs, rss_kb = int(out[0]), float(out[1]), int(out[2])
                assert n == a.rows, (kind, n)
                old = best.get(kind, (float('inf'), float('inf')))
                best[kind] = (min(old[0], secs), min(old[1], rss_kb / 1024))
    print(f'{a.rows:,} rows, {size / 2**20:.0f} MiB of JSON')
    print(f'{"reader":<8} {"seconds":>8} {"peak RSS MiB":>13}')
    for kind, (secs, rss) in best.items(): print(f'{kind:<8} {secs:>8.2f} {rss:>13.0f}')
    (s1, m1), (s2, m2) = best['ijson'], best['json']
    print(f'ijson/json: time {s1 / s2:.2f}, peak RSS {m1 / m2:.2f}')


if __name__ == '__main__':
    main()
