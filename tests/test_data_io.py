"""Issue 18, data layer: downloads that stall, extreme but valid (or plainly bad) input named precisely,
one path normalisation for checks and writers, and temps that name their owner so that only our own dead ones
are removed. In-process and fast; each test fails on the code before issue 18."""
from __future__ import annotations
import codecs, csv, http.server, json, os, socket, subprocess, sys, threading, time
from contextlib import contextmanager
from pathlib import Path

import pytest

import alpaca_ft.data as D
import alpaca_ft.files as F  # the download and file-writing helpers (appendix 50_files)
from alpaca_ft.data import DataError, EmptyField, load_rows

ROW = {'instruction': 'Add two and two.', 'input': '', 'output': 'Four.'}
BODY = (json.dumps(ROW) + '\n').encode() * 40


# ---------------------------------------------------------------- downloads

class _Handler(http.server.BaseHTTPRequestHandler):
    finished = threading.Event()  # set when a slow response was sent whole: the client never gave up

    def log_message(self, *a): pass

    def _send(self, data:bytes, pause:float, steps:int):
        "Send `data` in `steps` pieces `pause` s apart; stops itself when the client has gone."
        n = -(-len(data) // steps)
        for i in range(steps):
            try:
                self.wfile.write(data[i * n:(i + 1) * n])
                self.wfile.flush()
            except OSError: return False
            time.sleep(pause)
        return True

    def do_GET(self):
        if self.path.startswith('/dripheaders'):  # the status line, then a header byte every 0.1 s (6 s max)
            self.wfile.write(b'HTTP/1.0 200 OK\r\n')
            if self._send(b'X-Slow: ' + b'a' * 59, 0.1, 60): _Handler.finished.set()
            return
        if self.path.startswith('/nothttp'):  # not an HTTP response at all
            self.wfile.write(b'SSH-2.0-OpenSSH_9.6\r\n')
            return
        if self.path.startswith('/short'):  # says 10,000 bytes, sends fewer and closes
            self.send_response(200)
            self.send_header('Content-Length', '10000')
            self.end_headers()
            self.wfile.write(BODY[:500])
            return
        self.send_response(200)
        self.send_header('Content-Length', str(len(BODY)))
        self.end_headers()
        if self.path.startswith('/drip'):  # one byte every 0.1 s (6 s at most): each read is prompt
            if self._send(BODY[:60], 0.1, 60): _Handler.finished.set()
        elif self.path.startswith('/steady'):  # the whole body in 20 pieces over about 2 s: slow but steady
            if self._send(BODY, 0.1, 20): _Handler.finished.set()
        else: self.wfile.write(BODY)


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


@pytest.mark.parametrize('path', ['drip', 'dripheaders'])
def test_a_dripping_url_is_given_up_as_stalled(monkeypatch, path):
    "A byte every few seconds kept a download going until the fixed 30-minute URL_DEADLINE."
    monkeypatch.setattr(F, 'URL_STALL_SECONDS', 0.5)
    monkeypatch.setattr(F, 'URL_MIN_RATE', 200)  # 100 bytes per 0.5 s; the server sends ~5
    with server() as base:
        url = f'{base}/{path}/rows.jsonl'
        _Handler.finished.clear()
        with pytest.raises(DataError, match='download stalled: .* bytes/s') as e: load_rows(url)
        assert not _Handler.finished.is_set()  # given up while the server was still dripping
        assert str(e.value).startswith(url)


def test_a_slow_steady_download_is_not_cut_by_a_fixed_deadline(monkeypatch):
    "A fixed deadline cuts a big download on slow links however steadily it comes: the limit grows with size."
    monkeypatch.setattr(F, 'URL_DEADLINE', 0.3, raising=False)  # the old fixed deadline, were it still used
    monkeypatch.setattr(F, 'URL_STALL_SECONDS', 0.3)
    monkeypatch.setattr(F, 'URL_MIN_RATE', 10)  # 3 bytes per 0.3 s; the server sends ~150
    with server() as base:
        assert load_rows(f'{base}/steady/rows.jsonl') == [ROW] * 40  # about 2 s: several stretches


def test_a_server_that_does_not_speak_http_is_named():
    "http.client's BadStatusLine is not an OSError: it escaped as an internal error."
    with server() as base:
        url = f'{base}/nothttp/rows.jsonl'
        with pytest.raises(DataError, match='not a valid HTTP response') as e: load_rows(url)
        assert str(e.value).startswith(url)


def test_a_download_cut_short_is_named():
    with server() as base:
        url = f'{base}/short/rows.jsonl'
        with pytest.raises(DataError) as e: load_rows(url)
        assert str(e.value).startswith(url)
        assert 'closed after 500 of 10,000 bytes' in str(e.value)


# ---------------------------------------------------------------- extreme input

def test_json_nested_200000_deep_is_bad_input_naming_file_and_line(tmp_path):
    "Was a RecursionError: 'internal error', exit 1."
    deep = '[' * 200_000 + ']' * 200_000
    p = tmp_path/'deep.json'
    p.write_text('[\n{"instruction": "a", "output": "b"},\n{"instruction": "c", "output": ' + deep + '}\n]\n')
    with pytest.raises(DataError, match=r'deep\.json, line 3: JSON nested too deeply'): load_rows(p)
    q = tmp_path/'deep.jsonl'
    q.write_text(json.dumps(ROW) + '\n' + deep + '\n')
    with pytest.raises(DataError, match=r'deep\.jsonl, line 2: JSON nested too deeply'): load_rows(q)
    ok = tmp_path/'nested.json'  # moderate nesting in an extra field is fine
    ok.write_text(json.dumps([{**ROW, 'meta': json.loads('[' * 50 + ']' * 50)}]))
    assert load_rows(ok) == [ROW]


@pytest.mark.parametrize('encoding', ['utf-16', 'utf-16-le', 'utf-16-be', 'utf-32'])
@pytest.mark.parametrize('ext', ['jsonl', 'json', 'csv'])
def test_utf16_and_utf32_files_with_a_bom_are_read(tmp_path, encoding, ext):
    "A UTF-16 file (as Windows tools write it) was called 'a binary file'."
    rows = [ROW, {'instruction': 'Übersetze: 猫', 'input': 'ctx', 'output': 'Katze 🐈'}]
    if ext == 'jsonl': text = ''.join(json.dumps(r, ensure_ascii=False) + '\n' for r in rows)
    elif ext == 'json': text = json.dumps(rows, ensure_ascii=False, indent=1)
    else: text = 'instruction,input,output\r\n' + ''.join(
        f'{r["instruction"]},{r["input"]},{r["output"]}\r\n' for r in rows)
    bom = {'utf-16-le': codecs.BOM_UTF16_LE, 'utf-16-be': codecs.BOM_UTF16_BE}.get(encoding, b'')
    p = tmp_path/f'rows.{ext}'
    p.write_bytes(bom + text.encode(encoding))  # 'utf-16' and 'utf-32' write their own BOM
    assert load_rows(p) == rows


def test_utf16_without_a_bom_and_broken_utf16_are_named(tmp_path):
    p = tmp_path/'nobom.jsonl'
    p.write_bytes((json.dumps(ROW) + '\n').encode('utf-16-le'))
    with pytest.raises(DataError, match=r'nobom\.jsonl: this looks like UTF-16 text without a byte-order'):
        load_rows(p)
    q = tmp_path/'broken.jsonl'  # a lone surrogate on line 2
    q.write_bytes(codecs.BOM_UTF16_LE + (json.dumps(ROW) + '\n').encode('utf-16-le') + b'\x00\xd8a\x00\n\x00')
    with pytest.raises(DataError, match=r'broken\.jsonl, line 2: not valid UTF-16'): load_rows(q)
    blob = tmp_path/'blob.json'
    blob.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(DataError, match='binary file'): load_rows(blob)


@pytest.mark.parametrize('ext', ['json', 'jsonl'])
def test_a_5000_digit_integer_names_the_file_line_and_field(tmp_path, ext):
    "Gave Python's 'Exceeds the limit (4300 digits) for integer string conversion'."
    big = '7' * 5000
    p = tmp_path/f'big.{ext}'
    if ext == 'jsonl':
        p.write_text(json.dumps(ROW) + '\n{"instruction": "x", "output": -' + big + '}\n')
        where = r'line 2'
    else:
        p.write_text('[' + json.dumps(ROW) + ',\n{"instruction": "x", "output": -' + big + '}]')
        where = r'row 1'
    with pytest.raises(DataError, match=rf"big\.{ext}, {where}: field 'output' must be a string, "
                                        r'got an integer of 5,000 digits'):
        load_rows(p)
    ok = tmp_path/f'id.{ext}'  # in a field the rows do not use, it is no reason to refuse the row
    line = json.dumps(ROW)[:-1] + ', "id": ' + big + '}'
    ok.write_text(line + '\n' if ext == 'jsonl' else f'[{line}]')
    assert load_rows(ok) == [ROW]


def test_a_valid_csv_with_a_200000_character_field_is_read(tmp_path):
    "Was refused: csv's default field limit is 131,072 characters."
    long = 'word, "quoted"\n' * 14_000  # 210,000 characters, with commas, quotes and newlines
    p = tmp_path/'long.csv'
    with open(p, 'w', newline='', encoding='utf-8') as f:
        w = csv.writer(f)
        w.writerows([['instruction', 'input', 'output'], ['Add.', '', '4'], ['Repeat.', '', long]])
    limit = csv.field_size_limit()
    assert load_rows(p)[1]['output'] == long
    assert csv.field_size_limit() == limit  # the process-wide setting is put back


def test_a_csv_cut_short_inside_a_quoted_cell_is_named(tmp_path):
    "The open quote swallowed the rest of the file into one cell, and the row was kept."
    p = tmp_path/'cut.csv'
    p.write_text('instruction,input,output\nAdd.,,4\nSay,,"it was cut\nhere,,x\n', encoding='utf-8')
    with pytest.raises(DataError, match=r'cut\.csv, line 3: not valid CSV: unexpected end of data'): load_rows(p)
    q = tmp_path/'quote.csv'
    q.write_text('instruction,input,output\nAdd.,,"4"2\n', encoding='utf-8')
    with pytest.raises(DataError, match=r"quote\.csv, line 2: not valid CSV: ',' expected after"): load_rows(q)
    ok = tmp_path/'ok.csv'  # quotes inside a cell, doubled quotes, CRLF: valid, read as written
    ok.write_text('instruction,input,output\r\nSay "hi",,"a ""b""\r\nc"\r\n', encoding='utf-8', newline='')
    assert load_rows(ok) == [{'instruction': 'Say "hi"', 'input': '', 'output': 'a "b"\r\nc'}]


def test_a_chat_row_with_a_blank_answer_is_skipped_and_named(tmp_path):
    "Was kept as a training row with nothing to learn."
    chat = lambda answer, user='Hi': {'messages': [{'role': 'user', 'content': user},
                                                   {'role': 'assistant', 'content': answer}]}
    p = tmp_path/'chat.jsonl'
    p.write_text(''.join(json.dumps(r) + '\n' for r in (chat('Hello'), chat(' \n\t'), chat('Yes', user=' '))))
    with pytest.raises(EmptyField, match=r"chat\.jsonl, line 2: the assistant's answer \(the last message\)"):
        load_rows(p)
    invalid = []
    assert load_rows(p, invalid=invalid) == [chat('Hello')]  # as a blank Alpaca output: dropped and counted
    assert invalid == [f"{p}, line 2: the assistant's answer (the last message) is empty",
                       f"{p}, line 3: no message before the assistant's answer has any text"]


# ---------------------------------------------------------------- one path normalisation

def _stamp(t, v=1):
    (t/'manifest.json').write_text('{"made_by": "alpaca_ft test", "v": %d}' % v)


@pytest.mark.parametrize('spelling', ['home', 'relative', 'absolute', 'symlinked'])
def test_checks_and_writers_take_every_spelling_of_a_path(tmp_path, monkeypatch, spelling):
    "The checks normalised '~' and relative paths, the writers did not: '~/out' became a folder named '~'."
    home = tmp_path/'home'
    (home/'work').mkdir(parents=True)
    (tmp_path/'link').symlink_to(home)
    monkeypatch.setenv('HOME', str(home))
    monkeypatch.chdir(home/'work')
    out = {'home': '~/out', 'relative': '../out', 'absolute': str(home/'out'),
           'symlinked': str(tmp_path/'link'/'out')}[spelling]
    assert D.normal_path(out) == home.resolve()/'out'
    D.atomic_dir(out, _stamp)
    assert (home/'out'/'manifest.json').exists()
    with pytest.raises(FileExistsError, match='exists; pass overwrite=True'): D.check_replaceable(out)
    D.atomic_dir(out, lambda t: _stamp(t, 2), overwrite=True)
    assert '"v": 2' in (home/'out'/'manifest.json').read_text()
    D.write_atomic(f'{out}.txt', 'x')
    assert (home/'out.txt').read_text() == 'x'
    assert sorted(p.name for p in home.iterdir()) == ['out', 'out.txt', 'work']
    assert list((home/'work').iterdir()) == []  # no folder named '~' here


def test_a_symlink_named_as_the_output_is_refused_not_followed(tmp_path):
    target = tmp_path/'precious'
    target.mkdir()
    _stamp(target)
    (tmp_path/'out').symlink_to(target)
    with pytest.raises(FileExistsError, match='not a folder alpaca_ft made'):
        D.atomic_dir(tmp_path/'out', lambda t: _stamp(t, 2), overwrite=True)
    assert '"v": 1' in (target/'manifest.json').read_text() and (tmp_path/'out').is_symlink()


def test_the_output_lands_where_it_was_checked_even_if_the_current_folder_changes(tmp_path, monkeypatch):
    "The writers used the relative path as given, so a chdir during the build moved the output."
    (tmp_path/'a').mkdir()
    (tmp_path/'b').mkdir()
    monkeypatch.chdir(tmp_path/'a')
    def build(t):
        _stamp(t)
        os.chdir(tmp_path/'b')
    D.atomic_dir('out', build)
    assert (tmp_path/'a'/'out'/'manifest.json').exists() and list((tmp_path/'b').iterdir()) == []


def test_normal_path_names_its_argument():
    with pytest.raises(TypeError, match='path must be a str or a path, got int'): D.normal_path(3)


# ---------------------------------------------------------------- build first, then the swap

def test_atomic_dir_puts_the_old_folder_back_when_the_swap_fails(tmp_path, monkeypatch):
    out = tmp_path/'out'
    D.atomic_dir(out, _stamp)
    real = Path.rename
    def rename(self, target):
        if self.name == 'new' and Path(target) == out: raise OSError(28, 'No space left on device')
        return real(self, target)
    monkeypatch.setattr(Path, 'rename', rename)
    with pytest.raises(OSError, match='No space left'):
        D.atomic_dir(out, lambda t: _stamp(t, 2), overwrite=True)
    assert '"v": 1' in (out/'manifest.json').read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ['out']


def test_atomic_dir_runs_the_whole_build_before_touching_the_output(tmp_path):
    out = tmp_path/'out'
    D.atomic_dir(out, _stamp)
    seen = []
    def build(t):
        _stamp(t, 2)
        seen.append((out/'manifest.json').read_text())  # the build's last step still sees the old output
        (t/'late.txt').write_text('late')
    D.atomic_dir(out, build, overwrite=True)
    assert '"v": 1' in seen[0] and (out/'late.txt').read_text() == 'late'
    assert not (out/D.OWNER_FILE).exists()  # the owner record stays with the temp


# ---------------------------------------------------------------- temps that name their owner

def _dead_temp(parent:Path) -> Path:
    "The temp folder of a writer that died without cleaning up (a forked child, really ended)."
    before = set(parent.iterdir())
    child = os.fork()
    if child == 0:
        try: (temp := D.owned_temp(parent, 'out')).__enter__()  # kept referenced: a dropped one cleans up
        finally: os._exit(0)
    os.waitpid(child, 0)
    [temp] = set(parent.iterdir()) - before
    return temp


def _fake(parent:Path, name:str, **change) -> Path:
    "A temp folder whose owner record is a dead writer's, with `change` applied."
    p = parent/f'.out.tmp-{name}'
    p.mkdir()
    dead = subprocess.run([sys.executable, '-c', 'import os; print(os.getpid())'], capture_output=True,
                          text=True)
    record = {**D.owner_record(), 'pid': int(dead.stdout), 'temp': p.name, **change}
    (p/D.OWNER_FILE).write_text(json.dumps(record))
    (p/'model.safetensors').write_bytes(b'0' * 100)
    return p


def test_a_dead_writers_temp_on_this_host_is_removed(tmp_path):
    "Killed runs left hidden temp folders that nothing cleaned."
    stale = _dead_temp(tmp_path)
    assert D.remove_stale_temps(tmp_path) == [stale] and not stale.exists()
    stale = _dead_temp(tmp_path)
    D.atomic_dir(tmp_path/'out', _stamp)  # every writer cleans up beside its output first
    assert not stale.exists() and sorted(p.name for p in tmp_path.iterdir()) == ['out']


def test_temps_of_other_hosts_boots_and_containers_survive(tmp_path):
    "A PID is only meaningful on one host, boot and PID namespace: two containers deleted each other's temps."
    kept = [_fake(tmp_path, 'otherhst', host='build-node-7'), _fake(tmp_path, 'otherbot', boot_id='0' * 36),
            _fake(tmp_path, 'othernsp', pid_namespace=4026531999), _fake(tmp_path, 'nobootid', boot_id=None)]
    gone = _fake(tmp_path, 'deadhere')  # the same record, unchanged: ours, and dead
    assert D.remove_stale_temps(tmp_path) == [gone]
    assert all((p/'model.safetensors').exists() for p in kept)


def test_a_folder_alpaca_ft_never_made_survives_whatever_its_name(tmp_path):
    "The name pattern alone (and a dead PID in it) was enough to delete a folder."
    dead = subprocess.run([sys.executable, '-c', 'import os; print(os.getpid())'], capture_output=True,
                          text=True)
    pid = int(dead.stdout)
    names = [f'.out.tmp-{pid}-abcd1234', '.out.tmp-abcd1234', f'.final.old-{pid}-k2j4h5g6']
    for n in names:
        (tmp_path/n).mkdir()
        (tmp_path/n/'mine.txt').write_text('mine')
    odd = [_fake(tmp_path, 'copyrec1', temp='.out.tmp-elsewher'),  # a record copied from another temp
           _fake(tmp_path, 'notours1', made_by='someone else'), _fake(tmp_path, 'badpid01', pid='12')]
    (tmp_path/'.out.tmp-notjson1').mkdir()
    (tmp_path/'.out.tmp-notjson1'/D.OWNER_FILE).write_text('{"made_by": "alpaca_ft temp", ')
    real = _fake(tmp_path, 'target01')
    (tmp_path/'.out.tmp-symlink1').symlink_to(real)  # a symlink to a stale temp is not followed
    assert D.remove_stale_temps(tmp_path) == [real]
    assert all((tmp_path/n/'mine.txt').exists() for n in names) and all(p.exists() for p in odd)
    assert (tmp_path/'.out.tmp-notjson1').exists() and (tmp_path/'.out.tmp-symlink1').is_symlink()


def test_live_temps_survive_and_a_reused_pid_does_not_keep_a_dead_one(tmp_path):
    with D.owned_temp(tmp_path, 'out') as live:
        reused = _fake(tmp_path, 'reused01', pid=os.getpid(), start=1)  # this PID, but an earlier process's
        assert D.remove_stale_temps(tmp_path) == [reused]
        assert live.exists() and json.loads((live/D.OWNER_FILE).read_text())['temp'] == live.name
    assert not live.exists()
