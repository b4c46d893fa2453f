"""Reading rows and writing files safely (alpaca_ft.data, alpaca_ft.split): the bad-input and data-loss cases of
issue 10, in-process and fast. Each test names the defect it guards against."""
from __future__ import annotations
import http.server, json, os, subprocess, sys, threading, time
from contextlib import contextmanager
from pathlib import Path

import pytest

import alpaca_ft.data as D
import alpaca_ft.files as F  # the download and file-writing helpers (appendix 50_files)
from alpaca_ft.data import DataError, load_rows

ROW = {'instruction': 'Add two and two.', 'input': '', 'output': 'Four.'}


def umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# ---------------------------------------------------------------- file formats

def test_csv_row_with_more_cells_than_header(tmp_path):
    "Was read with the columns shifted (the extra cell went to a `None` key and the row passed)."
    p = tmp_path/'rows.csv'
    p.write_text('instruction,input,output\nAdd.,,4\nSay hi,,hello,EXTRA\n', encoding='utf-8')
    with pytest.raises(DataError, match=r'rows\.csv, line 3: 1 more cell\(s\) than the header'): load_rows(p)


def test_csv_oversized_field_is_read(tmp_path):
    "Was a bare `_csv.Error: field larger than field limit` traceback, then a refusal (issue 18: it is valid CSV)."
    p = tmp_path/'big.csv'
    p.write_text('instruction,input,output\nAdd.,,4\nLong,,"' + 'x' * 200_000 + '"\n', encoding='utf-8')
    assert load_rows(p)[1] == {'instruction': 'Long', 'input': '', 'output': 'x' * 200_000}


def test_parquet_with_nullable_input(tmp_path):
    "A null in a Parquet string column came back as NaN (a float) and was refused; JSON nulls were accepted."
    import pyarrow as pa, pyarrow.parquet as pq
    p = tmp_path/'rows.parquet'
    pq.write_table(pa.table({'instruction': ['a', 'b'], 'input': pa.array([None, 'ctx'], pa.string()),
                             'output': ['x', 'y']}), p)
    assert load_rows(p) == [{'instruction': 'a', 'input': '', 'output': 'x'},
                            {'instruction': 'b', 'input': 'ctx', 'output': 'y'}]


def test_jsonl_with_unicode_line_separators(tmp_path):
    "str.splitlines cut lines at U+2028/U+2029/U+0085, which json.dumps(ensure_ascii=False) leaves raw in strings."
    rows = [{'instruction': 'Join\u2028these', 'input': 'a\u2029b\x85c', 'output': 'ok\u2028done'}, ROW]
    p = tmp_path/'rows.jsonl'
    from alpaca_ft.split import write_jsonl, read_jsonl
    write_jsonl(rows, p)
    assert '\u2028' in p.read_text(encoding='utf-8')
    assert load_rows(p) == rows
    assert read_jsonl(p) == rows


def test_encoding_error_names_the_line(tmp_path):
    "Said only 'byte N'."
    p = tmp_path/'latin.jsonl'
    p.write_bytes(json.dumps(ROW).encode() + b'\n' + json.dumps(ROW).encode() + b'\n{"instruction": "caf\xe9", "output": "x"}\n')
    with pytest.raises(DataError, match=r'latin\.jsonl, line 3: not valid UTF-8'): load_rows(p)


# ---------------------------------------------------------------- URLs

class _Handler(http.server.BaseHTTPRequestHandler):
    dripped_to_the_end = threading.Event()  # set when a slow response was sent whole: the client never gave up

    def log_message(self, *a): pass

    def do_GET(self):
        body = (json.dumps(ROW) + '\n').encode() * 40
        if self.path.startswith('/missing'):
            self.send_error(404)
            return
        if self.path.startswith('/dripheaders'):  # the status line, then a header one byte every 0.1 s
            self.wfile.write(b'HTTP/1.0 200 OK\r\n')
            for i in range(60):  # bounded: gives up after 6 s
                try:
                    self.wfile.write(b'X-Slow: ' if i == 0 else b'a')
                    self.wfile.flush()
                except OSError: return
                time.sleep(0.1)
            _Handler.dripped_to_the_end.set()
            return
        self.send_response(200)
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        if self.path.startswith('/slow'):  # one byte every 0.1 s: each read is well within any per-read timeout
            for i in range(60):  # bounded: the server gives up after 6 s whatever the client does
                try:
                    self.wfile.write(body[i:i + 1])
                    self.wfile.flush()
                except OSError: return
                time.sleep(0.1)
            _Handler.dripped_to_the_end.set()
            return
        self.wfile.write(body)


@contextmanager
def server():
    srv = http.server.ThreadingHTTPServer(('127.0.0.1', 0), _Handler)
    srv.daemon_threads = True
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try: yield f'http://127.0.0.1:{srv.server_address[1]}'
    finally:
        srv.shutdown()
        srv.server_close()


@pytest.mark.parametrize('path', ['slow', 'dripheaders'])
def test_url_dripping_is_given_up(monkeypatch, path):
    "A server dripping its body or headers (read with only urlopen's per-read timeout) held prepare forever."
    monkeypatch.setattr(F, 'URL_STALL_SECONDS', 0.5)  # issue 18: stall detection, no fixed deadline
    with server() as base:
        url = f'{base}/{path}/rows.jsonl'
        _Handler.dripped_to_the_end.clear()
        with pytest.raises(DataError, match='download stalled') as e: load_rows(url)
        assert not _Handler.dripped_to_the_end.is_set()  # given up while the server was still dripping
        assert str(e.value).startswith(url)


def test_url_without_a_file_name_says_so():
    "Said \"unknown extension '.1:8765'\": the suffix was taken from the host and port."
    with pytest.raises(DataError, match=r"unknown extension ''"):
        load_rows('http://127.0.0.1:8765/')


def test_url_size_limit(monkeypatch):
    monkeypatch.setattr(F, 'URL_MAX_BYTES', 100)
    with server() as base:
        url = f'{base}/rows.jsonl'
        with pytest.raises(DataError, match='over the limit') as e: load_rows(url)
        assert str(e.value).startswith(url)


def test_url_errors_name_the_url():
    "Were 'HTTP Error 404: Not Found' and '[Errno 111] Connection refused' with no URL."
    with server() as base:
        url = f'{base}/missing/rows.jsonl'
        with pytest.raises(DataError, match='HTTP 404') as e: load_rows(url)
        assert str(e.value).startswith(url)
        ok = load_rows(f'{base}/rows.jsonl')
        assert len(ok) == 40
    with pytest.raises(DataError) as e: load_rows(url)  # the server is gone: connection refused
    assert str(e.value).startswith(url)


def test_url_bad_content_names_the_url_not_the_temp_file(monkeypatch):
    with server() as base:
        url = f'{base}/rows.json'  # JSONL bytes read as one JSON document: a reader's error, once named the temp file
        with pytest.raises(DataError) as e: load_rows(url)
        assert str(e.value).startswith(url) and 'tmp' not in str(e.value)


# ---------------------------------------------------------------- writing safely

def test_atomic_dir_refuses_a_folder_it_did_not_make(tmp_path):
    "--overwrite deleted whatever folder --out named."
    from alpaca_ft.data import atomic_dir
    mine = tmp_path/'mydata'
    mine.mkdir()
    (mine/'notes.txt').write_text('precious')
    with pytest.raises(FileExistsError, match='mydata.*did not make it'):
        atomic_dir(mine, lambda t: (t/'manifest.json').write_text('{}'), overwrite=True)
    assert (mine/'notes.txt').read_text() == 'precious'
    assert sorted(p.name for p in tmp_path.iterdir()) == ['mydata']  # and no temp folder left


def test_atomic_dir_refuses_the_current_folder(tmp_path, monkeypatch):
    from alpaca_ft.data import atomic_dir
    (tmp_path/'manifest.json').write_text('{}')
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileExistsError, match='current folder'): atomic_dir(Path('.'), lambda t: None, overwrite=True)
    assert (tmp_path/'manifest.json').exists()


def test_atomic_dir_replaces_only_after_build_and_keeps_normal_permissions(tmp_path):
    "The final folder was mkdtemp's 0700, and files written through mkstemp (safetensors does) 0600."
    from alpaca_ft.data import atomic_dir
    import tempfile
    out = tmp_path/'out'
    stamp = lambda v: '{"made_by": "alpaca_ft test", "v": %d}' % v
    def build(t):
        (t/'manifest.json').write_text(stamp(1))
        fd, name = tempfile.mkstemp(dir=t)
        os.close(fd)
    atomic_dir(out, build)
    assert out.stat().st_mode & 0o777 == 0o777 & ~umask()
    assert {p.stat().st_mode & 0o777 for p in out.iterdir()} == {0o666 & ~umask()}
    def fail(t):
        assert (out/'manifest.json').read_text() == stamp(1)  # the old one is still there while the new one is built
        raise RuntimeError('boom')
    with pytest.raises(RuntimeError): atomic_dir(out, fail, overwrite=True)
    assert (out/'manifest.json').read_text() == stamp(1)
    atomic_dir(out, lambda t: (t/'manifest.json').write_text(stamp(2)), overwrite=True)
    assert (out/'manifest.json').read_text() == stamp(2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ['out']


def test_atomic_dir_refuses_a_marker_another_tool_wrote(tmp_path):
    "A web app's manifest.json does not make its folder a prepare output."
    from alpaca_ft.data import atomic_dir
    app = tmp_path/'webapp'
    app.mkdir()
    (app/'manifest.json').write_text('{"name": "my app", "version": "1.0"}')
    (app/'index.js').write_text('code')
    with pytest.raises(FileExistsError, match='webapp: not replaced: it has no manifest.json written by alpaca_ft'):
        atomic_dir(app, lambda t: (t/'manifest.json').write_text('{}'), overwrite=True)
    assert (app/'index.js').read_text() == 'code'


def test_stale_temps_of_dead_processes_are_removed(tmp_path):
    "Killed runs left hidden temp folders that nothing cleaned (issue 18: only temps whose owner record says so)."
    from alpaca_ft.data import OWNER_FILE, atomic_dir, owner_record
    dead = subprocess.Popen([sys.executable, '-c', 'pass'])
    dead.wait()
    stale, live = tmp_path/'.out.tmp-x1234567', tmp_path/'.out.tmp-x2345678'
    for d, pid in ((stale, dead.pid), (live, os.getpid())):
        d.mkdir()
        (d/OWNER_FILE).write_text(json.dumps({**owner_record(), 'pid': pid, 'temp': d.name}))
        (d/'big.bin').write_bytes(b'0' * 1000)
    atomic_dir(tmp_path/'out', lambda t: None)
    assert not stale.exists() and live.exists()


def test_write_jsonl_is_atomic_with_normal_permissions(tmp_path):
    from alpaca_ft.split import write_jsonl
    p = tmp_path/'rows.jsonl'
    p.write_text('old\n')
    class Boom:
        def __repr__(self): raise RuntimeError('cannot serialise')
    with pytest.raises(TypeError): write_jsonl([ROW, {'x': Boom()}], p)
    assert p.read_text() == 'old\n'  # not half-written
    assert [q.name for q in tmp_path.iterdir()] == ['rows.jsonl']
    write_jsonl([ROW], p)
    assert p.stat().st_mode & 0o777 == 0o666 & ~umask()


# ---------------------------------------------------------------- prepare (in-process; a few seconds each)

def _prepare(out, **kw):
    from alpaca_ft.prepare import prepare
    return prepare(out=out, **{'max_seq_len': 256, 'wandb': 'disabled', 'progress': False, 'verbose': False, **kw})


def _jsonl(path, rows):
    path.write_text(''.join(json.dumps(r, ensure_ascii=False) + '\n' for r in rows), encoding='utf-8')
    return path


def _sample(n=40):
    return json.loads(D.SAMPLE_DATA.read_text(encoding='utf-8'))[:n]


def test_prepare_overwrite_refuses_the_folder_of_its_input(tmp_path):
    "`prepare mydata/rows.jsonl --out mydata --overwrite` deleted the input file and the user's notes."
    mine = tmp_path/'mydata'
    mine.mkdir()
    data = _jsonl(mine/'rows.jsonl', _sample())
    (mine/'notes.txt').write_text('mine')
    with pytest.raises((ValueError, FileExistsError), match='mydata'): _prepare(mine, data=[data], overwrite=True)
    assert sorted(p.name for p in mine.iterdir()) == ['notes.txt', 'rows.jsonl']
    (mine/'manifest.json').write_text('{}')  # even a folder that looks like an output: it holds an input
    with pytest.raises(ValueError, match='holds the input'): _prepare(mine, data=[data], overwrite=True)
    assert (mine/'rows.jsonl').exists()


def test_prepare_overwrite_replaces_only_its_own_output(tmp_path):
    other = tmp_path/'other'
    other.mkdir()
    (other/'notes.txt').write_text('mine')
    with pytest.raises(FileExistsError, match='did not make it'): _prepare(other, overwrite=True)
    assert (other/'notes.txt').read_text() == 'mine'
    out = tmp_path/'prep'
    first = _prepare(out)
    again = _prepare(out, overwrite=True, seed=1)
    assert again['seed'] == 1 and json.loads((out/'manifest.json').read_text())['seed'] == 1
    assert first['seed'] == 42


@pytest.mark.parametrize('kw, msg', [
    ({'max_seq_len': 4}, 'max_seq_len'), ({'max_seq_len': 100.5}, 'max_seq_len'), ({'eval_size': -1}, 'eval_size'),
    ({'eval_size': 1.5}, 'eval_size'), ({'num_proc': 0}, 'num_proc'), ({'pack_strategy': 'best'}, 'pack'),
    ({'template': 'llama'}, 'template'), ({'overlong': 'cut'}, 'overlong'), ({'wandb': 'sometimes'}, 'wandb'),
    ({'seed': 'x'}, 'seed')])
def test_prepare_checks_options_before_any_work(tmp_path, monkeypatch, kw, msg):
    import alpaca_ft.prepare as P
    def no_work(*a, **k): raise AssertionError('rows were loaded before the options were checked')
    monkeypatch.setattr(P, 'iter_rows', no_work)
    with pytest.raises(ValueError, match=msg): _prepare(tmp_path/'out', **kw)
    assert not (tmp_path/'out').exists()


def test_prepare_wandb_online_without_a_key_fails_first(tmp_path, monkeypatch, capsys):
    "Failed with a traceback after the output had been written."
    import alpaca_ft.prepare as P
    monkeypatch.delenv('WANDB_API_KEY', raising=False)
    monkeypatch.setenv('HOME', str(tmp_path))
    monkeypatch.setenv('NETRC', str(tmp_path/'no-netrc'))
    def no_work(*a, **k): raise AssertionError('rows were loaded before the W&B mode was checked')
    monkeypatch.setattr(P, 'iter_rows', no_work)  # prepare reads rows through it
    with pytest.raises(ValueError, match='wandb online needs an API key'): _prepare(tmp_path/'out', wandb='online')
    assert not (tmp_path/'out').exists()
    from alpaca_ft.tracking import check_wandb
    monkeypatch.setenv('WANDB_API_KEY', 'sekrit-key-1234567890')
    check_wandb('online')  # a key: fine, and never shown
    assert 'sekrit' not in capsys.readouterr().out


def test_prepare_refuses_a_split_with_no_label_tokens(tmp_path):
    "max_seq_len below every prompt left 0 label tokens and training logged NaN loss."
    with pytest.raises(DataError, match='no label tokens.*raise max_seq_len'): _prepare(tmp_path/'out', max_seq_len=16)
    assert not (tmp_path/'out').exists()


def test_prepare_drops_and_counts_examples_cut_to_no_labels(tmp_path):
    rows = _sample(40)
    rows[3] = {**rows[3], 'instruction': 'word ' * 400}  # the prompt alone is over max_seq_len
    m = _prepare(tmp_path/'out', data=[_jsonl(tmp_path/'rows.jsonl', rows)], eval_size=5)
    assert m['rows']['no_labels'] == 1
    assert sum(s['examples'] for s in m['splits'].values()) == 39


def test_prepare_tokenizer_folder_errors_name_the_path(tmp_path):
    "A missing folder gave the Hub's 'repo id' rule; a corrupt one a traceback."
    missing = tmp_path/'nope'/'tok'
    with pytest.raises(DataError, match=f'{missing}: no such tokenizer folder'): _prepare(tmp_path/'o1', tokenizer=str(missing))
    broken = tmp_path/'broken'
    broken.mkdir()
    (broken/'tokenizer.json').write_text('{"version": "1.0", "model": {"type": "BPE", "voc')
    (broken/'tokenizer_config.json').write_text('{}')
    with pytest.raises(DataError, match=f'{broken}: cannot load the tokenizer'): _prepare(tmp_path/'o2', tokenizer=str(broken))


def test_manifest_stores_an_absolute_tokenizer_path_and_its_fingerprint(tmp_path, monkeypatch):
    "A relative --tokenizer was stored verbatim, so train run from another folder failed."
    import shutil
    from alpaca_ft.tokenization import load_tokenizer, tiny_tokenizer_path
    from alpaca_ft.prepare import tokenizer_fingerprint
    shutil.copytree(tiny_tokenizer_path(), tmp_path/'tok')
    monkeypatch.chdir(tmp_path)
    m = _prepare(tmp_path/'out', tokenizer='tok')
    assert m['tokenizer'] == str((tmp_path/'tok').resolve())
    assert m['tokenizer_fingerprint'] == tokenizer_fingerprint(load_tokenizer(m['tokenizer']))
    assert m['tokenizer_fingerprint'] == tokenizer_fingerprint(load_tokenizer())  # same vocabulary, same fingerprint


def test_verify_fingerprint_and_malformed_manifest(tmp_path):
    "The manifest's fingerprint was never checked; a malformed manifest.json was a traceback."
    from alpaca_ft.prepare import read_manifest, verify_fingerprint
    out = tmp_path/'out'
    m = _prepare(out)
    assert verify_fingerprint(out) == m['fingerprint']
    arrow = sorted((out/'train').glob('*.arrow'))[0]
    b = bytearray(arrow.read_bytes())
    b[len(b) // 2] ^= 0xFF
    arrow.write_bytes(bytes(b))
    with pytest.raises(DataError, match=f'{out}: the train/eval data changed'): verify_fingerprint(out, m)
    for text, msg in (('{"format_version": 1, "sou', 'not valid JSON'), ('[1, 2]', 'expected a JSON object'),
                      ('{"format_version": 1}', 'missing sources')):
        (out/'manifest.json').write_text(text)
        with pytest.raises(DataError, match=f'{out/"manifest.json"}: {msg}'): read_manifest(out)


def test_prepare_outputs_keep_normal_permissions(tmp_path):
    "The output folder was mkdtemp's 0700."
    out = tmp_path/'out'
    _prepare(out)
    mask = umask()
    for p in [out, *out.rglob('*')]:
        assert p.stat().st_mode & 0o777 == (0o777 if p.is_dir() else 0o666) & ~mask, p


def test_packed_splits_have_seq_lengths(tmp_path):
    "TRL's padding-free collator reads example boundaries from `seq_lengths`, which the splits did not have."
    import datasets
    out = tmp_path/'out'
    _prepare(out)
    ds = datasets.load_from_disk(str(out/'train'))
    assert ds.column_names == ['input_ids', 'labels', 'position_ids', 'seq_lengths']
    for pos, lengths in zip(ds['position_ids'], ds['seq_lengths']):
        starts = [i for i, p in enumerate(pos) if p == 0] + [len(pos)]
        assert lengths == [b - a for a, b in zip(starts, starts[1:])]


def test_wandb_offline_logs_raw_then_packed_and_records_them(tmp_path, monkeypatch):
    "The raw rows were never logged; train could not learn which artifact it trained on."
    monkeypatch.setenv('WANDB_DIR', str(tmp_path))
    out = tmp_path/'prep'
    _prepare(out, wandb='offline')
    rec = json.loads((out/'wandb_artifact.json').read_text())
    assert (rec['name'], rec['type'], rec['mode'], rec['raw']['name']) == ('prep_packed', 'dataset', 'offline', 'prep_raw')
    assert len(rec['digest']) == 32 and len(rec['raw']['digest']) == 32


# ---------------------------------------------------------------- notebooks (issue 8)

@pytest.mark.parametrize('name', ['00_data', '03_split', '04_packing', '05_batching', '07_tracking', '08_prepare', '50_files',
                                  '52_attention'])
def test_import_cells_run_on_their_own(name, monkeypatch):
    "nbdev's docs processing runs only the cells with an import (and exported ones); 00, 04, 08 failed with NameError."
    pytest.importorskip('nbdev')
    from execnb.shell import CaptureShell
    from nbdev.process import NBProcessor
    from nbdev.processors import _do_eval
    nbs = Path(__file__).resolve().parents[1]/'nbs'
    monkeypatch.chdir(nbs)
    shell = CaptureShell()
    for cell in NBProcessor(nbs/f'{name}.ipynb', procs=[]).nb.cells:
        if not _do_eval(cell): continue
        shell.cell(cell)
        assert shell.exc is None, f'{name}, cell {cell.idx_}: {shell.exc!r}\n{cell.source}'


def test_prepare_takes_one_source_or_says_what_data_must_be(tmp_path):
    "A single path was iterated character by character ('s: no such file'); a Path was not iterable."
    from alpaca_ft.prepare import prepare
    from alpaca_ft.data import SAMPLE_DATA
    m = prepare(data=Path(SAMPLE_DATA), out=tmp_path/'a', max_seq_len=256, wandb='disabled', progress=False,
                verbose=False)
    assert m['rows']['read'] == 130
    m = prepare(data=str(SAMPLE_DATA), out=tmp_path/'b', max_seq_len=256, wandb='disabled', progress=False,
                verbose=False)
    assert m['rows']['read'] == 130
    with pytest.raises(TypeError, match='data must be a file, URL or hub id, rows'):  # rows in memory are fine
        prepare(data=[42], out=tmp_path/'c', wandb='disabled')
    assert sorted(p.name for p in tmp_path.iterdir()) == ['a', 'b']


def test_wandb_that_cannot_start_is_a_one_line_input_error(tmp_path, monkeypatch):
    "A key but no reachable server: exit 1 'internal error: CommError' after 95 s of retries."
    import wandb
    from alpaca_ft.tracking import init_run
    def unreachable(**kw): raise wandb.errors.CommError('Timed out while retrying: Post https://api.wandb.ai/graphql')
    monkeypatch.setattr(wandb, 'init', unreachable)
    with pytest.raises(ValueError, match=r'W&B \(offline\): cannot start a run: CommError: Timed out'):
        init_run('offline', dir=tmp_path)


def test_manifest_fields_train_reads_are_checked(tmp_path):
    "max_seq_len 'abc' and vocab_size null in manifest.json trained with exit 0."
    from alpaca_ft.prepare import prepare, read_manifest
    prepare(out=tmp_path/'d', max_seq_len=256, wandb='disabled', progress=False, verbose=False)
    good = json.loads((tmp_path/'d'/'manifest.json').read_text())
    for k, v in (('max_seq_len', 'abc'), ('vocab_size', None), ('eos_token_id', True)):
        (tmp_path/'d'/'manifest.json').write_text(json.dumps({**good, k: v}))
        with pytest.raises(DataError, match=f'manifest.json: {k} should be a'): read_manifest(tmp_path/'d')


def test_moved_helpers_keep_their_old_import_paths():
    "Issue 13: the engineering moved to alpaca_ft.files (appendix 50); `from alpaca_ft.data import ...` still works."
    import alpaca_ft.files as files
    from alpaca_ft.data import (OWNER_FILE, URL_MAX_BYTES, atomic_dir, check_replaceable, download, normal_path,
                                owned_temp, owner_record, remove_stale_temps, write_atomic)
    assert write_atomic is files.write_atomic and atomic_dir is files.atomic_dir and download is files.download
    assert (OWNER_FILE, URL_MAX_BYTES) == (files.OWNER_FILE, files.URL_MAX_BYTES)
    # either module may be imported first (alpaca_ft.files imports alpaca_ft.data only when a download fails)
    code = 'import alpaca_ft.files as F, alpaca_ft.data as D; assert D.normal_path is F.normal_path'
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]


def test_library_messages_name_the_python_argument(tmp_path):
    "Issue 15: the library says overwrite=True (the CLI turns it into --overwrite)."
    from alpaca_ft.cli import as_flags
    from alpaca_ft.data import atomic_dir
    atomic_dir(tmp_path/'out', lambda t: (t/'manifest.json').write_text('{"made_by": "alpaca_ft x"}'))
    with pytest.raises(FileExistsError) as e: atomic_dir(tmp_path/'out', lambda t: None)
    assert 'overwrite=True' in str(e.value) and '--' not in str(e.value)
    assert '--overwrite' in as_flags(str(e.value))
