"""Judging answers: the statistics on hand-made verdicts, an OpenAI-compatible stub server on 127.0.0.1 for the
retry / timeout / garbage paths, the local judge on the tiny Llama (and on SmolLM2 where it can be had), the CLI."""
import json, logging, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
import numpy as np
import pytest

from alpaca_ft.judge import (INVALID, LocalJudge, OpenAIJudge, judge_pairs, judge_predictions, outcome,
                             parse_verdict, summarize)

SECRET = 'sk-test-never-log-me-0123456789'
FAST = [('retry-after-ms', '10')]  # the client honours it: retries after 10 ms, not its default backoff


# ---------- statistics on hand-made verdicts ----------
def row(o, la=10, lb=10):
    v = {'a': ('A', 'B'), 'b': ('B', 'A'), 'tie': ('TIE', 'TIE'), 'disagree': ('A', 'A'),
         INVALID: ('A', INVALID)}[o]
    return {'prompt': 'p', 'a': 'w ' * la, 'b': 'w ' * lb, 'outcome': o, 'verdict_ab': v[0], 'verdict_ba': v[1]}


def test_outcome_needs_both_orders_to_agree():
    assert outcome('A', 'B') == 'a' and outcome('B', 'A') == 'b' and outcome('TIE', 'TIE') == 'tie'
    assert outcome('A', 'A') == outcome('B', 'B') == outcome('A', 'TIE') == 'disagree'
    assert outcome(INVALID, 'A') == outcome('B', INVALID) == INVALID


def test_counts_rates_and_interval():
    rows = [row('a')] * 5 + [row('tie')] * 2 + [row('b')] * 3 + [row('disagree')] * 4 + [row(INVALID)]
    s = summarize(rows, n_boot=4000, seed=1)
    assert (s['pairs'], s['wins'], s['ties'], s['losses'], s['disagree'], s['invalid']) == (15, 5, 2, 3, 4, 1)
    assert s['win_rate'] == pytest.approx(6 / 10)
    assert s['order_consistency'] == pytest.approx(10 / 14)
    # first position, over A/B verdicts (TIE is neither): agreed winners once in two, (A, A) twice, one A
    assert s['first_position_rate'] == pytest.approx((8 + 8 + 1) / (16 + 8 + 1))
    lo, hi = s['win_rate_ci']
    assert 0.25 < lo < 0.6 < hi < 0.95  # binomial-ish spread of 10 pairs: about +-0.3
    state = np.random.get_state()[1].copy()
    assert summarize(rows, n_boot=4000, seed=1) == s  # seeded: the same interval
    assert (np.random.get_state()[1] == state).all()  # and numpy's global generator is left alone


def test_all_disagree_has_no_win_rate():
    s = summarize([row('disagree')] * 3)
    assert s['order_consistency'] == 0 and s['win_rate'] is None and s['win_rate_ci'] is None
    assert s['lc_win_rate'] is None and s['first_position_rate'] == 1


def test_length_controlled_win_rate():
    # a wins exactly when its answer is longer; equally long answers tie: at zero difference, a coin toss
    rows = [row('a', 30, 10)] * 6 + [row('b', 10, 30)] * 2 + [row('tie', 10, 10)] * 4
    s = summarize(rows)
    assert s['win_rate'] == pytest.approx(8 / 12)
    assert abs(s['lc_win_rate'] - 0.5) < 0.1 < s['win_rate'] - 0.5
    # length does not explain anything: the LC win rate is the plain one
    even = [row('a', 10, 10)] * 3 + [row('b', 10, 10)]
    assert summarize(even)['lc_win_rate'] == pytest.approx(0.75, abs=0.01)  # the L2 penalty: 0.747
    assert 0.99 < summarize([row('a', 20, 10)] * 5)['lc_win_rate'] < 1  # one-sided: finite, near 1


def test_bad_statistics_options():
    with pytest.raises(ValueError, match='n_boot'): summarize([row('a')], n_boot=0)
    with pytest.raises(ValueError, match='level'): summarize([row('a')], level=1.5)


def test_parse_verdict():
    assert [parse_verdict(s) for s in ('A', 'b', ' TIE. ', '**B**', "'a'")] == ['A', 'B', 'TIE', 'B', 'A']
    assert {parse_verdict(s) for s in ('', None, 'A and B', 'Answer A', 'C', 'AB')} == {INVALID}


# ---------- an OpenAI-compatible stub server on 127.0.0.1 ----------
class Stub(ThreadingHTTPServer):
    "A chat-completions endpoint whose behaviour is picked by the model name; it stops itself after `life` s."
    daemon_threads = True

    def __init__(self, life=60.0):
        super().__init__(('127.0.0.1', 0), Handler)
        self.lock, self.seen, self.requests, self.auth = threading.Lock(), {}, 0, set()
        self.timer = threading.Timer(life, self.shutdown)
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)

    def __enter__(self):
        self.timer.start(); self.thread.start()
        return self

    def __exit__(self, *exc):
        self.timer.cancel(); self.shutdown(); self.server_close(); self.thread.join(5)

    @property
    def url(self): return f'http://127.0.0.1:{self.server_address[1]}/v1'


def prefers_good(user:str) -> str:
    "The stub's judgement: the answer containing 'good'; TIE when both or neither do."
    a, b = user.split('Answer A:\n')[1].split('\n\nAnswer B:\n')
    ga, gb = 'good' in a, 'good' in b.split('\n\nWhich answer')[0]
    return 'TIE' if ga == gb else 'A' if ga else 'B'


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *a): pass

    def send(self, code, body, headers=()):
        data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        self.send_response(code)
        self.send_header('content-type', 'application/json')
        self.send_header('content-length', str(len(data)))
        for k, v in headers: self.send_header(k, v)
        self.end_headers()
        try: self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError): pass  # the client timed out and hung up

    def do_POST(self):
        req = json.loads(self.rfile.read(int(self.headers['content-length'])))
        user = req['messages'][-1]['content']
        with self.server.lock:
            self.server.requests += 1
            n = self.server.seen[user] = self.server.seen.get(user, 0) + 1
            self.server.auth.add(self.headers.get('authorization'))
        model, reply = req['model'], prefers_good(user)
        if model == 'flaky' and n == 1:  # rate limited first, then a server error, then the answer
            return self.send(429, {'error': {'message': 'slow down'}}, FAST)
        if model == 'flaky' and n == 2: return self.send(503, {'error': {'message': 'busy'}}, FAST)
        if model == 'down-for-q1' and 'q1' in user: return self.send(500, {'error': {'message': 'q1'}}, FAST)
        if model == 'always-500': return self.send(500, {'error': {'message': 'down'}}, FAST)
        if model == 'nokey': return self.send(401, {'error': {'message': 'bad key'}})
        if model == 'slow' or (model == 'slow-once' and n == 1): time.sleep(1.5)
        if model == 'garbage': reply = 'I think both answers have their merits.' if 'x' in user else reply
        if model == 'notjson': return self.send(200, 'this is not json')
        self.send(200, {'id': 'c', 'object': 'chat.completion', 'created': 0, 'model': model,
                        'choices': [{'index': 0, 'finish_reason': 'stop',
                                     'message': {'role': 'assistant', 'content': reply}}]})


@pytest.fixture
def stub(monkeypatch):
    with Stub() as s:
        monkeypatch.setenv('OPENAI_API_KEY', SECRET)
        monkeypatch.setenv('OPENAI_BASE_URL', s.url)
        monkeypatch.delenv('OPENAI_ORG_ID', raising=False)
        monkeypatch.delenv('OPENAI_PROJECT_ID', raising=False)
        yield s


PAIRS = [{'prompt': f'q{i}', 'a': 'a good answer' if i % 3 else 'meh', 'b': 'good too' if i % 3 == 0 else 'bad'}
         for i in range(6)]  # a wins 4 (i = 1, 2, 4, 5); i = 0, 3: b wins


def test_stub_judge_counts_and_uses_env(stub, caplog):
    caplog.set_level(logging.DEBUG)
    rows = judge_pairs(PAIRS, OpenAIJudge('good', concurrency=3))
    assert [r['outcome'] for r in rows] == ['b', 'a', 'a', 'b', 'a', 'a']
    assert stub.requests == 12 and stub.auth == {f'Bearer {SECRET}'}  # key and URL came from the environment
    assert SECRET not in caplog.text


def test_retries_on_429_and_5xx(stub):
    rows = judge_pairs(PAIRS[:2], OpenAIJudge('flaky', max_retries=3, concurrency=2))
    assert [r['outcome'] for r in rows] == ['b', 'a']
    assert stub.requests == 3 * 4 and set(stub.seen.values()) == {3}  # 429, 503, then the verdict


def test_no_retries_left_means_invalid_verdicts(stub, caplog):
    rows = judge_pairs(PAIRS[:3], OpenAIJudge('down-for-q1', max_retries=2))
    # q1's requests fail three times each -> invalid, but the evaluation finishes and says so
    assert [r['outcome'] for r in rows] == ['b', INVALID, 'a']
    assert rows[1]['raw_ab'] == rows[1]['raw_ba'] == 'error: InternalServerError'
    assert max(stub.seen.values()) == 3 and '2 of 6 judge requests failed' in caplog.text


def test_every_request_failing_is_an_error(stub):
    with pytest.raises(OSError, match='failed on all 4 requests'):
        judge_pairs(PAIRS[:2], OpenAIJudge('always-500', max_retries=1))


def test_timeout_then_retry(stub):
    rows = judge_pairs(PAIRS[:2], OpenAIJudge('slow-once', timeout=0.3, max_retries=2))
    assert [r['outcome'] for r in rows] == ['b', 'a'] and set(stub.seen.values()) == {2}
    with pytest.raises(OSError, match='APITimeoutError'):
        judge_pairs(PAIRS[:1], OpenAIJudge('slow', timeout=0.2, max_retries=0))


def test_garbage_replies_are_invalid_not_a_crash(stub):
    pairs = PAIRS[:2] + [{'prompt': 'x', 'a': 'good', 'b': 'bad'}]
    rows = judge_pairs(pairs, OpenAIJudge('garbage'))
    assert [r['outcome'] for r in rows] == ['b', 'a', INVALID]
    assert rows[2]['raw_ab'].startswith('I think')
    assert summarize(rows)['invalid'] == 1 and summarize(rows)['win_rate'] == 0.5
    with pytest.raises(OSError, match='failed on all'):  # a body that is not JSON at all
        judge_pairs(PAIRS[:1], OpenAIJudge('notjson', max_retries=0))


def test_refused_request_is_one_line_without_the_key(stub):
    with pytest.raises(ValueError, match='HTTP 401') as e:
        judge_pairs(PAIRS[:1], OpenAIJudge('nokey'))
    assert SECRET not in str(e.value) and '\n' not in str(e.value)


def test_missing_key_is_named(monkeypatch):
    monkeypatch.delenv('OPENAI_API_KEY', raising=False)
    with pytest.raises(ValueError, match='OPENAI_API_KEY'): OpenAIJudge('gpt-4o-mini')
    with pytest.raises(ValueError, match='concurrency'): OpenAIJudge('m', concurrency=0)


# ---------- judge_predictions: files, W&B, CLI ----------
def write_preds(path, gens, prompts=None):
    prompts = prompts or [f'q{i}' for i in range(len(gens))]
    path.write_text(''.join(json.dumps({'prompt': p, 'generation': g, 'reference': ''}) + '\n'
                            for p, g in zip(prompts, gens)))
    return path


@pytest.fixture
def tables(tmp_path):
    a = write_preds(tmp_path/'a.jsonl', [p['a'] for p in PAIRS] + ['only in a'],
                    [p['prompt'] for p in PAIRS] + ['lonely'])
    b = write_preds(tmp_path/'b.jsonl', [p['b'] for p in PAIRS])
    return a, b


def test_judge_predictions_writes_verdicts(stub, tables, tmp_path):
    out = tmp_path/'verdicts.jsonl'
    rep = judge_predictions(*tables, 'openai:good', out=out, names=('after', 'before'))
    s = rep.summary
    assert (s['wins'], s['losses'], s['unmatched'], s['judge'], s['a']) == (4, 2, 1, 'openai:good', 'after')
    lines = [json.loads(l) for l in out.read_text().splitlines()]
    assert [l['outcome'] for l in lines] == [r['outcome'] for r in rep.verdicts] and len(lines) == 6
    first = out.read_bytes()
    with pytest.raises(FileExistsError): judge_predictions(*tables, 'openai:good', out=out)
    judge_predictions(*tables, 'openai:good', out=out, overwrite=True)
    assert out.read_bytes() == first  # same inputs, same bytes
    assert not list(tmp_path.glob('.verdicts*'))  # no temp left behind
    assert not (tmp_path/'wandb').exists()  # W&B is off by default in the Python API
    (tmp_path/'notes.txt').write_text('my notes\n')
    with pytest.raises(FileExistsError, match='not a verdicts file'):  # overwrite replaces only its own
        judge_predictions(*tables, 'openai:good', out=tmp_path/'notes.txt', overwrite=True)
    assert (tmp_path/'notes.txt').read_text() == 'my notes\n'


def test_bad_tables_are_named(tmp_path, stub):
    good = write_preds(tmp_path/'g.jsonl', ['x'])
    bad = tmp_path/'bad.jsonl'
    bad.write_text('{"prompt": "q0", "generation": "x"}\n{"prompt": "q1"}\n')
    with pytest.raises(ValueError, match=r'bad\.jsonl, row 2: needs string fields'):
        judge_predictions(good, bad, 'openai:good')
    dup = write_preds(tmp_path/'dup.jsonl', ['x', 'y'], ['q0', 'q0'])
    with pytest.raises(ValueError, match='row 2: the same prompt as row 1'):
        judge_predictions(good, dup, 'openai:good')
    other = write_preds(tmp_path/'o.jsonl', ['x'], ['zzz'])
    with pytest.raises(ValueError, match='no prompt is in both'): judge_predictions(good, other, 'openai:good')
    assert stub.requests == 0


def cli(capsys, *args):
    from alpaca_ft.cli import main
    code = main(list(map(str, args)))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_judge(stub, tables, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv('WANDB_DIR', str(tmp_path/'wb'))
    out = tmp_path/'v.jsonl'
    code, so, err = cli(capsys, 'judge', *tables, '--judge', 'openai:good', '--out', out, '--wandb', 'offline')
    assert code == 0, err
    assert 'wins 4, ties 0, losses 2' in so and 'order consistency 1.00' in so and SECRET not in so + err
    assert len(out.read_text().splitlines()) == 6 and list((tmp_path/'wb').rglob('*.wandb'))
    code, so, err = cli(capsys, 'judge', *tables, '--judge', 'openai:good', '--out', out)
    assert code == 2 and 'exists' in err and 'Traceback' not in err and len(err.splitlines()) == 1
    code, so, err = cli(capsys, 'judge', *tables, '--judge', 'openai:good', '--out', tmp_path/'w.jsonl',
                        '--concurrency', '0')
    assert code == 2 and '--concurrency' in err and not (tmp_path/'w.jsonl').exists()
    bad = tmp_path/'bad.jsonl'
    bad.write_text('{"prompt": "q0", "generation": "x"}\nnot json\n')
    code, so, err = cli(capsys, 'judge', tables[0], bad, '--judge', 'openai:good', '--out', tmp_path/'w.jsonl')
    assert code == 2 and 'bad.jsonl, line 2' in err and not (tmp_path/'w.jsonl').exists()
    assert stub.requests == 12


# ---------- the local judge ----------
@pytest.fixture(scope='module')
def tiny_judge():
    from alpaca_ft.model import tiny_llama
    from alpaca_ft.tokenization import load_tokenizer
    tok = load_tokenizer()
    return LocalJudge(tiny_llama(len(tok), seed=0), tok, batch_size=3)


def test_local_judge_reads_the_two_label_tokens(tiny_judge):
    import torch
    items = [('Name a colour.', 'Red.', 'A very long answer about many colours ' * 3), ('2+2?', '4', 'four'),
             ('Say hi.', 'hi', 'hello'), ('Pick one.', 'one', 'two')]
    got = tiny_judge(items)
    assert [g['verdict'] for g in got] == ['A' if g['p_a'] >= 0.5 else 'B' for g in got]
    # batched and padded prompts score exactly as one at a time, from the full next-token distribution
    tok, model = tiny_judge.tokenizer, tiny_judge.model
    for it, g in zip(items, got):
        enc = tok(tiny_judge.text(tiny_judge_messages(it)), return_tensors='pt', add_special_tokens=False)
        with torch.no_grad(): p = model(**enc).logits[0, -1].softmax(-1)
        pa, pb = (p[ids].sum().item() for ids in tiny_judge.ids)
        assert g['p_a'] == pytest.approx(pa / (pa + pb), abs=1e-5)
    assert len({g['p_a'] for g in got}) == len(items)  # it reads the answers, not a constant


def tiny_judge_messages(it):
    from alpaca_ft.judge import judge_messages
    return judge_messages(*it)


def test_local_judge_end_to_end(tiny_judge, tables, tmp_path):
    rep = judge_predictions(*tables, tiny_judge, out=tmp_path/'v.jsonl')
    s = rep.summary
    assert s['invalid'] == 0 and s['wins'] + s['ties'] + s['losses'] + s['disagree'] == 6 and s['ties'] == 0
    assert all('p_a_ab' in r and 'p_a_ba' in r for r in rep.verdicts)
    again = judge_predictions(*tables, tiny_judge, out=tmp_path/'w.jsonl')
    assert (tmp_path/'v.jsonl').read_bytes() == (tmp_path/'w.jsonl').read_bytes()


def smollm2_or_skip():
    try: import alpaca_ft.smollm2  # noqa: F401  (the real-model work adds it)
    except ImportError: pytest.skip('alpaca_ft.smollm2 is not in this checkout')
    from alpaca_ft.model import load_model
    from alpaca_ft.tokenization import load_tokenizer
    try: return load_tokenizer('smollm2'), load_model('smollm2')
    except Exception as e: pytest.skip(f'SmolLM2 cannot be had here: {str(e).splitlines()[0][:200]}')


def test_local_judge_on_smollm2():
    "On a real chat model the verdict is the letter the model itself writes first (greedy), in both orders."
    import torch
    from alpaca_ft.judge import judge_messages
    tok, model = smollm2_or_skip()
    judge = LocalJudge(model, tok, batch_size=2)
    paris, banana = 'The capital of France is Paris.', 'The capital of France is a banana.'
    items = [('What is the capital of France?', paris, banana), ('What is the capital of France?', banana, paris),
             ('Translate "hello" into French.', 'Goodbye.', 'Bonjour.')]
    got = judge(items)
    for it, g in zip(items, got):
        enc = tok(judge.text(judge_messages(*it)), return_tensors='pt', add_special_tokens=False)
        with torch.no_grad(): out = model.generate(**enc, max_new_tokens=1, do_sample=False)
        first = tok.decode(out[0, enc['input_ids'].shape[1]:])
        assert parse_verdict(first) == g['verdict'] and 0 < g['p_a'] < 1, (first, g)
