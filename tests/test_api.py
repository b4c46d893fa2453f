"""`alpaca_ft` as other projects use it: the lazy top-level API, and prepared splits fed to third-party
trainers (`transformers.Trainer` with `alpaca_ft.Collator`, TRL's `SFTTrainer` with `padding_free=True`).

Every model is a 2-layer Llama built from transformers' `LlamaConfig` on CPU; every split is `prepare` run on
the bundled sample with the bundled tokenizer (packs of at most 256 tokens, so most hold several examples).
"""
from __future__ import annotations
import contextlib, io, json, os, pkgutil, shutil, subprocess, sys, types
from pathlib import Path

import pytest
import torch

import alpaca_ft

REPO = Path(__file__).resolve().parents[1]
PAD_TOL = 1e-5


# ---------------------------------------------------------------- the top-level API

def test_import_is_light():
    "`import alpaca_ft` imports neither torch nor transformers nor datasets (checked in a fresh interpreter)."
    code = ('import sys, alpaca_ft; heavy = [m for m in ("torch", "transformers", "datasets", "trl") '
            'if m in sys.modules]; print(heavy)')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == '[]', out.stdout + out.stderr


def test_train_module_leaves_peft_until_lora_is_asked_for():
    "`import alpaca_ft.train` (what `alpaca_ft train --help` needs) loads no peft: LoRA imports it when used."
    code = 'import sys, alpaca_ft.train; print("peft" in sys.modules, "trl" in sys.modules)'
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == 'False False', out.stdout + out.stderr


def test_every_name_resolves_and_none_is_a_module():
    modules = {m.name for m in pkgutil.iter_modules(alpaca_ft.__path__)}
    assert {'prepare', 'train', 'generate', 'demo', 'batching'} <= modules
    for name in alpaca_ft.__all__:
        assert name not in modules, f'alpaca_ft.{name} is also a module: `import alpaca_ft.{name}` shadows it'
        value = getattr(alpaca_ft, name)
        assert not isinstance(value, types.ModuleType), name
        assert callable(value), name
        assert value.__doc__, f'alpaca_ft.{name} has no docstring'
        assert name in dir(alpaca_ft)


def test_names_survive_importing_their_modules():
    "After `import alpaca_ft.prepare` / `.train`, the top-level functions are still functions (no shadowing)."
    import alpaca_ft.prepare, alpaca_ft.train, alpaca_ft.demo, alpaca_ft.generate  # noqa: F401
    assert alpaca_ft.prepare_dataset is alpaca_ft.prepare.prepare_dataset
    assert alpaca_ft.fine_tune is alpaca_ft.train.fine_tune
    assert alpaca_ft.run_demo is alpaca_ft.demo.run_demo
    assert alpaca_ft.generate_answer is alpaca_ft.generate.generate_answer
    assert alpaca_ft.collate is alpaca_ft.batching.collate
    assert isinstance(alpaca_ft.prepare, types.ModuleType)


def test_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match='no attribute'): alpaca_ft.no_such_thing
    assert not hasattr(alpaca_ft, 'train_model')


# ---------------------------------------------------------------- a prepared split and a tiny Llama

@pytest.fixture(scope='module')
def prepared(tmp_path_factory):
    "A prepare output of the bundled sample (bundled tokenizer), its manifest and its train split."
    import datasets
    from alpaca_ft.prepare import prepare
    out = tmp_path_factory.mktemp('api')/'prep'
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        prepare(out=out, max_seq_len=256, wandb='disabled')
    manifest = json.loads((out/'manifest.json').read_text(encoding='utf-8'))
    ds = datasets.load_from_disk(str(out/'train'))
    starts = [sum(p == 0 for p in r) for r in ds['position_ids']]
    assert sum(s > 1 for s in starts) >= 8, 'the split should hold packs of several examples'
    return out, manifest, ds


def tiny_llama(vocab_size:int, attn_implementation:str, pad_id:int):
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, max_position_embeddings=512, pad_token_id=pad_id,
                      attn_implementation=attn_implementation)
    return LlamaForCausalLM(cfg)


def examples_of(row_ids:torch.Tensor, row_pos:torch.Tensor, n:int) -> list[tuple[int, int]]:
    "(start, end) of the examples in the first `n` (real) tokens of a row."
    starts = [i for i in range(n) if row_pos[i] == 0] + [n]
    return list(zip(starts, starts[1:]))


def pack_error(model, input_ids, position_ids, logits, pad_id:int) -> tuple[float, int]:
    "Largest difference between each row's logits and its examples' run alone; the number of examples seen."
    worst, seen = 0.0, 0
    with torch.no_grad():
        for ids, pos, lg in zip(input_ids, position_ids, logits):
            n = int((ids != pad_id).sum())
            assert (ids[n:] == pad_id).all() and (ids[:n] != pad_id).all(), 'padding only at the end'
            for s, e in examples_of(ids, pos, n):
                alone = model(input_ids=ids[None, s:e], use_cache=False).logits[0]
                worst, seen = max(worst, (lg[s:e].float() - alone.float()).abs().max().item()), seen + 1
    return worst, seen


# ---------------------------------------------------------------- transformers.Trainer

@pytest.mark.parametrize('impl', ['sdpa', 'eager'])
def test_hf_trainer_keeps_packed_examples_apart(prepared, tmp_path, impl):
    """`Collator.for_model` as a Trainer `data_collator`, batch size 4: in each forward pass of the Trainer,
    every pack's logits equal its examples run alone (same weights, 1e-5), and two optimizer steps run."""
    from transformers import Trainer, TrainingArguments
    from alpaca_ft.batching import Collator
    _, manifest, ds = prepared
    pad = manifest['pad_token_id']
    model = tiny_llama(manifest['vocab_size'], impl, pad)
    seen = {'calls': 0, 'worst': 0.0, 'examples': 0, 'packed_rows': 0, 'mask_dtypes': set(), 'busy': False}

    def check(module, args, kwargs, output):
        if seen['busy']: return  # the reference runs below call the model too
        seen['busy'] = True
        try:
            seen['calls'] += 1
            seen['mask_dtypes'].add(kwargs['attention_mask'].dtype)
            logits = output.logits.detach()
            w, n = pack_error(module, kwargs['input_ids'], kwargs['position_ids'], logits, pad)
            seen['worst'], seen['examples'] = max(seen['worst'], w), seen['examples'] + n
            seen['packed_rows'] += int(((kwargs['position_ids'] == 0).sum(-1) > 1).sum())
        finally: seen['busy'] = False

    handle = model.register_forward_hook(check, with_kwargs=True)
    args = TrainingArguments(output_dir=str(tmp_path/'hf'), per_device_train_batch_size=4, max_steps=2,
                             learning_rate=1e-3, report_to='none', save_strategy='no', logging_steps=1,
                             use_cpu=True, dataloader_num_workers=0, disable_tqdm=True, seed=0)
    trainer = Trainer(model=model, args=args, train_dataset=ds, data_collator=Collator.for_model(model))
    result = trainer.train()
    handle.remove()
    assert trainer.state.global_step == 2 and torch.isfinite(torch.tensor(result.training_loss))
    assert seen['calls'] == 2 and seen['packed_rows'] >= 2, seen
    assert seen['mask_dtypes'] == {torch.bool if impl == 'sdpa' else torch.float32}
    assert seen['worst'] < PAD_TOL, f"{impl}: packs and their examples differ by {seen['worst']:.2e}"


def test_hf_trainer_check_can_fail(prepared):
    "The check above catches leaking packs: a boolean block mask given to eager attention is far off."
    from alpaca_ft.batching import collate
    _, manifest, ds = prepared
    pad = manifest['pad_token_id']
    model = tiny_llama(manifest['vocab_size'], 'eager', pad).eval()
    rows = [r for r in ds if sum(p == 0 for p in r['position_ids']) > 1][:4]
    b = collate(rows, pad, 'sdpa')  # the mask form of the wrong implementation
    assert b['attention_mask'].dim() == 4
    inputs = {k: b[k] for k in ('input_ids', 'attention_mask', 'position_ids')}
    with torch.no_grad(): logits = model(**inputs).logits
    assert pack_error(model, b['input_ids'], b['position_ids'], logits, pad)[0] > 1e-2


# ---------------------------------------------------------------- TRL SFTTrainer, padding-free

def with_seq_lengths(ds):
    "`ds` with a `seq_lengths` column derived from its position ids."
    def lengths(pos):
        starts = [i for i, p in enumerate(pos) if p == 0] + [len(pos)]
        return [e - s for s, e in zip(starts, starts[1:])]
    return ds.add_column('seq_lengths', [lengths(p) for p in ds['position_ids']])


def trl_position_ids(ds, tokenizer, tmp_path, batch_size:int=3) -> list[tuple[list[int], list[int]]]:
    "(input_ids, position_ids) of each forward pass SFTTrainer(padding_free=True) makes in two steps on `ds`."
    from trl import SFTConfig, SFTTrainer
    model = tiny_llama(len(tokenizer), 'sdpa', tokenizer.pad_token_id)
    fed = []
    def record(module, args, kwargs):
        fed.append((kwargs['input_ids'][0].tolist(), kwargs['position_ids'][0].tolist()))
    model.register_forward_pre_hook(record, with_kwargs=True)
    cfg = SFTConfig(output_dir=str(tmp_path/'trl'), padding_free=True, per_device_train_batch_size=batch_size,
                    max_steps=2, learning_rate=1e-3, report_to='none', save_strategy='no', use_cpu=True,
                    disable_tqdm=True, max_length=None, dataset_kwargs={'skip_prepare_dataset': True})
    SFTTrainer(model=model, args=cfg, train_dataset=ds, processing_class=tokenizer).train()
    assert len(fed) == 2
    return fed


def expected_positions(ds, flat_ids:list[int]) -> list[int]:
    "The stored position ids of the rows whose `input_ids` laid end to end make `flat_ids`."
    rows = {tuple(r['input_ids']): r['position_ids'] for r in ds}
    out, at = [], 0
    while at < len(flat_ids):
        n = next((n for n in range(len(flat_ids) - at, 0, -1) if tuple(flat_ids[at:at + n]) in rows), None)
        assert n is not None, f'tokens at {at} are not the start of a stored row'
        out += rows[tuple(flat_ids[at:at + n])]
        at += n
    return out


def check_trl(ds, manifest, tmp_path):
    from alpaca_ft.tokenization import load_tokenizer
    fed = trl_position_ids(ds, load_tokenizer(manifest['tokenizer']), tmp_path)
    for ids, pos in fed:
        exp = expected_positions(ds, ids)
        assert pos == exp, f'{sum(p == 0 for p in pos)} example starts fed, {sum(p == 0 for p in exp)} stored'


def test_trl_padding_free_feeds_stored_positions(prepared, tmp_path):
    "SFTTrainer(padding_free=True) on a split as prepare writes it: it feeds the stored position ids."
    _, manifest, ds = prepared
    assert 'seq_lengths' in ds.column_names, 'TRL reads example boundaries from a seq_lengths column'
    lengths = [sum(r) for r in ds['seq_lengths']]
    assert lengths == [len(r) for r in ds['input_ids']]
    assert with_seq_lengths(ds.remove_columns('seq_lengths'))['seq_lengths'] == ds['seq_lengths']
    check_trl(ds, manifest, tmp_path)


def test_trl_padding_free_with_seq_lengths_column(prepared, tmp_path):
    "The same check with the column derived here: what TRL needs from a prepared split is `seq_lengths`."
    _, manifest, ds = prepared
    if 'seq_lengths' in ds.column_names: ds = ds.remove_columns('seq_lengths')
    check_trl(with_seq_lengths(ds), manifest, tmp_path)


def test_trl_padding_free_without_seq_lengths_sees_packs_as_one_sequence(prepared, tmp_path):
    "Without the column TRL restarts positions only at each pack: the check above would fail."
    _, manifest, ds = prepared
    if 'seq_lengths' in ds.column_names: ds = ds.remove_columns('seq_lengths')
    with pytest.raises(AssertionError, match='example starts fed'): check_trl(ds, manifest, tmp_path)


# ---------------------------------------------------------------- pad = EOS

def test_pad_equal_to_eos_keeps_rows_whole():
    "Llama 2 pads with EOS: rows without stored positions count on through their final EOS."
    from alpaca_ft.batching import collate
    eos = 2
    b = collate([{'input_ids': [1, 5, 6, eos], 'labels': [-100, 5, 6, eos]},
                 {'input_ids': [1, 7, eos], 'labels': [-100, 7, eos]}], pad_id=eos)
    assert b['position_ids'].tolist() == [[0, 1, 2, 3], [0, 1, 2, 0]]
    assert b['attention_mask'].tolist() == [[1, 1, 1, 1], [1, 1, 1, 0]]  # not split into examples at the EOS


# ---------------------------------------------------------------- issue 15: no silent wrongs

def shared(rel:str) -> Path:
    "A file of the shared reference material, or a skip saying where it was looked for."
    root = Path(os.environ.get('ALPACA_FT_SHARED', REPO.parent/'shared'))
    if not (root/rel).exists(): pytest.skip(f'{root/rel} not found (set ALPACA_FT_SHARED to the shared/ folder)')
    return root/rel


def trained_text(out:dict, i:int, tok) -> str:
    return tok.decode([t for t, l in zip(out['input_ids'][i], out['labels'][i]) if l != -100])


def test_first_answer_token_is_trained_when_the_prompt_ends_in_a_space():
    "'A: ' + 'Four.': the token holding ' Four' straddles the boundary; it is the answer's, and trained."
    tok = alpaca_ft.load_tokenizer()
    out = alpaca_ft.tokenize_examples(['Q: What is 2+2?\nA: '], ['Four.'], tok)
    assert trained_text(out, 0, tok).strip() == 'Four.' + tok.eos_token


def test_first_answer_token_is_trained_with_llama_on_real_rows():
    "Llama 2, an 'Answer: ' template, the 1,000 Alpaca-GPT4 rows: every row trains its whole answer."
    tok = alpaca_ft.load_tokenizer(str(shared('assets/llama-2-tokenizer')))
    rows = alpaca_ft.load_rows(shared('data/alpaca_gpt4_sample1k.jsonl'))
    prompts = [alpaca_ft.render(r, 'Instruction: {instruction}\nAnswer: ')[0] for r in rows]
    out = alpaca_ft.tokenize_examples(prompts, [r['output'] for r in rows], tok)
    cut = [i for i, r in enumerate(rows) if trained_text(out, i, tok).strip() != r['output'].strip() + '</s>']
    assert cut == [], f'{len(cut)} of {len(rows)} rows lose the start of their answer, e.g. row {cut[:1]}'


def test_a_template_ending_in_a_space_is_warned_about(caplog):
    from alpaca_ft.prompts import warn_trailing_space
    with caplog.at_level('WARNING', logger='alpaca_ft'):
        assert warn_trailing_space(['Q: a\nA: ', 'Q: b\nA:']) == 1
    assert 'end in a space' in caplog.text and 'inference' in caplog.text
    caplog.clear()
    with caplog.at_level('WARNING', logger='alpaca_ft'): warn_trailing_space(['Q: a\nA:', 'x\n'])
    assert caplog.text == ''


QA = 'Q: {instruction}\nA:'


@pytest.fixture(scope='module')
def qa_run(tmp_path_factory):
    "A tiny run on data prepared with the template `QA` (rows in memory): the run folder."
    tmp = tmp_path_factory.mktemp('qa')
    rows = alpaca_ft.load_rows(alpaca_ft.data.SAMPLE_DATA)
    alpaca_ft.prepare_dataset(rows, out=tmp/'data', template=QA, max_seq_len=256, progress=False)
    result = alpaca_ft.fine_tune(data_dir=str(tmp/'data'), out=str(tmp/'run'), max_steps=2, batch_size=4,
                                 grad_accum=1, n_eval_samples=2, max_new_tokens=2, progress=False)
    return result


def echo_prompts(monkeypatch) -> list:
    "Make generation return its prompts (and record them), so a test sees what the model would be asked."
    import alpaca_ft.generate as gen
    asked = []
    def fake(model, tok, prompts, max_new_tokens=256, *a, **kw):
        asked.extend(prompts)
        return list(prompts)
    monkeypatch.setattr(gen, 'generate', fake)
    return asked


def test_the_template_is_recorded_and_generation_uses_it(qa_run, monkeypatch, capsys):
    "Trained on 'Q: ...\\nA:', the model is asked 'Q: ...\\nA:', by the function and the command, not Alpaca's."
    from alpaca_ft.cli import main
    assert qa_run.final is not None and qa_run.final.is_dir()
    assert json.loads((qa_run.out/'run.json').read_text())['template'] == QA
    preds = [json.loads(l) for l in (qa_run.out/'eval_predictions.jsonl').read_text().splitlines()]
    assert all(p['prompt'].startswith('Q: ') and p['prompt'].endswith('\nA:') for p in preds)
    asked = echo_prompts(monkeypatch)
    alpaca_ft.generate_answer(qa_run.final, 'What is 2+2?', max_new_tokens=2)
    assert main(['generate', str(qa_run.final), '--instruction', 'What is 2+2?', '--max-new-tokens', '2']) == 0
    assert asked == ['Q: What is 2+2?\nA:'] * 2
    ckpt = sorted((qa_run.out/'checkpoints').iterdir())[-1]
    alpaca_ft.generate_answer(ckpt, 'Hi', max_new_tokens=2)  # a checkpoint records it too
    assert asked[-1] == 'Q: Hi\nA:'


def test_a_blank_instruction_is_refused(qa_run, capsys):
    from alpaca_ft.cli import main
    with pytest.raises(ValueError, match='instruction must be a non-blank string'):
        alpaca_ft.generate_answer(qa_run.final, ' \n ')
    assert main(['generate', str(qa_run.final), '--instruction', '   ']) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'instruction' in err[0] and 'Traceback' not in err[0], err


# ---------------------------------------------------------------- checked inputs of the building blocks

@pytest.mark.parametrize('call, error, words', [
    (lambda tok: alpaca_ft.tokenize_examples('What is 2+2?', 'Four', tok), TypeError, 'prompts must be a list'),
    (lambda tok: alpaca_ft.tokenize_examples(['a', 'b'], ['c'], tok), ValueError, '2 prompts, 1 responses'),
    (lambda tok: alpaca_ft.pad_batch([], 0), ValueError, 'batch is empty'),
    (lambda tok: alpaca_ft.pack({'input_ids': [[1, 2, 3]]}, 16), ValueError, 'missing labels'),
    (lambda tok: alpaca_ft.pack({'input_ids': [[1] * 20], 'labels': [[1] * 20]}, 16), ValueError, 'limit_length'),
    (lambda tok: alpaca_ft.attention_mask_for(torch.tensor([0, 1, 0])), ValueError, 'must be a 2-D tensor'),
    (lambda tok: alpaca_ft.TrainConfig('d', 'o', lr=-1), ValueError, 'lr must be'),
    (lambda tok: alpaca_ft.render({'instruction': 'a', 'output': 'b'}, 'Q: {question}'), ValueError, 'instruction'),
    (lambda tok: alpaca_ft.prepare_dataset(out='x', tokenizer=123), TypeError, 'tokenizer must be'),
    (lambda tok: alpaca_ft.prepare_dataset(42, out='x'), TypeError, 'data must be'),
    (lambda tok: alpaca_ft.fine_tune(alpaca_ft.TrainConfig('d', 'o'), model='llama'), TypeError, 'model must be'),
])
def test_bad_inputs_get_a_clear_error_naming_the_argument(call, error, words):
    with pytest.raises(error, match=words): call(alpaca_ft.load_tokenizer())


def test_the_pieces_compose():
    "tokenize_examples -> collate; pack -> unpack -> pack; limit_length is public; num_tokens is opt-in."
    tok = alpaca_ft.load_tokenizer()
    ex = alpaca_ft.tokenize_examples(['Q: a\nA:', 'Q: bb\nA:'], [' yes', ' no'], tok)
    batch = alpaca_ft.collate(ex, tok.pad_token_id)
    assert batch['input_ids'].shape[0] == 2 and 'num_tokens' not in batch
    packs = alpaca_ft.pack(ex, 64)
    again = alpaca_ft.pack(alpaca_ft.unpack(packs), 64)
    assert sorted(map(tuple, again['input_ids'])) == sorted(map(tuple, packs['input_ids']))
    cut, n_truncated, _ = alpaca_ft.limit_length(ex, 4)
    assert n_truncated == 2 and max(map(len, cut['input_ids'])) == 4


# ---------------------------------------------------------------- your rows, your template, your objects

def sample_fingerprint(tmp, **kw) -> str:
    return alpaca_ft.prepare_dataset(out=tmp, max_seq_len=256, progress=False, **kw)['fingerprint']


def test_rows_in_memory_and_a_tokenizer_object_give_the_same_data(tmp_path):
    "A list of dicts, a DataFrame, a datasets.Dataset, a tokenizer object: the very splits the file gives."
    import datasets, pandas as pd
    from alpaca_ft.data import SAMPLE_DATA
    rows = alpaca_ft.load_rows(SAMPLE_DATA)
    want = sample_fingerprint(tmp_path/'file')
    df = pd.DataFrame(rows)
    df.loc[0, 'input'] = None  # a DataFrame's missing value is an empty input
    assert rows[0]['input'] == ''
    for name, data in (('list', rows), ('df', df), ('ds', datasets.Dataset.from_list(rows))):
        assert sample_fingerprint(tmp_path/name, data=data) == want, name
    tok = alpaca_ft.load_tokenizer()
    tok.pad_token, side = None, tok.padding_side
    assert sample_fingerprint(tmp_path/'tok', tokenizer=tok) == want
    assert tok.pad_token is None and tok.padding_side == side  # the caller's object is left alone


def qa_function(row:dict) -> str:
    "A template function, at module level so that it can be recorded by name."
    return f"Q: {row['instruction']}\nA:"


def test_a_template_function_is_recorded_by_name_and_a_lambda_refused(tmp_path):
    rows = [{'instruction': f'What is {i}+{i}?', 'output': f' {2 * i}'} for i in range(40)]
    m = alpaca_ft.prepare_dataset(rows, out=tmp_path/'f', template=qa_function, max_seq_len=64, progress=False)
    assert m['template'] == f'function:{__name__}:qa_function'
    m2 = alpaca_ft.prepare_dataset(rows, out=tmp_path/'s', template=QA, max_seq_len=64, progress=False)
    assert m2['fingerprint'] == m['fingerprint']  # the same prompts
    with pytest.raises(ValueError, match='top level of a module'):
        alpaca_ft.prepare_dataset(rows, out=tmp_path/'l', template=lambda r: 'x', progress=False)
    assert not (tmp_path/'l').exists()


def test_fine_tune_takes_a_model_object_and_returns_what_comes_next(qa_run, tmp_path):
    model = alpaca_ft.tiny_llama(1024, pad_token_id=2, bos_token_id=0, eos_token_id=1).eval()
    before = [p.detach().clone() for p in model.parameters()]
    data = tmp_path/'data'
    shutil.copytree(qa_run.out.parent/'data', data)
    r = alpaca_ft.fine_tune(data_dir=str(data), out=str(tmp_path/'run'), model=model, max_steps=2, batch_size=4,
                            n_freeze=0, n_eval_samples=0, progress=False)
    assert isinstance(r, alpaca_ft.FineTuneResult) and r.model is model and r.final == tmp_path/'run'/'final'
    assert not model.training  # the caller's mode is kept
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters())), 'trained in place'
    assert 'eval_loss' in r.metrics


def test_a_prepared_folder_moves_with_its_tokenizer(tmp_path):
    "Prepared with a tokenizer folder that is then deleted, the folder moved elsewhere: it still trains."
    from alpaca_ft.tokenization import tiny_tokenizer_path
    shutil.copytree(tiny_tokenizer_path(), tmp_path/'tok')
    alpaca_ft.prepare_dataset(out=tmp_path/'a'/'data', tokenizer=str(tmp_path/'tok'), max_seq_len=256,
                              progress=False)
    shutil.rmtree(tmp_path/'tok')
    shutil.move(tmp_path/'a'/'data', tmp_path/'moved')
    r = alpaca_ft.fine_tune(data_dir=str(tmp_path/'moved'), out=str(tmp_path/'run'), max_steps=1, batch_size=4,
                            n_eval_samples=0, progress=False)
    assert r.final is not None


def test_a_run_stopped_through_on_step_says_so(qa_run, tmp_path):
    data = qa_run.out.parent/'data'
    r = alpaca_ft.fine_tune(data_dir=str(data), out=str(tmp_path/'run'), max_steps=4, batch_size=4, save_every=1,
                            n_eval_samples=0, progress=False, on_step=lambda step, m: step == 2)
    info = json.loads((tmp_path/'run'/'run.json').read_text())
    assert info['status'] == 'stopped' and info['step'] == 2 and r.final is None


# ---------------------------------------------------------------- no side effects on the caller

def process_state(cwd:Path) -> dict:
    "What a library call must leave as it found it."
    import logging, random, datasets, numpy as np
    from transformers.utils import logging as hf_logging
    return {'env': dict(os.environ), 'cwd': os.getcwd(), 'cwd_files': sorted(p.name for p in cwd.iterdir()),
            'torch_rng': torch.get_rng_state().tolist(), 'random': random.getstate(),
            'numpy': np.random.get_state()[1].tolist(), 'hf_bars': hf_logging.is_progress_bar_enabled(),
            'datasets_bars': datasets.is_progress_bar_enabled(), 'grad': torch.is_grad_enabled(),
            'levels': {n: logging.getLogger(n).level for n in ('', 'alpaca_ft', 'transformers', 'datasets')},
            'handlers': {n: len(logging.getLogger(n).handlers) for n in ('', 'alpaca_ft')}}


def test_public_functions_leave_the_process_as_they_found_it(qa_run, tmp_path, monkeypatch, capfd):
    "Each call, in an empty working folder: environment, RNGs, bars, logging, cwd and model mode unchanged."
    work = tmp_path/'work'
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv('ALPACA_FT_CACHE', str(tmp_path/'cache'))  # W&B's files, when asked for, go there
    monkeypatch.delenv('WANDB_DIR', raising=False)
    monkeypatch.delenv('WANDB_MODE', raising=False)
    monkeypatch.delenv('WANDB_SILENT', raising=False)
    data = qa_run.out.parent/'data'
    tok = alpaca_ft.load_tokenizer()
    model = alpaca_ft.tiny_llama(len(tok), pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                                 eos_token_id=tok.eos_token_id).eval()
    calls = {
        'load_tokenizer': lambda: alpaca_ft.load_tokenizer(),
        'tiny_llama': lambda: alpaca_ft.tiny_llama(64, seed=3),
        'tokenize_examples': lambda: alpaca_ft.tokenize_examples(['Q: a\nA: '], [' b'], tok),
        'pack': lambda: alpaca_ft.pack(alpaca_ft.tokenize_examples(['a'], ['b'], tok), 16),
        'collate': lambda: alpaca_ft.collate([{'input_ids': [1, 2]}], 0),
        'prepare_dataset': lambda: alpaca_ft.prepare_dataset(out=tmp_path/'p1', max_seq_len=256, progress=False),
        'prepare_dataset(wandb=offline)': lambda: alpaca_ft.prepare_dataset(
            out=tmp_path/'p2', max_seq_len=256, wandb='offline', progress=False),
        'fine_tune': lambda: alpaca_ft.fine_tune(data_dir=str(data), out=str(tmp_path/'r1'), max_steps=2,
                                                 batch_size=4, n_eval_samples=1, max_new_tokens=2, progress=False),
        'fine_tune(model)': lambda: alpaca_ft.fine_tune(data_dir=str(data), out=str(tmp_path/'r2'), model=model,
                                                        max_steps=1, batch_size=4, n_eval_samples=0, progress=False),
        'generate_answer': lambda: alpaca_ft.generate_answer(qa_run.final, 'Hi', max_new_tokens=2),
    }
    for name, call in calls.items():
        capfd.readouterr()
        before = process_state(work)
        call()
        after = process_state(work)
        changed = [k for k in before if before[k] != after[k]]
        assert changed == [], f'{name} changed {changed}: ' + '; '.join(
            f'{k}: {set(after[k].items()) ^ set(before[k].items()) if k == "env" else after[k]}' for k in changed)
        out = capfd.readouterr()
        assert 'training' not in out.out + out.err and 'read 130 rows' not in out.out, (name, out)
    assert not model.training
    assert any((tmp_path/'cache'/'wandb').glob('wandb/offline-run-*'))  # asked for: W&B wrote there


def test_importing_the_public_names_leaves_the_environment_alone():
    "torch/transformers set TORCHINDUCTOR_CACHE_DIR when first imported; `alpaca_ft.NAME` must not leave it."
    import subprocess, sys
    code = ('import os, alpaca_ft; before = dict(os.environ)\n'
            'for name in alpaca_ft.__all__: getattr(alpaca_ft, name)\n'
            'print(sorted(set(os.environ) ^ set(before)))')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == '[]'


@pytest.mark.parametrize('call, name', [
    (lambda A: A.TrainConfig('d', 'r', lr='1e-3'), 'lr'),
    (lambda A: A.TrainConfig('d', 'r', grad_clip='1'), 'grad_clip'),
    (lambda A: A.prepare_dataset(out=None), 'out'),
    (lambda A: A.split_indices(10.5, 2), 'n_rows'),
    (lambda A: A.alpaca_prompt(None), 'row'),
])
def test_wrong_types_name_the_argument(call, name):
    "A wrong type is a TypeError/ValueError whose message starts with the Python argument's name."
    import alpaca_ft
    with pytest.raises((TypeError, ValueError)) as e: call(alpaca_ft)
    assert str(e.value).startswith(name + ' '), str(e.value)
