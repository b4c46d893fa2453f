"""`alpaca_ft` as other projects use it: the lazy top-level API, and prepared splits fed to third-party
trainers (`transformers.Trainer` with `alpaca_ft.Collator`, TRL's `SFTTrainer` with `padding_free=True`).

Every model is a 2-layer Llama built from transformers' `LlamaConfig` on CPU; every split is `prepare` run on
the bundled sample with the bundled tokenizer (packs of at most 256 tokens, so most hold several examples).
"""
from __future__ import annotations
import contextlib, io, json, os, pkgutil, subprocess, sys, types
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
    assert alpaca_ft.run_demo is alpaca_ft.demo.demo
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
